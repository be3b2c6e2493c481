"""The public single-instance trainer ``sp_dynamics.fit`` and the trajectory loss."""

import copy
import math
from dataclasses import replace

import pytest
import torch

from sp_dynamics import FitConfig, GENERICNet, HamiltonianNN, fit, get_system, make_family_dataset, trajectory_loss
from sp_dynamics.fitting import derivative_loss, entropy_orientation, orient_entropy, reinitialize

from conftest import all_system_names

F64 = torch.float64
TINY = dict(n_instances=3, n_train=2, n_traj=2, n_points=11)
FAST = FitConfig(max_iter=30, restarts=2, restart_iter=5, chunk=10)


def _model(system, hidden=16):
    if system.is_generic:
        return GENERICNet(system.dim, hidden=hidden, depth=2).double()
    return HamiltonianNN(system.dim, hidden=hidden, depth=2).double()


@pytest.mark.parametrize("name", all_system_names())
def test_fit_reduces_the_loss_on_every_registered_system(name):
    # Catches: a trainer that does not train (wrong sign, frozen parameters, a restart that
    # loads the wrong state) on any system a user can register, GENERIC or Hamiltonian.
    system = get_system(name)
    data = make_family_dataset(name, seed=0, **TINY)
    x, dx = data.pairs(0)
    torch.manual_seed(0)
    model = _model(system)
    before = float(derivative_loss(model, x, dx).detach())
    result = fit(model, x, dx, config=FAST, progress=False)
    after = float(derivative_loss(model, x, dx).detach())
    assert after < 0.5 * before
    assert result.evaluations >= 1 and len(result.restart_losses) == 2


def test_fit_keeps_the_best_restart_and_leaves_the_global_rng_alone():
    # Catches: restarts that leak into the user's random stream, or a final model that is not
    # the restart with the lowest loss.
    data = make_family_dataset("dno", seed=0, **TINY)
    x, dx = data.pairs(0)
    torch.manual_seed(1)
    model = GENERICNet(3, hidden=16, depth=2).double()
    state = torch.get_rng_state()
    result = fit(model, x, dx, config=FitConfig(max_iter=10, restarts=3, restart_iter=5, chunk=5), progress=False)
    assert torch.equal(state, torch.get_rng_state())
    assert result.chosen == min(range(3), key=lambda r: result.restart_losses[r])


def test_trajectory_loss_gradient_matches_finite_differences():
    # Catches: a trajectory loss whose parameter gradient is wrong -- residual forms (implicit
    # midpoint, discrete gradient) and a rollout through the implicit-function-theorem backward.
    data = make_family_dataset("dno", seed=0, **TINY)
    t, xs = data.t[:5], data.x[0, :, :5]
    torch.manual_seed(0)
    model = GENERICNet(3, hidden=6, depth=1).double()
    p0 = model.energy_net.fn[0].weight.detach().clone()
    for kwargs in [dict(method="implicit_midpoint"), dict(method="discrete_gradient"),
                   dict(method="implicit_midpoint", horizon=2, substeps=2)]:
        def loss(p, kwargs=kwargs):
            return _loss_at(model, p, t, xs, kwargs)
        assert torch.autograd.gradcheck(loss, (p0.clone().requires_grad_(True),), atol=1e-6, rtol=1e-5), kwargs


def _loss_at(model, p, t, xs, kwargs):
    """The loss with the energy network's first weight replaced by p (so gradcheck sees it)."""
    module, attr = model.energy_net.fn[0], "weight"
    saved = getattr(module, attr)
    try:
        delattr(module, attr)
        setattr(module, attr, p)
        return trajectory_loss(model, t, xs, **kwargs)
    finally:
        delattr(module, attr)
        module.register_parameter(attr, saved)


