"""Structure tests of the Metriplector world model (no MuJoCo needed)."""

import pytest
import torch

from metriplector.world_model import (PortHamiltonianLayer, WorldModel, cem_plan, conv_width_for, stack_history,
                                      variance_covariance, world_model_loss)


def _layer(dtype=torch.float64, **kw):
    torch.manual_seed(0)
    return PortHamiltonianLayer(channels=6, actions=2, grid=8, fields=4, **kw).to(dtype)


def test_advection_keeps_field_norm_to_round_off_with_zero_action():
    # Catches: an Euler advection step (grows sum(phi^2) by h^2 |a K phi|^2), a coupling that is not
    # skew (canonical J plus the cross term must stay antisymmetric), or a Cayley map built wrongly.
    layer = _layer()
    with torch.no_grad():  # a cross-pair term well away from its small initialisation
        for p in layer.coupling.learned.parameters():
            p.normal_(0, 0.3)
    z = torch.randn(3, 6, 8, 8, dtype=torch.float64)
    co = layer.coefficients(z, torch.zeros(3, 2, dtype=torch.float64))
    a = co["a"] * 5.0  # large steps: the Cayley map is orthogonal for any strength
    phi = co["phi0"]
    out = layer.advect(phi, a)
    assert not torch.allclose(out, phi)
    torch.testing.assert_close(out.pow(2).sum(1), phi.pow(2).sum(1), rtol=1e-12, atol=0)
    K = layer.coupling.matrix()
    assert torch.equal(K, -K.T)


def test_zero_initialised_action_map_ignores_the_action_at_init():
    # Catches: an action path that bypasses the zero-initialised maps (e.g. actions added to the state),
    # which would make the untrained model's predictions depend on the action.
    torch.manual_seed(0)
    model = WorldModel(latent=8, widths=(8, 8, 8), layers=2, fields=4).double()
    z = torch.randn(4, 8, 8, 8, dtype=torch.float64)
    u1, u2 = torch.rand(4, 2, dtype=torch.float64) * 2 - 1, torch.rand(4, 2, dtype=torch.float64) * 2 - 1
    assert torch.equal(model.step(z, u1), model.step(z, u2))
    # and the map is live: after a nonzero update, the action changes the prediction
    with torch.no_grad():
        model.layers[0].action_map.weight.normal_(0, 0.1)
    assert not torch.allclose(model.step(z, u1), model.step(z, u2))


def test_dissipation_bounds_and_50_step_rollouts_stay_finite_and_bounded():
    # Catches: coefficient bounds that break the Gershgorin condition (an explicit diffusion step
    # that amplifies), or a rollout whose latent norm blows up over a CEM-length horizon.
    torch.manual_seed(1)
    model = WorldModel(latent=8, widths=(8, 8, 8), layers=2, fields=4)
    with torch.no_grad():
        for layer in model.layers:
            layer.action_map.weight.normal_(0, 0.5)
    with torch.no_grad():
        z0 = model.encode(torch.rand(5, 3, 64, 64))
        zs = model.rollout(z0, torch.rand(5, 50, 2) * 2 - 1)
    assert torch.isfinite(zs).all()
    norms = zs.flatten(2).norm(dim=-1)
    assert float(norms.max()) < 20 * float(z0.flatten(1).norm(dim=-1).max())
    layer = model.layers[0]
    assert layer.dt * (8 * layer.kappa_max + layer.gamma_max) <= 2.0 + 1e-12


def test_loss_trains_both_dynamics_and_the_baseline_matches_parameters():
    # Catches: a loss that does not reach the dynamics or the encoder (no decrease), and a baseline
    # whose parameter count drifts away from the Metriplector's (an unfair comparison).
    torch.manual_seed(0)
    frames = torch.rand(4, 4, 3, 64, 64)
    actions, rewards = torch.rand(4, 3, 2) * 2 - 1, torch.rand(4, 3)
    ref = WorldModel(latent=8, widths=(8, 8, 8), layers=2, fields=4)
    width = conv_width_for(ref.dynamics_parameters(), latent=8)
    conv = WorldModel(latent=8, widths=(8, 8, 8), dynamics="conv", conv_width=width)
    assert abs(conv.dynamics_parameters() - ref.dynamics_parameters()) <= 0.1 * ref.dynamics_parameters()
    for model in (ref, conv):
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        first = None
        for _ in range(15):
            out = world_model_loss(model, frames, actions, rewards, ar_steps=2)
            opt.zero_grad()
            out["total"].backward()
            opt.step()
            model.update_target(0.9)
            first = float(out["total"].detach()) if first is None else first
        assert float(out["total"].detach()) < first


