"""Sudoku by iterated screened-Poisson equilibria, against a recurrent relational network:
``sp-dynamics sudoku``.

    sp-dynamics sudoku train --preset cpu --jobs 2        # both models, same data, same budget
    sp-dynamics sudoku eval --puzzles FILE.csv            # one JSON line (the shipped model)
    sp-dynamics sudoku eval --checkpoint ckpt.pt --puzzles FILE.csv --rounds 16
    sp-dynamics sudoku think --preset cpu --seeds 0 1 2 --max-rounds 32   # test-time rounds, chosen on validation
    sp-dynamics sudoku generate --count 100 --seed 5 --givens 30 45 --out FILE.csv

(``python -m experiments.sudoku ...`` in a checkout writes to ``experiments/results``.)

Data (fixed, built from seeds; ``metriplector.sudoku_data``): the training, validation and test
sets are ``generate_set(n, seed)`` with seeds 101, 102 and 103 and a target number of givens
uniform in 17..45. Random removal stops at a minimal puzzle, so the sets hold 21-45 givens
(44% below 30, median 31): the 17-20 range is not represented. Results are reported by givens
band, 17-29 and 30+. The test set of the CPU preset ships as
``metriplector/data/sudoku_test.csv``.

Training (both models alike): every batch draws half its puzzles from each band (difficulty-
stratified sampling) and applies a random validity-preserving symmetry (digit relabelling, row
and column permutations within bands and stacks, band and stack permutations, transposition),
Adam with warm-up and cosine decay, gradient clipping at 1, deep supervision over all rounds
(``sudoku_loss``). The baseline's width is chosen to match the Metriplector's parameter count
within 10%. Training state is checkpointed atomically, so an interrupted run resumes.
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
from tqdm import tqdm

from sp_dynamics.config import apply_overrides, config_dict, config_hash
from sp_dynamics.io import atomic_save, atomic_savez, atomic_write_text, safe_load
from sp_dynamics.nn import count_parameters, matched_width
from sp_dynamics.runners.common import (Parser, UsageError, command_line, default_out, machine_line, pyplot, run_jobs,
                                        set_threads, result_stem, write_results)

from ._shared import (add_train_options, check_device, check_models, check_parity, load_blob, load_model_blob,
                      percent_stat, warmup_cosine)
from ..sudoku import RecurrentRelationalNet, SudokuMetriplector, fill_givens, sudoku_loss
from ..sudoku_data import BOXES, check_solution, generate_set, read_csv, write_csv

PACKAGE = Path(__file__).resolve().parent.parent
CHECKPOINTS = PACKAGE / "checkpoints"
DEFAULT_CHECKPOINT = CHECKPOINTS / "sudoku_metriplector.pt"
SHIPPED_TEST = PACKAGE / "data" / "sudoku_test.csv"
MODELS = ("metriplector", "rrn")
CHECKPOINT_FORMAT = "metriplector-sudoku/1"
SEEDS = {"train": 101, "val": 102, "test": 103}
BANDS = {"17-29": (17, 29), "30+": (30, 81)}


@dataclass(frozen=True)
class SudokuConfig:
    train: int = 3000
    val: int = 200
    test: int = 1000
    width: int = 48
    fields: int = 8
    objects: int = 16
    object_fields: int = 4
    scan_width: int = 48
    readout: str = "full"
    assign_tau: float = 1.0
    rounds: int = 8
    steps: int = 3000
    batch: int = 32
    lr: float = 4e-3
    warmup_steps: int = 50
    eval_every: int = 100
    augment: bool = True
    eval_batch: int = 250

    def validate(self) -> None:
        if min(self.train, self.val, self.test, self.steps, self.batch, self.rounds, self.eval_every) < 1:
            raise ValueError("train, val, test, steps, batch, rounds and eval_every must all be >= 1")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


PRESETS = {
    "smoke": SudokuConfig(train=40, val=8, test=16, width=12, fields=2, objects=9, object_fields=2, scan_width=4,
                          rounds=3, steps=4, batch=8, warmup_steps=1, eval_every=2),
    # the CPU preset: both models in parallel (--jobs 2) on 2 cores, training + test in < 60 min
    "cpu": SudokuConfig(),
    # the paper's setting (120K parameters, 32 rounds, 16 objects, 10K puzzles; widths are our choice), for a GPU
    "paper": SudokuConfig(train=10000, val=500, width=60, fields=16, scan_width=60, rounds=32, steps=30000, batch=64,
                          lr=1e-3, warmup_steps=500, eval_every=1000),
}


# ------------------------------------------------------------------------------------------ data

def dataset(split: str, count: int, cache: Path | None, jobs: int = 1) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """(quizzes, solutions, guesses) of a fixed split, cached as ``.npz`` in ``cache``."""
    path = None if cache is None else cache / f"sudoku_{split}_seed{SEEDS[split]}_n{count}.npz"
    if path is not None and path.exists():
        blob = np.load(path)
        q, s, g = blob["quizzes"], blob["solutions"], blob["guesses"]
    else:
        q, s, g = generate_set(count, SEEDS[split], jobs=jobs)
        if path is not None:
            atomic_savez(path, quizzes=q, solutions=s, guesses=g)
    return torch.from_numpy(q).long(), torch.from_numpy(s).long(), g


def givens(quizzes: torch.Tensor) -> torch.Tensor:
    return (quizzes > 0).sum(-1)


def band_masks(quizzes: torch.Tensor) -> dict[str, torch.Tensor]:
    n = givens(quizzes)
    return {name: (n >= lo) & (n <= hi) for name, (lo, hi) in BANDS.items()}


def augment(q: torch.Tensor, s: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One random Sudoku symmetry per puzzle, applied alike to quiz and solution: digit
    relabelling, band/stack permutations, row/column permutations inside them, transposition."""
    B = q.shape[0]

    def lines() -> torch.Tensor:  # (B, 9): a permutation of 0..8 keeping the three blocks of three
        blocks = torch.argsort(torch.rand(B, 3, generator=g), -1)
        inner = torch.argsort(torch.rand(B, 3, 3, generator=g), -1)
        return (3 * blocks.unsqueeze(-1) + inner).reshape(B, 9)

    rows, cols = lines(), lines()
    index = (9 * rows.unsqueeze(-1) + cols.unsqueeze(1)).reshape(B, 81)
    flip = torch.rand(B, generator=g) < 0.5
    transposed = torch.arange(81).reshape(9, 9).t().reshape(81)
    index = torch.where(flip.unsqueeze(-1), index[:, transposed], index)
    relabel = torch.cat([torch.zeros(B, 1, dtype=torch.long), 1 + torch.argsort(torch.rand(B, 9, generator=g), -1)], -1)
    q2, s2 = q.gather(1, index), s.gather(1, index)
    return relabel.gather(1, q2), relabel.gather(1, s2)


