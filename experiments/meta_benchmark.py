"""Protocol-v1 meta-learning benchmark on one system family (issue 3).

    python -m experiments.meta_benchmark --system pendulum --preset quick            # main job
    python -m experiments.meta_benchmark --system pendulum --preset paper --methods svd fw shift ro mr maml anil reptile scratch

Meta-trains each method on the 70 training instances, adapts it to each of the 10 test
instances from K shots (modulation methods: latent auto-decoding from the mean training latent;
MAML/ANIL/Reptile: gradient steps; Scratch: a fresh network on the shots), and reports
eps_field, eps_traj and SSIM (``sp_dynamics.metrics.SSIM_IMPLEMENTATION``) as mean +- std over
seeds (each seed: mean over test instances). Writes a Markdown table, results.json and a phase
portrait figure under ``experiments/results/`` (``--out`` to change). Protocol:
``experiments/PROTOCOL.md``. On GENERIC systems the gradient baselines meta-learn a
``GENERICNet`` (projection bracket) through ``sp_dynamics.meta.maml.generic_field``, and every
method also reports max |dE/dt| and min dS/dt of its own learned E and S along its rollouts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
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
from sp_dynamics import GENERICNet, LatentGENERICNet, LatentHamiltonianNN, get_system, make_family_dataset
from sp_dynamics.io import atomic_write_text
from sp_dynamics.meta import GradientMetaConfig, MetaConfig, adapt_all, adapt_latent, meta_train
from sp_dynamics.meta.baselines import last_layer, train_maml, train_reptile, train_scratch
from sp_dynamics.meta.maml import _sub, generic_field, hnn_field
from sp_dynamics.metrics import SSIM_IMPLEMENTATION, eps_field, eps_traj, field_ssim, rollout
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
    grad_adapt_steps: int = 10
    scratch_steps: int = 500
    seeds: tuple[int, ...] = (0, 1, 2)
    dataset: dict = field(default_factory=dict)  # overrides of the protocol-v1 dataset
    energy_scale: float | str = 1.0  # "auto": mean |x| * mean |dx/dt| of the training data (Hamiltonian models)


PRESETS = {
    "smoke": BenchConfig(meta=MetaConfig(iterations=3, checkpoint_every=10**9),
                         grad=GradientMetaConfig(iterations=2, support_points=16, query_points=16),
                         shots=10, adapt_steps=3, grad_adapt_steps=1, scratch_steps=3, seeds=(0,),
                         dataset=dict(n_instances=6, n_train=4, n_traj=2, n_points=21)),
    "quick": BenchConfig(meta=MetaConfig(iterations=300, checkpoint_every=100), grad=GradientMetaConfig(iterations=100),
                         energy_scale="auto",
                         adapt_steps=300, scratch_steps=300, seeds=(0,)),
    "paper": BenchConfig(meta=MetaConfig(iterations=5000, checkpoint_every=250), grad=GradientMetaConfig(iterations=2000),
                         energy_scale="auto"),
}


RANK_BY_SYSTEM = {"dno": 3}  # the paper: SVD(3) on DNO, SVD(5) / MR(5) on the Hamiltonian systems


def config_for(system: str, preset: str, seeds: list[int] | None = None) -> BenchConfig:
    """The preset's settings for ``system`` (its MR/SVD rank) with optional seeds."""
    cfg = PRESETS[preset]
    cfg = dataclasses.replace(cfg, rank=RANK_BY_SYSTEM.get(system, cfg.rank))
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
    """Run folder of one meta-training run; it names every model setting that the checkpoint's
    config check cannot see (the energy scale is a constant, not a parameter)."""
    scale = getattr(model, "energy_scale", 1.0)
    return f"{method}-seed{seed}" + (f"-escale{scale:.6g}" if scale != 1.0 else "")


