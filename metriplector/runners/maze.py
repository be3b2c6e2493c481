"""Maze pathfinding with a single screened-Poisson solve (Metriplector): ``sp-dynamics maze``.

    sp-dynamics maze train                     # 3 seeds: train, evaluate, table, figure
    sp-dynamics maze train --seeds 0 --steps 100
    sp-dynamics maze eval --size 39 --count 200 --seed 123   # any size, count, seed
    sp-dynamics maze eval --checkpoint path/to/ckpt.pt --size 21
    sp-dynamics maze scale --sizes 15 39 63 99 151 201 --count 50 --seed 777   # size table, resumable

(``python -m experiments.maze ...`` in a checkout writes its results to ``experiments/results``.)
The shipped checkpoints are package data (``metriplector/checkpoints/maze_seed*.pt``).

Protocol (our choices where the paper is silent): training mazes are 250 DFS mazes of 15x15
drawn from seed 1000 + s for model seed s; held-out 15x15 mazes and the unseen 39x39 mazes come
from seeds 2000 and 3000 (never used in training); start and goal are random distinct cells;
F1 is pooled over all path cells of an evaluation set (per-maze mean and exact-solve rate too).
The model is size-free (``MazeConfig``: unit +/- charge sources, damping ~ 1/N^2, CG iterations
~ N); checkpoints from before that change load with their own settings (``LEGACY``).
"""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from sp_dynamics.io import atomic_save, atomic_write_text, safe_load
from sp_dynamics.runners.common import Parser, UsageError, default_out, pyplot

from ..maze import MazeSolver, f1_scores, maze_dataset, path_counts

CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"
DEFAULT_CHECKPOINT = CHECKPOINTS / "maze_seed0.pt"


@dataclass(frozen=True)
class MazeConfig:
    train_size: int = 15
    train_count: int = 250
    steps: int = 300
    batch: int = 32
    lr: float = 1e-2
    embed: int = 16
    hidden: int = 64
    fields: int = 4
    eval_count: int = 200
    big_size: int = 39
    # size-free parametrisation: unit +/- charge sources, damping ~ 1/N^2, CG iterations ~ N
    sources: str = "charges"
    damping_power: float = 2.0
    max_iter: int = 0
    # training only: wall-touching conductances x 10^U(0, s), so that leakage must be negligible;
    # s ramps from 0 to leak_augment over the first half of training (the model first learns to
    # route the current at all, as without the augmentation)
    leak_augment: float = 3.0


# checkpoints written before the size-free parametrisation have no such keys: they were trained
# with free sources, 1/N damping, at most 5000 CG iterations and no leak augmentation
LEGACY = {"sources": "free", "damping_power": 1.0, "max_iter": 5000, "leak_augment": 0.0}


def build(cfg: MazeConfig) -> MazeSolver:
    return MazeSolver(embed=cfg.embed, hidden=cfg.hidden, fields=cfg.fields, sources=cfg.sources,
                      damping_power=cfg.damping_power, max_iter=cfg.max_iter, leak_augment=cfg.leak_augment).double()


