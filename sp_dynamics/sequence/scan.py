"""One associative scan for first-order affine recurrences, shared by the Hamiltonian Memory
Layer and the Metriplector causal chain.

``s_t = A_t s_{t-1} + b_t`` with ``s_{-1} = 0``: every prefix state is the composition of the
affine maps ``s -> A_t s + b_t``, and composition is associative, ``(A2, b2) o (A1, b1) =
(A2 A1, A2 b1 + b2)``. :func:`affine_scan` evaluates all T prefixes in ceil(log2 T) doubling
rounds (Hillis--Steele), each a few elementwise operations over the whole sequence. Two element
types: scalar coefficients (``A`` has b's shape: the Metriplector chain ``phi_t = a_t phi_{t-1} +
x_t``) and 2x2 blocks (``A`` has b's shape plus a trailing 2: the HML's per-channel leapfrog
maps on (q, p)). The 2x2 products are written out entry by entry (a batched ``@`` on 2x2 blocks
is ~3x slower on CPU). :func:`affine_scan_loop` is the sequential reference; both are
differentiated by autograd.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["affine_scan", "affine_scan_loop"]


def _shift(x: Tensor, d: int, dim: int, fill: float) -> Tensor:
    """x delayed by d steps along ``dim``, with ``fill`` (the identity's entry) before the start."""
    head = torch.full_like(x.narrow(dim, 0, d), fill)
    return torch.cat([head, x.narrow(dim, 0, x.shape[dim] - d)], dim)


def _blocks(A: Tensor, b: Tensor) -> bool:
    """True for 2x2 blocks (A is b's shape + (2,), b's last dimension 2), False for scalars (A
    broadcasts against b); a ValueError naming the shapes otherwise."""
    try:
        if A.ndim == b.ndim + 1 and A.shape[-2:] == (2, 2) and b.shape[-1] == 2:
            torch.broadcast_shapes(A.shape[:-1], b.shape)
            return True
        if A.ndim == b.ndim:
            torch.broadcast_shapes(A.shape, b.shape)
            return False
    except RuntimeError:
        pass
    raise ValueError(f"affine_scan: A must broadcast against b {tuple(b.shape)} (scalar coefficients) or against "
                     f"{tuple(b.shape)} + (2,) (2x2 blocks), got {tuple(A.shape)}")


def affine_scan(A: Tensor, b: Tensor, dim: int = -1) -> Tensor:
    """All prefix states of ``s_t = A_t s_{t-1} + b_t`` (``s_{-1} = 0``) along ``dim`` of ``b``.

    Args:
        A: coefficients, b's shape (scalars) or b's shape + (2,) with b's last dimension 2
            (2x2 blocks acting on it); may broadcast over leading dimensions of size 1 (a map
            shared by a batch is then composed once, not once per sequence).
        b: inputs; ``dim`` is the time dimension (for blocks, counted on b).

    Returns:
        The states, b's shape.
    """
    blocks = _blocks(A, b)
    dim = dim % b.ndim
    T = b.shape[dim]
    if T == 0:
        return b.clone()
    d = 1
    if not blocks:
        a, x = A, b
        while d < T:
            x = a * _shift(x, d, dim, 0.0) + x
            if 2 * d < T:  # the last round needs no new A
                a = a * _shift(a, d, dim, 1.0)
            d *= 2
        return x
    a11, a12, a21, a22 = A[..., 0, 0], A[..., 0, 1], A[..., 1, 0], A[..., 1, 1]
    b1, b2 = b[..., 0], b[..., 1]
    while d < T:
        p1, p2 = _shift(b1, d, dim, 0.0), _shift(b2, d, dim, 0.0)
        b1, b2 = a11 * p1 + a12 * p2 + b1, a21 * p1 + a22 * p2 + b2
        if 2 * d < T:
            q11, q12, q21, q22 = (_shift(a11, d, dim, 1.0), _shift(a12, d, dim, 0.0),
                                  _shift(a21, d, dim, 0.0), _shift(a22, d, dim, 1.0))
            a11, a12, a21, a22 = (a11 * q11 + a12 * q21, a11 * q12 + a12 * q22,
                                  a21 * q11 + a22 * q21, a21 * q12 + a22 * q22)
        d *= 2
    return torch.stack([b1, b2], -1)


def affine_scan_loop(A: Tensor, b: Tensor, dim: int = -1) -> Tensor:
    """Sequential reference of :func:`affine_scan` (same arguments)."""
    blocks = _blocks(A, b)
    dim = dim % b.ndim
    A = A.expand(*b.shape, 2) if blocks else A.expand_as(b)
    s = torch.zeros_like(b.select(dim, 0))
    out = []
    # unbind, not select per step: the backward of T selects writes T full-size gradients (O(T^2)
    # memory traffic: 48 s at T = 16000, batch 8 x 16), the backward of one unbind is one stack
    for a_t, b_t in zip(A.unbind(dim), b.unbind(dim)):
        s = (a_t @ s.unsqueeze(-1)).squeeze(-1) + b_t if blocks else a_t * s + b_t
        out.append(s)
    return torch.stack(out, dim)