def stratified_batch(masks: dict[str, torch.Tensor], batch: int, g: torch.Generator) -> torch.Tensor:
    """Indices of a batch with an equal share from each non-empty givens band."""
    pools = [m.nonzero().squeeze(-1) for m in masks.values() if bool(m.any())]
    sizes = [batch // len(pools) + (k < batch % len(pools)) for k in range(len(pools))]
    return torch.cat([p[torch.randint(len(p), (n,), generator=g)] for p, n in zip(pools, sizes)])


# ---------------------------------------------------------------------------------------- models

def model_kwargs(cfg: SudokuConfig, kind: str) -> dict:
    if kind == "metriplector":
        return {"width": cfg.width, "fields": cfg.fields, "objects": cfg.objects, "object_fields": cfg.object_fields,
                "scan_width": cfg.scan_width, "rounds": cfg.rounds, "readout": cfg.readout,
                "assign_tau": cfg.assign_tau}
    ref = count_parameters(build("metriplector", model_kwargs(cfg, "metriplector")))
    return {"width": matched_width(lambda w: RecurrentRelationalNet(width=w, rounds=cfg.rounds), ref),
            "rounds": cfg.rounds}


def build(kind: str, kwargs: dict) -> torch.nn.Module:
    return {"metriplector": SudokuMetriplector, "rrn": RecurrentRelationalNet}[kind](**kwargs)


@torch.no_grad()
def round_predictions(model: torch.nn.Module, quizzes: torch.Tensor, batch: int, rounds: int | None = None) -> torch.Tensor:
    """Filled grids after every round, (rounds, N, 81); ``rounds`` overrides the model's count."""
    model.eval()
    outs = []
    for i in range(0, len(quizzes), batch):
        q = quizzes[i : i + batch]
        outs.append(torch.stack([fill_givens(q, lg) for lg in model(q, rounds)]))
    return torch.cat(outs, 1)


def scores(quizzes: torch.Tensor, solutions: torch.Tensor, pred: torch.Tensor) -> dict:
    """Exact-solve rate, blank-cell accuracy and the mean number of wrong cells on the boards not
    solved, overall and per givens band ((N, 81) grids)."""
    def one(mask):
        if not bool(mask.any()):
            return {"exact": float("nan"), "cells": float("nan"), "wrong_per_unsolved": float("nan"), "count": 0}
        q, s, p = quizzes[mask], solutions[mask], pred[mask]
        blank = q == 0
        wrong = ((p != s) & blank).sum(-1)
        return {"exact": float((p == s).all(-1).float().mean()), "cells": float((p == s)[blank].float().mean()),
                "wrong_per_unsolved": float(wrong[wrong > 0].float().mean()) if bool((wrong > 0).any()) else 0.0,
                "count": int(mask.sum())}

    out = {"all": one(torch.ones(len(quizzes), dtype=torch.bool))}
    out.update({name: one(m) for name, m in band_masks(quizzes).items()})
    return out


# -------------------------------------------------------------------------------------- training

def train_one(cfg: SudokuConfig, kind: str, seed: int, run_dir: str, data_dir: str, device: str = "cpu",
              threads: int | None = None) -> dict:
    """Train one model; checkpoint every ``eval_every`` steps to ``run_dir`` and resume from there."""
    set_threads(threads)
    run_dir = Path(run_dir)
    done = run_dir / f"{kind}_seed{seed}.json"
    if done.exists():
        return json.loads(done.read_text())
    tq, ts, _ = dataset("train", cfg.train, Path(data_dir))
    vq, vs, _ = dataset("val", cfg.val, Path(data_dir))
    masks = band_masks(tq)
    kwargs = model_kwargs(cfg, kind)
    torch.manual_seed(seed)
    model = build(kind, kwargs).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: warmup_cosine(k, cfg.warmup_steps, cfg.steps))
    g = torch.Generator().manual_seed(seed)
    state_path = run_dir / f"{kind}_seed{seed}.state.pt"
    curve, step, train_time = [], 0, 0.0
    if state_path.exists():
        state = safe_load(state_path, "sudoku training state")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        g.set_state(state["rng"])
        curve, step, train_time = state["curve"], state["step"], state["train_time_s"]
    bar = tqdm(total=cfg.steps, initial=step, desc=f"sudoku {kind} seed {seed}", disable=None)
    running = []
    while step < cfg.steps:
        model.train()
        start = time.time()
        idx = stratified_batch(masks, cfg.batch, g)
        q, s = augment(tq[idx], ts[idx], g) if cfg.augment else (tq[idx], ts[idx])
        loss = sudoku_loss(q.to(device), s.to(device), model(q.to(device)))
        if not torch.isfinite(loss):
            raise RuntimeError(f"{kind} seed {seed}: the training loss became {float(loss)} at step {step + 1}")
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        step, train_time = step + 1, train_time + time.time() - start
        running.append(float(loss.detach()))
        bar.update(1)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            val = scores(vq, vs, round_predictions(model, vq.to(device), cfg.eval_batch)[-1].cpu())
            curve.append({"step": step, "train_loss": float(np.mean(running)), "train_time_s": train_time,
                          **{f"val_{k}": v for k, v in val["all"].items() if k != "count"}})
            bar.set_postfix(loss=f"{curve[-1]['train_loss']:.3f}", cells=f"{val['all']['cells']:.3f}")
            running = []
            atomic_save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                         "rng": g.get_state(), "curve": curve, "step": step, "train_time_s": train_time}, state_path)
    bar.close()
    model = model.cpu()
    eq, es, _ = dataset("test", cfg.test, Path(data_dir))
    t0 = time.time()
    # rounds 1 .. 2R in one pass (trained on R): the first R equal a plain R-round pass
    by_round = round_predictions(model, eq, cfg.eval_batch, rounds=2 * cfg.rounds)
    eval_time = time.time() - t0
    thinking = validation_rounds(model, vq, vs, cfg)
    row = {"model": kind, "seed": seed, "params": count_parameters(model), "kwargs": kwargs, "curve": curve,
           "test": scores(eq, es, by_round[cfg.rounds - 1]),
           "val_rounds": thinking, "test_val_rounds": scores(eq, es, by_round[thinking - 1]),
           "test_by_round": [scores(eq, es, p) for p in by_round],
           "train_time_s": train_time, "eval_2r_rounds_time_s": eval_time, "threads": torch.get_num_threads()}
    if kind == "metriplector":
        row["objects"] = object_analysis(model, eq[: cfg.eval_batch])
    atomic_save(checkpoint_blob(kind, kwargs, model, row), run_dir / f"{kind}_seed{seed}.pt")
    atomic_write_text(json.dumps(row), done)
    return row


