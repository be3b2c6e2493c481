"""Small neural building blocks: MLPs and scalar functions of the state."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn
from .serialization import serializable

__all__ = ["MLP", "Scaled", "ScalarFunction", "Standardize", "WallFeatures", "standardize_inputs", "gradient",
           "activation", "count_parameters", "matched_width"]

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "sin": lambda: _Sin(),
}


class _Sin(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.sin(x)


def activation(name: str) -> nn.Module:
    """Activation by name. Smooth ones only: Hamiltonian losses differentiate the network twice."""
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; available: {sorted(_ACTIVATIONS)}") from None


@serializable
class MLP(nn.Sequential):
    """``depth`` hidden layers of width ``hidden`` with a smooth activation, then a linear head.

    Shapes: (..., in_dim) -> (..., out_dim).
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 64, depth: int = 3, act: str = "tanh"):
        if depth < 1:
            raise ValueError(f"MLP depth must be >= 1, got {depth}")
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), activation(act)]
            width = hidden
        layers.append(nn.Linear(width, out_dim))
        super().__init__(*layers)
        self.in_dim, self.out_dim = in_dim, out_dim


def parse_walls(walls, dim: int, who: str = "walls") -> tuple[tuple[int, float, float], ...]:
    """Check and normalise ``walls``: a sequence of ``(coordinate, lo, hi)`` (finite, lo < hi,
    coordinate in ``[0, dim)``, each coordinate once). Lists (as read back from JSON) are accepted."""
    out: list[tuple[int, float, float]] = []
    for entry in walls or ():
        try:
            c, lo, hi = entry
            c_int, lo, hi = int(c), float(lo), float(hi)
        except (TypeError, ValueError):
            raise ValueError(f"{who}: each entry must be (coordinate, lo, hi), got {entry!r}") from None
        if c_int != c or not 0 <= c_int < dim:
            raise ValueError(f"{who}: coordinate {c!r} is not an index of a state of dimension {dim}")
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"{who}: coordinate {c_int} needs finite walls lo < hi, got ({lo}, {hi})")
        if any(c_int == o[0] for o in out):
            raise ValueError(f"{who}: coordinate {c_int} is listed twice")
        out.append((c_int, lo, hi))
    return tuple(out)


class WallFeatures(nn.Module):
    """``x -> (x, log(x_c - lo_c), log(hi_c - x_c), ...)`` for coordinates confined to an open
    interval ``(lo_c, hi_c)``: (..., n) -> (..., n + 2 k) for k walled coordinates.

    Why: a potential that blows up like a power of the distance to a wall (a gas whose volume goes
    to zero: E = (e^S / V)^(2/3)) is steep in x_c but smooth, often linear, in log(x_c - lo).
    A network that sees the log-distances extrapolates the steep force past the data instead of
    flattening it (``experiments/PROTOCOL.md``, "Gas containers: wall inputs, the energy term
    and a polishing phase": 2.5-2.9x lower data-region field error in good basins). The map
    is fixed and differentiable, so the gradient of ``E(x) = MLP(features(x))`` is exact and the
    model's structure is unchanged. States on or outside a wall give non-finite features.
    """

    def __init__(self, dim: int, walls):
        super().__init__()
        self.walls = parse_walls(walls, dim)
        if not self.walls:
            raise ValueError("WallFeatures needs at least one (coordinate, lo, hi) entry")
        self.in_dim, self.out_dim = dim, dim + 2 * len(self.walls)

    def forward(self, x: Tensor) -> Tensor:
        parts = [x]
        for c, lo, hi in self.walls:
            xc = x[..., c:c + 1]
            parts += [torch.log(xc - lo), torch.log(hi - xc)]
        return torch.cat(parts, -1)


