"""GENERIC constructions behind one interface, :class:`GenericBracket`: projection (Gruber et al.
2025), basis (GFINN), mixed, soft (penalty) and known brackets, and :func:`make_bracket`."""

from __future__ import annotations

import abc
import math

import torch
from torch import Tensor, nn

from ..serialization import serializable
from .matrices import LearnedSkew, LearnedSPD, _matvec, project_out, projector

__all__ = ["GenericBracket", "ProjectionBracket", "BasisBracket", "MixedBracket", "SoftBracket", "KnownBracket",
           "make_bracket"]


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
        friction_input: what ``g`` sees: ``"state"`` (x, the default) or ``"gradient"`` (grad E,
            the thermodynamic forces: the gas containers' friction is a function of the
            temperatures T_i = dE/dS_i alone). Either way ``M grad E = 0`` holds exactly.
        friction_law: ``"mlp"`` (default): ``g`` is an MLP of the friction input. ``"power"``:
            ``g`` sees the log-magnitudes ``phi = log(f^2 + floor^2) / 2`` of the friction input
            f, and a zero-initialised linear term is added, ``log D = P phi + MLP(phi)``: a
            power law ``prod_i |f_i|^P_li`` (the gas containers' ``gamma / (T_1 T_2)^2`` is one,
            exactly) with a learned correction. Why: over one gas instance's data that friction
            spans a factor of about e^9, which a tanh MLP of raw forces learns poorly
            (``experiments/PROTOCOL.md``, "Gas containers: which part does not learn").
        friction_floor: the ``floor`` of ``"power"`` (keeps ``phi`` finite where a force is 0).
        friction_coords: the components of the friction input that ``g`` sees (default: all).
            With ``friction_input="gradient"`` and the gas containers' entropy coordinates
            ``(2, 3)``, ``g`` sees the temperatures alone, which is all their friction depends on,
            and not the piston force dE/dq, which is steep at the walls. Either way
            ``M grad E = 0`` holds exactly.
        eps: guard of the projection (default :func:`guard_eps` of the dtype).
    """

    exact = True

    def __init__(self, dim: int, n_basis: int | None = None, state_dependent: bool = True,
                 state_dependent_L: bool = False, hidden: int = 32, friction=None, eps: float | None = None,
                 friction_input: str = "state", friction_law: str = "mlp", friction_floor: float = 1e-3,
                 friction_coords=None):
        super().__init__()
        self.dim = dim
        k = n_basis or dim
        self.n_basis, self.eps = k, eps
        self.A = LearnedSkew(dim, state_dependent=state_dependent_L)
        self.xi = nn.Parameter(torch.randn(k, dim, dim) / math.sqrt(dim))
        self.C = nn.Parameter(torch.randn(k, k) / math.sqrt(k))
        if friction_input not in ("state", "gradient"):
            raise ValueError(f"friction_input must be 'state' or 'gradient', got {friction_input!r}")
        if friction_law not in ("mlp", "power"):
            raise ValueError(f"friction_law must be 'mlp' or 'power', got {friction_law!r}")
        if not friction_floor > 0:
            raise ValueError(f"friction_floor must be positive, got {friction_floor}")
        coords = tuple(range(dim)) if friction_coords is None else tuple(friction_coords)
        if not coords or len(set(coords)) != len(coords) or not all(
                isinstance(c, int) and 0 <= c < dim for c in coords):
            raise ValueError(f"friction_coords must be distinct coordinate indices in [0, {dim}), got {friction_coords!r}")
        self.friction, self.friction_input = friction, friction_input
        self.friction_law, self.friction_floor = friction_law, friction_floor
        self.friction_coords = None if friction_coords is None else coords
        self.g = self.power = None
        if state_dependent and friction is None:
            m = len(coords)
            self.g = nn.Sequential(nn.Linear(m, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                   nn.Linear(hidden, k))
            if friction_law == "power":
                self.power = nn.Linear(m, k, bias=False)  # exponents P of the power law
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Random ``Xi`` and ``C``; ``g = 0`` (a constant friction to start from)."""
        with torch.no_grad():
            self.xi.normal_(0.0, 1.0 / math.sqrt(self.dim))
            self.C.normal_(0.0, 1.0 / math.sqrt(self.n_basis))
            if self.g is not None:
                nn.init.zeros_(self.g[-1].weight)
                nn.init.zeros_(self.g[-1].bias)
            if self.power is not None:
                nn.init.zeros_(self.power.weight)

    def _rows(self, dE: Tensor) -> Tensor:
        return BasisBracket._rows(self.xi, dE)  # (..., k, n), rows Xi_k dE up to sign

    def _log_d(self, x: Tensor, dE: Tensor) -> Tensor | None:
        if self.friction is not None:
            return self.friction(x)
        if self.g is None:
            return None
        f = dE if self.friction_input == "gradient" else x
        if self.friction_coords is not None:
            f = f[..., list(self.friction_coords)]
        if self.power is None:
            return self.g(f)
        phi = 0.5 * torch.log(f.pow(2) + self.friction_floor ** 2)
        return self.power(phi) + self.g(phi)

    def terms(self, x, dE, dS):
        eps = self.eps
        l_dE = project_out(dS, self.A.matvec(x, project_out(dS, dE, eps)), eps)
        W = self._rows(dE)
        C = self.C.to(dE.dtype)
        u = _matvec(C.transpose(-1, -2), _matvec(W, dS))            # (..., k)
        log_d = self._log_d(x, dE)
        if log_d is not None:
            u = u * torch.exp(log_d.to(dE.dtype))
        m_dS = _matvec(W.transpose(-1, -2), _matvec(C, u))
        return l_dE, m_dS

    def matrices(self, x, dE, dS):
        P_S = projector(dS, self.eps)
        L = P_S @ self.A.matrix(x).to(dE.dtype) @ P_S
        W = self._rows(dE)
        C = self.C.to(dE.dtype)
        log_d = self._log_d(x, dE)
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