def best_round(by_round: list[dict]) -> int:
    """The round (1-based) of a ``scores`` list with the most exact solves, blank-cell accuracy
    breaking ties, then the fewest rounds."""
    val = [r["all"] for r in by_round]
    return 1 + max(range(len(val)), key=lambda k: (val[k]["exact"], val[k]["cells"], -k))


def validation_rounds(model: torch.nn.Module, vq: torch.Tensor, vs: torch.Tensor, cfg: SudokuConfig,
                      max_rounds: int | None = None) -> int:
    """The number of test-time rounds (1 .. ``max_rounds``, default 2R for a model trained with R)
    that does best on the validation puzzles (:func:`best_round`): how long the model should
    "think", chosen without looking at the test set."""
    preds = round_predictions(model, vq, cfg.eval_batch, rounds=max_rounds or 2 * cfg.rounds)
    return best_round([scores(vq, vs, p) for p in preds])


def checkpoint_blob(kind: str, kwargs: dict, model: torch.nn.Module, row: dict) -> dict:
    return {"format": CHECKPOINT_FORMAT, "kind": kind, "kwargs": kwargs, "model": model.state_dict(),
            "seed": row["seed"], "test": row["test"], "val_rounds": row["val_rounds"]}


# model options added after checkpoints were shipped, with the behaviour those checkpoints were trained with
LEGACY_KWARGS = {"metriplector": {"readout": "hidden"}}


