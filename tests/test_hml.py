"""Hamiltonian Memory Layer: symplectic bookkeeping, reversibility, scan == loop, gradients."""

import pytest
import torch

from sp_dynamics.hml import HamiltonianMemoryLayer, HMLStack, linear_leapfrog_coefficients, scan_affine_2x2

F64 = torch.float64


def _layer(potential="quadratic", seed=0, **kw):
    torch.manual_seed(seed)
    return HamiltonianMemoryLayer(3, 4, 2, potential=potential, **kw).double()


@pytest.mark.parametrize("potential", ["quadratic", "mlp"])
def test_zero_force_energy_bounded_over_1e4_steps(potential):
    # Catches: a non-symplectic step (wrong kick/drift order, a missing half kick): the energy
    # error would drift secularly instead of staying bounded.
    layer = _layer(potential, dt=0.3)
    g = torch.Generator().manual_seed(0)
    q = torch.randn(8, 4, generator=g, dtype=F64)
    p = torch.randn(8, 4, generator=g, dtype=F64)
    zero = torch.zeros_like(q)
    H0 = layer.energy(q, p)
    errs = []
    with torch.no_grad():
        for _ in range(10_000):
            q, p = layer.step(q, p, zero)
            errs.append(((layer.energy(q, p) - H0).abs() / H0.abs()).max())
    errs = torch.stack(errs)
    quarter = len(errs) // 4
    assert errs.max() < 0.05
    assert errs[-quarter:].max() / errs[:quarter].max() < 1.2  # no secular trend


@pytest.mark.parametrize("potential", ["quadratic", "mlp"])
def test_time_reversal_recovers_the_initial_state(potential):
    # Catches: an irreversible update (e.g. forces applied asymmetrically in the kicks).
    layer = _layer(potential, dt=0.2)
    g = torch.Generator().manual_seed(1)
    q0 = torch.randn(5, 4, generator=g, dtype=F64)
    p0 = torch.randn(5, 4, generator=g, dtype=F64)
    forces = torch.randn(300, 5, 4, generator=g, dtype=F64)
    q, p = q0, p0
    with torch.no_grad():
        for f in forces:
            q, p = layer.step(q, p, f)
        p = -p
        for f in forces.flip(0):
            q, p = layer.step(q, p, f)
    assert torch.allclose(q, q0, atol=1e-10) and torch.allclose(-p, p0, atol=1e-10)


def test_damping_never_increases_energy():
    layer = _layer(damping=True)
    with torch.no_grad():
        layer.raw_gamma.fill_(0.0)
    q, p = torch.randn(6, 4, dtype=F64), torch.randn(6, 4, dtype=F64)
    H = [layer.energy(q, p)]
    with torch.no_grad():
        for _ in range(200):
            q, p = layer.step(q, p, torch.zeros_like(q))
            H.append(layer.energy(q, p))
    H = torch.stack(H)
    assert (H[1:] - H[:-1]).max() <= 1e-12 and (H[-1] < 0.5 * H[0]).all()


def test_linear_coefficients_are_symplectic_and_equal_the_step():
    layer = _layer(dt=0.7)
    k, dt = layer.stiffness, layer.dt
    A, u = linear_leapfrog_coefficients(k, dt)
    assert torch.allclose(torch.linalg.det(A), torch.ones(4, dtype=F64), atol=1e-13)
    q, p, f = (torch.randn(4, dtype=F64) for _ in range(3))
    q1, p1 = layer.step(q, p, f)
    s1 = (A @ torch.stack([q, p], -1).unsqueeze(-1)).squeeze(-1) + u * f.unsqueeze(-1)
    assert torch.allclose(s1[:, 0], q1, atol=1e-14) and torch.allclose(s1[:, 1], p1, atol=1e-14)


