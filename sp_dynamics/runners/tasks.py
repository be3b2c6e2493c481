"""The user-facing commands on a user's own data: ``systems``, ``meta-train``, ``adapt``,
``evaluate`` and ``fit``.

    sp-dynamics meta-train --system dno --method svd --preset quick --out runs/dno-svd
    sp-dynamics adapt runs/dno-svd --data new.npz --shots 50 --out runs/dno-svd/adapted
    sp-dynamics evaluate runs/dno-svd --latents runs/dno-svd/adapted --data new.npz
    sp-dynamics fit --data one_system.npz --model generic --out runs/one

Data files are ``.npz`` (``t``, ``x`` of shape (instances, trajectories, T, n), optional ``dx``,
``params``) or ``.csv`` (see :func:`sp_dynamics.load_trajectories`); without ``dx`` the
derivatives are estimated from the states (``--derivatives``). Each of ``adapt``, ``evaluate``
and ``fit`` prints one JSON line of metrics.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import torch

from ..config import apply_overrides, config_dict
from ..data import load_trajectories, make_family_dataset
from ..derivatives import DERIVATIVE_METHODS
from ..io import atomic_save, atomic_write_text, safe_load
from ..meta.methods import LATENT_METHODS, AdaptConfig, LatentAdapter
from ..meta.training import load_run
from ..metrics import eps_traj
from ..registry import get_system, list_systems
from .common import Parser, UsageError

__all__ = ["systems_main", "meta_train_main", "adapt_main", "evaluate_main", "fit_main"]


def _print_json(payload: dict) -> None:
    print(json.dumps(payload, default=float))


def systems_main(argv: list[str] | None = None) -> None:
    p = Parser(prog="sp-dynamics systems", description="List the registered systems.")
    p.add_argument("--json", action="store_true", help="one JSON line instead of a table")
    args = p.parse_args(argv)
    rows = []
    for name in list_systems():
        s = get_system(name)
        rows.append({"name": name, "kind": s.kind, "dim": s.dim, "params": dict(zip(s.param_names, s.param_box))})
    if args.json:
        _print_json({"systems": rows})
        return
    for r in rows:
        box = ", ".join(f"{k} in [{lo:g}, {hi:g}]" for k, (lo, hi) in r["params"].items())
        print(f"{r['name']:16s} {r['kind']:12s} n = {r['dim']}   {box}")


def meta_train_main(argv: list[str] | None = None) -> None:
    """Meta-train one modulation method and save the run in the library's model format."""
    from .benchmark import PRESETS, config_for, latent_model, train_data

    p = Parser(prog="sp-dynamics meta-train", description=meta_train_main.__doc__)
    p.add_argument("--system", required=True, help="a registered system (or one given by --plugin)")
    p.add_argument("--method", default="svd", choices=LATENT_METHODS)
    p.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    p.add_argument("--data", default=None, help="train on the instances of this .npz/.csv file instead of the "
                                                "system's protocol-v1 training instances")
    p.add_argument("--derivatives", default="smoothing_spline", choices=DERIVATIVE_METHODS,
                   help="how --data derivatives are estimated when the file has none")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", required=True, help="run folder (resumes if a checkpoint is there)")
    args = p.parse_args(argv)
    system = get_system(args.system)
    cfg = apply_overrides(config_for(system.name, args.preset), args.overrides)
    if args.data:
        data = load_trajectories(args.data, derivatives=args.derivatives, system=system.name)
        data = dataclasses.replace(data, config=dataclasses.replace(data.config, n_train=data.config.n_instances))
        if data.dim != system.dim:
            raise UsageError(f"{args.data}: states have {data.dim} coordinates, system {system.name!r} has {system.dim}")
    else:
        data = make_family_dataset(system.name, seed=0, **cfg.dataset)
    x, dx = train_data(data, cfg)
    meta = dataclasses.replace(cfg.meta, seed=args.seed,
                               tasks_per_batch=min(cfg.meta.tasks_per_batch, x.shape[0]),
                               points_per_task=min(cfg.meta.points_per_task, x.shape[1]))
    torch.manual_seed(args.seed)
    model = latent_model(args.method, system, cfg, x, dx).to(x.dtype)
    out = Path(args.out)
    from ..meta.distributed import end_job, from_environment
    from ..meta.training import meta_train

    start = time.time()
    # under torchrun (WORLD_SIZE > 1) meta_train shards the instances over the processes
    latents, log = meta_train(model, x, dx, config=meta, run_dir=out)
    shard = from_environment()  # the job meta_train ran in (a single process outside torchrun)
    world = shard.world
    if shard.is_main:
        atomic_write_text(json.dumps({"system": system.name, "method": args.method, "preset": args.preset,
                                      "overrides": args.overrides, "data": args.data, "seed": args.seed,
                                      "processes": world, "benchmark_config": config_dict(cfg)}, indent=1),
                          out / "run.json")
        _print_json({"run": str(out), "systems": int(x.shape[0]), "final_loss": log[-1]["loss"] if log else None,
                     "processes": world, "seconds": round(time.time() - start, 1)})
    end_job(shard)  # under torchrun: wait for rank 0's files, then exit without gloo's teardown


