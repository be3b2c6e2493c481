"""Exact screened-Poisson solves ``(L_w + diag(alpha)) phi = b`` with implicit differentiation.

Forward: Jacobi-preconditioned conjugate gradients, matrix-free, batched over samples x fields
(each system has its own step sizes and stops on its own relative residual). Backward: the
operator is symmetric positive definite (``w >= 0``, ``alpha > 0``; Metriplector paper,
Prop. 2), so with the upstream gradient g one more CG solve ``A lambda = g`` gives

    dl/db = lambda,   dl/dalpha_i = -lambda_i phi_i,   dl/dw_ij = -(lambda_i - lambda_j)(phi_i - phi_j).

Memory is O(nodes), independent of the number of CG iterations. The gradients are exact only
when both solves converge: the achieved residuals are reported (``return_info=True``) and
non-convergence warns or raises (``on_fail``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from .graphs import EdgeGraph, GridGraph

__all__ = ["screened_poisson_solve", "SolveInfo", "ConvergenceWarning", "PoissonConvergenceError", "poisson_operator"]

Graph = GridGraph | EdgeGraph


class ConvergenceWarning(RuntimeWarning):
    """A CG solve stopped at ``max_iter`` above its tolerance."""


class PoissonConvergenceError(RuntimeError):
    """Raised instead of the warning when ``on_fail="raise"``."""


@dataclass
class SolveInfo:
    """Outcome of a solve: iterations used and the worst relative residual ``|b - A phi| / |b|``
    over the batch, for the forward and (after backward) the adjoint solve."""

    iterations: int = 0
    residual: float = 0.0
    backward_iterations: int | None = None
    backward_residual: float | None = None


def poisson_operator(graph: Graph, weights: tuple[Tensor, ...], alpha: Tensor, phi: Tensor) -> Tensor:
    """``A phi = L_w phi + alpha * phi`` (matrix-free)."""
    return graph.laplacian(weights, phi) + alpha * phi


def _dot(a: Tensor, b: Tensor, n_node_dims: int) -> Tensor:
    return (a * b).sum(dim=tuple(range(-n_node_dims, 0)))


def _pcg(graph, weights, alpha, b, x0, rtol, max_iter):
    """Batched Jacobi-preconditioned CG. Returns (x, iterations, worst relative residual)."""
    nd = len(graph.node_shape)
    # inputs made by permuting a channels-last MLP output have mixed strides; elementwise ops
    # between such operands and the contiguous iterates run several times slower
    weights, alpha, b = tuple(w.contiguous() for w in weights), alpha.contiguous(), b.contiguous()
    x0 = None if x0 is None else x0.contiguous()
    diag = graph.degree(weights, b) + alpha
    expand = (...,) + (None,) * nd
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - poisson_operator(graph, weights, alpha, x) if x0 is not None else b.clone()
    b_norm = _dot(b, b, nd).sqrt()
    safe_b = torch.where(b_norm > 0, b_norm, torch.ones_like(b_norm))
    z = r / diag
    p = z.clone()
    rz = _dot(r, z, nd)
    it = 0
    for it in range(1, max_iter + 1):
        rel = _dot(r, r, nd).sqrt() / safe_b
        if bool((rel <= rtol).all()):
            it -= 1
            break
        Ap = poisson_operator(graph, weights, alpha, p)
        pAp = _dot(p, Ap, nd)
        step = torch.where(pAp > 0, rz / torch.where(pAp > 0, pAp, torch.ones_like(pAp)), torch.zeros_like(pAp))
        step = step[expand]
        x.addcmul_(step, p)
        r.addcmul_(step, Ap, value=-1)
        torch.div(r, diag, out=z)
        rz_new = _dot(r, z, nd)
        beta = torch.where(rz > 0, rz_new / torch.where(rz > 0, rz, torch.ones_like(rz)), torch.zeros_like(rz))
        p.mul_(beta[expand]).add_(z)
        rz = rz_new
    true_r = b - poisson_operator(graph, weights, alpha, x)  # the achieved, not the recursive, residual
    rel = (_dot(true_r, true_r, nd).sqrt() / safe_b).max()
    return x, it, float(rel)


def _report(rel: float, rtol: float, iters: int, max_iter: int, on_fail: str, what: str) -> None:
    if rel <= rtol * 10 or on_fail == "ignore":  # 10x slack: the recursive residual met rtol
        return
    if iters >= max_iter:
        why = f"reached max_iter = {max_iter}"
        hint = "raise max_iter or loosen rtol"
    else:  # the recursive residual met rtol but the true one did not: round-off floor
        why = f"hit its round-off floor after {iters} iterations"
        hint = "loosen rtol (ill-conditioned system) or use float64"
    msg = (
        f"screened Poisson {what}: CG {why} at relative residual {rel:.2e} > rtol {rtol:.1e}; "
        f"values and gradients are inexact ({hint})"
    )
    if on_fail == "raise":
        raise PoissonConvergenceError(msg)
    warnings.warn(msg, ConvergenceWarning, stacklevel=4)


class _Solve(torch.autograd.Function):
    @staticmethod
    def forward(ctx, graph, opts, info, b, alpha, *weights):
        phi, it, rel = _pcg(graph, weights, alpha, b, opts["x0"], opts["rtol"], opts["max_iter"])
        info.iterations, info.residual = it, rel
        _report(rel, opts["rtol"], it, opts["max_iter"], opts["on_fail"], "solve")
        ctx.graph, ctx.opts, ctx.info = graph, opts, info
        ctx.save_for_backward(phi, alpha, *weights)
        return phi

    @staticmethod
    def backward(ctx, g):
        phi, alpha, *weights = ctx.saved_tensors
        graph, opts = ctx.graph, ctx.opts
        lam, it, rel = _pcg(graph, weights, alpha, g, None, opts["rtol"], opts["max_iter"])
        ctx.info.backward_iterations, ctx.info.backward_residual = it, rel
        _report(rel, opts["rtol"], it, opts["max_iter"], opts["on_fail"], "adjoint solve")
        grad_b = lam if ctx.needs_input_grad[3] else None
        grad_alpha = (-lam * phi).sum_to_size(alpha.shape) if ctx.needs_input_grad[4] else None
        grad_w = []
        for k, (w, dl, dp) in enumerate(zip(weights, graph.edge_differences(lam), graph.edge_differences(phi))):
            grad_w.append((-dl * dp).sum_to_size(w.shape) if ctx.needs_input_grad[5 + k] else None)
        return (None, None, None, grad_b, grad_alpha, *grad_w)


def _check(graph: Graph, b: Tensor, alpha: Tensor, weights: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
    nd = len(graph.node_shape)
    nodes = ", ".join(map(str, graph.node_shape))
    if not isinstance(b, Tensor) or tuple(b.shape[-nd:]) != graph.node_shape or b.ndim != nd + 2:
        raise ValueError(f"b must have shape (B, C, {nodes}) -- samples, fields, then the graph's nodes -- "
                         f"got {tuple(getattr(b, 'shape', ()))}" + (" (add the missing leading dimensions with "
                                                                    "b[None] or b[None, None])"
                                                                    if isinstance(b, Tensor) and b.ndim < nd + 2 else ""))
    if not b.is_floating_point():
        raise ValueError(f"b must be a floating-point tensor, got {b.dtype}")
    alpha = torch.as_tensor(alpha, dtype=b.dtype, device=b.device)
    if alpha.ndim == 0:
        alpha = alpha.expand(b.shape)
    shapes = graph.weight_shapes()
    if len(weights) != len(shapes):
        raise ValueError(f"this graph takes {len(shapes)} conductance tensor(s), got {len(weights)}")
    for k, (w, s) in enumerate(zip(weights, shapes)):
        if tuple(w.shape[-len(s):]) != tuple(s):
            raise ValueError(f"conductance tensor {k} must have trailing shape {tuple(s)}, got {tuple(w.shape)}")
        if not bool(torch.isfinite(w).all()):
            raise ValueError(f"conductance tensor {k} contains NaN or inf")
        if bool((w < 0).any()):
            raise ValueError(f"conductances must be >= 0 (tensor {k} has negative entries); use softplus")
    for name, t in (("b", b), ("alpha", alpha)):
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or inf")
    if bool((alpha <= 0).any()):
        raise ValueError("alpha (screening/damping) must be > 0 everywhere for a unique solution")
    try:
        torch.broadcast_shapes(alpha.shape, b.shape, *(w.shape[:-len(s)] + (1,) * len(s) for w, s in zip(weights, shapes)))
    except RuntimeError as exc:
        raise ValueError(f"b, alpha and conductances do not broadcast: {exc}") from None
    return b, alpha


def screened_poisson_solve(
    graph: Graph,
    weights: tuple[Tensor, ...] | Tensor,
    alpha: Tensor | float,
    b: Tensor,
    *,
    rtol: float | None = None,
    max_iter: int = 1000,
    x0: Tensor | None = None,
    on_fail: str = "warn",
    return_info: bool = False,
):
    """Solve ``(L_w + diag(alpha)) phi = b`` on a graph, differentiably in b, alpha and w.

    Args:
        graph: :class:`GridGraph` or :class:`EdgeGraph`.
        weights: conductances (see :mod:`metriplector.graphs` for shapes), all >= 0.
        alpha: screening, > 0, broadcastable to b (a scalar is allowed).
        b: right-hand sides, (B, C, *nodes).
        rtol: stop when ``|r| / |b| <= rtol`` for every system (default 1e-10 in float64,
            1e-5 in float32, where CG stalls near 1e-5 on hard cases).
        max_iter: cap on iterations of each solve (forward and adjoint).
        x0: warm start (forward only).
        on_fail: ``"warn"`` (default), ``"raise"`` or ``"ignore"`` when a solve does not converge.
        return_info: also return a :class:`SolveInfo` (filled in by backward for the adjoint).

    Example::

        g = GridGraph(15, 15)
        w = (torch.ones(1, 1, 15, 14), torch.ones(1, 1, 14, 15))
        phi = screened_poisson_solve(g, w, 0.01, b)
    """
    if isinstance(weights, Tensor):
        weights = (weights,)
    weights = tuple(weights)
    b, alpha = _check(graph, b, alpha, weights)
    if on_fail not in ("warn", "raise", "ignore"):
        raise ValueError(f"on_fail must be 'warn', 'raise' or 'ignore', got {on_fail!r}")
    if rtol is None:
        rtol = 1e-10 if b.dtype == torch.float64 else 1e-5
    if x0 is not None and x0.shape != b.shape:
        raise ValueError(f"x0 must have the shape of b {tuple(b.shape)}, got {tuple(x0.shape)}")
    info = SolveInfo()
    opts = {"rtol": rtol, "max_iter": max_iter, "x0": None if x0 is None else x0.detach(), "on_fail": on_fail}
    weights = tuple(w.to(b.dtype) for w in weights)
    phi = _Solve.apply(graph, opts, info, b, alpha.to(b.dtype), *weights)
    return (phi, info) if return_info else phi