def test_a_trajectory_trained_dno_model_keeps_exact_structure():
    # Catches: trajectory training that breaks the GENERIC structure: after fitting noisy
    # trajectories alone, the degeneracy residuals are round-off, dE/dt = 0 and dS/dt >= 0
    # pointwise, and a discrete-gradient rollout keeps E and never lowers S.
    data = make_family_dataset("dno", seed=0, noise_std=0.01, **TINY)
    torch.manual_seed(0)
    model = GENERICNet(3, hidden=16, depth=2).double()
    before = float(trajectory_loss(model, data.t, data.x[0]).detach())
    fit(model, data.x[0], t=data.t, config=FAST, progress=False)
    assert float(trajectory_loss(model, data.t, data.x[0]).detach()) < before
    x = data.x[0].reshape(-1, 3)
    r_L, r_M = (r.detach() for r in model.residuals(x))
    dE, dS = (g.detach() for g in model.gradients(x))
    f = model(0.0, x).detach()
    scale = dE.norm(dim=-1) * dS.norm(dim=-1) * f.norm(dim=-1).max()
    L, M = (m.detach() for m in model.bracket.matrices(x, dE, dS))
    assert float((r_L.norm(dim=-1) / (L.norm(dim=(-2, -1)) * dS.norm(dim=-1))).max()) <= 1e-10
    assert float((r_M.norm(dim=-1) / (M.norm(dim=(-2, -1)) * dE.norm(dim=-1))).max()) <= 1e-10
    assert float(((dE * f).sum(-1).abs() / scale).max()) <= 1e-10
    assert float((dS * f).sum(-1).min()) >= -1e-12
    from sp_dynamics import integrate
    with torch.no_grad():
        xs = integrate(model, x[:4], torch.linspace(0, 1, 11, dtype=F64), method="discrete_gradient", step_size=0.02)
        E, S = model.energy(xs), model.entropy(xs)
    assert float((E - E[:, :1]).abs().max()) <= 1e-10
    assert float((S[:, 1:] - S[:, :-1]).min()) >= -1e-12


def test_entropy_orientation_and_flip():
    # Catches: an orientation term that is not zero for entropies growing along the data, or a
    # flip that does not make the entropy grow.
    assert float(entropy_orientation(torch.tensor([0.1, 0.0, 2.0]))) == 0.0
    assert math.isclose(float(entropy_orientation(torch.tensor([-1.0, -2.0]))), 1.0)
    data = make_family_dataset("dno", seed=0, **TINY)
    x, dx = data.pairs(0)
    for seed in range(6):
        torch.manual_seed(seed)
        model = GENERICNet(3, hidden=8, depth=1).double()
        orient_entropy(model, x, dx)
        dS = model.gradients(x)[1]
        assert float((dS * dx).sum()) >= 0


def test_reinitialize_draws_new_parameters_and_keeps_zero_heads():
    # Catches: restarts that reuse the same weights (no diversity), or that overwrite the
    # MixedBracket's zero-initialised friction head (the constant start it relies on).
    torch.manual_seed(0)
    model = GENERICNet(3).double()
    old = {k: v.clone() for k, v in model.state_dict().items()}
    reinitialize(model)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, old[k])]
    assert "bracket.xi" in changed and "energy_net.fn.0.weight" in changed
    assert torch.count_nonzero(model.bracket.g[-1].weight) == 0


@pytest.mark.parametrize("bad,match", [
    ("nan", "NaN"), ("times", "strictly increasing"), ("shape", "must be"), ("both", "either"),
    ("uneven", "evenly spaced"), ("nothing", "pass derivatives"),
])
def test_fit_rejects_bad_input_with_a_clear_error(bad, match):
    # Catches: bad data reaching torch (a deep stack trace or silent NaN training).
    data = make_family_dataset("dno", seed=0, **TINY)
    model = GENERICNet(3, hidden=8, depth=1).double()
    t, xs = data.t.clone(), data.x[0].clone()
    x, dx = data.pairs(0)
    with pytest.raises(ValueError, match=match):
        if bad == "nan":
            xs[0, 3, 1] = float("nan")
            fit(model, xs, t=t, config=FAST, progress=False)
        elif bad == "times":
            t[4] = t[3]
            fit(model, xs, t=t, config=FAST, progress=False)
        elif bad == "shape":
            fit(model, xs, t=t[:-1], config=FAST, progress=False)
        elif bad == "both":
            fit(model, xs, dx, t=t, config=FAST, progress=False)
        elif bad == "uneven":
            t[5] += 0.01
            fit(model, xs, t=t, config=FAST, progress=False)
        else:
            fit(model, x, config=FAST, progress=False)


