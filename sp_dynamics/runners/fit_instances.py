"""Single-instance fits through the public trainer, ``sp_dynamics.fit``, on a family's test
instances (``sp-dynamics fit-instances``).

    python -m experiments.fit_generic --system dno --jobs 2                 # 10 test instances x 3 seeds
    python -m experiments.fit_generic --system gas_containers --jobs 2
    python -m experiments.fit_generic --system dno --bracket projection     # the old default, for comparison
    python -m experiments.fit_generic --preset smoke                        # seconds (tests)

Interrupted runs resume: each finished fit's row is written at once to
``<out>/runs/fit-<stem>-<hash of every setting>/``, and a rerun of the same command skips those fits.

Each test instance of the protocol-v1 dataset is fitted on all its data (10 trajectories x 101
states with exact derivatives) by ``fit`` with its default settings, a fresh ``GENERICNet``
(``HamiltonianNN`` for Hamiltonian systems) per seed. Reported per instance, mean +- std over
seeds: eps_traj (dopri5 rollouts from the true initial states), the protocol's eps_field, eps_field
on the data region (``sp_dynamics.meta.evaluation.data_region``), max |dE/dt| and min dS/dt of the
model's own E and S along its rollouts, evaluations and wall time. Writes
``fit_<system>[_<bracket>].md``, ``.json`` and ``.config.json``; with ``--save DIR`` also every
fitted model, as ``DIR/<system>-instance<i>-seed<s>`` (``sp_dynamics.save`` folders: score one on
new data with ``sp-dynamics evaluate DIR/... --data file.npz``, or ``sp_dynamics.load`` it).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import apply_overrides, config_hash
from ..data import make_family_dataset
from ..fitting import FitConfig, fit
from ..io import atomic_write_text
from ..meta.evaluation import data_region, held_out_trajectories, safe_rollout, structure_rates
from ..metrics import eps_field, eps_traj
from ..models import GENERICNet, HamiltonianNN
from ..registry import get_system
from .common import Parser, UsageError, cell, generic_model_kwargs, command_line, default_out, machine_line, run_jobs, set_threads, result_stem, write_results

BRACKETS = ("mixed", "mixed_power", "projection", "projection_sd", "basis")


@dataclass(frozen=True)
class FitBenchConfig:
    fit: FitConfig = FitConfig()
    seeds: tuple[int, ...] = (0, 1, 2)
    instances: tuple[int, ...] | None = None  # None: the dataset's test instances
    dataset: dict = field(default_factory=dict)


PRESETS = {
    "smoke": FitBenchConfig(fit=FitConfig(max_iter=20, restarts=2, restart_iter=5, chunk=10), seeds=(0,),
                            dataset=dict(n_instances=6, n_train=4, n_traj=2, n_points=21)),
    "full": FitBenchConfig(),
}


ENERGIES = ("mlp", "separable", "split", "positive", "positive_split")


def build_model(system, bracket: str, energy: str = "mlp", walls: bool = False,
                friction_coords: tuple[int, ...] | None = None) -> torch.nn.Module:
    """The runner's model: ``energy="separable"`` splits the learned energy as K(p) + U(q, s),
    ``"split"`` further as K(p) + sum_k U_k(q, s_k) (GENERIC systems with further coordinates);
    ``"positive"`` and ``"positive_split"`` are those two with each potential exp of its network
    (``GENERICNet(positive_potential=True)``);
    ``walls`` gives the energy network the log-distances to the system's walls (``system.walls``);
    ``friction_coords`` picks the components of its input the mixed bracket's friction network sees
    (``MixedBracket(friction_coords=...)``; None: the runners' choice, all of them)."""
    if walls and not system.walls:
        raise UsageError(f"--walls: system {system.name!r} declares no walls (System.walls)")
    if not system.is_generic:
        if energy != "mlp" and energy != "separable":
            raise UsageError(f"--energy {energy} needs a GENERIC system (HamiltonianNN takes --energy mlp or separable)")
        if walls:
            raise UsageError("--walls needs a GENERIC system (HamiltonianNN takes no wall inputs)")
    if friction_coords is not None and (not system.is_generic or not bracket.startswith("mixed")):
        raise UsageError("--friction-coords needs a GENERIC system and a mixed bracket (--bracket mixed or mixed_power)")
    if not system.is_generic:
        return HamiltonianNN(system.dim, separable=energy != "mlp").double()
    kwargs = _energy_kwargs(system, energy, walls)
    if bracket == "projection_sd":
        from sp_dynamics.brackets import ProjectionBracket

        return GENERICNet(system.dim, bracket=ProjectionBracket(system.dim, state_dependent=True), **kwargs).double()
    try:
        return GENERICNet(system.dim, bracket=bracket.removesuffix("_power"), **kwargs,
                          **_bracket_kwargs(system, bracket, friction_coords)).double()
    except ValueError as exc:  # friction coordinates outside the friction input
        if friction_coords is None:
            raise
        raise UsageError(f"--friction-coords: {exc}") from None


def _energy_kwargs(system, energy: str, walls: bool) -> dict:
    """``GENERICNet``'s energy keyword arguments for ``--energy`` and ``--walls`` (those left at their
    defaults omitted): what ``build_model`` passes and the results file's model line shows."""
    return (({"separable": system.n_dof} if energy != "mlp" else {})
            | ({"split_potential": True} if energy.endswith("split") else {})
            | ({"positive_potential": True} if energy.startswith("positive") else {})
            | ({"walls": system.walls} if walls else {}))


def _bracket_kwargs(system, bracket: str, friction_coords: tuple[int, ...] | None = None) -> dict:
    """The mixed bracket's keyword arguments: the runners' per-system choice (``GENERIC_MODEL``),
    for ``mixed_power`` the power-law friction (``MixedBracket(friction_law="power")``), and the
    friction network's input components if given."""
    if not bracket.startswith("mixed"):
        return {}
    return (generic_model_kwargs(system.name) | ({"friction_law": "power"} if bracket == "mixed_power" else {})
            | ({"friction_coords": tuple(friction_coords)} if friction_coords is not None else {}))


def fit_one(system_name: str, bracket: str, cfg: FitBenchConfig, instance: int, seed: int, energy: str = "mlp",
            save_dir: str | None = None, walls: bool = False, friction_coords: tuple[int, ...] | None = None,
            row_file: str | None = None, threads: int = 0) -> dict:
    """Fit one instance with one seed and evaluate it (a top-level function for worker processes);
    with ``save_dir``, the fitted model is saved in ``save_dir/<system>-instance<i>-seed<s>``; with
    ``row_file``, the row is written there (atomically) as soon as the fit is done."""
    set_threads(threads or 1)  # small problems: one thread per fit is fastest
    system = get_system(system_name)
    data = make_family_dataset(system_name, seed=0, **cfg.dataset)
    x, dx = data.pairs(instance)
    torch.manual_seed(seed)
    model = build_model(system, bracket, energy, walls, friction_coords)
    result = fit(model, x, dx, config=dataclasses.replace(cfg.fit, seed=seed), progress=False)
    out = {"instance": instance, "seed": seed, "loss": result.final_loss, "evaluations": result.evaluations,
           "lm_iterations": result.lm_iterations,
           "data_loss": result.data_loss, "stopped": result.stopped, "chosen_restart": result.chosen,
           "restart_losses": result.restart_losses, "start_losses": result.start_losses,
           "chosen_start": result.chosen_start, "n_parameters": sum(p.numel() for p in model.parameters()),
           "fit_s": result.seconds}
    out |= evaluate_fit(model, system, data, instance, label=f"instance {instance} seed {seed}")
    if save_dir is not None:
        from ..serialization import save

        folder = save(model, Path(save_dir) / f"{system_name}-instance{instance}-seed{seed}",
                      extra={"system": system_name, "instance": instance, "seed": seed, "bracket": bracket,
                             "energy": energy, "walls": walls, "friction_coords": friction_coords, "fit": dataclasses.asdict(dataclasses.replace(cfg.fit, seed=seed)),
                             "metrics": {k: out[k] for k in ("eps_traj", "eps_field_data", "data_loss") if k in out}})
        out["saved"] = str(folder)
    if row_file is not None:
        atomic_write_text(json.dumps(out, default=float), row_file)
    return out


def evaluate_fit(model: torch.nn.Module, system, data, instance: int, label: str = "") -> dict:
    """The single-fit scores of ``model`` on one instance of ``data``: eps_field on the protocol
    grid and on the data region, eps_traj (mean and worst trajectory) of dopri5 rollouts from the
    true initial states and, for GENERIC systems, max |dE/dt| and min dS/dt along them. A
    rollout that fails (a stiff or diverging field) gives NaN for those, with a printed line.
    The same field and rollout errors on new trajectories of the instance (as many as the data has,
    :func:`~sp_dynamics.meta.evaluation.held_out_trajectories`) are ``eps_field_held_out`` and
    ``eps_traj_held_out``."""
    true = system.dynamics(data.params[instance])
    grid = system.field_grid(50)
    fresh = held_out_trajectories(system, data, instance)
    out = {"eps_field": eps_field(model, true, grid),
           "eps_field_data": eps_field(model, true, data_region(system, data, grid, instance)),
           "eps_field_held_out": eps_field(model, true, fresh.reshape(-1, fresh.shape[-1]))}

    def rollout_or_none(x0: torch.Tensor, what: str):
        try:
            return safe_rollout(model, x0, data.t)
        except Exception as exc:  # a stiff or diverging learned field: reported, not fatal
            print(f"  {label or f'instance {instance}'}: {what} failed ({type(exc).__name__}); eps_traj = NaN", flush=True)
            return None

    held_out = rollout_or_none(fresh[:, 0], "held-out rollout")
    out["eps_traj_held_out"] = float("nan") if held_out is None else float(eps_traj(held_out, fresh).mean())
    pred = rollout_or_none(data.x[instance, :, 0], "rollout")
    if pred is None:
        out.update(eps_traj=float("nan"), eps_traj_max=float("nan"), max_abs_dEdt=float("nan"), min_dSdt=float("nan"))
        return out
    per_traj = eps_traj(pred, data.x[instance])
    out.update(eps_traj=float(per_traj.mean()), eps_traj_max=float(per_traj.max()))
    if system.is_generic:
        out["max_abs_dEdt"], out["min_dSdt"] = structure_rates(model, pred)
    return out


def report(system, bracket: str, cfg: FitBenchConfig, preset: str, rows: list[dict], wall: float, command: str,
           energy: str = "mlp", walls: bool = False, friction_coords: tuple[int, ...] | None = None,
           resumed: int = 0) -> str:
    generic = system.is_generic
    separable = "".join(f", {k}={v!r}" for k, v in _energy_kwargs(system, energy, walls).items())
    lines = [
        f"# Single-instance fits with `sp_dynamics.fit`: {system.name}" + (f" ({bracket} bracket)" if generic else ""),
        "",
        command,
        machine_line(wall),
        *([f"- resumed: {resumed} of the {len(rows)} fits were done by an earlier, interrupted invocation of the same "
           "command; the wall time above is this invocation's"] if resumed else []),
        f"- preset `{preset}`; seeds {list(cfg.seeds)}; model: "
        + (f"`GENERICNet({system.dim}, bracket={bracket.removesuffix('_power')!r}"
           + "".join(f", {k}={v!r}" for k, v in _bracket_kwargs(system, bracket, friction_coords).items()) + separable
           + ")`" if generic else f"`HamiltonianNN({system.dim}{', separable=True' if separable else ''})`")
        + " (3 x 64 tanh networks" + (f", {rows[0]['n_parameters']} parameters" if "n_parameters" in rows[0] else "")
        + f"), float64; trainer settings `{cfg.fit}`",
        "- data: all 10 trajectories x 101 states of the instance with exact derivatives (protocol v1, seed 0)",
        "- eps_field (data region): the protocol grid's points within two grid spacings of the instance's "
        "trajectories in (q, p), each carrying the entropies of its nearest trajectory state",
        "- held out: new trajectories of the same instance (as many as the data has) that the fit never saw (new initial states from the "
        "system's own distribution, `held_out_trajectories`): eps_field on all their states, eps_traj of rollouts "
        "from their initial states",
        "",
        "| instance | params | eps_traj | eps_traj (worst trajectory) | eps_field (data region) | eps_field (protocol grid) "
        "| eps_field (held out) | eps_traj (held out) "
        + ("| max abs dE/dt | min dS/dt " if generic else "") + "| evaluations | fit time (s) |",
        "|---|---|---|---|---|---|---|---|" + ("---|---|" if generic else "") + "---|---|",
    ]
    data = make_family_dataset(system.name, seed=0, **cfg.dataset)
    instances = sorted({r["instance"] for r in rows})
    for i in instances:
        rs = [r for r in rows if r["instance"] == i]
        mu = ", ".join(f"{n}={v:.3g}" for n, v in zip(system.param_names, data.params[i].tolist()))
        cols = [str(i), mu, cell([r["eps_traj"] for r in rs]), f"{max(r['eps_traj_max'] for r in rs):.2e}",
                cell([r["eps_field_data"] for r in rs]), cell([r["eps_field"] for r in rs]),
                cell([r.get("eps_field_held_out", np.nan) for r in rs]),
                cell([r.get("eps_traj_held_out", np.nan) for r in rs])]
        if generic:
            cols += [f"{max(r['max_abs_dEdt'] for r in rs):.1e}", f"{min(r['min_dSdt'] for r in rs):.1e}"]
        cols += [f"{np.mean([r['evaluations'] for r in rs]):.0f}", f"{np.mean([r['fit_s'] for r in rs]):.0f}"]
        lines.append("| " + " | ".join(cols) + " |")
    def summary(key: str) -> str:
        v = np.array([r.get(key, np.nan) for r in rows])
        return (f"mean {np.nanmean(v):.2e}, worst {np.nanmax(v):.2e} "
                f"({int(np.sum(v <= 1e-2))} of {len(rows)} <= 1e-2)")

    lines += [
        "",
        f"All {len(rows)} fits: eps_traj {summary('eps_traj')}; eps_field (data region) {summary('eps_field_data')}; "
        f"mean fit time {np.mean([r['fit_s'] for r in rows]):.0f} s per fit.",
    ]
    if any(np.isfinite(r.get("eps_field_held_out", np.nan)) for r in rows):
        lines.append(f"Held out: eps_field {summary('eps_field_held_out')}; eps_traj {summary('eps_traj_held_out')}.")
    if generic:
        lines.append(f"Structure along all rollouts: max |dE/dt| {np.nanmax([r['max_abs_dEdt'] for r in rows]):.1e}, "
                     f"min dS/dt {np.nanmin([r['min_dSdt'] for r in rows]):.1e}.")
    return "\n".join(lines) + "\n"


def main(argv=None, *, default_results=None, prog: str = "sp-dynamics fit-instances") -> dict:
    parser = Parser(prog=prog, description=__doc__)
    parser.add_argument("--system", default="dno")
    parser.add_argument("--preset", default="full", choices=sorted(PRESETS))
    parser.add_argument("--bracket", default="mixed", choices=BRACKETS)
    parser.add_argument("--energy", default="mlp", choices=ENERGIES,
                        help="the learned energy: one MLP, K(p) + U(q, s) (KineticPotential), "
                             "K(p) + sum_k U_k(q, s_k) (split), or those two with each potential exp of its "
                             "network (positive, positive_split: GENERICNet(positive_potential=True))")
    parser.add_argument("--walls", action="store_true",
                        help="give the learned energy the log-distances to the system's walls as inputs "
                             "(GENERICNet(walls=system.walls); gas_containers: the piston's two walls)")
    parser.add_argument("--friction-coords", type=int, nargs="+", default=None, metavar="I",
                        help="the components of its input the mixed bracket's friction network sees "
                             "(MixedBracket(friction_coords=...); gas_containers, whose friction input is grad E: "
                             "2 3 for the temperatures dE/dS_i alone). Default: all")
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--instances", type=int, nargs="+", default=None)
    parser.add_argument("--save", default=None, metavar="DIR",
                        help="save every fitted model in DIR/<system>-instance<i>-seed<s> (score one with sp-dynamics evaluate)")
    parser.add_run_options(jobs=True)
    args = parser.parse_args(argv)
    system = get_system(args.system)
    cfg = apply_overrides(PRESETS[args.preset], args.overrides)
    if args.seeds:
        cfg = dataclasses.replace(cfg, seeds=tuple(args.seeds))
    data = make_family_dataset(system.name, seed=0, **cfg.dataset)
    instances = list(args.instances or cfg.instances or data.test_ids)
    bad = [i for i in instances if not 0 <= i < data.x.shape[0]]
    if bad:
        raise UsageError(f"instances {bad} are outside [0, {data.x.shape[0]})")
    start = time.time()
    if args.save is not None and Path(args.save).exists() and not Path(args.save).is_dir():
        raise UsageError(f"--save {args.save}: exists and is not a folder")
    coords = None if args.friction_coords is None else tuple(args.friction_coords)
    build_model(system, args.bracket, args.energy, args.walls, coords)  # a usage error here, before any worker starts
    # Every setting that changes a fit names the run folder, so a changed setting never resumes.
    out = default_out(args.out, default_results)
    run_dir = out / "runs" / (
        f"fit-{system.name}-" + config_hash((cfg, args.bracket, args.energy, args.walls, coords, args.save)))
    run_dir.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys((i, s) for i in instances for s in cfg.seeds))
    row_files = {(i, s): run_dir / f"instance{i}-seed{s}.json" for i, s in keys}
    rows_done = {key: json.loads(f.read_text()) for key, f in row_files.items() if f.exists()}
    if rows_done:
        print(f"resuming {run_dir}: {len(rows_done)} of {len(keys)} fits done", flush=True)
    calls = {(i, s): (system.name, args.bracket, cfg, i, s, args.energy, args.save, args.walls, coords, str(row_files[i, s]))
             for i, s in keys if (i, s) not in rows_done}

    def progress(key, row):
        print(f"instance {key[0]} seed {key[1]}: eps_traj {row['eps_traj']:.2e}, eps_field (data region) "
              f"{row['eps_field_data']:.2e}, {row['evaluations']} evaluations, {row['fit_s']:.0f} s", flush=True)

    done = rows_done | run_jobs(fit_one, calls, jobs=args.jobs, report=progress)
    rows = [done[key] for key in keys]
    wall = time.time() - start
    text = report(system, args.bracket, cfg, args.preset, rows, wall, command_line(prog, argv), args.energy, args.walls,
                  coords, resumed=len(rows_done))
    stem = result_stem(f"fit_{system.name}" + (f"_{args.bracket}" if system.is_generic and args.bracket != "mixed" else "")
                       + (f"_{args.energy}" if args.energy != "mlp" else "") + ("_walls" if args.walls else "")
                       + ("_fc" + "-".join(map(str, coords)) if coords is not None else ""), args,
                       "" if args.preset == "full" else f"_{args.preset}")
    write_results(out, stem, text, {"rows": rows, "wall_time_s": wall}, {"args": vars(args), "config": cfg})
    print(text)
    return {"rows": rows, "wall_time_s": wall}


if __name__ == "__main__":
    main()
