"""Protocol-v1 meta-learning benchmark on one system family (``sp-dynamics benchmark``).

    sp-dynamics benchmark --system pendulum --preset quick                        # the main job
    sp-dynamics benchmark --system dno --preset paper --methods svd mr ro fw shift maml anil reptile scratch --jobs 2

(in a checkout also ``python -m experiments.meta_benchmark ...``, which writes to
``experiments/results``). Meta-trains each method on the 70 training instances, adapts it to
each of the 10 test instances from K shots (modulation methods: latent auto-decoding from the
mean training latent; MAML/ANIL/Reptile: gradient steps; Scratch: a fresh network on the shots)
and reports eps_field, eps_field on the data region, eps_traj and SSIM as mean +- std over seeds
(each seed: mean over test instances); on GENERIC systems also max |dE/dt| and min dS/dt of each
model's own E and S along its rollouts and the error of the entropy produced by t_end.
``--jobs 2`` runs two (method, seed) pairs at a time in worker processes. ``--set KEY=VALUE``
overrides any setting of the preset (:class:`BenchConfig`, type-checked), e.g. ``--set
meta.iterations=5000 --set adapt.solver=gauss_newton``; run folders are named by a hash of the
training settings, result files by ``--tag`` (default: a hash of the overrides), and the full
configuration is written to ``<stem>.config.json``. Protocol: ``experiments/PROTOCOL.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..config import apply_overrides, config_dict, config_hash, with_defaults
from ..data import make_family_dataset
from ..fitting import FitConfig
from ..meta import GradientMetaConfig, MetaConfig
from ..meta.evaluation import evaluate_fields
from ..meta.maml import generic_field, hnn_field
from ..meta.methods import (GRADIENT_METHODS, LATENT_METHODS, AdaptConfig, train_gradient, train_latent,
                            train_scratch_adapter)
from ..models import GENERICNet, LatentGENERICNet, LatentHamiltonianNN
from ..modulation import LINEAR_IN_LATENT
from ..nn import MLP
from ..registry import get_system
from .common import (Parser, UsageError, cell, command_line, default_out, generic_model_kwargs, machine_line,
                     run_jobs, set_threads, result_stem, write_results)
from .figures import energy_figure, portrait_figure

MODULATION = LATENT_METHODS
GRADIENT = GRADIENT_METHODS + ("scratch",)
TARGETS = ("exact", "midpoint", "spline", "smoothing_spline")


@dataclass(frozen=True)
class BenchConfig:
    """Everything one benchmark run depends on (``--set`` reaches every field)."""

    meta: MetaConfig = MetaConfig()
    grad: GradientMetaConfig = GradientMetaConfig()
    adapt: AdaptConfig = AdaptConfig()
    rank: int = 5
    latent_dim: int = 8
    shots: int = 50
    grad_adapt_steps: int = 10
    scratch_steps: int = 500
    seeds: tuple[int, ...] = (0, 1, 2)
    dataset: dict = field(default_factory=dict)  # overrides of the protocol-v1 dataset
    energy_scale: float | str = 1.0  # "auto": mean |x| * mean |dx/dt| of the training data (Hamiltonian models)
    dtype: str = "float64"  # training and adaptation dtype; evaluation is always float64
    # What the methods learn from (evaluation is always against the clean trajectories):
    # noise_std on the states (and on exact derivatives), and targets "exact" (the analytic
    # derivatives) or derivatives estimated from the states alone (sp_dynamics.estimate_derivatives:
    # "midpoint" = the implicit-midpoint trajectory loss, "spline", "smoothing_spline").
    noise_std: float = 0.0
    targets: str = "exact"
    # GENERIC latent models: let the latent scale the entropy (LatentGENERICNet(entropy_gain=True)),
    # so a family whose dissipation rate varies can reach it through z (PROTOCOL, "Gas containers:
    # meta-learning").
    entropy_gain: bool = False
    # GENERIC latent models: start the shared base from a single fit (sp_dynamics.fit with the
    # settings ``warm_start_fit``) of the first training instance, copied in by
    # LatentGENERICNet.load_base; replaces meta.restarts (PROTOCOL, "Gas containers: meta-learning").
    warm_start: bool = False
    warm_start_fit: FitConfig = FitConfig(starts=3)

    def validate(self) -> None:
        if not (self.energy_scale == "auto" or (isinstance(self.energy_scale, (int, float)) and self.energy_scale > 0)):
            raise ValueError(f"energy_scale must be 'auto' or a positive number, got {self.energy_scale!r}")
        if self.noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {self.noise_std}")
        if self.targets not in TARGETS:
            raise ValueError(f"targets must be one of {TARGETS}, got {self.targets!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")
        for name in ("shots", "latent_dim", "rank"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("grad_adapt_steps", "scratch_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.seeds:
            raise ValueError("seeds must name at least one seed")
        if self.warm_start and self.meta.restarts > 1:
            raise ValueError("warm_start replaces the meta-training restarts (they would start from random weights): "
                             f"set meta.restarts=1, got {self.meta.restarts}")
        self.warm_start_fit.validate()


PRESETS = {
    "smoke": BenchConfig(meta=MetaConfig(iterations=3, tasks_per_batch=4, points_per_task=32, checkpoint_every=10**9),
                         grad=GradientMetaConfig(iterations=2, tasks_per_batch=4, support_points=16, query_points=16),
                         adapt=AdaptConfig(steps=3), shots=10, grad_adapt_steps=1, scratch_steps=3, seeds=(0,),
                         dataset=dict(n_instances=6, n_train=4, n_traj=2, n_points=21)),
    "quick": BenchConfig(meta=MetaConfig(iterations=300, checkpoint_every=100), grad=GradientMetaConfig(iterations=100),
                         adapt=AdaptConfig(steps=300), energy_scale="auto", scratch_steps=300, seeds=(0,)),
    # 3000 cosine-decayed iterations in float32: all methods x 3 seeds of one Hamiltonian system
    # fit in 60 min on 2 cores with --jobs 2 (PROTOCOL.md, "Paper preset")
    "paper": BenchConfig(meta=MetaConfig(iterations=3000, checkpoint_every=250, lr_schedule="cosine"),
                         grad=GradientMetaConfig(iterations=2000), energy_scale="auto", dtype="float32"),
}

RANK_BY_SYSTEM = {"dno": 3}  # the paper: SVD(3) on DNO, SVD(5) / MR(5) on the Hamiltonian systems

# The paper preset on GENERIC families adds the full-batch L-BFGS refinement of meta_train, three
# restarts of the Adam phase, and adapts latents by Gauss-Newton: the Adam phase alone stalls
# there (DNO SVD(3): training loss 7e-3 relative, eps_traj 0.36 at the quick preset), and one
# paper-preset seed in three started in a basin without dissipation; on the pendulum the
# refinement did not help (seed 0: data-region eps_field 0.0105 against 0.0063 without).
# PROTOCOL.md, "Meta-training refinement".
GENERIC_PAPER = ("meta.refine_evals=1000", "meta.restarts=3", "meta.restart_iterations=300",
                 "adapt.solver=gauss_newton")


# The gas containers at the paper preset: from random weights the meta-trained base never fitted
# its own training systems (SVD(5) eps_traj 0.40); a base warm-started from one single fit, then
# full-batch L-BFGS only, reaches 1.1e-2 to 1.5e-2 with every modulation method (3 seeds). PROTOCOL.md,
# "Gas containers: meta-learning". Applied after GENERIC_PAPER.
PAPER_BY_SYSTEM = {"gas_containers": ("meta.iterations=0", "meta.restarts=1", "meta.refine_evals=2000",
                                      "entropy_gain=true", "warm_start=true")}


def config_for(system: str, preset: str, seeds: list[int] | None = None) -> BenchConfig:
    """The preset's settings for ``system`` (its MR/SVD rank; the GENERIC paper-preset additions,
    and the per-system ones of :data:`PAPER_BY_SYSTEM`) with optional seeds."""
    cfg = PRESETS[preset]
    cfg = dataclasses.replace(cfg, rank=RANK_BY_SYSTEM.get(system, cfg.rank))
    if preset == "paper" and get_system(system).is_generic:
        cfg = apply_overrides(cfg, GENERIC_PAPER + PAPER_BY_SYSTEM.get(system, ()))
    return dataclasses.replace(cfg, seeds=tuple(seeds)) if seeds else cfg


def shots(data, k: int, seed: int):
    """K-shot support sets (K_tasks, k, n) of every test instance, drawn with seed 10000 + seed."""
    g = torch.Generator().manual_seed(10_000 + seed)
    pairs = [data.sample_shots(i, min(k, data.x.shape[1] * data.x.shape[2]), g) for i in data.test_ids]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


def energy_scale(cfg: BenchConfig, x, dx) -> float:
    """The Hamiltonian models' fixed output scale: H ~ |grad H| |x| ~ mean |dx/dt| * mean |x|."""
    if cfg.energy_scale == "auto":
        return float(x.abs().mean() * dx.abs().mean())
    return float(cfg.energy_scale)


