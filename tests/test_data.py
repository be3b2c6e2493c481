"""Family datasets: protocol, reproducibility, caching, scipy cross-check, K-shot sampling."""

import os

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import sp_dynamics.data as data_mod
from conftest import all_system_names
from sp_dynamics import DatasetConfig, get_system, make_family_dataset

SMALL = dict(n_instances=6, n_train=4, n_traj=3)


def test_protocol_v1_defaults():
    # Catches: silent drift of the protocol settings everything downstream compares on.
    c = DatasetConfig()
    assert (c.n_instances, c.n_train, c.n_traj, c.n_points) == (80, 70, 10, 101)
    assert c.rtol == c.atol == 1e-10 and c.noise_std == 0.0


def test_full_protocol_pendulum(tmp_path):
    d = make_family_dataset("pendulum", seed=0, cache_dir=tmp_path)
    assert d.x.shape == d.dx.shape == (80, 10, 101, 2) and d.x.dtype == torch.float64
    assert torch.allclose(d.t, torch.linspace(0, 10, 101, dtype=torch.float64))
    assert d.train_ids == list(range(70)) and d.test_ids == list(range(70, 80))


@pytest.mark.parametrize("name", all_system_names())
def test_generated_data(name, tmp_path):
    # Catches: targets that are not the analytic derivatives at the stored states, data that
    # do not start at the sampled initial states, or non-reproducible generation.
    s = get_system(name)
    d = make_family_dataset(name, seed=3, cache_dir=tmp_path, **SMALL)
    assert d.x.shape == (6, 3, 101, s.dim)
    assert torch.equal(d.dx, s.f(d.params[:, None, None, :], d.x))
    g = torch.Generator().manual_seed(3)
    params = s.sample_params(6, g)
    assert torch.equal(d.params, params)
    assert torch.equal(d.x[0, :, 0], s.sample_initial_states(params[0], 3, g))
    again = make_family_dataset(name, seed=3, use_cache=False, **SMALL)
    assert torch.equal(again.x, d.x)
    other = make_family_dataset(name, seed=4, use_cache=False, n_instances=2, n_train=1, n_traj=1, t_end=0.1)
    assert not torch.equal(other.params, d.params[:2])


@pytest.mark.parametrize("name", all_system_names())
def test_reference_integration_matches_scipy(name):
    # Catches: the batched torchdiffeq reference missing its tolerance (e.g. an RMS error norm
    # averaging over trajectories) -- cross-checked against scipy's DOP853 at 1e-12.
    s = get_system(name)
    d = make_family_dataset(name, seed=5, use_cache=False, **SMALL)
    worst = 0.0
    for i, j in [(0, 0), (5, 2), (2, 1)]:
        mu = d.params[i]
        sol = solve_ivp(
            lambda _t, y: s.f(mu, torch.from_numpy(y)).numpy(), (0.0, float(d.t[-1])), d.x[i, j, 0].numpy(),
            method="DOP853", t_eval=d.t.numpy(), rtol=1e-12, atol=1e-12,
        )
        scale = np.abs(sol.y).max()
        worst = max(worst, np.abs(d.x[i, j].numpy() - sol.y.T).max() / scale)
    assert worst < 1e-8


def test_cache_roundtrip_and_no_regeneration(tmp_path, monkeypatch):
    d = make_family_dataset("duffing", seed=1, cache_dir=tmp_path, **SMALL)
    files = os.listdir(tmp_path)
    assert len(files) == 1 and files[0].startswith("duffing-v1-seed1-") and not files[0].startswith(".")

    def boom(*a, **k):
        raise AssertionError("regenerated instead of loading the cache")

    monkeypatch.setattr(data_mod, "_generate", boom)
    cached = make_family_dataset("duffing", seed=1, cache_dir=tmp_path, **SMALL)
    assert torch.equal(cached.x, d.x) and torch.equal(cached.params, d.params)


def test_corrupt_cache_is_regenerated_with_a_warning(tmp_path):
    d = make_family_dataset("mass_spring", seed=2, cache_dir=tmp_path, **SMALL)
    (path,) = tmp_path.iterdir()
    path.write_bytes(path.read_bytes()[:100])  # truncated, as by a crash without atomic writes
    with pytest.warns(UserWarning, match="corrupt"):
        again = make_family_dataset("mass_spring", seed=2, cache_dir=tmp_path, **SMALL)
    assert torch.equal(again.x, d.x)
    assert torch.equal(make_family_dataset("mass_spring", seed=2, cache_dir=tmp_path, **SMALL).x, d.x)