def _support(data, shots: int | None, seed: int):
    """K-shot support sets (I, K, n) from every instance of a dataset (all pairs if shots is None)."""
    I = data.x.shape[0]
    if shots is None:
        return data.x.reshape(I, -1, data.dim), data.dx.reshape(I, -1, data.dim)
    available = data.x.shape[1] * data.x.shape[2]
    if not 1 <= shots <= available:
        raise UsageError(f"--shots must be in [1, {available}] for this data file, got {shots}")
    g = torch.Generator().manual_seed(seed)
    pairs = [data.sample_shots(i, shots, g) for i in range(I)]
    return torch.stack([a for a, _ in pairs]), torch.stack([b for _, b in pairs])


def _scores(fields, data) -> dict:
    """eps_traj (rollouts from the file's initial states), the relative derivative error on the
    file's pairs and, for GENERIC models, the structure along the rollouts."""
    from ..meta.evaluation import safe_rollout, structure_rates

    out = {"eps_traj": [], "eps_derivative": []}
    generic = hasattr(fields[0], "entropy")
    if generic:
        out.update(max_abs_dEdt=[], min_dSdt=[])
    for f, i in zip(fields, range(data.x.shape[0])):
        x, dx = data.x[i].reshape(-1, data.dim), data.dx[i].reshape(-1, data.dim)
        with torch.no_grad():
            err = (f(0.0, x) - dx).norm() / dx.norm()
        out["eps_derivative"].append(float(err))
        try:
            pred = safe_rollout(f, data.x[i, :, 0], data.t)
            out["eps_traj"].append(float(eps_traj(pred, data.x[i]).mean()))
            if generic:
                dE, dS = structure_rates(f, pred)
                out["max_abs_dEdt"].append(dE)
                out["min_dSdt"].append(dS)
        except Exception:  # a field too stiff to roll out
            out["eps_traj"].append(float("nan"))
    summary = {"eps_traj": sum(out["eps_traj"]) / len(out["eps_traj"]),
               "eps_derivative": sum(out["eps_derivative"]) / len(out["eps_derivative"])}
    if generic and out["max_abs_dEdt"]:
        summary.update(max_abs_dEdt=max(out["max_abs_dEdt"]), min_dSdt=min(out["min_dSdt"]))
    summary["per_instance_eps_traj"] = out["eps_traj"]
    return summary


def _data_for_run(path: str, model, derivatives: str):
    data = load_trajectories(path, derivatives=derivatives)
    if data.dim != model.dim:
        raise UsageError(f"{path}: states have {data.dim} coordinates, the trained model takes {model.dim}")
    return data


def _check_instance(i: int, data, path: str) -> None:
    if not 0 <= i < data.x.shape[0]:
        raise UsageError(f"--instance must be in [0, {data.x.shape[0]}) for {path}")


def adapt_main(argv: list[str] | None = None) -> None:
    """Adapt a finished meta-training run to the systems in a data file (one latent each)."""
    p = Parser(prog="sp-dynamics adapt", description=adapt_main.__doc__)
    p.add_argument("run", help="a run folder written by sp-dynamics meta-train (or the benchmark)")
    p.add_argument("--data", required=True, help=".npz or .csv trajectories of the new system(s)")
    p.add_argument("--shots", type=int, default=50, help="(x, dx) pairs per system used for adaptation")
    p.add_argument("--solver", default="gauss_newton", choices=("adam", "gauss_newton", "lstsq"),
                   help="lstsq: one exact solve, for a model linear in the latent (the head modulation)")
    p.add_argument("--steps", type=int, default=500, help="Adam steps (--solver adam)")
    p.add_argument("--derivatives", default="smoothing_spline", choices=DERIVATIVE_METHODS)
    p.add_argument("--seed", type=int, default=0, help="seeds the choice of shots")
    p.add_argument("--out", default=None, help="folder for the adapted latents (default RUN/adapted)")
    args = p.parse_args(argv)
    model, latents = load_run(args.run)
    data = _data_for_run(args.data, model, args.derivatives)
    xs, dxs = _support(data, args.shots, args.seed)
    adapter = LatentAdapter(model, latents, AdaptConfig(solver=args.solver, steps=args.steps))
    start = time.time()
    z = adapter.adapt_latents(xs, dxs)
    seconds = time.time() - start
    out = Path(args.out) if args.out else Path(args.run) / "adapted"
    out.mkdir(parents=True, exist_ok=True)
    atomic_save({"latents": z.detach().cpu()}, out / "latents.pt")
    atomic_write_text(json.dumps({"run": str(args.run), "data": args.data, "shots": args.shots,
                                  "solver": args.solver}, indent=1), out / "adapt.json")
    fields = [_cond(model, zi) for zi in z]
    _print_json({"adapted": str(out), "instances": int(z.shape[0]), "shots": args.shots, "solver": args.solver,
                 "adapt_seconds": round(seconds, 2), **_scores(fields, data)})


