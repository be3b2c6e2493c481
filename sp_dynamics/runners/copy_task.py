"""Copy task: the Hamiltonian Memory Layer against LSTM and GRU (``sp-dynamics copy-task``).

    sp-dynamics copy-task bench                    # T = 100, 500, 1000; table, checkpoint, figure
    sp-dynamics copy-task bench --T 100 --models hml --max-iterations 200 --no-save
    sp-dynamics copy-task eval --T 1000 --count 1000 --seed 123     # fresh sequences
    sp-dynamics copy-task figure                   # energy and phase space of the T = 1000 model

(``python -m experiments.copy_task ...`` in a checkout writes to ``experiments/results``; the
shipped checkpoints are package data, ``sp_dynamics/sequence/checkpoints/copy_hml_T*.pt``.)

Task (Arjovsky, Shah & Bengio 2016): tokens 0 = blank, 1..8 = symbols, 9 = delimiter. A sequence
of length T + 20 holds 10 random symbols, T - 1 blanks, the delimiter, then 10 blanks during
which the model must output the 10 symbols in order; every other target is blank. The loss is
the cross-entropy over all T + 20 positions. A model with no memory can do no better than
``10 log 8 / (T + 20)`` (it outputs blank everywhere and a uniform guess at the 10 recall steps).
The accuracy is over the recalled symbols only.

Our choices: one training seed per (T, model) (the time budget of a CPU run); fresh random
batches each iteration from the seed; the same optimiser (Adam, gradient clipping), batch and
stopping rule for every model: stop at ``target_accuracy`` on a fixed validation set, at
``max_iterations`` or at ``time_limit_s``. The HML uses the quadratic potential with harmonic
("linear") rotation angles that stay fixed during training (S4 also trains its state matrix with
a much smaller learning rate); it is computed by FFT convolution, which equals the leapfrog loop
(tests/test_hml.py). A fixed-delay model is specific to its T: evaluate it at the T it was trained on.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import resource
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..io import atomic_save, atomic_write_text, safe_load
from ..sequence import HamiltonianMemoryLayer, HMLStack, energy_trace, phase_space
from .common import Parser, UsageError, default_out, pyplot

CHECKPOINTS = Path(__file__).resolve().parent.parent / "sequence" / "checkpoints"
VOCAB, BLANK, DELIMITER, N_SYMBOLS, N_COPY = 10, 0, 9, 8, 10
MODELS = ("hml", "lstm", "gru")
DEFAULT_T = [100, 500, 1000]


def copy_batch(batch: int, T: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Inputs and targets (batch, T + 20), int64. Raises ValueError for T < 1 or batch < 1."""
    if int(T) < 1 or int(batch) < 1:
        raise ValueError(f"copy task needs T >= 1 and batch >= 1, got T={T}, batch={batch}")
    symbols = torch.randint(1, N_SYMBOLS + 1, (batch, N_COPY), generator=generator)
    x = torch.full((batch, T + 2 * N_COPY), BLANK, dtype=torch.long)
    y = torch.full_like(x, BLANK)
    x[:, :N_COPY] = symbols
    x[:, T + N_COPY - 1] = DELIMITER
    y[:, -N_COPY:] = symbols
    return x, y


def memoryless_baseline(T: int) -> float:
    """Cross-entropy per position of the best model without memory: 10 log 8 / (T + 20)."""
    return N_COPY * math.log(N_SYMBOLS) / (T + 2 * N_COPY)


@dataclass(frozen=True)
class CopyConfig:
    width: int = 64            # embedding / residual width (all models)
    state_size: int = 128      # HML oscillators
    lstm_hidden: int = 56      # chosen so the parameter counts are within ~10 % (see table)
    gru_hidden: int = 64
    batch: int = 32
    lr: float = 3e-3
    clip: float = 1.0
    max_iterations: int = 1500
    time_limit_s: float = 1200.0   # per model and T
    eval_every: int = 25
    target_accuracy: float = 0.999
    val_size: int = 256
    eval_count: int = 1000
    mode: str = "fft"          # the HML's exact mode: "fft", "chunked" (the fastest measured on a CPU from T ~ 500) or "reversible"