def test_stack_history_puts_the_newest_frame_first():
    # Catches: an off-by-one in the frame window (observation t must end at frame t + history - 1)
    # or the frames stacked oldest first, which would silently feed the wrong velocity sign.
    frames = torch.arange(5.0).view(1, 5, 1, 1, 1).expand(1, 5, 3, 2, 2)
    obs = stack_history(frames, 2)
    assert obs.shape == (1, 4, 6, 2, 2)
    assert obs[0, :, 0, 0, 0].tolist() == [1.0, 2.0, 3.0, 4.0]   # newest
    assert obs[0, :, 3, 0, 0].tolist() == [0.0, 1.0, 2.0, 3.0]   # the frame before
    assert torch.equal(stack_history(frames, 1), frames)
    with pytest.raises(ValueError, match="at least 3 frames"):
        stack_history(frames[:, :2], 3)


def test_observe_at_rest_repeats_the_frame_and_the_decoder_term_trains():
    # Catches: a goal or first frame encoded with something other than itself as its previous frame
    # (the arm at rest), and a reconstruction term that does not reach the encoder or the decoder.
    torch.manual_seed(0)
    model = WorldModel(latent=8, widths=(8, 8, 8), layers=1, fields=4, history=2, decoder=True)
    frame = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(model.observe(frame), model.encode(torch.cat([frame, frame], 1)))
    assert not torch.allclose(model.observe(frame, torch.rand(2, 3, 64, 64)), model.observe(frame))
    frames = stack_history(torch.rand(3, 5, 3, 64, 64), 2)
    actions, rewards = torch.rand(3, 3, 2) * 2 - 1, torch.rand(3, 3)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(15):
        out = world_model_loss(model, frames, actions, rewards, ar_steps=2, recon_weight=1.0)
        opt.zero_grad()
        out["total"].backward()
        opt.step()
        first = float(out["reconstruction"].detach()) if first is None else first
    assert float(out["reconstruction"].detach()) < 0.5 * first
    assert model.decoder(torch.zeros(1, 8, 8, 8)).shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="decoder=True"):
        world_model_loss(WorldModel(latent=8, widths=(8, 8, 8), layers=1, fields=4), torch.rand(2, 3, 3, 64, 64),
                         torch.rand(2, 2, 2), torch.rand(2, 2), recon_weight=1.0)


def test_variance_covariance_terms():
    # Catches: regularisers that do not vanish for whitened latents or do not penalise collapse.
    x = torch.randn(64, 4, 8, 8) * 2.0
    var, cov = variance_covariance(x)
    assert float(var) == 0.0 and float(cov) < 0.05
    var_c, _ = variance_covariance(torch.zeros(64, 4, 8, 8))
    assert float(var_c) > 0.9


