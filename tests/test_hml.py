"""Hamiltonian Memory Layer: symplectic bookkeeping, reversibility, scan == loop, gradients."""

import pytest
import torch

from sp_dynamics.sequence import HamiltonianMemoryLayer, HMLStack, affine_scan, linear_leapfrog_coefficients

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


def _values_and_grads(layer, x, state, up):
    y, (q, p) = layer(x, state)
    params = [w for w in layer.parameters() if w.requires_grad]
    inputs = [x, *state, *params]
    grads = torch.autograd.grad((y * up).sum() + q.sum() - 2 * p.sum(), inputs, allow_unused=True)
    return (y, q, p), [torch.zeros_like(w) if g is None else g for w, g in zip(inputs, grads)]


@pytest.mark.parametrize("mode", ["scan", "fft", "chunked", "reversible"])
@pytest.mark.parametrize("damping", [False, True])
def test_modes_equal_loop_values_and_gradients(mode, damping):
    # Catches: a wrong composition order in the associative scan, a wrapped-around (circular)
    # FFT convolution, a dropped initial state, damping applied in a different place than the
    # loop, or a reversible backward that rebuilds the wrong state (wrong inverse step or an
    # off-by-one at a checkpoint boundary: checkpoint_every=4 puts boundaries inside every T),
    # or a chunked evaluation whose Toeplitz kernel, carried state or padding of the last
    # chunk is off (chunk=4: T = 5, 9 and 100 end in a partial chunk, T = 1 and 64 do not).
    loop = _layer(dt=0.4, damping=damping)
    other = _layer(dt=0.4, damping=damping, mode=mode, checkpoint_every=4, chunk=4)
    other.load_state_dict(loop.state_dict())
    g = torch.Generator().manual_seed(2)
    for T in [1, 5, 9, 64, 100]:
        x = torch.randn(3, T, 3, generator=g, dtype=F64, requires_grad=True)
        state = (torch.randn(3, 4, generator=g, dtype=F64, requires_grad=True),
                 torch.randn(3, 4, generator=g, dtype=F64, requires_grad=True))
        up = torch.randn(3, T, 2, generator=g, dtype=F64)
        (vals_l, grads_l), (vals_o, grads_o) = (_values_and_grads(m, x, state, up) for m in (loop, other))
        for a, b in zip(vals_l, vals_o):
            assert torch.allclose(a, b, atol=1e-11)
        for a, b in zip(grads_l, grads_o):
            assert torch.allclose(a, b, atol=1e-9)


@pytest.mark.parametrize("kw", [dict(potential="mlp", hidden=8), dict(selective=True), dict(potential="mlp", damping=True)])
def test_reversible_gradients_equal_loop_nonlinear_and_selective(kw):
    # Catches: a reversible backward that ignores the input-dependent step or the nonlinear
    # potential when it rebuilds states (its inverse step must undo exactly the forward step).
    loop = _layer(seed=5, **kw)
    rev = _layer(seed=5, mode="reversible", checkpoint_every=7, **kw)
    rev.load_state_dict(loop.state_dict())
    if loop.dt_proj is not None:
        with torch.no_grad():
            loop.dt_proj.weight.normal_(0, 1.0)
            rev.dt_proj.weight.copy_(loop.dt_proj.weight)
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 40, 3, generator=g, dtype=F64, requires_grad=True)
    state = (torch.zeros(2, 4, dtype=F64, requires_grad=True), torch.zeros(2, 4, dtype=F64, requires_grad=True))
    up = torch.randn(2, 40, 2, generator=g, dtype=F64)
    (vals_l, grads_l), (vals_r, grads_r) = (_values_and_grads(m, x, state, up) for m in (loop, rev))
    for a, b in zip([*vals_l, *grads_l], [*vals_r, *grads_r]):
        assert torch.allclose(a, b, atol=1e-9)


