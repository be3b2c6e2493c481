"""Every registered system: true brackets, analytic field vs. bracket form, bad input."""

import math

import pytest
import torch

from conftest import GENERIC, HAMILTONIAN, all_system_names
from sp_dynamics import get_system, gradient, list_systems

SYSTEMS = all_system_names()


def _instance(name, gen, n=32):
    s = get_system(name)
    mu = s.sample_params(1, gen)[0]
    x = s.sample_initial_states(mu, n, gen)
    return s, mu, x


def test_builtin_systems_registered():
    assert set(HAMILTONIAN + GENERIC) <= set(list_systems())


@pytest.mark.parametrize("name", SYSTEMS)
def test_true_brackets_structure(name, gen):
    # Catches: a system whose true L is not skew, whose M is not symmetric PSD, or whose
    # brackets violate degeneracy (the data would then not be GENERIC at all).
    s, mu, x = _instance(name, gen)
    L, M = s.poisson_matrix(mu, x), s.friction_matrix(mu, x)
    assert L.shape == M.shape == (len(x), s.dim, s.dim)
    assert (L + L.transpose(-1, -2)).abs().max() <= 1e-12
    assert (M - M.transpose(-1, -2)).abs().max() <= 1e-12
    assert torch.linalg.eigvalsh(M).min() >= -1e-12
    dE = gradient(lambda z: s.E(mu, z), x)
    if s.is_generic:
        dS = gradient(lambda z: s.S(mu, z), x)
        scale = 1 + dE.norm(dim=-1, keepdim=True)
        assert ((L @ dS.unsqueeze(-1)).squeeze(-1) / scale).abs().max() <= 1e-10
        assert ((M @ dE.unsqueeze(-1)).squeeze(-1) / scale).abs().max() <= 1e-10


@pytest.mark.parametrize("name", SYSTEMS)
def test_analytic_field_equals_bracket_form(name, gen):
    # Catches: a typo in a hand-written vector field (sign, factor) -- it must equal
    # L grad E + M grad S with grad from autograd of the energy and entropy.
    s, mu, x = _instance(name, gen)
    f = s.vector_field(mu, x)
    dE = gradient(lambda z: s.E(mu, z), x)
    form = (s.L(mu, x) @ dE.unsqueeze(-1)).squeeze(-1)
    if s.is_generic:
        dS = gradient(lambda z: s.S(mu, z), x)
        form = form + (s.M(mu, x) @ dS.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(f, form, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", SYSTEMS)
def test_pointwise_energy_and_entropy_rates(name, gen):
    # Catches: energy not conserved by the true field, or entropy produced with the wrong sign.
    s, mu, x = _instance(name, gen, n=256)
    f = s.vector_field(mu, x)
    dE = gradient(lambda z: s.E(mu, z), x)
    dEdt = (dE * f).sum(-1)
    assert (dEdt.abs() / (1 + dE.norm(dim=-1) * f.norm(dim=-1))).max() <= 1e-12
    if s.is_generic:
        dSdt = (gradient(lambda z: s.S(mu, z), x) * f).sum(-1)
        assert dSdt.min() >= -1e-12
        assert dSdt.max() > 0  # and the system really dissipates


@pytest.mark.parametrize("name", SYSTEMS)
def test_samplers_are_seeded_and_in_box(name):
    # Catches: samplers that ignore the generator (unreproducible data) or leave the box.
    s = get_system(name)
    a = s.sample_params(50, torch.Generator().manual_seed(3))
    b = s.sample_params(50, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.dtype == torch.float64
    for i, (lo, hi) in enumerate(s.param_box):
        assert (a[:, i] >= lo).all() and (a[:, i] < hi).all()
    x1 = s.sample_initial_states(a[0], 20, torch.Generator().manual_seed(4))
    x2 = s.sample_initial_states(a[0], 20, torch.Generator().manual_seed(4))
    assert x1.shape == (20, s.dim) and torch.equal(x1, x2)
    s.check_state(x1)
    grid = s.field_grid(50)
    assert grid.shape == (2500, s.dim)
    s.check_state(grid)


def test_protocol_initial_states():
    # Catches: initial-state rules drifting from protocol v1.
    g = torch.Generator().manual_seed(0)
    pend = get_system("pendulum")
    mu = torch.tensor([0.5, 0.5], dtype=torch.float64)  # lowest separatrix: rejection active
    x = pend.sample_initial_states(mu, 500, g)
    r = x.norm(dim=-1)
    assert (r >= 1.3).all() and (r < 2.3).all()
    assert (pend.E(mu, x) < 2 * mu[0] * 9.81 * mu[1]).all()
    dno = get_system("dno")
    x = dno.sample_initial_states(torch.tensor([2.0, 0.1], dtype=torch.float64), 200, g)
    assert (x[:, 2] == 0).all() and (x[:, :2].norm(dim=-1) >= 1.3).all()
    assert math.isclose(pend.field_radius, 2.76) and math.isclose(get_system("duffing").field_radius, 1.8)


@pytest.mark.parametrize("name", SYSTEMS)
def test_bad_input_raises_clear_errors(name, gen):
    # Catches: bad input reaching torch and failing with an opaque trace (or silently).
    s, mu, x = _instance(name, gen, n=4)
    with pytest.raises(ValueError, match=rf"shape \(\.\.\., {s.dim}\)"):
        s.vector_field(mu, torch.zeros(4, s.dim + 1, dtype=torch.float64))
    bad = x.clone()
    bad[1, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        s.energy(mu, bad)
    bad[1, 0] = float("inf")
    with pytest.raises(ValueError, match="inf"):
        s.vector_field(mu, bad)
    neg = mu.clone()
    neg[0] = -1.0
    with pytest.raises(ValueError, match=repr(s.param_names[0])):
        s.vector_field(neg, x)
    with pytest.raises(ValueError, match="parameters must have shape"):
        s.vector_field(mu[:-1] if s.n_params > 1 else torch.zeros(2, dtype=torch.float64), x)


def test_gas_containers_state_domain():
    s = get_system("gas_containers")
    mu = torch.tensor([8.0], dtype=torch.float64)
    with pytest.raises(ValueError, match="q must lie in"):
        s.vector_field(mu, torch.tensor([2.5, 0.0, 2.0, 2.0], dtype=torch.float64))


def test_hamiltonian_system_has_no_entropy():
    s = get_system("pendulum")
    with pytest.raises(NotImplementedError, match="no entropy"):
        s.entropy(torch.tensor([1.0, 1.0]), torch.zeros(2, dtype=torch.float64))
    assert not hasattr(s.dynamics(torch.tensor([1.0, 1.0])), "entropy")
    assert hasattr(get_system("dno").dynamics(torch.tensor([2.0, 0.1])), "entropy")
