"""The Reacher environment wrapper and episode store (skipped without the [control] extra)."""

import builtins
import importlib.util

import numpy as np
import pytest

from metriplector import reacher_env
from metriplector.reacher_env import ControlUnavailable, angle_distance, load_episode

HAVE_CONTROL = importlib.util.find_spec("dm_control") is not None and importlib.util.find_spec("mujoco") is not None
needs_control = pytest.mark.skipif(not HAVE_CONTROL, reason="needs the optional [control] extra: "
                                   "pip install 'sp-dynamics[control]' (dm-control 1.0.50, mujoco 3.17.0)")


def test_missing_extra_names_the_fix(monkeypatch):
    real = builtins.__import__

    def fake(name, *args, **kwargs):
        if name.startswith("dm_control"):
            raise ImportError("No module named 'dm_control'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(ControlUnavailable, match=r"pip install 'sp-dynamics\[control\]'"):
        reacher_env.require_control()


def test_angle_distance_wraps():
    assert np.allclose(angle_distance([np.pi - 0.01, 0.2], [-np.pi + 0.01, 0.1]), [0.02, 0.1])


def test_corrupt_or_inconsistent_episode_files_are_named(tmp_path):
    bad = tmp_path / "episode_00000.npz"
    bad.write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="episode_00000.npz"):
        load_episode(bad)
    short = tmp_path / "short.npz"
    np.savez(short, frames=np.zeros((3, 8, 8, 3), np.uint8), actions=np.zeros((3, 2)), rewards=np.zeros(3),
             qpos=np.zeros((4, 2)), qvel=np.zeros((4, 2)))
    with pytest.raises(ValueError, match="inconsistent lengths"):
        load_episode(short)


@needs_control
def test_collect_resume_goal_and_render(tmp_path):
    paths = reacher_env.collect(tmp_path, episodes=2, steps=6, seed=3, size=32)
    ep = load_episode(paths[0])
    assert ep["frames"].shape == (7, 32, 32, 3) and ep["frames"].dtype == np.uint8
    assert ep["actions"].shape == (6, 2) and ep["qpos"].shape == (7, 2)
    assert ep["frames"].std() > 0 and not np.array_equal(ep["frames"][0], ep["frames"][-1])
    stamp = paths[1].stat().st_mtime_ns
    again = reacher_env.collect(tmp_path, episodes=2, steps=6, seed=3, size=32)
    assert again == paths and paths[1].stat().st_mtime_ns == stamp  # resumed, not rewritten
    env = reacher_env.Reacher(0, size=32)
    env.reset()
    start = env.get_state()
    goal = env.sample_goal(5)
    assert np.array_equal(env.get_state(), start)  # sampling a goal leaves the episode's state alone
    assert angle_distance(goal, env.qpos()).max() > 0.01
    frame = env.render_at(goal)
    assert frame.shape == (32, 32, 3) and np.array_equal(env.get_state(), start)


@needs_control
def test_reacher_cli_smoke_trains_ships_and_evaluates(tmp_path, capsys):
    # Catches: a runner that does not go end to end (collect -> train both models -> CEM evaluation
    # with the references -> shipped checkpoint -> eval JSON line), or that does not resume.
    import json

    from metriplector.runners import reacher as runner
    from sp_dynamics.cli import main

    out, ck = tmp_path / "out", tmp_path / "ck"
    main(["reacher", "train", "--preset", "smoke", "--out", str(out), "--checkpoints", str(ck), "--ship"])
    assert (out / "reacher_smoke_rollout.png").exists() and (out / "reacher_smoke_curves.png").exists()
    assert (out / "reacher_smoke_success.png").exists()
    probe = (out / "reacher_smoke_probe.md").read_text()
    assert probe.count("| metriplector | 0 |") == 1 and probe.count("| conv | 0 |") == 1
    payload = json.loads((out / "reacher_smoke.json").read_text())
    assert {r["model"] for r in payload["rows"]} == {"metriplector", "conv"}
    assert set(payload["references"]) == {"oracle", "random"}
    capsys.readouterr()
    main(["reacher", "eval", "--checkpoint", str(ck / "reacher_metriplector.pt"), "--preset", "smoke",
          "--episodes", "1", "--seed", "7"])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"success_rate", "mean_return", "episodes", "seed"} <= set(line) and line["episodes"] == 1
    run_dir = next((out / "runs").iterdir())
    (run_dir / "metriplector_seed0.json").unlink()  # the state file is kept: training resumes, not restarts
    row = runner.train_one(runner.PRESETS["smoke"], "metriplector", 0, str(run_dir),
                           str(runner.data_dir(out, runner.PRESETS["smoke"])))
    assert row["curve"][-1]["step"] == runner.PRESETS["smoke"].steps


def test_reacher_eval_bad_input_is_one_line(tmp_path):
    from sp_dynamics.cli import run_main
    from metriplector.runners.reacher import main

    bad = tmp_path / "ck.pt"
    bad.write_bytes(b"garbage")
    assert run_main(main, ["eval", "--checkpoint", str(bad), "--episodes", "1"], False) == 2
    assert run_main(main, ["eval", "--episodes", "0"], False) == 2
