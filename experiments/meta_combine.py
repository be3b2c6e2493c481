"""Combine meta-benchmark (or locality-sweep) result files of one configuration run at different times for
different seeds.

    python -m experiments.meta_combine meta_dno_paper_fw_shift_seed0 meta_dno_paper_mod_seeds12 \\
        --stem meta_dno_paper_modulation

A long benchmark is often run in parts (seed 0 first, seeds 1 and 2 later). This merges the
per-seed values of each method from the parts' ``.json`` files into one table (mean ± std over
all seeds), the same table `meta_benchmark` writes. It refuses parts whose settings differ in
anything but the seeds (system, preset, overrides and every training and evaluation setting must
match, from the ``.config.json`` files) and a (method, seed) pair that two parts both hold. The
header names the parts; each part's own file keeps its command, machine, date and wall time.
Files are read from and written to ``--results`` (default experiments/results).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from types import SimpleNamespace

from experiments._shim import RESULTS, run
from sp_dynamics.runners.benchmark import _table, stored_config_with_defaults
from sp_dynamics.runners.common import UsageError, command_line, write_results


def load(results: Path, stem: str) -> tuple[dict, dict]:
    paths = [results / f"{stem}.json", results / f"{stem}.config.json"]
    for p in paths:
        if not p.is_file():
            raise UsageError(f"no {p.name} in {results}: name each part by its result stem (no extension)")
    return tuple(json.loads(p.read_text()) for p in paths)


def combine(parts: list[tuple[str, dict, dict]]) -> tuple[dict, dict, dict[str, list[int]]]:
    """Merge ``(stem, results, config)`` parts: per method, every per-seed list concatenated in seed order."""
    def settings(cfg: dict) -> dict:  # what must agree between parts (seeds and methods may differ)
        return {k: v for k, v in cfg.items() if k != "methods"} | {
            "config": {**stored_config_with_defaults(cfg["config"]), "seeds": None}}

    first_stem, _, first = parts[0]
    same = settings(first)
    per_seed: dict[str, dict[int, dict]] = {}
    walls: dict[str, float] = {}
    for stem, results, cfg in parts:
        mine = settings(cfg)
        if mine != same:
            diff = sorted(k for k in set(mine["config"]) | set(same["config"]) if mine["config"].get(k) != same["config"].get(k))
            diff += sorted(k for k in mine if k != "config" and mine[k] != same.get(k))
            raise UsageError(f"{stem} was run with other settings than {first_stem} (differ: {', '.join(diff)})")
        for method, r in results.items():
            for i, seed in enumerate(cfg["config"]["seeds"]):
                if seed in per_seed.setdefault(method, {}):
                    raise UsageError(f"{method} seed {seed} is in two parts (one is {stem})")
                per_seed[method][seed] = _upgrade({k: v[i] for k, v in r.items() if isinstance(v, list)})
            walls[method] = walls.get(method, 0.0) + r.get("wall_time_s", 0.0)
    for m, runs in per_seed.items():
        keys = [set(r) for r in runs.values()]
        if any(k != keys[0] for k in keys):
            missing = sorted(set.union(*keys) - set.intersection(*keys))
            raise UsageError(f"{m}: the parts report different metrics ({', '.join(missing)} missing in some): "
                             "written by different versions of the benchmark")
    merged = {m: {k: [runs[s][k] for s in sorted(runs)] for k in next(iter(runs.values()))} | {"wall_time_s": walls[m]}
              for m, runs in per_seed.items()}
    return merged, first, {m: sorted(runs) for m, runs in per_seed.items()}


def _upgrade(run: dict) -> dict:
    """One (method, seed) of a GENERIC part written before ``left_domain`` existed. Its entropy error
    was NaN whenever any test trajectory left the state domain (or its rollout failed), so a finite
    one means that none did (share 0); after a NaN the share is unknown (NaN)."""
    if "entropy_error" in run and "left_domain" not in run:
        run["left_domain"] = 0.0 if math.isfinite(run["entropy_error"]) else float("nan")
    return run


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="+", help="result stems of the parts, e.g. meta_dno_paper_fw_shift_seed0")
    parser.add_argument("--stem", required=True, help="stem of the combined files")
    parser.add_argument("--results", default=str(RESULTS))
    args = parser.parse_args(argv)
    results_dir = Path(args.results)
    if Path(args.stem).name != args.stem:
        raise UsageError(f"--stem is a file name stem, not a path: {args.stem!r} (the folder is --results)")
    if len(args.parts) < 2:
        raise UsageError("give at least two parts to combine")
    parts = [(stem, *load(results_dir, stem)) for stem in args.parts]
    if all("lam_z" in cfg.get("args", {}) for _, _, cfg in parts):  # locality-sweep parts
        return _combine_sweeps(parts, results_dir, args.stem, argv)
    merged, first, seeds = combine(parts)
    settings = _stored_config({**first["config"], "seeds": sorted({s for v in seeds.values() for s in v})})
    header = (_combined_from(args.parts) + "; seeds per method: "
              + "; ".join(f"{m} {v}" for m, v in seeds.items()) + " (the wall time column sums a method's runs over seeds)")
    table = _table(SimpleNamespace(system=first["system"], preset=first["preset"], jobs=1),
                   settings, merged, 0.0,
                   command_line("python -m experiments.meta_combine", argv), machine=header)
    write_results(results_dir, args.stem, table, merged,
                  {**{k: v for k, v in first.items() if k != "methods"}, "methods": list(merged), "parts": args.parts})
    print(table)
    return merged


def _combine_sweeps(parts, results_dir: Path, stem: str, argv) -> dict:
    """Sweep parts (``meta_sweep`` result stems) -> one sweep table over all their seeds."""
    from sp_dynamics.runners import sweep

    merged, seeds = sweep.combine(parts)
    _, _, first = parts[0]
    header = _combined_from([s for s, _, _ in parts])
    sweep.write_sweep(results_dir, stem, merged, {**first["args"], "seeds": seeds, "tag": None},
                      {**first["config"], "seeds": seeds}, seeds, command_line("python -m experiments.meta_combine", argv),
                      header, config_extra={"parts": [s for s, _, _ in parts]})
    return merged


def _combined_from(stems: list[str]) -> str:
    """The header line naming the parts (linked) that a combined table was merged from."""
    return ("- combined from " + ", ".join(f"[`{s}.md`]({s}.md)" for s in stems)
            + " (each part's file has its command, machine, date and wall time)")


def _stored_config(stored: dict) -> SimpleNamespace:
    """Stored settings (a config dict) as attributes, for the table's description lines."""
    return SimpleNamespace(**{k: _stored_config(v) if isinstance(v, dict) else v for k, v in stored.items()})


if __name__ == "__main__":
    run(main)
