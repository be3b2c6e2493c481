"""Time integration behind one entry point: :func:`integrate`.

=====================  ==========================================  =====  ================
method                 property                                    order  needs
=====================  ==========================================  =====  ================
``"leapfrog"``         symplectic, bounded energy error             2      separable (q, p)
``"implicit_midpoint"`` symplectic, symmetric, quadratic invariants 2      any field
``"discrete_gradient"`` exact discrete energy conservation;         2      ``energy`` and
                       entropy never decreases (metriplectic)              ``field_from_gradients``
``"rk4"``              classical Runge--Kutta, not structure-pres.  4      any field
``"euler"``            explicit Euler (a control)                   1      any field
``"dopri5"`` and other torchdiffeq solvers (adaptive, rtol/atol)    --     any field
=====================  ==========================================  =====  ================

Fixed-step methods take one step per output interval unless ``step_size`` is given, in which
case each interval is split into ``ceil(dt / step_size)`` equal substeps. Every method is
differentiable with autograd (implicit steps are differentiated through their converged
fixed-point iterations).

References: Hairer, Lubich, Wanner, *Geometric Numerical Integration* (leapfrog, implicit
midpoint); Gonzalez, J. Nonlinear Sci. 6 (1996) (the discrete gradient
``grad_bar f(x, y) = grad f(m) + [f(y) - f(x) - grad f(m).(y - x)] (y - x) / |y - x|^2``).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torchdiffeq
from torch import Tensor

from ._checks import check_finite, check_state
from .nn import gradient

__all__ = ["integrate", "discrete_gradient", "ConvergenceError", "FIXED_STEP_METHODS"]

VectorField = Callable[[Tensor, Tensor], Tensor]


class ConvergenceError(RuntimeError):
    """An implicit step's fixed-point iteration did not reach its tolerance."""


# ---------------------------------------------------------------------------------------------
# Single steps. Signature: step(f, t, x, h, cache, opts) -> (x_next, cache)
# ---------------------------------------------------------------------------------------------


def _euler(f, t, x, h, cache, opts):
    return x + h * f(t, x), None


def _rk4(f, t, x, h, cache, opts):
    k1 = f(t, x)
    k2 = f(t + h / 2, x + (h / 2) * k1)
    k3 = f(t + h / 2, x + (h / 2) * k2)
    k4 = f(t + h, x + h * k3)
    return x + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4), None


def _leapfrog(f, t, x, h, cache, opts):
    # Kick-drift-kick Stormer-Verlet. For a separable field dp/dt depends on q only and dq/dt
    # on p only, so evaluating the full field at mixed states is exact; the end-of-step kick is
    # reused as the next step's first kick (one field evaluation saved per step).
    d = x.shape[-1] // 2
    q, p = x[..., :d], x[..., d:]
    a = f(t, x)[..., d:] if cache is None else cache
    p_half = p + (h / 2) * a
    v = f(t + h / 2, torch.cat([q, p_half], -1))[..., :d]
    q_new = q + h * v
    a_new = f(t + h, torch.cat([q_new, p_half], -1))[..., d:]
    p_new = p_half + (h / 2) * a_new
    return torch.cat([q_new, p_new], -1), a_new


# A fixed-point iteration whose change stops shrinking while within this factor of the
# tolerance has reached its round-off floor (e.g. the discrete gradient's difference quotient
# is noisy at ~1e-13) and is accepted; anything larger is a genuine failure.
_NOISE_FLOOR_FACTOR = 100.0


def _iterate(update: Callable[[Tensor], Tensor], y: Tensor, scale: float, opts, what: str) -> Tensor:
    tol, max_iter = opts["tol"], opts["max_iter"]
    err = prev = math.inf
    for _ in range(max_iter):
        y_new = update(y)
        err = float((y_new - y).detach().abs().max())
        y = y_new
        if err <= tol * scale or (err >= prev and err <= _NOISE_FLOOR_FACTOR * tol * scale):
            return y
        if not math.isfinite(err):
            break
        prev = err
    raise ConvergenceError(
        f"{what}: fixed-point iteration did not converge in {max_iter} iterations "
        f"(last change {err:.3e} > tolerance {tol * scale:.3e}); reduce step_size or raise max_iter"
    )