def test_fit_config_and_dataset_noise_are_validated():
    with pytest.raises(ValueError, match="restarts"):
        FitConfig(restarts=0).validate()
    with pytest.raises(ValueError, match="weighting"):
        FitConfig(weighting="per-point").validate()
    # Catches: a method name the trajectory loss does not know (e.g. "midpoint") silently falling
    # through to one of torchdiffeq's explicit solvers.
    with pytest.raises(ValueError, match="FitConfig.method"):
        FitConfig(method="midpoint").validate()
    with pytest.raises(ValueError, match="noise_std"):
        make_family_dataset("dno", seed=0, noise_std=-0.1, **TINY)


def test_fit_converts_float32_data_to_the_model_dtype():
    # Catches: float32 arrays (numpy's default for many users) failing deep inside linear.py.
    data = make_family_dataset("pendulum", seed=0, **TINY)
    x, dx = data.pairs(0)
    model = HamiltonianNN(2, hidden=8, depth=1).double()
    fit(model, x.float(), dx.float(), config=FAST, progress=False)


def test_estimate_derivatives_accuracy_and_the_midpoint_identity():
    # Catches: a derivative estimator with the wrong order, and a "midpoint" estimator that is
    # not exactly the implicit-midpoint residual (which is how meta-training learns from states).
    from sp_dynamics import estimate_derivatives

    t = torch.linspace(0, 10, 101, dtype=F64)
    x = torch.stack([torch.sin(1.3 * t), 1.3 * torch.cos(1.3 * t)], -1).unsqueeze(0)   # (1, T, 2)
    dx = torch.stack([1.3 * torch.cos(1.3 * t), -1.69 * torch.sin(1.3 * t)], -1).unsqueeze(0)
    xs, ds = estimate_derivatives(t, x, "spline")
    inner = slice(3, -3)  # the spline's end conditions are less accurate at the two ends
    assert float((ds - dx)[:, inner].abs().max()) < 2e-4 and torch.equal(xs, x)
    xm, dm = estimate_derivatives(t, x, "midpoint")
    assert xm.shape == (1, 100, 2)
    model = HamiltonianNN(2, hidden=8, depth=1).double()
    lhs = trajectory_loss(model, t, x[0], weights=torch.ones(2, dtype=F64))
    rhs = ((model(0.0, xm[0]) - dm[0]).pow(2).mean(0)).sum() * 0.1**2
    assert torch.allclose(lhs, rhs, rtol=1e-12)
    noisy = x + 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=F64)
    _, dn = estimate_derivatives(t, noisy, "smoothing_spline")
    assert float((dn - dx)[:, inner].pow(2).mean().sqrt()) < 0.05
    with pytest.raises(ValueError, match="unknown derivative method"):
        estimate_derivatives(t, x, "magic")
    with pytest.raises(ValueError, match="strictly increasing"):
        estimate_derivatives(t.flip(0), x, "spline")


def test_meta_training_and_adaptation_learn_from_estimated_derivatives():
    # Catches: the trajectory route not reaching the meta-learning path (shapes, dtypes).
    from sp_dynamics import LatentGENERICNet, estimate_derivatives
    from sp_dynamics.meta import MetaConfig, adapt_latent, meta_train

    data = make_family_dataset("dno", seed=0, noise_std=0.01, n_instances=4, n_train=3, n_traj=2, n_points=21)
    xm, dm = estimate_derivatives(data.t, data.x, "midpoint")            # (I, J, T-1, n)
    x, dx = xm.reshape(4, -1, 3), dm.reshape(4, -1, 3)
    torch.manual_seed(0)
    model = LatentGENERICNet(3, hidden=16, depth=2, hyper_hidden=16).double()
    Z, log = meta_train(model, x[:3], dx[:3], config=MetaConfig(iterations=5, tasks_per_batch=2, points_per_task=16),
                        progress=False)
    z, history = adapt_latent(model, x[3:, :16], dx[3:, :16], z_init=Z.mean(0), steps=5, entropy_penalty=1.0)
    assert torch.isfinite(z).all() and history[-1] <= history[0]


