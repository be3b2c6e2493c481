"""Protocol-v1 meta-learning benchmark on one system family.

    python -m experiments.meta_benchmark --system pendulum --preset quick            # main job
    python -m experiments.meta_benchmark --system pendulum --preset paper --methods svd fw shift ro mr maml anil reptile scratch --jobs 2

Meta-trains each method on the 70 training instances, adapts it to each of the 10 test
instances from K shots (modulation methods: latent auto-decoding from the mean training latent;
MAML/ANIL/Reptile: gradient steps; Scratch: a fresh network on the shots), and reports
eps_field, eps_field on the data region (``data_region``), eps_traj and SSIM
(``sp_dynamics.metrics.SSIM_IMPLEMENTATION``) as mean +- std over seeds (each seed: mean over
test instances). ``--jobs 2`` runs two (method, seed) pairs at a time in worker processes.
``--set KEY=VALUE`` overrides any setting of the preset (``BenchConfig``, type-checked), e.g.
``--set meta.iterations=5000 --set meta.lr_schedule=constant``; run folders are named by a hash
of the training settings, and result files by ``--tag`` (default: a hash of the overrides), with
the full configuration in ``<stem>.config.json``.
Writes a Markdown table, results.json and phase-portrait and energy figures under
``experiments/results/`` (``--out`` to change). Protocol:
``experiments/PROTOCOL.md``. On GENERIC systems the gradient baselines meta-learn a
``GENERICNet`` (its default mixed bracket) through ``sp_dynamics.meta.maml.generic_field``, and every
method also reports max |dE/dt| and min dS/dt of its own learned E and S along its rollouts.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch import nn

import systems  # noqa: F401  (registers the built-in systems)
from sp_dynamics import FitConfig, GENERICNet, LatentGENERICNet, LatentHamiltonianNN, get_system, make_family_dataset
from sp_dynamics.io import atomic_write_text
from sp_dynamics.config import apply_overrides, config_dict, config_hash
from sp_dynamics.meta import GradientMetaConfig, MetaConfig, adapt_all, adapt_latent, adapt_latent_gauss_newton, meta_train
from sp_dynamics.meta.baselines import last_layer, train_maml, train_reptile, train_scratch
from sp_dynamics.meta.maml import _sub, generic_field, hnn_field
from sp_dynamics.metrics import SSIM_IMPLEMENTATION, data_region_states, eps_field, eps_traj, field_ssim, rollout
from sp_dynamics.nn import MLP, gradient

MODULATION = ("fw", "shift", "ro", "mr", "svd")
GRADIENT = ("maml", "anil", "reptile", "scratch")
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class BenchConfig:
    meta: MetaConfig = MetaConfig()
    grad: GradientMetaConfig = GradientMetaConfig()
    rank: int = 5
    latent_dim: int = 8
    shots: int = 50
    adapt_steps: int = 500
    adapt_lr: float = 1e-2
    adapt_method: str = "adam"  # latent auto-decoding: "adam" (adapt_steps at adapt_lr) or "gauss_newton"
    gn_steps: int = 10  # Gauss-Newton steps (adapt_method="gauss_newton")
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

    def validate(self) -> None:
        if not (self.energy_scale == "auto" or (isinstance(self.energy_scale, (int, float)) and self.energy_scale > 0)):
            raise ValueError(f"energy_scale must be 'auto' or a positive number, got {self.energy_scale!r}")
        if self.noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {self.noise_std}")
        if self.targets not in TARGETS:
            raise ValueError(f"targets must be one of {TARGETS}, got {self.targets!r}")
        if self.adapt_method not in ADAPT_METHODS:
            raise ValueError(f"adapt_method must be one of {ADAPT_METHODS}, got {self.adapt_method!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")
        for name in ("shots", "latent_dim", "rank"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("adapt_steps", "gn_steps", "grad_adapt_steps", "scratch_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.seeds:
            raise ValueError("seeds must name at least one seed")


ADAPT_METHODS = ("adam", "gauss_newton")
TARGETS = ("exact", "midpoint", "spline", "smoothing_spline")


PRESETS = {
    "smoke": BenchConfig(meta=MetaConfig(iterations=3, checkpoint_every=10**9),
                         grad=GradientMetaConfig(iterations=2, support_points=16, query_points=16),
                         shots=10, adapt_steps=3, grad_adapt_steps=1, scratch_steps=3, seeds=(0,),
                         dataset=dict(n_instances=6, n_train=4, n_traj=2, n_points=21)),
    "quick": BenchConfig(meta=MetaConfig(iterations=300, checkpoint_every=100), grad=GradientMetaConfig(iterations=100),
                         energy_scale="auto",
                         adapt_steps=300, scratch_steps=300, seeds=(0,)),
    # 3000 cosine-decayed iterations in float32: all methods x 3 seeds of one system fit in 60 min
    # on 2 cores with --jobs 2 (PROTOCOL.md, "Paper preset")
    "paper": BenchConfig(meta=MetaConfig(iterations=3000, checkpoint_every=250, lr_schedule="cosine"),
                         grad=GradientMetaConfig(iterations=2000), energy_scale="auto", dtype="float32"),
}


RANK_BY_SYSTEM = {"dno": 3}  # the paper: SVD(3) on DNO, SVD(5) / MR(5) on the Hamiltonian systems

# The paper preset on GENERIC families adds the full-batch L-BFGS refinement of meta_train and
# adapts latents by Gauss-Newton: the Adam phase alone stalls there (DNO SVD(3): training loss
# 7e-3 relative, eps_traj 0.36 at the quick preset), while on the pendulum the refinement did not
# help (seed 0: data-region eps_field 0.0105 against 0.0063 without). PROTOCOL.md, "Meta-training
# refinement".
GENERIC_PAPER = ("meta.refine_evals=1000", "adapt_method=gauss_newton")


def config_for(system: str, preset: str, seeds: list[int] | None = None) -> BenchConfig:
    """The preset's settings for ``system`` (its MR/SVD rank; the GENERIC paper-preset additions)
    with optional seeds."""
    cfg = PRESETS[preset]
    cfg = dataclasses.replace(cfg, rank=RANK_BY_SYSTEM.get(system, cfg.rank))
    if preset == "paper" and get_system(system).is_generic:
        cfg = apply_overrides(cfg, GENERIC_PAPER)
    return dataclasses.replace(cfg, seeds=tuple(seeds)) if seeds else cfg


class _FunctionalField(nn.Module):
    """A network at one task's parameters as a (t, x) field: an HNN (energy MLP) or, with
    ``field=generic_field``, a GENERICNet, which also exposes its energy and entropy."""

    def __init__(self, net: nn.Module, params: dict, field=hnn_field):
        super().__init__()
        self.net, self.params, self.field = net, params, field

    def forward(self, t, x):
        return self.field(self.net, self.params, x.reshape(-1, x.shape[-1])).reshape(x.shape)

    def energy(self, x):
        return torch.func.functional_call(self.net.energy_net, _sub(self.params, "energy_net."), (x,))

    def entropy(self, x):
        return torch.func.functional_call(self.net.entropy_net, _sub(self.params, "entropy_net."), (x,))


def _shots(data, k, seed):
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
        return LatentGENERICNet(n, kind=method, rank=rank, latent_dim=cfg.latent_dim).double()
    return LatentHamiltonianNN(n, kind=method, rank=rank, latent_dim=cfg.latent_dim,
                               energy_scale=energy_scale(cfg, x, dx)).double()


def run_name(method: str, seed: int, model: nn.Module) -> str:
    """Run folder of one meta-training run; it names every model setting that is not in the
    ``MetaConfig`` (the energy scale, the training dtype), so that runs differing only there keep
    separate checkpoints instead of failing ``meta_train``'s model-signature check."""
    scale = getattr(model, "energy_scale", 1.0)
    dtype = next(model.parameters()).dtype
    return (f"{method}-seed{seed}" + (f"-escale{scale:.6g}" if scale != 1.0 else "")
            + (f"-{str(dtype).removeprefix('torch.')}" if dtype != torch.float64 else ""))


