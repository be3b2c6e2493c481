"""Probe: do the shipped gas single fits improve with more polishing on the data term?

    python -m experiments.gas_polish_more FOLDER [--evals N] [--jobs J]

FOLDER holds fits saved by ``fit-instances --save`` (``<system>-instance<i>-seed<s>`` folders,
e.g. ``experiments/checkpoints/fit_gas_containers_walls_temperatures``). Each fit is loaded and
trained on for N more L-BFGS evaluations (default 3000) on the derivative-matching term alone,
``sp_dynamics.fit(model, x, dx, config=FitConfig(restarts=1, max_iter=N, entropy_penalty=0,
energy_penalty=0))``: the model as saved is the starting point, the penalties are off, as in the
trainer's polishing phase (``FitConfig.polish_iter``), so this continues the kept fit's polish with
a fresh L-BFGS memory. It is not the same as a fit with a longer ``polish_iter``, which polishes
every start before the choice. Then each fit is scored as the runner scores it
(``fit_instances.evaluate_fit``) and the table goes to ``results/gas_polish_more.md`` (the refined
models are not kept).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from experiments._shim import RESULTS, run
from sp_dynamics.data import make_family_dataset
from sp_dynamics.fitting import FitConfig, fit
from sp_dynamics.registry import get_system
from sp_dynamics.runners.common import (Parser, UsageError, command_line, machine_line, run_jobs, set_threads,
                                        write_results)
from sp_dynamics.runners.fit_instances import evaluate_fit


def polish_one(folder: str, evals: int, threads: int = 1) -> dict:
    from sp_dynamics.serialization import load, read_description

    set_threads(threads)
    extra = read_description(folder)["extra"]
    system = get_system(extra["system"])
    data = make_family_dataset(system.name, seed=0)
    model = load(folder)
    x, dx = data.pairs(extra["instance"])
    result = fit(model, x, dx, config=FitConfig(restarts=1, max_iter=evals, entropy_penalty=0.0, energy_penalty=0.0,
                                                seed=extra["seed"]), progress=False)
    row = {"instance": extra["instance"], "seed": extra["seed"], "before": extra["metrics"],
           "data_loss": result.data_loss, "evaluations": result.evaluations, "fit_s": result.seconds}
    return row | evaluate_fit(model, system, data, extra["instance"])


def main(argv=None) -> dict:
    p = Parser(prog="python -m experiments.gas_polish_more", description=__doc__)
    p.add_argument("folder")
    p.add_argument("--evals", type=int, default=3000)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    folders = sorted(f for f in Path(args.folder).glob("*-instance*-seed*") if (f / "model.json").exists())
    if not folders:
        raise UsageError(f"{args.folder}: no saved fits (<system>-instance<i>-seed<s> folders with model.json)")
    if args.evals < 1:
        raise UsageError(f"--evals must be >= 1, got {args.evals}")
    start = time.time()
    rows = list(run_jobs(polish_one, {str(f): (str(f), args.evals) for f in folders}, jobs=args.jobs,
                         report=lambda k, r: print(f"{Path(k).name}: eps_traj {r['before']['eps_traj']:.2e} -> "
                                                   f"{r['eps_traj']:.2e}, field {r['before']['eps_field_data']:.2e} -> "
                                                   f"{r['eps_field_data']:.2e}", flush=True)).values())
    rows.sort(key=lambda r: (r["instance"], r["seed"]))
    wall = time.time() - start

    def passes(m):
        return m["eps_traj"] <= 1e-2 and m["eps_field_data"] <= 1e-2

    lines = [f"# More polishing of saved single fits: {args.folder}", "",
             command_line('python -m experiments.gas_polish_more', argv), machine_line(wall, args.jobs),
             f"- each fit: {args.evals} more L-BFGS evaluations on the derivative-matching term alone from the saved model",
             "", "| instance | seed | eps_traj before -> after | data-region eps_field before -> after | data loss before -> after "
             "| max abs dE/dt | min dS/dt | evaluations |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        b = r["before"]
        lines.append(f"| {r['instance']} | {r['seed']} | {b['eps_traj']:.3e} -> {r['eps_traj']:.3e} | "
                     f"{b['eps_field_data']:.3e} -> {r['eps_field_data']:.3e} | {b['data_loss']:.2e} -> {r['data_loss']:.2e} | "
                     f"{r.get('max_abs_dEdt', np.nan):.1e} | {r.get('min_dSdt', np.nan):.1e} | {r['evaluations']} |")
    lines += ["", f"Both targets (eps_traj and data-region eps_field <= 1e-2): {sum(passes(r['before']) for r in rows)} of "
              f"{len(rows)} before, {sum(passes(r) for r in rows)} of {len(rows)} after."]
    text = "\n".join(lines) + "\n"
    write_results(Path(args.out), "gas_polish_more", text, {"rows": rows, "wall_time_s": wall})
    print(text)
    return {"rows": rows}


if __name__ == "__main__":
    run(main)
