"""Sequential and permuted pixel MNIST: the HML against LSTM, GRU and the causal Metriplector
(``sp-dynamics pixel-mnist``).

    sp-dynamics pixel-mnist train --preset cpu --jobs 2                 # permuted, 3 seeds, 4 models
    sp-dynamics pixel-mnist train --preset cpu --orders sequential --seeds 0
    sp-dynamics pixel-mnist train --preset smoke --seeds 0              # seconds; what the tests run
    sp-dynamics pixel-mnist eval --data FILE.npz                        # shipped permuted HML
    sp-dynamics pixel-mnist eval --checkpoint CKPT.pt --data FILE.npz
    sp-dynamics pixel-mnist figure --out digit_energy.png               # HML energy along a digit

(``python -m experiments.pixel_mnist ...`` in a checkout writes results to ``experiments/results``
and shipped checkpoints to ``metriplector/checkpoints``.)

Protocol. Data: the shipped 9,000 digits with the fixed split of :mod:`metriplector.images`
(7,500 train, 500 validation for the learning curves only, 1,000 test scored once per model).
Orders and input scaling: :mod:`metriplector.pixel_mnist`. One ``train`` run trains every model
on the same batches (seed), for the same epochs, with the same optimiser (AdamW, linear warm-up
then cosine decay, gradient-norm clipping). The HML's size is the preset's; the LSTM's and GRU's
hidden sizes and the Metriplector's width are chosen so that every parameter count lies within
10% of the HML's. A model "trains stably" when no training loss is non-finite and the final
training loss is below the first epoch's. Every epoch is checkpointed atomically in the run
folder, and an interrupted ``train`` resumes where it stopped.
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
from sp_dynamics.sequence import HMLClassifier

from ..images import load_image_npz, mnist_parts
from ..pixel_mnist import ORDERS, MetriplectorClassifier, RNNClassifier, pixel_sequences
from ._shared import (add_train_options, check_device, check_models, check_parity, load_model_blob, percent_stat,
                      predict, warmup_cosine)

CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"
DEFAULT_CHECKPOINT = CHECKPOINTS / "pixel_mnist_permuted_hml.pt"
MODELS = ("hml", "lstm", "gru", "metriplector")
CHECKPOINT_FORMAT = "metriplector-pixel-mnist/1"
PARITY = 0.10


@dataclass(frozen=True)
class PixelConfig:
    epochs: int = 4
    batch: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    grad_clip: float = 1.0
    width: int = 64              # HML width (input map, residual stream)
    state_size: int = 128        # HML oscillators per layer, evenly spaced rotation angles 2.4 n / D (n = 1..D)
    layers: int = 1              # HML layers (the Metriplector gets as many blocks)
    mlp_ratio: int = 2
    chunk: int = 28
    metriplector_fields: int = 8
    train_limit: int | None = None   # use the first N training digits (smoke preset)
    test_limit: int | None = None
    eval_batch: int = 250

    def validate(self) -> None:
        for name in ("epochs", "batch", "width", "state_size", "layers", "chunk", "eval_batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


PRESETS = {
    "smoke": PixelConfig(epochs=1, batch=16, width=8, state_size=4, layers=1, warmup_steps=2, train_limit=64,
                         test_limit=50, metriplector_fields=2),
    "cpu": PixelConfig(),
    "gpu": PixelConfig(epochs=60, batch=128, width=128, state_size=256, layers=4, lr=1e-3),
}


# --------------------------------------------------------------------------------------- models

def _kwargs(cfg: PixelConfig, kind: str, width: int) -> dict:
    if kind == "hml":
        return {"input_size": 1, "classes": 10, "width": width, "state_size": cfg.state_size, "n_layers": cfg.layers,
                "mlp_ratio": cfg.mlp_ratio, "mode": "chunked", "chunk": cfg.chunk, "damping": True,
                "frequencies": "linear", "pool": "last"}
    if kind in ("lstm", "gru"):
        return {"kind": kind, "input_size": 1, "classes": 10, "hidden": width}
    if kind == "metriplector":
        return {"input_size": 1, "classes": 10, "width": width, "depth": cfg.layers, "fields": cfg.metriplector_fields,
                "mlp_ratio": cfg.mlp_ratio}
    raise UsageError(f"unknown model {kind!r}; choose from {', '.join(MODELS)}")


def build(kind: str, kwargs: dict) -> torch.nn.Module:
    return HMLClassifier(**kwargs) if kind == "hml" else (
        MetriplectorClassifier(**kwargs) if kind == "metriplector" else RNNClassifier(**kwargs))


def model_kwargs(cfg: PixelConfig, kind: str) -> dict:
    """Constructor arguments; sizes other than the HML's are matched to its parameter count."""
    if kind == "hml":
        return _kwargs(cfg, "hml", cfg.width)
    target = count_parameters(build("hml", _kwargs(cfg, "hml", cfg.width)))
    return _kwargs(cfg, kind, matched_width(lambda w: build(kind, _kwargs(cfg, kind, w)), target))


