"""Causal Poisson chain: ``phi_t = a_t phi_{t-1} + x_t`` (``phi_{-1} = 0``) along the last dim.

On a chain with only backward edges t-1 -> t the screened Poisson equation reduces to this
first-order recurrence with ``a_t = w_t / (w_t + alpha_t)`` and ``x_t = b_t / (w_t + alpha_t)``
(Metriplector paper, language model). :func:`causal_scan` evaluates it with a parallel
associative scan over pairs (a, x) -- log2(T) doubling rounds (Hillis--Steele), each a few
elementwise ops over the whole sequence; :func:`causal_scan_loop` is the sequential reference.
Both are differentiated by autograd. On CPU the loop is often faster; the scan pays off on
accelerators (a speed claim needs a benchmark).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["causal_scan", "causal_scan_loop"]


def _check(a: Tensor, x: Tensor) -> None:
    if a.shape != x.shape:
        raise ValueError(f"a and x must have the same shape, got {tuple(a.shape)} and {tuple(x.shape)}")
    if a.ndim == 0:
        raise ValueError("a and x need a time dimension (the last one)")


def causal_scan_loop(a: Tensor, x: Tensor) -> Tensor:
    """Sequential reference, shapes (..., T) -> (..., T)."""
    _check(a, x)
    out, phi = [], torch.zeros_like(x[..., 0])
    for t in range(x.shape[-1]):
        phi = a[..., t] * phi + x[..., t]
        out.append(phi)
    return torch.stack(out, -1)


def causal_scan(a: Tensor, x: Tensor) -> Tensor:
    """Parallel associative scan, shapes (..., T) -> (..., T).

    Composition of affine maps ``phi -> a phi + x``: ``(a2, x2) o (a1, x1) = (a2 a1, a2 x1 + x2)``.
    """
    _check(a, x)
    T = x.shape[-1]
    d = 1
    while d < T:
        # combine each element with the one d steps earlier (identity (1, 0) before the start)
        a_prev = F.pad(a[..., :-d], (d, 0), value=1.0)
        x_prev = F.pad(x[..., :-d], (d, 0), value=0.0)
        x = a * x_prev + x
        a = a * a_prev
        d *= 2
    return x
