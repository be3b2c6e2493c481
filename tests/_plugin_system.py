"""A system defined outside the sp-dynamics packages, as a third-party plugin would be."""

import torch

from sp_dynamics import System, ring_states


class Harmonic(System):
    """H = p^2/2 + w^2 q^2/2 with frequency w."""

    name = "harmonic"
    dim = 2
    param_names = ("w",)
    param_box = ((0.5, 2.0),)
    field_radius = 1.2

    def E(self, mu, x):
        return 0.5 * x[..., 1] ** 2 + 0.5 * mu[..., 0] ** 2 * x[..., 0] ** 2

    def f(self, mu, x):
        return torch.stack([x[..., 1], -mu[..., 0] ** 2 * x[..., 0]], -1)

    def sample_initial_states(self, mu, n, generator):
        return ring_states(n, 0.1, 1.0, generator)


def broken_factory():  # an entry point that fails to build a system
    raise RuntimeError("plugin is broken")