def _cond(model, z):
    import copy

    return copy.deepcopy(model).double().condition(z.double())


def evaluate_main(argv: list[str] | None = None) -> None:
    """Score a run on a data file: with --latents (from sp-dynamics adapt) as adapted, otherwise
    after adapting on every pair of the file. A folder written by ``sp-dynamics fit`` (one
    model, no latents) is scored as it is on one instance of the file (--instance)."""
    p = Parser(prog="sp-dynamics evaluate", description=evaluate_main.__doc__)
    p.add_argument("run")
    p.add_argument("--data", required=True)
    p.add_argument("--latents", default=None, help="folder written by sp-dynamics adapt")
    p.add_argument("--instance", type=int, default=0, help="the file's instance a single fitted model is scored on")
    p.add_argument("--derivatives", default="smoothing_spline", choices=DERIVATIVE_METHODS)
    args = p.parse_args(argv)
    if (Path(args.run) / "model.json").exists():  # one fitted model (sp-dynamics fit --out)
        from ..serialization import load

        model = load(args.run)
        data = _data_for_run(args.data, model, args.derivatives)
        _check_instance(args.instance, data, args.data)
        _print_json({"model": args.run, "instance": args.instance, **_scores([model], _one(data, args.instance))})
        return
    model, latents = load_run(args.run)
    data = _data_for_run(args.data, model, args.derivatives)
    if args.latents:
        z = safe_load(Path(args.latents) / "latents.pt", "adapted latents")["latents"]
        if z.shape[0] != data.x.shape[0]:
            raise UsageError(f"{args.latents} holds {z.shape[0]} adapted latents, {args.data} has "
                             f"{data.x.shape[0]} instances")
    else:
        xs, dxs = _support(data, None, 0)
        z = LatentAdapter(model, latents, AdaptConfig(solver="gauss_newton")).adapt_latents(xs, dxs)
    _print_json({"instances": int(z.shape[0]), **_scores([_cond(model, zi) for zi in z], data)})


