"""Bracket library: the matrices that carry the structure of a dynamical system.

Dimension letters used in shapes: ``...`` any leading (batch) dimensions, ``n`` the state
dimension, ``r`` a rank, ``k`` a number of basis elements.

* :class:`CanonicalJ` -- the fixed symplectic matrix ``J = [[0, I], [-I, 0]]`` on ``x = (q, p)``
  (zero on any extra coordinates such as entropies).
* :class:`LearnedSkew` -- ``L = A - A^T`` from a strict lower triangle (constant or an MLP of x).
* :class:`LearnedSPD` -- ``M = C C^T + eps I`` with ``C`` lower triangular, positive diagonal.
* GENERIC constructions behind one interface, :class:`GenericBracket`:

  ===================== ==================================== ===========
  construction          source                               degeneracy
  ===================== ==================================== ===========
  :class:`ProjectionBracket` Gruber et al., ICLR 2025          exact
  :class:`BasisBracket`      GFINN, Zhang, Shin, Karniadakis 2022 exact
  :class:`MixedBracket`      L by projection, M from a grad-E basis  exact
  :class:`SoftBracket`       learned L, M + penalty              soft
  :class:`KnownBracket`      user functions L(x), M(x)           by projection
  ===================== ==================================== ===========

  A GENERIC vector field is ``dx/dt = L(x) dE + M(x) dS`` with ``L = -L^T``, ``M = M^T >= 0``
  and the degeneracy conditions ``L dS = 0``, ``M dE = 0``; then ``dE/dt = 0`` and
  ``dS/dt = dS^T M dS >= 0``. Every construction takes the gradients ``dE``, ``dS`` as arguments
  (not only the state), so the same bracket can be built from *discrete* gradients in the
  discrete-gradient integrator.
"""

from __future__ import annotations

import abc
import math

import torch
from torch import Tensor, nn
from .serialization import serializable

__all__ = [
    "CanonicalJ",
    "LearnedSkew",
    "LearnedSPD",
    "GenericBracket",
    "ProjectionBracket",
    "BasisBracket",
    "MixedBracket",
    "SoftBracket",
    "KnownBracket",
    "project_out",
    "projector",
    "degeneracy_penalty",
    "make_bracket",
    "guard_eps",
]

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


class GenericBracket(nn.Module, abc.ABC):
    """One interface for every GENERIC construction.

    Subclasses implement :meth:`matrices`; :meth:`terms` defaults to a matrix product and is
    overridden with a matrix-free version where one exists. ``exact`` says whether the
    degeneracy conditions hold by construction (up to round-off and the eps guard).

    Shapes: ``x``, ``dE``, ``dS`` are (..., n); matrices are (..., n, n).
    """

    exact: bool = False
    dim: int

    @abc.abstractmethod
    def matrices(self, x: Tensor, dE: Tensor, dS: Tensor) -> tuple[Tensor, Tensor]:
        """Materialised ``(L, M)``."""

    def terms(self, x: Tensor, dE: Tensor, dS: Tensor) -> tuple[Tensor, Tensor]:
        """``(L dE, M dS)``."""
        L, M = self.matrices(x, dE, dS)
        return _matvec(L, dE), _matvec(M, dS)

    def field(self, x: Tensor, dE: Tensor, dS: Tensor) -> Tensor:
        """``L dE + M dS``."""
        l_dE, m_dS = self.terms(x, dE, dS)
        return l_dE + m_dS

    forward = field

    def residuals(self, x: Tensor, dE: Tensor, dS: Tensor) -> tuple[Tensor, Tensor]:
        """Degeneracy residuals ``(L dS, M dE)``; zero up to round-off for exact constructions."""
        L, M = self.matrices(x, dE, dS)
        return _matvec(L, dS), _matvec(M, dE)

    def penalty(self, x: Tensor, dE: Tensor, dS: Tensor) -> Tensor:
        """Mean ``||L dS||^2 + ||M dE||^2`` -- the soft degeneracy loss term."""
        r_l, r_m = self.residuals(x, dE, dS)
        return (r_l.pow(2).sum(-1) + r_m.pow(2).sum(-1)).mean()