def load_checkpoint(path: str | Path) -> tuple[torch.nn.Module, dict]:
    return load_model_blob(path, CHECKPOINT_FORMAT, "sudoku checkpoint",
                           lambda kind, kwargs: build(kind, {**LEGACY_KWARGS.get(kind, {}), **kwargs}))


# ------------------------------------------------------------------------- the object analysis

def mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised mutual information (arithmetic mean of the entropies) of two labelings."""
    joint = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(joint, (a, b), 1)
    joint /= joint.sum()
    pa, pb = joint.sum(1), joint.sum(0)
    nz = joint > 0
    mi = float((joint[nz] * np.log(joint[nz] / np.outer(pa, pb)[nz])).sum())
    ent = lambda p: float(-(p[p > 0] * np.log(p[p > 0])).sum())  # noqa: E731
    return mi / max((ent(pa) + ent(pb)) / 2, 1e-12)


@torch.no_grad()
def object_analysis(model: SudokuMetriplector, quizzes: torch.Tensor) -> dict:
    """Does the soft assignment of cells to objects discover the nine 3x3 boxes?

    Per puzzle, the hard assignment (argmax object per cell) is compared with the box, row and
    column labels by normalised mutual information (1 = the same partition up to relabelling;
    the boxes are 9 groups of 9, so NMI(box) = 1 means they were discovered). Also the mean
    entropy of a cell's assignment (nats; log K is uniform) and the mean assignment map."""
    model.eval()
    model(quizzes)
    a = model.last_assignment.double()                                           # (B, 81, K)
    entropy = float(-(a * a.clamp_min(1e-12).log()).sum(-1).mean())
    hard = a.argmax(-1).numpy()
    idx = np.arange(81)
    labels = {"box": np.array([next(k for k, b in enumerate(BOXES) if i in b) for i in idx]),
              "row": idx // 9, "column": idx % 9}
    nmi = {name: float(np.mean([mutual_information(h, lab) for h in hard])) for name, lab in labels.items()}
    return {"entropy_nats": entropy, "max_entropy_nats": math.log(a.shape[-1]), "nmi": nmi,
            "objects_used": float(np.mean([len(np.unique(h)) for h in hard])),
            "mean_assignment": a.mean(0).tolist(), "example_hard": hard[0].tolist()}


# --------------------------------------------------------------------------------------- reports

def table(cfg: SudokuConfig, preset: str, rows: list[dict], command: str, wall: float, jobs: int) -> str:
    lines = [
        f"# Sudoku ({preset} preset): Metriplector on the plain 8-connected lattice vs a recurrent relational network",
        "",
        command,
        machine_line(wall, jobs),
        f"- data: {cfg.train} training, {cfg.val} validation and {cfg.test} test puzzles (seeds 101, 102, 103; unique "
        f"solutions); batches stratified by givens band; {'random Sudoku symmetries' if cfg.augment else 'no augmentation'}",
        f"- training: {cfg.steps} Adam steps, batch {cfg.batch}, lr {cfg.lr} (warm-up {cfg.warmup_steps}, cosine), "
        f"{cfg.rounds} rounds with deep supervision; test at the last trained round",
        "",
        "| model | params | seed | band | test puzzles | exact solves | blank-cell accuracy | train time (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for band in ("17-29", "30+", "all"):
            t = r["test"][band]
            lines.append(f"| {r['model']} | {r['params']} | {r['seed']} | {band} | {t['count']} | "
                         f"{100 * t['exact']:.1f}% | {100 * t['cells']:.2f}% | {r['train_time_s']:.0f} |")
    for kind in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == kind]
        if len(mine) < 2:
            continue
        for band in ("17-29", "30+", "all"):
            ex = percent_stat([r["test"][band]["exact"] for r in mine])
            ce = percent_stat([r["test"][band]["cells"] for r in mine])
            tt = np.mean([r["train_time_s"] for r in mine])
            lines.append(f"| {kind} | {mine[0]['params']} | mean ± std of {len(mine)} | {band} | "
                         f"{mine[0]['test'][band]['count']} | {ex}% | {ce}% | {tt:.0f} |")
    lines += ["| paper (Oprisa & Toth 2026), reference, not ours | ~120K | | (its test set) | | 97.2% | | |", ""]
    chosen = [{"model": r["model"], "seed": r["seed"], "rounds": r["val_rounds"], "test": r["test_val_rounds"]}
              for r in rows if "val_rounds" in r]
    if chosen:
        lines += [f"Test at the number of rounds chosen on the validation puzzles (1 .. {2 * cfg.rounds}; the most "
                  "exact solves there): exact solves / blank cells", ""]
        lines += rounds_table(chosen) + [""]
    for r in rows:
        if "objects" in r:
            o = r["objects"]
            lines.append(f"- {r['model']} seed {r['seed']} objects: mean assignment entropy {o['entropy_nats']:.2f} nats "
                         f"(uniform {o['max_entropy_nats']:.2f}); {o['objects_used']:.1f} objects used per puzzle; "
                         f"NMI with boxes {o['nmi']['box']:.2f}, rows {o['nmi']['row']:.2f}, "
                         f"columns {o['nmi']['column']:.2f} (1 = the same partition)")
    lines.append("")
    lines.append("Test accuracy against the number of rounds at test time (trained with "
                 f"{cfg.rounds}; later rounds extrapolate): exact solves / blank cells, all test puzzles")
    lines.append("")
    rounds = sorted({len(r["test_by_round"]) for r in rows})[0]
    shown = sorted({1, 2, rounds // 4, rounds // 2, 3 * rounds // 4, rounds} - {0})
    lines.append("| model | seed | " + " | ".join(f"round {k}" for k in shown) + " |")
    lines.append("|---|---|" + "---|" * len(shown))
    for r in rows:
        cells = [f"{100 * r['test_by_round'][k - 1]['all']['exact']:.1f}% / {100 * r['test_by_round'][k - 1]['all']['cells']:.1f}%"
                 for k in shown]
        lines.append(f"| {r['model']} | {r['seed']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def model_color(plt, row: dict, rows: list[dict]):
    """One colour family per model (blue: Metriplector, red: RRN), darker for later seeds."""
    seeds = sorted({r["seed"] for r in rows})
    shade = 0.5 + 0.4 * seeds.index(row["seed"]) / max(len(seeds) - 1, 1)
    return (plt.cm.Blues if row["model"] == "metriplector" else plt.cm.Reds)(shade)


def figures(rows: list[dict], out: Path, stem: str, cfg: SudokuConfig) -> None:
    plt = pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for r in rows:
        color = model_color(plt, r, rows)
        steps = [c["step"] for c in r["curve"]]
        axes[0].plot(steps, [c["val_cells"] for c in r["curve"]], color=color,
                     label=f"{r['model']} seed {r['seed']}: blank cells")
        axes[0].plot(steps, [c["val_exact"] for c in r["curve"]], "--", color=color, label="... exact")
        k = np.arange(1, len(r["test_by_round"]) + 1)
        for band, style in (("17-29", ":"), ("30+", "-")):
            axes[1].plot(k, [x[band]["exact"] for x in r["test_by_round"]], style, color=color,
                         label=f"{r['model']} seed {r['seed']}, {band} givens")
    axes[0].set(xlabel="training step", ylabel="validation accuracy", title="learning curves", ylim=(0, 1))
    axes[1].axvline(cfg.rounds, color="gray", lw=0.8)
    axes[1].set(xlabel="rounds at test time (trained with the gray line's)", ylabel="exact solves", ylim=(0, 1),
                title="test accuracy against rounds")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / f"{stem}_curves.png", dpi=110)
    plt.close(fig)
    for r in rows:
        if "objects" not in r:
            continue
        o = r["objects"]
        a = np.array(o["mean_assignment"])                                       # (81, K)
        fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
        axes[0].imshow(np.array(o["example_hard"]).reshape(9, 9), cmap="tab20", vmin=0, vmax=19)
        axes[0].set_title("hard assignment, one test puzzle")
        axes[1].imshow(a.argmax(-1).reshape(9, 9), cmap="tab20", vmin=0, vmax=19)
        axes[1].set_title("argmax of the mean assignment")
        axes[2].imshow(a.max(-1).reshape(9, 9), cmap="viridis", vmin=0, vmax=1)
        axes[2].set_title("max mean assignment weight")
        for ax in axes:
            for x in (2.5, 5.5):
                ax.axhline(x, color="k", lw=2)
                ax.axvline(x, color="k", lw=2)
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle(f"object layer (K = {a.shape[1]}): NMI with boxes {o['nmi']['box']:.2f}, entropy "
                     f"{o['entropy_nats']:.2f} of {o['max_entropy_nats']:.2f} nats; black lines: the true boxes")
        fig.tight_layout()
        fig.savefig(out / f"{stem}_objects_seed{r['seed']}.png", dpi=110)
        plt.close(fig)


# -------------------------------------------------------------------------------------- commands

def cmd_train(args) -> None:
    cfg = apply_overrides(PRESETS[args.preset], args.overrides)
    cfg.validate()
    kinds = check_models(args.models, MODELS)
    check_device(args.device)
    counts = {k: count_parameters(build(k, model_kwargs(cfg, k))) for k in kinds}
    if "metriplector" in kinds:
        check_parity(counts, counts["metriplector"], "metriplector")
    print("parameters: " + ", ".join(f"{k} {n}" for k, n in counts.items()), flush=True)
    out = default_out(args.out, args.default_results)
    run_dir = out / "runs" / f"sudoku-{args.preset}-{config_hash(config_dict(cfg))}"
    data_dir = out / "sudoku_data"
    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    for split in ("train", "val", "test"):  # built once, before the workers start
        dataset(split, getattr(cfg, split), data_dir, jobs=args.jobs)
    calls = {(k, s): (cfg, k, s, str(run_dir), str(data_dir), args.device) for s in args.seeds for k in kinds}

    def report(key, row):
        t = row["test"]
        print(f"{row['model']} seed {row['seed']}: exact {100 * t['all']['exact']:.1f}% (30+ givens "
              f"{100 * t['30+']['exact']:.1f}%, 17-29 {100 * t['17-29']['exact']:.1f}%), blank cells "
              f"{100 * t['all']['cells']:.2f}% ({row['params']} params, {row['train_time_s']:.0f} s)", flush=True)

    done = run_jobs(train_one, calls, args.jobs, report)
    rows = [done[k] for k in calls]
    stem = result_stem(f"sudoku_{args.preset}", args)
    text = table(cfg, args.preset, rows, command_line(args.prog, args.argv), time.time() - start, args.jobs)
    if args.save:
        write_results(out, stem, text, rows, cfg)
        figures(rows, out, stem, cfg)
        if args.ship:
            seed = min(args.seeds)
            for kind in kinds:
                atomic_save(load_blob(run_dir / f"{kind}_seed{seed}.pt", CHECKPOINT_FORMAT, "sudoku checkpoint"),
                            Path(args.checkpoints) / f"sudoku_{kind}.pt")
            q, s, _ = dataset("test", cfg.test, data_dir)
            write_csv(SHIPPED_TEST, q.numpy(), s.numpy())
            print(f"shipped checkpoints to {args.checkpoints} and the test set to {SHIPPED_TEST}", flush=True)
    print(text)


def cmd_think(args) -> None:
    """Re-evaluate the trained models of a run with up to ``--max-rounds`` rounds at test time:
    the count is chosen on the validation puzzles, the test set is scored at every count."""
    cfg = apply_overrides(PRESETS[args.preset], args.overrides)
    kinds = check_models(args.models, MODELS)
    if args.max_rounds < 1:
        raise UsageError(f"--max-rounds must be >= 1, got {args.max_rounds}")
    out = default_out(args.out, args.default_results)
    run_dir = out / "runs" / f"sudoku-{args.preset}-{config_hash(config_dict(cfg))}"
    paths = {(k, s): run_dir / f"{k}_seed{s}.pt" for s in args.seeds for k in kinds}
    missing = [p.name for p in paths.values() if not p.is_file()]
    if missing:
        raise UsageError(f"no trained {', '.join(missing)} in {run_dir}: run 'sudoku train' with these settings first")
    data_dir = out / "sudoku_data"
    vq, vs, _ = dataset("val", cfg.val, data_dir)
    eq, es, _ = dataset("test", cfg.test, data_dir)
    start, rows = time.time(), []
    for (kind, seed), path in tqdm(paths.items(), desc="sudoku think", disable=None):
        model, _ = load_checkpoint(path)
        val = [scores(vq, vs, p) for p in round_predictions(model, vq, cfg.eval_batch, args.max_rounds)]
        test = [scores(eq, es, p) for p in round_predictions(model, eq, cfg.eval_batch, args.max_rounds)]
        k = best_round(val)
        rows.append({"model": kind, "seed": seed, "rounds": k, "val_by_round": val, "test_by_round": test,
                     "test": test[k - 1]})
    stem = result_stem(f"sudoku_{args.preset}", args, "_think")
    text = think_table(cfg, args, rows, time.time() - start)
    write_results(out, stem, text, rows, cfg)
    think_figure(rows, out / f"{stem}.png", cfg)
    if args.ship:  # the first seed's models, now running their chosen count by default in eval
        seed = min(args.seeds)
        for r in rows:
            if r["seed"] == seed:
                blob = load_blob(paths[(r["model"], seed)], CHECKPOINT_FORMAT, "sudoku checkpoint")
                atomic_save({**blob, "val_rounds": r["rounds"]}, Path(args.checkpoints) / f"sudoku_{r['model']}.pt")
        print(f"shipped the seed-{seed} checkpoints with their chosen rounds to {args.checkpoints}", flush=True)
    print(text)


def think_table(cfg: SudokuConfig, args, rows: list[dict], wall: float) -> str:
    lines = [f"# Sudoku ({args.preset} preset): thinking longer at test time (trained with {cfg.rounds} rounds)", "",
             command_line(args.prog, args.argv), machine_line(wall, 1),
             f"- the number of rounds (1 .. {args.max_rounds}) is chosen per model on the {cfg.val} validation puzzles "
             f"(most exact solves, then blank cells, then the fewest rounds); the {cfg.test} test puzzles are "
             "scored at that count. Cells: exact solves / blank-cell accuracy", ""] + rounds_table(rows)
    return "\n".join(lines) + "\n"


def rounds_table(rows: list[dict]) -> list[str]:
    """Markdown rows of test scores at a chosen number of rounds (``rounds``, ``test`` per row),
    per band, with mean ± std per model over its seeds."""
    bands = ("17-29", "30+", "all")
    lines = ["| model | seed | rounds | " + " | ".join(bands) + " |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['seed']} | {r['rounds']} | " + " | ".join(
            f"{100 * r['test'][b]['exact']:.1f}% / {100 * r['test'][b]['cells']:.2f}%" for b in bands) + " |")
    for kind in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == kind]
        if len(mine) > 1:
            lines.append(f"| {kind} | mean ± std of {len(mine)} | {', '.join(str(r['rounds']) for r in mine)} | "
                         + " | ".join(f"{percent_stat([r['test'][b]['exact'] for r in mine])}% / "
                                      f"{percent_stat([r['test'][b]['cells'] for r in mine])}%" for b in bands) + " |")
    return lines


def think_figure(rows: list[dict], path: Path, cfg: SudokuConfig) -> None:
    plt = pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for r in rows:
        k = np.arange(1, len(r["test_by_round"]) + 1)
        color = model_color(plt, r, rows)
        for ax, band in zip(axes, ("30+", "17-29")):
            ax.plot(k, [x[band]["exact"] for x in r["test_by_round"]], color=color, label=f"{r['model']} seed {r['seed']}")
            ax.plot(r["rounds"], r["test"][band]["exact"], "o", color=color)
    for ax, band in zip(axes, ("30+", "17-29")):
        ax.axvline(cfg.rounds, color="gray", lw=0.8)
        ax.set(xlabel="rounds at test time (gray: trained; dots: chosen on validation)", ylabel="exact solves (test)",
               title=f"{band} givens", ylim=(0, 1))
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cmd_eval(args) -> None:
    if args.rounds is not None and args.rounds < 1:
        raise UsageError(f"--rounds must be >= 1, got {args.rounds}")
    quizzes, solutions = read_csv(args.puzzles)
    model, blob = load_checkpoint(args.checkpoint)
    q = torch.from_numpy(quizzes).long()
    t0 = time.time()
    rounds = args.rounds or blob.get("val_rounds", model.rounds)  # older checkpoints: as trained
    pred = round_predictions(model, q, args.batch, rounds)[-1]
    line = {"count": len(q), "model": blob["kind"], "rounds": rounds}
    if solutions is not None:
        res = scores(q, torch.from_numpy(solutions).long(), pred)
        line.update(exact=res["all"]["exact"], cells=res["all"]["cells"],
                    by_band={b: res[b] for b in BANDS if res[b]["count"]})
    else:
        line["valid"] = float(np.mean([check_solution(a, b) for a, b in zip(quizzes, pred.numpy())]))
    line.update(checkpoint=str(args.checkpoint), wall_time_s=round(time.time() - t0, 2))
    print(json.dumps(line))


def cmd_generate(args) -> None:
    lo, hi = args.givens
    if not 17 <= lo <= hi <= 80:
        raise UsageError(f"--givens needs 17 <= LOW <= HIGH <= 80, got {lo} {hi}")
    if args.count < 1:
        raise UsageError(f"--count must be >= 1, got {args.count}")
    q, s, g = generate_set(args.count, args.seed, givens=(lo, hi), jobs=args.jobs)
    write_csv(args.out, q, None if args.no_solutions else s)
    n = (q > 0).sum(-1)
    print(json.dumps({"out": str(args.out), "count": len(q), "givens_min": int(n.min()), "givens_max": int(n.max()),
                      "mean_guesses": float(g.mean())}))


def main(argv: list[str] | None = None, *, default_results=None, default_checkpoints=None,
         prog: str = "sp-dynamics sudoku") -> None:
    parser = Parser(prog=prog, description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True, parser_class=Parser)
    t = sub.add_parser("train", help="train both models on the same data, write the table, figures, checkpoints")
    add_train_options(t, PRESETS, MODELS, default_checkpoints or str(CHECKPOINTS))
    t.add_run_options()
    e = sub.add_parser("eval", help="exact solves and blank-cell accuracy on puzzles from a CSV file (one JSON line)")
    e.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    e.add_argument("--puzzles", default=str(SHIPPED_TEST), metavar="FILE.csv",
                   help="'quiz,solution' or 'quiz' lines of 81 digits, 0 or . = blank (default: the shipped test set)")
    e.add_argument("--rounds", type=int, default=None,
                   help="recurrent rounds at test time (default: the count chosen on the validation puzzles)")
    e.add_argument("--batch", type=int, default=250)
    th = sub.add_parser("think", help="re-score a run's trained models with more test-time rounds, chosen on validation")
    th.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    th.add_argument("--seeds", type=int, nargs="+", default=[0])
    th.add_argument("--models", nargs="+", default=list(MODELS), help=f"any of {', '.join(MODELS)}")
    th.add_argument("--max-rounds", type=int, default=32, help="the most rounds tried (default 32)")
    th.add_argument("--ship", action="store_true", help="copy the first seed's models, with their chosen rounds, "
                                                        "to --checkpoints")
    th.add_argument("--checkpoints", default=default_checkpoints or str(CHECKPOINTS))
    th.add_run_options(jobs=False)
    gen = sub.add_parser("generate", help="write fresh puzzles with unique solutions to a CSV file")
    gen.add_argument("--count", type=int, default=100)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--givens", type=int, nargs=2, default=(17, 45), metavar=("LOW", "HIGH"),
                     help="target givens range (puzzles that become minimal earlier keep more)")
    gen.add_argument("--no-solutions", action="store_true", help="write the quiz column only")
    gen.add_argument("--jobs", type=int, default=1)
    gen.add_argument("--out", required=True, metavar="FILE.csv")
    args = parser.parse_args(argv)
    args.argv, args.prog, args.default_results = list(sys.argv[1:] if argv is None else argv), prog, default_results
    {"train": cmd_train, "eval": cmd_eval, "think": cmd_think, "generate": cmd_generate}[args.cmd](args)


if __name__ == "__main__":
    main(sys.argv[1:])
