"""Metriplectic layer: energy bookkeeping of each split step, stress-energy readout."""

import pytest
import torch

from metriplector import FieldCoupling, MetriplecticLayer, stress_energy

F64 = torch.float64


def _layer(**kw):
    torch.manual_seed(0)
    return MetriplecticLayer(channels=6, fields=4, **kw).double()


def _fields(g, B=2, C=4, H=5, W=6):
    return torch.randn(B, C, H, W, generator=g, dtype=F64)


def _energy(phi):
    return phi.pow(2).sum((1, 2, 3))


@pytest.mark.parametrize("canonical", [False, True])
def test_advection_term_is_energy_neutral(canonical):
    # Catches: a coupling that is not skew (phi^T K phi != 0 would make advection pump energy).
    torch.manual_seed(1)
    K = FieldCoupling(4, canonical=canonical).double().matrix()
    assert torch.equal(K, -K.T)
    phi = _fields(torch.Generator().manual_seed(1))
    Kphi = torch.einsum("ij,bjxy->bixy", K, phi)
    assert (phi * Kphi).sum((1, 2, 3)).abs().max() <= 1e-12 * _energy(phi).max()
    if canonical:  # canonical pairs: K = J + small learned cross term
        J = torch.tensor([[0, 0, 1, 0], [0, 0, 0, 1], [-1, 0, 0, 0], [0, -1, 0, 0]], dtype=F64)
        assert (K - J).abs().max() < 0.1


def test_explicit_euler_grows_energy_by_exactly_h2_Kphi2():
    # Catches: a wrong advection update -- |phi + h a K phi|^2 = |phi|^2 + h^2 |a K phi|^2 exactly.
    layer = _layer(advection_step="euler")
    g = torch.Generator().manual_seed(2)
    phi = _fields(g)
    a = torch.rand(2, 1, 5, 6, generator=g, dtype=F64) * 3
    h = 0.3
    K = layer.coupling.matrix().to(phi)
    growth = _energy(layer.advect(phi, a, h)) - _energy(phi)
    expected = (h * a * torch.einsum("ij,bjxy->bixy", K, phi)).pow(2).sum((1, 2, 3))
    assert torch.allclose(growth, expected, rtol=1e-10, atol=1e-12)
    assert (growth > 0).all()


def test_cayley_step_preserves_energy_to_roundoff():
    # Catches: a non-orthogonal "energy-preserving" option.
    layer = _layer(advection_step="cayley")
    g = torch.Generator().manual_seed(3)
    phi = _fields(g)
    a = torch.rand(2, 1, 5, 6, generator=g, dtype=F64) * 3
    for h in [0.1, 1.0, 10.0]:
        out = layer.advect(phi, a, h)
        assert ((_energy(out) - _energy(phi)).abs() / _energy(phi)).max() <= 1e-13
        assert not torch.allclose(out, phi)  # it does advect


def test_cayley_without_autograd_matches_the_solve_on_a_degenerate_coupling():
    # Catches: a wrong eigenvalue convention in the no-gradient (planning) path of cayley_advect, which
    # would make evaluation disagree with training; the canonical J has degenerate eigenvalues +-i, the
    # case where an eigendecomposition is most easily mishandled.
    from metriplector.layers import cayley_advect

    g = torch.Generator().manual_seed(5)
    coupling = FieldCoupling(6, canonical=True, cross_init_std=0.2).double()
    for K in (coupling.matrix().detach(), FieldCoupling(6, canonical=True, cross_init_std=0.0).double().matrix().detach()):
        phi = torch.randn(3, 6, 4, 5, generator=g, dtype=F64)
        a = torch.rand(3, 1, 4, 5, generator=g, dtype=F64) * 4
        with torch.no_grad():
            fast = cayley_advect(phi, a, K, 0.7)
        slow = cayley_advect(phi.clone().requires_grad_(), a, K, 0.7).detach()
        torch.testing.assert_close(fast, slow, rtol=0, atol=1e-12)
        torch.testing.assert_close(_energy(fast), _energy(phi), rtol=1e-13, atol=0)


def test_diffusion_and_damping_never_increase_energy():
    # Catches: an unstable or sign-flipped dissipative step; the implicit step must not increase
    # sum(phi^2) for any step size, and must strictly dissipate with damping.
    layer = _layer()
    g = torch.Generator().manual_seed(4)
    for h in [0.01, 1.0, 100.0]:
        phi = _fields(g)
        kappa = torch.rand(2, 1, 5, 6, generator=g, dtype=F64) * 5
        gamma = torch.rand(2, 1, 5, 6, generator=g, dtype=F64)
        out = layer.dissipate(phi, kappa, gamma, h)
        assert (_energy(out) < _energy(phi)).all()
        # diffusion alone (no damping) conserves the mean and still never increases the energy
        out = layer.dissipate(phi, kappa, torch.zeros_like(gamma) + 1e-300, h)
        assert (_energy(out) <= _energy(phi) * (1 + 1e-12)).all()
        assert torch.allclose(out.mean((-2, -1)), phi.mean((-2, -1)), atol=1e-8)


def test_stress_energy_parts():
    # Catches: wrong feature counts or lost (anti)symmetry of the readout.
    g = torch.Generator().manual_seed(5)
    phi = _fields(g, C=3)
    diag, cross, vort = stress_energy(phi)
    assert diag.shape == (2, 3, 5, 6) and cross.shape == vort.shape == (2, 3, 5, 6)  # C(C-1)/2 = 3
    assert (diag >= 0).all()
    swapped = phi[:, [1, 0, 2]]  # swapping fields 0 and 1 flips the sign of their vorticity
    _, cross_s, vort_s = stress_energy(swapped)
    assert torch.allclose(vort_s[:, 0], -vort[:, 0]) and torch.allclose(cross_s[:, 0], cross[:, 0])
    # a field varying along x only has no vorticity with one varying along y only
    x = torch.arange(6, dtype=F64).expand(5, 6)
    y = torch.arange(5, dtype=F64)[:, None].expand(5, 6)
    _, _, v = stress_energy(torch.stack([x, x])[None])
    assert v.abs().max() == 0
    _, _, v = stress_energy(torch.stack([x, y])[None])
    assert v[0, 0, :-1, :-1].abs().min() == 1


@pytest.mark.parametrize("step", ["euler", "cayley"])
def test_layer_forward_backward_and_identity_init(step):
    layer = _layer(advection_step=step, canonical=True)
    h = torch.randn(2, 6, 5, 6, dtype=F64, requires_grad=True)
    out = layer(h)
    assert out.shape == h.shape and torch.equal(out, h)  # zero-initialised readout
    with torch.no_grad():
        layer.readout.weight.normal_()
    layer(h).pow(2).sum().backward()
    assert all(p.grad is not None for p in layer.parameters())
    assert torch.isfinite(h.grad).all()
    with pytest.raises(ValueError, match="shape"):
        layer(torch.zeros(2, 5, 5, 6, dtype=F64))
    with pytest.raises(ValueError, match="even"):
        FieldCoupling(3, canonical=True)


def test_cayley_benchmark_smoke():
    # Catches: the benchmark script drifting from the layer's private paths it times (an import or
    # signature change would only surface when someone runs it).
    from experiments.bench_cayley import bench

    row = bench(batch=2, repeats=1)
    assert row["agreement"] < 1e-5 and row["spectral_s"] > 0 and row["solve_s"] > 0
