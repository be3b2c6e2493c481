"""Integrators: long-run energy behaviour, convergence order, discrete-gradient conservation,
differentiability and bad input."""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from sp_dynamics import (
    ConvergenceError,
    GENERICNet,
    HamiltonianNN,
    PortHamiltonianNN,
    get_system,
    integrate,
)
from sp_dynamics.integrators import FIXED_STEP_METHODS

F64 = torch.float64


def _pendulum():
    s = get_system("pendulum")
    return s.dynamics(torch.tensor([1.0, 1.0], dtype=F64))


X0_PEND = torch.tensor([[1.5, 0.0], [0.5, 1.0], [2.0, 0.5]], dtype=F64)


def _relative_energy_error(dyn, method, h, n_steps, x0=X0_PEND):
    t = torch.arange(n_steps + 1, dtype=F64) * h
    with torch.no_grad():
        xs = integrate(dyn, x0, t, method=method)                 # (J, T, n)
        E = dyn.energy(xs)                                          # (J, T)
    return ((E - E[:, :1]).abs() / E[:, :1].abs()).max(0).values  # (T,) worst trajectory


def _secular_ratio(err):
    # Largest error in the last quarter of the run over the largest in the first quarter:
    # ~1 for a bounded, oscillating error; ~4 for an error growing linearly in time.
    q = len(err) // 4
    return float(err[-q:].max() / err[1:q].max())


@pytest.mark.parametrize("method", ["leapfrog", "implicit_midpoint"])
def test_symplectic_energy_error_bounded_over_1e4_steps(method):
    # Catches: a symplectic integrator that lost symplecticity (e.g. a wrong kick order or a
    # half-step dropped): its energy error would drift secularly instead of oscillating.
    err = _relative_energy_error(_pendulum(), method, h=0.1, n_steps=10_000)
    assert err.max() < 0.05
    assert _secular_ratio(err) < 1.2


def test_rk4_fails_the_secular_drift_check():
    # Negative control: RK4 is not symplectic, so the same check must see its drift.
    err = _relative_energy_error(_pendulum(), "rk4", h=0.1, n_steps=10_000)
    assert _secular_ratio(err) > 2.5


@pytest.mark.parametrize("method", ["leapfrog", "implicit_midpoint"])
def test_energy_error_scales_as_h_squared(method):
    # Catches: an order-2 method degraded to order 1 (error would halve, not quarter).
    e1 = _relative_energy_error(_pendulum(), method, h=0.2, n_steps=250).max()
    e2 = _relative_energy_error(_pendulum(), method, h=0.1, n_steps=500).max()
    assert 3.5 < float(e1 / e2) < 4.5


def test_rk4_energy_error_does_not_scale_as_h_squared():
    # Negative control for the test above: RK4's energy error scales as h^4 (ratio ~16).
    e1 = _relative_energy_error(_pendulum(), "rk4", h=0.2, n_steps=250).max()
    e2 = _relative_energy_error(_pendulum(), "rk4", h=0.1, n_steps=500).max()
    assert not 3.5 < float(e1 / e2) < 4.5


def _reference(dyn, x0, t_end):
    # Independent reference: scipy's DOP853 at 1e-13. (torchdiffeq's dopri8 is not used: its
    # output at requested times comes from an interpolant good to only ~1e-9 here.)
    sol = solve_ivp(
        lambda _t, y: dyn(None, torch.from_numpy(y)).numpy(), (0.0, t_end), x0[0].numpy(),
        method="DOP853", rtol=1e-13, atol=1e-13,
    )
    return torch.from_numpy(sol.y[:, -1])[None]


EXPECTED_ORDER = {"euler": 1, "leapfrog": 2, "implicit_midpoint": 2, "discrete_gradient": 2, "rk4": 4}


ORDER_CASES = [(m, s) for s in ["pendulum", "dno"] for m in FIXED_STEP_METHODS if not (m == "leapfrog" and s == "dno")]


@pytest.mark.parametrize("method,system", ORDER_CASES)  # leapfrog: separable systems only
def test_measured_convergence_order(method, system):
    # Catches: any change that lowers a method's order (wrong stage weights, a first-order
    # discrete gradient, a half-step in the wrong place). Fits the log-log slope of the global
    # error at t = 1 against h.
    s = get_system(system)
    mu = torch.tensor([1.0, 1.0] if system == "pendulum" else [3.0, 0.2], dtype=F64)
    dyn = s.dynamics(mu)
    x0 = torch.tensor([[1.2, 0.3] + ([0.0] if system == "dno" else [])], dtype=F64)
    ref = _reference(dyn, x0, 1.0)
    hs = [0.1, 0.05, 0.025, 0.0125]
    errs = []
    for h in hs:
        with torch.no_grad():
            x = integrate(dyn, x0, torch.tensor([0.0, 1.0], dtype=F64), method=method, step_size=h)[..., -1, :]
        errs.append(float((x - ref).abs().max()))
    slope = np.polyfit(np.log(hs), np.log(errs), 1)[0]
    assert abs(slope - EXPECTED_ORDER[method]) < 0.25, (errs, slope)