def train_latent(method: str, system, cfg: BenchConfig, x, dx, seed: int, run_dir: Path) -> tuple[nn.Module, torch.Tensor]:
    """Meta-train (or load the finished run of) a modulation method on training data (S, P, n)
    in ``cfg.dtype``; returns the model and its training latents."""
    dtype = getattr(torch, cfg.dtype)
    x, dx = x.to(dtype), dx.to(dtype)
    torch.manual_seed(seed)
    model = latent_model(method, system, cfg, x, dx).to(dtype)
    Z, _ = meta_train(model, x, dx, dataclasses.replace(cfg.meta, seed=seed), run_dir=run_dir / run_name(method, seed, model))
    return model, Z


def adapt_fields(model: nn.Module, Z, xs, dxs, cfg: BenchConfig, z0=None) -> list[nn.Module]:
    """Latent auto-decoding on support sets (K, N, n) from ``z0`` (default: the mean training
    latent); returns one float64 field per task (the trained model itself is left as it is)."""
    dtype = next(model.parameters()).dtype
    start = Z.mean(0) if z0 is None else z0
    if cfg.adapt_method == "gauss_newton":  # float64 inside, whatever the model's dtype
        z, _ = adapt_latent_gauss_newton(model, xs, dxs, start, steps=cfg.gn_steps)
    else:
        z, _ = adapt_latent(model, xs.to(dtype), dxs.to(dtype), start, steps=cfg.adapt_steps, lr=cfg.adapt_lr,
                            entropy_penalty=cfg.meta.entropy_penalty)
    model = copy.deepcopy(model).double()  # evaluation (rollouts at rtol 1e-7) in float64
    return [model.condition(z[i].double()) for i in range(len(z))]