def latent_model(method: str, system, cfg: BenchConfig, x, dx) -> nn.Module:
    """The latent model of a modulation method for ``system``, built as the benchmark builds it."""
    n = system.dim
    rank = cfg.rank if method in ("mr", "svd") else 1
    if system.is_generic:
        return LatentGENERICNet(n, kind=method, rank=rank, latent_dim=cfg.latent_dim, entropy_gain=cfg.entropy_gain,
                                **generic_model_kwargs(system.name)).double()
    return LatentHamiltonianNN(n, kind=method, rank=rank, latent_dim=cfg.latent_dim,
                               energy_scale=energy_scale(cfg, x, dx)).double()


def run_name(method: str, seed: int, model: nn.Module) -> str:
    """Run folder of one meta-training run inside the benchmark's run directory; it names the model
    settings that are not in the ``MetaConfig`` (energy scale, dtype) as a second safeguard."""
    scale = getattr(model, "energy_scale", 1.0)
    dtype = next(model.parameters()).dtype
    return (f"{method}-seed{seed}" + (f"-escale{scale:.6g}" if scale != 1.0 else "")
            + (f"-{str(dtype).removeprefix('torch.')}" if dtype != torch.float64 else ""))


def train_data(data, cfg: BenchConfig):
    """Training states and derivatives per training system, (S, P, n), in the training dtype."""
    tr, n = data.train_ids, data.dim
    dtype = getattr(torch, cfg.dtype)
    return data.x[tr].reshape(len(tr), -1, n).to(dtype), data.dx[tr].reshape(len(tr), -1, n).to(dtype)


