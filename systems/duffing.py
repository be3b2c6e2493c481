"""Undamped Duffing oscillator (protocol v1): H = p^2 / 2 + alpha q^2 / 2 + beta q^4 / 4."""

from __future__ import annotations

import torch
from torch import Tensor

from sp_dynamics.system import System, ring_states


class Duffing(System):
    name = "duffing"
    dim = 2
    param_names = ("alpha", "beta")
    param_box = ((0.5, 2.0), (0.1, 1.0))
    field_radius = 1.2 * 1.5

    def E(self, mu: Tensor, x: Tensor) -> Tensor:
        a, b = mu[..., 0], mu[..., 1]
        q, p = x[..., 0], x[..., 1]
        return p**2 / 2 + a * q**2 / 2 + b * q**4 / 4

    def f(self, mu: Tensor, x: Tensor) -> Tensor:
        a, b = mu[..., 0], mu[..., 1]
        q, p = x[..., 0], x[..., 1]
        return torch.stack([p, -a * q - b * q**3], -1)

    def sample_initial_states(self, mu: Tensor, n: int, generator: torch.Generator) -> Tensor:
        return ring_states(n, 0.5, 1.5, generator)