def adapted_fields(method: str, system, data, cfg: BenchConfig, seed: int, run_dir: Path) -> list[nn.Module]:
    """Train ``method`` on the training instances and return one adapted field per test instance."""
    n = system.dim
    tr = data.train_ids
    dtype = getattr(torch, cfg.dtype)
    x, dx = data.x[tr].reshape(len(tr), -1, n).to(dtype), data.dx[tr].reshape(len(tr), -1, n).to(dtype)
    xs, dxs = (s.to(dtype) for s in _shots(data, cfg.shots, seed))
    if method in MODULATION:
        model, Z = train_latent(method, system, cfg, x, dx, seed, run_dir)
        return adapt_fields(model, Z, xs, dxs, cfg)
    torch.manual_seed(seed)
    if system.is_generic:
        def make_net():
            return GENERICNet(n).to(dtype)
        field = generic_field
    else:
        # No energy scale here: with it (and the untuned inner lr 1e-2) MAML's adapted fields
        # came out so stiff that dopri5 rollouts hit the step cap (quick preset, pendulum).
        def make_net():
            return MLP(n, 1, hidden=64, depth=3).to(dtype)
        field = hnn_field
    net = make_net()
    gcfg = dataclasses.replace(cfg.grad, seed=seed)
    if method == "scratch":
        fit_cfg = FitConfig(max_iter=cfg.scratch_steps, restarts=2, restart_iter=50, seed=seed)
        params, _ = train_scratch(make_net, xs, dxs, config=fit_cfg, field=field)
    else:
        if method == "reptile":
            meta_params, log = train_reptile(net, x, dx, gcfg, field=field)
        else:
            meta_params, log = train_maml(net, x, dx, gcfg, anil=(method == "anil"), field=field)
        if log and log[-1]["diverged"]:
            print(f"{method} seed {seed}: meta-training diverged at iteration {log[-1]['iteration']} "
                  f"(loss {log[-1]['loss']}); reported as NaN", flush=True)
            return []  # reported as NaN
        trainable = last_layer(net) if method == "anil" else None
        params = adapt_all(net, meta_params, xs, dxs, gcfg.inner_lr, cfg.grad_adapt_steps, trainable, field)
    net = net.double()
    return [_FunctionalField(net, {k: v[i].detach().double() for k, v in params.items()}, field)
            for i in range(len(data.test_ids))]


def structure_rates(f, states) -> tuple[float, float]:
    """max |dE/dt| and min dS/dt of a GENERIC model's own E and S at the given states (..., n)."""
    x = states.reshape(-1, states.shape[-1]).detach()
    with torch.no_grad():
        v = f(0.0, x)
    dE, dS = gradient(f.energy, x).detach(), gradient(f.entropy, x).detach()
    return float((dE * v).sum(-1).abs().max()), float((dS * v).sum(-1).min())


MAX_ROLLOUT_STEPS = 2000  # dopri5 steps per rollout; a stiffer learned field is reported as NaN


def _rollout(f, x0, t):
    return rollout(f, x0, t, options={"max_num_steps": MAX_ROLLOUT_STEPS})