def _fixed_point(G: Callable[[Tensor], Tensor], y0: Tensor, x: Tensor, opts, name: str) -> Tensor:
    """Solve ``y = G(y)`` by fixed-point iteration, differentiably.

    The iterations run without an autograd graph (fast, memory independent of their number).
    Gradients come from the implicit function theorem: the result is one differentiable
    application ``G(y*)`` whose incoming gradient ``u`` is replaced by the solution of the
    adjoint fixed point ``g = u + (dG/dy)^T g`` (as in deep equilibrium models, Bai et al. 2019).
    """
    scale = 1.0 + float(x.detach().abs().max())
    with torch.no_grad():
        y_star = _iterate(G, y0.detach(), scale, opts, name)
    if not torch.is_grad_enabled():
        return y_star
    y = G(y_star)  # re-attach: depends on x and parameters, not on the iterations
    if not y.requires_grad:
        return y
    z0 = y_star.clone().requires_grad_(True)
    G0 = G(z0)

    def vjp(g: Tensor) -> Tensor:
        (out,) = torch.autograd.grad(G0, z0, g, retain_graph=True, allow_unused=True)
        return torch.zeros_like(g) if out is None else out  # None: G does not depend on y

    def adjoint(u: Tensor | None) -> Tensor | None:
        if u is None:  # autograd passes None for outputs that received no gradient
            return None
        with torch.enable_grad():
            return _iterate(
                lambda g: vjp(g) + u,
                u,
                1.0 + float(u.detach().abs().max()),
                opts,
                f"{name} (adjoint)",
            )

    y.register_hook(adjoint)
    return y


def _implicit_midpoint(f, t, x, h, cache, opts):
    # x' = x + h f(t + h/2, (x + x')/2), solved for k = (x' - x)/h by fixed-point iteration.
    tm = t + h / 2
    k = _fixed_point(lambda k: f(tm, x + (h / 2) * k), f(t, x), x, opts, "implicit_midpoint")
    return x + h * k, None


def discrete_gradient(fn: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, fx: Tensor | None = None) -> Tensor:
    """Gonzalez discrete gradient of a scalar function between states x and y, (..., n).

    Satisfies ``grad_bar . (y - x) = fn(y) - fn(x)`` exactly (up to round-off) and equals
    ``grad fn(x)`` when ``y == x``. ``fx``: ``fn(x)`` if already known.
    """
    m = 0.5 * (x + y)
    g = gradient(fn, m)
    d = y - x
    dd = (d * d).sum(-1, keepdim=True)
    fx = fn(x) if fx is None else fx
    residual = (fn(y) - fx).unsqueeze(-1) - (g * d).sum(-1, keepdim=True)
    tiny = torch.finfo(x.dtype).tiny
    safe = dd > tiny
    coef = torch.where(safe, residual / torch.where(safe, dd, torch.ones_like(dd)), torch.zeros_like(dd))
    return g + coef * d


def _discrete_gradient_step(f, t, x, h, cache, opts):
    # y = x + h F(m, grad_bar E(x, y), grad_bar S(x, y)), F = f.field_from_gradients.
    # Hamiltonian: E(y) - E(x) = h grad_bar E^T J grad_bar E = 0. Metriplectic with brackets
    # degenerate w.r.t. the discrete gradients: E(y) = E(x), S(y) - S(x) = h dS^T M dS >= 0.
    energy = f.energy
    entropy = getattr(f, "entropy", None)
    E_x = energy(x)  # fixed during the step
    S_x = entropy(x) if entropy is not None else None

    def update(y):
        dE = discrete_gradient(energy, x, y, fx=E_x)
        dS = discrete_gradient(entropy, x, y, fx=S_x) if entropy is not None else None
        return x + h * f.field_from_gradients(0.5 * (x + y), dE, dS)

    y0 = x + h * f(t, x)
    return _fixed_point(update, y0, x, opts, "discrete_gradient"), None


_STEPS = {
    "euler": _euler,
    "rk4": _rk4,
    "leapfrog": _leapfrog,
    "implicit_midpoint": _implicit_midpoint,
    "discrete_gradient": _discrete_gradient_step,
}
FIXED_STEP_METHODS = tuple(_STEPS)
try:  # torchdiffeq keeps its solver table private; fall back to the names it has long had
    from torchdiffeq._impl.odeint import SOLVERS as _TDQ_SOLVERS
except ImportError:  # pragma: no cover
    _TDQ_SOLVERS = ("dopri8", "dopri5", "bosh3", "fehlberg2", "adaptive_heun", "midpoint", "heun3")
_ADAPTIVE = tuple(m for m in _TDQ_SOLVERS if m not in _STEPS)


def _check_separable(f, t0: float, x0: Tensor) -> None:
    """Raise if dp/dt depends on p or dq/dt on q (leapfrog would silently be wrong)."""
    d = x0.shape[-1] // 2
    with torch.no_grad():
        base = f(t0, x0)
        shift = 0.1 * (1.0 + x0.abs())
        dp = f(t0, torch.cat([x0[..., :d], x0[..., d:] + shift[..., d:]], -1))
        dq = f(t0, torch.cat([x0[..., :d] + shift[..., :d], x0[..., d:]], -1))
    scale = 1e-6 * (1.0 + base.abs().max())
    if (dp[..., d:] - base[..., d:]).abs().max() > scale or (dq[..., :d] - base[..., :d]).abs().max() > scale:
        raise ValueError(
            "leapfrog needs a separable Hamiltonian field (dq/dt a function of p only, dp/dt of q only); "
            "this field is not separable: use method='implicit_midpoint' or 'discrete_gradient'"
        )


