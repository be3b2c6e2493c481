"""Multi-domain base: one base meta-trained on Duffing + mass-spring + pendulum (``sp-dynamics multidomain``).

    python -m experiments.meta_multidomain --preset quick                      # SVD(5) and FW, 1 seed
    python -m experiments.meta_multidomain --preset paper --methods svd fw mr --jobs 2

The paper's ablation (Jing et al., arXiv 2508.11205): a single shared base and latent table
meta-trained on the training instances of all three Hamiltonian families at once (3 x 70
systems), then adapted by latent auto-decoding to each family's 10 test instances from K
shots. Everything else follows protocol v1 and the benchmark (same presets, evaluation, seeds);
the energy scale ("auto") is computed over the pooled data. Writes ``meta_multidomain_{preset}.md``
/ ``.json`` / ``.config.json`` with the errors per family; compare with the single-family tables
``meta_{system}_{preset}.md``.

Only the modulation methods are run: the gradient baselines have no latent table to share.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..config import apply_overrides, config_hash
from ..data import make_family_dataset
from ..meta.evaluation import evaluate_fields
from ..registry import get_system
from .benchmark import MODULATION, PRESETS, config_for, latent_adapter, shots, train_data
from .common import Parser, UsageError, cell, command_line, default_out, machine_line, run_jobs, set_threads, result_stem, write_results

FAMILIES = ("duffing", "mass_spring", "pendulum")
METRICS = ("eps_field", "eps_field_data", "eps_traj", "ssim")


def pooled_training_data(cfg) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Training states and derivatives of all families, (3 * S, P, 2), and the datasets."""
    datasets = {name: make_family_dataset(name, seed=0, **cfg.dataset) for name in FAMILIES}
    dims = {d.dim for d in datasets.values()}
    points = {d.x.shape[1] * d.x.shape[2] for d in datasets.values()}
    if len(dims) != 1 or len(points) != 1:
        raise ValueError(f"the families must share the state dimension and points per instance, got {dims}, {points}")
    pairs = [train_data(d, cfg) for d in datasets.values()]
    return torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs]), datasets


def run_one(method: str, seed: int, cfg, run_dir: Path, threads: int | None = None) -> tuple[dict, float]:
    """Meta-train one method on the pooled families and evaluate it on each family's test set."""
    set_threads(threads)
    t0 = time.time()
    x, dx, datasets = pooled_training_data(cfg)
    adapter = latent_adapter(method, get_system(FAMILIES[0]), cfg, x, dx, seed, run_dir)
    scores = {}
    for name, data in datasets.items():
        scores[name] = evaluate_fields(adapter.adapt(*shots(data, cfg.shots, seed)), get_system(name), data)
    return scores, time.time() - t0


def main(argv=None, *, default_results=None, prog: str = "sp-dynamics multidomain") -> dict:
    parser = Parser(prog=prog, description=__doc__)
    parser.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    parser.add_argument("--methods", nargs="+", default=["svd", "fw"])
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_run_options(jobs=True)
    args = parser.parse_args(argv)
    unknown = set(args.methods) - set(MODULATION)
    if unknown:
        raise UsageError(f"unknown or unsupported method(s) {sorted(unknown)}; the multi-domain base runs {MODULATION}")
    cfg = apply_overrides(config_for("pendulum", args.preset, args.seeds), args.overrides)  # rank 5 on all three
    seeds = cfg.seeds
    out = default_out(args.out, default_results)
    run_dir = out / "runs" / f"meta-multidomain-{args.preset}-{config_hash(cfg)}"
    pooled_training_data(cfg)  # datasets cached once, before any worker
    start = time.time()
    done = run_jobs(run_one, {(m, s): (m, s, cfg, run_dir) for m in args.methods for s in seeds}, args.jobs)
    results = {m: {name: {k: [done[(m, s)][0][name][k] for s in seeds] for k in METRICS} for name in FAMILIES}
               | {"wall_time_s": sum(done[(m, s)][1] for s in seeds)} for m in args.methods}
    for m in args.methods:
        for name in FAMILIES:
            print(f"{m:6s} {name:12s} " + "  ".join(f"{k} {np.mean(results[m][name][k]):.3e}" for k in METRICS))
    table = _table(args, cfg, results, time.time() - start, command_line(prog, argv))
    print(table)
    write_results(out, result_stem(f"meta_multidomain_{args.preset}", args), table, results, {"args": vars(args), "config": cfg})
    return results


def _table(args, cfg, results, wall, command) -> str:
    seeds = cfg.seeds
    lines = [
        f"# Multi-domain base (Duffing + mass-spring + pendulum), preset `{args.preset}`",
        "",
        command,
        machine_line(wall, args.jobs),
        f"- one base and latent table meta-trained on 3 x 70 training instances; seeds {list(seeds)}; rank {cfg.rank}; "
        f"{cfg.meta.iterations} meta iterations ({cfg.meta.lr_schedule} lr, {cfg.dtype}); {cfg.shots} shots, "
        f"{cfg.adapt.steps} latent Adam steps from the mean latent of all 210 training systems",
        "- eps_field (data region): eps_field on the grid points near the test instance's own trajectories "
        "(see `sp_dynamics.meta.evaluation.data_region`)",
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
