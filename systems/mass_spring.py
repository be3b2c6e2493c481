"""Mass-spring (protocol v1): H = p^2 / (2 m) + k q^2 / 2."""

from __future__ import annotations

import torch
from torch import Tensor

from sp_dynamics.system import System, ring_states


class MassSpring(System):
    name = "mass_spring"
    dim = 2
    param_names = ("m", "k")
    param_box = ((0.5, 2.0), (0.5, 2.0))
    field_radius = 1.2 * 1.0

    def E(self, mu: Tensor, x: Tensor) -> Tensor:
        m, k = mu[..., 0], mu[..., 1]
        return x[..., 1] ** 2 / (2 * m) + k * x[..., 0] ** 2 / 2

    def f(self, mu: Tensor, x: Tensor) -> Tensor:
        m, k = mu[..., 0], mu[..., 1]
        return torch.stack([x[..., 1] / m, -k * x[..., 0]], -1)

    def sample_initial_states(self, mu: Tensor, n: int, generator: torch.Generator) -> Tensor:
        return ring_states(n, 0.1, 1.0, generator)
