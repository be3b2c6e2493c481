"""Structure-preserving vector fields: Hamiltonian, port-Hamiltonian and GENERIC networks.

All models are ``nn.Module`` vector fields with the ``(t, x)`` signature, so they pass straight
to :func:`sp_dynamics.integrate` and ``torchdiffeq.odeint``. States are (..., n) with any
leading dimensions, in float32 or float64 (call ``.double()`` on the model for the latter).

Each model also implements the *discrete-gradient protocol* used by
``integrate(..., method="discrete_gradient")``:

* ``energy(x) -> (...)`` and optionally ``entropy(x) -> (...)``;
* ``field_from_gradients(x, dE, dS) -> (..., n)``: the vector field with the gradients
  supplied by the caller (exact ones give ``forward``; discrete ones give the step).
"""

from __future__ import annotations

import copy
import math

from typing import Callable

import torch
from torch import Tensor, nn

from ._checks import check_shape
from .brackets import CanonicalJ, GenericBracket, LearnedSPD, make_bracket
from .modulation import ModulatedMLP
from .nn import MLP, ScalarFunction, Scaled, Standardize, WallFeatures, gradient, parse_walls
from .serialization import serializable

__all__ = ["HamiltonianNN", "PortHamiltonianNN", "GENERICNet", "KineticPotential", "LatentHamiltonianNN",
           "LatentGENERICNet"]

ScalarFn = Callable[[Tensor], Tensor]


def _input_map(dim: int, walls) -> Standardize:
    """A learned network's input map: the state, with the log-distances to ``walls`` if any, standardised."""
    return Standardize(dim, WallFeatures(dim, walls) if walls else None)


def _scalar(fn: ScalarFn | nn.Module | None, in_dim: int, hidden: int, depth: int, act: str,
            walls=()) -> ScalarFunction:
    if fn is None:  # a learned MLP sees standardised inputs (identity until standardize_inputs)
        standardize = _input_map(in_dim, walls)
        return ScalarFunction(MLP(len(standardize.shift), 1, hidden, depth, act), standardize=standardize)
    return ScalarFunction(fn)


class KineticPotential(nn.Module):
    """A learned energy that splits as ``E(x) = K(p) + U(q, s)`` for states ``x = (q, p, s)``
    with ``d`` positions q, ``d`` momenta p and any further coordinates s (e.g. entropies).

    Both parts are MLPs of standardised inputs (one :class:`~sp_dynamics.nn.Standardize` over
    the whole state, set by :func:`sp_dynamics.nn.standardize_inputs`). Why: the kinetic energy
    of a mechanical system does not depend on where it is, and a network that knows this
    extrapolates the force ``-dU/dq`` to momenta the data never reached (``experiments/PROTOCOL.md``,
    "Gas containers"). (..., n) -> (...).

    ``split=True`` further splits the potential over the further coordinates,
    ``U(q, s) = sum_k U_k(q, s_k)``, one MLP per s_k: a system of subsystems (gas containers,
    heat baths) whose internal energies each depend on the shared positions and their own
    entropy only (the gas containers' true energy has this form). Each U_k is then a function of
    d + 1 variables, which trajectories cover more densely than the joint (q, s) space. It did
    not lower the gas field error in the one probe made (``experiments/PROTOCOL.md``, "Gas
    containers: whole-fit starts and the split potential"); it is an option, not a default.

    ``positive=True`` makes each potential the exponential of its network, ``U = exp(g)``
    (``U_k = exp(g_k)`` when split): a potential that is positive and whose logarithm is the
    smooth part, as for internal energies of ideal gases, ``E_i = exp((2/3) S_i) V_i^(-2/3)``,
    whose logarithm is linear in S_i and in the log-distance to a wall (``walls``). On the first 11
    of the 30 gas single fits it ran, it did not beat the plain potential (``experiments/PROTOCOL.md``,
    "Gas containers: the longer polish over all 30 fits, and a positive potential"); an option.
    """

    def __init__(self, dim: int, d: int, hidden: int = 64, depth: int = 3, act: str = "tanh",
                 split: bool = False, walls=(), positive: bool = False):
        super().__init__()
        if not 1 <= d <= dim // 2:
            raise ValueError(f"a separable energy needs 1 <= d <= {dim // 2} (q, p) pairs in a state of dimension {dim}, got {d}")
        if split and dim == 2 * d:
            raise ValueError(f"split=True splits the potential over the coordinates after (q, p); a state of "
                             f"dimension {dim} with d = {d} has none")
        walls = parse_walls(walls, dim)
        if any(d <= c < 2 * d for c, _, _ in walls):
            raise ValueError(f"walls: a separable energy takes log-distance inputs in the potential only, so the "
                             f"walled coordinates must be positions or further coordinates, not momenta "
                             f"(indices {d}..{2 * d - 1}); got {[c for c, _, _ in walls]}")
        self.d, self.dim = d, dim
        self.split, self.positive = bool(split), bool(positive)
        self.standardize = _input_map(dim, walls)
        extra = 2 * len(walls)  # the log-distances, after the state in the standardised input
        self.kinetic = MLP(d, 1, hidden, depth, act)
        if self.split:
            self.potentials = nn.ModuleList(MLP(d + 1 + extra, 1, hidden, depth, act) for _ in range(dim - 2 * d))
        else:
            self.potential = MLP(dim - d + extra, 1, hidden, depth, act)

    def forward(self, x: Tensor) -> Tensor:
        d, n = self.d, self.dim
        y = self.standardize(x)
        q, walls = y[..., :d], y[..., n:]
        out = torch.exp if self.positive else (lambda g: g)
        if self.split:
            potential = sum(out(u(torch.cat([q, y[..., 2 * d + k:2 * d + k + 1], walls], -1)))
                            for k, u in enumerate(self.potentials))
        else:
            potential = out(self.potential(torch.cat([q, y[..., 2 * d:n], walls], -1)))
        return (self.kinetic(y[..., d:2 * d]) + potential).squeeze(-1)