def parameter_counts(cfg: PixelConfig, kinds) -> dict:
    counts = {k: count_parameters(build(k, model_kwargs(cfg, k))) for k in kinds}
    return check_parity(counts, count_parameters(build("hml", model_kwargs(cfg, "hml"))), "HML", PARITY)


# ----------------------------------------------------------------------------------------- data

def load_data(cfg: PixelConfig, order: str):
    parts = mnist_parts()
    out = []
    for part, limit in (("train", cfg.train_limit), ("val", cfg.test_limit), ("test", cfg.test_limit)):
        images, labels = parts[part]
        images, labels = images[:limit], labels[:limit]
        out += [pixel_sequences(images, order), torch.from_numpy(labels)]
    return out


# ------------------------------------------------------------------------------------- training

def train_one(cfg: PixelConfig, order: str, kind: str, seed: int, run_dir: str, device: str = "cpu",
              threads: int | None = None) -> dict:
    """Train one model; checkpoint every epoch to ``run_dir`` and resume from there. Its row."""
    set_threads(threads)
    run_dir = Path(run_dir)
    name = f"{order}_{kind}_seed{seed}"
    done = run_dir / f"{name}.json"
    if done.exists():
        return json.loads(done.read_text())
    tx, ty, vx, vy, ex, ey = load_data(cfg, order)
    kwargs = model_kwargs(cfg, kind)
    torch.manual_seed(seed)
    model = build(kind, kwargs).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(tx) / cfg.batch)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: warmup_cosine(step, cfg.warmup_steps, cfg.epochs * steps_per_epoch))
    g = torch.Generator().manual_seed(seed)
    state_path = run_dir / f"{name}.state.pt"
    history, epoch0, train_time, finite = [], 0, 0.0, True
    if state_path.exists():
        state = safe_load(state_path, "pixel-MNIST training state")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        g.set_state(state["rng"])
        history, epoch0, train_time, finite = state["history"], state["epoch"], state["train_time_s"], state["finite"]
    for epoch in range(epoch0, cfg.epochs):
        model.train()
        start, total, seen = time.time(), 0.0, 0
        order_idx = torch.randperm(len(tx), generator=g)
        bar = tqdm(range(steps_per_epoch), desc=f"{order} {kind} seed {seed} epoch {epoch + 1}/{cfg.epochs}",
                   disable=None, leave=False)
        for k in bar:
            idx = order_idx[k * cfg.batch : (k + 1) * cfg.batch]
            loss = F.cross_entropy(model(tx[idx].to(device)), ty[idx].to(device))
            if not torch.isfinite(loss):  # recorded, and the step skipped: "trains stably" is reported
                finite = False
                continue
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            total, seen = total + loss.item() * len(idx), seen + len(idx)
        train_time += time.time() - start
        val_acc = float((predict(model, vx, cfg.eval_batch) == vy).float().mean())
        history.append({"epoch": epoch + 1, "train_loss": total / max(seen, 1), "val_accuracy": val_acc,
                        "train_time_s": train_time})
        bar.close()
        atomic_save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                     "rng": g.get_state(), "history": history, "epoch": epoch + 1, "train_time_s": train_time,
                     "finite": finite}, state_path)
    pred = predict(model, ex, cfg.eval_batch)
    stable = finite and len(history) > 0 and history[-1]["train_loss"] < history[0]["train_loss"]
    row = {"order": order, "model": kind, "seed": seed, "params": count_parameters(model), "kwargs": kwargs,
           "test_accuracy": float((pred == ey).float().mean()), "test_count": len(ey), "history": history,
           "train_time_s": train_time, "finite_losses": finite, "stable": stable if cfg.epochs > 1 else finite,
           "threads": torch.get_num_threads()}
    atomic_save({"format": CHECKPOINT_FORMAT, "kind": kind, "kwargs": kwargs, "order": order, "seed": seed,
                 "model": model.state_dict(), "test_accuracy": row["test_accuracy"]}, run_dir / f"{name}.pt")
    atomic_write_text(json.dumps(row), done)
    return row


