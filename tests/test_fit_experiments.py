"""The single-fit, trajectory, diagnosis and sweep experiments end to end on their smoke settings."""

import json

from experiments import fit_generic, fit_trajectories, meta_sweep
from sp_dynamics.runners.trajectories import METHODS
from conftest import make_part_predate_settings, set_part_setting


def test_fit_generic_smoke_writes_a_table(tmp_path):
    out = fit_generic.main(["--preset", "smoke", "--system", "dno", "--out", str(tmp_path)])
    assert len(out["rows"]) == 2 and all(r["max_abs_dEdt"] < 1e-10 for r in out["rows"])
    text = (tmp_path / "fit_dno_smoke.md").read_text()
    assert "eps_field (data region)" in text and "python -m experiments.fit_generic" in text


def test_fit_generic_saves_every_fit_and_evaluate_scores_one_on_a_file(tmp_path, capsys):
    # Catches: single fits that exist only as table rows (no checkpoint to reuse), a saved model
    # that does not reproduce the runner's own score when loaded and scored by sp-dynamics evaluate
    # on the same instance saved to a file.
    from sp_dynamics import make_family_dataset, save_trajectories
    from sp_dynamics.cli import main as cli

    out = fit_generic.main(["--preset", "smoke", "--system", "dno", "--out", str(tmp_path), "--save", str(tmp_path / "fits")])
    row = out["rows"][0]
    folder = tmp_path / "fits" / f"dno-instance{row['instance']}-seed{row['seed']}"
    assert row["saved"] == str(folder) and (folder / "model.json").exists()
    assert json.loads((folder / "model.json").read_text())["extra"]["instance"] == row["instance"]
    from sp_dynamics.runners.fit_instances import PRESETS

    d, i = make_family_dataset("dno", seed=0, **PRESETS["smoke"].dataset), row["instance"]
    save_trajectories(tmp_path / "one.npz", d.t, d.x[[i]], d.dx[[i]], d.params[[i]])
    capsys.readouterr()
    assert cli(["evaluate", str(folder), "--data", str(tmp_path / "one.npz")]) == 0
    scores = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert abs(scores["eps_traj"] - row["eps_traj"]) <= 1e-6 * max(1.0, row["eps_traj"])
    (tmp_path / "file").write_text("x")
    import pytest

    with pytest.raises(ValueError, match="not a folder"):
        fit_generic.main(["--preset", "smoke", "--system", "dno", "--out", str(tmp_path), "--save", str(tmp_path / "file")])


def test_fit_generic_smoke_with_the_gas_settings(tmp_path):
    # Catches: the gas settings of the fit-instances runner (power-law friction, separable
    # energy, wall inputs, energy-consistency term, Levenberg-Marquardt phase) not reaching the
    # model, the trainer or the results file; --walls on a system without walls not refused.
    import pytest

    out = fit_generic.main(["--preset", "smoke", "--system", "gas_containers", "--bracket", "mixed_power",
                            "--energy", "separable", "--walls", "--set", "fit.lm_iter=2", "--set", "fit.energy_penalty=10",
                            "--tag", "t", "--instances", "4", "--out", str(tmp_path)])
    (row,) = out["rows"]
    assert row["lm_iterations"] >= 1 and row["max_abs_dEdt"] < 1e-10
    text = (tmp_path / "fit_gas_containers_mixed_power_separable_walls_t_smoke.md").read_text()
    assert "friction_law='power', separable=1, walls=((0, 0.0, 2.0),)" in text
    assert "lm_iter=2" in text and "energy_penalty=10" in text
    with pytest.raises(ValueError, match="declares no walls"):
        fit_generic.main(["--preset", "smoke", "--system", "dno", "--walls", "--out", str(tmp_path)])


