"""The meta-learning benchmark script end to end on the tiny `smoke` preset."""

import json
import math

import pytest

from experiments import meta_benchmark
from sp_dynamics.meta.evaluation import evaluate_fields, valid_prefix
from sp_dynamics.runners import benchmark
from conftest import make_part_predate_settings, set_part_setting


def test_smoke_preset_writes_table_json_and_figure(tmp_path):
    results = meta_benchmark.main(["--preset", "smoke", "--methods", "svd", "maml", "--out", str(tmp_path)])
    for m in ("svd", "maml"):
        assert all(math.isfinite(v) for k in ("eps_field", "eps_traj", "ssim") for v in results[m][k])
    table = (tmp_path / "meta_pendulum_smoke.md").read_text()
    assert "| svd |" in table and "| maml |" in table and "SSIM" in table
    assert json.loads((tmp_path / "meta_pendulum_smoke.json").read_text())["svd"]["eps_field"]
    assert (tmp_path / "meta_pendulum_smoke_svd.png").exists()
    assert (tmp_path / "meta_pendulum_smoke_svd_energy.png").exists()
    (run,) = (tmp_path / "runs").glob("meta-pendulum-smoke-*/svd-seed0")
    assert (run / "checkpoint.pt").exists() and (run / "model" / "model.json").exists()  # the run, saved
    config = json.loads((tmp_path / "meta_pendulum_smoke.config.json").read_text())
    assert config["config"]["meta"]["iterations"] == 3 and config["methods"] == ["svd", "maml"]


def test_generic_systems_run_gradient_baselines_and_report_structure(tmp_path):
    # Catches: the GENERIC path of the runner (functional GENERICNet baselines, structure
    # columns). The exact bracket must keep each adapted model's own dE/dt at round-off and
    # dS/dt >= 0 along its rollouts, for the latent model and for Reptile alike.
    results = meta_benchmark.main(["--system", "dno", "--preset", "smoke", "--methods", "svd", "reptile",
                                   "--out", str(tmp_path)])
    for m in ("svd", "reptile"):
        assert math.isfinite(results[m]["eps_field"][0])
        assert results[m]["max_abs_dEdt"][0] < 1e-9 and results[m]["min_dSdt"][0] >= -1e-12
    assert "min dS/dt" in (tmp_path / "meta_dno_smoke.md").read_text()
    assert (tmp_path / "meta_dno_smoke_svd_energy.png").exists()


def test_warm_start_fits_once_per_seed_and_keeps_structure(tmp_path, capsys):
    # Catches: a warm start that is fitted again for every method (it is shared per seed and
    # cached in the run folder), a run folder that does not name the warm start or the entropy
    # gain (a changed setting would resume another experiment's checkpoint), and a warm-started
    # model that loses the exact GENERIC structure.
    argv = ["--system", "dno", "--preset", "smoke", "--methods", "svd", "mr", "--set", "warm_start=true",
            "--set", "warm_start_fit.starts=1",
            "--set", "warm_start_fit.max_iter=60", "--set", "warm_start_fit.restarts=1", "--set", "entropy_gain=true", "--out", str(tmp_path)]
    results = meta_benchmark.main(argv)
    assert capsys.readouterr().out.count("warm start: single fit") == 1
    (cache,) = (tmp_path / "runs").glob("warm-start-dno-*")
    assert (cache / "model.json").exists()
    for m in ("svd", "mr"):
        assert math.isfinite(results[m]["eps_traj"][0])
        assert results[m]["max_abs_dEdt"][0] < 1e-9 and results[m]["min_dSdt"][0] >= -1e-12
    (folder,) = (tmp_path / "runs").glob("meta-dno-smoke-*")
    plain = benchmark.training_hash(benchmark.config_for("dno", "smoke"), "dno")
    assert not folder.name.endswith(plain)
    model = json.loads((folder / "svd-seed0" / "model" / "model.json").read_text())
    assert model["config"]["entropy_gain"] is True


