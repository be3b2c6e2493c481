"""The matrices: canonical J, learned skew L, learned SPD M, and the guarded projections that
the exact GENERIC constructions (:mod:`.generic`) build on."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..serialization import serializable

__all__ = ["CanonicalJ", "LearnedSkew", "LearnedSPD", "project_out", "projector", "degeneracy_penalty", "guard_eps"]

# Guard added to squared norms before dividing: ||v||^2 + eps. The projection residual is
# P_v v = v eps / (||v||^2 + eps), i.e. relative size eps / ||v||^2, so eps must be far below the
# squared gradient norms met in practice (a fixed 1e-12 already gives 1e-10 at ||v|| = 0.1).
# With these values the relative degeneracy residual is <= 1e-10 for ||v|| >= 1e-10 (float64)
# and <= 1e-8 for ||v|| >= 1e-6 (float32); the projector tends smoothly to the identity (no NaN)
# as v -> 0, and the guard bounds its derivative by ~1/sqrt(eps).
_EPS_BY_DTYPE = {torch.float64: 1e-30, torch.float32: 1e-20}


def guard_eps(dtype: torch.dtype, eps: float | None = None) -> float:
    """The division guard for ``dtype`` (``eps`` if given)."""
    return eps if eps is not None else _EPS_BY_DTYPE.get(dtype, 1e-6)


def _matvec(A: Tensor, v: Tensor) -> Tensor:
    """(..., n, m) @ (..., m) -> (..., n) with broadcasting over leading dimensions."""
    return (A @ v.unsqueeze(-1)).squeeze(-1)


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum(-1, keepdim=True)


def project_out(v: Tensor, w: Tensor, eps: float | None = None) -> Tensor:
    """Apply ``P_v w = w - (v.w) v / (||v||^2 + eps)`` without forming ``P_v``.

    ``P_v`` is the orthogonal projector onto the complement of ``v``; the ``eps`` guard
    (default :func:`guard_eps` of the dtype) keeps the result finite, tending to ``w``, as
    ``v -> 0``.
    """
    return w - _dot(v, w) / (_dot(v, v) + guard_eps(v.dtype, eps)) * v


def projector(v: Tensor, eps: float | None = None) -> Tensor:
    """Materialised ``P_v = I - v v^T / (||v||^2 + eps)``, shape (..., n, n)."""
    n = v.shape[-1]
    eye = torch.eye(n, dtype=v.dtype, device=v.device)
    return eye - v.unsqueeze(-1) * v.unsqueeze(-2) / (_dot(v, v).unsqueeze(-1) + guard_eps(v.dtype, eps))


def _tril_indices(n: int, offset: int, device=None) -> tuple[Tensor, Tensor]:
    idx = torch.tril_indices(n, n, offset=offset, device=device)
    return idx[0], idx[1]


def _fill_tril(entries: Tensor, n: int, offset: int) -> Tensor:
    """Scatter (..., m) entries into the lower triangle (with ``offset``) of (..., n, n) zeros."""
    rows, cols = _tril_indices(n, offset, device=entries.device)
    out = entries.new_zeros(*entries.shape[:-1], n, n)
    out[..., rows, cols] = entries
    return out


class _Coefficients(nn.Module):
    """``m`` numbers that are either constant parameters or an MLP of the state."""

    def __init__(self, dim: int, m: int, state_dependent: bool, hidden: int, init_std: float):
        super().__init__()
        self.m = m
        self.state_dependent = state_dependent
        self.init_std = init_std
        if state_dependent:
            self.net = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, m))
        else:
            self.value = nn.Parameter(torch.empty(m))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Fresh random entries (global RNG); runs after the children's own resets."""
        with torch.no_grad():
            if self.state_dependent:
                nn.init.normal_(self.net[-1].weight, std=self.init_std)
                nn.init.zeros_(self.net[-1].bias)
            else:
                self.value.normal_(0.0, self.init_std)

    def forward(self, x: Tensor | None) -> Tensor:
        if self.state_dependent:
            if x is None:
                raise ValueError("a state-dependent bracket needs the state x")
            return self.net(x)
        return self.value


@serializable
class CanonicalJ(nn.Module):
    """Canonical symplectic matrix on ``x = (q, p[, extra])`` with ``q, p`` in R^d.

    ``J = [[0, I_d], [-I_d, 0]]`` acting on the first ``2d`` coordinates, zero on the
    ``n_extra`` trailing coordinates (e.g. entropies), so ``dx/dt = J dH`` gives
    ``dq/dt = dH/dp``, ``dp/dt = -dH/dq``.

    Example::

        J = CanonicalJ(1)
        J.matvec(torch.tensor([1.0, 2.0]))   # tensor([ 2., -1.])
    """

    def __init__(self, n_dof: int, n_extra: int = 0):
        super().__init__()
        if n_dof < 1 or n_extra < 0:
            raise ValueError(f"CanonicalJ needs n_dof >= 1 and n_extra >= 0, got {n_dof}, {n_extra}")
        self.n_dof = n_dof
        self.n_extra = n_extra
        self.dim = 2 * n_dof + n_extra

    def matrix(self, dtype=torch.float64, device=None) -> Tensor:
        """The (n, n) matrix J."""
        d = self.n_dof
        J = torch.zeros(self.dim, self.dim, dtype=dtype, device=device)
        eye = torch.eye(d, dtype=dtype, device=device)
        J[:d, d : 2 * d] = eye
        J[d : 2 * d, :d] = -eye
        return J

    def matvec(self, v: Tensor) -> Tensor:
        """``J v`` for v of shape (..., n), without forming J."""
        d = self.n_dof
        vq, vp, rest = v[..., :d], v[..., d : 2 * d], v[..., 2 * d :]
        return torch.cat([vp, -vq, torch.zeros_like(rest)], dim=-1)

    def extra_repr(self) -> str:
        return f"n_dof={self.n_dof}, n_extra={self.n_extra}"


