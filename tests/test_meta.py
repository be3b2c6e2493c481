"""Evolving-latent meta-training and latent auto-decoding."""

import dataclasses
import math

import pytest
import torch
from torch import nn

from conftest import all_system_names
from sp_dynamics import LatentGENERICNet, LatentHamiltonianNN, get_system, make_family_dataset
from sp_dynamics.meta import MetaConfig, adapt_latent, meta_train, support_loss
from sp_dynamics.meta.training import _RowAdam

TINY = dict(n_instances=6, n_train=4, n_traj=2)


def _model(system, seed=0):
    torch.manual_seed(seed)
    if system.is_generic:
        return LatentGENERICNet(system.dim, kind="svd", rank=2, latent_dim=4, hidden=16, depth=2, hyper_hidden=16).double()
    return LatentHamiltonianNN(system.dim, kind="svd", rank=2, latent_dim=4, hidden=16, depth=2, hyper_hidden=16).double()


def _train_data(name):
    d = make_family_dataset(name, seed=0, **TINY)
    tr = d.train_ids
    return d, d.x[tr].reshape(len(tr), -1, d.dim), d.dx[tr].reshape(len(tr), -1, d.dim)


CFG = MetaConfig(iterations=12, tasks_per_batch=3, points_per_task=32, checkpoint_every=4, log_every=2)


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_resume_after_kill_matches_uninterrupted(tmp_path, schedule):
    # Catches: state missing from checkpoints (optimiser moments, latent Adam state, RNG
    # streams, the learning-rate schedule): a resumed run would then drift from the
    # uninterrupted one.
    CFG = dataclasses.replace(globals()["CFG"], lr_schedule=schedule)
    _, x, dx = _train_data("mass_spring")
    system = get_system("mass_spring")
    full = _model(system)
    z_full, log_full = meta_train(full, x, dx, config=CFG, run_dir=tmp_path / "full", progress=False)

    class Killed(Exception):
        pass

    def kill_at_7(it, _row):  # dies after the checkpoint at iteration 4, before the one at 8
        if it == 7:
            raise Killed

    first = _model(system)
    with pytest.raises(Killed):
        meta_train(first, x, dx, config=CFG, run_dir=tmp_path / "resumed", progress=False, callback=kill_at_7)
    resumed = _model(system, seed=123)  # a fresh process: different initial weights, overwritten
    z_res, log_res = meta_train(resumed, x, dx, config=CFG, run_dir=tmp_path / "resumed", progress=False)
    assert torch.equal(z_res, z_full)
    for (n, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), n
    assert [r["loss"] for r in log_res] == [r["loss"] for r in log_full]
    csv_rows = (tmp_path / "resumed" / "metrics.csv").read_text().strip().splitlines()
    assert len(csv_rows) == 1 + len(log_full)
    assert (tmp_path / "resumed" / "config.json").exists()


def test_cosine_schedule_decays_both_learning_rates():
    # Catches: a schedule that is computed but never reaches the optimisers (cosine and
    # constant runs would then end identically), or a wrong decay formula.
    from sp_dynamics.meta.training import lr_factor

    cos = dataclasses.replace(CFG, lr_schedule="cosine")
    assert lr_factor(cos, 0) == 1.0 and lr_factor(cos, 6) == pytest.approx(0.5)
    assert lr_factor(cos, 11) == pytest.approx(0.5 * (1 + math.cos(math.pi * 11 / 12)))
    assert lr_factor(CFG, 11) == 1.0
    _, x, dx = _train_data("mass_spring")
    system = get_system("mass_spring")
    z_const, _ = meta_train(_model(system), x, dx, config=CFG, progress=False)
    z_cos, _ = meta_train(_model(system), x, dx, config=cos, progress=False)
    assert not torch.allclose(z_const, z_cos)
    with pytest.raises(ValueError, match="unknown lr_schedule"):
        meta_train(_model(system), x, dx, config=dataclasses.replace(CFG, lr_schedule="step"), progress=False)


