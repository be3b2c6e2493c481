"""Time derivatives from sampled trajectories, for users who have states but no derivatives.

:func:`estimate_derivatives` turns trajectories (..., T, n) sampled at times t (T,) into
(states, derivatives) pairs that every derivative-matching trainer takes -- ``fit``,
``meta_train`` and ``adapt_latent`` alike:

* ``"midpoint"``: midpoints ``(x_i + x_{i+1}) / 2`` with difference quotients
  ``(x_{i+1} - x_i) / h_i``. Derivative matching on these pairs *is* the implicit-midpoint
  trajectory loss in residual form (``x_{i+1} - x_i - h f((x_i + x_{i+1}) / 2)``, divided by h),
  so it is how meta-training and latent adaptation learn from trajectories. Second order: the
  learned field carries an O(h^2) bias (``experiments/results/fit_trajectories.md``).
* ``"spline"``: a cubic spline through each coordinate, differentiated at the samples (the
  states are kept). Third order in the derivative; for clean data.
* ``"smoothing_spline"``: a cubic smoothing spline per coordinate with the smoothing chosen by
  generalised cross-validation (scipy's ``make_smoothing_spline``); states and derivatives are
  both taken from the spline, which denoises them. For noisy data.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ._checks import check_finite

__all__ = ["estimate_derivatives", "DERIVATIVE_METHODS"]

DERIVATIVE_METHODS = ("midpoint", "spline", "smoothing_spline")


def _check(t: Tensor, x: Tensor) -> None:
    if t.ndim != 1 or x.ndim < 2 or x.shape[-2] != t.shape[0]:
        raise ValueError(f"trajectories must be (..., T, n) with times (T,), got {tuple(x.shape)} and {tuple(t.shape)}")
    if t.shape[0] < 2:
        raise ValueError("need at least two sampled times")
    check_finite(t, "times t")
    check_finite(x, "trajectories")
    if not bool((t[1:] > t[:-1]).all()):
        raise ValueError("times t must be strictly increasing")


def estimate_derivatives(t: Tensor, x: Tensor, method: str = "spline") -> tuple[Tensor, Tensor]:
    """States and time derivatives estimated from trajectories.

    Args:
        t: sampling times (T,), strictly increasing (need not be evenly spaced).
        x: trajectories (..., T, n).
        method: one of :data:`DERIVATIVE_METHODS` (see the module docstring).

    Returns:
        ``(states, derivatives)``, both (..., T', n): T' = T - 1 for ``"midpoint"``, else T.
    """
    t = torch.as_tensor(t)
    x = torch.as_tensor(x)
    if method not in DERIVATIVE_METHODS:
        raise ValueError(f"unknown derivative method {method!r}; choose from {DERIVATIVE_METHODS}")
    _check(t, x)
    if method == "midpoint":
        h = (t[1:] - t[:-1]).to(x.dtype).unsqueeze(-1)
        return 0.5 * (x[..., 1:, :] + x[..., :-1, :]), (x[..., 1:, :] - x[..., :-1, :]) / h
    if t.shape[0] < 4:
        raise ValueError(f"method {method!r} needs at least 4 sampled times, got {t.shape[0]}")
    from scipy.interpolate import CubicSpline, make_smoothing_spline

    tn = t.detach().cpu().double().numpy()
    flat = x.detach().cpu().double().numpy().reshape(-1, t.shape[0], x.shape[-1])
    states, rates = np.empty_like(flat), np.empty_like(flat)
    for j in range(flat.shape[0]):
        for k in range(flat.shape[2]):
            spline = CubicSpline(tn, flat[j, :, k]) if method == "spline" else make_smoothing_spline(tn, flat[j, :, k])
            states[j, :, k] = spline(tn)
            rates[j, :, k] = spline(tn, 1)
    shape = x.shape
    as_tensor = lambda a: torch.as_tensor(a.reshape(shape), dtype=x.dtype, device=x.device)  # noqa: E731
    return (x.clone() if method == "spline" else as_tensor(states)), as_tensor(rates)
