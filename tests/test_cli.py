"""The sp-dynamics command line, in process: commands, the plugin path, the user-error convention."""

import json

import pytest
import torch

import sp_dynamics
from sp_dynamics.cli import main


def _json_line(capsys) -> dict:
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("{")]
    assert len(lines) == 1, lines
    return json.loads(lines[0])


def test_help_lists_every_command_and_domain_commands_from_entry_points(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("systems", "meta-train", "adapt", "evaluate", "benchmark", "fit", "copy-task", "maze", "sudoku"):
        assert f"  {command} " in out
    assert main([]) == 0


@pytest.mark.parametrize("argv,message", [
    (["nope"], "unknown command 'nope'"),
    (["benchmark", "--system", "nope"], "unknown system 'nope'"),
    (["benchmark", "--preset", "smoke", "--set", "meta.iterations=x"], "expected int"),
    (["benchmark", "--presett", "smoke"], "unrecognized arguments"),
    (["adapt", "no-such-run", "--data", "x.npz"], "no finished meta-training run"),
    (["--plugin", "no_such_module:Thing", "systems"], "cannot import 'no_such_module'"),
    (["--plugin", "sp_dynamics:save", "systems"], "is not a System subclass"),
    (["maze", "eval", "--size", "8"], "--size must be odd"),
    (["maze", "scale", "--sizes", "15", "3"], "--size must be odd and >= 5, got 3"),
])
def test_user_mistakes_print_one_line_and_exit_2(capsys, argv, message):
    # Catches: a user mistake surfacing as a traceback (or exit status 1) instead of one line.
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0], err


def test_debug_shows_the_traceback_instead():
    with pytest.raises(ValueError, match="unknown system"):
        main(["--debug", "benchmark", "--system", "nope"])


def test_plugin_system_meta_train_adapt_evaluate_and_fit(tmp_path, capsys, monkeypatch):
    # Catches: a user's own system (given by --plugin) not reaching the commands, a run folder
    # that cannot be reloaded without the user's settings, adapted latents not matching the
    # data file, or a command that prints something other than one JSON line of metrics.
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parent))
    run = tmp_path / "run"
    assert main(["--plugin", "_plugin_system:Harmonic", "meta-train", "--system", "harmonic", "--preset", "smoke",
                 "--method", "svd", "--out", str(run)]) == 0
    assert _json_line(capsys)["systems"] == 4
    from _plugin_system import Harmonic

    sp_dynamics.register_system("harmonic", Harmonic, overwrite=True)
    d = sp_dynamics.make_family_dataset("harmonic", seed=7, n_instances=4, n_train=2, n_traj=3, n_points=41)
    data = tmp_path / "new.npz"
    sp_dynamics.save_trajectories(data, d.t, d.x[2:], params=d.params[2:])
    assert main(["adapt", str(run), "--data", str(data), "--shots", "10", "--out", str(tmp_path / "adapted")]) == 0
    adapted = _json_line(capsys)
    assert adapted["instances"] == 2 and len(adapted["per_instance_eps_traj"]) == 2
    assert torch.load(tmp_path / "adapted" / "latents.pt")["latents"].shape == (2, 8)
    assert main(["evaluate", str(run), "--data", str(data), "--latents", str(tmp_path / "adapted")]) == 0
    scored = _json_line(capsys)
    assert scored["eps_traj"] == pytest.approx(adapted["eps_traj"], rel=1e-9)
    assert main(["fit", "--data", str(data), "--instance", "1", "--model", "hnn", "--set", "max_iter=20",
                 "--set", "restarts=1", "--out", str(tmp_path / "fitted")]) == 0
    assert _json_line(capsys)["evaluations"] <= 25
    fitted = sp_dynamics.load(tmp_path / "fitted")
    assert isinstance(fitted, sp_dynamics.HamiltonianNN)
    # a data file of the wrong dimension is named, not a shape error from inside torch
    bad = tmp_path / "bad.npz"
    sp_dynamics.save_trajectories(bad, d.t, torch.zeros(1, 2, 41, 3))
    assert main(["adapt", str(run), "--data", str(bad)]) == 2
    assert "3 coordinates, the trained model takes 2" in capsys.readouterr().err