def test_checkpoint_errors(tmp_path):
    _, x, dx = _train_data("mass_spring")
    system = get_system("mass_spring")
    meta_train(_model(system), x, dx, config=CFG, run_dir=tmp_path, progress=False)
    other = MetaConfig(iterations=12, tasks_per_batch=2, points_per_task=32, checkpoint_every=4)
    with pytest.raises(ValueError, match="different config"):
        meta_train(_model(system), x, dx, config=other, run_dir=tmp_path, progress=False)
    # Catches: a checkpoint loaded into another model (load_state_dict casts float64 weights into
    # a float32 model silently, and an energy scale is not a parameter at all).
    with pytest.raises(ValueError, match="different model"):
        meta_train(_model(system).float(), x.float(), dx.float(), config=CFG, run_dir=tmp_path, progress=False)
    scaled = LatentHamiltonianNN(system.dim, kind="svd", rank=2, latent_dim=4, hidden=16, depth=2, hyper_hidden=16,
                                 energy_scale=2.0).double()
    with pytest.raises(ValueError, match="different model"):
        meta_train(scaled, x, dx, config=CFG, run_dir=tmp_path, progress=False)
    (tmp_path / "checkpoint.pt").write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match="corrupt or unreadable meta-training checkpoint"):
        meta_train(_model(system), x, dx, config=CFG, run_dir=tmp_path, progress=False)
    bad = x.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        meta_train(_model(system), bad, dx, config=CFG, progress=False)
    with pytest.raises(ValueError, match="systems, points"):
        meta_train(_model(system), x[0], dx[0], config=CFG, progress=False)


def test_row_adam_leaves_other_rows_alone():
    # Catches: latents of systems outside the batch moving (momentum of a plain Adam).
    table = torch.zeros(5, 3, dtype=torch.float64)
    opt = _RowAdam(table, lr=0.1)
    opt.step(table, torch.tensor([0, 1]), torch.ones(2, 3, dtype=torch.float64))
    before = table.clone()
    opt.step(table, torch.tensor([2]), torch.ones(1, 3, dtype=torch.float64))
    assert torch.equal(table[:2], before[:2]) and torch.equal(table[3:], before[3:])
    assert torch.allclose(table[2], torch.full((3,), -0.1, dtype=torch.float64))  # first Adam step = -lr


@pytest.mark.parametrize("kind", ["fw", "shift", "ro", "mr", "svd"])
def test_every_modulation_meta_trains_without_nan(kind):
    # Catches: NaN gradients at initialisation, e.g. the locality term ||phi||_2 differentiated
    # at phi = 0 (FW's zero-initialised linear hypernetwork) as sqrt(sum phi^2).
    _, x, dx = _train_data("mass_spring")
    torch.manual_seed(0)
    model = LatentHamiltonianNN(2, kind=kind, rank=2, latent_dim=4, hidden=16, depth=2, hyper_hidden=16).double()
    _, log = meta_train(model, x, dx, config=MetaConfig(iterations=5, tasks_per_batch=3, points_per_task=16, log_every=1),
                        progress=False)
    assert all(math.isfinite(r["loss"]) for r in log)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_meta_training_reduces_loss_and_batches_tasks():
    _, x, dx = _train_data("duffing")
    model = _model(get_system("duffing"))
    cfg = MetaConfig(iterations=60, tasks_per_batch=4, points_per_task=64, lr_base=3e-3, log_every=10)
    _, log = meta_train(model, x, dx, config=cfg, progress=False)
    assert log[-1]["loss"] < 0.5 * log[0]["loss"]
    assert all(math.isfinite(r["loss"]) for r in log)


@pytest.mark.parametrize("name", all_system_names())
def test_adaptation_reduces_support_loss_on_every_system(name):
    # Catches: adaptation that does not reach the latent (frozen wrongly, detached hyper path)
    # or touches the base.
    system = get_system(name)
    d, x, dx = _train_data(name)
    model = _model(system)
    cfg = MetaConfig(iterations=25, tasks_per_batch=4, points_per_task=64, lr_base=3e-3)
    Z, _ = meta_train(model, x, dx, config=cfg, progress=False)
    g = torch.Generator().manual_seed(0)
    shots = [d.sample_shots(i, 20, g) for i in d.test_ids]
    xs, dxs = torch.stack([s[0] for s in shots]), torch.stack([s[1] for s in shots])
    base_before = {k: v.clone() for k, v in model.state_dict().items()}
    z, hist = adapt_latent(model, xs, dxs, z_init=Z.mean(0), steps=40, lr=5e-2)
    after = support_loss(model, xs, dxs, z)
    before = support_loss(model, xs, dxs, Z.mean(0).expand(len(xs), -1))
    assert (after < before).all(), (before, after)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in base_before.items())  # base frozen
    assert all(p.requires_grad for p in model.parameters())  # and restored afterwards
    cond = model.condition(z[0])
    assert cond(0.0, xs[0]).shape == xs[0].shape