class RecurrentBaseline(nn.Module):
    """Embedding, one LSTM or GRU layer, and the same two-layer head as ``HMLStack``."""

    def __init__(self, kind: str, width: int, hidden: int):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        self.rnn = (nn.LSTM if kind == "lstm" else nn.GRU)(width, hidden, batch_first=True)
        self.head = nn.Sequential(nn.Linear(hidden, width), nn.GELU(), nn.Linear(width, VOCAB))

    def forward(self, tokens: Tensor) -> Tensor:
        h, _ = self.rnn(self.embed(tokens))
        return self.head(h)


def build(kind: str, cfg: CopyConfig) -> nn.Module:
    if kind == "hml":
        model = HMLStack(VOCAB, cfg.width, cfg.state_size, n_layers=1, mode=cfg.mode, frequencies="linear",
                         chunk=128)
        for layer in model.layers:  # fixed harmonic rotation angles (see the module docstring)
            layer.raw_k.requires_grad_(False)
            layer.raw_dt.requires_grad_(False)
        return model
    if kind in ("lstm", "gru"):
        return RecurrentBaseline(kind, cfg.width, cfg.lstm_hidden if kind == "lstm" else cfg.gru_hidden)
    raise ValueError(f"unknown model {kind!r}; choose from {MODELS}")


def n_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def eval_chunk(T: int) -> int:
    """Sequences per evaluation batch: 250, fewer at long T so that a batch's states stay ~0.5 GB."""
    return max(1, min(250, 500_000 // (T + 2 * N_COPY)))


@torch.no_grad()
def evaluate(model: nn.Module, T: int, count: int, seed: int, chunk: int | None = None) -> dict:
    """Accuracy on the recalled symbols and cross-entropy on ``count`` fresh sequences (the
    sequences depend on ``seed`` and T only, not on ``chunk``)."""
    chunk = eval_chunk(T) if chunk is None else chunk
    g = torch.Generator().manual_seed(seed)
    correct = ce = 0.0
    done = 0
    while done < count:
        x, y = copy_batch(min(chunk, count - done), T, g)
        logits = model(x)
        ce += float(F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1), reduction="sum"))
        correct += float((logits[:, -N_COPY:].argmax(-1) == y[:, -N_COPY:]).sum())
        done += x.shape[0]
    ce /= count * (T + 2 * N_COPY)
    base = memoryless_baseline(T)
    return {"accuracy": correct / (count * N_COPY), "cross_entropy": ce, "memoryless_ce": base, "ce_over_memoryless": ce / base}