def test_trajectory_files_in_csv_and_npz_agree(tmp_path):
    # Catches: the CSV reader ordering samples wrongly or losing the derivative columns.
    d = sp_dynamics.make_family_dataset("mass_spring", seed=0, n_instances=3, n_train=2, n_traj=2, n_points=11)
    rows = ["instance,trajectory,t,x0,x1,dx0,dx1"]
    for i in range(3):
        for j in reversed(range(2)):  # any row order
            for k in range(11):
                rows.append(",".join(str(float(v)) for v in [i, j, d.t[k], *d.x[i, j, k], *d.dx[i, j, k]]))
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    from_csv = sp_dynamics.load_trajectories(tmp_path / "d.csv")
    assert torch.allclose(from_csv.x, d.x) and torch.allclose(from_csv.dx, d.dx)
    (tmp_path / "ragged.csv").write_text("\n".join(rows[:-1]) + "\n")
    with pytest.raises(ValueError, match="same number of samples"):
        sp_dynamics.load_trajectories(tmp_path / "ragged.csv")
    (tmp_path / "bad.csv").write_text("time,x\n0,1\n")
    with pytest.raises(ValueError, match="header must start with instance,trajectory,t"):
        sp_dynamics.load_trajectories(tmp_path / "bad.csv")
    import numpy as np

    np.savez(tmp_path / "nokey.npz", x=d.x.numpy())
    with pytest.raises(ValueError, match=r"lacks the array\(s\) \['t'\]"):
        sp_dynamics.load_trajectories(tmp_path / "nokey.npz")


def test_fit_command_builds_the_gas_model_options(tmp_path, capsys):
    # Catches: the fit command's friction and separable-energy options not reaching the model
    # (the saved model must carry them) and bad combinations surfacing as tracebacks.
    d = sp_dynamics.make_family_dataset("gas_containers", seed=0, n_instances=2, n_train=1, n_traj=2, n_points=11)
    data = sp_dynamics.save_trajectories(tmp_path / "gas.npz", d.t, d.x, d.dx, d.params)
    out = tmp_path / "fitted"
    assert main(["fit", "--data", str(data), "--friction", "power_gradient", "--separable", "1", "--set", "max_iter=10",
                 "--set", "restarts=1", "--set", "lm_iter=1", "--out", str(out)]) == 0
    assert "eps_traj" in _json_line(capsys)
    fitted = sp_dynamics.load(out)
    assert fitted.bracket.friction_law == "power" and fitted.bracket.friction_input == "gradient"
    assert isinstance(fitted.energy_net.fn, sp_dynamics.KineticPotential)
    assert main(["fit", "--data", str(data), "--separable", "1", "--wall", "0:0:2", "--friction", "mlp_gradient",
                 "--set", "max_iter=5", "--set", "restarts=1", "--out", str(tmp_path / "walled")]) == 0
    walled = sp_dynamics.load(tmp_path / "walled")
    assert walled.energy_net.fn.standardize.features.walls == ((0, 0.0, 2.0),)
    assert walled.bracket.friction_law == "mlp" and walled.bracket.friction_input == "gradient"
    assert main(["fit", "--data", str(data), "--friction", "mlp_gradient", "--friction-coords", "2", "3",
                 "--set", "max_iter=5", "--set", "restarts=1", "--out", str(tmp_path / "temperatures")]) == 0
    assert sp_dynamics.load(tmp_path / "temperatures").bracket.friction_coords == (2, 3)
    assert main(["fit", "--data", str(data), "--separable", "1", "--split-potential", "--positive-potential",
                 "--set", "max_iter=5", "--set", "restarts=1", "--out", str(tmp_path / "positive")]) == 0
    positive = sp_dynamics.load(tmp_path / "positive").energy_net.fn
    assert positive.split and positive.positive
    for argv, message in [(["--friction", "power", "--bracket", "basis"], "needs --bracket mixed"),
                          (["--separable", "3"], "--separable must be in [0, 2]"),
                          (["--wall", "0:2"], "expected C:LO:HI"),
                          (["--wall", "7:0:2"], "not an index"),
                          (["--wall", "0:0:2", "--wall", "0:0:1"], "listed twice"),
                          (["--separable", "1", "--wall", "1:-1:1"], "momenta"),
                          (["--model", "hnn", "--wall", "0:0:2"], "needs --model generic"),
                          (["--bracket", "basis", "--friction-coords", "2"], "--friction-coords needs --bracket mixed"),
                          (["--friction-coords", "2", "9"], "friction_coords must be distinct coordinate indices"),
                          (["--model", "hnn", "--friction-coords", "0"], "--friction-coords needs --model generic"),
                          (["--positive-potential"], "--positive-potential needs --model generic and --separable D"),
                          (["--model", "hnn", "--separable", "1", "--split-potential"], "--split-potential needs")]:
        assert main(["fit", "--data", str(data), *argv, "--out", str(out)]) == 2
        assert message in capsys.readouterr().err