def test_the_gas_paper_preset_is_the_measured_warm_start_setting():
    # Catches: the gas paper preset drifting from the settings its results row was measured with
    # (meta_gas_containers_paper_warm_methods.md), or the gas-only settings leaking into the DNO's.
    gas, dno = benchmark.config_for("gas_containers", "paper"), benchmark.config_for("dno", "paper")
    assert gas.warm_start and gas.entropy_gain and gas.meta.iterations == 0 and gas.meta.refine_evals == 2000
    assert gas.meta.restarts == 1 and gas.adapt.solver == "gauss_newton"
    assert not dno.warm_start and not dno.entropy_gain and dno.meta.iterations == 3000 and dno.meta.restarts == 3


def test_warm_start_bad_settings_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="warm_start replaces the meta-training restarts"):
        meta_benchmark.main(["--system", "dno", "--preset", "paper", "--methods", "svd", "--set", "warm_start=true",
                             "--out", str(tmp_path)])
    with pytest.raises(benchmark.UsageError, match="apply to GENERIC systems; pendulum is not one"):
        meta_benchmark.main(["--preset", "smoke", "--methods", "svd", "--set", "entropy_gain=true", "--out", str(tmp_path)])


def test_unknown_method_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown method"):
        meta_benchmark.main(["--preset", "smoke", "--methods", "lora", "--out", str(tmp_path)])


def test_energy_scale_option_names_the_run_folder(tmp_path):
    # Catches: a checkpoint trained with one energy scale being loaded into a model with another
    # (the scale is a constant, invisible to the checkpoint's config check).
    meta_benchmark.main(["--preset", "smoke", "--methods", "svd", "--set", "energy_scale=auto", "--out", str(tmp_path)])
    runs = [p.name for p in (tmp_path / "runs").glob("meta-pendulum-smoke-*/*")]
    assert len(runs) == 1 and runs[0].startswith("svd-seed0-escale")
    with pytest.raises(ValueError, match="energy_scale"):
        meta_benchmark.main(["--preset", "smoke", "--methods", "svd", "--set", "energy_scale=-1", "--out", str(tmp_path)])


def test_a_too_stiff_learned_field_is_reported_as_nan_not_a_stall():
    # Catches: one stiff adapted model stalling the whole benchmark (an uncapped dopri5 rollout
    # took minutes per instance) instead of being reported.
    import torch

    from sp_dynamics import get_system, make_family_dataset

    cfg = benchmark.PRESETS["smoke"]
    data = make_family_dataset("pendulum", seed=0, **cfg.dataset)

    class Stiff(torch.nn.Module):
        def forward(self, t, x):  # a fast rotation: dopri5 needs ~1e5 steps over t = 10
            return 2e4 * torch.stack([x[..., 1], -x[..., 0]], -1)

    with pytest.warns(RuntimeWarning, match="rollout or its scoring failed on test instance"):
        scores = evaluate_fields([Stiff()] * len(data.test_ids), get_system("pendulum"), data)
    assert math.isnan(scores["eps_traj"]) and math.isfinite(scores["eps_field"])


def test_a_failed_structure_check_keeps_the_rollout_score_and_one_value_per_instance():
    # Catches: a GENERIC evaluation that, when the structure check fails after a good rollout,
    # appended eps_traj twice (the value and a NaN) and so scored the instance as NaN and
    # misaligned the per-instance lists.
    import torch

    from sp_dynamics import get_system, make_family_dataset

    system = get_system("dno")
    data = make_family_dataset("dno", seed=0, **benchmark.PRESETS["smoke"].dataset)

    class TrueFieldWithoutEnergy(torch.nn.Module):  # rolls out fine; structure_rates needs .energy
        def __init__(self, params):
            super().__init__()
            self.true = system.dynamics(params)

        def forward(self, t, x):
            return self.true(t, x)

    fields = [TrueFieldWithoutEnergy(data.params[i]) for i in data.test_ids]
    with pytest.warns(RuntimeWarning, match="its structure columns = NaN"):
        scores = evaluate_fields(fields, system, data)
    assert scores["eps_traj"] < 1e-6 and math.isnan(scores["max_abs_dEdt"])