@pytest.mark.parametrize("seed", [0, 1])
def test_power_law_friction_learns_the_gas_bracket(seed):
    # Catches: the mixed bracket's friction losing the gas containers again. With the true E and
    # S given, only the bracket is learned (300 random states, 600 L-BFGS evaluations): the
    # power-law friction gets every coordinate of the field to ~2e-3 relative; the MLP friction
    # of raw grad E stalls at 0.5-0.6 on the entropy rates (seeds 0 and 1, measured 2026-12-05),
    # since gamma / (T1 T2)^2 spans a factor of ~e^9 over the states.
    system = get_system("gas_containers")
    mu = torch.tensor([6.3], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    lo, hi = (torch.tensor(b, dtype=torch.float64) for b in (system.state_low, system.state_high))
    x = lo + (hi - lo) * torch.rand(300, 4, generator=g, dtype=torch.float64)
    dx = system.f(mu, x)
    torch.manual_seed(seed)
    model = GENERICNet(4, friction_input="gradient", friction_law="power", energy=lambda y: system.E(mu, y),
                       entropy=lambda y: system.S(mu, y)).double()
    fit(model, x, dx, config=FitConfig(max_iter=600, restarts=1), progress=False)
    with torch.no_grad():
        err = ((model(0.0, x) - dx).pow(2).mean(0) / dx.pow(2).mean(0)).sqrt()
    assert err.max() < 1e-2, err


def test_per_sample_jacobian_matches_autograd_rows():
    # Catches: the torch.func path of the models (nn.gradient under vmap/jacrev) computing a
    # different field or Jacobian than plain autograd -- the Levenberg-Marquardt phase would then
    # step on a wrong linearisation. float64, every row of J checked.
    from sp_dynamics.fitting import _per_sample_jacobian

    torch.manual_seed(0)
    model = GENERICNet(3, hidden=8, depth=2, friction_law="power").double()
    with torch.no_grad():
        model.bracket.g[-1].weight.normal_(0.0, 0.3)  # make every parameter matter
        model.bracket.power.weight.normal_(0.0, 0.3)
    x = torch.randn(4, 3, dtype=F64)
    named = dict(model.named_parameters())
    J = _per_sample_jacobian(model, {k: v.detach() for k, v in named.items()}, {}, dict(model.named_buffers()), x)
    f = model(0.0, x).reshape(-1)
    for k in range(len(f)):
        row = torch.autograd.grad(f[k], list(named.values()), retain_graph=True, allow_unused=True)
        row = torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(row, named.values())])
        assert torch.allclose(J[k], row, rtol=1e-10, atol=1e-12)


def test_levenberg_marquardt_phase_lowers_the_loss_and_reports_itself():
    # Catches: a Levenberg-Marquardt phase that does not descend (a wrong sign or scale of the
    # residual, a step applied to the wrong parameters) or that is not recorded in FitResult.
    data = make_family_dataset("dno", seed=0, **TINY)
    x, dx = data.pairs(0)
    torch.manual_seed(0)
    model = GENERICNet(3, hidden=16, depth=2).double()
    result = fit(model, x, dx, config=FitConfig(max_iter=40, restarts=1, lm_iter=5, lm_points=10), progress=False)
    assert result.evaluations == 40 and 1 <= result.lm_iterations <= 5
    before = result.losses[result.evaluations - 1]
    assert result.final_loss < 0.5 * before  # measured: 2.4e-2 -> 3.0e-3 in 5 iterations on 10-state subsets
    with torch.no_grad():  # the model holds the parameters of the last accepted step
        assert math.isclose(float(derivative_loss(model, x, dx)), result.final_loss, rel_tol=1e-6)


def test_energy_consistency_is_zero_for_a_conserved_energy_and_scale_free():
    # Catches: an energy term that penalises the true energy (so it would bias every fit) or that
    # depends on the energy's arbitrary scale.
    from sp_dynamics.fitting import energy_consistency

    system = get_system("gas_containers")
    mu = torch.tensor([7.0], dtype=F64)
    g = torch.Generator().manual_seed(1)
    lo, hi = (torch.tensor(b, dtype=F64) for b in (system.state_low, system.state_high))
    x = (lo + (hi - lo) * torch.rand(50, 4, generator=g, dtype=F64)).requires_grad_(True)
    dE = torch.autograd.grad(system.E(mu, x).sum(), x)[0]
    dx = system.f(mu, x.detach())
    assert float(energy_consistency(dE, dx)) < 1e-25
    wrong = dE * torch.tensor([1.0, 1.0, 1.0, -1.0], dtype=F64)  # one temperature of the wrong sign
    assert float(energy_consistency(wrong, dx)) > 1e-4
    assert math.isclose(float(energy_consistency(-3.0 * wrong, dx)), float(energy_consistency(wrong, dx)), rel_tol=1e-12)