def latent_adapter(method: str, system, cfg: BenchConfig, x, dx, seed: int, run_dir: Path):
    """Meta-train (or load the finished run of) a modulation method on training data (S, P, n)."""
    torch.manual_seed(seed)  # the runner owns the global RNG: it seeds the initial weights
    model = latent_model(method, system, cfg, x, dx).to(x.dtype)
    folder = run_dir / run_name(method, seed, model)
    if cfg.warm_start and system.is_generic and not (folder / "checkpoint.pt").exists():
        # one single fit per (seed, data, model settings), shared by every method of the runner;
        # load_base casts the float64 fit to the model's dtype
        key = config_hash((cfg.dataset, cfg.noise_std, cfg.targets, generic_model_kwargs(system.name),
                           cfg.warm_start_fit, seed))
        model.load_base(warm_start_fit(system, x, dx, cfg.warm_start_fit, seed,
                                       run_dir.parent / f"warm-start-{system.name}-{key}"))
    meta = dataclasses.replace(cfg.meta, seed=seed)
    return train_latent(model, x, dx, config=meta, adapt=cfg.adapt, run_dir=folder)


def warm_start_fit(system, x, dx, config: FitConfig, seed: int, cache: Path | None = None) -> GENERICNet:
    """A :class:`GENERICNet` fitted to the first training system's data (x, dx: (S, P, n)) by
    :func:`sp_dynamics.fit` (``config`` with ``seed``, float64, inputs standardised over the whole
    training family, which the latent model keeps), for :meth:`LatentGENERICNet.load_base`.
    With ``cache``, a finished fit is loaded from that folder, and a new one saved there."""
    from ..fitting import fit
    from ..nn import standardize_inputs
    from ..serialization import load, save

    if cache is not None and (cache / "model.json").exists():
        return load(cache)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = GENERICNet(system.dim, **generic_model_kwargs(system.name)).double()
    standardize_inputs(net, x.double())
    t0 = time.time()
    result = fit(net, x[0].double(), dx[0].double(), config=dataclasses.replace(config, seed=seed), progress=False)
    seconds = time.time() - t0
    print(f"warm start: single fit of the first training system, data loss {result.data_loss:.2e} ({seconds:.0f} s)",
          flush=True)
    if cache is not None:
        save(net, cache, extra={"data_loss": float(result.data_loss), "seconds": seconds})
    return net


