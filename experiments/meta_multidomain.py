"""Multi-domain base: one base meta-trained on Duffing + mass-spring + pendulum (issue 3).

    python -m experiments.meta_multidomain --preset quick                      # SVD(5) and FW, 1 seed
    python -m experiments.meta_multidomain --preset paper --methods svd fw mr --jobs 2

The paper's ablation (Jing et al., arXiv 2508.11205): a single shared base and latent table
meta-trained on the training instances of all three Hamiltonian families at once (3 x 70
systems), then adapted by latent auto-decoding to each family's 10 test instances from K
shots. Everything else follows protocol v1 and ``experiments.meta_benchmark`` (same presets,
evaluation, seeds); the energy scale ("auto") is computed over the pooled data. Writes
``meta_multidomain_{preset}.md`` / ``.json`` under ``experiments/results/`` with the errors per
family; compare with the single-family tables ``meta_{system}_{preset}.md``.

Only the modulation methods are run: the gradient baselines have no latent table to share.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

import systems  # noqa: F401  (registers the built-in systems)
from experiments.meta_benchmark import (MODULATION, PRESETS, RESULTS, _shots, adapt_fields, cell, config_for, evaluate,
                                        run_jobs, train_latent)
from sp_dynamics import get_system, make_family_dataset
from sp_dynamics.io import atomic_write_text

FAMILIES = ("duffing", "mass_spring", "pendulum")
METRICS = ("eps_field", "eps_field_data", "eps_traj", "ssim")


def pooled_training_data(cfg) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Training states and derivatives of all families, (3 * S, P, 2), and the datasets."""
    datasets = {name: make_family_dataset(name, seed=0, **cfg.dataset) for name in FAMILIES}
    dims = {d.dim for d in datasets.values()}
    points = {d.x.shape[1] * d.x.shape[2] for d in datasets.values()}
    if len(dims) != 1 or len(points) != 1:
        raise ValueError(f"the families must share the state dimension and points per instance, got {dims}, {points}")
    xs, dxs = [], []
    for d in datasets.values():
        tr = d.train_ids
        xs.append(d.x[tr].reshape(len(tr), -1, d.dim))
        dxs.append(d.dx[tr].reshape(len(tr), -1, d.dim))
    return torch.cat(xs), torch.cat(dxs), datasets


def run_one(method: str, seed: int, preset: str, run_dir: Path, threads: int | None = None) -> tuple[dict, float]:
    """Meta-train one method on the pooled families and evaluate it on each family's test set."""
    if threads is not None:
        torch.set_num_threads(threads)
    t0 = time.time()
    cfg = config_for("pendulum", preset)  # rank 5 on the three Hamiltonian families
    x, dx, datasets = pooled_training_data(cfg)
    model, Z = train_latent(method, get_system(FAMILIES[0]), cfg, x, dx, seed, run_dir)
    scores = {}
    for name, data in datasets.items():
        xs, dxs = _shots(data, cfg.shots, seed)
        scores[name] = evaluate(adapt_fields(model, Z, xs, dxs, cfg), get_system(name), data)
    return scores, time.time() - t0


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    parser.add_argument("--methods", nargs="+", default=["svd", "fw"])
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--jobs", type=int, default=1, help="(method, seed) runs in parallel worker processes")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    unknown = set(args.methods) - set(MODULATION)
    if unknown:
        parser.error(f"unknown or unsupported method(s) {sorted(unknown)}; the multi-domain base runs {MODULATION}")
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    seeds = tuple(args.seeds) if args.seeds else config_for("pendulum", args.preset).seeds
    out = Path(args.out)
    run_dir = out / "runs" / f"meta-multidomain-{args.preset}"
    pooled_training_data(config_for("pendulum", args.preset))  # datasets cached once, before any worker
    start = time.time()
    done = run_jobs(run_one, {(m, s): (m, s, args.preset, run_dir) for m in args.methods for s in seeds}, args.jobs)
    results = {m: {name: {k: [done[(m, s)][0][name][k] for s in seeds] for k in METRICS} for name in FAMILIES}
               | {"wall_time_s": sum(done[(m, s)][1] for s in seeds)} for m in args.methods}
    for m in args.methods:
        for name in FAMILIES:
            print(f"{m:6s} {name:12s} " + "  ".join(f"{k} {np.mean(results[m][name][k]):.3e}" for k in METRICS))
    table = _table(args, seeds, results, time.time() - start)
    print(table)
    stem = f"meta_multidomain_{args.preset}"
    atomic_write_text(table, out / f"{stem}.md")
    atomic_write_text(json.dumps(results, indent=2), out / f"{stem}.json")
    return results


def _table(args, seeds, results, wall) -> str:
    cfg = config_for("pendulum", args.preset)
    lines = [
        f"# Multi-domain base (Duffing + mass-spring + pendulum), preset `{args.preset}`",
        "",
        f"- command: `python -m experiments.meta_multidomain {' '.join(sys.argv[1:])}`",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads"
        f"{f' split over {args.jobs} worker processes' if args.jobs > 1 else ''}; torch {torch.__version__}; "
        f"date {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; total wall time {wall:.0f} s",
        f"- one base and latent table meta-trained on 3 x 70 training instances; seeds {list(seeds)}; rank {cfg.rank}; "
        f"{cfg.meta.iterations} meta iterations ({cfg.meta.lr_schedule} lr, {cfg.dtype}); {cfg.shots} shots, "
        f"{cfg.adapt_steps} latent Adam steps from the mean latent of all 210 training systems",
        "- eps_field (data region): eps_field on the grid points near the test instance's own trajectories "
        "(see `experiments.meta_benchmark.data_region`)",
        "",
        "| method | family | eps_field | eps_field (data region) | eps_traj | SSIM |",
        "|---|---|---|---|---|---|",
    ]
    for m, r in results.items():
        for name in FAMILIES:
            lines.append(f"| {m} | {name} | " + " | ".join(cell(r[name][k]) for k in METRICS) + " |")
    return "\n".join(lines + [""])


if __name__ == "__main__":
    main(sys.argv[1:])
