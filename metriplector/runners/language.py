"""Character language models on tiny Shakespeare (or any UTF-8 text): ``sp-dynamics language``.

    sp-dynamics language train --preset cpu --jobs 2        # four models, one seed: table, figure, checkpoints
    sp-dynamics language train --preset smoke               # seconds; what the tests run
    sp-dynamics language train --text my.txt --preset cpu   # another corpus
    sp-dynamics language eval --checkpoint CKPT.pt --text FILE.txt     # one JSON line
    sp-dynamics language sample --checkpoint CKPT.pt --prompt "ROMEO:" --chars 300

(``python -m experiments.language ...`` in a checkout writes results to ``experiments/results``
and the shipped checkpoints to ``metriplector/checkpoints``.)

One ``train`` run trains, on the same batches (same seed), for the same number of tokens with the
same optimiser and schedule: ``metriplector`` (:class:`~metriplector.language.CausalMetriplectorLM`),
``hml`` (:class:`~sp_dynamics.sequence.HMLStack`: quadratic potential, trained frequencies and
selective steps, an MLP between layers), ``gpt`` and ``lstm``. The GPT's width is the preset's;
the other widths are chosen so that every parameter count lies within 10% of the GPT's.

Protocol (nanoGPT's character setup): the first 90% of the text trains, the last 10% validates;
the vocabulary is the training split's characters plus one unknown symbol, to which every other
character maps (it counts as a character: its loss is included, and ``eval`` reports how many
there were). The learning curve is the mean loss on a fixed set of validation windows; the final
number is the mean over the whole validation split cut into windows of ``context`` + 1
characters (each predicts its last ``context`` characters from the ones before it in the window).
bits/char = nats / ln 2.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from sp_dynamics.config import apply_overrides, config_dict, config_hash
from sp_dynamics.io import atomic_save, atomic_write_text, safe_load
from sp_dynamics.nn import count_parameters, matched_width
from sp_dynamics.runners.common import (Parser, UsageError, command_line, default_out, machine_line, pyplot, run_jobs,
                                        set_threads, result_stem, write_results)
from sp_dynamics.sequence import HMLStack

from ..language import GPT, LSTMLM, CausalMetriplectorLM, generate
from ._shared import (add_train_options, check_device, check_models, check_parity, load_model_blob,
                      warmup_cosine)

DATA = Path(__file__).resolve().parent.parent / "data" / "tinyshakespeare.txt"
CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"
MODELS = ("metriplector", "hml", "gpt", "lstm")
CHECKPOINT_FORMAT = "metriplector-language/1"
PARITY = 0.10
UNKNOWN = "\uFFFD"  # the unknown symbol's printable stand-in


@dataclass(frozen=True)
class LanguageConfig:
    context: int = 64
    batch: int = 32
    iterations: int = 2000
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup: int = 100
    grad_clip: float = 1.0
    eval_every: int = 200
    eval_windows: int = 128
    width: int = 96          # the GPT's; the others are matched to its parameter count
    depth: int = 4
    heads: int = 4
    fields: int = 16
    lstm_depth: int = 2
    hml_mlp_ratio: int = 2
    final_eval_limit: int | None = None  # characters of the validation split scored at the end (None: all)

    def validate(self) -> None:
        for name in ("context", "batch", "iterations", "eval_every", "eval_windows", "width", "depth"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


PRESETS = {
    "smoke": LanguageConfig(context=16, batch=4, iterations=6, eval_every=3, eval_windows=4, width=16, depth=2,
                            heads=2, fields=4, warmup=2, final_eval_limit=2000),
    "cpu": LanguageConfig(),
    "gpu": LanguageConfig(context=256, batch=64, iterations=5000, lr=1e-3, width=384, depth=6, heads=6, fields=32,
                          eval_every=500, eval_windows=256),
}


# ----------------------------------------------------------------------------------------- text

class Vocabulary:
    """Characters of the training text plus one unknown symbol (id ``len(chars)``)."""

    def __init__(self, chars: str):
        self.chars = chars
        self.index = {c: i for i, c in enumerate(chars)}

    @property
    def size(self) -> int:
        return len(self.chars) + 1

    def encode(self, text: str) -> tuple[torch.Tensor, int]:
        """Token ids and the number of characters outside the vocabulary (mapped to unknown)."""
        unk = len(self.chars)
        ids = np.fromiter((self.index.get(c, unk) for c in text), dtype=np.int64, count=len(text))
        return torch.from_numpy(ids), int((ids == unk).sum())

    def decode(self, ids) -> str:
        return "".join(self.chars[i] if i < len(self.chars) else UNKNOWN for i in ids.tolist())


def read_text(path: str | Path) -> str:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such text file: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    if not text:
        raise ValueError(f"{path}: the file is empty")
    return text


def corpus(path: str | Path | None, context: int):
    """(vocabulary, train ids, val ids) with the 90/10 split by position."""
    text = read_text(DATA if path is None else path)
    cut = int(0.9 * len(text))
    if min(cut, len(text) - cut) < context + 2:
        raise ValueError(f"the text has {len(text)} characters: too short for a 90/10 split with context {context}")
    vocab = Vocabulary("".join(sorted(set(text[:cut]))))
    train, _ = vocab.encode(text[:cut])
    val, _ = vocab.encode(text[cut:])
    return vocab, train, val


def windows(ids: torch.Tensor, length: int, limit: int | None = None) -> torch.Tensor:
    """Consecutive non-overlapping windows of ``length`` tokens, (N, length)."""
    if limit is not None:
        ids = ids[:limit]
    n = len(ids) // length
    if n == 0:
        raise ValueError(f"need at least {length} characters to score, got {len(ids)}")
    return ids[: n * length].view(n, length)


@torch.no_grad()
def mean_loss(model, wins: torch.Tensor, batch: int = 64, device: str = "cpu") -> float:
    """Mean next-character loss (nats) of windows (N, L): each predicts its last L - 1 tokens."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(wins), batch):
        w = wins[i : i + batch].to(device)
        logits = model(w[:, :-1])
        total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), w[:, 1:].reshape(-1), reduction="sum"))
        count += w[:, 1:].numel()
    return total / count


