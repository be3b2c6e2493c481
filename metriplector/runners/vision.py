"""Metriplector vision on MNIST digits (or CIFAR pickles): ``sp-dynamics vision``.

    sp-dynamics vision train --preset cpu --jobs 2          # 4 models x 3 seeds, table and figures
    sp-dynamics vision train --preset smoke --seeds 0       # seconds; what the tests run
    sp-dynamics vision train --preset paper --cifar DIR --device cuda   # paper widths, CIFAR-10/100
    sp-dynamics vision eval --data FILE.npz                 # shipped checkpoint on your digits
    sp-dynamics vision eval --checkpoint CKPT.pt --data FILE.npz
    sp-dynamics vision pack IMAGE_DIR --out FILE.npz         # root/<digit>/<image>.png -> the eval format

(``python -m experiments.vision ...`` in a checkout writes results to ``experiments/results`` and
the shipped checkpoint to ``metriplector/checkpoints``.)

One ``train`` run trains, on the same data with the same epochs, optimiser and schedule:
``stress`` (the paper's metriplectic network with the stress-energy readout), ``curvature`` and
``values`` (the same network with the readout swapped, as the paper's Table 3) and ``cnn`` (a
ResNet-style CNN whose width is chosen to match the stress model's parameter count). All counts
are checked to lie within 10% of the stress model's. Every epoch is checkpointed atomically in the
run folder, and an interrupted ``train`` resumes where it stopped (same preset and settings).

Data: the fixed MNIST split of :mod:`metriplector.images` (7,500 train, 500 validation used only
for the learning curves, 1,000 test scored once). Augmentation: random translations of up to
``shift`` pixels (zero fill) for every model alike.
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

from ._shared import (add_train_options, check_device, check_models, check_parity, load_blob, load_model_blob,
                      percent_stat, predict, warmup_cosine)
from ..images import load_cifar, load_image_folder, load_image_npz, mnist_parts, to_tensor
from ..layers import stress_from_gradients
from ..vision import MetriplectorVision, ResNetBaseline, baseline_width

CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"
DEFAULT_CHECKPOINT = CHECKPOINTS / "vision_mnist.pt"
MODELS = ("stress", "curvature", "values", "cnn")
CHECKPOINT_FORMAT = "metriplector-vision/1"
PARITY = 0.10  # parameter counts of the compared models within 10% of the stress model's


@dataclass(frozen=True)
class VisionConfig:
    width: int = 32
    depth: int = 6
    fields: int = 8
    substeps: int = 2
    dt: float = 0.5
    advection_step: str = "exact"
    diffusion_step: str = "explicit"
    drop_path: float = 0.05
    cnn_blocks: int = 3
    epochs: int = 10
    batch: int = 128
    lr: float = 3e-3
    weight_decay: float = 5e-4
    warmup_steps: int = 50
    shift: int = 2
    label_smoothing: float = 0.0
    train_limit: int | None = None   # use only the first N training images (smoke)
    test_limit: int | None = None
    eval_batch: int = 500

    def validate(self) -> None:
        if self.epochs < 1 or self.batch < 1 or self.lr <= 0:
            raise ValueError(f"need epochs >= 1, batch >= 1 and lr > 0, got {self.epochs}, {self.batch}, {self.lr}")
        if self.shift < 0:
            raise ValueError(f"shift must be >= 0, got {self.shift}")


PRESETS = {
    "smoke": VisionConfig(width=8, depth=1, fields=4, substeps=1, cnn_blocks=1, epochs=1, batch=32, train_limit=128,
                          test_limit=100, warmup_steps=1),
    "cpu": VisionConfig(),
    # the paper's CIFAR-100 model: 12 non-shared layers, C = 32 fields, 8 substeps; the width of h
    # is not stated (our choice, 96, gives about 2.5M parameters on CIFAR-100)
    "paper": VisionConfig(width=96, depth=12, fields=32, substeps=8, dt=0.25, cnn_blocks=6, epochs=200, batch=128,
                          lr=2e-3, weight_decay=5e-2, drop_path=0.1, shift=4, label_smoothing=0.1),
}


# --------------------------------------------------------------------------------------- models

def _metriplector_kwargs(cfg: VisionConfig, readout: str, in_channels: int, classes: int) -> dict:
    return {"in_channels": in_channels, "classes": classes, "width": cfg.width, "depth": cfg.depth,
            "fields": cfg.fields, "substeps": cfg.substeps, "dt": cfg.dt, "readout": readout,
            "advection_step": cfg.advection_step, "diffusion_step": cfg.diffusion_step, "drop_path": cfg.drop_path}


def stress_parameters(cfg: VisionConfig, in_channels: int, classes: int) -> int:
    """The parameter count every compared model is matched to: the stress-energy model's."""
    return count_parameters(MetriplectorVision(**_metriplector_kwargs(cfg, "stress", in_channels, classes)))