def build_adapter(method: str, system, data, cfg: BenchConfig, seed: int, run_dir: Path):
    """Meta-train ``method`` (or load its finished run) and return its adapter."""
    x, dx = train_data(data, cfg)
    dtype = x.dtype
    if method in MODULATION:
        return latent_adapter(method, system, cfg, x, dx, seed, run_dir)
    torch.manual_seed(seed)  # the runner owns the global RNG: it seeds the initial weights
    if system.is_generic:
        def make_net():
            return GENERICNet(system.dim, **generic_model_kwargs(system.name)).to(dtype)
        fn = generic_field
    else:
        # No energy scale here: with it (and the untuned inner lr 1e-2) MAML's adapted fields
        # came out so stiff that dopri5 rollouts hit the step cap (quick preset, pendulum).
        def make_net():
            return MLP(system.dim, 1, hidden=64, depth=3).to(dtype)
        fn = hnn_field
    if method == "scratch":
        fit_cfg = FitConfig(max_iter=cfg.scratch_steps, restarts=2, restart_iter=50, seed=seed)
        return train_scratch_adapter(make_net, config=fit_cfg, field=fn)
    return train_gradient(method, make_net(), x, dx, config=dataclasses.replace(cfg.grad, seed=seed),
                          adapt_steps=cfg.grad_adapt_steps, field=fn)


def adapted_fields(method: str, system, data, cfg: BenchConfig, seed: int, run_dir: Path) -> list[nn.Module]:
    """Train ``method`` on the training instances and return one adapted field per test instance
    (an empty list if meta-training diverged, which is printed)."""
    adapter = build_adapter(method, system, data, cfg, seed, run_dir)
    if getattr(adapter, "diverged", False):
        last = adapter.log[-1]
        print(f"{method} seed {seed}: meta-training diverged at iteration {last['iteration']} "
              f"(loss {last['loss']}); reported as NaN", flush=True)
        return []
    t0 = time.time()
    fields = adapter.adapt(*shots(data, cfg.shots, seed))
    ADAPT_SECONDS[(method, seed)] = time.time() - t0
    return fields


ADAPT_SECONDS: dict = {}  # (method, seed) -> wall time of the last adaptation to all test instances


def training_data(clean, cfg: BenchConfig):
    """The dataset the methods learn from: ``clean`` with the config's noise on the states (and
    exact derivatives), and derivatives estimated from the states when ``cfg.targets`` says so."""
    data = clean
    if cfg.noise_std:
        data = make_family_dataset(clean.system, seed=clean.seed, **{**cfg.dataset, "noise_std": cfg.noise_std})
    return data if cfg.targets == "exact" else data.with_estimated_derivatives(cfg.targets)


def run_one(system_name: str, method: str, seed: int, cfg: BenchConfig, run_dir: Path,
            figures: tuple[Path, Path, str] | None = None, threads: int | None = None) -> tuple[dict, float]:
    """Meta-train, adapt and evaluate one (method, seed); optionally write the two figures
    (portrait path, energy path, title prefix). Returns the metrics and the wall time. A
    top-level function, so that ``--jobs`` can run it in worker processes."""
    set_threads(threads)
    t0 = time.time()
    system = get_system(system_name)
    data = make_family_dataset(system_name, seed=0, **cfg.dataset)
    fields = adapted_fields(method, system, training_data(data, cfg), cfg, seed, run_dir)
    metrics = evaluate_fields(fields, system, data)
    metrics["adapt_seconds"] = ADAPT_SECONDS.pop((method, seed), float("nan"))
    if figures is not None and fields:
        portrait, energy, title = figures
        portrait_figure(fields, system, data, portrait, f"{title} adapted from {cfg.shots} shots (dopri5 rollouts)")
        energy_figure(fields, system, data, energy,
                      f"{title}: true energy{' and entropy' if system.is_generic else ''} along its rollouts "
                      f"({cfg.shots} shots)")
    return metrics, time.time() - t0


def stored_config_with_defaults(stored: dict) -> dict:
    """A results part's stored settings (``config_dict`` of a :class:`BenchConfig`) with every
    setting added to the code after the part was written, nested ones included, at its default:
    the part ran with that default, the behaviour before the setting existed. Used by the combine
    commands before they compare parts."""
    return with_defaults(stored, config_dict(BenchConfig()))