def train(kind: str, T: int, cfg: CopyConfig, seed: int, progress: bool = True) -> tuple[nn.Module, dict]:
    torch.manual_seed(seed)
    model = build(kind, cfg)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    g = torch.Generator().manual_seed(seed)
    val_seed = 10_000 + seed  # a fixed validation set, disjoint in seed from training and evaluation
    history, stopped, start, it = [], "max_iterations", time.time(), 0
    for it in range(1, cfg.max_iterations + 1):
        x, y = copy_batch(cfg.batch, T, g)
        loss = F.cross_entropy(model(x).reshape(-1, VOCAB), y.reshape(-1))
        if not torch.isfinite(loss):
            stopped = "diverged (non-finite loss)"
            break
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
        opt.step()
        if it % cfg.eval_every == 0 or it == cfg.max_iterations:
            val = evaluate(model, T, cfg.val_size, val_seed)
            elapsed = time.time() - start
            history.append({"iteration": it, "loss": float(loss.detach()), "val_accuracy": val["accuracy"], "time_s": elapsed})
            if progress:
                print(f"  {kind} T={T} it {it}: loss {float(loss.detach()):.5f} (memoryless {memoryless_baseline(T):.5f}) "
                      f"val acc {val['accuracy']:.4f}  {elapsed:.0f}s", flush=True)
            if val["accuracy"] >= cfg.target_accuracy:
                stopped = "target accuracy"
                break
            if elapsed > cfg.time_limit_s:
                stopped = "time limit"
                break
    info = {"model": kind, "T": T, "seed": seed, "iterations": it, "train_time_s": time.time() - start,
            "stopped": stopped, "parameters": n_trainable(model), "history": history,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    return model, info


def checkpoint_path(T: int) -> Path:
    return CHECKPOINTS / f"copy_hml_T{T}.pt"


def save_checkpoint(model: nn.Module, cfg: CopyConfig, info: dict, path: Path) -> None:
    atomic_save({"config": dataclasses.asdict(cfg), "T": info["T"], "seed": info["seed"],
                 "model": model.state_dict()}, path)


def load_checkpoint(path: Path) -> tuple[nn.Module, int]:
    blob = safe_load(path, "copy-task checkpoint")
    if not isinstance(blob, dict) or not {"config", "model", "T"} <= set(blob):
        raise ValueError(f"{path} is not a copy-task checkpoint (expected keys 'config', 'model', 'T')")
    model = build("hml", CopyConfig(**blob["config"]))
    model.load_state_dict(blob["model"])
    return model.eval(), int(blob["T"])


def figure(model: HMLStack, T: int, path: Path, seed: int = 7) -> None:
    x, _ = copy_batch(1, T, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        h = model.embed(x)
    save_diagnostics(model.layers[0], h, path, marks={"last symbol": N_COPY - 1, "delimiter": T + N_COPY - 1},
                     title=f"trained HML on a copy-task sequence, T = {T}")


def save_diagnostics(layer: HamiltonianMemoryLayer, x: Tensor, path: Path, marks: dict[str, int] | None = None,
                     title: str = "") -> bool:
    """:func:`plot_diagnostics` of ``layer`` on its input x (B, T, I) along its four most-read
    channels, saved to ``path``; False (nothing written) when matplotlib is not installed."""
    plt = pyplot()
    if plt is None:
        return False
    fig = plot_diagnostics(plt, layer, x, layer.most_read_channels(4), marks=marks, title=title)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_diagnostics(plt, layer: HamiltonianMemoryLayer, x: Tensor, channels: list[int] | None = None,
                     marks: dict[str, int] | None = None, title: str = ""):
    """Figure of the energy along the first sequence of x and phase portraits of some channels.

    ``marks`` names time steps to draw as vertical lines (e.g. ``{"delimiter": 1009}``).
    Returns the matplotlib figure (the caller saves or shows it).
    """
    energy = energy_trace(layer, x[:1])
    qs, ps = phase_space(layer, x[:1], channels)
    channels = list(range(min(layer.D, 4))) if channels is None else list(channels)
    fig = plt.figure(figsize=(3.2 * max(len(channels), 3), 6.4))
    grid = fig.add_gridspec(2, len(channels))
    ax = fig.add_subplot(grid[0, :])
    t = torch.arange(x.shape[1])
    ax.plot(t, energy["H"][0], lw=1, label="H(q, p)")
    ax.plot(t, energy["H_forced"][0], lw=1, label="H - F.q (bounded while the input is constant)")
    if "H_shadow" in energy:
        ax.plot(t, energy["H_shadow"][0], lw=1.5, label="leapfrog's exact invariant (constant while the input is)")
    for name, step in (marks or {}).items():
        ax.axvline(step, color="k", ls=":", lw=0.8)
        if len(marks) <= 6:  # more names would overlap; the caller's title says what the lines are
            ax.annotate(name, (step, ax.get_ylim()[1]), fontsize=8, ha="right", va="top", rotation=90)
    ax.set_xlabel("time step")
    ax.set_ylabel("energy")
    ax.legend(fontsize=8, loc="center right")
    if title:
        ax.set_title(title)
    for i, c in enumerate(channels):
        a = fig.add_subplot(grid[1, i])
        a.plot(qs[0, :, i], ps[0, :, i], lw=0.6)
        a.plot(qs[0, :1, i], ps[0, :1, i], "go", ms=3)
        a.plot(qs[0, -1:, i], ps[0, -1:, i], "rs", ms=3)
        label = f"channel {c}"
        if layer.potential == "quadratic":
            label += f", theta = {float(layer.rotation_angles()[c].detach()):.3f}"
        a.set_title(label, fontsize=8)
        a.set_xlabel("q")
        a.set_ylabel("p")
    fig.tight_layout()
    return fig


def _machine() -> str:
    return (f"{platform.machine()}, {torch.get_num_threads()} torch threads, {platform.processor() or 'CPU'}; "
            f"torch {torch.__version__}; date {datetime.now(timezone.utc):%Y-%m-%d}")


def _table(rows: list[dict], cfg: CopyConfig, command: str, wall: float) -> str:
    lines = [
        "# Copy task: HML vs LSTM vs GRU",
        "",
        f"- command: `{command}`",
        f"- machine: {_machine()}",
        f"- training: Adam lr {cfg.lr}, batch {cfg.batch}, grad-norm clip {cfg.clip}; stop at validation accuracy "
        f">= {cfg.target_accuracy} ({cfg.val_size} sequences), {cfg.max_iterations} iterations or "
        f"{cfg.time_limit_s:.0f} s; one seed per row",
        f"- evaluation: {cfg.eval_count} fresh sequences (seed 123); accuracy on the 10 recalled symbols; "
        "cross-entropy per position over the whole sequence",
        f"- HML exact mode: {cfg.mode}; peak memory: the training process's peak resident set size after the row "
        "(it includes every earlier row of the same run)",
        f"- total wall time {wall:.0f} s",
        "",
        "| T | model | trainable params | iterations | train time (s) | stopped by | recall accuracy | cross-entropy "
        "| memoryless CE | CE / memoryless | s / iteration | peak memory (GB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        e = r["eval"]
        memory = f"{r['peak_rss_gb']:.2f}" if "peak_rss_gb" in r else "not recorded"
        lines.append(f"| {r['T']} | {r['model'].upper()} | {r['parameters']} | {r['iterations']} | {r['train_time_s']:.0f} "
                     f"| {r['stopped']} | {e['accuracy']:.4f} | {e['cross_entropy']:.3g} | {e['memoryless_ce']:.3g} "
                     f"| {e['ce_over_memoryless']:.3g} | {r['train_time_s'] / max(r['iterations'], 1):.2f} | {memory} |")
    return "\n".join(lines) + "\n"


def cmd_bench(args) -> None:
    cfg = CopyConfig(max_iterations=args.max_iterations, time_limit_s=args.time_limit, eval_count=args.count,
                     mode=args.mode, batch=args.batch, eval_every=args.eval_every)
    results = args.results
    checkpoints = Path(args.checkpoints) if args.checkpoints else results / "checkpoints"
    # the default lengths write copy_task.{json,md}; others their own files (copy_task_T10000.md)
    stem = "copy_task" if args.T == DEFAULT_T else "copy_task_T" + "_".join(map(str, args.T))
    json_path = results / f"{stem}.json"
    rows: list[dict] = []
    if args.resume and json_path.exists():
        rows = [r for r in json.loads(json_path.read_text()) if r.get("config") == dataclasses.asdict(cfg)]
        print(f"resuming: {len(rows)} finished rows kept from {json_path}")
    start = time.time()
    for T in args.T:
        for kind in args.models:
            if any(r["T"] == T and r["model"] == kind for r in rows):
                continue
            model, info = train(kind, T, cfg, args.seed)
            info["eval"] = evaluate(model, T, cfg.eval_count, seed=123)
            info["config"] = dataclasses.asdict(cfg)
            rows.append(info)
            e = info["eval"]
            print(f"T={T} {kind}: {info['iterations']} its, {info['train_time_s']:.0f}s ({info['stopped']}), "
                  f"recall accuracy {e['accuracy']:.4f}, CE/memoryless {e['ce_over_memoryless']:.3g}", flush=True)
            if args.save:
                atomic_write_text(json.dumps(rows, indent=2), json_path)  # a killed run keeps finished rows
                if kind == "hml":
                    save_checkpoint(model, cfg, info, checkpoints / f"copy_hml_T{T}.pt")
                    if T == max(args.T):
                        figure(model, T, results / f"copy_task_hml_T{T}.png")
    table = _table(rows, cfg, f"{args.prog} {' '.join(args.argv)}", time.time() - start)
    if args.save:
        atomic_write_text(table, results / f"{stem}.md")
    print(table)


def cmd_eval(args) -> None:
    path = Path(args.checkpoint) if args.checkpoint else checkpoint_path(args.T)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}; train one with `sp-dynamics copy-task bench --T {args.T}`")
    model, T_trained = load_checkpoint(path)
    if T_trained != args.T:
        print(f"warning: the checkpoint was trained at T={T_trained}; a fixed-delay model does not transfer to T={args.T}",
              file=sys.stderr)
    t0 = time.time()
    scores = evaluate(model, args.T, args.count, args.seed)
    print(json.dumps({"checkpoint": str(path), "T": args.T, "count": args.count, "seed": args.seed, **scores,
                      "wall_time_s": round(time.time() - t0, 2)}))


def cmd_figure(args) -> None:
    path = Path(args.checkpoint) if args.checkpoint else checkpoint_path(args.T)
    model, T = load_checkpoint(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    out = Path(args.out) if args.out else args.results / f"copy_task_hml_T{T}.png"
    figure(model, T, out, seed=args.seed)
    print(f"wrote {out}")


def main(argv: list[str] | None = None, *, default_results=None, default_checkpoints=None,
         prog: str = "sp-dynamics copy-task") -> None:
    parser = Parser(prog=prog, description=__doc__)
    parser.add_argument("--out", default=None, help="results folder (default ./results)")
    sub = parser.add_subparsers(dest="cmd", required=True, parser_class=Parser)
    b = sub.add_parser("bench", help="train and evaluate HML, LSTM and GRU; table, checkpoint, figure")
    b.add_argument("--T", type=int, nargs="+", default=list(DEFAULT_T))
    b.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--max-iterations", type=int, default=CopyConfig.max_iterations)
    b.add_argument("--time-limit", type=float, default=CopyConfig.time_limit_s, help="seconds per model and T")
    b.add_argument("--count", type=int, default=CopyConfig.eval_count, help="evaluation sequences")
    b.add_argument("--batch", type=int, default=CopyConfig.batch, help="training sequences per iteration")
    b.add_argument("--eval-every", type=int, default=CopyConfig.eval_every,
                   help=f"iterations between validations ({CopyConfig.val_size} sequences; costly at long T)")
    b.add_argument("--mode", choices=("fft", "chunked", "reversible"), default=CopyConfig.mode,
                   help="the HML's exact mode (equal values and gradients; they differ in time and memory)")
    b.add_argument("--resume", action="store_true", help="keep finished rows of results/copy_task.json")
    b.add_argument("--no-save", dest="save", action="store_false", help="write no results or checkpoints")
    b.add_argument("--checkpoints", default=default_checkpoints, help="checkpoint folder (default OUT/checkpoints)")
    e = sub.add_parser("eval", help="evaluate a trained HML on fresh sequences")
    e.add_argument("--T", type=int, default=1000)
    e.add_argument("--count", type=int, default=1000)
    e.add_argument("--seed", type=int, default=123)
    e.add_argument("--checkpoint", default=None, help="default: the shipped copy_hml_T{T}.pt")
    f = sub.add_parser("figure", help="energy and phase-space figure of a trained HML")
    f.add_argument("--T", type=int, default=1000)
    f.add_argument("--seed", type=int, default=7)
    f.add_argument("--checkpoint", default=None)
    f.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    args.argv, args.prog = list(sys.argv[1:] if argv is None else argv), prog
    args.results = default_out(args.out, default_results)
    if min(args.T if isinstance(args.T, list) else [args.T]) < 1:
        raise UsageError("T must be >= 1")
    for name in ("batch", "eval_every", "max_iterations", "count"):
        if getattr(args, name, 1) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    {"bench": cmd_bench, "eval": cmd_eval, "figure": cmd_figure}[args.cmd](args)


if __name__ == "__main__":
    main(sys.argv[1:])