def test_fit_generic_friction_coords_reach_the_model_the_file_and_the_saved_fit(tmp_path):
    # Catches: --friction-coords (the gas friction network fed the temperatures alone) not
    # reaching the fitted model, the results file's model line or the saved folder, a stem that
    # lets such a run overwrite the all-of-grad-E run's files, the option lost (or colliding with
    # the threads argument) on the way to --jobs worker processes, and bad indices or a bracket
    # without a friction network surfacing as tracebacks instead of usage errors. Also --energy
    # positive_split (each potential exp of its network) reaching the model and the saved fit.
    import pytest

    import sp_dynamics

    out = fit_generic.main(["--preset", "smoke", "--system", "gas_containers", "--energy", "positive_split", "--walls",
                            "--friction-coords", "2", "3", "--instances", "4", "--jobs", "2", "--out", str(tmp_path),
                            "--save", str(tmp_path / "fits")])
    (row,) = out["rows"]
    text = (tmp_path / "fit_gas_containers_positive_split_walls_fc2-3_smoke.md").read_text()
    assert "friction_input='gradient', friction_coords=(2, 3)" in text
    assert "split_potential=True, positive_potential=True" in text
    saved = sp_dynamics.load(row["saved"])
    assert saved.bracket.friction_coords == (2, 3) and saved.energy_net.fn.positive and saved.energy_net.fn.split
    for argv, message in [(["--friction-coords", "2", "9"], "friction_coords must be distinct"),
                          (["--bracket", "projection", "--friction-coords", "2"], "needs a GENERIC system and a mixed bracket"),
                          (["--system", "pendulum", "--friction-coords", "0"], "needs a GENERIC system and a mixed bracket"),
                          (["--system", "pendulum", "--energy", "positive"], "--energy positive needs a GENERIC system")]:
        with pytest.raises(ValueError, match=message):
            fit_generic.main(["--preset", "smoke", "--system", "gas_containers", *argv, "--out", str(tmp_path)])


def test_gas_decomposition_writes_its_table(tmp_path):
    from experiments import gas_decomposition

    text = gas_decomposition.main(["--instances", "70", "--evals", "5", "--given", "E, S", "nothing",
                                   "--out", str(tmp_path / "d.md")])
    assert text.count("| 70 |") == 4 and (tmp_path / "d.md").exists()


def test_fit_trajectories_smoke_covers_every_method(tmp_path):
    out = fit_trajectories.main(["--preset", "smoke", "--system", "pendulum", "--out", str(tmp_path)])
    assert {(r["method"], r["noise"]) for r in out["rows"]} == {
        (m, n) for m in METHODS for n in (0.0, 0.01)}
    assert json.loads((tmp_path / "fit_trajectories_pendulum_smoke.json").read_text())["rows"]
    text = (tmp_path / "fit_trajectories_pendulum_smoke.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| 0.01 |"))   # the derivative-information table
    given, estimated = (float(v) for v in row.strip("|").split("|")[1:3])
    assert 0 < given < estimated   # noisy given derivatives carry more than a spline through noisy states


def test_fit_trajectories_report_names_a_reference_that_was_not_run(monkeypatch):
    # Catches: a run at noise 0.01 alone (no noise-0 reference) printing "nanx" as its ratio to
    # derivative matching at noise 0 instead of saying that reference was not run.
    from sp_dynamics.registry import get_system
    from sp_dynamics.runners import trajectories

    cfg = trajectories.TrajConfig(instances=(70,), noise=(0.01,))
    rows = [{"method": m, "noise": 0.01, "eps_traj": e, "fit_s": 1.0, "instance": 70, "seed": 0}
            for m, e in (("derivatives", 0.01), ("spline", 0.03))]
    monkeypatch.setattr(trajectories, "derivative_information", lambda *a: (0.0, 0.0))  # formatting only
    text = trajectories.report(get_system("dno"), cfg, "smoke", rows, 1.0, "- command: x")
    assert "nan" not in text and "| states only | spline | 0.01 | " in text
    assert "| – (not run) | 3.0x |" in text


def test_meta_sweep_smoke_reports_every_cell(tmp_path):
    res = meta_sweep.main(["--preset", "smoke", "--methods", "svd", "fw", "--lam-z", "0.1", "0.01",
                           "--lam-phi", "0.001", "--out", str(tmp_path)])
    assert set(res["svd"]) == {"0.1,0.001", "0.01,0.001"}
    assert "variance over cells" in (tmp_path / "meta_sweep_pendulum_smoke.md").read_text()
    assert (tmp_path / "meta_sweep_pendulum_smoke.png").stat().st_size > 0  # the heat-map figure