@serializable
class HamiltonianNN(nn.Module):
    """Hamiltonian neural network ``dx/dt = J grad H(x)`` on ``x = (q, p)``.

    The flow conserves ``H`` exactly in continuous time, for any parameters.

    Args:
        dim: state dimension n = 2 d (even).
        hidden, depth, act: the energy MLP (default 3 x 64, tanh).
        energy: a known or custom energy ``(..., n) -> (...)`` instead of the MLP.
        separable: ``H = T(p) + V(q)`` with two MLPs, so the explicit leapfrog integrator
            is exact Stormer--Verlet for the model.

    Example::

        model = HamiltonianNN(2).double()
        x = torch.randn(16, 2, dtype=torch.float64)
        dx = model(0.0, x)             # (16, 2)
        H = model.energy(x)            # (16,)
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 64,
        depth: int = 3,
        act: str = "tanh",
        energy: ScalarFn | nn.Module | None = None,
        separable: bool = False,
    ):
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"{type(self).__name__} needs an even state dimension (q, p), got {dim}")
        self.dim = dim
        self.separable = separable
        self.J = CanonicalJ(dim // 2)
        if separable:
            if energy is not None:
                raise ValueError("pass either energy=... or separable=True, not both")
            d = dim // 2
            self.kinetic = _scalar(None, d, hidden, depth, act)
            self.potential = _scalar(None, d, hidden, depth, act)
        else:
            self.energy_net = _scalar(energy, dim, hidden, depth, act)

    def energy(self, x: Tensor) -> Tensor:
        """H(x), shape (...)."""
        _check_input(self, x)
        if self.separable:
            d = self.dim // 2
            return self.kinetic(x[..., d:]) + self.potential(x[..., :d])
        return self.energy_net(x)

    def field_from_gradients(self, x: Tensor, dE: Tensor, dS: Tensor | None = None) -> Tensor:
        return self.J.matvec(dE)

    def forward(self, t, x: Tensor) -> Tensor:
        _check_input(self, x)
        return self.field_from_gradients(x, gradient(self.energy, x))


@serializable
class PortHamiltonianNN(HamiltonianNN):
    """Dissipative (port-Hamiltonian) network ``dx/dt = (J - R(x)) grad H(x)``.

    ``R = C C^T`` (C lower triangular, positive diagonal) is symmetric PSD by construction,
    so ``dH/dt = -grad H^T R grad H <= 0`` for every parameter value: the dissipation sign is
    guaranteed, not learned.

    Args:
        dim: n (even). state_dependent_R: R as an MLP of x. Other args as :class:`HamiltonianNN`.
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 64,
        depth: int = 3,
        act: str = "tanh",
        energy: ScalarFn | nn.Module | None = None,
        separable: bool = False,
        state_dependent_R: bool = False,
    ):
        super().__init__(dim, hidden, depth, act, energy, separable)
        self.R = LearnedSPD(dim, state_dependent=state_dependent_R, init_std=0.1)

    def _R_input(self, x: Tensor) -> Tensor | None:
        return x if self.R.state_dependent else None

    def dissipation_matrix(self, x: Tensor) -> Tensor:
        """R(x), shape (n, n) or (..., n, n); symmetric PSD."""
        return self.R.matrix(self._R_input(x)).to(x.dtype)

    def field_from_gradients(self, x: Tensor, dE: Tensor, dS: Tensor | None = None) -> Tensor:
        return self.J.matvec(dE) - self.R.matvec(self._R_input(x), dE)