@serializable
class ProjectionBracket(GenericBracket):
    """Exact GENERIC bracket by projection (Gruber et al., ICLR 2025).

    ``L = P_S A P_S`` with ``A`` skew and ``P_S = I - dS dS^T / ||dS||^2``;
    ``M = P_E B^T D B P_E`` with ``B`` in R^{r x n}, ``D = C C^T`` (r x r).
    Then ``L dS = 0`` and ``M dE = 0`` exactly (up to the eps guard), ``L`` is skew and ``M``
    PSD. :meth:`terms` is matrix-free, O(n^2 + n r + r^2) per state.

    Args:
        dim: n. rank: r (default n). state_dependent: ``A`` and ``D`` as MLPs of x.
        eps: guard added to squared gradient norms (default: :func:`guard_eps` of the dtype).
    """

    exact = True

    def __init__(self, dim: int, rank: int | None = None, state_dependent: bool = False, eps: float | None = None):
        super().__init__()
        self.dim = dim
        self.rank = rank or dim
        self.eps = eps
        self.A = LearnedSkew(dim, state_dependent=state_dependent)
        self.B = nn.Parameter(torch.randn(self.rank, dim) / math.sqrt(dim))
        self.D = LearnedSPD(self.rank, state_dependent=state_dependent, state_dim=dim)

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.B.normal_(0.0, 1.0 / math.sqrt(self.dim))

    def terms(self, x, dE, dS):
        eps = self.eps
        l_dE = project_out(dS, self.A.matvec(x, project_out(dS, dE, eps)), eps)
        B = self.B.to(dE.dtype)
        b_dS = _matvec(B, project_out(dE, dS, eps))                    # (..., r)
        m_dS = project_out(dE, _matvec(B.transpose(-1, -2), self.D.matvec(x, b_dS)), eps)
        return l_dE, m_dS

    def matrices(self, x, dE, dS):
        P_S, P_E = projector(dS, self.eps), projector(dE, self.eps)
        L = P_S @ self.A.matrix(x).to(dE.dtype) @ P_S
        B = self.B.to(dE.dtype)
        M = P_E @ B.transpose(-1, -2) @ self.D.matrix(x).to(dE.dtype) @ B @ P_E
        return 0.5 * (L - L.transpose(-1, -2)), 0.5 * (M + M.transpose(-1, -2))


@serializable
class BasisBracket(GenericBracket):
    """Exact GENERIC bracket from a skew basis (GFINN, Zhang, Shin and Karniadakis 2022).

    ``L = B_S^T sigma B_S`` with rows ``(B_S)_k = dS^T Xi_k`` (``Xi_k`` skew, so
    ``B_S dS = 0``) and ``sigma = T - T^T`` skew; ``M = B_E^T Sigma B_E`` with rows
    ``dE^T Xi'_k`` and ``Sigma = T' T'^T`` PSD. Cost O(k^2 + k n^2) per state.

    Args:
        dim: n. n_basis: k for L and M (default n).
    """

    exact = True

    def __init__(self, dim: int, n_basis: int | None = None):
        super().__init__()
        self.dim = dim
        k = n_basis or dim
        self.n_basis = k
        scale = 1.0 / math.sqrt(dim)
        self.xi_L = nn.Parameter(torch.randn(k, dim, dim) * scale)
        self.xi_M = nn.Parameter(torch.randn(k, dim, dim) * scale)
        self.sigma_L = LearnedSkew(k)
        self.sigma_M = LearnedSPD(k)

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.xi_L.normal_(0.0, 1.0 / math.sqrt(self.dim))
            self.xi_M.normal_(0.0, 1.0 / math.sqrt(self.dim))

    @staticmethod
    def _rows(xi: Tensor, g: Tensor) -> Tensor:
        skew = (xi - xi.transpose(-1, -2)).to(g.dtype)
        return torch.einsum("...i,kij->...kj", g, skew)          # (..., k, n)

    def terms(self, x, dE, dS):
        B_S, B_E = self._rows(self.xi_L, dS), self._rows(self.xi_M, dE)
        sigma_L = self.sigma_L.matrix().to(dE.dtype)
        l_dE = _matvec(B_S.transpose(-1, -2), _matvec(sigma_L, _matvec(B_S, dE)))
        m_dS = _matvec(B_E.transpose(-1, -2), self.sigma_M.matvec(None, _matvec(B_E, dS)))
        return l_dE, m_dS

    def matrices(self, x, dE, dS):
        B_S, B_E = self._rows(self.xi_L, dS), self._rows(self.xi_M, dE)
        L = B_S.transpose(-1, -2) @ self.sigma_L.matrix().to(dE.dtype) @ B_S
        M = B_E.transpose(-1, -2) @ self.sigma_M.matrix().to(dE.dtype) @ B_E
        return 0.5 * (L - L.transpose(-1, -2)), 0.5 * (M + M.transpose(-1, -2))