def model_kwargs(cfg: VisionConfig, kind: str, in_channels: int, classes: int) -> dict:
    check_models((kind,), MODELS)
    if kind == "cnn":
        return {"in_channels": in_channels, "classes": classes, "blocks": cfg.cnn_blocks,
                "width": baseline_width(stress_parameters(cfg, in_channels, classes), cfg.cnn_blocks, in_channels,
                                        classes)}
    kwargs = _metriplector_kwargs(cfg, kind, in_channels, classes)
    if kind != "stress":
        # a swapped readout keeps the width of h unless that moves the parameter count by more
        # than 10% (the value readout has C + C(C+1)/2 features, not C^2); then the width is matched
        target = stress_parameters(cfg, in_channels, classes)
        if abs(count_parameters(MetriplectorVision(**kwargs)) - target) > PARITY * target:
            kwargs["width"] = matched_width(lambda w: MetriplectorVision(**{**kwargs, "width": w}), target)
    return kwargs


def build(kind: str, kwargs: dict) -> torch.nn.Module:
    return ResNetBaseline(**kwargs) if kind == "cnn" else MetriplectorVision(**kwargs)


def check_parameter_parity(cfg: VisionConfig, kinds, in_channels: int, classes: int) -> dict:
    """Parameter counts of the models, each within 10% of the stress model's."""
    counts = {k: count_parameters(build(k, model_kwargs(cfg, k, in_channels, classes))) for k in kinds}
    return check_parity(counts, stress_parameters(cfg, in_channels, classes), "stress", PARITY)


# ----------------------------------------------------------------------------------------- data