def adapted_fields(method: str, system, data, cfg: BenchConfig, seed: int, run_dir: Path) -> list[nn.Module]:
    """Train ``method`` on the training instances and return one adapted field per test instance."""
    n = system.dim
    tr = data.train_ids
    x, dx = data.x[tr].reshape(len(tr), -1, n), data.dx[tr].reshape(len(tr), -1, n)
    xs, dxs = _shots(data, cfg.shots, seed)
    torch.manual_seed(seed)
    if method in MODULATION:
        model = latent_model(method, system, cfg, x, dx)
        Z, _ = meta_train(model, x, dx, dataclasses.replace(cfg.meta, seed=seed), run_dir=run_dir / run_name(method, seed, model))
        z, _ = adapt_latent(model, xs, dxs, Z.mean(0), steps=cfg.adapt_steps, lr=cfg.adapt_lr)
        return [model.condition(z[i]) for i in range(len(z))]
    if system.is_generic:
        def make_net():
            return GENERICNet(n, bracket="projection").double()
        field = generic_field
    else:
        # No energy scale here: with it (and the untuned inner lr 1e-2) MAML's adapted fields
        # came out so stiff that dopri5 rollouts hit the step cap (quick preset, pendulum).
        def make_net():
            return MLP(n, 1, hidden=64, depth=3).double()
        field = hnn_field
    net = make_net()
    gcfg = dataclasses.replace(cfg.grad, seed=seed)
    if method == "scratch":
        params, _ = train_scratch(make_net, xs, dxs, steps=cfg.scratch_steps, lr=1e-3, seed=seed, field=field)
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
    return [_FunctionalField(net, {k: v[i] for k, v in params.items()}, field) for i in range(len(data.test_ids))]


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


def evaluate(fields, system, data) -> dict:
    keys = ("eps_field", "eps_traj", "ssim") + (("max_abs_dEdt", "min_dSdt") if system.is_generic else ())
    if not fields:
        return {k: float("nan") for k in keys}
    grid = system.field_grid(50)
    ef, et, ss, dE, dS = [], [], [], [], []
    for f, i in zip(fields, data.test_ids):
        true = system.dynamics(data.params[i])
        ef.append(eps_field(f, true, grid))
        ss.append(field_ssim(f, true, grid, 50))
        try:
            pred = _rollout(f, data.x[i, :, 0], data.t)
            et.append(float(eps_traj(pred, data.x[i]).mean()))
            if system.is_generic:
                rates = structure_rates(f, pred)
                dE.append(rates[0])
                dS.append(rates[1])
        except Exception as exc:  # a diverging or very stiff learned field: report, don't crash
            print(f"  rollout failed on test instance {i} ({type(exc).__name__}: {str(exc)[:80]}); eps_traj = NaN",
                  flush=True)
            et.append(float("nan"))
            dE.append(float("nan"))
            dS.append(float("nan"))
    out = {"eps_field": float(np.mean(ef)), "eps_traj": float(np.mean(et)), "ssim": float(np.mean(ss))}
    if system.is_generic:
        out.update(max_abs_dEdt=float(np.max(dE)), min_dSdt=float(np.min(dS)))
    return out