def _tiny_dno_and_small_model(seed: int):
    """One tiny DNO instance's (x, dx) and a small float64 GENERICNet initialised from ``seed``."""
    x, dx = make_family_dataset("dno", seed=0, **TINY).pairs(0)
    torch.manual_seed(seed)
    return x, dx, GENERICNet(3, hidden=16, depth=2).double()


def test_whole_fit_starts_keep_the_lowest_final_loss_and_extend_the_single_fit():
    # Catches: FitConfig(starts=k) returning a start other than the one with the lowest final
    # training loss, loading another start's parameters into the model, changing what start 0
    # is (the plain fit), or leaking into the user's random stream.
    x, dx, model = _tiny_dno_and_small_model(seed=2)
    config = FitConfig(max_iter=20, restarts=2, restart_iter=5, chunk=5)
    single = copy.deepcopy(model)
    plain = fit(single, x, dx, config=config, progress=False)
    state = torch.get_rng_state()
    result = fit(model, x, dx, config=replace(config, starts=3), progress=False)
    assert torch.equal(state, torch.get_rng_state())
    assert len(result.start_losses) == 3 and len(set(result.start_losses)) == 3
    assert result.start_losses[0] == plain.data_loss
    assert result.chosen_start == min(range(3), key=lambda s: result.start_losses[s])
    assert result.data_loss == min(result.start_losses)
    assert math.isclose(float(derivative_loss(model, x, dx).detach()), result.data_loss, rel_tol=1e-12)


def test_starts_stop_at_the_first_start_with_a_good_loss():
    # Catches: FitConfig(start_good_loss=g) that runs further starts after one reached g (the
    # compute it exists to save), that stops before any start reached it, or that keeps a
    # start other than the best of those run.
    x, dx, model = _tiny_dno_and_small_model(seed=2)
    config = FitConfig(max_iter=20, restarts=2, restart_iter=5, chunk=5, starts=3)
    every = fit(copy.deepcopy(model), x, dx, config=config, progress=False).start_losses
    assert len(every) == 3
    good = min(every[:2])  # met by start 1 at the latest (by start 0 if its loss is as low)
    result = fit(copy.deepcopy(model), x, dx, config=replace(config, start_good_loss=good), progress=False)
    ran = 1 if every[0] <= good else 2
    assert result.start_losses == every[:ran]
    assert result.data_loss == min(every[:ran]) and result.chosen_start == ran - 1
    # a threshold no start meets runs them all
    assert fit(copy.deepcopy(model), x, dx, config=replace(config, start_good_loss=min(every) / 2),
               progress=False).start_losses == every


@pytest.mark.parametrize("bad", [dict(lm_iter=-1), dict(lm_points=-1), dict(energy_penalty=-1.0), dict(starts=0),
                                 dict(polish_iter=-1), dict(start_good_loss=-1.0), dict(start_good_loss=float("nan"))])