def load_data(cfg: VisionConfig, cifar: str | None):
    """(train_x, train_y, val_x, val_y, test_x, test_y, classes) as tensors."""
    if cifar:
        tx, ty, classes = load_cifar(cifar, "train")
        ex, ey, _ = load_cifar(cifar, "test")
        n_val = min(1000, len(tx) // 10)
        parts = (tx[:-n_val], ty[:-n_val], tx[-n_val:], ty[-n_val:], ex, ey)
    else:
        classes = 10
        split = mnist_parts()
        parts = (*split["train"], *split["val"], *split["test"])
    tx, ty, vx, vy, ex, ey = parts
    if cfg.train_limit:
        tx, ty = tx[: cfg.train_limit], ty[: cfg.train_limit]
    if cfg.test_limit:
        vx, vy, ex, ey = vx[: cfg.test_limit], vy[: cfg.test_limit], ex[: cfg.test_limit], ey[: cfg.test_limit]
    t = lambda y: torch.from_numpy(np.asarray(y, dtype=np.int64))  # noqa: E731
    return to_tensor(tx), t(ty), to_tensor(vx), t(vy), to_tensor(ex), t(ey), classes


def data_shape(cifar: str | None) -> tuple[int, int]:
    """(image channels, classes) of the training data, without loading the training set."""
    if not cifar:
        return 1, 10
    images, _, classes = load_cifar(cifar, "test")
    return images.shape[-1], classes


def shift_batch(x: torch.Tensor, shift: int, g: torch.Generator) -> torch.Tensor:
    """Random translations by up to ``shift`` pixels per image, zero fill."""
    if shift == 0:
        return x
    B, _, H, W = x.shape
    padded = F.pad(x, (shift, shift, shift, shift))
    dy = torch.randint(0, 2 * shift + 1, (B,), generator=g)
    dx = torch.randint(0, 2 * shift + 1, (B,), generator=g)
    rows = (dy[:, None] + torch.arange(H)[None])[:, None, :, None]
    cols = (dx[:, None] + torch.arange(W)[None])[:, None, None, :]
    b = torch.arange(B)[:, None, None, None]
    c = torch.arange(x.shape[1])[None, :, None, None]
    return padded[b, c, rows, cols]


# ------------------------------------------------------------------------------------- training

def train_one(cfg: VisionConfig, kind: str, seed: int, run_dir: str, cifar: str | None = None,
              device: str = "cpu", threads: int | None = None) -> dict:
    """Train one model on ``device``; checkpoint every epoch to ``run_dir``; resume from there.
    Returns its row."""
    set_threads(threads)
    run_dir = Path(run_dir)
    done = run_dir / f"{kind}_seed{seed}.json"
    if done.exists():
        return json.loads(done.read_text())
    tx, ty, vx, vy, ex, ey, classes = load_data(cfg, cifar)
    kwargs = model_kwargs(cfg, kind, tx.shape[1], classes)
    torch.manual_seed(seed)
    model = build(kind, kwargs).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(tx) / cfg.batch)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: warmup_cosine(step, cfg.warmup_steps, cfg.epochs * steps_per_epoch))
    g = torch.Generator().manual_seed(seed)
    state_path = run_dir / f"{kind}_seed{seed}.state.pt"
    history, epoch0, train_time = [], 0, 0.0
    if state_path.exists():
        state = safe_load(state_path, "vision training state")  # (on the CPU; load_state_dict moves it)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        g.set_state(state["rng"])
        torch.set_rng_state(state["torch_rng"])  # stochastic depth draws from the global generator
        history, epoch0, train_time = state["history"], state["epoch"], state["train_time_s"]
    for epoch in range(epoch0, cfg.epochs):
        model.train()
        start, total, seen = time.time(), 0.0, 0
        order = torch.randperm(len(tx), generator=g)
        bar = tqdm(range(steps_per_epoch), desc=f"{kind} seed {seed} epoch {epoch + 1}/{cfg.epochs}", disable=None,
                   leave=False)
        for k in bar:
            idx = order[k * cfg.batch : (k + 1) * cfg.batch]
            xb, yb = shift_batch(tx[idx], cfg.shift, g).to(device), ty[idx].to(device)
            loss = F.cross_entropy(model(xb), yb, label_smoothing=cfg.label_smoothing)
            if not torch.isfinite(loss):
                raise RuntimeError(f"{kind} seed {seed}: the training loss became {float(loss)} at epoch {epoch + 1}")
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total, seen = total + loss.item() * len(idx), seen + len(idx)
        train_time += time.time() - start
        val_acc = float((predict(model, vx, cfg.eval_batch) == vy).float().mean())
        history.append({"epoch": epoch + 1, "train_loss": total / seen, "val_accuracy": val_acc,
                        "train_time_s": train_time})
        atomic_save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                     "rng": g.get_state(), "torch_rng": torch.get_rng_state(), "history": history, "epoch": epoch + 1, "train_time_s": train_time},
                    state_path)
    t0 = time.time()
    pred = predict(model, ex, cfg.eval_batch)
    eval_time = time.time() - t0
    confusion = np.zeros((classes, classes), dtype=int)
    np.add.at(confusion, (ey.numpy(), pred.numpy()), 1)
    row = {"model": kind, "seed": seed, "params": count_parameters(model), "kwargs": kwargs,
           "test_accuracy": float((pred == ey).float().mean()), "test_count": len(ey), "history": history,
           "train_time_s": train_time, "train_images_per_s": cfg.epochs * len(tx) / train_time,
           "eval_images_per_s": len(ex) / eval_time, "confusion": confusion.tolist(),
           "threads": torch.get_num_threads()}
    atomic_save(checkpoint_blob(kind, kwargs, model, row), run_dir / f"{kind}_seed{seed}.pt")
    atomic_write_text(json.dumps(row), done)
    return row