def train(cfg: MazeConfig, seed: int, out: Path | None) -> tuple[MazeSolver, dict]:
    torch.manual_seed(seed)
    cells, target = maze_dataset(cfg.train_size, cfg.train_count, seed=1000 + seed)
    model = build(cfg).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    pos = float(target.mean())
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor((1 - pos) / pos, dtype=torch.float64))
    g = torch.Generator().manual_seed(seed)
    start = time.time()
    for step in tqdm(range(cfg.steps), desc=f"maze seed {seed}", disable=None):
        model.leak_augment = cfg.leak_augment * min(1.0, step / max(1, cfg.steps // 2))
        idx = torch.randint(0, cfg.train_count, (cfg.batch,), generator=g)
        loss = loss_fn(model(cells[idx]), target[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    train_time = time.time() - start
    ckpt = {"config": dataclasses.asdict(cfg), "seed": seed, "model": model.state_dict(), "train_time_s": train_time}
    if out is not None:
        atomic_save(ckpt, out)
    return model, {"seed": seed, "train_time_s": train_time, "final_loss": float(loss.detach())}


def load(path: Path) -> MazeSolver:
    blob = safe_load(path, "maze checkpoint")
    if not isinstance(blob, dict) or "model" not in blob or "config" not in blob:
        raise ValueError(f"{path} is not a maze checkpoint (expected keys 'config' and 'model')")
    try:
        cfg = MazeConfig(**{**LEGACY, **blob["config"]})
        model = build(cfg)
        model.load_state_dict(blob["model"])
    except (TypeError, RuntimeError) as err:
        raise ValueError(f"{path} does not match this MazeSolver: {str(err).splitlines()[0]}") from None
    return model.eval()


@torch.no_grad()
def evaluate(model: MazeSolver, size: int, count: int, seed: int, chunk: int = 50) -> dict:
    """F1 scores on ``count`` fresh mazes, plus the most CG iterations any chunk needed."""
    model.eval()  # (training-only augmentation off)
    cells, target = maze_dataset(size, count, seed)
    logits, iters = [], 0
    for i in range(0, count, chunk):
        logits.append(model(cells[i : i + chunk]))
        iters = max(iters, model.last_info.iterations)
    return {**f1_scores(torch.cat(logits), target), "cg_iterations": iters}


@torch.no_grad()
def maze_counts(model: MazeSolver, cells: torch.Tensor, target: torch.Tensor) -> dict:
    """Per-chunk path-cell counts (tp, fp, fn, exact solves), so F1 can be pooled over chunks."""
    model.eval()
    t0 = time.time()
    tp, fp, fn, solved = path_counts(model(cells), target)
    return {"n": len(cells), "tp": int(tp.sum()), "fp": int(fp.sum()), "fn": int(fn.sum()), "exact": int(solved.sum()),
            "time_s": time.time() - t0, "cg_iterations": model.last_info.iterations}


def figure(model: MazeSolver, size: int, seed: int, path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    cells, target = maze_dataset(size, 1, seed)
    model.eval()
    with torch.no_grad():
        logits = model(cells)
        _, phi = model.features(cells)
    walls = (cells[0] == 0).numpy()
    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    axes[0].imshow(walls, cmap="gray_r")
    axes[0].contour(target[0].numpy(), levels=[0.5], colors="tab:green")
    pred = np.ma.masked_where(~(logits[0] > 0).numpy(), np.ones_like(walls, dtype=float))
    axes[0].imshow(pred, cmap="autumn", alpha=0.7)
    axes[0].set_title(f"{size}x{size} maze: predicted path (orange), true path (green)")
    for k in range(2):
        field = np.ma.masked_where(walls, phi[0, k].numpy())
        im = axes[k + 1].imshow(field, cmap="coolwarm")
        axes[k + 1].set_title(f"potential field {k} (walls masked)")
        fig.colorbar(im, ax=axes[k + 1], fraction=0.046)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cmd_train(args) -> None:
    cfg = MazeConfig(steps=args.steps)
    results = default_out(args.out, args.default_results)
    checkpoints = Path(args.checkpoints) if args.checkpoints else results / "checkpoints"
    rows, start = [], time.time()
    for seed in args.seeds:
        ckpt = checkpoints / f"maze_seed{seed}.pt" if args.save else None
        model, info = train(cfg, seed, ckpt)
        t0 = time.time()
        held = evaluate(model, cfg.train_size, cfg.eval_count, seed=2000)
        big = evaluate(model, cfg.big_size, cfg.eval_count, seed=3000)
        info.update(held_out_15=held, unseen_39=big, eval_time_s=time.time() - t0)
        rows.append(info)
        print(f"seed {seed}: train {info['train_time_s']:.0f}s  F1 15x15 {held['f1']:.4f}  F1 39x39 {big['f1']:.4f}  "
              f"exact 39x39 {big['exact']:.3f}", flush=True)
        if seed == args.seeds[0]:
            results.mkdir(parents=True, exist_ok=True)
            figure(model, cfg.big_size, seed=3000, path=results / "maze_39x39.png")
    n_params = sum(p.numel() for p in build(cfg).parameters())
    table = _table(cfg, rows, n_params, f"{args.prog} {' '.join(args.argv)}", time.time() - start)
    if args.save:
        atomic_write_text(table, results / "maze.md")
        atomic_write_text(json.dumps(rows, indent=2), results / "maze.json")
    print(table)


def _table(cfg, rows, n_params, command, wall) -> str:
    def stat(key, sub):
        v = np.array([r[key][sub] for r in rows])
        return f"{v.mean():.4f} ± {v.std():.4f}"

    lines = [
        "# Maze pathfinding (Metriplector, one screened-Poisson CG solve)",
        "",
        f"- command: `{command}`",
        f"- machine: {platform.machine()}, {torch.get_num_threads()} torch threads, {platform.processor() or 'CPU'}; "
        f"torch {torch.__version__}; date {datetime.now(timezone.utc):%Y-%m-%d}",
        f"- model: MazeSolver, {n_params} parameters, {cfg.fields} fields, sources {cfg.sources!r}, damping ~ 1/N^{cfg.damping_power:g}, "
        f"float64 CG (rtol 1e-8, {'2N + 1000' if cfg.max_iter == 0 else cfg.max_iter} iterations at most)",
        f"- training: {cfg.train_count} DFS mazes {cfg.train_size}x{cfg.train_size} (seed 1000+s), {cfg.steps} Adam steps, "
        f"batch {cfg.batch}, lr {cfg.lr}, wall-edge conductances x 10^U(0, s) with s ramped to {cfg.leak_augment:g} "
        f"over the first half; evaluation: {cfg.eval_count} held-out {cfg.train_size}x{cfg.train_size} mazes "
        f"(seed 2000) and {cfg.eval_count} unseen {cfg.big_size}x{cfg.big_size} mazes (seed 3000)",
        f"- total wall time {wall:.0f} s",
        "",
        "| seed | train time (s) | F1 15x15 | exact 15x15 | F1 39x39 | mean per-maze F1 39x39 | exact 39x39 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        h, b = r["held_out_15"], r["unseen_39"]
        lines.append(f"| {r['seed']} | {r['train_time_s']:.0f} | {h['f1']:.4f} | {h['exact']:.3f} | {b['f1']:.4f} | "
                     f"{b['f1_mean_per_maze']:.4f} | {b['exact']:.3f} |")
    lines.append(f"| mean ± std | | {stat('held_out_15', 'f1')} | {stat('held_out_15', 'exact')} | {stat('unseen_39', 'f1')} "
                 f"| {stat('unseen_39', 'f1_mean_per_maze')} | {stat('unseen_39', 'exact')} |")
    lines += ["", "Paper (Oprisa & Toth 2026): F1 = 1.0 on 15x15, 0.95-0.99 on unseen 39x39, 43.8K parameters.", ""]
    return "\n".join(lines)


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def cmd_scale(args) -> None:
    """F1, exact solves, time per maze and CG iterations against grid size.

    Progress is saved after every chunk of mazes (``maze_scale.json``), so an interrupted run
    resumes where it stopped; a different checkpoint, count, seed or chunk starts afresh.
    """
    results = default_out(args.out, args.default_results)
    results.mkdir(parents=True, exist_ok=True)
    state_path = results / "maze_scale.json"
    checkpoint = Path(args.checkpoint)
    key = {"checkpoint_sha256": _sha256(checkpoint), "count": args.count, "seed": args.seed, "chunk": args.chunk}
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    if state.get("key") != key:
        state = {"key": key, "checkpoint": checkpoint.name, "sizes": {}}
    model = load(checkpoint)
    for size in args.sizes:
        chunks = state["sizes"].setdefault(str(size), [])
        done = sum(c["n"] for c in chunks)
        if done >= args.count:
            continue
        cells, target = maze_dataset(size, args.count, args.seed)
        bar = tqdm(total=args.count, initial=done, desc=f"mazes {size}x{size}", unit="maze", disable=None)
        for i in range(done, args.count, args.chunk):
            chunks.append(maze_counts(model, cells[i : i + args.chunk], target[i : i + args.chunk]))
            atomic_write_text(json.dumps(state, indent=1), state_path)
            bar.update(chunks[-1]["n"])
        bar.close()
    rows = [_scale_row(int(size), chunks) for size, chunks in state["sizes"].items()]
    table = _scale_table(rows, key, state["checkpoint"], f"{args.prog} {' '.join(args.argv)}")
    atomic_write_text(table, results / "maze_scale.md")
    print(table)


def _scale_row(size: int, chunks: list[dict]) -> dict:
    tp, fp, fn = (sum(c[k] for c in chunks) for k in ("tp", "fp", "fn"))
    n = sum(c["n"] for c in chunks)
    return {"size": size, "mazes": n, "f1": 2 * tp / max(2 * tp + fp + fn, 1),
            "exact": sum(c["exact"] for c in chunks) / max(n, 1),
            "time_per_maze_s": sum(c["time_s"] for c in chunks) / max(n, 1),
            "cg_iterations": max(c["cg_iterations"] for c in chunks)}


def _scale_table(rows, key, checkpoint, command) -> str:
    lines = [
        "# Maze size generalisation (trained on 15x15 only)",
        "",
        f"- command: `{command}`",
        f"- checkpoint: `{checkpoint}` (sha256 {key['checkpoint_sha256']}); fresh DFS mazes from seed {key['seed']}, "
        f"random distinct start and goal; solved {key['chunk']} at a time",
        f"- machine: {platform.machine()}, {torch.get_num_threads()} torch threads; torch {torch.__version__}; "
        f"date {datetime.now(timezone.utc):%Y-%m-%d}",
        "- time per maze: the batched forward pass of a chunk divided by its mazes (on a shared CPU such times vary by "
        "30-50% with the load); CG iterations: the most any chunk needed (float64, rtol 1e-8)",
        "",
        "| grid | nodes | mazes | F1 (pooled) | exact solves | time per maze (s) | CG iterations |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: r["size"]):
        lines.append(f"| {r['size']}x{r['size']} | {r['size'] ** 2} | {r['mazes']} | {r['f1']:.4f} | {r['exact']:.3f} | "
                     f"{r['time_per_maze_s']:.2f} | {r['cg_iterations']} |")
    lines += ["", "Paper (Oprisa & Toth 2026): F1 0.95 at 6.8x the training scale.", ""]
    return "\n".join(lines)


def cmd_eval(args) -> None:
    model = load(Path(args.checkpoint))
    t0 = time.time()
    scores = evaluate(model, args.size, args.count, args.seed)
    print(json.dumps({"size": args.size, "count": args.count, "seed": args.seed, **scores,
                      "wall_time_s": round(time.time() - t0, 2)}))


def main(argv: list[str] | None = None, *, default_results=None, default_checkpoints=None,
         prog: str = "sp-dynamics maze") -> None:
    parser = Parser(prog=prog, description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True, parser_class=Parser)
    t = sub.add_parser("train", help="train, evaluate, write checkpoints, table and figure")
    t.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    t.add_argument("--steps", type=int, default=MazeConfig.steps)
    t.add_argument("--no-save", dest="save", action="store_false", help="do not write checkpoints or results")
    t.add_argument("--out", default=None, help="results folder (default ./results)")
    t.add_argument("--checkpoints", default=default_checkpoints, help="checkpoint folder (default OUT/checkpoints)")
    e = sub.add_parser("eval", help="evaluate a checkpoint on fresh mazes")
    e.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    e.add_argument("--size", type=int, default=39)
    e.add_argument("--count", type=int, default=200)
    e.add_argument("--seed", type=int, default=123)
    sc = sub.add_parser("scale", help="F1, time per maze and CG iterations against grid size (resumable)")
    sc.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    sc.add_argument("--sizes", type=int, nargs="+", default=[15, 39, 63, 99, 151, 201])
    sc.add_argument("--count", type=int, default=50)
    sc.add_argument("--seed", type=int, default=777)
    sc.add_argument("--chunk", type=int, default=10, help="mazes solved together (memory ~ chunk x size^2)")
    sc.add_argument("--out", default=None, help="results folder (default ./results)")
    args = parser.parse_args(argv)
    args.argv, args.prog, args.default_results = list(sys.argv[1:] if argv is None else argv), prog, default_results
    for size in [args.size] if args.cmd == "eval" else args.sizes if args.cmd == "scale" else []:
        if size < 5 or size % 2 == 0:
            raise UsageError(f"--size must be odd and >= 5, got {size}")
    if args.cmd in ("eval", "scale") and not Path(args.checkpoint).exists():
        raise FileNotFoundError(f"no such maze checkpoint: {args.checkpoint}")
    if args.cmd in ("eval", "scale") and (args.count < 1 or getattr(args, "chunk", 1) < 1):
        raise UsageError("--count and --chunk must be >= 1")
    {"train": cmd_train, "eval": cmd_eval, "scale": cmd_scale}[args.cmd](args)


if __name__ == "__main__":
    main(sys.argv[1:])