def test_parallel_jobs_give_the_same_numbers_as_one_process(tmp_path):
    # Catches: worker processes that see another config, dataset or seed than the sequential
    # path (the table would then mix runs), or results assigned to the wrong (method, seed).
    argv = ["--preset", "smoke", "--methods", "svd", "maml", "--seeds", "0", "1"]
    one = meta_benchmark.main(argv + ["--out", str(tmp_path / "one")])
    two = meta_benchmark.main(argv + ["--jobs", "2", "--out", str(tmp_path / "two")])
    for m in ("svd", "maml"):
        for k in ("eps_field", "eps_traj", "ssim"):
            assert two[m][k] == pytest.approx(one[m][k], rel=1e-9), (m, k)
    assert (tmp_path / "two" / "meta_pendulum_smoke_svd.png").exists()


def test_float32_training_is_evaluated_in_float64_and_names_its_run_folder(tmp_path, monkeypatch):
    # Catches: a float32 checkpoint loaded into a float64 model (load_state_dict casts
    # silently) and float32 fields reaching the float64 evaluation.
    import dataclasses

    smoke = benchmark.PRESETS["smoke"]
    monkeypatch.setitem(benchmark.PRESETS, "smoke", dataclasses.replace(smoke, dtype="float32"))
    results = meta_benchmark.main(["--preset", "smoke", "--methods", "svd", "maml", "--out", str(tmp_path)])
    assert all(math.isfinite(results[m]["eps_field"][0]) for m in ("svd", "maml"))
    runs = [p.name for p in (tmp_path / "runs").glob("meta-pendulum-smoke-*/*")]
    assert runs == ["svd-seed0-float32"]


def test_energy_figure_stops_where_a_rollout_leaves_the_state_domain():
    # Catches: the gas_containers run crashing in its energy figure when a learned model pushed
    # the piston out of (0, 2), where the true E and S are undefined.
    import torch

    from sp_dynamics import get_system

    system = get_system("gas_containers")
    states = torch.tensor([[1.0, 0.0, 2.0, 2.0], [1.9, 0.1, 2.0, 2.0], [2.1, 0.2, 2.0, 2.0], [1.5, 0.0, 2.0, 2.0]],
                          dtype=torch.float64)
    assert valid_prefix(system, states) == 2
    states[1, 0] = float("nan")
    assert valid_prefix(system, states) == 1
    assert valid_prefix(get_system("pendulum"), states[:1, :2]) == 1


def test_multidomain_base_is_trained_once_and_evaluated_on_every_family(tmp_path):
    # Catches: a multi-domain run that trains one base per family (it must share one latent
    # table over the pooled families) or drops a family from the table.
    from experiments import meta_multidomain

    results = meta_multidomain.main(["--preset", "smoke", "--methods", "svd", "--out", str(tmp_path)])
    from sp_dynamics.runners.multidomain import FAMILIES

    for name in FAMILIES:
        assert math.isfinite(results["svd"][name]["eps_traj"][0])
        assert f"| svd | {name} |" in (tmp_path / "meta_multidomain_smoke.md").read_text()
    (run_root,) = (tmp_path / "runs").glob("meta-multidomain-smoke-*")
    runs = list(run_root.iterdir())
    assert len(runs) == 1
    import torch

    state = torch.load(runs[0] / "checkpoint.pt", weights_only=False)
    assert state["latents"].shape[0] == 3 * 4  # smoke preset: 4 training instances per family


