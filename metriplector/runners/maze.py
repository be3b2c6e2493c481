"""Maze pathfinding with a single screened-Poisson solve (Metriplector): ``sp-dynamics maze``.

    sp-dynamics maze train                     # 3 seeds: train, evaluate, table, figure
    sp-dynamics maze train --seeds 0 --steps 100
    sp-dynamics maze eval --size 39 --count 200 --seed 123   # any size, count, seed
    sp-dynamics maze eval --checkpoint path/to/ckpt.pt --size 21

(``python -m experiments.maze ...`` in a checkout writes its results to ``experiments/results``.)
The shipped checkpoints are package data (``metriplector/checkpoints/maze_seed*.pt``).

Protocol (our choices where the paper is silent): training mazes are 250 DFS mazes of 15x15
drawn from seed 1000 + s for model seed s; held-out 15x15 mazes and the unseen 39x39 mazes come
from seeds 2000 and 3000 (never used in training); start and goal are random distinct cells;
F1 is pooled over all path cells of an evaluation set (per-maze mean and exact-solve rate too).
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

from ..maze import MazeSolver, f1_scores, maze_dataset

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


def build(cfg: MazeConfig) -> MazeSolver:
    return MazeSolver(embed=cfg.embed, hidden=cfg.hidden, fields=cfg.fields).double()


def train(cfg: MazeConfig, seed: int, out: Path | None) -> tuple[MazeSolver, dict]:
    torch.manual_seed(seed)
    cells, target = maze_dataset(cfg.train_size, cfg.train_count, seed=1000 + seed)
    model = build(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    pos = float(target.mean())
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor((1 - pos) / pos, dtype=torch.float64))
    g = torch.Generator().manual_seed(seed)
    start = time.time()
    for _ in tqdm(range(cfg.steps), desc=f"maze seed {seed}", disable=None):
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
    model = build(MazeConfig(**blob["config"]))
    model.load_state_dict(blob["model"])
    return model


@torch.no_grad()
def evaluate(model: MazeSolver, size: int, count: int, seed: int, chunk: int = 50) -> dict:
    cells, target = maze_dataset(size, count, seed)
    logits = torch.cat([model(cells[i : i + chunk]) for i in range(0, count, chunk)])
    return f1_scores(logits, target)


def figure(model: MazeSolver, size: int, seed: int, path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    cells, target = maze_dataset(size, 1, seed)
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
        f"- model: MazeSolver, {n_params} parameters, {cfg.fields} fields, float64 CG (rtol 1e-8)",
        f"- training: {cfg.train_count} DFS mazes {cfg.train_size}x{cfg.train_size} (seed 1000+s), {cfg.steps} Adam steps, "
        f"batch {cfg.batch}, lr {cfg.lr}; evaluation: {cfg.eval_count} held-out {cfg.train_size}x{cfg.train_size} mazes "
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
    args = parser.parse_args(argv)
    args.argv, args.prog, args.default_results = list(sys.argv[1:] if argv is None else argv), prog, default_results
    if args.cmd == "eval" and (args.size < 5 or args.size % 2 == 0):
        raise UsageError(f"--size must be odd and >= 5, got {args.size}")
    if args.cmd == "eval" and not Path(args.checkpoint).exists():
        raise FileNotFoundError(f"no such maze checkpoint: {args.checkpoint}")
    {"train": cmd_train, "eval": cmd_eval}[args.cmd](args)


if __name__ == "__main__":
    main(sys.argv[1:])
