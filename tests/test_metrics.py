"""Metrics on cases with known answers."""

import pytest
import torch

from sp_dynamics import get_system
from sp_dynamics.metrics import energy_drift, entropy_increments, eps_field, eps_traj, relative_error, rollout

F64 = torch.float64


def test_relative_errors_known_values():
    # Catches: a metric normalised by the wrong norm or reduced over the wrong dimensions.
    true = torch.ones(2, 5, 3, dtype=F64)
    pred = true.clone()
    pred[1] *= 1.1
    assert torch.allclose(eps_traj(pred, true), torch.tensor([0.0, 0.1], dtype=F64))
    assert torch.allclose(relative_error(pred, true, (0, 1, 2)), torch.tensor(0.1 / 2**0.5, dtype=F64))


def test_eps_field_and_rollout_of_the_true_field_are_exact():
    s = get_system("duffing")
    mu = torch.tensor([1.0, 0.5], dtype=F64)
    dyn = s.dynamics(mu)
    assert eps_field(dyn, dyn, s.field_grid(10)) == 0.0
    scaled = lambda t, x: 1.05 * dyn(t, x)  # noqa: E731
    assert abs(eps_field(scaled, dyn, s.field_grid(10)) - 0.05) < 1e-12
    x0 = s.sample_initial_states(mu, 3, torch.Generator().manual_seed(0))
    t = torch.linspace(0, 2, 21, dtype=F64)
    xs = rollout(dyn, x0, t)
    assert xs.shape == (3, 21, 2)
    assert energy_drift(dyn.energy, xs).max() < 1e-6  # dopri5 at rtol 1e-7
    xs_dg = rollout(dyn, x0, t, method="discrete_gradient")
    assert energy_drift(dyn.energy, xs_dg).max() < 1e-12


def test_energy_drift_relative_and_absolute():
    H = lambda x: x[..., 0]  # noqa: E731
    xs = torch.tensor([[[2.0], [2.5], [1.0]]], dtype=F64)
    assert torch.allclose(energy_drift(H, xs), torch.tensor([0.5], dtype=F64))
    assert torch.allclose(energy_drift(H, xs, relative=False), torch.tensor([1.0], dtype=F64))
    assert torch.allclose(entropy_increments(H, xs), torch.tensor([[0.5, -1.5]], dtype=F64))


def test_ssim_properties():
    # Catches: a broken SSIM (wrong constants or statistics): identity gives 1, it is symmetric
    # for a fixed data range, and it decreases monotonically with added noise.
    from sp_dynamics.metrics import ssim

    g = torch.Generator().manual_seed(0)
    img = torch.randn(50, 50, generator=g, dtype=F64).cumsum(0).cumsum(1)  # smooth-ish image
    assert abs(float(ssim(img, img)) - 1.0) < 1e-12
    noisy = [img + s * img.std() * torch.randn(50, 50, generator=g, dtype=F64) for s in (0.05, 0.2, 0.8)]
    vals = [float(ssim(n, img)) for n in noisy]
    assert vals[0] > vals[1] > vals[2] and vals[0] < 1
    L = float(img.max() - img.min())
    assert abs(float(ssim(noisy[0], img, data_range=L)) - float(ssim(img, noisy[0], data_range=L))) < 1e-12


def test_ssim_matches_scikit_image_when_available():
    skm = pytest.importorskip("skimage.metrics", reason="optional cross-check: pip install scikit-image")
    from sp_dynamics.metrics import ssim

    g = torch.Generator().manual_seed(1)
    a = torch.rand(50, 50, generator=g, dtype=F64)
    b = a + 0.1 * torch.randn(50, 50, generator=g, dtype=F64)
    ref = skm.structural_similarity(b.numpy(), a.numpy(), data_range=float(a.max() - a.min()),
                                    gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert abs(float(ssim(b, a)) - ref) < 1e-10  # same statistics, same valid-region average


def test_field_ssim_and_bad_input():
    from sp_dynamics.metrics import field_ssim, ssim

    s = get_system("pendulum")
    dyn = s.dynamics(torch.tensor([1.0, 1.0], dtype=F64))
    assert abs(field_ssim(dyn, dyn, s.field_grid(50), 50) - 1.0) < 1e-12
    with pytest.raises(ValueError, match="same"):
        ssim(torch.zeros(20, 20), torch.zeros(20, 21))
    with pytest.raises(ValueError, match="data range"):
        ssim(torch.zeros(20, 20), torch.zeros(20, 20))


def test_near_data_masks_grid_points_by_distance_to_the_data():
    # Catches: a data-region mask measured over the wrong coordinates (e.g. the entropy
    # coordinate of a GENERIC state, constant on the grid) or with a chunking bug that drops
    # grid points past the first chunk.
    from sp_dynamics.metrics import near_data

    grid = torch.tensor([[0.0, 0.0, 5.0], [1.0, 0.0, 5.0], [3.0, 0.0, 5.0], [0.0, 2.5, 5.0]], dtype=torch.float64)
    states = torch.tensor([[[0.1, 0.0, 0.0], [1.0, 0.4, 0.0]]], dtype=torch.float64)  # (1, 2, 3)
    assert near_data(grid, states, 0.5, dims=(0, 1)).tolist() == [True, True, False, False]
    assert near_data(grid, states, 0.5, dims=(0, 1), chunk=1).tolist() == [True, True, False, False]
    assert not near_data(grid, states, 0.5).any()  # all coordinates: the third is 5 away
    with pytest.raises(ValueError, match="radius"):
        near_data(grid, states, 0.0)