def checkpoint_blob(kind: str, kwargs: dict, model: torch.nn.Module, row: dict) -> dict:
    return {"format": CHECKPOINT_FORMAT, "kind": kind, "kwargs": kwargs, "model": model.state_dict(),
            "test_accuracy": row["test_accuracy"], "seed": row["seed"]}


def load_checkpoint(path: str | Path) -> tuple[torch.nn.Module, dict]:
    return load_model_blob(path, CHECKPOINT_FORMAT, "vision checkpoint", build)


# ---------------------------------------------------------------------------------- the report

def table(cfg: VisionConfig, preset: str, rows: list[dict], command: str, wall: float, jobs: int, data: str) -> str:
    lines = [
        f"# Metriplector vision, preset `{preset}` ({data})",
        "",
        command,
        machine_line(wall, jobs),
        f"- settings: width {cfg.width}, depth {cfg.depth}, fields {cfg.fields}, substeps {cfg.substeps}, dt {cfg.dt}, "
        f"advection {cfg.advection_step}, diffusion {cfg.diffusion_step}, drop path {cfg.drop_path}; "
        f"{cfg.epochs} epochs, batch {cfg.batch}, AdamW lr {cfg.lr} (warm-up {cfg.warmup_steps} steps, cosine), "
        f"weight decay {cfg.weight_decay}; augmentation: random shifts up to {cfg.shift} px for every model; "
        f"CNN: {cfg.cnn_blocks} basic blocks, width matched to the stress model's parameter count",
        "- test accuracy is mean ± std (population) over the seeds; images/s measured in the same run",
        "",
        "| model | params | seeds | test accuracy (%) | train time (s) | train images/s | eval images/s |",
        "|---|---|---|---|---|---|---|",
    ]
    names = {"stress": "Metriplector, stress-energy readout", "curvature": "Metriplector, field-curvature readout",
             "values": "Metriplector, field-value readout", "cnn": "ResNet-style CNN"}
    for kind in MODELS:
        rs = [r for r in rows if r["model"] == kind]
        if not rs:
            continue
        lines.append(f"| {names[kind]} | {rs[0]['params']} | {','.join(str(r['seed']) for r in rs)} | "
                     f"{percent_stat([r['test_accuracy'] for r in rs])} | {np.mean([r['train_time_s'] for r in rs]):.0f} | "
                     f"{np.mean([r['train_images_per_s'] for r in rs]):.0f} | "
                     f"{np.mean([r['eval_images_per_s'] for r in rs]):.0f} |")
    lines += ["", "Per seed:", "", "| model | seed | test accuracy (%) | final val accuracy (%) | train time (s) |",
              "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['seed']} | {100 * r['test_accuracy']:.2f} | "
                     f"{100 * r['history'][-1]['val_accuracy']:.2f} | {r['train_time_s']:.0f} |")
    lines += ["", "Reference (paper, not ours): CIFAR-100 81.03% with 2.26M parameters, 12 layers, stress-energy "
              "readout, 8 substeps; curvature readout 78.4% (1.49M). Not measured here (no CIFAR, no GPU).", ""]
    return "\n".join(lines)