def _saved_bytes(layer, x):
    """Bytes autograd keeps for backward (distinct storages), as in experiments/bench_poisson.py."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y, _ = layer(x)
    return sum(storages.values()), y


def test_reversible_mode_stores_one_state_per_checkpoint():
    # Catches: the reversible mode silently keeping per-step tensors (memory O(T) again).
    # It must save exactly: the input, the final state and ceil(T / k) checkpoints.
    torch.manual_seed(0)
    B, D, k = 4, 16, 32
    rev = HamiltonianMemoryLayer(3, D, 2, mode="reversible", checkpoint_every=k)
    loop = HamiltonianMemoryLayer(3, D, 2, mode="loop")
    for T in (64, 256, 1024):
        x = torch.randn(B, T, 3)
        saved, y = _saved_bytes(rev, x)
        expected = x.nbytes + 2 * B * D * 4 + -(-T // k) * 2 * B * D * 4
        assert saved == expected
        y.sum().backward()  # and it runs
        assert _saved_bytes(loop, x)[0] > 10 * (saved - x.nbytes)


def test_linear_frequencies_are_evenly_spaced_rotations():
    # Catches: the dt <-> angle conversion being wrong (cos theta = 1 - dt^2 k / 2), which
    # would break the harmonic structure the copy-task model relies on.
    layer = HamiltonianMemoryLayer(3, 8, 2, frequencies="linear").double()
    theta = layer.rotation_angles()
    assert torch.allclose(theta, 2.4 * torch.arange(1, 9, dtype=F64) / 8, atol=1e-12)
    # the one-step map has trace 2 cos(theta): the phase advance of each free oscillator
    A, _ = linear_leapfrog_coefficients(layer.stiffness, layer.dt)
    assert torch.allclose(A.diagonal(dim1=-2, dim2=-1).sum(-1), 2 * torch.cos(theta), atol=1e-12)


def test_inverse_step_undoes_step_with_damping_and_mlp():
    layer = _layer("mlp", damping=True, hidden=8)
    g = torch.Generator().manual_seed(3)
    q, p, f = (torch.randn(5, 4, generator=g, dtype=F64) for _ in range(3))
    with torch.no_grad():
        q1, p1 = layer.inverse_step(*layer.step(q, p, f), f)
    assert torch.allclose(q1, q, atol=1e-13) and torch.allclose(p1, p, atol=1e-13)


def test_scan_primitive_against_loop():
    g = torch.Generator().manual_seed(3)
    A = torch.randn(2, 9, 3, 2, 2, generator=g, dtype=F64) * 0.5
    b = torch.randn(2, 9, 3, 2, generator=g, dtype=F64)
    s, ref = torch.zeros(2, 3, 2, dtype=F64), []
    for t in range(9):
        s = (A[:, t] @ s.unsqueeze(-1)).squeeze(-1) + b[:, t]
        ref.append(s)
    assert torch.allclose(affine_scan(A, b, dim=1), torch.stack(ref, 1), atol=1e-13)


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
    with pytest.raises(ValueError, match="time-invariant"):
        HamiltonianMemoryLayer(3, 4, 2, mode="fft", selective=True)
    with pytest.raises(ValueError, match="mode must be one of"):
        HamiltonianMemoryLayer(3, 4, 2, mode="parallel")
    with pytest.raises(ValueError, match=r"initial q must have shape \(2, 4\)"):
        layer(torch.zeros(2, 5, 3, dtype=F64), (torch.zeros(3, 4, dtype=F64), torch.zeros(2, 4, dtype=F64)))
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


def test_energy_trace_forced_energy_is_conserved_while_the_input_is_constant():
    # Catches: a diagnostics routine that mixes up the force or the state index. With a
    # constant force F, H - F.q is a first integral of the forced flow, so under leapfrog it
    # stays bounded with no drift; each change of input does work -(F_t - F_{t-1}).q_{t-1}.
    from sp_dynamics.sequence import energy_trace

    layer = _layer(dt=0.05)
    g = torch.Generator().manual_seed(8)
    x = torch.randn(2, 1, 3, generator=g, dtype=F64).expand(2, 3000, 3).clone()
    x[:, :20] = torch.randn(2, 20, 3, generator=g, dtype=F64)  # varying input first, then constant
    e = energy_trace(layer, x)
    Hf = e["H_forced"][:, 20:]
    scale = Hf.abs().max()
    quarter = Hf.shape[1] // 4
    drift_first = (Hf[:, :quarter] - Hf[:, :1]).abs().max()
    drift_last = (Hf[:, -quarter:] - Hf[:, :1]).abs().max()
    assert drift_last < 1e-2 * scale and drift_last < 1.5 * drift_first + 1e-12
    # the jump of H - F.q at a change of input is the work term up to the O(dt^2) step error
    jumps = e["H_forced"][:, 1:21] - e["H_forced"][:, :20]
    assert torch.allclose(jumps, e["work"][:, 1:21], atol=5e-3 * scale)
    assert not torch.allclose(e["H"][:, 20:], e["H"][:, 20:21].expand_as(Hf), atol=1e-3 * scale)  # H itself is not conserved
    # leapfrog's exact quadratic invariant: constant to round-off under constant input (it would
    # drift if the step, the stiffness or the forced equilibrium F/k were taken inconsistently)
    Hs = e["H_shadow"][:, 20:]
    assert ((Hs - Hs[:, :1]).abs() <= 1e-11 * Hs.abs().max()).all()
    assert (e["H_shadow"][:, 1:21] - e["H_shadow"][:, :20]).abs().max() > 1e-6  # it changes when the input does


def test_phase_space_and_figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sp_dynamics.runners.copy_task import plot_diagnostics
    from sp_dynamics.sequence import phase_space

    layer = _layer()
    x = torch.randn(2, 30, 3, dtype=F64)
    q, p = phase_space(layer, x, [0, 3])
    qs, ps = layer.states(x)
    assert torch.equal(q, qs[..., [0, 3]]) and torch.equal(p, ps[..., [0, 3]])
    with pytest.raises(ValueError, match=r"channels \[4\] out of range"):
        phase_space(layer, x, [4])
    fig = plot_diagnostics(plt, layer, x, [0, 1], marks={"event": 10})
    assert len(fig.axes) == 3
