"""Scoring adapted models on a family's test instances (protocol v1, ``experiments/PROTOCOL.md``).

:func:`evaluate_fields` takes one adapted ``(t, x)`` field per test instance and returns the
protocol's errors -- eps_field on the 50 x 50 grid and on the data region, eps_traj of dopri5
rollouts, SSIM of the |f| images -- and, for GENERIC systems, the structure of each model's own
E and S along its rollouts (max |dE/dt|, min dS/dt) and the error of the entropy produced by t_end.

A field too stiff to roll out (more than :data:`MAX_ROLLOUT_STEPS` dopri5 steps) or one that
leaves the state domain is reported as NaN with a warning naming the instance, never a stall or a
crash: the protocol asks for divergence to be reported as it happens.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import Tensor, nn

from ..metrics import data_region_states, eps_field, eps_traj, field_ssim, rollout
from ..nn import gradient
from .maml import _sub, hnn_field

__all__ = ["FunctionalField", "MAX_ROLLOUT_STEPS", "safe_rollout", "structure_rates", "valid_prefix", "data_region",
           "held_out_trajectories", "entropy_production_errors", "evaluate_fields", "metric_names"]

MAX_ROLLOUT_STEPS = 2000  # dopri5 steps per rollout; a smooth learned pendulum field needs a few hundred


class FunctionalField(nn.Module):
    """A network at one task's parameters as a ``(t, x)`` field: an HNN (``field=hnn_field``, the
    network is the energy MLP) or a GENERIC network (``field=generic_field``), which also exposes
    its energy and entropy. Used for the adapted MAML/ANIL/Reptile/Scratch models."""

    def __init__(self, net: nn.Module, params: dict[str, Tensor], field=hnn_field):
        super().__init__()
        self.net, self.params, self.field = net, params, field
        self.dim = next(v for k, v in params.items() if k.endswith("weight")).shape[-1] \
            if field is hnn_field else getattr(net, "dim", None)

    def forward(self, t, x: Tensor) -> Tensor:
        return self.field(self.net, self.params, x.reshape(-1, x.shape[-1])).reshape(x.shape)

    def energy(self, x: Tensor) -> Tensor:
        if self.field is hnn_field:
            return torch.func.functional_call(self.net, self.params, (x,)).squeeze(-1)
        return torch.func.functional_call(self.net.energy_net, _sub(self.params, "energy_net."), (x,))

    def entropy(self, x: Tensor) -> Tensor:
        return torch.func.functional_call(self.net.entropy_net, _sub(self.params, "entropy_net."), (x,))


def safe_rollout(f, x0: Tensor, t: Tensor) -> Tensor:
    """A protocol rollout (dopri5, rtol 1e-7, atol 1e-9) capped at :data:`MAX_ROLLOUT_STEPS`."""
    return rollout(f, x0, t, options={"max_num_steps": MAX_ROLLOUT_STEPS})


def structure_rates(f, states: Tensor) -> tuple[float, float]:
    """max |dE/dt| and min dS/dt of a GENERIC model's own E and S at the given states (..., n)."""
    x = states.reshape(-1, states.shape[-1]).detach()
    with torch.no_grad():
        v = f(0.0, x)
    dE, dS = gradient(f.energy, x).detach(), gradient(f.entropy, x).detach()
    return float((dE * v).sum(-1).abs().max()), float((dS * v).sum(-1).min())


def valid_prefix(system, states: Tensor) -> int:
    """How many leading states of a rollout (T, n) are finite and inside the system's state domain
    (a learned gas_containers model can push the piston out of (0, 2), where E and S are undefined)."""
    for k in range(states.shape[0]):
        try:
            system.check_state(states[k:k + 1])
        except ValueError:
            return k
    return states.shape[0]


def data_region(system, data, grid: Tensor, instance: int) -> Tensor:
    """The field grid's points within two grid spacings (in the (q, p) plane) of one instance's
    true trajectory states: where that system moves. The protocol's grid reaches beyond (for a
    light, short pendulum most of it is never visited), so the tables also show eps_field on this
    part alone. For GENERIC systems each point takes the entropies of its nearest trajectory
    state (:func:`sp_dynamics.metrics.data_region_states`): the grid's own S = 0 plane is met by
    the data only at t = 0."""
    spacing = float((grid[:, 0].max() - grid[:, 0].min()) / (round(len(grid) ** 0.5) - 1))
    return data_region_states(grid, data.x[instance], 2 * spacing, tuple(range(2 * system.n_dof)))


HELD_OUT_SEED = 2_000_003  # + instance: a generator stream apart from the datasets' (seed, seed + 1_000_003)