def load_checkpoint(path: str | Path):
    return load_model_blob(path, CHECKPOINT_FORMAT, "pixel-MNIST checkpoint", build)


# ---------------------------------------------------------------------------------- the report

NAMES = {"hml": "HML (linear oscillators, damping, chunked exact mode)", "lstm": "LSTM", "gru": "GRU",
         "metriplector": "Causal Metriplector (Poisson chain, scan)"}


def table(cfg: PixelConfig, preset: str, rows: list[dict], command: str, wall: float, jobs: int) -> str:
    lines = [
        f"# Pixel MNIST, preset `{preset}`",
        "",
        command,
        machine_line(wall, jobs, f" (rows finished by an earlier run of the same settings are read from its run "
                                 f"folder; the rows' own training times sum to {sum(r['train_time_s'] for r in rows):.0f} s)"),
        f"- data: the shipped digits, {rows[0]['test_count'] if rows else '?'} test digits scored once per model; "
        f"{cfg.epochs} epochs x batch {cfg.batch} on the {cfg.train_limit or 7500} training digits for every model, "
        f"the same batches (seed); AdamW lr {cfg.lr} (warm-up {cfg.warmup_steps} steps, cosine), weight decay "
        f"{cfg.weight_decay}, clip {cfg.grad_clip}",
        "- accuracy: mean ± std (population) over the seeds; stable: no non-finite loss and the last epoch's training "
        "loss below the first's, for every seed",
        "",
        "| order | model | params | seeds | test accuracy (%) | best val accuracy (%) | stable | train time per "
        "model (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for order in ORDERS:
        for kind in MODELS:
            rs = [r for r in rows if r["model"] == kind and r["order"] == order]
            if not rs:
                continue
            best = 100 * np.array([max(h["val_accuracy"] for h in r["history"]) for r in rs])
            lines.append(f"| {order} | {NAMES[kind]} | {rs[0]['params']:,} | {','.join(str(r['seed']) for r in rs)} | "
                         f"{percent_stat([r['test_accuracy'] for r in rs])} | {best.mean():.2f} | "
                         f"{'yes' if all(r['stable'] for r in rs) else 'no'} | "
                         f"{np.mean([r['train_time_s'] for r in rs]):.0f} |")
    lines += ["", "Per seed:", "", "| order | model | seed | test accuracy (%) | final train loss | train time (s) |",
              "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['order']} | {r['model']} | {r['seed']} | {100 * r['test_accuracy']:.2f} | "
                     f"{r['history'][-1]['train_loss']:.4f} | {r['train_time_s']:.0f} |")
    lines += ["", "References (not ours, and not this data: the full 60,000-digit training set): coRNN and UnICORNN "
              "reach 96.6-98.4% on permuted pixel MNIST (Rusch & Mishra 2021).", ""]
    return "\n".join(lines)


def curves_figure(rows: list[dict], path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    orders = [o for o in ORDERS if any(r["order"] == o for r in rows)]
    fig, axes = plt.subplots(1, len(orders), figsize=(6 * len(orders), 4), squeeze=False)
    colors = dict(zip(MODELS, ("tab:blue", "tab:orange", "tab:green", "tab:red")))
    for ax, order in zip(axes[0], orders):
        labelled = set()
        for r in (r for r in rows if r["order"] == order):
            label = None if r["model"] in labelled else f"{r['model']} ({r['params'] / 1e3:.0f}K)"
            labelled.add(r["model"])
            ax.plot([h["epoch"] for h in r["history"]], [100 * h["val_accuracy"] for h in r["history"]], marker="o",
                    ms=3, color=colors[r["model"]], alpha=0.8, label=label)
        ax.set(xlabel="epoch", ylabel="validation accuracy (%)", title=f"{order} pixel MNIST")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def energy_figure(checkpoint: str | Path, path: Path, index: int = 0) -> None:
    """Energy along one test digit's pixel sequence and phase portraits of the first HML layer's
    most-read channels (the readout's largest column norms)."""
    from sp_dynamics.runners.copy_task import save_diagnostics

    model, blob = load_checkpoint(checkpoint)
    if blob["kind"] != "hml":
        raise UsageError(f"{checkpoint}: the energy figure needs an HML checkpoint, got a {blob['kind']!r} one")
    images, labels = mnist_parts()["test"]
    x = pixel_sequences(images[index : index + 1], blob["order"])
    with torch.no_grad():
        h = model.inp(x)
    save_diagnostics(model.layers[0], h, path, title=f"first HML layer along test digit {index} "
                     f"(label {labels[index]}), {blob['order']} pixels")


# ------------------------------------------------------------------------------------ commands

def cmd_train(args) -> None:
    cfg = apply_overrides(PRESETS[args.preset], args.overrides)
    kinds = check_models(args.models, MODELS)
    for order in args.orders:
        if order not in ORDERS:
            raise UsageError(f"unknown order {order!r}; choose from {', '.join(ORDERS)}")
    counts = parameter_counts(cfg, kinds)
    print("parameters: " + ", ".join(f"{k} {n}" for k, n in counts.items()), flush=True)
    out = default_out(args.out, args.default_results)
    run_dir = out / "runs" / f"pixel-mnist-{args.preset}-{config_hash({'cfg': config_dict(cfg)})}"
    run_dir.mkdir(parents=True, exist_ok=True)
    check_device(args.device)
    start = time.time()
    calls = {(o, k, s): (cfg, o, k, s, str(run_dir), args.device) for o in args.orders for s in args.seeds for k in kinds}

    def report(key, row):
        print(f"{row['order']} {row['model']} seed {row['seed']}: test {100 * row['test_accuracy']:.2f}% "
              f"({row['params']} params, {row['train_time_s']:.0f} s)", flush=True)

    done = run_jobs(train_one, calls, args.jobs, report)
    rows = [done[k] for k in calls]
    stem = result_stem(f"pixel_mnist_{args.preset}" + ("" if set(args.orders) == set(ORDERS) else f"_{'_'.join(args.orders)}"),
                       args)
    text = table(cfg, args.preset, rows, command_line(args.prog, args.argv), time.time() - start, args.jobs)
    if args.save:
        write_results(out, stem, text, rows, cfg)
        curves_figure(rows, out / f"{stem}_curves.png")
        if args.ship:
            for order in args.orders:
                for k in kinds:
                    target = Path(args.checkpoints) / f"pixel_mnist_{order}_{k}.pt"
                    atomic_save(safe_load(run_dir / f"{order}_{k}_seed{min(args.seeds)}.pt"), target)
                    print(f"shipped checkpoint: {target}", flush=True)
    print(text)


def cmd_eval(args) -> None:
    model, blob = load_checkpoint(args.checkpoint)
    images, labels = load_image_npz(args.data, classes=10, shape=(28, 28))
    t0 = time.time()
    pred = predict(model, pixel_sequences(images, blob["order"]), 250)
    print(json.dumps({"accuracy": float((pred.numpy() == labels).mean()), "count": int(len(labels)),
                      "model": blob["kind"], "order": blob["order"], "checkpoint": str(args.checkpoint),
                      "wall_time_s": round(time.time() - t0, 2)}))


def cmd_figure(args) -> None:
    if not 0 <= args.index < 1000:
        raise UsageError(f"--index must be in 0..999 (a test digit), got {args.index}")
    out = Path(args.out) if args.out else default_out(None, args.default_results) / "pixel_mnist_hml_energy.png"
    energy_figure(args.checkpoint, out, args.index)
    print(f"wrote {out}")


def main(argv: list[str] | None = None, *, default_results=None, default_checkpoints=None,
         prog: str = "sp-dynamics pixel-mnist") -> None:
    parser = Parser(prog=prog, description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True, parser_class=Parser)
    t = sub.add_parser("train", help="train the models on the same batches; table, figure, checkpoints")
    add_train_options(t, PRESETS, MODELS, default_checkpoints or str(CHECKPOINTS), seeds=(0, 1, 2))
    t.add_argument("--orders", nargs="+", default=["permuted"], help=f"any of {', '.join(ORDERS)}")
    t.add_run_options()
    e = sub.add_parser("eval", help="accuracy of a checkpoint on digits from a file (one JSON line)")
    e.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    e.add_argument("--data", required=True, metavar="FILE.npz", help="images (N, 28, 28) uint8 and labels (N,) in 0..9")
    f = sub.add_parser("figure", help="energy and phase portraits of an HML along a test digit")
    f.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    f.add_argument("--index", type=int, default=0, help="test digit 0..999")
    f.add_argument("--out", default=None, metavar="FILE.png")
    args = parser.parse_args(argv)
    args.argv, args.prog, args.default_results = list(sys.argv[1:] if argv is None else argv), prog, default_results
    {"train": cmd_train, "eval": cmd_eval, "figure": cmd_figure}[args.cmd](args)


if __name__ == "__main__":
    main(sys.argv[1:])
