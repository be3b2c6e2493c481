"""Shot sweep and latent initialisation ablation for latent auto-decoding (``sp-dynamics shots``).

    python -m experiments.meta_shots --system pendulum --preset quick          # SVD(5), 1 seed
    python -m experiments.meta_shots --system pendulum --preset paper --method svd fw

For each method and seed, the base is meta-trained once (in the same run folder as the
benchmark, so a finished meta-training run is loaded, not repeated), then adapted to every test
instance from K shots for K in ``--shots`` (protocol: 1, 5, 10, 50, 100, 300), starting from the
mean of the training latents (the paper's choice) and from zero (the ablation). Writes
``meta_shots_{system}_{preset}.md`` / ``.json`` / ``.config.json`` and a figure of the errors
against K.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

from ..config import apply_overrides
from ..data import make_family_dataset
from ..meta.evaluation import evaluate_fields
from ..registry import get_system
from .benchmark import MODULATION, PRESETS, build_adapter, config_for, shots, training_hash
from .common import Parser, UsageError, cell, command_line, default_out, machine_line, pyplot, result_stem, write_results

SHOTS = (1, 5, 10, 50, 100, 300)
INITS = ("mean", "zero")


def sweep(system_name: str, cfg, method: str, ks: list[int], out: Path, preset: str) -> dict:
    system = get_system(system_name)
    data = make_family_dataset(system_name, seed=0, **cfg.dataset)
    run_dir = out / "runs" / f"meta-{system_name}-{preset}-{training_hash(cfg, system_name)}"
    results: dict = {init: {K: [] for K in ks} for init in INITS}
    for seed in cfg.seeds:
        adapter = build_adapter(method, system, data, cfg, seed, run_dir)
        for K in ks:
            xs, dxs = shots(data, K, seed)
            for init in INITS:
                adapter.config = dataclasses.replace(cfg.adapt, init=init)
                scores = evaluate_fields(adapter.adapt(xs, dxs), system, data)
                results[init][K].append(scores)
                print(f"{method} seed {seed} K={K:3d} init {init}: " +
                      "  ".join(f"{k} {v:.3e}" for k, v in scores.items()), flush=True)
    return results


def figure(all_results: dict, ks: list[int], path: Path, title: str) -> None:
    plt = pyplot()
    if plt is None:
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for method, res in all_results.items():
        for init, style in zip(INITS, ("-o", "--s")):
            for ax, key in zip(axes, ("eps_field", "eps_traj")):
                vals = np.array([[r[key] for r in res[init][K]] for K in ks])  # (len(ks), seeds)
                ax.errorbar(ks, vals.mean(1), yerr=vals.std(1), fmt=style, ms=4, capsize=2,
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


def main(argv: list[str] | None = None, *, default_results=None, prog: str = "sp-dynamics shots") -> dict:
    parser = Parser(prog=prog, description=__doc__)
    parser.add_argument("--system", default="pendulum")
    parser.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    parser.add_argument("--method", nargs="+", default=["svd"], choices=MODULATION)
    parser.add_argument("--shots", type=int, nargs="+", default=list(SHOTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_run_options(jobs=False)
    args = parser.parse_args(argv)
    if min(args.shots) < 1:
        raise UsageError("--shots must be >= 1")
    cfg = apply_overrides(config_for(args.system, args.preset, args.seeds), args.overrides)
    out = default_out(args.out, default_results)
    start = time.time()
    all_results = {m: sweep(args.system, cfg, m, args.shots, out, args.preset) for m in args.method}
    solver = (f"{cfg.adapt.gn_steps} Gauss-Newton steps" if cfg.adapt.solver == "gauss_newton"
              else f"{cfg.adapt.steps} Adam steps, lr {cfg.adapt.lr}")
    lines = [
        f"# Shot sweep and latent initialisation: {args.system}, preset `{args.preset}`",
        "",
        command_line(prog if argv is not None else "sp-dynamics shots", argv),
        machine_line(time.time() - start),
        f"- seeds {list(cfg.seeds)}; rank r = {cfg.rank} for MR/SVD; meta iterations {cfg.meta.iterations} "
        f"({cfg.meta.lr_schedule} lr, {cfg.dtype}); latent adaptation {solver}; shots drawn per test instance "
        "from its 10 trajectories (seed 10000 + seed)",
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
    stem = result_stem(f"meta_shots_{args.system}_{args.preset}", args)
    payload = {m: {i: {str(K): v for K, v in r.items()} for i, r in res.items()} for m, res in all_results.items()}
    write_results(out, stem, table, payload, {"args": vars(args), "config": cfg})
    figure(all_results, args.shots, out / f"{stem}.png", f"{args.system}: error vs shots (preset {args.preset})")
    print(table)
    return all_results


if __name__ == "__main__":
    main(sys.argv[1:])