def test_new_fit_settings_are_checked(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        FitConfig(**bad).validate()


def test_polish_phase_minimises_the_data_term_alone_after_a_penalised_run():
    # Catches: FitConfig(polish_iter=k) that keeps the penalties in the polishing phase (then the
    # last recorded loss would exceed the data term by the penalty), that skips the phase, or that
    # ends with a data fit worse than the penalised run it started from.
    x, dx, model = _tiny_dno_and_small_model(seed=3)
    config = FitConfig(max_iter=30, restarts=1, chunk=5, energy_penalty=10.0)
    plain_model = copy.deepcopy(model)
    plain = fit(plain_model, x, dx, config=config, progress=False)
    assert plain.losses[-1] > plain.data_loss * (1 + 1e-6)  # the penalised loss carries the penalty
    result = fit(model, x, dx, config=replace(config, polish_iter=20), progress=False)
    assert plain.evaluations == 30 and 30 < result.evaluations <= 50 and result.losses[:30] == plain.losses
    assert math.isclose(min(result.losses[30:]), result.data_loss, rel_tol=1e-10)
    assert result.data_loss <= plain.data_loss


def test_lm_and_energy_penalty_need_derivatives():
    model = GENERICNet(3, hidden=8, depth=1).double()
    xs = torch.randn(2, 5, 3, dtype=F64)
    t = torch.linspace(0, 1, 5, dtype=F64)
    with pytest.raises(ValueError, match="derivative data"):
        fit(model, xs, t=t, config=FitConfig(lm_iter=3), progress=False)


def test_shooting_loss_gradient_matches_finite_differences_in_parameters_and_starts():
    # Catches: a multiple-shooting loss whose gradient is wrong in the model parameters or in
    # the free window starts (L-BFGS would then stall or walk off), float64, RK4 windows of 2
    # intervals over 5 samples (the last window reaches past the data and is masked).
    from sp_dynamics.losses import shooting_loss, shooting_starts

    data = make_family_dataset("dno", seed=0, **TINY)
    t, xs = data.t[:6], data.x[0, :, :6]
    torch.manual_seed(0)
    model = GENERICNet(3, hidden=6, depth=1).double()
    index = shooting_starts(6, 2)
    assert index == [0, 2, 4]
    starts0 = (xs[:, index] + 0.01 * torch.randn(2, 3, 3, dtype=F64)).requires_grad_(True)
    p0 = model.energy_net.fn[0].weight.detach().clone().requires_grad_(True)

    def loss(p, starts):
        module = model.energy_net.fn[0]
        saved = module.weight
        try:
            del module.weight
            module.weight = p
            return shooting_loss(model, t, xs, starts, method="rk4", horizon=2)
        finally:
            del module.weight
            module.register_parameter("weight", saved)

    assert torch.autograd.gradcheck(loss, (p0, starts0), atol=1e-6, rtol=1e-5)


def test_shooting_loss_is_zero_on_exact_trajectories_of_the_model():
    # Catches: windows compared with the wrong samples (an off-by-one in the window index, the
    # padding of the last window counted): on the model's own trajectories, started from their
    # true states, the loss is the integrator's error only.
    from sp_dynamics import integrate
    from sp_dynamics.losses import shooting_loss, shooting_starts

    torch.manual_seed(0)
    model = GENERICNet(3, hidden=8, depth=1).double()
    t = torch.linspace(0, 1, 12, dtype=F64)
    with torch.no_grad():
        xs = integrate(model, torch.randn(3, 3, dtype=F64), t, method="dopri5", rtol=1e-12, atol=1e-12)
    index = shooting_starts(12, 4)
    assert index == [0, 4, 8]
    exact = shooting_loss(model, t, xs, xs[:, index], method="rk4", horizon=4, substeps=4).detach()
    shifted = shooting_loss(model, t, xs, xs[:, [1, 5, 9]], method="rk4", horizon=4, substeps=4).detach()
    assert float(exact) < 1e-12 < 1e-4 < float(shifted)
    with pytest.raises(ValueError, match="starts must be"):
        shooting_loss(model, t, xs, xs[:, :2], horizon=4)
    with pytest.raises(ValueError, match="horizon"):
        shooting_loss(model, t, xs, xs[:, :1], horizon=12)


def test_free_start_shooting_fits_noisy_trajectories_and_keeps_structure():
    # Catches: FitConfig(free_starts=True) not training (the starts or the model frozen, the
    # wrapper's restarts resetting the model instead of the starts) or breaking the model's
    # GENERIC structure; and the option silently accepted for derivative data.
    data = make_family_dataset("dno", seed=0, noise_std=0.01, **TINY)
    torch.manual_seed(0)
    model = GENERICNet(3, hidden=16, depth=2).double()
    cfg = replace(FAST, method="rk4", horizon=5, free_starts=True)
    state = torch.get_rng_state()
    result = fit(model, data.x[0], t=data.t, config=cfg, progress=False)
    assert torch.equal(state, torch.get_rng_state())
    assert result.losses[-1] < 0.5 * result.restart_losses[0] and result.data_loss <= result.losses[-1] + 1e-12
    assert not any(n.startswith("starts") for n, _ in model.named_parameters())   # the model comes back bare
    x = data.x[0].reshape(-1, 3)
    dE, dS = (g.detach() for g in model.gradients(x))
    f = model(0.0, x).detach()
    assert float(((dE * f).sum(-1).abs() / (dE.norm(dim=-1) * f.norm(dim=-1))).max()) <= 1e-10
    assert float((dS * f).sum(-1).min()) >= -1e-12
    with pytest.raises(ValueError, match="free_starts"):
        fit(model, *data.pairs(0), config=cfg, progress=False)
