"""Training losses for one system instance: derivative matching, trajectory matching through a
structure-preserving step, and the entropy-orientation term (used by :func:`sp_dynamics.fit`,
and the last also by meta-training and latent adaptation).

Shapes: states (N, n) with derivatives (N, n); trajectories (J, T, n) with times (T,).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .integrators import FIXED_STEP_METHODS, discrete_gradient, integrate

__all__ = ["derivative_loss", "trajectory_loss", "shooting_loss", "shooting_starts", "entropy_orientation",
           "energy_consistency", "WEIGHTINGS", "RESIDUAL_METHODS", "TRAJECTORY_METHODS"]

WEIGHTINGS = ("global", "coordinate")
RESIDUAL_METHODS = ("implicit_midpoint", "discrete_gradient")
# the fixed-step integrators a trajectory loss can step with (adaptive solvers have no fixed step)
TRAJECTORY_METHODS = FIXED_STEP_METHODS


def _weights(dx: Tensor, weighting: str) -> Tensor:
    """Per-coordinate loss weights (n,) so that a loss of 1 means errors as large as the data."""
    ms = dx.reshape(-1, dx.shape[-1]).pow(2).mean(0)
    if weighting == "coordinate":
        return 1.0 / torch.where(ms > 0, ms, torch.ones_like(ms))
    total = ms.sum()
    return torch.full_like(ms, 1.0 / float(total) if total > 0 else 1.0)


def derivative_loss(model: Callable, x: Tensor, dx: Tensor, weights: Tensor | None = None) -> Tensor:
    """``sum_i w_i mean (f(x)_i - dx_i)^2`` with the weights of :class:`FitConfig` ``weighting``
    (default ``"global"``: the relative squared error ``mean |f(x) - dx|^2 / mean |dx|^2``)."""
    w = _weights(dx, "global") if weights is None else weights
    return ((model(0.0, x) - dx).pow(2).mean(0) * w).sum()


def entropy_orientation(rates: Tensor) -> Tensor:
    """``mean relu(-r)^2 / mean r^2`` of entropy rates (or increments) r along the data: 0 when
    the entropy never decreases there, 1 when it always does; independent of the entropy's scale.

    Why: a GENERIC network whose entropy decreases along the data can only fit the data by
    switching its dissipation off (``dS/dt = grad S^T M grad S >= 0`` along its own flow), and it
    cannot turn the sign around without passing ``grad S = 0``. Measured on DNO instance 76
    (``experiments/PROTOCOL.md``): without this term 3 of 8 initialisations reached a relative
    loss below 4e-3 in 100 L-BFGS evaluations, with it 7 of 8."""
    return torch.relu(-rates).pow(2).mean() / (rates.pow(2).mean() + torch.finfo(rates.dtype).tiny)


def energy_consistency(dE: Tensor, dx: Tensor) -> Tensor:
    """``mean (grad E . dx)^2 / mean sum_i (dE_i dx_i)^2`` over states (N, n): how far the
    observed velocities dx are from the energy's level sets, relative to the size of the terms
    that must cancel; 0 when E is conserved along the data, independent of E's scale.

    Why: a GENERIC model conserves its own E exactly, so for a model that fits the data the term
    is zero; but it gives the energy network a direct, linear signal. The thermal part of a
    learned E (the temperatures dE/dS_i) otherwise reaches the loss only through the small
    entropy rates, via the bracket's rows and friction (``experiments/PROTOCOL.md``, "Gas
    containers")."""
    terms = dE * dx
    return terms.sum(-1).pow(2).mean() / (terms.pow(2).sum(-1).mean() + torch.finfo(dE.dtype).tiny)


def _generic_derivative_loss(model, x: Tensor, dx: Tensor, w: Tensor, lam: float, lam_energy: float = 0.0) -> Tensor:
    """Derivative matching plus ``lam`` times :func:`entropy_orientation` and ``lam_energy``
    times :func:`energy_consistency`, sharing one gradient evaluation of E and S."""
    dE, dS = model.gradients(x)
    f = model.field_from_gradients(x, dE, dS)
    loss = ((f - dx).pow(2).mean(0) * w).sum() + lam * entropy_orientation((dS * dx).sum(-1))
    if lam_energy:
        loss = loss + lam_energy * energy_consistency(dE, dx)
    return loss


def _uniform_step(t: Tensor) -> float:
    dt = t[1:] - t[:-1]
    if not bool((dt > 0).all()):
        raise ValueError("trajectory times t must be strictly increasing")
    h = float(dt.mean())
    if float((dt - h).abs().max()) > 1e-6 * max(1.0, abs(h)):
        raise ValueError("trajectory times t must be evenly spaced (windows share one step size)")
    return h


def _residual_step(model, x0: Tensor, x1: Tensor, h: float, method: str) -> Tensor:
    """``x1 - x0 - h F``: zero exactly when one step of ``method`` maps x0 to x1.

    Implicit midpoint: ``F = f((x0 + x1) / 2)``. Discrete gradient (Gonzalez): ``F`` is the
    model's field with its gradients replaced by the discrete gradients between x0 and x1, so a
    model with zero residual conserves its energy exactly along the data and never lowers its
    entropy. Neither needs a nonlinear solve: the step is used in its residual form."""
    if method == "implicit_midpoint":
        return x1 - x0 - h * model(0.0, 0.5 * (x0 + x1))
    energy = model.energy
    dE = discrete_gradient(energy, x0, x1)
    entropy = getattr(model, "entropy", None)
    dS = discrete_gradient(entropy, x0, x1) if entropy is not None else None
    return x1 - x0 - h * model.field_from_gradients(0.5 * (x0 + x1), dE, dS)