@serializable
class GENERICNet(nn.Module):
    """GENERIC / metriplectic network ``dx/dt = L grad E + M grad S``.

    With an exact bracket (``"mixed"``, ``"projection"`` or ``"basis"``) the degeneracy conditions
    hold by construction, so ``dE/dt = 0`` and ``dS/dt = grad S^T M grad S >= 0`` for every
    parameter value. With ``"soft"`` add :meth:`penalty` to the training loss. The default,
    ``"mixed"`` (:class:`~sp_dynamics.brackets.MixedBracket`), is the construction that learned the
    dissipative benchmark systems (``experiments/results/fit_generic.md``); train one instance
    with :func:`sp_dynamics.fit`. The learned E and S networks standardise their inputs
    (:func:`sp_dynamics.nn.standardize_inputs`, done by ``fit``).

    Args:
        dim: n.
        bracket: ``"mixed"``, ``"projection"``, ``"basis"``, ``"soft"`` or a :class:`GenericBracket`.
        energy, entropy: known or custom scalar functions instead of MLPs.
        hidden, depth, act: the energy and entropy MLPs.
        separable: d > 0 makes the learned energy :class:`KineticPotential`, ``K(p) + U(q, s)``
            for states ``(q, p, s)`` with d positions and d momenta first (0: one MLP).
        split_potential: with ``separable``, ``U(q, s) = sum_k U_k(q, s_k)`` (one network per
            further coordinate; see :class:`KineticPotential`).
        positive_potential: with ``separable``, each potential is ``exp`` of its network (positive,
            log-smooth; see :class:`KineticPotential`).
        walls: ``((coordinate, lo, hi), ...)`` for coordinates confined to an open interval (e.g. a
            piston between two walls, ``System.walls``): the learned energy also sees the
            log-distances to the walls (:class:`~sp_dynamics.nn.WallFeatures`), so forces that
            blow up at a wall are smooth in its inputs. The entropy network and the bracket are
            unchanged. Default ``()``: none.
        **bracket_kwargs: passed to the bracket when built by name (e.g. ``rank=2``).

    Example::

        model = GENERICNet(3).double()
        x = torch.randn(8, 3, dtype=torch.float64)
        model(0.0, x).shape            # (8, 3)
    """

    def __init__(
        self,
        dim: int,
        bracket: str | GenericBracket = "mixed",
        energy: ScalarFn | nn.Module | None = None,
        entropy: ScalarFn | nn.Module | None = None,
        hidden: int = 64,
        depth: int = 3,
        act: str = "tanh",
        separable: int = 0,
        split_potential: bool = False,
        walls=(),
        positive_potential: bool = False,
        **bracket_kwargs,
    ):
        super().__init__()
        self.dim = dim
        self.bracket = make_bracket(bracket, dim, **bracket_kwargs) if isinstance(bracket, str) else bracket
        if self.bracket.dim != dim:
            raise ValueError(f"bracket dimension {self.bracket.dim} does not match state dimension {dim}")
        if separable and energy is not None:
            raise ValueError("pass either energy=... or separable=d, not both")
        if split_potential and not separable:
            raise ValueError("split_potential=True needs separable=d (the number of (q, p) pairs)")
        if positive_potential and not separable:
            raise ValueError("positive_potential=True needs separable=d (the number of (q, p) pairs)")
        walls = parse_walls(walls, dim)
        if walls and energy is not None:
            raise ValueError("walls=... gives the learned energy network log-distance inputs; a given energy=... has none")
        if separable:
            self.energy_net = ScalarFunction(KineticPotential(dim, int(separable), hidden, depth, act,
                                                              split=split_potential, walls=walls,
                                                              positive=positive_potential))
        else:
            self.energy_net = _scalar(energy, dim, hidden, depth, act, walls=walls)
        self.entropy_net = _scalar(entropy, dim, hidden, depth, act)

    def energy(self, x: Tensor) -> Tensor:
        return self.energy_net(x)

    def entropy(self, x: Tensor) -> Tensor:
        return self.entropy_net(x)

    def gradients(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(grad E, grad S)``, each (..., n)."""
        return gradient(self.energy, x), gradient(self.entropy, x)

    def field_from_gradients(self, x: Tensor, dE: Tensor, dS: Tensor) -> Tensor:
        return self.bracket.field(x, dE, dS)

    def forward(self, t, x: Tensor) -> Tensor:
        _check_input(self, x)
        return self.bracket.field(x, *self.gradients(x))

    def penalty(self, x: Tensor) -> Tensor:
        """Mean ``||L grad S||^2 + ||M grad E||^2`` (round-off for exact brackets)."""
        return self.bracket.penalty(x, *self.gradients(x))

    def residuals(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.bracket.residuals(x, *self.gradients(x))


def _check_input(model: nn.Module, x: Tensor) -> None:
    # Cheap checks on the hot path (no host sync): shape, and a dtype that matches the weights
    # (float32 states into a float64 model failed deep inside torch's linear layers). Finiteness
    # checks happen at the API edges (integrate, systems, datasets, trainers).
    who = type(model).__name__
    check_shape(x, model.dim, f"{who} input")
    p = next(model.parameters(), None)
    if p is not None and x.dtype != p.dtype:
        raise ValueError(f"{who} input is {str(x.dtype).removeprefix('torch.')} but the model's weights are "
                         f"{str(p.dtype).removeprefix('torch.')}: convert one to match, e.g. x.to({p.dtype}) "
                         f"or model.to({x.dtype})")


class _Conditioned(nn.Module):
    """A latent model with its latent bound: a plain ``(t, x)`` model for :func:`integrate`."""

    def __init__(self, model: nn.Module, z: Tensor):
        super().__init__()
        self.model, self.z, self.dim = model, z, model.dim

    def energy(self, x: Tensor) -> Tensor:
        return self.model.energy(x, self.z)

    def field_from_gradients(self, x: Tensor, dE: Tensor, dS: Tensor | None = None) -> Tensor:
        return self.model.field_from_gradients(x, dE, dS)

    def forward(self, t, x: Tensor) -> Tensor:
        return self.model(t, x, self.z)


class _ConditionedGeneric(_Conditioned):
    def entropy(self, x: Tensor) -> Tensor:
        return self.model.entropy(x, self.z)


def _latent_energy(net, x: Tensor, z: Tensor) -> Tensor:
    return net(x, z).squeeze(-1)


@serializable
class LatentHamiltonianNN(nn.Module):
    """Hamiltonian network whose energy MLP is modulated by a per-system latent z.

    ``dx/dt = J grad_x H(x; z)``: energy is conserved exactly for every z. The energy network
    is a :class:`~sp_dynamics.modulation.ModulatedMLP` (FW, Shift, RO, MR(r), SVD(r)).

    Shapes: x (K, N, n) with z (K, k) for K tasks at once, or x (..., n) with one z (k,).

    Example::

        model = LatentHamiltonianNN(2, kind="svd", rank=5, latent_dim=8).double()
        dx = model(0.0, x, z)                 # batched over tasks
        xs = integrate(model.condition(z[0]), x0, t, method="implicit_midpoint")

    ``energy_scale`` multiplies the MLP's output, ``H = energy_scale * MLP(x; z)``, so a family
    whose energies are O(100) is learned by an MLP whose outputs stay O(1) (set it from the
    data, e.g. mean |x| times mean |dx/dt|). It is a fixed constant, not a parameter.
    """

    def __init__(self, dim: int, kind: str = "svd", rank: int = 5, latent_dim: int = 8,
                 hidden: int = 64, depth: int = 3, act: str = "tanh", hyper_hidden: int = 64,
                 energy_scale: float = 1.0):
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"{type(self).__name__} needs an even state dimension (q, p), got {dim}")
        if not (math.isfinite(energy_scale) and energy_scale > 0):
            raise ValueError(f"energy_scale must be a positive finite number, got {energy_scale}")
        self.dim, self.latent_dim, self.energy_scale = dim, latent_dim, float(energy_scale)
        self.J = CanonicalJ(dim // 2)
        self.energy_net = ModulatedMLP(dim, 1, hidden, depth, act, kind, rank, latent_dim, hyper_hidden)

    def energy(self, x: Tensor, z: Tensor) -> Tensor:
        return self.energy_scale * _latent_energy(self.energy_net, x, z)

    def field_from_gradients(self, x: Tensor, dE: Tensor, dS: Tensor | None = None) -> Tensor:
        return self.J.matvec(dE)

    def forward(self, t, x: Tensor, z: Tensor) -> Tensor:
        _check_input(self, x)
        return self.J.matvec(gradient(lambda y: self.energy(y, z), x))

    def condition(self, z: Tensor) -> nn.Module:
        """This model with the latent z (k,) bound: a ``(t, x)`` model for :func:`integrate`."""
        return _Conditioned(self, z)

    def merge(self, z: Tensor) -> HamiltonianNN:
        """A plain :class:`HamiltonianNN` whose energy MLP has z's modulation folded in."""
        merged = self.energy_net.merge(z)
        if self.energy_scale != 1.0:
            merged = Scaled(merged, self.energy_scale)
        return HamiltonianNN(self.dim, energy=merged)


@serializable
class LatentGENERICNet(nn.Module):
    """GENERIC network with latent-modulated energy and entropy MLPs and a shared bracket.

    With an exact bracket, ``L grad S = 0`` and ``M grad E = 0`` hold for every z, so
    ``dE/dt = 0`` and ``dS/dt >= 0`` for every system of the family.

    Args: as :class:`GENERICNet` plus the modulation ``kind``, ``rank``, ``latent_dim``, and

    - ``entropy_gain``: multiply the entropy by ``exp(w . z)`` (``w`` learned, zero at
      initialisation, so training starts from the plain model). The bracket is shared by the whole
      family, so a family whose dissipation rate varies (the gas containers' friction gamma) needs
      the latent to reach the rate: ``M grad S`` is linear in ``grad S`` and the mixed and
      projection brackets' ``L`` is unchanged by rescaling ``S``, so with those brackets
      ``S -> c S`` scales the dissipative part of the field by exactly ``c``. A modulated MLP can only approximate that
      factor through its tanh layers. Structure is unaffected (the gain is a positive constant
      for each z). Measured on the gas family, it made no difference once the base was warm
      started (``experiments/PROTOCOL.md``, "Gas containers: meta-learning").
    """

    def __init__(self, dim: int, bracket: str | GenericBracket = "mixed", kind: str = "svd", rank: int = 3,
                 latent_dim: int = 8, hidden: int = 64, depth: int = 3, act: str = "tanh", hyper_hidden: int = 64,
                 entropy_gain: bool = False, **bracket_kwargs):
        super().__init__()
        self.dim, self.latent_dim = dim, latent_dim
        self.bracket = make_bracket(bracket, dim, **bracket_kwargs) if isinstance(bracket, str) else bracket
        if self.bracket.dim != dim:
            raise ValueError(f"bracket dimension {self.bracket.dim} does not match state dimension {dim}")
        self.energy_net = ModulatedMLP(dim, 1, hidden, depth, act, kind, rank, latent_dim, hyper_hidden)
        self.entropy_net = ModulatedMLP(dim, 1, hidden, depth, act, kind, rank, latent_dim, hyper_hidden)
        self.standardize = Standardize(dim)  # of the E and S inputs; set by meta_train from the data
        self.entropy_gain = nn.Linear(latent_dim, 1, bias=False) if entropy_gain else None
        if self.entropy_gain is not None:
            nn.init.zeros_(self.entropy_gain.weight)

    def energy(self, x: Tensor, z: Tensor) -> Tensor:
        return _latent_energy(self.energy_net, self.standardize(x), z)

    def entropy_scale(self, z: Tensor) -> Tensor:
        """The latent's entropy gain ``exp(w . z)``, shape (K, 1) for z (K, k) or (1,) for z (k,);
        1 without ``entropy_gain``."""
        if self.entropy_gain is None:
            return torch.ones(z.shape[:-1] + (1,), dtype=z.dtype, device=z.device)
        return torch.exp(self.entropy_gain(z))

    def entropy(self, x: Tensor, z: Tensor) -> Tensor:
        S = _latent_energy(self.entropy_net, self.standardize(x), z)
        return S if self.entropy_gain is None else self.entropy_scale(z) * S

    def gradients(self, x: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        return gradient(lambda y: self.energy(y, z), x), gradient(lambda y: self.entropy(y, z), x)

    def field_from_gradients(self, x: Tensor, dE: Tensor, dS: Tensor) -> Tensor:
        return self.bracket.field(x, dE, dS)

    def forward(self, t, x: Tensor, z: Tensor) -> Tensor:
        _check_input(self, x)
        return self.bracket.field(x, *self.gradients(x, z))

    def residuals(self, x: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        return self.bracket.residuals(x, *self.gradients(x, z))

    def condition(self, z: Tensor) -> nn.Module:
        return _ConditionedGeneric(self, z)

    @torch.no_grad()
    def load_base(self, net: GENERICNet) -> "LatentGENERICNet":
        """Start from a fitted single-system :class:`GENERICNet`: copy its energy and entropy MLPs
        into the base layers of the modulated ones, its bracket and its input standardisation.

        The modulations are left as initialised (zero for FW, Shift, MR and RO; singular values
        of 1e-3 for SVD), so every latent starts close to ``net``; the entropy gain stays 1. Why:
        when the members of a family share most of their model (the gas containers share E and S
        and differ only in the friction), a single fit is a far better start for the shared base
        than random weights (``experiments/PROTOCOL.md``, "Gas containers: meta-learning").
        ``net`` must have plain MLP energy and entropy networks of this model's width, depth and
        activation, and a bracket of the same class and settings. Returns self."""
        who = type(self).__name__
        if not isinstance(net, GENERICNet) or net.dim != self.dim:
            raise ValueError(f"{who}.load_base needs a GENERICNet of dimension {self.dim}, got {type(net).__name__}")
        if type(net.bracket) is not type(self.bracket):
            raise ValueError(f"{who}.load_base: bracket {type(net.bracket).__name__} does not match this model's "
                             f"{type(self.bracket).__name__}")
        pairs = []
        for name in ("energy_net", "entropy_net"):
            src, dst = getattr(net, name), getattr(self, name)
            mlp = getattr(src, "fn", None)
            linears = [m for m in mlp if isinstance(m, nn.Linear)] if isinstance(mlp, MLP) else []
            targets = list(dst.layers) + [dst.head]
            if len(linears) != len(targets) or any(a.weight.shape != b.weight.shape for a, b in zip(linears, targets)):
                raise ValueError(f"{who}.load_base: the {name.split('_')[0]} network must be an MLP with {dst.layers[0].out_features} "
                                 f"hidden units and {len(dst.layers)} hidden layers, like this model's")
            if type(mlp[1]) is not type(dst.act):
                raise ValueError(f"{who}.load_base: activation {type(mlp[1]).__name__} does not match {type(dst.act).__name__}")
            pairs += list(zip(linears, targets))
        theirs, ours = net.bracket.state_dict(), self.bracket.state_dict()
        if theirs.keys() != ours.keys() or any(theirs[k].shape != ours[k].shape for k in ours):
            raise ValueError(f"{who}.load_base: the brackets' settings differ (parameters "
                             f"{sorted(set(theirs) ^ set(ours)) or 'of other shapes'})")
        e_std, s_std = net.energy_net.standardize, net.entropy_net.standardize
        if not (torch.equal(e_std.shift, s_std.shift) and torch.equal(e_std.scale, s_std.scale)):
            raise ValueError(f"{who}.load_base: the energy and entropy networks standardise their inputs differently; "
                             "this model has one standardisation for both")
        # every check passed: copy (nothing is changed when one fails)
        self.bracket.load_state_dict(theirs)
        for a, b in pairs:
            b.weight.copy_(a.weight)
            b.bias.copy_(a.bias)
        self.standardize.load_state_dict(e_std.state_dict())
        return self

    def merge(self, z: Tensor) -> GENERICNet:
        """A plain :class:`GENERICNet` (sharing this bracket) with z folded into E and S."""
        std = self.standardize
        entropy = self.entropy_net.merge(z)
        if self.entropy_gain is not None:
            entropy = Scaled(entropy, float(self.entropy_scale(z.detach()).detach()))
        return GENERICNet(self.dim, bracket=self.bracket, energy=nn.Sequential(copy.deepcopy(std), self.energy_net.merge(z)),
                          entropy=nn.Sequential(copy.deepcopy(std), entropy))