@torch.no_grad()
def held_out_trajectories(system, data, instance: int, n_traj: int | None = None) -> Tensor:
    """Fresh true trajectories (J, T, n) of one instance of ``data``: new initial states from the
    system's own initial-state distribution (generator seed ``HELD_OUT_SEED + instance``), on the
    data's times, integrated at the data's tolerances. A model fitted to the instance never saw
    them, so the field error on their states and the rollout error from their initial states
    measure generalisation to new motions of the same system, where the data region's grid
    points (:func:`data_region`) also measure extrapolation off the trajectories."""
    g = torch.Generator().manual_seed(HELD_OUT_SEED + instance)
    mu = data.params[instance]
    x0 = system.sample_initial_states(mu, n_traj or data.x.shape[1], g)
    system.check_state(x0)
    true = system.dynamics(mu)
    return rollout(true, x0, data.t, rtol=data.config.rtol, atol=data.config.atol,
                   options={"norm": lambda e: e.abs().max()})


def entropy_production_errors(system, mu: Tensor, pred: Tensor, true: Tensor) -> Tensor:
    """Per trajectory (J,), ``|dS_pred - dS_true| / |dS_true|``: the entropy produced by t_end (the
    system's own S at the end minus at the start) along the prediction (J, T, n) and along the
    truth. NaN for a trajectory whose prediction left the state domain at any time, where the
    true S is undefined (a learned gas_containers model can push the piston out of (0, 2));
    the other trajectories keep their errors."""
    out = torch.full((pred.shape[0],), float("nan"), dtype=torch.float64)
    stayed = [j for j in range(pred.shape[0]) if valid_prefix(system, pred[j]) == pred.shape[1]]
    if stayed:
        p, t = pred[stayed], true[stayed]
        produced = system.entropy(mu, p[:, -1]) - system.entropy(mu, p[:, 0])
        reference = system.entropy(mu, t[:, -1]) - system.entropy(mu, t[:, 0])
        out[stayed] = ((produced - reference).abs() / reference.abs()).double()
    return out


def metric_names(system) -> tuple[str, ...]:
    """The keys :func:`evaluate_fields` returns for ``system``."""
    return ("eps_field", "eps_field_data", "eps_traj", "ssim") + (
        ("max_abs_dEdt", "min_dSdt", "entropy_error", "left_domain") if system.is_generic else ())


def evaluate_fields(fields, system, data, instances=None) -> dict:
    """Protocol metrics of adapted fields, one per instance (default ``data.test_ids``), averaged
    over the instances (structure columns: the worst case). All NaN for an empty ``fields``
    (a method that diverged). For GENERIC systems ``entropy_error`` is the mean over the test
    trajectories whose rollout stayed in the state domain (:func:`entropy_production_errors`) and
    ``left_domain`` the share of test trajectories whose rollout left it or failed."""
    keys = metric_names(system)
    instances = list(data.test_ids if instances is None else instances)
    if not fields:
        return {k: float("nan") for k in keys}
    if len(fields) != len(instances):
        raise ValueError(f"need one field per instance: {len(fields)} fields for {len(instances)} instances")
    grid = system.field_grid(50)
    rows = {k: [] for k in keys}
    for f, i in zip(fields, instances):
        true = system.dynamics(data.params[i])
        rows["eps_field"].append(eps_field(f, true, grid))
        rows["eps_field_data"].append(eps_field(f, true, data_region(system, data, grid, i)))
        rows["ssim"].append(field_ssim(f, true, grid, 50))
        # one value per instance and metric whatever fails: NaN for what could not be computed
        # (NaN entropy errors count as trajectories that left the domain, below)
        traj, dE, dS, errors = math.nan, math.nan, math.nan, [math.nan] * data.x.shape[1]
        try:
            pred = safe_rollout(f, data.x[i, :, 0], data.t)
            traj = float(eps_traj(pred, data.x[i]).mean())
            if system.is_generic:
                dE, dS = structure_rates(f, pred)
                errors = entropy_production_errors(system, data.params[i], pred, data.x[i]).tolist()
        except Exception as exc:  # a diverging or very stiff learned field: report, don't crash
            warnings.warn(f"rollout or its scoring failed on test instance {i} ({type(exc).__name__}: "
                          f"{str(exc)[:80]}); {'eps_traj' if math.isnan(traj) else 'its structure columns'} = NaN",
                          RuntimeWarning, stacklevel=2)
        rows["eps_traj"].append(traj)
        if system.is_generic:
            rows["max_abs_dEdt"].append(dE)
            rows["min_dSdt"].append(dS)
            rows["entropy_error"].extend(errors)
    out = {k: float(np.mean(rows[k])) for k in ("eps_field", "eps_field_data", "eps_traj", "ssim")}
    if system.is_generic:
        out.update(max_abs_dEdt=float(np.max(rows["max_abs_dEdt"])), min_dSdt=float(np.min(rows["min_dSdt"])),
                   entropy_error=_mean_finite(rows["entropy_error"]),
                   left_domain=float(np.mean(~np.isfinite(rows["entropy_error"]))))
    return out


def _mean_finite(values) -> float:
    """Mean of the finite entries; NaN when there are none."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")