def training_hash(cfg: BenchConfig, system: str | None = None) -> str:
    """Hash of every setting that changes a meta-trained checkpoint (with ``system``, also its
    per-system model choices, :data:`~.common.GENERIC_MODEL`): runs that differ in any of them get
    different run folders, runs that differ only in adaptation or evaluation share one."""
    # entropy_gain and warm_start join the hash only when set, so earlier runs keep their folder names
    return config_hash((cfg.meta, cfg.grad, cfg.rank, cfg.latent_dim, cfg.energy_scale, cfg.dtype, cfg.dataset,
                        cfg.noise_std, cfg.targets) + ((model,) if (model := generic_model_kwargs(system or "")) else ())
                       + (("entropy_gain",) if cfg.entropy_gain else ())
                       + (("warm_start", cfg.warm_start_fit) if cfg.warm_start else ()))


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="sp-dynamics benchmark", description=__doc__)
    p.add_argument("--system", default="pendulum")
    p.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    p.add_argument("--methods", nargs="+", default=["svd", "fw", "maml"])
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting of the preset (repeatable), type-checked against BenchConfig, "
                        "e.g. --set meta.iterations=5000 --set adapt.solver=gauss_newton --set energy_scale=auto")
    p.add_argument("--jobs", type=int, default=1,
                   help="(method, seed) runs in parallel worker processes, each with threads / jobs torch threads")
    p.add_argument("--tag", default="", help="suffix of the result file names (default with --set: a hash of the overrides)")
    p.add_argument("--out", default=None, help="results folder (default ./results; experiments/results from a checkout)")
    return p


def main(argv: list[str] | None = None, *, default_results: str | Path | None = None,
         prog: str = "sp-dynamics benchmark") -> dict:
    args = parser().parse_args(argv)
    if args.jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {args.jobs}")
    unknown = set(args.methods) - set(MODULATION + GRADIENT)
    if unknown:
        raise UsageError(f"unknown method(s) {sorted(unknown)}; choose from {MODULATION + GRADIENT}")
    system = get_system(args.system)  # a clear error for an unknown system before any work
    cfg = apply_overrides(config_for(args.system, args.preset, args.seeds), args.overrides)
    if (cfg.entropy_gain or cfg.warm_start) and not system.is_generic:
        raise UsageError(f"entropy_gain and warm_start apply to GENERIC systems; {args.system} is not one")
    nonlinear = set(args.methods) & set(MODULATION) - set(LINEAR_IN_LATENT)
    if cfg.adapt.solver == "lstsq" and (system.is_generic or nonlinear):
        raise UsageError("adapt.solver=lstsq is exact only for a field linear in the latent: the head modulation of a "
                         f"Hamiltonian system; run the other methods without it (got {args.system}, {' '.join(args.methods)})")
    out = default_out(args.out, default_results)
    # Every training setting is in the run folder's name, so a changed setting never resumes (or
    # is refused by) a checkpoint of another experiment.
    run_dir = out / "runs" / f"meta-{args.system}-{args.preset}-{training_hash(cfg, args.system)}"
    stem = result_stem(f"meta_{args.system}_{args.preset}", args)
    training_data(make_family_dataset(args.system, seed=0, **cfg.dataset), cfg)  # cached once, before any worker
    jobs = [(m, s) for m in args.methods for s in cfg.seeds]
    out.mkdir(parents=True, exist_ok=True)
    figs = {(args.methods[0], cfg.seeds[0]): (out / f"{stem}_{args.methods[0]}.png",
                                              out / f"{stem}_{args.methods[0]}_energy.png",
                                              f"{args.system}: {args.methods[0]}")}
    start = time.time()

    def report(key, value):
        metrics, wall = value
        print(f"{key[0]:8s} seed {key[1]}  " + "  ".join(f"{k} {metrics[k]:.3e}" for k in ("eps_field", "eps_traj", "ssim"))
              + f"  ({wall:.0f} s)", flush=True)

    done = run_jobs(run_one, {key: (args.system, *key, cfg, run_dir, figs.get(key)) for key in jobs}, args.jobs, report)
    results = {}
    for method in args.methods:
        per_seed = [done[(method, s)][0] for s in cfg.seeds]
        results[method] = {k: [r[k] for r in per_seed] for k in per_seed[0]} | {
            "wall_time_s": sum(done[(method, s)][1] for s in cfg.seeds)}
    table = _table(args, cfg, results, time.time() - start, command_line(prog, argv))
    print(table)
    write_results(out, stem, table, results, {"system": args.system, "preset": args.preset, "overrides": args.overrides,
                                             "methods": args.methods, "config": config_dict(cfg)})
    return results