def test_adapt_bad_input():
    model = _model(get_system("pendulum"))
    with pytest.raises(ValueError, match="support sets"):
        adapt_latent(model, torch.zeros(5, 2), torch.zeros(5, 2), z_init=torch.zeros(4))


REFINE = dataclasses.replace(CFG, refine_evals=30, refine_points=16, refine_chunk=10)


def test_refinement_lowers_the_training_loss():
    # Catches: a refinement phase that never reaches the base or the latent table (the loss
    # would stay where the Adam phase left it), or that returns a stale latent table.
    _, x, dx = _train_data("mass_spring")
    system = get_system("mass_spring")
    adam_only = _model(system)
    z0, _ = meta_train(adam_only, x, dx, config=CFG, progress=False)
    refined = _model(system)
    z1, log = meta_train(refined, x, dx, config=REFINE, progress=False)
    phases = [r["phase"] for r in log]
    assert phases.count("lbfgs") >= 2 and phases[-1] == "lbfgs"  # chunks of about 10 evaluations
    assert log[-1]["iteration"] >= CFG.iterations + 30
    full_loss = lambda m, z: float(support_loss(m, x, dx, z).mean().detach())  # noqa: E731  (all points, not the subsample)
    assert full_loss(refined, z1) < 0.5 * full_loss(adam_only, z0)
    assert not torch.equal(z0, z1)