def _figure_rollout(f, x0, t, instance):
    """A rollout for a figure, or None (with the reason printed) when the learned field is too stiff."""
    try:
        return _rollout(f, x0, t)
    except Exception as exc:  # the same failures evaluate() reports as eps_traj = NaN
        print(f"  figure: rollout failed on test instance {instance} ({type(exc).__name__}); curve left out", flush=True)
        return None


def valid_prefix(system, states) -> int:
    """How many leading states of a rollout (T, n) are finite and inside the system's state domain
    (a learned gas_containers model can push the piston out of (0, 2), where E and S are undefined)."""
    for k in range(states.shape[0]):
        try:
            system.check_state(states[k:k + 1])
        except ValueError:
            return k
    return states.shape[0]


def data_region(system, data, grid, instance: int):
    """The field grid's points within two grid spacings (in the (q, p) plane) of one instance's
    true trajectory states: where that system moves. The protocol's grid reaches beyond (for a
    light, short pendulum most of it is never visited), so the tables also show eps_field on this
    part alone. For GENERIC systems each point takes the entropies of its nearest trajectory
    state (``sp_dynamics.metrics.data_region_states``): the grid's own S = 0 plane is met by the
    data only at t = 0."""
    spacing = float((grid[:, 0].max() - grid[:, 0].min()) / (round(len(grid) ** 0.5) - 1))
    return data_region_states(grid, data.x[instance], 2 * spacing, tuple(range(2 * system.n_dof)))


def entropy_production_error(system, mu, pred, true) -> float:
    """Mean over trajectories of ``|dS_pred - dS_true| / |dS_true|``, the entropy produced by t_end
    (the system's own S at the end minus at the start) along the prediction and along the truth;
    NaN when the prediction left the state domain."""
    try:
        produced = system.entropy(mu, pred[:, -1]) - system.entropy(mu, pred[:, 0])
    except ValueError:
        return float("nan")
    reference = system.entropy(mu, true[:, -1]) - system.entropy(mu, true[:, 0])
    return float(((produced - reference).abs() / reference.abs()).mean())


def evaluate(fields, system, data) -> dict:
    keys = ("eps_field", "eps_field_data", "eps_traj", "ssim") + (
        ("max_abs_dEdt", "min_dSdt", "entropy_error") if system.is_generic else ())
    if not fields:
        return {k: float("nan") for k in keys}
    grid = system.field_grid(50)
    ef, efd, et, ss, dE, dS, se = [], [], [], [], [], [], []
    for f, i in zip(fields, data.test_ids):
        true = system.dynamics(data.params[i])
        ef.append(eps_field(f, true, grid))
        efd.append(eps_field(f, true, data_region(system, data, grid, i)))
        ss.append(field_ssim(f, true, grid, 50))
        try:
            pred = _rollout(f, data.x[i, :, 0], data.t)
            et.append(float(eps_traj(pred, data.x[i]).mean()))
            if system.is_generic:
                rates = structure_rates(f, pred)
                dE.append(rates[0])
                dS.append(rates[1])
                se.append(entropy_production_error(system, data.params[i], pred, data.x[i]))
        except Exception as exc:  # a diverging or very stiff learned field: report, don't crash
            print(f"  rollout failed on test instance {i} ({type(exc).__name__}: {str(exc)[:80]}); eps_traj = NaN",
                  flush=True)
            et.append(float("nan"))
            dE.append(float("nan"))
            dS.append(float("nan"))
            se.append(float("nan"))
    out = {"eps_field": float(np.mean(ef)), "eps_field_data": float(np.mean(efd)), "eps_traj": float(np.mean(et)), "ssim": float(np.mean(ss))}
    if system.is_generic:
        out.update(max_abs_dEdt=float(np.max(dE)), min_dSdt=float(np.min(dS)), entropy_error=float(np.mean(se)))
    return out