def figures(rows: list[dict], run_dir: Path, out: Path, stem: str, cfg: VisionConfig, cifar: str | None) -> None:
    plt = pyplot()
    if plt is None:
        return
    colors = {"stress": "tab:red", "curvature": "tab:blue", "values": "tab:green", "cnn": "black"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for r in rows:
        ep = [h["epoch"] for h in r["history"]]
        label = r["model"] if r["seed"] == min(x["seed"] for x in rows if x["model"] == r["model"]) else None
        axes[0].plot(ep, [h["train_loss"] for h in r["history"]], color=colors[r["model"]], alpha=0.7, label=label)
        axes[1].plot(ep, [100 * h["val_accuracy"] for h in r["history"]], color=colors[r["model"]], alpha=0.7, label=label)
    axes[0].set(xlabel="epoch", ylabel="training loss (augmented)", yscale="log", title="training loss")
    axes[1].set(xlabel="epoch", ylabel="validation accuracy (%)", title="validation accuracy (500 images)")
    axes[1].set_ylim(max(0, min(100 * h["val_accuracy"] for r in rows for h in r["history"][1:] or r["history"]) - 1), 100)
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / f"{stem}_curves.png", dpi=110)
    plt.close(fig)

    best = [r for r in rows if r["model"] == "stress"]
    if not best:
        return
    r0 = best[0]
    conf = np.array(r0["confusion"])
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.imshow(np.log1p(conf), cmap="Blues")
    for i in range(conf.shape[0]):
        for j in range(conf.shape[1]):
            if conf[i, j]:
                ax.text(j, i, conf[i, j], ha="center", va="center", fontsize=7,
                        color="white" if i == j else "black")
    ax.set(xlabel="predicted", ylabel="true", title=f"stress-energy model, seed {r0['seed']}: test confusion",
           xticks=range(conf.shape[0]), yticks=range(conf.shape[0]))
    fig.tight_layout()
    fig.savefig(out / f"{stem}_confusion.png", dpi=110)
    plt.close(fig)
    fields_figure(run_dir / f"stress_seed{r0['seed']}.pt", out / f"{stem}_fields.png", cfg, cifar)


