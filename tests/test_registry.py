"""Systems as plugins: registration, entry points, and a system from outside the repository
working end to end (dataset, integrators, models) after one registration call."""

import warnings
from importlib import metadata

import pytest
import torch

import sp_dynamics.registry as registry
from _plugin_system import Harmonic
from sp_dynamics import HamiltonianNN, get_system, integrate, list_systems, make_family_dataset, register_system
from sp_dynamics.registry import ENTRY_POINT_GROUP, unregister_system


@pytest.fixture
def fresh_registry(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    return registry


def test_unknown_system_lists_available():
    with pytest.raises(ValueError) as err:
        get_system("pendullum")
    msg = str(err.value)
    assert "pendullum" in msg and all(n in msg for n in ["pendulum", "dno", "gas_containers"])


def test_builtins_are_declared_as_entry_points():
    # Catches: pyproject losing the entry points through which the core finds built-ins.
    names = {ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    assert {"pendulum", "mass_spring", "duffing", "dno", "gas_containers"} <= names


def test_register_rules(fresh_registry):
    register_system("harmonic_rules", Harmonic)
    register_system("harmonic_rules", Harmonic)  # same object again: fine
    with pytest.raises(ValueError, match="already registered"):
        register_system("harmonic_rules", lambda: Harmonic())
    register_system("harmonic_rules", lambda: Harmonic(), overwrite=True)
    assert isinstance(get_system("harmonic_rules"), Harmonic)
    with pytest.raises(ValueError, match="System subclass"):
        register_system("x", 3)
    register_system("not_a_system", lambda: object())
    with pytest.raises(ValueError, match="not a System"):
        get_system("not_a_system")
    inst = Harmonic()
    register_system("harmonic_inst", inst)
    assert get_system("harmonic_inst") is inst
    with pytest.raises(ValueError, match="takes no arguments"):
        get_system("harmonic_inst", foo=1)


def test_entry_point_plugins(fresh_registry, monkeypatch):
    # Another installed package adds systems through the entry-point group; a broken plugin
    # warns without hiding the others.
    eps = [
        metadata.EntryPoint("ep_harmonic", "_plugin_system:Harmonic", ENTRY_POINT_GROUP),
        metadata.EntryPoint("ep_broken", "_plugin_system:broken_factory", ENTRY_POINT_GROUP),
        metadata.EntryPoint("ep_missing", "no_such_module_xyz:Thing", ENTRY_POINT_GROUP),
    ]
    monkeypatch.setattr(registry.metadata, "entry_points", lambda group: eps if group == ENTRY_POINT_GROUP else [])
    with pytest.warns(RuntimeWarning, match="ep_missing"):
        names = list_systems()
    assert "ep_harmonic" in names and "ep_broken" in names
    assert isinstance(get_system("ep_harmonic"), Harmonic)
    with pytest.raises(RuntimeError, match="plugin is broken"):
        get_system("ep_broken")


def test_external_system_end_to_end(fresh_registry, tmp_path):
    # One registration call, then dataset, integrators and models all work.
    register_system("harmonic", Harmonic)
    data = make_family_dataset("harmonic", seed=0, cache_dir=tmp_path, n_instances=5, n_train=4, n_traj=4)
    assert data.x.shape == (5, 4, 101, 2)
    # data follow the analytic solution q(t) = A cos(w t + phi)
    w = data.params[0, 0]
    x0 = data.x[0, 0, 0]
    q_exact = x0[0] * torch.cos(w * data.t) + x0[1] / w * torch.sin(w * data.t)
    assert torch.allclose(data.x[0, 0, :, 0], q_exact, atol=1e-8)
    system = get_system("harmonic")
    dyn = system.dynamics(data.params[0])
    with torch.no_grad():
        for method in ["leapfrog", "implicit_midpoint", "discrete_gradient", "rk4", "dopri5"]:
            xs = integrate(dyn, data.x[0, :, 0], data.t, method=method)
            assert (xs - data.x[0]).abs().max() < 0.05, method
    # a Hamiltonian network fits the instance's field
    torch.manual_seed(0)
    model = HamiltonianNN(2, hidden=32, depth=2).double()
    x, dx = data.pairs(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(150):
        opt.zero_grad()
        loss = (model(0.0, x) - dx).pow(2).mean()
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.05 * first
    unregister_system("harmonic")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert "harmonic" not in list_systems()