def test_evaluate_scores_the_shipped_gas_fit_on_a_file(tmp_path, capsys):
    # Catches: the shipped single-fit checkpoint (gas instance 75, power-law friction + energy
    # term + 20 LM iterations, the seed-0 row of fit_gas_containers_mixed_power_lm.md) no longer
    # loading or scoring as recorded, and evaluate refusing a folder written by sp-dynamics fit.
    from pathlib import Path

    d = sp_dynamics.make_family_dataset("gas_containers", seed=0)
    data = sp_dynamics.save_trajectories(tmp_path / "gas75.npz", d.t, d.x[[75]], d.dx[[75]], d.params[[75]])
    ckpt = Path(__file__).resolve().parents[1] / "experiments" / "checkpoints" / "fit_gas_containers_75_power_lm"
    assert main(["evaluate", str(ckpt), "--data", str(data)]) == 0
    scores = _json_line(capsys)
    assert abs(scores["eps_traj"] - 7.173e-3) < 1e-5 and scores["max_abs_dEdt"] < 1e-12 and scores["min_dSdt"] >= 0
    assert main(["evaluate", str(ckpt), "--data", str(data), "--instance", "1"]) == 2
    assert "--instance must be in [0, 1)" in capsys.readouterr().err


def test_evaluate_scores_the_shipped_walled_gas_fit_on_a_file(tmp_path, capsys):
    # Catches: the shipped wall-input gas fit (instance 76, seed 0 of
    # fit_gas_containers_separable_walls_epen_polish.md: eps_traj 3.28e-3) no longer loading with its
    # walls, scoring differently on the instance saved to a file, or losing the exact structure.
    from pathlib import Path

    d = sp_dynamics.make_family_dataset("gas_containers", seed=0)
    data = sp_dynamics.save_trajectories(tmp_path / "gas76.npz", d.t, d.x[[76]], d.dx[[76]], d.params[[76]])
    ckpt = Path(__file__).resolve().parents[1] / "experiments" / "checkpoints" / "fit_gas_containers_76_walls"
    assert sp_dynamics.load(ckpt).energy_net.fn.standardize.features.walls == ((0, 0.0, 2.0),)
    assert main(["evaluate", str(ckpt), "--data", str(data)]) == 0
    scores = _json_line(capsys)
    assert abs(scores["eps_traj"] - 3.275e-3) < 1e-5 and scores["max_abs_dEdt"] < 1e-12 and scores["min_dSdt"] >= 0


def test_adapt_the_shipped_gas_meta_model_to_a_file(tmp_path, capsys):
    # Catches: the shipped gas-containers meta-trained model (SVD(5), warm-started base, seed 0 of
    # meta_gas_containers_paper_warm.md) no longer loading, or no longer adapting from 50 shots of
    # a user's file to the accuracy recorded for it, or losing the exact GENERIC structure.
    from pathlib import Path

    d = sp_dynamics.make_family_dataset("gas_containers", seed=0)
    data = sp_dynamics.save_trajectories(tmp_path / "gas71.npz", d.t, d.x[[71]], d.dx[[71]], d.params[[71]])
    ckpt = Path(__file__).resolve().parents[1] / "experiments" / "checkpoints" / "meta_gas_containers_paper_warm_svd5_seed0"
    assert main(["adapt", str(ckpt), "--data", str(data), "--out", str(tmp_path / "adapted")]) == 0
    scores = _json_line(capsys)
    assert scores["eps_traj"] < 1e-2 and scores["max_abs_dEdt"] < 1e-12 and scores["min_dSdt"] >= 0