def fields_figure(ckpt: Path, path: Path, cfg: VisionConfig, cifar: str | None, digits: int = 4) -> None:
    """For a few test images: the input, two evolved fields of the first and last layers, and the
    last layer's energy density sum_i T_ii and vorticity magnitude sum_{i<j} |V_ij|."""
    plt = pyplot()
    if plt is None:
        return
    model, _ = load_checkpoint(ckpt)
    *_, ex, ey, _ = load_data(cfg, cifar)
    digits = min(digits, len(ex))
    x = ex[:digits]
    phis = model.fields(x)
    last = model.layers[-1]
    with torch.no_grad():
        diag, _, vort = stress_from_gradients(*last.gradients(phis[-1]))
    cols = ["input", "layer 1 field 0", "layer 1 field 1", f"layer {len(phis)} field 0", f"layer {len(phis)} field 1",
            f"layer {len(phis)} energy", f"layer {len(phis)} |vorticity|"]
    fig, axes = plt.subplots(digits, len(cols), figsize=(2 * len(cols), 2 * digits), squeeze=False)
    for d in range(digits):
        img = x[d].permute(1, 2, 0).squeeze(-1).numpy()
        maps = [img, phis[0][d, 0], phis[0][d, 1], phis[-1][d, 0], phis[-1][d, 1], diag[d].sum(0), vort[d].abs().sum(0)]
        for c, m in enumerate(maps):
            ax = axes[d, c]
            ax.imshow(np.asarray(m), cmap="gray" if c == 0 else ("coolwarm" if c < 5 else "magma"))
            ax.set_xticks([])
            ax.set_yticks([])
            if d == 0:
                ax.set_title(cols[c], fontsize=8)
        axes[d, 0].set_ylabel(f"label {int(ey[d])}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------ commands

def cmd_train(args) -> None:
    cfg = apply_overrides(PRESETS[args.preset], args.overrides)
    kinds = check_models(args.models, MODELS)
    out = default_out(args.out, args.default_results)
    data = f"CIFAR pickles from {args.cifar}" if args.cifar else "MNIST 9k split 7500/500/1000"
    in_channels, classes = data_shape(args.cifar)
    counts = check_parameter_parity(cfg, kinds, in_channels, classes)
    print("parameters: " + ", ".join(f"{k} {n}" for k, n in counts.items()), flush=True)
    key = config_hash({"cfg": config_dict(cfg), "cifar": args.cifar})
    run_dir = out / "runs" / f"vision-{args.preset}-{key}"
    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    check_device(args.device)
    calls = {(k, s): (cfg, k, s, str(run_dir), args.cifar, args.device) for s in args.seeds for k in kinds}

    def report(key, row):
        print(f"{row['model']} seed {row['seed']}: test accuracy {100 * row['test_accuracy']:.2f}% "
              f"({row['params']} params, {row['train_time_s']:.0f} s)", flush=True)

    done = run_jobs(train_one, calls, args.jobs, report)
    rows = [done[k] for k in calls]
    stem = result_stem(f"vision_{args.preset}" + ("_cifar" if args.cifar else ""), args)
    text = table(cfg, args.preset, rows, command_line(args.prog, args.argv), time.time() - start, args.jobs, data)
    if args.save:
        write_results(out, stem, text, rows, cfg)
        figures(rows, run_dir, out, stem, cfg, args.cifar)
        if args.ship and "stress" in kinds:
            seed = min(args.seeds)
            blob = load_blob(run_dir / f"stress_seed{seed}.pt", CHECKPOINT_FORMAT, "vision checkpoint")
            target = Path(args.checkpoints) / f"vision_{'cifar' if args.cifar else 'mnist'}.pt"
            atomic_save(blob, target)
            print(f"shipped checkpoint: {target}", flush=True)
    print(text)


def cmd_eval(args) -> None:
    model, blob = load_checkpoint(args.checkpoint)
    shape = (28, 28) if model.in_channels == 1 else (32, 32, model.in_channels)
    images, labels = load_image_npz(args.data, classes=model.classes, shape=shape)
    t0 = time.time()
    pred = predict(model, to_tensor(images), 500)
    acc = float((pred.numpy() == labels).mean())
    print(json.dumps({"accuracy": acc, "count": int(len(labels)), "model": blob["kind"],
                      "checkpoint": str(args.checkpoint), "wall_time_s": round(time.time() - t0, 2)}))


def cmd_pack(args) -> None:
    if args.size < 4:
        raise UsageError(f"--size must be >= 4, got {args.size}")
    images, labels, classes = load_image_folder(args.folder, (args.size, args.size), grayscale=True, invert=args.invert)
    from sp_dynamics.io import atomic_savez

    atomic_savez(args.out, images=images, labels=labels)
    print(json.dumps({"out": str(args.out), "count": int(len(labels)), "classes": classes,
                      "shape": list(images.shape[1:])}))


def main(argv: list[str] | None = None, *, default_results=None, default_checkpoints=None,
         prog: str = "sp-dynamics vision") -> None:
    parser = Parser(prog=prog, description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True, parser_class=Parser)
    t = sub.add_parser("train", help="train the four models, write the table, figures and checkpoints")
    add_train_options(t, PRESETS, MODELS, default_checkpoints or str(CHECKPOINTS), seeds=(0, 1, 2),
                      ship_help="copy the stress model of the first seed to --checkpoints")
    t.add_argument("--cifar", default=None, metavar="DIR", help="train on CIFAR-10/100 python pickles in DIR")
    t.add_run_options()
    e = sub.add_parser("eval", help="accuracy of a checkpoint on images from a file (one JSON line)")
    e.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    e.add_argument("--data", required=True, metavar="FILE.npz",
                   help="images (N, 28, 28) uint8 and labels (N,) in 0..9 (CIFAR models: (N, 32, 32, 3))")
    k = sub.add_parser("pack", help="an image folder (root/<class>/<image>) as an eval .npz file")
    k.add_argument("folder")
    k.add_argument("--out", required=True, metavar="FILE.npz")
    k.add_argument("--size", type=int, default=28, help="resize to SIZE x SIZE (default 28)")
    k.add_argument("--invert", action="store_true", help="dark digits on a light background: invert to MNIST's")
    args = parser.parse_args(argv)
    args.argv, args.prog, args.default_results = list(sys.argv[1:] if argv is None else argv), prog, default_results
    {"train": cmd_train, "eval": cmd_eval, "pack": cmd_pack}[args.cmd](args)


if __name__ == "__main__":
    main(sys.argv[1:])
