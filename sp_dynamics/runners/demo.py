"""A small example: learn one pendulum and one DNO instance with ``sp_dynamics.fit``.

Trains a Hamiltonian network on pendulum instance 0 and a GENERIC network (the default exact
mixed bracket) on DNO instance 0 of the protocol-v1 datasets by derivative matching, then prints
trajectory and energy errors and writes figures plus the data behind them to a run folder.

    sp-dynamics demo                    # full run (~2-3 min on 2 CPU cores)
    sp-dynamics demo --steps 60         # a quick smoke run

(``python -m experiments.demo`` in a checkout).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from ..data import make_family_dataset
from ..fitting import FitConfig, fit
from ..io import atomic_savez, atomic_write_text
from ..metrics import energy_drift, entropy_increments, eps_field, eps_traj, rollout
from ..models import GENERICNet, HamiltonianNN
from ..registry import get_system
from .common import Parser, UsageError, pyplot


@dataclass(frozen=True)
class DemoConfig:
    steps: int = 3000  # L-BFGS evaluations of fit's main run
    hidden: int = 64
    depth: int = 3
    seed: int = 0
    instance: int = 0
    out_root: str = "runs"
    dg_step: float = 0.01


def run_instance(system_name: str, model: torch.nn.Module, cfg: DemoConfig) -> dict:
    system = get_system(system_name)
    data = make_family_dataset(system_name, seed=cfg.seed)
    i = cfg.instance
    x, dx = data.pairs(i)
    fit_cfg = FitConfig(max_iter=cfg.steps, restart_iter=min(100, cfg.steps), chunk=min(50, cfg.steps), seed=cfg.seed)
    result = fit(model, x, dx, config=fit_cfg, progress=None)
    losses = result.losses
    true = system.dynamics(data.params[i])
    x_true = data.x[i]  # (J, T, n)
    x_pred = rollout(model, x_true[:, 0], data.t)
    # structure-preserving rollout of the learned model (discrete gradient: exact energy); the
    # substep keeps the implicit step's fixed-point iteration contracting for trained networks
    x_dg = rollout(model, x_true[:, 0], data.t, method="discrete_gradient", step_size=cfg.dg_step)
    out = {
        "system": system_name,
        "params": dict(zip(system.param_names, data.params[i].tolist())),
        "final_loss": losses[-1],
        "eps_field": eps_field(model, true, system.field_grid(50)),
        "eps_traj": float(eps_traj(x_pred, x_true).mean()),
        # absolute: the DNO's energy can be near zero at t = 0, making a relative error meaningless
        "true_energy_error_of_prediction": float(energy_drift(true.energy, x_pred, relative=False).max()),
        "learned_energy_drift_discrete_gradient": float(energy_drift(model.energy, x_dg).max()),
    }
    if system.is_generic:
        out["min_learned_entropy_increment_discrete_gradient"] = float(entropy_increments(model.entropy, x_dg).min())
    arrays = {"t": data.t, "x_true": x_true, "x_pred": x_pred, "x_dg": x_dg, "loss": torch.tensor(losses)}
    with torch.no_grad():
        arrays["E_true_along_true"] = true.energy(x_true)
        arrays["E_true_along_pred"] = true.energy(x_pred)
        arrays["E_model_along_dg"] = model.energy(x_dg)
    return out, {k: v.numpy() for k, v in arrays.items()}


def plot(name: str, arrays: dict, run_dir: Path) -> list[str]:
    plt = pyplot()
    if plt is None:
        return []
    files = []
    fig, ax = plt.subplots(figsize=(5, 5))
    for j in range(arrays["x_true"].shape[0]):
        ax.plot(arrays["x_true"][j, :, 0], arrays["x_true"][j, :, 1], "k-", lw=1.5, label="true" if j == 0 else None)
        ax.plot(arrays["x_pred"][j, :, 0], arrays["x_pred"][j, :, 1], "r--", lw=1, label="learned" if j == 0 else None)
    ax.set_xlabel("q")
    ax.set_ylabel("p")
    ax.set_title(f"{name}: phase portrait, instance trajectories")
    ax.legend()
    fig.tight_layout()
    files.append(f"{name}_phase_portrait.png")
    fig.savefig(run_dir / files[-1], dpi=120)
    plt.close(fig)

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4))
    t = arrays["t"]
    for j in range(arrays["x_true"].shape[0]):
        e0 = arrays["E_true_along_true"][j, 0]
        ax.plot(t, arrays["E_true_along_true"][j] - e0, "k-", lw=1, label="true trajectory" if j == 0 else None)
        ax.plot(t, arrays["E_true_along_pred"][j] - e0, "r--", lw=1, label="learned (dopri5)" if j == 0 else None)
        e_dg = arrays["E_model_along_dg"][j]
        ax2.semilogy(t[1:], np.abs(e_dg[1:] - e_dg[0]) + 1e-18, lw=1)
    ax.set_xlabel("t")
    ax.set_ylabel("E_true(x(t)) - E_true(x(0))")
    ax.set_title(f"{name}: true energy along true and learned trajectories")
    ax.legend()
    ax2.set_xlabel("t")
    ax2.set_ylabel("|E_model(x(t)) - E_model(x(0))|")
    ax2.set_title("learned energy along its discrete-gradient rollout")
    fig.tight_layout()
    files.append(f"{name}_energy.png")
    fig.savefig(run_dir / files[-1], dpi=120)
    plt.close(fig)
    return files


def main(argv: list[str] | None = None, *, prog: str = "sp-dynamics demo") -> dict:
    parser = Parser(prog=prog, description=__doc__)
    parser.add_argument("--steps", type=int, default=DemoConfig.steps)
    parser.add_argument("--seed", type=int, default=DemoConfig.seed)
    parser.add_argument("--out-root", default=DemoConfig.out_root)
    parser.add_argument("--dg-step", type=float, default=DemoConfig.dg_step, help="discrete-gradient substep")
    args = parser.parse_args(argv)
    cfg = DemoConfig(steps=args.steps, seed=args.seed, out_root=args.out_root, dg_step=args.dg_step)
    if cfg.steps < 1:
        raise UsageError("--steps must be >= 1")
    if not cfg.dg_step > 0:
        raise UsageError("--dg-step must be positive")
    run_dir = Path(cfg.out_root) / f"demo-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(dataclasses.asdict(cfg), indent=2), run_dir / "config.json")

    start = time.time()
    results, figures = {}, []
    builders = {
        "pendulum": lambda: HamiltonianNN(2, hidden=cfg.hidden, depth=cfg.depth),
        "dno": lambda: GENERICNet(3, hidden=cfg.hidden, depth=cfg.depth),
    }
    models = {}
    for name, build in builders.items():
        torch.manual_seed(cfg.seed)  # each model's initialisation independent of the others
        model = models[name] = build().double()
        res, arrays = run_instance(name, model, cfg)
        results[name] = res
        atomic_savez(run_dir / f"{name}_arrays.npz", **arrays)
        figures += plot(name, arrays, run_dir)
    results["wall_time_s"] = time.time() - start
    atomic_write_text(json.dumps(results, indent=2), run_dir / "results.json")

    print(f"run folder: {run_dir}")
    print(f"{'system':10s} {'model':13s} {'eps_field':>10s} {'eps_traj':>10s} {'true |dE|':>10s} {'DG drift':>10s}")
    for name, model in models.items():
        r = results[name]
        print(
            f"{name:10s} {type(model).__name__:13s} {r['eps_field']:10.3e} {r['eps_traj']:10.3e} "
            f"{r['true_energy_error_of_prediction']:10.3e} {r['learned_energy_drift_discrete_gradient']:10.3e}"
        )
    if "min_learned_entropy_increment_discrete_gradient" in results["dno"]:
        print(f"dno: min entropy increment along the DG rollout: {results['dno']['min_learned_entropy_increment_discrete_gradient']:.3e}")
    print(f"figures: {', '.join(figures)}; wall time {results['wall_time_s']:.1f} s")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