# --------------------------------------------------------------------------------------- models

def _kwargs(cfg: LanguageConfig, kind: str, vocab: int, width: int) -> dict:
    if kind == "gpt":
        return {"vocab": vocab, "width": width, "depth": cfg.depth, "heads": cfg.heads, "context": cfg.context}
    if kind == "metriplector":
        return {"vocab": vocab, "width": width, "depth": cfg.depth, "fields": cfg.fields}
    if kind == "lstm":
        return {"vocab": vocab, "width": width, "depth": cfg.lstm_depth}
    if kind == "hml":  # selective steps: the loop is the fastest exact mode for them on a CPU
        return {"vocab": vocab, "width": width, "state_size": width, "n_layers": cfg.depth,
                "mlp_ratio": cfg.hml_mlp_ratio, "selective": True, "mode": "loop"}
    raise UsageError(f"unknown model {kind!r}; choose from {', '.join(MODELS)}")


def build(kind: str, kwargs: dict) -> torch.nn.Module:
    return {"gpt": GPT, "metriplector": CausalMetriplectorLM, "lstm": LSTMLM, "hml": HMLStack}[kind](**kwargs)


def model_kwargs(cfg: LanguageConfig, kind: str, vocab: int) -> dict:
    """Constructor arguments; widths other than the GPT's are matched to its parameter count."""
    if kind == "gpt":
        return _kwargs(cfg, "gpt", vocab, cfg.width)
    target = count_parameters(build("gpt", _kwargs(cfg, "gpt", vocab, cfg.width)))
    width = matched_width(lambda w: build(kind, _kwargs(cfg, kind, vocab, w)), target)
    return _kwargs(cfg, kind, vocab, width)


def parameter_counts(cfg: LanguageConfig, kinds, vocab: int) -> dict:
    """Parameter counts of the models, each within 10% of the GPT's."""
    counts = {k: count_parameters(build(k, model_kwargs(cfg, k, vocab))) for k in kinds}
    return check_parity(counts, count_parameters(build("gpt", model_kwargs(cfg, "gpt", vocab))), "GPT", PARITY)


