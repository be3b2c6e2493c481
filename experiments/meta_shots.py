"""Shot sweep and latent initialisation ablation for latent auto-decoding (issue 3).

    python -m experiments.meta_shots --system pendulum --preset quick          # SVD(5), 1 seed
    python -m experiments.meta_shots --system pendulum --preset paper --method svd fw

For each method and seed, the base is meta-trained once (in the same run folder as
``experiments.meta_benchmark``, so a finished meta-training run is loaded, not repeated), then
adapted to every test instance from K shots for K in ``--shots`` (protocol: 1, 5, 10, 50, 100,
300), starting from the mean of the training latents (the paper's choice) and from zero (the
ablation). Writes ``meta_shots_{system}_{preset}.md`` / ``.json`` and a figure of the errors
against K under ``experiments/results/``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

import systems  # noqa: F401  (registers the built-in systems)
from experiments.meta_benchmark import MODULATION, PRESETS, RESULTS, _shots, adapt_fields, cell, config_for, evaluate, train_latent
from sp_dynamics import get_system, make_family_dataset
from sp_dynamics.io import atomic_write_text

SHOTS = (1, 5, 10, 50, 100, 300)
INITS = ("mean", "zero")


def sweep(system_name: str, preset: str, method: str, shots: list[int], seeds: list[int], out: Path) -> dict:
    system = get_system(system_name)
    cfg = config_for(system_name, preset)
    data = make_family_dataset(system_name, seed=0, **cfg.dataset)
    n, tr = system.dim, data.train_ids
    x, dx = data.x[tr].reshape(len(tr), -1, n), data.dx[tr].reshape(len(tr), -1, n)
    results: dict = {init: {K: [] for K in shots} for init in INITS}
    for seed in seeds:
        model, Z = train_latent(method, system, cfg, x, dx, seed, out / "runs" / f"meta-{system_name}-{preset}")
        for K in shots:
            xs, dxs = _shots(data, K, seed)
            for init in INITS:
                z0 = Z.mean(0) if init == "mean" else torch.zeros_like(Z[0])
                scores = evaluate(adapt_fields(model, Z, xs, dxs, cfg, z0), system, data)
                results[init][K].append(scores)
                print(f"{method} seed {seed} K={K:3d} init {init}: " +
                      "  ".join(f"{k} {v:.3e}" for k, v in scores.items()), flush=True)
    return results


def figure(all_results: dict, shots: list[int], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for method, res in all_results.items():
        for init, style in zip(INITS, ("-o", "--s")):
            for ax, key in zip(axes, ("eps_field", "eps_traj")):
                vals = np.array([[r[key] for r in res[init][K]] for K in shots])  # (len(shots), seeds)
                ax.errorbar(shots, vals.mean(1), yerr=vals.std(1), fmt=style, ms=4, capsize=2,
                            label=f"{method.upper()}, {init} init")
    for ax, key in zip(axes, ("eps_field", "eps_traj")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("shots K")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--system", default="pendulum")
    parser.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    parser.add_argument("--method", nargs="+", default=["svd"], choices=MODULATION)
    parser.add_argument("--shots", type=int, nargs="+", default=list(SHOTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    if min(args.shots) < 1:
        parser.error("--shots must be >= 1")
    seeds = args.seeds if args.seeds else list(PRESETS[args.preset].seeds)
    out = Path(args.out)
    start = time.time()
    all_results = {m: sweep(args.system, args.preset, m, args.shots, seeds, out) for m in args.method}
    cfg = config_for(args.system, args.preset)
    lines = [
        f"# Shot sweep and latent initialisation: {args.system}, preset `{args.preset}`",
        "",
        f"- command: `python -m experiments.meta_shots {' '.join(sys.argv[1:] if argv is None else argv)}`",
        f"- machine: {platform.machine()}, {torch.get_num_threads()} torch threads; torch {torch.__version__}; "
        f"date {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; total wall time {time.time() - start:.0f} s",
        f"- seeds {seeds}; rank r = {cfg.rank} for MR/SVD; meta iterations {cfg.meta.iterations} ({cfg.meta.lr_schedule} lr, {cfg.dtype}); latent adaptation {cfg.adapt_steps} Adam steps, "
        f"lr {cfg.adapt_lr}; shots drawn per test instance from its 10 trajectories (seed 10000 + seed)",
        "",
        "| method | init | K | eps_field | eps_field (data region) | eps_traj | SSIM |",
        "|---|---|---|---|---|---|---|",
    ]
    for m, res in all_results.items():
        for init in INITS:
            for K in args.shots:
                rows = res[init][K]
                cells = [cell([r[key] for r in rows]) for key in ("eps_field", "eps_field_data", "eps_traj", "ssim")]
                lines.append(f"| {m} | {init} | {K} | " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    stem = f"meta_shots_{args.system}_{args.preset}"
    atomic_write_text(table, out / f"{stem}.md")
    atomic_write_text(json.dumps({m: {i: {str(K): v for K, v in r.items()} for i, r in res.items()}
                                  for m, res in all_results.items()}, indent=2), out / f"{stem}.json")
    figure(all_results, args.shots, out / f"{stem}.png", f"{args.system}: error vs shots (preset {args.preset})")
    print(table)
    return all_results


if __name__ == "__main__":
    main()
