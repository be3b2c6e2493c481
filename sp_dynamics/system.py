"""The interface every benchmark system implements (concrete systems live in ``systems/``).

A system is a *family* of ODEs indexed by parameters ``mu``. Subclasses write the physics as
plain broadcasting formulas -- :meth:`System.f`, :meth:`System.E` and, where they apply,
:meth:`System.S`, :meth:`System.L`, :meth:`System.M` -- with ``mu`` of shape (..., P)
broadcasting against states ``x`` of shape (..., n). The public methods (:meth:`vector_field`,
:meth:`energy`, ...) validate their inputs first and raise ``ValueError`` naming the problem.

Example: a user-defined system, registered in one call::

    class Harmonic(System):
        name, dim, param_names = "harmonic", 2, ("w",)
        param_box = ((0.5, 2.0),)
        field_radius = 1.2
        def E(self, mu, x):
            return 0.5 * x[..., 1] ** 2 + 0.5 * mu[..., 0] ** 2 * x[..., 0] ** 2
        def f(self, mu, x):
            return torch.stack([x[..., 1], -mu[..., 0] ** 2 * x[..., 0]], -1)
        def sample_initial_states(self, mu, n, generator):
            return ring_states(n, 0.1, 1.0, generator)

    register_system("harmonic", Harmonic)
"""

from __future__ import annotations

import abc
import math

import torch
from torch import Tensor, nn

from ._checks import check_finite, check_state
from .brackets import CanonicalJ, KnownBracket

__all__ = ["System", "SystemDynamics", "GenericSystemDynamics", "ring_states"]


def ring_states(n: int, r_lo: float, r_hi: float, generator: torch.Generator, extra: int = 0) -> Tensor:
    """n states ``(q, p) = r (cos th, sin th)`` with th ~ U[0, 2 pi), r ~ U[r_lo, r_hi), plus
    ``extra`` zero coordinates. Shape (n, 2 + extra), float64."""
    theta = 2 * math.pi * torch.rand(n, generator=generator, dtype=torch.float64)
    r = r_lo + (r_hi - r_lo) * torch.rand(n, generator=generator, dtype=torch.float64)
    qp = torch.stack([r * torch.cos(theta), r * torch.sin(theta)], -1)
    return torch.cat([qp, qp.new_zeros(n, extra)], -1)