# ------------------------------------------------------------------------------------- training

def train_one(cfg: LanguageConfig, kind: str, seed: int, run_dir: str, text: str | None = None, device: str = "cpu",
              threads: int | None = None) -> dict:
    """Train one model, checkpointing at every evaluation; resumes from ``run_dir``."""
    set_threads(threads)
    run_dir = Path(run_dir)
    done = run_dir / f"{kind}_seed{seed}.json"
    if done.exists():
        return json.loads(done.read_text())
    vocab, train, val = corpus(text, cfg.context)
    kwargs = model_kwargs(cfg, kind, vocab.size)
    torch.manual_seed(seed)
    model = build(kind, kwargs).to(device)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    other = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": other, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(0.9, 0.99))
    g = torch.Generator().manual_seed(seed)
    val_windows = windows(val, cfg.context + 1)
    curve_windows = val_windows[torch.randperm(len(val_windows), generator=torch.Generator().manual_seed(99))[
        : cfg.eval_windows]]
    state_path = run_dir / f"{kind}_seed{seed}.state.pt"
    curve, start, train_time = [], 0, 0.0
    if state_path.exists():
        state = safe_load(state_path, "language training state")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        g.set_state(state["rng"])
        curve, start, train_time = state["curve"], state["iteration"], state["train_time_s"]
    tokens_per_it = cfg.batch * cfg.context
    bar = tqdm(range(start, cfg.iterations), initial=start, total=cfg.iterations, desc=f"{kind} seed {seed}",
               disable=None, leave=False)
    t0 = time.time()
    for it in bar:
        model.train()
        starts = torch.randint(0, len(train) - cfg.context - 1, (cfg.batch,), generator=g)
        chunk = torch.stack([train[s : s + cfg.context + 1] for s in starts.tolist()]).to(device)
        for group in opt.param_groups:
            group["lr"] = cfg.lr * warmup_cosine(it, cfg.warmup, cfg.iterations)
        logits = model(chunk[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1))
        if not torch.isfinite(loss):
            raise RuntimeError(f"{kind} seed {seed}: the training loss became {loss.item()} at iteration {it + 1}")
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        if (it + 1) % cfg.eval_every == 0 or it + 1 == cfg.iterations:
            train_time += time.time() - t0
            curve.append({"iteration": it + 1, "tokens": (it + 1) * tokens_per_it, "train_loss": loss.item(),
                          "val_loss": mean_loss(model, curve_windows, device=device), "train_time_s": train_time})
            bar.set_postfix(val=f"{curve[-1]['val_loss']:.3f}")
            atomic_save({"model": model.state_dict(), "opt": opt.state_dict(), "rng": g.get_state(), "curve": curve,
                         "iteration": it + 1, "train_time_s": train_time}, state_path)
            t0 = time.time()
    bar.close()
    t1 = time.time()
    final = mean_loss(model, windows(val, cfg.context + 1, cfg.final_eval_limit), device=device)
    row = {"model": kind, "seed": seed, "params": count_parameters(model), "kwargs": kwargs,
           "tokens": cfg.iterations * tokens_per_it, "val_nats": final, "val_bits_per_char": final / math.log(2),
           "train_time_s": train_time, "tokens_per_s": cfg.iterations * tokens_per_it / train_time,
           "eval_time_s": time.time() - t1, "curve": curve, "threads": torch.get_num_threads()}
    atomic_save({"format": CHECKPOINT_FORMAT, "kind": kind, "kwargs": kwargs, "vocab": vocab.chars,
                 "model": model.state_dict(), "context": cfg.context, "val_bits_per_char": row["val_bits_per_char"]},
                run_dir / f"{kind}_seed{seed}.pt")
    atomic_write_text(json.dumps(row), done)
    return row


def load_checkpoint(path: str | Path):
    model, blob = load_model_blob(path, CHECKPOINT_FORMAT, "language checkpoint", build)
    return model, Vocabulary(blob["vocab"]), blob