def test_cem_finds_the_minimum_of_a_quadratic_cost():
    target = torch.tensor([[0.3, -0.5], [0.8, 0.1], [-0.2, 0.4]])
    cost = lambda a: ((a - target) ** 2).flatten(1).sum(-1)  # noqa: E731
    mu = cem_plan(cost, 3, 2, population=128, elites=12, iterations=8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(mu, target, atol=0.05, rtol=0)


def test_bad_inputs_name_the_problem():
    model = WorldModel(latent=8, widths=(8, 8, 8), layers=1, fields=4)
    with pytest.raises(ValueError, match="RGB frames"):
        model.encode(torch.rand(2, 1, 64, 64))
    with pytest.raises(ValueError, match="2 stacked RGB frames"):
        WorldModel(latent=8, widths=(8, 8, 8), layers=1, fields=4, history=2).encode(torch.rand(2, 3, 64, 64))
    with pytest.raises(ValueError, match="history must be"):
        WorldModel(history=0)
    with pytest.raises(ValueError, match="actions of shape"):
        model.step(torch.zeros(2, 8, 8, 8), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="same \\(B, T\\)"):
        world_model_loss(model, torch.rand(2, 3, 3, 64, 64), torch.rand(2, 3, 2), torch.rand(2, 2))
    with pytest.raises(ValueError, match="conjugate pairs"):
        PortHamiltonianLayer(8, 2, fields=3)
    with pytest.raises(ValueError, match="dynamics must be"):
        WorldModel(dynamics="transformer")
    with pytest.raises(ValueError, match="elites"):
        cem_plan(lambda a: a.sum((1, 2)), 2, 2, population=4, elites=5)


def test_pose_probe_scores_linear_features_high_and_noise_low():
    # Catches: a probe that scores on its own fitting data (noise features would then look useful),
    # or an R^2 computed against the wrong mean.
    from metriplector.runners.reacher import _ridge_r2

    g = torch.Generator().manual_seed(0)
    X = torch.randn(600, 20, generator=g, dtype=torch.float64)
    Y = X[:, :4] @ torch.randn(4, 4, generator=g, dtype=torch.float64)
    assert _ridge_r2(X[:400], Y[:400], X[400:], Y[400:], 1e-3) > 0.99
    noise = torch.randn(600, 20, generator=g, dtype=torch.float64)
    assert _ridge_r2(noise[:400], Y[:400], noise[400:], Y[400:], 1e-3) < 0.1


def test_latent_pose_error_rewards_right_dynamics_and_penalises_frozen_ones():
    # Catches: a planner diagnostic that compares predictions with the wrong time index (a model
    # whose rollout ignores the actions would then look as good as the true dynamics), or a chance
    # level computed like the nearest match.
    import numpy as np

    from metriplector.runners.reacher import latent_pose_error

    rng = np.random.default_rng(0)
    N, T = 200, 12
    actions = torch.from_numpy(rng.uniform(-1, 1, (N, T, 2))).float()
    q = np.zeros((N, T + 1, 2))
    q[:, 0] = rng.uniform(0.5, 5.5, (N, 2))
    for t in range(T):
        q[:, t + 1] = q[:, t] + 0.3 * actions[:, t].numpy()
    frames = torch.zeros(N, T + 1, 4, 4, 3, dtype=torch.uint8)
    frames[..., 0, 0, :2] = torch.from_numpy(np.round((q % (2 * np.pi)) / (2 * np.pi) * 255)).to(torch.uint8)

    class Fake:  # the latent is the pose (x 2 pi) read off the frame; rollout steps it exactly or not at all
        history = 1

        def __init__(self, moves):
            self.moves = moves

        def encode(self, obs):
            return obs[:, :2, :1, :1] * 2 * np.pi

        def rollout(self, z, acts):
            steps = torch.cumsum(0.3 * acts, 1) if self.moves else torch.zeros_like(acts)
            return z[:, None] + steps[..., None, None]

    data = {"frames": frames, "actions": actions, "qpos": torch.from_numpy(q)}
    right, frozen = latent_pose_error(Fake(True), data, (0, 3)), latent_pose_error(Fake(False), data, (0, 3))
    assert right[0] == frozen[0] and right[3] < 0.5 * frozen[3]
    assert right[3] < 0.5 * right["chance"]


def test_eval_scores_the_shipped_checkpoint_on_recorded_episodes(tmp_path, capsys):
    # Catches: the shipped Reacher checkpoint no longer loading or scoring recorded episodes the user
    # names (no MuJoCo needed), and bad episode folders surfacing as tracebacks instead of one line.
    import json

    import numpy as np

    from metriplector.runners.reacher import main
    from sp_dynamics.cli import run_main

    rng = np.random.default_rng(0)
    folder = tmp_path / "episodes"
    folder.mkdir()
    for k in range(6):
        q = np.cumsum(rng.uniform(-0.2, 0.2, (7, 2)), 0)
        np.savez(folder / f"ep{k}.npz", frames=rng.integers(0, 255, (7, 64, 64, 3), dtype=np.uint8),
                 actions=rng.uniform(-1, 1, (6, 2)), rewards=np.zeros(6), qpos=q, qvel=np.zeros((7, 2)))
    assert run_main(main, ["eval", "--stored", str(folder)], False) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["episodes"] == 6 and line["model"] == "metriplector"
    assert all(np.isfinite(line[f"pose_error_k{k}"]) for k in (0, 1, 2, 5)) and np.isfinite(line["pose_r2"])
    assert line["pose_error_chance"] > line["pose_error_k0"]
    (folder / "ep9.npz").write_bytes(b"garbage")
    assert run_main(main, ["eval", "--stored", str(folder)], False) == 2
    assert "ep9.npz" in capsys.readouterr().err
    assert run_main(main, ["eval", "--stored", str(tmp_path / "nowhere")], False) == 2
    assert "at least 5 episode" in capsys.readouterr().err