def test_k_shot_sampler(tmp_path):
    d = make_family_dataset("pendulum", seed=0, cache_dir=tmp_path, **SMALL)
    xk, dxk = d.sample_shots(5, 50, torch.Generator().manual_seed(0))
    assert xk.shape == dxk.shape == (50, 2)
    assert len({tuple(r.tolist()) for r in xk}) == 50  # distinct points
    x_all, dx_all = d.pairs(5)
    idx = [int(((x_all - r).abs().sum(-1) == 0).nonzero()[0]) for r in xk]
    assert torch.equal(dx_all[idx], dxk)  # pairs stay matched
    again = d.sample_shots(5, 50, torch.Generator().manual_seed(0))
    assert torch.equal(again[0], xk)
    with pytest.raises(ValueError, match="k must be"):
        d.sample_shots(5, 10_000)
    with pytest.raises(ValueError, match="instance index"):
        d.sample_shots(6, 1)


def test_noise_option(tmp_path):
    clean = make_family_dataset("pendulum", seed=0, use_cache=False, **SMALL)
    noisy = make_family_dataset("pendulum", seed=0, use_cache=False, noise_std=0.01, **SMALL)
    diff = (noisy.x - clean.x).std()
    assert 0.008 < float(diff) < 0.012
    assert torch.equal(noisy.params, clean.params)


def test_bad_settings():
    with pytest.raises(ValueError, match="unknown dataset setting"):
        make_family_dataset("pendulum", n_instance=3)
    with pytest.raises(ValueError, match="n_train"):
        make_family_dataset("pendulum", n_instances=5, n_train=5)
    with pytest.raises(ValueError, match="unknown system 'pendullum'"):
        make_family_dataset("pendullum")


def test_cache_key_follows_the_system_definition_not_only_its_name(tmp_path):
    # Catches: register_system(..., overwrite=True) with a changed definition returning the old
    # definition's cached data (the cache was keyed by the name alone).
    from _plugin_system import Harmonic

    from sp_dynamics import register_system, unregister_system

    class Wide(Harmonic):
        param_box = ((3.0, 4.0),)

    try:
        register_system("harmonic_cache", Harmonic, overwrite=True)
        first = make_family_dataset("harmonic_cache", seed=0, cache_dir=tmp_path, **SMALL)
        register_system("harmonic_cache", Wide, overwrite=True)
        second = make_family_dataset("harmonic_cache", seed=0, cache_dir=tmp_path, **SMALL)
    finally:
        unregister_system("harmonic_cache")
    assert float(first.params.max()) <= 2.0 and float(second.params.min()) >= 3.0
    assert len(os.listdir(tmp_path)) == 2


def test_user_trajectories_become_a_family_dataset():
    # Catches: user data entering with another shape convention, or derivatives that are not
    # estimated from the states when none are given.
    d = make_family_dataset("mass_spring", seed=0, **SMALL)
    from sp_dynamics import FamilyDataset

    own = FamilyDataset.from_trajectories(d.t.numpy(), d.x.numpy(), derivatives="spline", n_train=4)
    assert own.x.shape == d.x.shape and own.train_ids == [0, 1, 2, 3] and own.test_ids == [4, 5]
    assert float((own.dx - d.dx).abs().max() / d.dx.abs().max()) < 1e-3
    mid = FamilyDataset.from_trajectories(d.t, d.x[0], derivatives="midpoint")   # one instance (J, T, n)
    assert mid.x.shape == (1, 3, 100, 2) and mid.t.shape == (100,)
    given = FamilyDataset.from_trajectories(d.t, d.x, dx=d.dx, params=d.params)
    assert torch.equal(given.dx, d.dx) and torch.equal(given.params, d.params)
    bad = d.x.clone()
    bad[0, 0, 3, 1] = float("nan")
    for kwargs, match in [(dict(t=d.t, x=bad), "NaN"), (dict(t=d.t.flip(0), x=d.x), "increasing"),
                          (dict(t=d.t[:-1], x=d.x), "trajectories must be"),
                          (dict(t=d.t, x=d.x, dx=d.dx[:, :2]), "dx must have the shape"),
                          (dict(t=d.t, x=d.x, n_train=9), "n_train")]:
        with pytest.raises(ValueError, match=match):
            FamilyDataset.from_trajectories(**kwargs)