def test_resume_inside_refinement_matches_uninterrupted(tmp_path):
    # Catches: L-BFGS curvature history, the evaluation count or the refined latent table
    # missing from the checkpoint (a resumed refinement would then take other steps).
    _, x, dx = _train_data("mass_spring")
    system = get_system("mass_spring")
    full = _model(system)
    z_full, log_full = meta_train(full, x, dx, config=REFINE, run_dir=tmp_path / "full", progress=False)

    class Killed(Exception):
        pass

    chunks = []

    def kill_after_second_chunk(step, row):
        if row["phase"] == "lbfgs":
            chunks.append(step)
            if len(chunks) == 2:
                raise Killed

    with pytest.raises(Killed):
        meta_train(_model(system), x, dx, config=REFINE, run_dir=tmp_path / "resumed", progress=False,
                   callback=kill_after_second_chunk)
    resumed = _model(system, seed=5)
    z_res, log_res = meta_train(resumed, x, dx, config=REFINE, run_dir=tmp_path / "resumed", progress=False)
    assert torch.allclose(z_res, z_full, rtol=0, atol=1e-12)
    for (n, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.allclose(a, b, rtol=0, atol=1e-12), n
    assert [r["phase"] for r in log_res] == [r["phase"] for r in log_full]
    assert [r["loss"] for r in log_res] == pytest.approx([r["loss"] for r in log_full], rel=1e-10)


def test_meta_config_rejects_bad_values():
    _, x, dx = _train_data("mass_spring")
    for bad in (dict(refine_evals=-1), dict(refine_points=0), dict(lr_base=0.0), dict(lam_z=-1.0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            meta_train(_model(get_system("mass_spring")), x, dx, config=dataclasses.replace(CFG, **bad), progress=False)


def test_resume_on_other_data_is_refused(tmp_path):
    # Catches: a run folder resumed with other data (fewer systems, another seed) silently
    # returning the old latent table, and a refused resume overwriting the folder's config.json.
    _, x, dx = _train_data("mass_spring")
    system = get_system("mass_spring")
    meta_train(_model(system), x, dx, config=CFG, run_dir=tmp_path, progress=False)
    before = (tmp_path / "config.json").read_text()
    with pytest.raises(ValueError, match="other data"):
        meta_train(_model(system), x[:3], dx[:3], config=CFG, run_dir=tmp_path, progress=False)
    other = make_family_dataset("mass_spring", seed=1, **TINY)
    xo, dxo = (t[other.train_ids].reshape(4, -1, 2) for t in (other.x, other.dx))
    with pytest.raises(ValueError, match="other data"):
        meta_train(_model(system), xo, dxo, config=CFG, run_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="different config"):
        meta_train(_model(system), x, dx, config=dataclasses.replace(CFG, lam_z=0.5), run_dir=tmp_path, progress=False)
    assert (tmp_path / "config.json").read_text() == before


def test_batch_and_point_counts_beyond_the_data_are_refused():
    # Catches: tasks_per_batch > systems and points_per_task > points being clipped silently.
    _, x, dx = _train_data("mass_spring")
    system = get_system("mass_spring")
    with pytest.raises(ValueError, match="tasks_per_batch = 5 exceeds the 4 training systems"):
        meta_train(_model(system), x, dx, config=dataclasses.replace(CFG, tasks_per_batch=5), progress=False)
    with pytest.raises(ValueError, match="points_per_task = 500 exceeds the 202 points"):
        meta_train(_model(system), x, dx, config=dataclasses.replace(CFG, points_per_task=500), progress=False)


def test_float32_data_is_converted_for_a_float64_model_and_nan_shots_are_refused():
    # Catches: float32 data failing deep inside torch's linear layers, and NaN support sets
    # returning NaN latents instead of an error.
    _, x, dx = _train_data("mass_spring")
    system = get_system("mass_spring")
    model = _model(system)
    Z, log = meta_train(model, x.float(), dx.float(), config=dataclasses.replace(CFG, iterations=2), progress=False)
    assert Z.dtype == torch.float64 and math.isfinite(log[-1]["loss"])
    xs, dxs = x[:2, :10].clone(), dx[:2, :10]
    z, _ = adapt_latent(model, xs.float(), dxs.float(), z_init=Z.mean(0), steps=2)
    assert z.dtype == torch.float64
    xs[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        adapt_latent(model, xs, dxs, z_init=Z.mean(0), steps=2)
    from sp_dynamics.meta import adapt_latent_gauss_newton
    with pytest.raises(ValueError, match="NaN"):
        adapt_latent_gauss_newton(model, xs, dxs, z_init=Z.mean(0), steps=1)
    with pytest.raises(ValueError, match="z_init"):
        adapt_latent(model, x[:2, :10], dx[:2, :10], z_init=torch.zeros(3, dtype=torch.float64), steps=1)
    with pytest.raises(ValueError, match="float32 but the model's weights are float64"):
        model(0.0, x[:2, :10].float(), Z[:2].float())


def test_a_finished_run_is_saved_in_the_model_format_and_loads_without_settings(tmp_path):
    # Catches: reloading a meta-trained model needing kind, rank, latent_dim or energy_scale
    # from the user.
    from sp_dynamics.meta import load_run

    _, x, dx = _train_data("mass_spring")
    system = get_system("mass_spring")
    model = LatentHamiltonianNN(2, kind="mr", rank=2, latent_dim=3, hidden=16, depth=2, hyper_hidden=16,
                                energy_scale=2.5).double()
    Z, _ = meta_train(model, x, dx, config=CFG, run_dir=tmp_path, progress=False)
    loaded, Z2 = load_run(tmp_path)
    assert torch.equal(Z, Z2) and loaded.energy_scale == 2.5 and loaded.energy_net.kind == "mr"
    assert torch.equal(loaded(0.0, x[:2], Z[:2]), model(0.0, x[:2], Z[:2]))
    with pytest.raises(ValueError, match="no finished meta-training run"):
        load_run(tmp_path / "nothing")


@pytest.mark.parametrize("winner", [0, 1])
def test_restarts_continue_the_best_candidate(winner, monkeypatch):
    # Catches: a restart phase that does not carry the winner into the caller's model (the
    # returned latents would belong to another network), or one that changes the run when the
    # given initialisation wins (it must then equal the run without restarts).
    from sp_dynamics.meta import training

    _, x, dx = _train_data("mass_spring")
    system = get_system("mass_spring")
    scores = iter([1.0, 0.5, 2.0] if winner == 1 else [0.1, 0.5, 2.0])
    monkeypatch.setattr(training._AdamRun, "score", lambda self: next(scores))
    cfg = dataclasses.replace(CFG, restarts=3, restart_iterations=4)
    model = _model(system)
    z, log = meta_train(model, x, dx, config=cfg, progress=False)
    restart_rows = [r for r in log if r["phase"].startswith("restart")]
    assert len(restart_rows) == 3 and restart_rows[winner]["phase"].endswith("(chosen)")
    plain = _model(system)
    z_plain, _ = meta_train(plain, x, dx, config=CFG, progress=False)
    same = torch.equal(z, z_plain) and all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                                               plain.state_dict().values()))
    assert same == (winner == 0)
    assert [r["iteration"] for r in log if r["phase"] == "adam"][-1] == CFG.iterations


def test_gauss_newton_adapts_a_linear_in_latent_field_exactly_in_one_step():
    # Catches: a Gauss-Newton adapter that is not the exact least-squares solve where the field
    # is linear in the latent (wrong Jacobian, sign or residual), the case where it replaces an
    # inner optimisation loop by one solve.
    from sp_dynamics.meta import adapt_latent_gauss_newton

    class LinearInLatent(nn.Module):
        latent_dim = 3

        def __init__(self):
            super().__init__()
            self.A = nn.Linear(2, 2 * 3).double()
            self.b = nn.Linear(2, 2).double()

        def forward(self, t, x, z):
            a = torch.tanh(self.A(x)).reshape(*x.shape[:-1], 2, 3)
            return (a @ z.unsqueeze(-2).unsqueeze(-1)).squeeze(-1) + self.b(x)

    gen = torch.Generator().manual_seed(0)
    model = LinearInLatent()
    x = torch.randn(4, 20, 2, generator=gen, dtype=torch.float64)
    z_true = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        dx = model(0.0, x, z_true)
    z, history = adapt_latent_gauss_newton(model, x, dx, z_init=torch.zeros(3, dtype=torch.float64), steps=1)
    assert torch.allclose(z, z_true, atol=1e-6), (z - z_true).abs().max()
    assert history[-1] < 1e-10 * history[0]


def test_least_squares_adaptation_recovers_the_latent_of_a_head_modulated_model():
    # Catches: a "head" modulation that is not affine in z (then one solve is not the answer),
    # a least-squares adaptation with a wrong Jacobian or residual sign, and the solver accepted
    # for a model whose field is not linear in the latent (it would silently be one Gauss-Newton
    # step from zero, not the optimum).
    from sp_dynamics import LatentGENERICNet, LatentHamiltonianNN
    from sp_dynamics.meta import adapt_latent_gauss_newton, adapt_latent_lstsq, field_is_linear_in_latent

    gen = torch.Generator().manual_seed(0)
    model = LatentHamiltonianNN(2, kind="head", latent_dim=4, hidden=16, depth=2).double()
    with torch.no_grad():
        model.energy_net.hyper.out.weight.normal_(0.0, 0.3, generator=gen)
    assert field_is_linear_in_latent(model)
    x = torch.randn(3, 30, 2, generator=gen, dtype=torch.float64)
    z_true = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        dx = model(0.0, x, z_true)
        z = adapt_latent_lstsq(model, x, dx)
    assert torch.allclose(z, z_true, atol=1e-8), (z - z_true).abs().max()
    z_gn, _ = adapt_latent_gauss_newton(model, x, dx, z_init=torch.zeros(4, dtype=torch.float64), steps=1)
    assert torch.allclose(z_gn, z, atol=1e-6)           # one Gauss-Newton step is the same solve, up to its differences
    for other in (LatentHamiltonianNN(2, kind="svd", latent_dim=4), LatentGENERICNet(3, kind="head", latent_dim=4)):
        assert not field_is_linear_in_latent(other)
        with pytest.raises(ValueError, match="linear in the latent"):
            adapt_latent_lstsq(other, x if other.dim == 2 else torch.randn(3, 30, 3), dx if other.dim == 2 else
                               torch.randn(3, 30, 3))
