"""Locality sweep of the meta-learning regularisers, the paper's lambda_z x lambda_phi grid (``sp-dynamics sweep``).

    python -m experiments.meta_sweep --system pendulum --preset paper --methods svd mr fw --jobs 2
    python -m experiments.meta_sweep --preset smoke                     # seconds (tests)

For every lambda_z in {1e-1, 1e-2, 1e-3} and lambda_phi in {1e-2, 1e-3, 1e-4} (``--lam-z`` and
``--lam-phi`` to change), each method is meta-trained and adapted as in
the benchmark (same preset, data, shots and evaluation) with those two weights.
Reports eps_field, eps_field (data region) and eps_traj per cell (mean +- std over seeds), each
method's mean and variance across the cells, with 2+ seeds the seed variance within a cell (is
the variance across cells above seed noise?), and how many cells each method wins. Writes
``meta_sweep_<system>_<preset>.md``, ``.json``, ``.config.json`` and a heat-map figure ``.png``
(one panel per method and metric, a shared log colour scale per metric); each cell has its own
run folder, so an interrupted sweep resumes.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

from ..config import apply_overrides, config_dict
from ..data import make_family_dataset
from ..registry import get_system
from .benchmark import MODULATION, PRESETS, config_for, run_one, stored_config_with_defaults, training_hash
from .common import (Parser, UsageError, cell, command_line, default_out, machine_line, pyplot, result_stem, run_jobs,
                     write_results)

LAM_Z = (1e-1, 1e-2, 1e-3)
LAM_PHI = (1e-2, 1e-3, 1e-4)
METRICS = ("eps_field", "eps_field_data", "eps_traj")


def sweep_cell(system: str, method: str, seed: int, cfg, lam_z: float, lam_phi: float, root: str,
               threads: int | None = None):
    """One (method, seed) run at one (lambda_z, lambda_phi) cell: a top-level function for workers."""
    cfg = dataclasses.replace(cfg, meta=dataclasses.replace(cfg.meta, lam_z=lam_z, lam_phi=lam_phi))
    return run_one(system, method, seed, cfg, Path(root) / f"lz{lam_z:g}-lp{lam_phi:g}-{training_hash(cfg, system)}", None,
                   threads)


def summarise(results: dict, methods, lam_z, lam_phi) -> list[str]:
    lines = ["| method | lambda_z | lambda_phi | eps_field | eps_field (data region) | eps_traj |", "|---|---|---|---|---|---|"]
    for m in methods:
        for lz in lam_z:
            for lp in lam_phi:
                r = results[m][f"{lz:g},{lp:g}"]
                lines.append(f"| {m} | {lz:g} | {lp:g} | " + " | ".join(cell(r[k]) for k in METRICS) + " |")
    lines += ["", "Across the sweep (each cell the mean over seeds):", "",
              "| method | " + " | ".join(f"{k} mean over cells | {k} variance over cells" for k in METRICS) + " |",
              "|---|" + "---|---|" * len(METRICS)]
    for m in methods:
        cols = []
        for k in METRICS:
            v = np.array([np.mean(r[k]) for r in results[m].values()])
            cols += [f"{v.mean():.3e}", f"{v.var():.2e}"]
        lines.append(f"| {m} | " + " | ".join(cols) + " |")
    n_seeds = len(next(iter(results[methods[0]].values()))[METRICS[0]])
    if n_seeds > 1:
        lines += ["", f"Seed noise: the variance between seeds within a cell (unbiased, mean over cells), and that "
                  f"divided by {n_seeds}, the noise variance of one cell mean. Variance over cells at or below the "
                  "latter is what seed noise alone would give: the sweep then does not tell the cells apart.", "",
                  "| method | " + " | ".join(f"{k} seed variance | {k} noise of a cell mean" for k in METRICS) + " |",
                  "|---|" + "---|---|" * len(METRICS)]
        for m in methods:
            cols = []
            for k in METRICS:
                w = float(np.mean([np.var(r[k], ddof=1) for r in results[m].values()]))
                cols += [f"{w:.2e}", f"{w / n_seeds:.2e}"]
            lines.append(f"| {m} | " + " | ".join(cols) + " |")
    lines += ["", "Cells won (lowest mean over seeds among the methods, per metric):", ""]
    mean = {m: {key: {k: np.mean(r[k]) for k in METRICS} for key, r in results[m].items()} for m in methods}
    for k in METRICS:
        wins = {m: 0 for m in methods}
        for key in results[methods[0]]:
            wins[min(methods, key=lambda m: mean[m][key][k])] += 1
        lines.append(f"- {k}: " + ", ".join(f"{m} {wins[m]}" for m in methods))
    both = {m: sum(all(mean[m][key][q] <= min(mean[o][key][q] for o in methods) for q in ("eps_field", "eps_traj"))
                   for key in results[m]) for m in methods}
    lines.append("- lowest eps_field and eps_traj in the same cell: " + ", ".join(f"{m} {both[m]}" for m in methods))
    return lines


def figure(results: dict, methods, lam_z, lam_phi, path: Path, title: str) -> None:
    """Heat maps of the cell means: rows eps_field (data region) and eps_traj, one column per
    method; each row shares one log colour scale, so methods compare by colour."""
    plt = pyplot()
    if plt is None:
        return
    from matplotlib.colors import LogNorm

    keys = ("eps_field_data", "eps_traj")
    fig, axes = plt.subplots(len(keys), len(methods), figsize=(3.0 * len(methods) + 1.2, 2.9 * len(keys)), squeeze=False,
                             layout="constrained")
    for r, (row, k) in enumerate(zip(axes, keys)):
        grids = {m: np.array([[np.mean(results[m][f"{lz:g},{lp:g}"][k]) for lp in lam_phi] for lz in lam_z])
                 for m in methods}
        values = np.concatenate([g.ravel() for g in grids.values()])
        values = values[np.isfinite(values) & (values > 0)]
        norm = LogNorm(values.min(), values.max()) if values.size and values.min() < values.max() else None
        for c, (ax, m) in enumerate(zip(row, methods)):
            im = ax.imshow(grids[m], norm=norm, cmap="viridis_r")
            for (a, b), v in np.ndenumerate(grids[m]):  # dark text on the light (low) end of the scale
                light = norm is not None and np.isfinite(v) and v > 0 and norm(v) < 0.5
                ax.text(b, a, f"{v:.1e}", ha="center", va="center", fontsize=7, color="k" if light else "w")
            ax.set_xticks(range(len(lam_phi)), [f"{v:g}" for v in lam_phi])
            ax.set_yticks(range(len(lam_z)), [f"{v:g}" for v in lam_z])
            if r == len(keys) - 1:
                ax.set_xlabel("lambda_phi")
            if c == 0:
                ax.set_ylabel("lambda_z")
            ax.set_title(f"{m.upper()}: {k}", fontsize=9)
        fig.colorbar(im, ax=list(row), shrink=0.8)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None, *, default_results=None, prog: str = "sp-dynamics sweep") -> dict:
    parser = Parser(prog=prog, description=__doc__)
    parser.add_argument("--system", default="pendulum")
    parser.add_argument("--preset", default="paper", choices=sorted(PRESETS))
    parser.add_argument("--methods", nargs="+", default=["svd", "mr", "fw"])
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--lam-z", type=float, nargs="+", default=list(LAM_Z))
    parser.add_argument("--lam-phi", type=float, nargs="+", default=list(LAM_PHI))
    parser.add_run_options(jobs=True)
    args = parser.parse_args(argv)
    bad = set(args.methods) - set(MODULATION)
    if bad:
        raise UsageError(f"the sweep is over the modulation methods {MODULATION}; got {sorted(bad)}")
    if any(v < 0 for v in args.lam_z + args.lam_phi):
        raise UsageError("--lam-z and --lam-phi must be >= 0")
    get_system(args.system)
    cfg = apply_overrides(config_for(args.system, args.preset, args.seeds), args.overrides)
    out = default_out(args.out, default_results)
    root = out / "runs" / f"sweep-{args.system}-{args.preset}"
    make_family_dataset(args.system, seed=0, **cfg.dataset)
    calls = {(m, s, lz, lp): (args.system, m, s, cfg, lz, lp, str(root))
             for lz in args.lam_z for lp in args.lam_phi for m in args.methods for s in cfg.seeds}
    start = time.time()

    def report(key, value):
        metrics, wall = value
        print(f"{key[0]:5s} seed {key[1]} lam_z {key[2]:g} lam_phi {key[3]:g}: "
              + "  ".join(f"{k} {metrics[k]:.3e}" for k in METRICS) + f"  ({wall:.0f} s)", flush=True)

    done = run_jobs(sweep_cell, calls, args.jobs, report)
    results = {m: {f"{lz:g},{lp:g}": {k: [done[(m, s, lz, lp)][0][k] for s in cfg.seeds] for k in METRICS}
                   for lz in args.lam_z for lp in args.lam_phi} for m in args.methods}
    wall = time.time() - start
    stem = result_stem(f"meta_sweep_{args.system}_{args.preset}", args)
    write_sweep(out, stem, results, vars(args), config_dict(cfg), list(cfg.seeds), command_line(prog, argv),
                machine_line(wall, args.jobs), {"wall_time_s": wall})
    return results


def write_sweep(out: Path, stem: str, results: dict, args: dict, cfg: dict, seeds: list[int], command: str,
                machine: str, extra: dict | None = None, config_extra: dict | None = None) -> str:
    """The sweep's table, JSON, config and heat map (``cfg``: the BenchConfig as a ``config_dict``,
    as stored in a results part)."""
    meta = cfg["meta"]
    lines = [
        f"# Locality sweep: {args['system']}, preset `{args['preset']}`",
        "",
        command,
        machine,
        f"- seeds {seeds}; meta iterations {meta['iterations']} ({meta['lr_schedule']} lr, {cfg['dtype']}); "
        f"{cfg['shots']} shots; everything else as `sp-dynamics benchmark --preset {args['preset']}`",
        "",
        *summarise(results, args["methods"], args["lam_z"], args["lam_phi"]),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    write_results(out, stem, text, {"results": results, **(extra or {})},
                  {"args": args, "config": cfg, **(config_extra or {})})
    figure(results, args["methods"], args["lam_z"], args["lam_phi"], out / f"{stem}.png",
           f"{args['system']}, preset {args['preset']}: cell means over seeds {seeds} (lower is better)")
    return text


def combine(parts: list[tuple[str, dict, dict]]) -> tuple[dict, list[int]]:
    """Merge sweep parts ``(stem, results, config)`` run for different seeds with otherwise equal
    settings (refused otherwise, and where two parts hold the same method, cell and seed):
    every cell's per-seed lists, in seed order."""
    def settings(cfg):
        return ({k: v for k, v in cfg["args"].items() if k not in ("seeds", "tag", "jobs", "out")},
                {k: v for k, v in stored_config_with_defaults(cfg["config"]).items() if k != "seeds"})

    first_stem, _, first = parts[0]
    per_seed: dict = {}
    for stem, results, cfg in parts:
        if settings(cfg) != settings(first):
            a, b = settings(cfg), settings(first)
            diff = sorted(k for part in (0, 1) for k in set(a[part]) | set(b[part]) if a[part].get(k) != b[part].get(k))
            raise UsageError(f"{stem} was run with other settings than {first_stem} (differ: {', '.join(diff)})")
        for m, cells in results["results"].items():
            for key, metrics in cells.items():
                slot = per_seed.setdefault(m, {}).setdefault(key, {})
                for i, seed in enumerate(cfg["config"]["seeds"]):
                    if seed in slot:
                        raise UsageError(f"{m} seed {seed} at ({key}) is in two parts (one is {stem})")
                    slot[seed] = {k: metrics[k][i] for k in METRICS}
    seeds = sorted({s for cells in per_seed.values() for slot in cells.values() for s in slot})
    for m, cells in per_seed.items():
        for key, slot in cells.items():
            if sorted(slot) != seeds:
                raise UsageError(f"{m} at ({key}) has seeds {sorted(slot)}, the others {seeds}: a part is incomplete")
    merged = {m: {key: {k: [slot[s][k] for s in seeds] for k in METRICS} for key, slot in cells.items()}
              for m, cells in per_seed.items()}
    return merged, seeds


if __name__ == "__main__":
    main()