@serializable
class LearnedSkew(nn.Module):
    """Learned skew-symmetric matrix ``L = A - A^T``, A strictly lower triangular.

    Skew-symmetry holds exactly in floating point (``a - b == -(b - a)``).

    Args:
        dim: n.
        state_dependent: if True the n(n-1)/2 entries are an MLP of x (shape (..., n, n)),
            otherwise constant parameters (shape (n, n)).
        hidden: hidden width of that MLP.
        init_std: standard deviation of the initial entries.
        state_dim: dimension of x when it differs from n.
    """

    def __init__(
        self,
        dim: int,
        state_dependent: bool = False,
        hidden: int = 32,
        init_std: float = 0.5,
        state_dim: int | None = None,
    ):
        super().__init__()
        self.dim = dim
        self.coef = _Coefficients(state_dim or dim, dim * (dim - 1) // 2, state_dependent, hidden, init_std)

    @property
    def state_dependent(self) -> bool:
        return self.coef.state_dependent

    def matrix(self, x: Tensor | None = None) -> Tensor:
        """L of shape (n, n), or (..., n, n) when state dependent."""
        A = _fill_tril(self.coef(x), self.dim, offset=-1)
        return A - A.transpose(-1, -2)

    def matvec(self, x: Tensor | None, v: Tensor) -> Tensor:
        """``L(x) v`` with v of shape (..., n)."""
        return _matvec(self.matrix(x).to(v.dtype), v)


@serializable
class LearnedSPD(nn.Module):
    """Learned symmetric positive (semi)definite matrix ``M = C C^T + eps I``.

    ``C`` is lower triangular with a positive diagonal (softplus), so ``M`` is SPD for
    ``eps > 0`` and PSD for ``eps = 0``; symmetry is exact because ``C C^T`` is formed as a
    product with its own transpose and then symmetrised.

    Args:
        dim: n.
        state_dependent: entries of C from an MLP of x instead of constants.
        eps: added multiple of the identity (use 0 for a PSD matrix that may be singular).
        state_dim: dimension of x when it differs from n.
    """

    def __init__(
        self,
        dim: int,
        state_dependent: bool = False,
        eps: float = 0.0,
        hidden: int = 32,
        init_std: float = 0.5,
        state_dim: int | None = None,
    ):
        super().__init__()
        if eps < 0:
            raise ValueError(f"LearnedSPD eps must be >= 0, got {eps}")
        self.dim = dim
        self.eps = eps
        self.coef = _Coefficients(state_dim or dim, dim * (dim + 1) // 2, state_dependent, hidden, init_std)
        rows, cols = _tril_indices(dim, 0)
        self.register_buffer("_diag_mask", (rows == cols), persistent=False)

    @property
    def state_dependent(self) -> bool:
        return self.coef.state_dependent

    def factor(self, x: Tensor | None = None) -> Tensor:
        """The lower-triangular factor C with positive diagonal."""
        raw = self.coef(x)
        mask = self._diag_mask.to(raw.device)
        entries = torch.where(mask, nn.functional.softplus(raw), raw)
        return _fill_tril(entries, self.dim, offset=0)

    def matrix(self, x: Tensor | None = None) -> Tensor:
        C = self.factor(x)
        M = C @ C.transpose(-1, -2)
        M = 0.5 * (M + M.transpose(-1, -2))
        if self.eps:
            M = M + self.eps * torch.eye(self.dim, dtype=M.dtype, device=M.device)
        return M

    def matvec(self, x: Tensor | None, v: Tensor) -> Tensor:
        """``M(x) v`` computed as ``C (C^T v) + eps v``."""
        C = self.factor(x).to(v.dtype)
        out = _matvec(C, _matvec(C.transpose(-1, -2), v))
        return out + self.eps * v if self.eps else out


def degeneracy_penalty(L: Tensor, M: Tensor, dE: Tensor, dS: Tensor) -> Tensor:
    """Mean of ``||L dS||^2 + ||M dE||^2`` over the batch (materialised matrices)."""
    return (_matvec(L, dS).pow(2).sum(-1) + _matvec(M, dE).pow(2).sum(-1)).mean()