def tokens_to_reach(curve: list[dict], target: float) -> float | None:
    """Training tokens at which a learning curve first reaches ``target`` (linear between points)."""
    prev_tokens, prev_loss = 0, None
    for p in curve:
        if p["val_loss"] <= target:
            if prev_loss is None or prev_loss == p["val_loss"]:
                return float(p["tokens"])
            frac = (prev_loss - target) / (prev_loss - p["val_loss"])
            return prev_tokens + frac * (p["tokens"] - prev_tokens)
        prev_tokens, prev_loss = p["tokens"], p["val_loss"]
    return None


# ---------------------------------------------------------------------------------- the report

NAMES = {"metriplector": "Causal Metriplector (Poisson chain, scan)", "hml": "HML stack (selective, MLP mixing)",
         "gpt": "GPT (decoder-only transformer)", "lstm": "LSTM"}


def _reach(rows: list[dict], r: dict) -> float | None:
    """Tokens at which row r's curve reaches the final curve loss of the GPT of the same seed."""
    gpt = next((g for g in rows if g["model"] == "gpt" and g["seed"] == r["seed"]), None)
    return None if gpt is None else tokens_to_reach(r["curve"], gpt["curve"][-1]["val_loss"])


def table(cfg: LanguageConfig, preset: str, rows: list[dict], command: str, wall: float, jobs: int, source: str) -> str:
    lines = [
        f"# Character language models, preset `{preset}` ({source})",
        "",
        command,
        machine_line(wall, jobs, f" (rows finished by an earlier run of the same settings are read from its run "
                                 f"folder; the rows' own training times sum to {sum(r['train_time_s'] for r in rows):.0f} s)"),
        f"- {cfg.iterations} iterations x batch {cfg.batch} x context {cfg.context} = "
        f"{cfg.iterations * cfg.batch * cfg.context:,} training tokens for every model, the same batches (seed); "
        f"AdamW lr {cfg.lr} (warm-up {cfg.warmup}, cosine), weight decay {cfg.weight_decay}, clip {cfg.grad_clip}",
        "- val bits/char: the whole validation split (last 10%) in windows of context + 1 characters; curve: "
        f"{cfg.eval_windows} fixed validation windows every {cfg.eval_every} iterations; mean ± std (population) "
        "over the seeds; \"GPT tokens / model tokens\": the GPT's tokens over those the model needs to reach the "
        "final curve loss of the GPT of the same seed",
        "",
        "| model | params | seeds | tokens | val bits/char | train tokens/s | train time (s) | GPT tokens / model "
        "tokens |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind in MODELS:
        rs = [r for r in rows if r["model"] == kind]
        if not rs:
            continue
        bits = np.array([r["val_bits_per_char"] for r in rs])
        reach = [_reach(rows, r) for r in rs]
        ratio = ("not reached" if any(x is None for x in reach) else
                 f"{np.mean([r['tokens'] / x for r, x in zip(rs, reach)]):.2f} ± "
                 f"{np.std([r['tokens'] / x for r, x in zip(rs, reach)]):.2f}")
        lines.append(f"| {NAMES[kind]} | {rs[0]['params']:,} | {','.join(str(r['seed']) for r in rs)} | "
                     f"{rs[0]['tokens']:,} | {bits.mean():.3f} ± {bits.std():.3f} | "
                     f"{np.mean([r['tokens_per_s'] for r in rs]):.0f} | {np.mean([r['train_time_s'] for r in rs]):.0f} "
                     f"| {ratio} |")
    lines += ["", "Per seed:", "", "| model | seed | val bits/char | val nats/char | tokens to the GPT's final curve loss "
              "| train time (s) |", "|---|---|---|---|---|---|"]
    for r in rows:
        reach = _reach(rows, r)
        lines.append(f"| {r['model']} | {r['seed']} | {r['val_bits_per_char']:.3f} | {r['val_nats']:.3f} | "
                     f"{f'{reach:,.0f}' if reach else 'not reached'} | {r['train_time_s']:.0f} |")
    lines += ["", "References (not ours): nanoGPT's character model on this split, 10.7M parameters, val 1.47 nats "
              "(2.12 bits/char); its small CPU configuration (4 layers, width 128, context 64) about 1.88 nats "
              "(2.71 bits/char). Metriplector paper: 1.182 bits/byte on FineWeb with 3.6x fewer training tokens "
              "than its GPT baseline (18.5M parameters; not this data).", ""]
    return "\n".join(lines)


def figure(rows: list[dict], path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = dict(zip(MODELS, ("tab:blue", "tab:orange", "tab:green", "tab:red")))
    labelled = set()
    for r in rows:  # one colour per model, one line per seed, one legend entry per model
        label = None if r["model"] in labelled else f"{r['model']} ({r['params'] / 1e3:.0f}K)"
        labelled.add(r["model"])
        ax.plot([p["tokens"] for p in r["curve"]], [p["val_loss"] / math.log(2) for p in r["curve"]], marker="o",
                ms=3, color=colors[r["model"]], alpha=0.8, label=label)
    ax.set(xlabel="training tokens", ylabel="validation bits/char (fixed windows)", xscale="log",
           title="character language models, same batches")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------ commands

def cmd_train(args) -> None:
    cfg = apply_overrides(PRESETS[args.preset], args.overrides)
    kinds = check_models(args.models, MODELS)
    vocab, _, _ = corpus(args.text, cfg.context)
    counts = parameter_counts(cfg, kinds, vocab.size)
    print("parameters: " + ", ".join(f"{k} {n}" for k, n in counts.items()), flush=True)
    out = default_out(args.out, args.default_results)
    source = f"text {args.text}" if args.text else "tiny Shakespeare, 90/10 split by position"
    run_dir = out / "runs" / f"language-{args.preset}-{config_hash({'cfg': config_dict(cfg), 'text': args.text})}"
    run_dir.mkdir(parents=True, exist_ok=True)
    check_device(args.device)
    start = time.time()
    calls = {(k, s): (cfg, k, s, str(run_dir), args.text, args.device) for s in args.seeds for k in kinds}

    def report(key, row):
        print(f"{row['model']} seed {row['seed']}: val {row['val_bits_per_char']:.3f} bits/char "
              f"({row['params']} params, {row['train_time_s']:.0f} s)", flush=True)

    done = run_jobs(train_one, calls, args.jobs, report)
    rows = [done[k] for k in calls]
    stem = result_stem(f"language_{args.preset}" + ("_text" if args.text else ""), args)
    text = table(cfg, args.preset, rows, command_line(args.prog, args.argv), time.time() - start, args.jobs, source)
    if args.save:
        write_results(out, stem, text, rows, cfg)
        figure(rows, out / f"{stem}_curves.png")
        if args.ship:
            for k in kinds:
                target = Path(args.checkpoints) / f"language_{k}.pt"
                atomic_save(safe_load(run_dir / f"{k}_seed{min(args.seeds)}.pt"), target)
                print(f"shipped checkpoint: {target}", flush=True)
    print(text)


def cmd_eval(args) -> None:
    model, vocab, blob = load_checkpoint(args.checkpoint)
    text = read_text(args.text)
    ids, unknown = vocab.encode(text)
    t0 = time.time()
    nats = mean_loss(model, windows(ids, blob["context"] + 1))
    print(json.dumps({"bits_per_char": nats / math.log(2), "chars": len(text), "unknown_chars": unknown,
                      "scored_chars": (len(ids) // (blob["context"] + 1)) * blob["context"], "model": blob["kind"],
                      "wall_time_s": round(time.time() - t0, 2)}))


def cmd_sample(args) -> None:
    model, vocab, _ = load_checkpoint(args.checkpoint)
    if args.chars < 1:
        raise UsageError(f"--chars must be >= 1, got {args.chars}")
    ids, unknown = vocab.encode(args.prompt or "\n")
    g = torch.Generator().manual_seed(args.seed)
    out = generate(model, ids, args.chars, args.temperature, g)
    print(vocab.decode(out))


def energy_figure(checkpoint: str | Path, path: Path, text: str | None = None, layer_index: int = 0,
                  chars: int | None = None, start: int = 0) -> str:
    """Energy along a passage and phase portraits of the most-read channels of one HML layer of
    an HML checkpoint (default passage: the validation split from ``start``, as many characters
    as the model's training context). Returns the passage."""
    from sp_dynamics.runners.copy_task import save_diagnostics

    model, vocab, blob = load_checkpoint(checkpoint)
    if blob["kind"] != "hml":
        raise UsageError(f"{checkpoint}: the energy figure needs an HML checkpoint, got a {blob['kind']!r} one")
    if not 0 <= layer_index < len(model.layers):
        raise UsageError(f"--layer must be in 0..{len(model.layers) - 1}, got {layer_index}")
    chars = blob["context"] if chars is None else chars
    if chars < 2:
        raise UsageError(f"--chars must be >= 2, got {chars}")
    if start < 0:
        raise UsageError(f"--start must be >= 0, got {start}")
    source = read_text(DATA if text is None else text)
    if text is None:
        source = source[int(0.9 * len(source)):]  # the validation split
    passage = source[start : start + chars]
    if len(passage) < 2:
        raise UsageError(f"the text has {len(source)} characters: nothing to plot from --start {start}")
    ids, _ = vocab.encode(passage)
    with torch.no_grad():  # the layer's input: the residual stream after the layers before it
        h = model.mix(model.embed(ids[None]), stop=layer_index)
    marks = {f"line {n + 1}": i for n, i in enumerate(i for i, c in enumerate(passage) if c == "\n")}
    save_diagnostics(model.layers[layer_index], h, path, marks=marks,
                     title=f"HML layer {layer_index} along {len(passage)} characters (trained on {blob['context']}; "
                           "dotted: line ends)")
    return passage


def cmd_figure(args) -> None:
    out = Path(args.out) if args.out else default_out(None, args.default_results) / "language_hml_energy.png"
    energy_figure(args.checkpoint, out, args.text, args.layer, args.chars, args.start)
    print(f"wrote {out}")


def main(argv: list[str] | None = None, *, default_results=None, default_checkpoints=None,
         prog: str = "sp-dynamics language") -> None:
    parser = Parser(prog=prog, description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True, parser_class=Parser)
    t = sub.add_parser("train", help="train the four models on the same tokens; table, figure, checkpoints")
    add_train_options(t, PRESETS, MODELS, default_checkpoints or str(CHECKPOINTS))
    t.add_argument("--text", default=None, help="a UTF-8 text file instead of tiny Shakespeare")
    t.add_run_options()
    e = sub.add_parser("eval", help="bits/char of a checkpoint on a text file (one JSON line)")
    e.add_argument("--checkpoint", default=str(CHECKPOINTS / "language_metriplector.pt"))
    e.add_argument("--text", required=True)
    s = sub.add_parser("sample", help="generate text after a prompt")
    s.add_argument("--checkpoint", default=str(CHECKPOINTS / "language_metriplector.pt"))
    s.add_argument("--prompt", default="\n")
    s.add_argument("--chars", type=int, default=300)
    s.add_argument("--temperature", type=float, default=0.8)
    s.add_argument("--seed", type=int, default=0)
    f = sub.add_parser("figure", help="energy and phase portraits of an HML layer along a passage")
    f.add_argument("--checkpoint", default=str(CHECKPOINTS / "language_hml.pt"))
    f.add_argument("--text", default=None, help="a UTF-8 file (default: the validation split of tiny Shakespeare)")
    f.add_argument("--start", type=int, default=0, help="first character of the passage")
    f.add_argument("--chars", type=int, default=None, help="passage length (default: the training context)")
    f.add_argument("--layer", type=int, default=0)
    f.add_argument("--out", default=None, metavar="FILE.png")
    args = parser.parse_args(argv)
    args.argv, args.prog, args.default_results = list(sys.argv[1:] if argv is None else argv), prog, default_results
    {"train": cmd_train, "eval": cmd_eval, "sample": cmd_sample, "figure": cmd_figure}[args.cmd](args)


if __name__ == "__main__":
    main(sys.argv[1:])