def test_sweep_parts_run_for_different_seeds_combine_into_the_one_run_table(tmp_path):
    # Catches: a combined sweep that is not what one run over all seeds gives (a seed dropped or
    # duplicated, cells mixed up), or parts with other settings merged silently.
    import pytest

    from experiments import meta_combine

    common = ["--preset", "smoke", "--methods", "svd", "--lam-z", "0.1", "--lam-phi", "0.001", "0.0001",
              "--out", str(tmp_path)]
    meta_sweep.main(common + ["--seeds", "0", "--tag", "s0"])
    meta_sweep.main(common + ["--seeds", "1", "--tag", "s1"])
    whole = meta_sweep.main(common + ["--seeds", "0", "1", "--tag", "s01"])   # resumes the same run folders
    merged = meta_combine.main(["meta_sweep_pendulum_smoke_s0", "meta_sweep_pendulum_smoke_s1", "--stem", "both",
                                "--results", str(tmp_path)])
    assert merged == whole
    table = (tmp_path / "both.md").read_text()
    assert "combined from" in table and "seeds [0, 1]" in table and "Seed noise" in table
    assert (tmp_path / "both.png").stat().st_size > 0
    with pytest.raises(ValueError, match="two parts"):
        meta_combine.main(["meta_sweep_pendulum_smoke_s0", "both", "--stem", "x", "--results", str(tmp_path)])
    # a part written before a setting existed (here one nested and one top-level setting) lacks it in
    # its config; it ran with the default and combines, but a part with another value does not
    path = tmp_path / "meta_sweep_pendulum_smoke_s1.config.json"
    make_part_predate_settings(path)
    assert meta_combine.main(["meta_sweep_pendulum_smoke_s0", "meta_sweep_pendulum_smoke_s1", "--stem", "old",
                              "--results", str(tmp_path)]) == whole
    set_part_setting(path, "entropy_gain", True)
    with pytest.raises(ValueError, match="differ: entropy_gain"):
        meta_combine.main(["meta_sweep_pendulum_smoke_s0", "meta_sweep_pendulum_smoke_s1", "--stem", "x",
                           "--results", str(tmp_path)])
    meta_sweep.main(["--preset", "smoke", "--methods", "svd", "--lam-z", "0.01", "--lam-phi", "0.001", "0.0001",
                     "--seeds", "1", "--tag", "other", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="other settings"):
        meta_combine.main(["meta_sweep_pendulum_smoke_s0", "meta_sweep_pendulum_smoke_other", "--stem", "x",
                           "--results", str(tmp_path)])


def test_experiment_clis_refuse_bad_arguments(capsys):
    import pytest

    for main, args in [(fit_generic.main, ["--system", "nope"]), (fit_generic.main, ["--jobs", "0"]),
                       (meta_sweep.main, ["--methods", "maml"]), (fit_trajectories.main, ["--jobs", "0"])]:
        with pytest.raises(ValueError):  # a UsageError: the CLI prints it as one line, status 2
            main(args)


def test_generic_diagnosis_quick_writes_every_section(tmp_path):
    from experiments import generic_diagnosis

    text = generic_diagnosis.main(["--quick", "--out", str(tmp_path)])
    for section in ("Representability", "Optimiser", "Initialisation", "guard", "Extrapolation", "Loss scaling"):
        assert section in text
    assert (tmp_path / "generic_diagnosis_quick.md").exists()


def test_overrides_never_overwrite_the_presets_result_files(tmp_path):
    # Catches: a runner whose result stem depends on the preset alone, so that `--set` silently
    # replaced the preset's table (sudoku think/train, fit-trajectories and others did).
    from argparse import Namespace

    from sp_dynamics.runners.common import result_stem

    assert result_stem("x", Namespace(overrides=[], tag="")) == "x"
    assert result_stem("x", Namespace(overrides=["a=1"], tag="mine"), "_smoke") == "x_mine_smoke"
    hashed = {result_stem("x", Namespace(overrides=[o], tag="")) for o in ("a=1", "a=2")}
    assert len(hashed) == 2 and all(s.startswith("x_set-") for s in hashed)
    fit_trajectories.main(["--preset", "smoke", "--system", "pendulum", "--methods", "derivatives", "--out", str(tmp_path)])
    fit_trajectories.main(["--preset", "smoke", "--system", "pendulum", "--methods", "derivatives",
                           "--set", "fit.max_iter=3", "--out", str(tmp_path)])
    names = sorted(p.name for p in tmp_path.glob("fit_trajectories_pendulum*_smoke.md"))
    assert len(names) == 2 and "fit_trajectories_pendulum_smoke.md" in names


def test_gas_field_error_splits_the_data_region(tmp_path):
    from experiments import gas_field_error

    text = gas_field_error.main(["--instances", "70", "--evals", "3", "--models", "mlp", "E given",
                                 "--out", str(tmp_path / "g.md")])
    assert text.count("| 70 | mlp |") == 2 and text.count("| 70 | E given |") == 2  # error table and worst points
    assert (tmp_path / "g.md").exists()


def test_held_out_trajectories_are_new_true_motions_of_the_instance():
    # Catches: "held-out" trajectories that are the training data (or another instance's), or an
    # evaluation that does not score the model on them: the true field must score ~0 there.
    import torch

    from sp_dynamics import get_system, make_family_dataset
    from sp_dynamics.meta.evaluation import held_out_trajectories
    from sp_dynamics.runners.fit_instances import evaluate_fit

    system = get_system("dno")
    data = make_family_dataset("dno", seed=0, n_instances=6, n_train=4, n_traj=3, n_points=201)
    fresh = held_out_trajectories(system, data, 4)
    assert fresh.shape == data.x[4].shape
    assert torch.cdist(fresh[:, 0], data.x[4, :, 0]).min() > 1e-3          # new initial states
    torch.testing.assert_close(fresh, held_out_trajectories(system, data, 4))  # reproducible
    true = system.dynamics(data.params[4])
    residual = (fresh[:, 1:] - fresh[:, :-1]) / (data.t[1] - data.t[0]) - true(0.0, 0.5 * (fresh[:, 1:] + fresh[:, :-1]))
    assert residual.abs().max() < 1e-2                                        # they follow this instance's field
    scores = evaluate_fit(true, system, data, 4)
    assert scores["eps_field_held_out"] < 1e-12 and scores["eps_traj_held_out"] < 1e-6


def test_results_headers_say_when_the_cores_were_shared(monkeypatch):
    # Catches: wall times recorded without any sign that other work loaded the machine (timings
    # on these shared machines vary 2-4x with it), and a crash where the OS has no load average.
    import os

    from sp_dynamics.runners import common

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 3.9))
    assert "15-min load average 3.9 (above the CPU count: the cores were shared" in common.machine_line(10.0)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 1.2))
    line = common.machine_line(10.0)
    assert line.endswith("15-min load average 1.2")

    def unavailable():
        raise OSError("no load average")

    monkeypatch.setattr(os, "getloadavg", unavailable)
    assert common.machine_line(10.0).endswith("total wall time 10 s")