def figure(fields, system, data, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.3))
    for ax, (f, i) in zip(axes, list(zip(fields, data.test_ids))[:3]):
        pred = _rollout(f, data.x[i, :, 0], data.t)
        for j in range(data.x.shape[1]):
            ax.plot(data.x[i, j, :, 0], data.x[i, j, :, 1], "k-", lw=1.2, label="true" if j == 0 else None)
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
        pred = _rollout(f, data.x[i, :, 0], data.t)
        quantities = [("energy E", system.energy)] + ([("entropy S", system.entropy)] if system.is_generic else [])
        for row, (name, fn) in enumerate(quantities):
            ax = axes[row, col]
            for j in range(min(3, data.x.shape[1])):
                ax.plot(data.t, fn(mu, data.x[i, j]), "k-", lw=1.2, label="true trajectory" if j == 0 else None)
                ax.plot(data.t, fn(mu, pred[j]), "r--", lw=1, label="adapted model" if j == 0 else None)
            ax.set_xlabel("t")
            ax.set_ylabel(f"true {name}")
            ax.set_title(f"test instance {i}", fontsize=9)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--system", default="pendulum")
    parser.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    parser.add_argument("--methods", nargs="+", default=["svd", "fw", "maml"])
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--energy-scale", default=None,
                        help="'auto' or a number: fixed output scale of the latent Hamiltonian models (default: the preset's)")
    parser.add_argument("--tag", default="", help="suffix of the result file names (e.g. an ablation's name)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    if args.energy_scale not in (None, "auto"):
        try:
            if not float(args.energy_scale) > 0:
                raise ValueError
        except ValueError:
            parser.error(f"--energy-scale must be 'auto' or a positive number, got {args.energy_scale!r}")
    unknown = set(args.methods) - set(MODULATION + GRADIENT)
    if unknown:
        parser.error(f"unknown method(s) {sorted(unknown)}; choose from {MODULATION + GRADIENT}")
    system = get_system(args.system)
    cfg = config_for(args.system, args.preset, args.seeds)
    if args.energy_scale is not None:
        cfg = dataclasses.replace(cfg, energy_scale=args.energy_scale if args.energy_scale == "auto"
                                  else float(args.energy_scale))
    out = Path(args.out)
    run_dir = out / "runs" / f"meta-{args.system}-{args.preset}"
    stem = f"meta_{args.system}_{args.preset}" + (f"_{args.tag}" if args.tag else "")
    data = make_family_dataset(args.system, seed=0, **cfg.dataset)
    results, start = {}, time.time()
    for method in args.methods:
        per_seed = []
        t0 = time.time()
        for seed in cfg.seeds:
            fields = adapted_fields(method, system, data, cfg, seed, run_dir)
            per_seed.append(evaluate(fields, system, data))
            if method == args.methods[0] and seed == cfg.seeds[0] and fields:
                figure(fields, system, data, out / f"{stem}_{method}.png",
                       f"{args.system}: {method} adapted from {cfg.shots} shots (dopri5 rollouts)")
                energy_figure(fields, system, data, out / f"{stem}_{method}_energy.png",
                              f"{args.system}: true energy{' and entropy' if system.is_generic else ''} along "
                              f"{method} rollouts ({cfg.shots} shots)")
        results[method] = {k: [r[k] for r in per_seed] for k in per_seed[0]} | {"wall_time_s": time.time() - t0}
        print(f"{method:8s} " + "  ".join(
            f"{k} {np.mean(results[method][k]):.3e}" for k in ("eps_field", "eps_traj", "ssim")), flush=True)
    table = _table(args, cfg, results, time.time() - start)
    print(table)
    atomic_write_text(table, out / f"{stem}.md")
    atomic_write_text(json.dumps(results, indent=2), out / f"{stem}.json")
    return results


def _table(args, cfg, results, wall) -> str:
    def cell(v):
        v = np.asarray(v, dtype=float)
        return "NaN" if np.isnan(v).any() else f"{v.mean():.3e} ± {v.std():.1e}"

    lines = [
        f"# Meta-learning benchmark: {args.system}, preset `{args.preset}`",
        "",
        f"- command: `python -m experiments.meta_benchmark {' '.join(sys.argv[1:]) if args is not None else ''}`",
        f"- machine: {platform.machine()}, {torch.get_num_threads()} torch threads; torch {torch.__version__}; "
        f"date {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; total wall time {wall:.0f} s",
        f"- seeds {list(cfg.seeds)}; rank r = {cfg.rank} for MR/SVD; energy scale {cfg.energy_scale}; {cfg.shots} shots; meta iterations {cfg.meta.iterations} (modulation), "
        f"{cfg.grad.iterations} (MAML/ANIL/Reptile); latent adaptation {cfg.adapt_steps} Adam steps from the mean latent",
        f"- SSIM: {SSIM_IMPLEMENTATION}",
        "",
    ]
    generic = any("max_abs_dEdt" in r for r in results.values())
    if generic:
        lines += [
            "- structure: max |dE/dt| and min dS/dt of each adapted model's own E and S at the states of its dopri5 "
            "rollouts from the test initial states (worst case over test instances and seeds)",
            "",
            "| method | eps_field | eps_traj | SSIM | max abs dE/dt | min dS/dt | wall time (s) |",
            "|---|---|---|---|---|---|---|",
        ]
    else:
        lines += ["| method | eps_field | eps_traj | SSIM | wall time (s) |", "|---|---|---|---|---|"]
    for m, r in results.items():
        row = f"| {m} | {cell(r['eps_field'])} | {cell(r['eps_traj'])} | {cell(r['ssim'])} |"
        if generic:
            worst_dE, worst_dS = np.max(r["max_abs_dEdt"]), np.min(r["min_dSdt"])  # NaN propagates
            row += f" {worst_dE:.1e} | {worst_dS:.1e} |"
        lines.append(row + f" {r['wall_time_s']:.0f} |")
    return "\n".join(lines + [""])


if __name__ == "__main__":
    main(sys.argv[1:])