@pytest.mark.parametrize("system", ["dno", "gas_containers"])
def test_discrete_gradient_true_metriplectic_systems(system):
    # Catches: a discrete-gradient step whose brackets are not degenerate w.r.t. the discrete
    # gradients (energy would leak) or whose friction sign is wrong (entropy would decrease).
    s = get_system(system)
    g = torch.Generator().manual_seed(0)
    mu = s.sample_params(3, g)[:, None, :]
    x0 = torch.stack([s.sample_initial_states(m[0], 4, g) for m in mu])  # (3, 4, n)
    dyn = s.dynamics(mu)
    t = torch.linspace(0.0, 5.0, 101, dtype=F64)
    with torch.no_grad():
        xs = integrate(dyn, x0, t, method="discrete_gradient")    # (3, 4, T, n)
        along = s.dynamics(mu[:, :, None, :])                      # parameters broadcast over time too
        E, S = along.energy(xs), along.entropy(xs)
    assert ((E - E[..., :1]).abs() / E[..., :1].abs()).max() <= 1e-12
    assert (S[..., 1:] - S[..., :-1]).min() >= -1e-13
    assert (S[..., -1] - S[..., 0]).min() > 1e-3  # entropy really is produced


@pytest.mark.parametrize("bracket", ["projection", "basis"])
def test_discrete_gradient_learned_generic(bracket):
    # Catches: the same, for learned networks at random parameters with exact brackets.
    torch.manual_seed(0)
    model = GENERICNet(3, bracket=bracket, hidden=16, depth=2).double()
    x0 = torch.randn(8, 3, dtype=F64)
    t = torch.linspace(0.0, 2.0, 41, dtype=F64)
    with torch.no_grad():
        xs = integrate(model, x0, t, method="discrete_gradient")
        E, S = model.energy(xs), model.entropy(xs)
    assert ((E - E[:, :1]).abs() / (1 + E[:, :1].abs())).max() <= 1e-12
    assert (S[:, 1:] - S[:, :-1]).min() >= -1e-13


def test_discrete_gradient_hamiltonian_and_port_hamiltonian():
    # Catches: DG energy leak for HNNs; a port-Hamiltonian step that gains energy.
    torch.manual_seed(1)
    x0 = torch.randn(8, 2, dtype=F64)
    t = torch.linspace(0.0, 2.0, 41, dtype=F64)
    hnn = HamiltonianNN(2, hidden=16, depth=2).double()
    phnn = PortHamiltonianNN(2, hidden=16, depth=2).double()
    with torch.no_grad():
        E = hnn.energy(integrate(hnn, x0, t, method="discrete_gradient"))
        H = phnn.energy(integrate(phnn, x0, t, method="discrete_gradient"))
    assert ((E - E[:, :1]).abs() / (1 + E[:, :1].abs())).max() <= 1e-12
    assert (H[:, 1:] - H[:, :-1]).max() <= 1e-13 and (H[:, -1] < H[:, 0]).all()


class _Rollout(torch.nn.Module):
    def __init__(self, model, method):
        super().__init__()
        self.model, self.method = model, method

    def forward(self, x0):
        return integrate(self.model, x0, torch.tensor([0.0, 0.1, 0.2], dtype=F64), method=self.method)


