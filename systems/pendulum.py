"""Ideal pendulum (protocol v1): H = p^2 / (2 m l^2) + m g l (1 - cos q), g = 9.81."""

from __future__ import annotations

import torch
from torch import Tensor

from sp_dynamics.system import System, ring_states

G = 9.81


class Pendulum(System):
    name = "pendulum"
    dim = 2
    param_names = ("m", "l")
    param_box = ((0.5, 2.0), (0.5, 2.0))
    field_radius = 1.2 * 2.3  # protocol: 1.2 x the largest initial radius

    def E(self, mu: Tensor, x: Tensor) -> Tensor:
        m, l = mu[..., 0], mu[..., 1]
        q, p = x[..., 0], x[..., 1]
        return p**2 / (2 * m * l**2) + m * G * l * (1 - torch.cos(q))

    def f(self, mu: Tensor, x: Tensor) -> Tensor:
        m, l = mu[..., 0], mu[..., 1]
        q, p = x[..., 0], x[..., 1]
        return torch.stack([p / (m * l**2), -m * G * l * torch.sin(q)], -1)

    def sample_initial_states(self, mu: Tensor, n: int, generator: torch.Generator) -> Tensor:
        # Radius in [1.3, 2.3) in (q, p); states at or above the separatrix energy 2 m g l
        # (rotations rather than oscillations) are rejected and redrawn.
        mu = self.check_params(mu)
        separatrix = 2 * mu[0] * G * mu[1]
        kept: list[Tensor] = []
        count, draws = 0, 0
        while count < n:
            x = ring_states(4 * n, 1.3, 2.3, generator)
            x = x[self.E(mu, x) < separatrix]
            kept.append(x)
            count += len(x)
            draws += 4 * n
            if draws > 10_000 * n:  # pragma: no cover - the protocol box always has room
                raise RuntimeError(f"pendulum: no initial states below the separatrix for mu={mu.tolist()}")
        return torch.cat(kept)[:n]