def test_training_overrides_get_their_own_run_folder_and_result_files(tmp_path):
    # Catches: a --set variant overwriting the preset's table, or colliding with the preset's
    # checkpoints (whose config check would refuse to load them); overrides that are not
    # type-checked against the settings.
    meta_benchmark.main(["--preset", "smoke", "--methods", "svd", "--out", str(tmp_path)])
    meta_benchmark.main(["--preset", "smoke", "--methods", "svd", "--set", "meta.iterations=2",
                         "--set", "meta.lr_schedule=cosine", "--tag", "it2", "--out", str(tmp_path)])
    assert len(list((tmp_path / "runs").glob("meta-pendulum-smoke-*/svd-seed0/checkpoint.pt"))) == 2
    table = (tmp_path / "meta_pendulum_smoke_it2.md").read_text()
    assert "meta iterations 2 (cosine lr" in table
    assert "meta iterations 3 (constant lr" in (tmp_path / "meta_pendulum_smoke.md").read_text()
    for bad, message in [("meta.iterations=-1", "iterations must be >= 0"), ("meta.iterations=2.5", "expected int"),
                         ("meta.nope=1", "unknown setting 'nope'"), ("meta=3", "group of settings"),
                         ("adapt.solver=lbfgs", "solver")]:
        with pytest.raises(ValueError, match=message):
            meta_benchmark.main(["--preset", "smoke", "--set", bad, "--out", str(tmp_path)])


def test_gauss_newton_adaptation_runs_in_the_benchmark(tmp_path):
    results = meta_benchmark.main(["--preset", "smoke", "--methods", "svd", "--set", "adapt.solver=gauss_newton",
                                   "--set", "adapt.gn_steps=2", "--out", str(tmp_path)])
    assert math.isfinite(results["svd"]["eps_traj"][0])
    (table,) = tmp_path.glob("meta_pendulum_smoke_set-*.md")  # named by a hash of the overrides
    assert "2 Gauss-Newton steps" in table.read_text()


def test_training_from_noisy_states_alone_evaluates_against_clean_data(tmp_path):
    # Catches: estimated-derivative training reading the exact derivatives anyway (the run would
    # equal the exact-target run), or sharing its run folder with it.
    exact = meta_benchmark.main(["--preset", "smoke", "--methods", "svd", "--out", str(tmp_path)])
    noisy = meta_benchmark.main(["--preset", "smoke", "--methods", "svd", "--set", "targets=smoothing_spline",
                                 "--set", "noise_std=0.01", "--tag", "noisy", "--out", str(tmp_path)])
    assert math.isfinite(noisy["svd"]["eps_traj"][0])
    assert noisy["svd"]["eps_field"] != exact["svd"]["eps_field"]
    assert len(list((tmp_path / "runs").glob("meta-pendulum-smoke-*"))) == 2
    assert "estimated from the states (smoothing_spline), Gaussian noise std 0.01" in (
        tmp_path / "meta_pendulum_smoke_noisy.md").read_text()


def test_results_run_in_parts_combine_into_the_one_run_table(tmp_path):
    # Catches: a combined table that is not what one run over all seeds gives (seeds dropped,
    # misordered or averaged per part), and parts with other settings or repeated seeds merged.
    from experiments import meta_combine
    from sp_dynamics.runners.common import UsageError

    run = lambda *a: meta_benchmark.main(["--preset", "smoke", "--methods", "svd", "--out", str(tmp_path), *a])  # noqa: E731
    run("--seeds", "1", "--tag", "b")
    run("--seeds", "0", "--tag", "a")
    whole = run("--seeds", "0", "1", "--tag", "ab")
    merged = meta_combine.main(["meta_pendulum_smoke_a", "meta_pendulum_smoke_b", "--stem", "c", "--results", str(tmp_path)])
    for key in ("eps_field", "eps_field_data", "eps_traj", "ssim"):
        assert merged["svd"][key] == pytest.approx(whole["svd"][key], rel=1e-9)
    assert "seeds [0, 1]" in (tmp_path / "c.md").read_text()
    with pytest.raises(UsageError, match="svd seed 0 is in two parts"):
        meta_combine.main(["meta_pendulum_smoke_a", "meta_pendulum_smoke_ab", "--stem", "d", "--results", str(tmp_path)])
    run("--seeds", "2", "--set", "adapt.lr=0.123", "--tag", "other")
    with pytest.raises(UsageError, match="other settings .*adapt"):
        meta_combine.main(["meta_pendulum_smoke_a", "meta_pendulum_smoke_other", "--stem", "e", "--results", str(tmp_path)])
    # a part written before a setting existed lacks it (nested or not) and ran with its default:
    # it combines; with another value it does not
    path = tmp_path / "meta_pendulum_smoke_b.config.json"
    make_part_predate_settings(path)
    assert meta_combine.main(["meta_pendulum_smoke_a", "meta_pendulum_smoke_b", "--stem", "f",
                              "--results", str(tmp_path)])["svd"]["eps_traj"] == merged["svd"]["eps_traj"]
    set_part_setting(path, "entropy_gain", True)
    with pytest.raises(UsageError, match="other settings .*entropy_gain"):
        meta_combine.main(["meta_pendulum_smoke_a", "meta_pendulum_smoke_b", "--stem", "g", "--results", str(tmp_path)])