@pytest.mark.parametrize("method", FIXED_STEP_METHODS + ("dopri5",))
def test_gradcheck_through_steps(method):
    # Catches: wrong gradients through a step -- in particular through the implicit steps,
    # whose gradients come from the implicit function theorem rather than unrolled iterations.
    torch.manual_seed(2)
    model = HamiltonianNN(2, hidden=8, depth=1, separable=(method == "leapfrog")).double()
    rollout = _Rollout(model, method)
    x0 = torch.randn(2, 2, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(rollout, (x0,), atol=1e-6)
    name, p = next(iter(model.named_parameters()))
    v = p.detach().clone().requires_grad_(True)
    fn = lambda v: torch.func.functional_call(rollout, {f"model.{name}": v}, (x0.detach(),))  # noqa: E731
    assert torch.autograd.gradcheck(fn, (v,), atol=1e-6)


def test_implicit_step_of_a_state_independent_field():
    # Edge case of the implicit-function-theorem backward: a field that ignores the state.
    c = torch.tensor([1.0, -2.0], dtype=F64, requires_grad=True)
    xs = integrate(lambda t, x: c.expand_as(x), torch.zeros(2, dtype=F64), torch.tensor([0.0, 0.5], dtype=F64),
                   method="implicit_midpoint")
    xs[..., -1, :].sum().backward()
    assert torch.allclose(c.grad, torch.full((2,), 0.5, dtype=F64))


def test_gradcheck_discrete_gradient_generic():
    torch.manual_seed(3)
    model = GENERICNet(3, hidden=8, depth=1).double()
    x0 = torch.randn(2, 3, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(_Rollout(model, "discrete_gradient"), (x0,), atol=1e-6)


def test_dopri5_matches_scipy():
    # Catches: a broken torchdiffeq adapter (time grid, tolerances, state layout).
    dyn = _pendulum()
    x0 = X0_PEND[0]
    t = torch.linspace(0.0, 5.0, 51, dtype=F64)
    ours = integrate(dyn, x0, t, method="dopri5", rtol=1e-10, atol=1e-10)
    ref = solve_ivp(
        lambda _t, y: dyn(None, torch.from_numpy(y)).numpy(), (0, 5), x0.numpy(), method="DOP853",
        t_eval=t.numpy(), rtol=1e-12, atol=1e-12,
    )
    assert np.abs(ours.numpy() - ref.y.T).max() < 1e-8  # (T, n) for one initial state


def test_substeps_equal_finer_grid():
    # Catches: step_size substepping that drops or duplicates a step.
    dyn = _pendulum()
    coarse = integrate(dyn, X0_PEND, torch.linspace(0, 1, 3, dtype=F64), method="rk4", step_size=0.125)
    fine = integrate(dyn, X0_PEND, torch.linspace(0, 1, 9, dtype=F64), method="rk4")
    assert torch.allclose(coarse, fine[:, ::4], atol=1e-14)


def test_shapes_leading_dims_and_float32():
    model = HamiltonianNN(2, hidden=8, depth=1)
    x0 = torch.randn(3, 5, 2)
    for method in ["rk4", "implicit_midpoint", "discrete_gradient", "dopri5"]:
        xs = integrate(model, x0, torch.linspace(0, 0.5, 6), method=method)
        assert xs.shape == (3, 5, 6, 2) and xs.dtype == torch.float32   # (..., T, n)
        assert torch.equal(xs[..., 0, :], x0)


def test_bad_input():
    # Catches: opaque failures on bad input.
    dyn = _pendulum()
    t = torch.linspace(0, 1, 5, dtype=F64)
    with pytest.raises(ValueError, match="available"):
        integrate(dyn, X0_PEND, t, method="rk5")
    with pytest.raises(ValueError, match="strictly"):
        integrate(dyn, X0_PEND, torch.tensor([0.0, 1.0, 0.5], dtype=F64))
    with pytest.raises(ValueError, match="1-D"):
        integrate(dyn, X0_PEND, t[None])
    with pytest.raises(ValueError, match="NaN"):
        integrate(dyn, torch.tensor([float("nan"), 0.0], dtype=F64), t)
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        integrate(dyn, torch.zeros(3, dtype=F64), t)
    with pytest.raises(ValueError, match="step_size"):
        integrate(dyn, X0_PEND, t, step_size=-0.1)
    with pytest.raises(ValueError, match="separable"):
        integrate(HamiltonianNN(2).double(), X0_PEND, t, method="leapfrog")
    with pytest.raises(ValueError, match="energy"):
        integrate(lambda t, x: -x, X0_PEND, t, method="discrete_gradient")


def test_leapfrog_accepts_separable_models_and_the_check_can_be_skipped():
    sep = HamiltonianNN(2, separable=True).double()
    t = torch.linspace(0, 1, 5, dtype=F64)
    xs = integrate(sep, X0_PEND, t, method="leapfrog")
    assert torch.isfinite(xs).all()
    integrate(HamiltonianNN(2).double(), X0_PEND, t, method="leapfrog", check_separable=False)


def test_implicit_step_nonconvergence_raises():
    # A step far beyond the fixed-point iteration's contraction limit must say so, not
    # silently return an unconverged state.
    stiff = lambda t, x: -1000.0 * x  # noqa: E731
    with pytest.raises(ConvergenceError, match="reduce step_size"):
        integrate(stiff, torch.ones(2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64), method="implicit_midpoint")


def test_math_sanity_of_secular_ratio():
    # The drift statistic itself: linear growth gives ~4, a bounded oscillation ~1.
    t = torch.linspace(0, 100, 1001)
    assert abs(_secular_ratio(t) - 4.0) < 0.2
    assert abs(_secular_ratio(torch.sin(t).abs()) - 1.0) < 0.05
    assert math.isfinite(_secular_ratio(t))


def test_fixed_point_accepts_its_roundoff_floor_but_not_slow_convergence():
    # Catches: implicit steps failing on maps whose evaluation is noisy just above the
    # tolerance (the discrete gradient's difference quotient is), and the opposite mistake of
    # accepting a genuinely unconverged iterate.
    from sp_dynamics.integrators import _iterate

    opts = {"tol": 1e-14, "max_iter": 100}
    flip = [1.0]

    def noisy(y):  # lands on 1 at once, then jitters by +-3e-14: every change (6e-14) > tol
        flip[0] = -flip[0]
        return torch.ones_like(y) + 3e-14 * flip[0]

    y = _iterate(noisy, torch.tensor([3.0], dtype=F64), 1.0, opts, "noisy")
    assert abs(float(y) - 1.0) < 1e-13
    with pytest.raises(ConvergenceError):
        _iterate(lambda y: 1.0 + 0.999 * (y - 1.0), torch.tensor([3.0], dtype=F64), 1.0, opts, "slow")