def test_gas_polish_more_continues_a_saved_fit_and_writes_its_table(tmp_path):
    # Catches: the polish probe not starting from the saved model (its "before" scores are the
    # folder's recorded ones and a few evaluations cannot move the data loss far from the
    # recorded one), not scoring as the runner does, or a folder without fits surfacing as a
    # traceback instead of a usage error.
    import shutil
    from pathlib import Path

    import pytest

    from experiments import gas_polish_more

    shipped = (Path(__file__).resolve().parents[1] / "experiments" / "checkpoints" / "fit_gas_containers_walls_temperatures"
               / "gas_containers-instance75-seed2")
    shutil.copytree(shipped, tmp_path / "fits" / shipped.name)
    (row,) = gas_polish_more.main([str(tmp_path / "fits"), "--evals", "3", "--out", str(tmp_path)])["rows"]
    assert row["evaluations"] <= 3 and row["max_abs_dEdt"] < 1e-10
    assert row["data_loss"] <= row["before"]["data_loss"] * (1 + 1e-9)
    assert abs(row["eps_traj"] - row["before"]["eps_traj"]) < 1e-3 * row["before"]["eps_traj"] + 1e-5
    assert "0 of 1 before" in (tmp_path / "gas_polish_more.md").read_text()
    with pytest.raises(ValueError, match="no saved fits"):
        gas_polish_more.main([str(tmp_path / "nothing"), "--out", str(tmp_path)])


def test_fit_generic_resumes_an_interrupted_run_and_a_changed_setting_starts_afresh(tmp_path, monkeypatch, capsys):
    # Catches: an interrupted fit-instances run (80 minutes on the gas containers) losing its
    # finished fits, a resumed run refitting them or reporting other numbers than a fresh run,
    # and a run with a changed setting picking up rows fitted under the old one.
    from sp_dynamics.runners import fit_instances

    argv = ["--preset", "smoke", "--system", "dno", "--instances", "4", "5", "--out", str(tmp_path)]
    fresh = fit_generic.main(argv)["rows"]
    (run_dir,) = (tmp_path / "runs").iterdir()
    (run_dir / "instance5-seed0.json").unlink()  # as if the run had stopped before instance 5 finished
    fitted = []
    real_fit_one = fit_instances.fit_one
    monkeypatch.setattr(fit_instances, "fit_one", lambda *a, **k: fitted.append(a[3]) or real_fit_one(*a, **k))
    resumed = fit_generic.main(argv)["rows"]
    assert fitted == [5] and "resuming" in capsys.readouterr().out
    assert [r["eps_traj"] for r in resumed] == [r["eps_traj"] for r in fresh]
    assert "- resumed: 1 of the 2 fits" in (tmp_path / "fit_dno_smoke.md").read_text()
    fitted.clear()
    fit_generic.main(argv + ["--set", "fit.max_iter=10"])
    assert fitted == [4, 5] and len(list((tmp_path / "runs").iterdir())) == 2