def figure(fields, system, data, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.3))
    for ax, (f, i) in zip(axes, list(zip(fields, data.test_ids))[:3]):
        pred = _figure_rollout(f, data.x[i, :, 0], data.t, i)
        for j in range(data.x.shape[1]):
            ax.plot(data.x[i, j, :, 0], data.x[i, j, :, 1], "k-", lw=1.2, label="true" if j == 0 else None)
            if pred is not None:
                ax.plot(pred[j, :, 0], pred[j, :, 1], "r--", lw=1, label="adapted" if j == 0 else None)
        mu = ", ".join(f"{n}={v:.2f}" for n, v in zip(system.param_names, data.params[i].tolist()))
        ax.set_title(f"test instance {i} ({mu})", fontsize=9)
        ax.set_xlabel("q")
        ax.set_ylabel("p")
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def energy_figure(fields, system, data, path: Path, title: str) -> None:
    """True energy (and entropy) along the adapted models' rollouts against the true trajectories."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = 2 if system.is_generic else 1
    fig, axes = plt.subplots(rows, 3, figsize=(13, 3.6 * rows), squeeze=False)
    for col, (f, i) in enumerate(list(zip(fields, data.test_ids))[:3]):
        mu = data.params[i]
        pred = _figure_rollout(f, data.x[i, :, 0], data.t, i)
        quantities = [("energy E", system.energy)] + ([("entropy S", system.entropy)] if system.is_generic else [])
        for row, (name, fn) in enumerate(quantities):
            ax = axes[row, col]
            for j in range(min(3, data.x.shape[1])):
                ax.plot(data.t, fn(mu, data.x[i, j]), "k-", lw=1.2, label="true trajectory" if j == 0 else None)
                k = 0 if pred is None else valid_prefix(system, pred[j])
                if k:
                    ax.plot(data.t[:k], fn(mu, pred[j, :k]), "r--", lw=1, label="adapted model" if j == 0 else None)
                if pred is not None and k < len(data.t):  # the rollout left the state domain (or blew up)
                    ax.axvline(data.t[k], color="r", lw=0.6, ls=":")
            ax.set_xlabel("t")
            ax.set_ylabel(f"true {name}")
            ax.set_title(f"test instance {i}", fontsize=9)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    if threads is not None:
        torch.set_num_threads(threads)
    t0 = time.time()
    system = get_system(system_name)
    data = make_family_dataset(system_name, seed=0, **cfg.dataset)
    fields = adapted_fields(method, system, training_data(data, cfg), cfg, seed, run_dir)
    metrics = evaluate(fields, system, data)
    if figures is not None and fields:
        portrait, energy, title = figures
        figure(fields, system, data, portrait, f"{title} adapted from {cfg.shots} shots (dopri5 rollouts)")
        energy_figure(fields, system, data, energy,
                      f"{title}: true energy{' and entropy' if system.is_generic else ''} along its rollouts "
                      f"({cfg.shots} shots)")
    return metrics, time.time() - t0


def run_jobs(fn, calls: dict, jobs: int = 1, report=None) -> dict:
    """``{key: fn(*calls[key])}``, with ``jobs`` > 1 in spawned worker processes that split the
    torch threads between them (``fn`` must be a top-level function taking ``threads=``).
    ``report(key, result)`` is called as each result arrives."""
    done = {}
    if jobs == 1:
        for key, call in calls.items():
            done[key] = fn(*call)
            if report is not None:
                report(key, done[key])
        return done
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    threads = max(1, torch.get_num_threads() // jobs)
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(fn, *call, threads=threads): key for key, call in calls.items()}
        for fut in as_completed(futures):
            done[futures[fut]] = fut.result()
            if report is not None:
                report(futures[fut], done[futures[fut]])
    return done


def cell(values) -> str:
    """A table cell: mean +- std over seeds, NaN when any seed is NaN."""
    v = np.asarray(values, dtype=float)
    return "NaN" if np.isnan(v).any() else f"{v.mean():.3e} ± {v.std():.1e}"


def training_hash(cfg: BenchConfig) -> str:
    """Hash of every setting that changes a meta-trained checkpoint: runs that differ in any of them
    get different run folders, runs that differ only in adaptation or evaluation share one."""
    return config_hash((cfg.meta, cfg.grad, cfg.rank, cfg.latent_dim, cfg.energy_scale, cfg.dtype, cfg.dataset,
                        cfg.noise_std, cfg.targets))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--system", default="pendulum")
    parser.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    parser.add_argument("--methods", nargs="+", default=["svd", "fw", "maml"])
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting of the preset (repeatable), type-checked against BenchConfig, "
                             "e.g. --set meta.iterations=5000 --set meta.lr_schedule=constant --set energy_scale=auto")
    parser.add_argument("--jobs", type=int, default=1,
                        help="(method, seed) runs in parallel worker processes, each with threads / jobs torch threads")
    parser.add_argument("--tag", default="", help="suffix of the result file names (default with --set: a hash of the overrides)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    unknown = set(args.methods) - set(MODULATION + GRADIENT)
    if unknown:
        parser.error(f"unknown method(s) {sorted(unknown)}; choose from {MODULATION + GRADIENT}")
    try:
        get_system(args.system)  # a clear error for an unknown system before any work
        cfg = apply_overrides(config_for(args.system, args.preset, args.seeds), args.overrides)
    except (KeyError, ValueError) as exc:
        parser.error(str(exc).strip("'\""))
    out = Path(args.out)
    # Every training setting is in the run folder's name, so a changed setting never resumes (or
    # is refused by) a checkpoint of another experiment.
    run_dir = out / "runs" / f"meta-{args.system}-{args.preset}-{training_hash(cfg)}"
    tag = args.tag or (f"set-{config_hash(args.overrides, 6)}" if args.overrides else "")
    stem = "_".join([f"meta_{args.system}_{args.preset}"] + ([tag] if tag else []))
    training_data(make_family_dataset(args.system, seed=0, **cfg.dataset), cfg)  # cached once, before any worker
    jobs = [(m, s) for m in args.methods for s in cfg.seeds]
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
    table = _table(args, cfg, results, time.time() - start)
    print(table)
    atomic_write_text(table, out / f"{stem}.md")
    atomic_write_text(json.dumps(results, indent=2), out / f"{stem}.json")
    atomic_write_text(json.dumps({"system": args.system, "preset": args.preset, "overrides": args.overrides,
                                  "methods": args.methods, "config": config_dict(cfg)}, indent=1),
                      out / f"{stem}.config.json")
    return results


def _table(args, cfg, results, wall) -> str:
    lines = [
        f"# Meta-learning benchmark: {args.system}, preset `{args.preset}`",
        "",
        f"- command: `python -m experiments.meta_benchmark {' '.join(args.argv)}`",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads"
        f"{f' split over {args.jobs} worker processes' if args.jobs > 1 else ''}; torch {torch.__version__}; "
        f"date {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; total wall time {wall:.0f} s "
        f"(the wall time column sums a method's runs over seeds)",
        f"- seeds {list(cfg.seeds)}; rank r = {cfg.rank} for MR/SVD; energy scale {cfg.energy_scale}; {cfg.shots} shots; meta iterations {cfg.meta.iterations} "
        f"({cfg.meta.lr_schedule} lr, {cfg.dtype}; modulation)"
        + (f" + {cfg.meta.refine_evals} full-batch L-BFGS evaluations ({cfg.meta.refine_points} points per system)" if cfg.meta.refine_evals else "")
        + f", {cfg.grad.iterations} (MAML/ANIL/Reptile); latent adaptation "
        + (f"{cfg.gn_steps} Gauss-Newton steps" if cfg.adapt_method == "gauss_newton" else f"{cfg.adapt_steps} Adam steps")
        + " from the mean latent",
        f"- training data: {'exact derivatives' if cfg.targets == 'exact' else f'derivatives estimated from the states ({cfg.targets})'}"
        + (f", Gaussian noise std {cfg.noise_std:g} on the states" + (" and derivatives" if cfg.targets == "exact" else "")
           if cfg.noise_std else ", no noise") + "; evaluation against the clean trajectories",
        f"- SSIM: {SSIM_IMPLEMENTATION}",
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
            "trajectories and instances); for GENERIC systems the data region carries each grid point's entropies "
            "from its nearest trajectory state",
            "",
            "| method | eps_field | eps_field (data region) | eps_traj | entropy error | SSIM | max abs dE/dt | min dS/dt | wall time (s) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
    else:
        lines += ["| method | eps_field | eps_field (data region) | eps_traj | SSIM | wall time (s) |",
                  "|---|---|---|---|---|---|"]
    for m, r in results.items():
        row = f"| {m} | {cell(r['eps_field'])} | {cell(r['eps_field_data'])} | {cell(r['eps_traj'])} |"
        if generic:
            row += f" {cell(r['entropy_error'])} |"
        row += f" {cell(r['ssim'])} |"
        if generic:
            worst_dE, worst_dS = np.max(r["max_abs_dEdt"]), np.min(r["min_dSdt"])  # NaN propagates
            row += f" {worst_dE:.1e} | {worst_dS:.1e} |"
        lines.append(row + f" {r['wall_time_s']:.0f} |")
    return "\n".join(lines + [""])


if __name__ == "__main__":
    main(sys.argv[1:])