@serializable
class MixedBracket(GenericBracket):
    """Exact GENERIC bracket for learning: ``L`` by projection, ``M`` from a basis built on grad E.

    ``L = P_S A P_S`` (as in :class:`ProjectionBracket`: scale-free in ``dS``, and the canonical
    ``J`` is one constant ``A``). ``M = W^T D W`` with rows ``w_k = Xi_k dE`` (``Xi_k`` skew, as
    the M part of :class:`BasisBracket`), so ``M dE = 0`` holds with no division at all, and
    ``D = C diag(exp(g(x))) C^T`` is PSD. ``g`` is a zero-initialised MLP of x
    (``state_dependent=True``), so training starts from the constant bracket and adds state
    dependence only where the data ask for it.

    Why this pairing (``experiments/PROTOCOL.md``, "Why the GENERIC networks did not learn"): the
    true DNO bracket is in this class with *constant* parameters (``A = J``, one ``Xi`` with
    ``Xi dE = (0, dE_3, -dE_2)``, ``D = gamma``), while the constant projection bracket cannot
    represent it (``P_E b`` is never ``(0, 1, -p)`` for a constant ``b``). The gas-containers
    friction needs ``D = gamma / (T_1 T_2)^2``, a smooth positive function that ``exp(g(x))``
    approximates.

    Args:
        dim: n. n_basis: k (default n). state_dependent: learn ``g(x)`` (default True).
        state_dependent_L: ``A`` as an MLP of x. hidden: width of the ``g`` MLP.
        friction: optional callable ``x -> (..., k)`` used instead of ``g`` (e.g. a known
            log-friction law); its output is exponentiated.
        eps: guard of the projection (default :func:`guard_eps` of the dtype).
    """

    exact = True

    def __init__(self, dim: int, n_basis: int | None = None, state_dependent: bool = True,
                 state_dependent_L: bool = False, hidden: int = 32, friction=None, eps: float | None = None):
        super().__init__()
        self.dim = dim
        k = n_basis or dim
        self.n_basis, self.eps = k, eps
        self.A = LearnedSkew(dim, state_dependent=state_dependent_L)
        self.xi = nn.Parameter(torch.randn(k, dim, dim) / math.sqrt(dim))
        self.C = nn.Parameter(torch.randn(k, k) / math.sqrt(k))
        self.friction = friction
        self.g = None
        if state_dependent and friction is None:
            self.g = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                   nn.Linear(hidden, k))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Random ``Xi`` and ``C``; ``g = 0`` (a constant friction to start from)."""
        with torch.no_grad():
            self.xi.normal_(0.0, 1.0 / math.sqrt(self.dim))
            self.C.normal_(0.0, 1.0 / math.sqrt(self.n_basis))
            if self.g is not None:
                nn.init.zeros_(self.g[-1].weight)
                nn.init.zeros_(self.g[-1].bias)

    def _rows(self, dE: Tensor) -> Tensor:
        return BasisBracket._rows(self.xi, dE)  # (..., k, n), rows Xi_k dE up to sign

    def _log_d(self, x: Tensor) -> Tensor | None:
        if self.friction is not None:
            return self.friction(x)
        return None if self.g is None else self.g(x)

    def terms(self, x, dE, dS):
        eps = self.eps
        l_dE = project_out(dS, self.A.matvec(x, project_out(dS, dE, eps)), eps)
        W = self._rows(dE)
        C = self.C.to(dE.dtype)
        u = _matvec(C.transpose(-1, -2), _matvec(W, dS))            # (..., k)
        log_d = self._log_d(x)
        if log_d is not None:
            u = u * torch.exp(log_d.to(dE.dtype))
        m_dS = _matvec(W.transpose(-1, -2), _matvec(C, u))
        return l_dE, m_dS

    def matrices(self, x, dE, dS):
        P_S = projector(dS, self.eps)
        L = P_S @ self.A.matrix(x).to(dE.dtype) @ P_S
        W = self._rows(dE)
        C = self.C.to(dE.dtype)
        log_d = self._log_d(x)
        if log_d is None:
            D = C @ C.transpose(-1, -2)
        else:
            D = (C * torch.exp(log_d.to(dE.dtype)).unsqueeze(-2)) @ C.transpose(-1, -2)
        M = W.transpose(-1, -2) @ D @ W
        return 0.5 * (L - L.transpose(-1, -2)), 0.5 * (M + M.transpose(-1, -2))


@serializable
class SoftBracket(GenericBracket):
    """Learned skew L and PSD M with no built-in degeneracy: add :meth:`penalty` to the loss.

    Args:
        dim: n. state_dependent: L and M as MLPs of x.
    """

    exact = False

    def __init__(self, dim: int, state_dependent: bool = False):
        super().__init__()
        self.dim = dim
        self.L = LearnedSkew(dim, state_dependent=state_dependent)
        self.M = LearnedSPD(dim, state_dependent=state_dependent)

    def terms(self, x, dE, dS):
        return self.L.matvec(x, dE), self.M.matvec(x, dS)

    def matrices(self, x, dE, dS):
        batch = torch.broadcast_shapes(x.shape[:-1], dE.shape[:-1])
        L = self.L.matrix(x).to(dE.dtype)
        M = self.M.matrix(x).to(dE.dtype)
        return L.expand(*batch, self.dim, self.dim), M.expand(*batch, self.dim, self.dim)


class KnownBracket(GenericBracket):
    """Brackets given as functions ``L(x)``, ``M(x)`` (e.g. a system's true ones).

    With ``project=True`` (default) the bracket used is ``P_S L P_S`` and ``P_E M P_E`` for the
    gradients passed in. For true brackets and exact gradients this changes nothing (they are
    already degenerate); for *discrete* gradients it restores the degeneracy the
    discrete-gradient step needs. With ``project=False`` the functions are used as given.

    Args:
        L_fn, M_fn: callables mapping (..., n) states to (..., n, n) matrices.
        dim: n.
    """

    def __init__(self, L_fn, M_fn, dim: int, project: bool = True, eps: float | None = None):
        super().__init__()
        self.L_fn, self.M_fn, self.dim = L_fn, M_fn, dim
        self.project, self.exact, self.eps = project, project, eps

    def terms(self, x, dE, dS):
        L, M = self.L_fn(x), self.M_fn(x)
        if not self.project:
            return _matvec(L, dE), _matvec(M, dS)
        eps = self.eps
        l_dE = project_out(dS, _matvec(L, project_out(dS, dE, eps)), eps)
        m_dS = project_out(dE, _matvec(M, project_out(dE, dS, eps)), eps)
        return l_dE, m_dS

    def matrices(self, x, dE, dS):
        L, M = self.L_fn(x), self.M_fn(x)
        if not self.project:
            return L, M
        P_S, P_E = projector(dS, self.eps), projector(dE, self.eps)
        L, M = P_S @ L @ P_S, P_E @ M @ P_E
        return 0.5 * (L - L.transpose(-1, -2)), 0.5 * (M + M.transpose(-1, -2))


_BRACKETS = {"mixed": MixedBracket, "projection": ProjectionBracket, "basis": BasisBracket, "soft": SoftBracket}


def make_bracket(name: str, dim: int, **kwargs) -> GenericBracket:
    """Build a GENERIC bracket by name: ``"mixed"``, ``"projection"``, ``"basis"`` or ``"soft"``."""
    try:
        cls = _BRACKETS[name]
    except KeyError:
        raise ValueError(f"unknown bracket construction {name!r}; available: {sorted(_BRACKETS)}") from None
    return cls(dim, **kwargs)