def integrate(
    f: VectorField,
    x0: Tensor,
    t: Tensor,
    method: str = "rk4",
    *,
    step_size: float | None = None,
    rtol: float = 1e-7,
    atol: float = 1e-9,
    tol: float | None = None,
    max_iter: int = 100,
    check_separable: bool = True,
    options: dict | None = None,
) -> Tensor:
    """Integrate ``dx/dt = f(t, x)`` from ``x0`` and return the states at the times ``t``.

    Args:
        f: vector field ``(t, x) -> dx/dt`` over (..., n) states. ``"discrete_gradient"`` also
            needs ``f.energy`` (and ``f.entropy`` for metriplectic models) and
            ``f.field_from_gradients`` (all models in :mod:`sp_dynamics.models` have them).
        x0: initial states, (..., n).
        t: 1-D strictly monotone times, (T,).
        method: see the module table.
        step_size: fixed-step methods: largest substep (default: one step per interval).
        rtol, atol: tolerances of adaptive (torchdiffeq) methods.
        tol: fixed-point tolerance of implicit steps, relative to ``1 + |x|_inf``
            (default ``100 * eps`` of the dtype).
        max_iter: fixed-point iteration cap; exceeding it raises :class:`ConvergenceError`.
        check_separable: leapfrog only: verify separability at ``x0`` first.
        options: extra options for torchdiffeq.

    Returns:
        States of shape (..., T, n) (the library's one convention: trajectories, then times,
        then the state), ``out[..., 0, :] == x0``.

    Example::

        xs = integrate(model, x0, torch.linspace(0, 10, 101), method="leapfrog", step_size=0.01)
    """
    if not isinstance(t, Tensor):
        t = torch.as_tensor(t, dtype=x0.dtype if isinstance(x0, Tensor) else torch.float64)
    dim = getattr(f, "dim", None)
    if isinstance(dim, int):
        check_state(x0, dim, "x0")
    else:
        check_state(x0, x0.shape[-1] if isinstance(x0, Tensor) and x0.ndim else -1, "x0")
    check_finite(t, "t")
    if t.ndim != 1 or t.numel() < 1:
        raise ValueError(f"t must be a 1-D tensor of times, got shape {tuple(t.shape)}")
    if t.numel() > 1:
        dt = t[1:] - t[:-1]
        if not (bool((dt > 0).all()) or bool((dt < 0).all())):
            raise ValueError("t must be strictly increasing or strictly decreasing")
    if step_size is not None and not step_size > 0:
        raise ValueError(f"step_size must be positive, got {step_size}")
    t = t.to(device=x0.device)

    if method in _STEPS:
        out = _integrate_fixed(f, x0, t, method, step_size, tol, max_iter, check_separable)
    elif method in _ADAPTIVE:
        out = torchdiffeq.odeint(f, x0, t.to(x0.dtype), rtol=rtol, atol=atol, method=method, options=options)
    else:
            raise ValueError(f"unknown integration method {method!r}; available: {sorted(_STEPS) + sorted(_ADAPTIVE)}")
    return torch.movedim(out, 0, -2)  # torchdiffeq's (T, ..., n) -> (..., T, n)


def _integrate_fixed(f, x0, t, method, step_size, tol, max_iter, check_separable) -> Tensor:
    step = _STEPS[method]
    if method == "leapfrog":
        if x0.shape[-1] % 2:
            raise ValueError(f"leapfrog needs an even state dimension (q, p), got {x0.shape[-1]}")
        if check_separable:
            _check_separable(f, float(t[0]), x0)
    if method == "discrete_gradient":
        missing = [a for a in ("energy", "field_from_gradients") if not hasattr(f, a)]
        if missing:
            raise ValueError(
                f"method='discrete_gradient' needs a model with {', '.join(missing)} "
                "(see sp_dynamics.models); a bare vector field is not enough"
            )
    opts = {"tol": tol if tol is not None else 100 * torch.finfo(x0.dtype).eps, "max_iter": max_iter}
    times = t.tolist()
    out = [x0]
    x, cache = x0, None
    for t_a, t_b in zip(times[:-1], times[1:]):
        span = t_b - t_a
        n_sub = 1 if step_size is None else max(1, math.ceil(abs(span) / step_size - 1e-9))
        h = span / n_sub
        for i in range(n_sub):
            x, cache = step(f, t_a + i * h, x, h, cache, opts)
        out.append(x)
    return torch.stack(out)