def trajectory_loss(model, t: Tensor, x: Tensor, *, method: str = "implicit_midpoint", horizon: int = 1,
                    substeps: int = 1, weights: Tensor | None = None) -> Tensor:
    """Trajectory-matching loss of a model on sampled trajectories, no derivatives needed.

    Every window ``x[j, i : i + horizon + 1]`` is predicted from its first state by ``horizon``
    sampling intervals of ``method`` with ``substeps`` steps each; the loss is the weighted mean
    squared prediction error divided by the mean squared one-interval increment of the data, so
    it is comparable with :func:`derivative_loss` (about ``h^2 |f error|^2 / h^2 |f|^2``).

    With ``horizon = substeps = 1`` and ``method`` ``"implicit_midpoint"`` or
    ``"discrete_gradient"`` the step is used in residual form (no nonlinear solve, one field
    evaluation per window); otherwise the rollout goes through :func:`~sp_dynamics.integrate`,
    which differentiates implicit steps by the implicit function theorem. ``"leapfrog"`` (for
    separable Hamiltonian models) and ``"rk4"`` always roll out.

    Shapes: t (T,), x (J, T, n) or (T, n).
    """
    if method not in TRAJECTORY_METHODS:
        raise ValueError(f"unknown trajectory-loss method {method!r}; choose from {TRAJECTORY_METHODS}")
    if x.ndim == 2:
        x = x.unsqueeze(0)
    if x.ndim != 3 or t.ndim != 1 or x.shape[1] != t.shape[0]:
        raise ValueError(f"trajectories must be (J, T, n) with times (T,), got {tuple(x.shape)} and {tuple(t.shape)}")
    T = x.shape[1]
    if not 1 <= horizon < T:
        raise ValueError(f"horizon must be in [1, {T - 1}] for {T} sampled times, got {horizon}")
    h = _uniform_step(t)
    increments = x[:, 1:] - x[:, :-1]
    w = _weights(increments, "global") if weights is None else weights
    n = x.shape[-1]
    if horizon == 1 and substeps == 1 and method in RESIDUAL_METHODS:
        r = _residual_step(model, x[:, :-1].reshape(-1, n), x[:, 1:].reshape(-1, n), h, method)
        return (r.pow(2).mean(0) * w).sum()
    starts = x[:, : T - horizon].reshape(-1, n)
    times = torch.arange(horizon + 1, dtype=x.dtype, device=x.device) * h
    pred = integrate(model, starts, times, method=method, step_size=h / substeps)[:, 1:]     # (W, H, n)
    target = torch.stack([x[:, k : T - horizon + k].reshape(-1, n) for k in range(1, horizon + 1)], 1)
    return ((pred - target).pow(2).mean((0, 1)) * w).sum()


def shooting_starts(T: int, horizon: int) -> list[int]:
    """Sample indices where the windows of :func:`shooting_loss` start: ``0, H, 2H, ...`` before
    the last sample, so consecutive windows share their end and start samples and every sample
    after the first is predicted once."""
    if not 1 <= horizon < T:
        raise ValueError(f"horizon must be in [1, {T - 1}] for {T} sampled times, got {horizon}")
    return list(range(0, T - 1, horizon))


def shooting_loss(model, t: Tensor, x: Tensor, starts: Tensor, *, method: str = "rk4", horizon: int = 10,
                  substeps: int = 1, weights: Tensor | None = None) -> Tensor:
    """Multiple-shooting loss with free initial states: the trajectories are cut into windows of
    ``horizon`` sampling intervals (:func:`shooting_starts`), window k of trajectory j is rolled
    out from the free state ``starts[j, k]`` instead of from its observed first state, and the loss
    compares the rollouts *and the free states* with the observations.

    Why: a window rolled out from a noisy observed state carries that noise along the whole
    window, and the model is trained to explain it. Here the initial states are fitted together
    with the model (``starts`` are parameters, initialised at the observed states), so the noise
    on a window's first sample is one residual among ``horizon + 1``. The normalisation is that
    of :func:`trajectory_loss`: weighted mean squared error over all compared samples, relative
    to the mean squared one-interval increment.

    Shapes: t (T,), x (J, T, n), starts (J, K, n) with K = ``len(shooting_starts(T, horizon))``.
    The last window may reach past the data; its missing samples are left out.
    """
    if method not in TRAJECTORY_METHODS:
        raise ValueError(f"unknown trajectory-loss method {method!r}; choose from {TRAJECTORY_METHODS}")
    if x.ndim != 3 or t.ndim != 1 or x.shape[1] != t.shape[0]:
        raise ValueError(f"trajectories must be (J, T, n) with times (T,), got {tuple(x.shape)} and {tuple(t.shape)}")
    J, T, n = x.shape
    index = shooting_starts(T, horizon)
    if starts.shape != (J, len(index), n):
        raise ValueError(f"starts must be (J, K, n) = {(J, len(index), n)} for {T} samples and horizon {horizon}, "
                         f"got {tuple(starts.shape)}")
    h = _uniform_step(t)
    w = _weights(x[:, 1:] - x[:, :-1], "global") if weights is None else weights
    times = torch.arange(horizon + 1, dtype=x.dtype, device=x.device) * h
    pred = integrate(model, starts.reshape(-1, n), times, method=method, step_size=h / substeps)   # (J K, H + 1, n)
    pred = pred.reshape(J, len(index), horizon + 1, n)
    target_index = torch.tensor(index, device=x.device)[:, None] + torch.arange(horizon + 1, device=x.device)
    valid = target_index < T                                                                     # (K, H + 1)
    target = x[:, target_index.clamp(max=T - 1)]                                                 # (J, K, H + 1, n)
    sq = ((pred - target).pow(2) * w).sum(-1)                                                    # (J, K, H + 1)
    return (sq * valid).sum() / (J * int(valid.sum()))
