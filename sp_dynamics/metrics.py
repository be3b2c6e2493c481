"""Error and structure metrics (protocol v1 definitions, ``experiments/PROTOCOL.md``).

Shapes: trajectories are (J, T, n) -- J trajectories, T times, n state dimension.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .integrators import integrate

__all__ = ["relative_error", "eps_field", "eps_traj", "rollout", "energy_drift", "entropy_increments"]

VectorField = Callable[[Tensor, Tensor], Tensor]


def relative_error(pred: Tensor, true: Tensor, dims: tuple[int, ...]) -> Tensor:
    """``||pred - true||_F / ||true||_F`` over the dimensions ``dims``."""
    return (pred - true).pow(2).sum(dims).sqrt() / true.pow(2).sum(dims).sqrt()


@torch.no_grad()
def eps_field(model: VectorField, true_field: VectorField, grid: Tensor) -> float:
    """Relative Frobenius error of a learned field over a grid of states (G, n)."""
    return float(relative_error(model(0.0, grid), true_field(0.0, grid), (0, 1)))


@torch.no_grad()
def rollout(model: VectorField, x0: Tensor, t: Tensor, method: str = "dopri5", **kwargs) -> Tensor:
    """Trajectories of ``model`` from x0 (J, n) on times t, returned as (J, T, n).

    Default: dopri5 at rtol 1e-7, atol 1e-9 (protocol v1)."""
    if method == "dopri5":
        kwargs = {"rtol": 1e-7, "atol": 1e-9, **kwargs}
    return integrate(model, x0, t, method=method, **kwargs).transpose(0, 1)


def eps_traj(pred: Tensor, true: Tensor) -> Tensor:
    """Per-trajectory relative error ``||X_hat - X||_F / ||X||_F`` of (J, T, n) tensors, (J,)."""
    return relative_error(pred, true, (-2, -1))


@torch.no_grad()
def energy_drift(energy: Callable[[Tensor], Tensor], xs: Tensor, relative: bool = True) -> Tensor:
    """``max_t |H(x(t)) - H(x(0))| / |H(x(0))|`` per trajectory of (J, T, n) states, (J,).

    ``relative=False`` drops the division: use it where H(x(0)) can be near zero (the DNO's
    energy p^2/2 - k cos q + S is), which makes the relative value meaningless."""
    H = energy(xs)
    drift = (H - H[:, :1]).abs().max(-1).values
    return drift / H[:, 0].abs() if relative else drift


@torch.no_grad()
def entropy_increments(entropy: Callable[[Tensor], Tensor], xs: Tensor) -> Tensor:
    """``S(x(t_{i+1})) - S(x(t_i))`` along (J, T, n) trajectories, (J, T - 1)."""
    S = entropy(xs)
    return S[:, 1:] - S[:, :-1]
