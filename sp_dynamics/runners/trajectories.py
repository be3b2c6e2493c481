"""Learning from trajectories without derivatives, against derivative matching, on the same
instances (``sp-dynamics fit-trajectories``).

    python -m experiments.fit_trajectories --system dno --jobs 2
    python -m experiments.fit_trajectories --system pendulum --jobs 2
    python -m experiments.fit_trajectories --preset smoke            # seconds (tests)

For each test instance and noise level (``noise_std`` 0 and 0.01: Gaussian noise on the states and,
for derivative matching, on the derivatives, as the dataset generator adds it), one model per
seed is trained by ``sp_dynamics.fit`` with its default settings from

* ``derivatives``: the dataset's derivatives (exact at noise 0);
* ``implicit_midpoint``: the states only, implicit-midpoint trajectory loss in residual form;
* ``discrete_gradient``: the states only, discrete-gradient trajectory loss in residual form;
* ``rk4``: the states only, each sampling interval rolled out by one RK4 step (``--set
  fit.horizon=H`` for H-interval windows). The learned model is structure-exact whatever step
  the loss uses; the step sets the loss's discretisation bias, O(h^2) for the two residual forms,
  O(h^4) for RK4, at 2-4x the fit time (measured: pendulum 171 s vs 96 s, DNO 658 s vs 194 s);
* ``spline``: the states only, derivatives from ``estimate_derivatives`` (a cubic spline at
  noise 0, a GCV smoothing spline otherwise);
* ``shooting``: the states only, multiple shooting with free initial states
  (``FitConfig(free_starts=True)``): windows of ``shooting_horizon`` intervals, each rolled out by
  RK4 from a state fitted with the model, so the noise on a window's first sample is not carried
  along the window.

eps_traj is measured against the *clean* trajectories from their clean initial states (dopri5),
so noise that the model learned shows as error. Writes ``fit_trajectories_<system>.md`` (and .json,
.config.json).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..config import apply_overrides
from ..data import make_family_dataset
from ..derivatives import estimate_derivatives
from ..fitting import FitConfig, fit
from ..meta.evaluation import safe_rollout
from ..metrics import eps_traj
from ..registry import get_system
from .common import Parser, UsageError, cell, command_line, default_out, machine_line, run_jobs, set_threads, result_stem, write_results
from .fit_instances import build_model

METHODS = ("derivatives", "implicit_midpoint", "discrete_gradient", "rk4", "spline", "shooting")


@dataclass(frozen=True)
class TrajConfig:
    fit: FitConfig = FitConfig()
    seeds: tuple[int, ...] = (0,)
    instances: tuple[int, ...] = (70, 71, 72)
    noise: tuple[float, ...] = (0.0, 0.01)
    dataset: tuple = ()
    shooting_horizon: int = 10


PRESETS = {
    "smoke": TrajConfig(fit=FitConfig(max_iter=10, restarts=1, chunk=5), instances=(4,), shooting_horizon=5,
                        dataset=(("n_instances", 6), ("n_train", 4), ("n_traj", 2), ("n_points", 21))),
    "full": TrajConfig(),
}


def run_one(name: str, cfg: TrajConfig, instance: int, noise: float, method: str, seed: int, threads: int = 0) -> dict:
    set_threads(threads or 1)
    system = get_system(name)
    clean = make_family_dataset(name, seed=0, **dict(cfg.dataset))
    data = make_family_dataset(name, seed=0, noise_std=noise, **dict(cfg.dataset)) if noise else clean
    torch.manual_seed(seed)
    model = build_model(system, "mixed")
    fit_cfg = dataclasses.replace(cfg.fit, seed=seed)
    traj = data.x[instance]
    if method == "derivatives":
        result = fit(model, *data.pairs(instance), config=fit_cfg, progress=False)
    elif method == "spline":
        x, dx = estimate_derivatives(data.t, traj, "spline" if noise == 0 else "smoothing_spline")
        result = fit(model, x, dx, config=fit_cfg, progress=False)
    elif method == "shooting":
        shooting = dataclasses.replace(fit_cfg, method="rk4", horizon=cfg.shooting_horizon, free_starts=True)
        result = fit(model, traj, t=data.t, config=shooting, progress=False)
    else:
        result = fit(model, traj, t=data.t, config=dataclasses.replace(fit_cfg, method=method), progress=False)
    row = {"instance": instance, "noise": noise, "method": method, "seed": seed, "loss": result.final_loss,
           "evaluations": result.evaluations, "fit_s": result.seconds}
    try:
        pred = safe_rollout(model, clean.x[instance, :, 0], clean.t)
        row["eps_traj"] = float(eps_traj(pred, clean.x[instance]).mean())
    except Exception as exc:  # a stiff learned field: reported as NaN
        print(f"  {method} noise {noise} instance {instance}: rollout failed ({type(exc).__name__})", flush=True)
        row["eps_traj"] = float("nan")
    return row


def report(system, cfg: TrajConfig, preset: str, rows: list[dict], wall: float, command: str) -> str:
    lines = [
        f"# Learning from trajectories without derivatives: {system.name}",
        "",
        command,
        machine_line(wall),
        f"- preset `{preset}`; test instances {list(cfg.instances)}; seeds {list(cfg.seeds)}; model "
        + ("`GENERICNet` (mixed bracket)" if system.is_generic else "`HamiltonianNN`")
        + "; `sp_dynamics.fit` defaults",
        "- eps_traj: dopri5 rollouts from the clean initial states against the clean trajectories; "
        "mean over the instance's 10 trajectories, then mean ± std over instances and seeds",
        "",
        "| data | method | noise_std | eps_traj | ratio to derivative matching at noise 0 "
        "| ratio to derivative matching at this noise | fit time (s) |",
        "|---|---|---|---|---|---|---|",
    ]

    def reference(noise):
        return np.mean([r["eps_traj"] for r in rows if r["method"] == "derivatives" and r["noise"] == noise] or [np.nan])

    for noise in cfg.noise:
        for method in METHODS:
            rs = [r for r in rows if r["method"] == method and r["noise"] == noise]
            if not rs:
                continue
            values = [r["eps_traj"] for r in rs]
            source = "states + derivatives" if method == "derivatives" else "states only"
            ratios = [np.mean(values) / reference(n) for n in (0.0, noise)]
            ratios = [f"{r:.1f}x" if np.isfinite(r) else "– (not run)" for r in ratios]
            lines.append(f"| {source} | {method} | {noise:g} | {cell(values)} | {ratios[0]} | {ratios[1]} | "
                         f"{np.mean([r['fit_s'] for r in rs]):.0f} |")
    lines += ["", "How much the data say about the field (no fitting): relative RMS error, against the exact derivatives, "
              "of the derivatives derivative matching is given and of the smoothing-spline estimate from the states "
              "alone (mean over the instances).", "",
              "| noise_std | given derivatives | estimated from the states (smoothing spline) |", "|---|---|---|"]
    for noise in cfg.noise:
        if noise > 0:
            given, estimated = derivative_information(system.name, cfg, noise)
            lines.append(f"| {noise:g} | {given:.2e} | {estimated:.2e} |")
    return "\n".join(lines) + "\n"


def derivative_information(name: str, cfg: TrajConfig, noise: float) -> tuple[float, float]:
    """Relative RMS error of the noisy derivatives in the dataset and of smoothing-spline
    derivatives of the noisy states, both against the exact derivatives, averaged over the
    instances: an upper bound on what derivative matching can learn against what the states alone
    carry, before any model is fitted."""
    clean = make_family_dataset(name, seed=0, **dict(cfg.dataset))
    noisy = make_family_dataset(name, seed=0, noise_std=noise, **dict(cfg.dataset))
    given, estimated = [], []
    for i in cfg.instances:
        exact = clean.dx[i].reshape(-1, clean.dim)
        scale = exact.pow(2).sum(-1).mean().sqrt()
        _, spline = estimate_derivatives(noisy.t, noisy.x[i], "smoothing_spline")
        for out, dx in ((given, noisy.dx[i]), (estimated, spline)):
            out.append(float((dx.reshape(-1, clean.dim) - exact).pow(2).sum(-1).mean().sqrt() / scale))
    return float(np.mean(given)), float(np.mean(estimated))


def main(argv=None, *, default_results=None, prog: str = "sp-dynamics fit-trajectories") -> dict:
    parser = Parser(prog=prog, description=__doc__)
    parser.add_argument("--system", default="dno")
    parser.add_argument("--preset", default="full", choices=sorted(PRESETS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_run_options(jobs=True)
    args = parser.parse_args(argv)
    system = get_system(args.system)
    cfg = apply_overrides(PRESETS[args.preset], args.overrides)
    if args.seeds:
        cfg = dataclasses.replace(cfg, seeds=tuple(args.seeds))
    start = time.time()
    calls = {(i, nz, m, s): (system.name, cfg, i, nz, m, s)
             for nz in cfg.noise for m in args.methods for i in cfg.instances for s in cfg.seeds}

    def progress(key, row):
        print(f"instance {key[0]} noise {key[1]} {key[2]} seed {key[3]}: eps_traj {row['eps_traj']:.2e} "
              f"({row['fit_s']:.0f} s)", flush=True)

    rows = list(run_jobs(run_one, calls, jobs=args.jobs, report=progress).values())
    wall = time.time() - start
    text = report(system, cfg, args.preset, rows, wall, command_line(prog, argv))
    out = default_out(args.out, default_results)
    stem = result_stem(f"fit_trajectories_{system.name}", args, "" if args.preset == "full" else f"_{args.preset}")
    write_results(out, stem, text, {"rows": rows, "wall_time_s": wall}, {"args": vars(args), "config": cfg})
    print(text)
    return {"rows": rows}


if __name__ == "__main__":
    main()
