"""Two gas containers exchanging heat and volume through a piston, x = (q, p, S1, S2).

E_i = (exp(S_i) / V_i)^(2/3), V1 = q, V2 = 2 - q, E = p^2/2 + E1 + E2, S = S1 + S2,
T_i = (2/3) E_i. L canonical on (q, p), zero on the entropies; M non-zero on (S1, S2) only:
gamma w w^T with w = (1/T1, -1/T2). Formulas as in GFINN (Zhang, Shin, Karniadakis 2022) and
Gruber et al. (ICLR 2025); gamma in [5, 10] covers both papers' choices (10 and 8).
"""

from __future__ import annotations

import torch
from torch import Tensor

from sp_dynamics.system import System


class GasContainers(System):
    name = "gas_containers"
    dim = 4
    kind = "generic"
    param_names = ("gamma",)
    param_box = ((5.0, 10.0),)
    t_end = 8.0
    state_low = (0.2, -1.0, 1.0, 1.0)
    state_high = (1.8, 1.0, 3.0, 3.0)
    field_radius = 1.0  # unused: the grid is the (q, p) initial-state box, see field_grid
    walls = ((0, 0.0, 2.0),)  # the volumes q and 2 - q stay positive

    @staticmethod
    def _internal(x: Tensor) -> tuple[Tensor, Tensor]:
        q, s1, s2 = x[..., 0], x[..., 2], x[..., 3]
        e1 = (torch.exp(s1) / q) ** (2.0 / 3.0)
        e2 = (torch.exp(s2) / (2.0 - q)) ** (2.0 / 3.0)
        return e1, e2

    def E(self, mu: Tensor, x: Tensor) -> Tensor:
        e1, e2 = self._internal(x)
        return x[..., 1] ** 2 / 2 + e1 + e2 + 0 * mu[..., 0]

    def S(self, mu: Tensor, x: Tensor) -> Tensor:
        return x[..., 2] + x[..., 3] + 0 * mu[..., 0]

    def f(self, mu: Tensor, x: Tensor) -> Tensor:
        gamma = mu[..., 0]
        q, p = x[..., 0], x[..., 1]
        e1, e2 = self._internal(x)
        t1, t2 = 2 * e1 / 3, 2 * e2 / 3
        heat = 1 / t1 - 1 / t2
        return torch.stack(
            [p + 0 * gamma, (2.0 / 3.0) * (e1 / q - e2 / (2 - q)), gamma / t1 * heat, -gamma / t2 * heat], -1
        )

    def M(self, mu: Tensor, x: Tensor) -> Tensor:
        gamma = mu[..., 0]
        e1, e2 = self._internal(x)
        w = torch.stack([torch.zeros_like(e1), torch.zeros_like(e1), 3 / (2 * e1), -3 / (2 * e2)], -1)
        return gamma[..., None, None] * w.unsqueeze(-1) * w.unsqueeze(-2)

    def check_state_domain(self, x: Tensor) -> None:
        q = x[..., 0]
        if bool(((q <= 0) | (q >= 2)).any()):
            raise ValueError("gas_containers state: the piston position q must lie in (0, 2) (both volumes positive)")

    def sample_initial_states(self, mu: Tensor, n: int, generator: torch.Generator) -> Tensor:
        lo = torch.tensor(self.state_low, dtype=torch.float64)
        hi = torch.tensor(self.state_high, dtype=torch.float64)
        return lo + (hi - lo) * torch.rand(n, 4, generator=generator, dtype=torch.float64)

    def field_grid(self, n: int = 50) -> Tensor:
        # Our choice (protocol v1): the (q, p) initial-state box, entropies at its centre (2, 2),
        # since q must stay in (0, 2).
        q = torch.linspace(self.state_low[0], self.state_high[0], n, dtype=torch.float64)
        p = torch.linspace(self.state_low[1], self.state_high[1], n, dtype=torch.float64)
        qq, pp = torch.meshgrid(q, p, indexing="ij")
        grid = torch.full((n * n, 4), 2.0, dtype=torch.float64)
        grid[:, 0], grid[:, 1] = qq.reshape(-1), pp.reshape(-1)
        return grid