def fit_main(argv: list[str] | None = None) -> None:
    """Fit one structure-preserving model to one system's trajectories (sp_dynamics.fit)."""
    from .. import FitConfig, GENERICNet, HamiltonianNN, fit
    from ..serialization import save

    p = Parser(prog="sp-dynamics fit", description=fit_main.__doc__)
    p.add_argument("--data", required=True)
    p.add_argument("--instance", type=int, default=0, help="which instance of the file to fit")
    p.add_argument("--model", default="generic", choices=("hnn", "generic"))
    p.add_argument("--bracket", default="mixed", choices=("mixed", "projection", "basis", "soft"))
    p.add_argument("--friction", default="mlp", choices=("mlp", "mlp_gradient", "power", "power_gradient"),
                   help="mixed bracket's friction: an MLP of x, an MLP of grad E (the runners' gas model), a power "
                        "law of x, or a power law of grad E (MixedBracket friction_law / friction_input)")
    p.add_argument("--friction-coords", type=int, nargs="+", default=None, metavar="I",
                   help="the components of its input the mixed bracket's friction network sees (MixedBracket "
                        "friction_coords; with --friction mlp_gradient on the gas containers, 2 3: the temperatures). Default: all")
    p.add_argument("--separable", type=int, default=0, metavar="D",
                   help="energy K(p) + U(q, s) with D (q, p) pairs first in the state (0: one MLP; "
                        "--model hnn: any D > 0 means H = T(p) + V(q))")
    p.add_argument("--split-potential", action="store_true",
                   help="with --separable, U(q, s) = sum_k U_k(q, s_k): one network per coordinate after (q, p)")
    p.add_argument("--positive-potential", action="store_true",
                   help="with --separable, each potential is exp of its network (positive; the gas containers' "
                        "internal energies are exp of a linear function of S_i and the log-volume)")
    p.add_argument("--wall", dest="walls", action="append", default=[], metavar="C:LO:HI",
                   help="coordinate C stays in the open interval (LO, HI): the learned energy also sees the "
                        "log-distances to both walls (GENERICNet walls=; e.g. --wall 0:0:2 for the gas piston); repeatable")
    p.add_argument("--loss", default="derivatives", choices=("derivatives", "implicit_midpoint", "discrete_gradient"),
                   help="derivative matching (given or estimated dx) or a trajectory loss on the states alone")
    p.add_argument("--derivatives", default="smoothing_spline", choices=DERIVATIVE_METHODS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="FitConfig settings, e.g. --set max_iter=1000")
    p.add_argument("--out", required=True, help="folder for the fitted model (sp_dynamics.load reads it)")
    args = p.parse_args(argv)
    data = load_trajectories(args.data, derivatives=args.derivatives)
    _check_instance(args.instance, data, args.data)
    cfg = apply_overrides(FitConfig(seed=args.seed), args.overrides)
    torch.manual_seed(args.seed)
    if not 0 <= args.separable <= data.dim // 2:
        raise UsageError(f"--separable must be in [0, {data.dim // 2}] for states of dimension {data.dim}")
    for flag in ("split_potential", "positive_potential"):
        if getattr(args, flag) and not (args.separable and args.model == "generic"):
            raise UsageError(f"--{flag.replace('_', '-')} needs --model generic and --separable D")
    if args.model == "hnn":
        if args.walls:
            raise UsageError("--wall needs --model generic (HamiltonianNN takes no wall inputs)")
        if args.friction_coords is not None:
            raise UsageError("--friction-coords needs --model generic (HamiltonianNN has no friction)")
        if data.dim % 2:
            raise UsageError(f"--model hnn needs an even state dimension (q, p), the file has {data.dim}")
        model = HamiltonianNN(data.dim, separable=bool(args.separable)).double()
    else:
        kwargs = {}
        if args.friction != "mlp":
            if args.bracket != "mixed":
                raise UsageError(f"--friction {args.friction} needs --bracket mixed")
            kwargs = dict(friction_law=args.friction.removesuffix("_gradient"),
                          friction_input="gradient" if args.friction.endswith("_gradient") else "state")
        if args.friction_coords is not None:
            if args.bracket != "mixed":
                raise UsageError("--friction-coords needs --bracket mixed")
            kwargs["friction_coords"] = tuple(args.friction_coords)
        try:
            model = GENERICNet(data.dim, bracket=args.bracket, separable=args.separable,
                               split_potential=args.split_potential, positive_potential=args.positive_potential,
                               walls=_parse_walls(args.walls), **kwargs).double()
        except ValueError as exc:  # walls outside the state, twice, on a momentum of a separable energy, ...
            raise UsageError(str(exc)) from None
    if args.loss == "derivatives":
        result = fit(model, *data.pairs(args.instance), config=cfg)
    else:
        raw = load_trajectories(args.data, derivatives="spline")  # the sampled states as they are
        result = fit(model, raw.x[args.instance], t=raw.t, config=dataclasses.replace(cfg, method=args.loss))
    save(model, args.out, extra={"data": args.data, "instance": args.instance, "loss": args.loss})
    _print_json({"model": args.out, "final_loss": result.final_loss, "evaluations": result.evaluations,
                 "stopped": result.stopped, "seconds": round(result.seconds, 1), **_scores([model], _one(data, args.instance))})


def _parse_walls(specs: list[str]) -> list[tuple[int, float, float]]:
    """``["0:0:2", ...]`` -> ``[(0, 0.0, 2.0), ...]`` (the syntax only: ``GENERICNet`` checks the
    values against the state, and ``fit_main`` turns its ``ValueError`` into a usage error)."""
    walls = []
    for spec in specs:
        try:
            c, lo, hi = spec.split(":")
            walls.append((int(c), float(lo), float(hi)))
        except ValueError:
            raise UsageError(f"--wall {spec!r}: expected C:LO:HI (coordinate index, lower and upper wall), e.g. 0:0:2") from None
    return walls


def _one(data, i: int):
    return dataclasses.replace(data, x=data.x[i:i + 1], dx=data.dx[i:i + 1], params=data.params[i:i + 1])
