"""Damped nonlinear oscillator in GENERIC form (protocol v1), x = (q, p, S).

E = p^2 / (2m) - k cos q + T S, S(x) = x_3, m = T = 1;
dq/dt = p/m, dp/dt = -k sin q - gamma p, dS/dt = gamma p^2 / (m T).
L = canonical on (q, p), zero on S; M = (gamma / (m T)) v v^T with v = (0, m T, -p),
so L grad S = 0, M grad E = 0 and dS/dt = gamma p^2 / (m T) >= 0 exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sp_dynamics.system import System, ring_states


class DampedNonlinearOscillator(System):
    name = "dno"
    dim = 3
    kind = "generic"
    param_names = ("k", "gamma")
    param_box = ((1.0, 6.0), (0.04, 0.25))
    field_radius = 1.2 * 2.3  # grid over (q, p) with S = 0
    mass = 1.0
    temperature = 1.0

    def E(self, mu: Tensor, x: Tensor) -> Tensor:
        k = mu[..., 0]
        q, p, s = x[..., 0], x[..., 1], x[..., 2]
        return p**2 / (2 * self.mass) - k * torch.cos(q) + self.temperature * s

    def S(self, mu: Tensor, x: Tensor) -> Tensor:
        return x[..., 2] + 0 * mu[..., 0]

    def f(self, mu: Tensor, x: Tensor) -> Tensor:
        k, gamma = mu[..., 0], mu[..., 1]
        q, p = x[..., 0], x[..., 1]
        m, T = self.mass, self.temperature
        return torch.stack([p / m + 0 * k, -k * torch.sin(q) - gamma * p, gamma * p**2 / (m * T)], -1)

    def M(self, mu: Tensor, x: Tensor) -> Tensor:
        gamma = mu[..., 1]
        m, T = self.mass, self.temperature
        p = x[..., 1]
        v = torch.stack([torch.zeros_like(p), torch.full_like(p, m * T), -p], -1)
        return (gamma / (m * T))[..., None, None] * v.unsqueeze(-1) * v.unsqueeze(-2)

    def sample_initial_states(self, mu: Tensor, n: int, generator: torch.Generator) -> Tensor:
        return ring_states(n, 1.3, 2.3, generator, extra=1)  # S0 = 0