def test_entropy_error_skips_only_the_trajectories_that_left_the_state_domain():
    # Catches: one gas rollout that pushes the piston out of (0, 2) turning the whole entropy
    # column NaN (the paper-preset gas table showed NaN for this reason), or such a trajectory
    # being scored with an S that is undefined there.
    import torch

    from sp_dynamics import get_system
    from sp_dynamics.meta.evaluation import entropy_production_errors

    system = get_system("gas_containers")
    mu = torch.tensor([7.0], dtype=torch.float64)  # gamma; S = S1 + S2 does not depend on it
    true = torch.tensor([[[1.0, 0.0, 2.0, 2.0], [1.0, 0.0, 2.1, 2.1]]] * 3, dtype=torch.float64)  # (J=3, T=2, n)
    pred = true.clone()
    pred[1, 1, 2:] = 2.2             # trajectory 1 produces twice the entropy (0.4 against 0.2): error 1
    pred[2, 0, 0] = 2.5              # trajectory 2 leaves the domain (piston outside (0, 2))
    err = entropy_production_errors(system, mu, pred, true)
    assert err[0] == 0.0 and err[1] == pytest.approx(1.0, rel=1e-6) and torch.isnan(err[2])


def test_combine_derives_the_left_share_of_parts_written_before_it_existed():
    # Catches: meta_combine refusing (or mis-reading) a GENERIC part written before the
    # benchmark reported `left_domain`: a finite old entropy error means no trajectory left.
    from experiments.meta_combine import _upgrade

    assert _upgrade({"entropy_error": 0.2})["left_domain"] == 0.0
    assert math.isnan(_upgrade({"entropy_error": float("nan")})["left_domain"])
    assert _upgrade({"entropy_error": 0.2, "left_domain": 0.5})["left_domain"] == 0.5
    assert "left_domain" not in _upgrade({"eps_traj": 0.1})  # Hamiltonian parts have no entropy column


def test_least_squares_adaptation_runs_in_the_benchmark_and_is_refused_where_inexact(tmp_path):
    # Catches: the lstsq solver not reaching the benchmark's head method, or being accepted for
    # methods whose field is not linear in the latent (the refusal must come before any training).
    results = meta_benchmark.main(["--preset", "smoke", "--methods", "head", "--set", "adapt.solver=lstsq",
                                   "--tag", "lstsq", "--out", str(tmp_path)])
    assert math.isfinite(results["head"]["eps_traj"][0])
    assert "one exact least-squares solve" in (tmp_path / "meta_pendulum_smoke_lstsq.md").read_text()
    for argv in (["--methods", "head", "svd"], ["--system", "dno", "--methods", "head"]):
        with pytest.raises(benchmark.UsageError, match="lstsq"):
            meta_benchmark.main(["--preset", "smoke", *argv, "--set", "adapt.solver=lstsq", "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()