def test_scan_equals_loop_values_and_gradients():
    # Catches: a wrong composition order in the associative scan, or a dropped initial state.
    loop = _layer(dt=0.4)
    scan = _layer(dt=0.4, mode="scan")
    g = torch.Generator().manual_seed(2)
    for T in [1, 5, 64, 100]:
        x = torch.randn(3, T, 3, generator=g, dtype=F64, requires_grad=True)
        state = (torch.randn(3, 4, generator=g, dtype=F64), torch.randn(3, 4, generator=g, dtype=F64))
        y_l, (q_l, p_l) = loop(x, state)
        y_s, (q_s, p_s) = scan(x, state)
        assert torch.allclose(y_l, y_s, atol=1e-12) and torch.allclose(q_l, q_s, atol=1e-12)
        up = torch.randn(y_l.shape, generator=g, dtype=F64)
        g_l = torch.autograd.grad((y_l * up).sum(), [x, *loop.parameters()])
        g_s = torch.autograd.grad((y_s * up).sum(), [x, *scan.parameters()])
        for a, b in zip(g_l, g_s):
            assert torch.allclose(a, b, atol=1e-10)


def test_scan_primitive_against_loop():
    g = torch.Generator().manual_seed(3)
    A = torch.randn(2, 9, 3, 2, 2, generator=g, dtype=F64) * 0.5
    b = torch.randn(2, 9, 3, 2, generator=g, dtype=F64)
    s, ref = torch.zeros(2, 3, 2, dtype=F64), []
    for t in range(9):
        s = (A[:, t] @ s.unsqueeze(-1)).squeeze(-1) + b[:, t]
        ref.append(s)
    assert torch.allclose(scan_affine_2x2(A, b), torch.stack(ref, 1), atol=1e-13)


@pytest.mark.parametrize("potential,mode", [("quadratic", "loop"), ("quadratic", "scan"), ("mlp", "loop")])
def test_gradcheck_tiny_sequences(potential, mode):
    layer = _layer(potential, mode=mode, hidden=8)
    x = torch.randn(2, 4, 3, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: layer(x)[0], (x,))


def test_stack_and_bad_input():
    torch.manual_seed(0)
    model = HMLStack(vocab=10, width=8, state_size=6, n_layers=2)
    out = model(torch.randint(0, 10, (3, 12)))
    assert out.shape == (3, 12, 10)
    out.sum().backward()
    layer = _layer()
    with pytest.raises(ValueError, match=r"\(batch, time, 3\)"):
        layer(torch.zeros(2, 5, 4, dtype=F64))
    bad = torch.zeros(2, 5, 3, dtype=F64)
    bad[0, 1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        layer(bad)
    with pytest.raises(ValueError, match="scan"):
        HamiltonianMemoryLayer(3, 4, 2, potential="mlp", mode="scan")
    with pytest.raises(ValueError, match="int64"):
        model(torch.zeros(3, 12))


def test_selective_steps_scan_equals_loop_and_stay_stable():
    # Catches: input-dependent steps breaking scan == loop, or leaving the leapfrog stability
    # region (dt^2 k < 4) for large inputs -- the state would then blow up exponentially.
    torch.manual_seed(4)
    loop = HamiltonianMemoryLayer(3, 4, 2, selective=True).double()
    scan = HamiltonianMemoryLayer(3, 4, 2, selective=True, mode="scan").double()
    scan.load_state_dict(loop.state_dict())
    with torch.no_grad():
        loop.dt_proj.weight.normal_(0, 5.0)
        scan.dt_proj.weight.copy_(loop.dt_proj.weight)
    g = torch.Generator().manual_seed(5)
    x = 10 * torch.randn(2, 50, 3, generator=g, dtype=F64)
    dts = loop.step_sizes(x)
    assert (dts**2 * loop.stiffness < 4).all() and dts.std() > 0  # bounded and input-dependent
    assert torch.allclose(loop(x)[0], scan(x)[0], atol=1e-10)
    x_free = torch.zeros(2, 2000, 3, dtype=F64)  # unforced (zero input, zero force bias)
    with torch.no_grad():
        loop.force.bias.zero_()
        qs, ps = loop.states(x_free, (torch.ones(2, 4, dtype=F64), torch.zeros(2, 4, dtype=F64)))
    H = loop.energy(qs, ps)
    assert ((H - H[:, :1]).abs() / H[:, :1]).max() < 0.5