def _table(args, cfg: BenchConfig, results: dict, wall: float, command: str, machine: str | None = None) -> str:
    adapt = {"gauss_newton": f"{cfg.adapt.gn_steps} Gauss-Newton steps",
             "lstsq": "one exact least-squares solve (field linear in the latent)"}.get(cfg.adapt.solver,
                                                                                     f"{cfg.adapt.steps} Adam steps")
    refine = (f" + {cfg.meta.refine_evals} full-batch L-BFGS evaluations ({cfg.meta.refine_points} points per system)"
              if cfg.meta.refine_evals else "")
    if cfg.meta.restarts > 1:
        refine += f", best of {cfg.meta.restarts} initialisations after {cfg.meta.restart_iterations} iterations"
    data = ("exact derivatives" if cfg.targets == "exact" else f"derivatives estimated from the states ({cfg.targets})")
    data += (f", Gaussian noise std {cfg.noise_std:g} on the states" + (" and derivatives" if cfg.targets == "exact" else "")
             if cfg.noise_std else ", no noise")
    lines = [
        f"# Meta-learning benchmark: {args.system}, preset `{args.preset}`",
        "",
        command,
        machine or machine_line(wall, args.jobs, " (the wall time column sums a method's runs over seeds)"),
        f"- seeds {list(cfg.seeds)}; rank r = {cfg.rank} for MR/SVD; energy scale {cfg.energy_scale}; {cfg.shots} shots; "
        f"meta iterations {cfg.meta.iterations} ({cfg.meta.lr_schedule} lr, {cfg.dtype}; modulation){refine}, "
        f"{cfg.grad.iterations} (MAML/ANIL/Reptile); latent adaptation {adapt}"
        + ("" if cfg.adapt.solver == "lstsq" else f" from the {cfg.adapt.init} latent"),
        f"- training data: {data}; evaluation against the clean trajectories",
        "- SSIM: sp_dynamics.metrics.ssim (Wang et al. 2004; 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03)",
        "- eps_field: the protocol's 50 x 50 grid over [-R, R]^2; eps_field (data region): the same error on the grid "
        "points within two grid spacings (in (q, p)) of the test instance's own trajectories (`data_region`); "
        "the rest of the grid is never visited by that system",
        "",
    ]
    generic = any("max_abs_dEdt" in r for r in results.values())
    if generic:
        lines += [
            "- structure: max |dE/dt| and min dS/dt of each adapted model's own E and S at the states of its dopri5 "
            "rollouts from the test initial states (worst case over test instances and seeds)",
            "- entropy error: |S(x_hat(t_end)) - S(x_hat(0)) - (S(x(t_end)) - S(x(0)))| / |S(x(t_end)) - S(x(0))| with "
            "the system's true S, the entropy produced by t_end along the rollout against the truth (mean over "
            "the test trajectories whose rollout stayed in the state domain, where S is defined; in brackets the "
            "share that left it or failed, when any did); for GENERIC systems the data region carries each grid "
            "point's entropies from its nearest trajectory state",
            "",
            "| method | eps_field | eps_field (data region) | eps_traj | entropy error | SSIM | max abs dE/dt | min dS/dt "
            "| adaptation (s) | wall time (s) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
    else:
        lines += ["| method | eps_field | eps_field (data region) | eps_traj | SSIM | adaptation (s) | wall time (s) |",
                  "|---|---|---|---|---|---|---|"]
    import numpy as np

    for m, r in results.items():
        row = f"| {m} | {cell(r['eps_field'])} | {cell(r['eps_field_data'])} | {cell(r['eps_traj'])} |"
        if generic:
            left = np.mean(r["left_domain"])
            row += f" {cell(r['entropy_error'])}" + (f" ({left:.0%} left)" if left > 0 else "") + " |"
        row += f" {cell(r['ssim'])} |"
        if generic:
            row += f" {np.max(r['max_abs_dEdt']):.1e} | {np.min(r['min_dSdt']):.1e} |"  # NaN propagates
        lines.append(row + f" {np.mean(r.get('adapt_seconds', [float('nan')])):.3g} | {r['wall_time_s']:.0f} |")
    return "\n".join(lines + [""])


if __name__ == "__main__":
    main(sys.argv[1:])