def test_adapt_the_shipped_head_model_by_one_least_squares_solve(tmp_path, capsys):
    # Catches: the shipped head-modulated pendulum model (seed 0 of meta_pendulum_paper_head_lstsq.md)
    # no longer loading or adapting as recorded, the CLI's lstsq solver disagreeing with Gauss-Newton
    # on a field linear in the latent, and lstsq accepted for a model that is not linear in z.
    from pathlib import Path

    ckpts = Path(__file__).resolve().parents[1] / "experiments" / "checkpoints"
    d = sp_dynamics.make_family_dataset("pendulum", seed=0)
    data = sp_dynamics.save_trajectories(tmp_path / "pend71.npz", d.t, d.x[[71]], d.dx[[71]], d.params[[71]])
    scores = {}
    for solver in ("lstsq", "gauss_newton"):
        assert main(["adapt", str(ckpts / "meta_pendulum_paper_head_seed0"), "--data", str(data), "--solver", solver,
                     "--out", str(tmp_path / solver)]) == 0
        scores[solver] = _json_line(capsys)["eps_traj"]
    assert abs(scores["lstsq"] - 0.1573) < 1e-3 and abs(scores["lstsq"] - scores["gauss_newton"]) < 1e-6
    g = sp_dynamics.make_family_dataset("gas_containers", seed=0)
    gas = sp_dynamics.save_trajectories(tmp_path / "gas71.npz", g.t, g.x[[71]], g.dx[[71]], g.params[[71]])
    assert main(["adapt", str(ckpts / "meta_gas_containers_paper_warm_svd5_seed0"), "--data", str(gas),
                 "--solver", "lstsq", "--out", str(tmp_path / "gas")]) == 2
    assert "linear in the latent" in capsys.readouterr().err


@pytest.mark.parametrize("table, folder, friction_coords", [
    ("fit_gas_containers_separable_walls_epen_polish_good", "fit_gas_containers_walls_good", None),
    ("fit_gas_containers_separable_walls_fc2-3_epen_polish_good", "fit_gas_containers_walls_temperatures", (2, 3)),
    ("fit_gas_containers_separable_walls_fc2-3_polish6000_good", "fit_gas_containers_walls_temperatures_polish6000", (2, 3)),
    ("fit_gas_containers_separable_walls_fc2-3_epen_polish_all3", "fit_gas_containers_walls_temperatures_all3", (2, 3)),
])
def test_shipped_gas_fits_of_the_starts_tables_match_their_rows(table, folder, friction_coords):
    # Catches: a shipped fit of a gas starts table (30 folders, one per instance and seed) that is
    # missing, does not load, is not the fit the table reports (its recorded eps_traj,
    # data-region eps_field and data loss must equal the row's) or lost its model options (the
    # wall inputs; the temperatures-only friction of the fc2-3 table).
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "experiments"
    rows = json.loads((root / "results" / f"{table}.json").read_text())["rows"]
    assert len(rows) == 30
    for row in rows:
        path = root / "checkpoints" / folder / f"gas_containers-instance{row['instance']}-seed{row['seed']}"
        extra = json.loads((path / "model.json").read_text())["extra"]
        assert (extra["instance"], extra["seed"]) == (row["instance"], row["seed"])
        assert extra["metrics"] == {k: row[k] for k in ("eps_traj", "eps_field_data", "data_loss")}
        model = sp_dynamics.load(path)
        assert model.energy_net.fn.standardize.features.walls == ((0, 0.0, 2.0),)
        assert model.bracket.friction_coords == friction_coords