class Standardize(nn.Module):
    """Fixed affine input map ``(x - shift) / scale`` (buffers, saved with the model).

    Starts as the identity; :func:`standardize_inputs` sets it from data once, so a learned
    network sees O(1) inputs whatever the units of the state (the gas containers' entropies
    sit in [1, 3], their piston in (0, 2)). It is part of the function, not of the training:
    the model's energy is ``E(x) = MLP((x - shift) / scale)`` and its gradient follows.
    With ``features`` (e.g. :class:`WallFeatures`) the map is ``(features(x) - shift) / scale``,
    standardised over the features: (..., dim) -> (..., features.out_dim).
    """

    def __init__(self, dim: int, features: nn.Module | None = None):
        super().__init__()
        self.in_dim = dim
        self.features = features
        width = features.out_dim if features is not None else dim
        self.register_buffer("shift", torch.zeros(width))
        self.register_buffer("scale", torch.ones(width))
        self.register_buffer("is_set", torch.zeros((), dtype=torch.bool))

    def forward(self, x: Tensor) -> Tensor:
        if self.features is not None:
            x = self.features(x)
        if not bool(self.is_set):
            return x
        return (x - self.shift.to(x.dtype)) / self.scale.to(x.dtype)

    @torch.no_grad()
    def set_from(self, x: Tensor) -> None:
        """Shift and scale from data states (..., dim): per-coordinate mean and standard
        deviation (a coordinate that never varies keeps scale 1)."""
        if self.features is not None:
            x = self.features(x)
            if not bool(torch.isfinite(x).all()):
                raise ValueError(f"standardize_inputs: some data states lie on or outside the walls "
                                 f"{self.features.walls} (coordinate, lo, hi) of the network's log-distance inputs")
        flat = x.reshape(-1, x.shape[-1]).to(self.shift.dtype)
        std = flat.std(0) if len(flat) > 1 else torch.ones_like(self.scale)
        self.shift.copy_(flat.mean(0))
        self.scale.copy_(torch.where(std > 1e-12, std, torch.ones_like(std)))
        self.is_set.fill_(True)


def standardize_inputs(model: nn.Module, x: Tensor, overwrite: bool = False) -> int:
    """Set every :class:`Standardize` inside ``model`` from data states x (..., n).

    Modules already set are left alone unless ``overwrite`` (changing them changes the learned
    function). Returns how many were set."""
    count = 0
    for module in model.modules():
        if isinstance(module, Standardize) and (overwrite or not bool(module.is_set)):
            if module.in_dim != x.shape[-1]:
                raise ValueError(f"standardize_inputs: data have {x.shape[-1]} coordinates, the network input "
                                 f"has {module.in_dim}")
            module.set_from(x)
            count += 1
    return count


class ScalarFunction(nn.Module):
    """A scalar function of the state, known (a callable) or learned (a module).

    ``(..., n) -> (...)``: a trailing output dimension of size 1 is dropped. ``standardize``
    (input dimension n, or a :class:`Standardize`): pass inputs through it first (learned networks).
    """

    def __init__(self, fn: Callable[[Tensor], Tensor], standardize: int | Standardize | None = None):
        super().__init__()
        self.fn = fn  # registered as a submodule when it is one
        if isinstance(standardize, int):
            standardize = Standardize(standardize) if standardize > 0 else None
        self.standardize = standardize

    def forward(self, x: Tensor) -> Tensor:
        y = self.fn(x if self.standardize is None else self.standardize(x))
        if y.ndim == x.ndim and y.shape[-1] == 1:
            y = y.squeeze(-1)
        return y


def _under_func_transform() -> bool:
    peek = getattr(torch._C._functorch, "peek_interpreter_stack", None)
    return peek is not None and peek() is not None


def gradient(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """``grad fn(x)`` for a scalar function over a batch, shape (..., n).

    The result stays differentiable (w.r.t. x and parameters) whenever grad mode is on at the
    call, so it can be used in training losses and differentiated again; under ``no_grad`` it
    is computed and detached. Inside a ``torch.func`` transform it uses ``torch.func.grad``, so
    the models compose with ``vmap`` / ``jacrev`` (the per-sample Jacobians of
    :func:`sp_dynamics.fit`'s Levenberg-Marquardt phase).
    """
    if _under_func_transform():  # inside torch.func (vmap / jacrev): autograd.grad is not allowed there
        return torch.func.grad(lambda y: fn(y).sum())(x)
    create_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        xg = x if x.requires_grad else x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(fn(xg).sum(), xg, create_graph=create_graph)
    return g


class Scaled(nn.Module):
    """``scale * net(x)`` with a fixed (non-trainable) constant scale: lets an MLP with O(1)
    outputs represent an energy of a known typical size."""

    def __init__(self, net: nn.Module, scale: float):
        super().__init__()
        self.net, self.scale = net, float(scale)

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * self.net(x)


def count_parameters(model: nn.Module) -> int:
    """All parameters of ``model``, trainable or not."""
    return sum(p.numel() for p in model.parameters())


def matched_width(make: Callable[[int], nn.Module], target: int) -> int:
    """The width ``w`` for which ``count_parameters(make(w))`` is closest to ``target`` (the count
    must grow with the width): equal-parameter baselines."""
    def size(w: int) -> int:
        return count_parameters(make(w))

    lo, hi = 1, 1024  # bisect for the last width at or below target
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if size(mid) <= target else (lo, mid - 1)
    return min((lo, lo + 1), key=lambda w: abs(size(w) - target))
