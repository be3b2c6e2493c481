"""Causal Poisson chain: ``phi_t = a_t phi_{t-1} + x_t`` (``phi_{-1} = 0``) along the last dim.

On a chain with only backward edges t-1 -> t the screened Poisson equation reduces to this
first-order recurrence with ``a_t = w_t / (w_t + alpha_t)`` and ``x_t = b_t / (w_t + alpha_t)``
(Metriplector paper, language model). :func:`causal_scan` evaluates it with the library's
parallel associative scan over pairs (a, x) -- log2(T) doubling rounds (Hillis--Steele), each a
few elementwise ops over the whole sequence; :func:`causal_scan_loop` is the sequential reference.
Both are differentiated by autograd. On CPU the loop is often faster; the scan pays off on
accelerators (a speed claim needs a benchmark).
"""

from __future__ import annotations

from torch import Tensor

from sp_dynamics.sequence.scan import affine_scan, affine_scan_loop

__all__ = ["causal_scan", "causal_scan_loop"]


def _check(a: Tensor, x: Tensor) -> None:
    if a.shape != x.shape:
        raise ValueError(f"a and x must have the same shape, got {tuple(a.shape)} and {tuple(x.shape)}")
    if a.ndim == 0:
        raise ValueError("a and x need a time dimension (the last one)")


def causal_scan_loop(a: Tensor, x: Tensor) -> Tensor:
    """Sequential reference, shapes (..., T) -> (..., T)."""
    _check(a, x)
    return affine_scan_loop(a, x, dim=-1)


def causal_scan(a: Tensor, x: Tensor) -> Tensor:
    """Parallel associative scan, shapes (..., T) -> (..., T): the library's one affine scan
    (:func:`sp_dynamics.sequence.scan.affine_scan`, shared with the Hamiltonian Memory Layer)
    with scalar coefficients along the last dimension."""
    _check(a, x)
    return affine_scan(a, x, dim=-1)