class System(abc.ABC):
    """A parametrised family of Hamiltonian or GENERIC systems on ``x = (q, p[, S...])``.

    Class attributes to set:
        name: registry name. dim: n. n_dof: d, the number of (q, p) pairs (default 1).
        param_names: P names. param_box: P (lo, hi) sampling intervals (uniform).
        param_domain: P open intervals where the physics is defined (default (0, inf)).
        kind: ``"hamiltonian"`` or ``"generic"``.
        t_end: default trajectory horizon. field_radius: R of the (q, p) grid [-R, R]^2 for
            the field error metric (protocol: 1.2 x the largest initial radius).
        walls: ``((coordinate, lo, hi), ...)`` for coordinates the physics confines to an open
            interval (default none); models can take log-distances to them as inputs
            (``GENERICNet(walls=system.walls)``).
    """

    name: str
    dim: int
    n_dof: int = 1
    param_names: tuple[str, ...]
    param_box: tuple[tuple[float, float], ...]
    param_domain: tuple[tuple[float, float], ...] | None = None
    kind: str = "hamiltonian"
    t_end: float = 10.0
    field_radius: float
    walls: tuple[tuple[int, float, float], ...] = ()

    def definition(self) -> dict:
        """What defines this system's data, for cache keys: its class attributes (parameter box,
        dimension, horizon, ...), a ``version`` attribute if the class sets one, and a digest of
        the class's source code where it can be read. Change the physics and the digest changes,
        so a dataset cached under the old definition is not returned for the new one."""
        import hashlib
        import inspect

        attrs = {k: repr(getattr(self, k, None)) for k in ("name", "dim", "n_dof", "param_names", "param_box",
                                                            "param_domain", "kind", "t_end", "field_radius",
                                                            "state_low", "state_high", "version")}
        sources = []
        for cls in type(self).__mro__:
            if cls in (System, object, abc.ABC):
                continue
            try:
                sources.append(inspect.getsource(cls))
            except (OSError, TypeError):  # defined interactively: attributes only
                sources.append(cls.__qualname__)
        attrs["source_sha256"] = hashlib.sha256("\n".join(sources).encode()).hexdigest()[:16]
        return attrs

    # ---- physics (unchecked, broadcasting) -------------------------------------------------
    @abc.abstractmethod
    def f(self, mu: Tensor, x: Tensor) -> Tensor:
        """Analytic vector field, (..., n)."""

    @abc.abstractmethod
    def E(self, mu: Tensor, x: Tensor) -> Tensor:
        """Energy (the Hamiltonian), (...)."""

    def S(self, mu: Tensor, x: Tensor) -> Tensor:
        """Entropy, (...); only GENERIC systems define it."""
        raise NotImplementedError(f"system {self.name!r} is Hamiltonian and has no entropy")

    def L(self, mu: Tensor, x: Tensor) -> Tensor:
        """Poisson matrix, (..., n, n). Default: canonical J on (q, p), zero elsewhere."""
        J = CanonicalJ(self.n_dof, self.dim - 2 * self.n_dof).matrix(x.dtype, x.device)
        return J.expand(*torch.broadcast_shapes(mu.shape[:-1], x.shape[:-1]), self.dim, self.dim)

    def M(self, mu: Tensor, x: Tensor) -> Tensor:
        """Friction matrix, (..., n, n). Default: zero (Hamiltonian)."""
        return x.new_zeros(*torch.broadcast_shapes(mu.shape[:-1], x.shape[:-1]), self.dim, self.dim)

    @abc.abstractmethod
    def sample_initial_states(self, mu: Tensor, n: int, generator: torch.Generator) -> Tensor:
        """n initial states for one instance ``mu`` (shape (P,)), (n, dim) float64."""

    def check_state_domain(self, x: Tensor) -> None:
        """Override to reject states outside the physical domain (raise ValueError)."""

    # ---- public, validated API -------------------------------------------------------------
    @property
    def is_generic(self) -> bool:
        return self.kind == "generic"

    @property
    def n_params(self) -> int:
        return len(self.param_names)

    def check_params(self, mu: Tensor) -> Tensor:
        """Validate parameters of shape (..., P): shape, finiteness, physical domain."""
        if not isinstance(mu, Tensor):
            mu = torch.as_tensor(mu, dtype=torch.float64)
        if mu.ndim == 0 or mu.shape[-1] != self.n_params:
            raise ValueError(
                f"{self.name}: parameters must have shape (..., {self.n_params}) for {self.param_names}, "
                f"got {tuple(mu.shape)}"
            )
        check_finite(mu, f"{self.name} parameters")
        domain = self.param_domain or tuple((0.0, math.inf) for _ in self.param_names)
        for i, (pname, (lo, hi)) in enumerate(zip(self.param_names, domain)):
            v = mu[..., i]
            bad = (v <= lo) | (v >= hi)
            if bool(bad.any()):
                raise ValueError(
                    f"{self.name}: parameter {pname!r} must lie in ({lo}, {hi}), got {v[bad].flatten()[0].item()}"
                )
        return mu

    def check_state(self, x: Tensor) -> Tensor:
        check_state(x, self.dim, f"{self.name} state")
        self.check_state_domain(x)
        return x

    def vector_field(self, mu: Tensor, x: Tensor) -> Tensor:
        """dx/dt at states x (..., n) for parameters mu (..., P)."""
        return self.f(self.check_params(mu).to(x), self.check_state(x))

    def energy(self, mu: Tensor, x: Tensor) -> Tensor:
        return self.E(self.check_params(mu).to(x), self.check_state(x))

    def entropy(self, mu: Tensor, x: Tensor) -> Tensor:
        return self.S(self.check_params(mu).to(x), self.check_state(x))

    def poisson_matrix(self, mu: Tensor, x: Tensor) -> Tensor:
        return self.L(self.check_params(mu).to(x), self.check_state(x))

    def friction_matrix(self, mu: Tensor, x: Tensor) -> Tensor:
        return self.M(self.check_params(mu).to(x), self.check_state(x))

    def sample_params(self, n: int, generator: torch.Generator) -> Tensor:
        """n parameter vectors uniform in ``param_box``, (n, P) float64."""
        lo = torch.tensor([b[0] for b in self.param_box], dtype=torch.float64)
        hi = torch.tensor([b[1] for b in self.param_box], dtype=torch.float64)
        return lo + (hi - lo) * torch.rand(n, self.n_params, generator=generator, dtype=torch.float64)

    def field_grid(self, n: int = 50) -> Tensor:
        """States of the n x n grid for the field error metric, (n*n, dim).

        Default: uniform over ``[-R, R]^2`` in the first (q, p) pair, other coordinates zero.
        """
        R = self.field_radius
        g = torch.linspace(-R, R, n, dtype=torch.float64)
        q, p = torch.meshgrid(g, g, indexing="ij")
        grid = torch.zeros(n * n, self.dim, dtype=torch.float64)
        grid[:, 0], grid[:, self.n_dof] = q.reshape(-1), p.reshape(-1)
        return grid

    def dynamics(self, mu: Tensor) -> "SystemDynamics":
        """The instance ``mu`` as a model: a ``(t, x)`` vector field with ``energy`` (and
        ``entropy``) and the discrete-gradient protocol, ready for :func:`integrate`."""
        cls = GenericSystemDynamics if self.is_generic else SystemDynamics
        return cls(self, self.check_params(mu))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, params={self.param_names})"


class SystemDynamics(nn.Module):
    """One Hamiltonian system instance as a vector field (see :meth:`System.dynamics`)."""

    def __init__(self, system: System, mu: Tensor):
        super().__init__()
        self.system = system
        self.dim = system.dim
        self.register_buffer("mu", mu)
        self._J = CanonicalJ(system.n_dof, system.dim - 2 * system.n_dof)

    def forward(self, t, x: Tensor) -> Tensor:
        return self.system.f(self.mu.to(x), x)

    def energy(self, x: Tensor) -> Tensor:
        return self.system.E(self.mu.to(x), x)

    def field_from_gradients(self, x: Tensor, dE: Tensor, dS: Tensor | None = None) -> Tensor:
        return self._J.matvec(dE)


class GenericSystemDynamics(SystemDynamics):
    """One GENERIC system instance as a vector field with ``entropy``.

    ``field_from_gradients`` uses the true ``L(x)``, ``M(x)`` projected onto the complements of
    the supplied gradients (``P_S L P_S``, ``P_E M P_E``): with exact gradients this is the true
    field (the true brackets are already degenerate); with discrete gradients it makes the
    discrete-gradient step conserve E and never decrease S.
    """

    def __init__(self, system: System, mu: Tensor):
        super().__init__(system, mu)
        self._bracket = KnownBracket(
            lambda x: system.L(self.mu.to(x), x), lambda x: system.M(self.mu.to(x), x), system.dim
        )

    def entropy(self, x: Tensor) -> Tensor:
        return self.system.S(self.mu.to(x), x)

    def field_from_gradients(self, x: Tensor, dE: Tensor, dS: Tensor | None = None) -> Tensor:
        return self._bracket.field(x, dE, dS)
