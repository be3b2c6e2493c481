"""The shot-sweep / initialisation ablation and the batched-vs-loop benchmark, on tiny settings."""

import json
import math

import pytest

from experiments import bench_maml, meta_shots


def test_shot_sweep_smoke_reuses_meta_training_and_writes_outputs(tmp_path):
    results = meta_shots.main(["--preset", "smoke", "--shots", "1", "4", "--out", str(tmp_path)])
    for init in ("mean", "zero"):
        for K in (1, 4):
            assert all(math.isfinite(r["eps_field"]) for r in results["svd"][init][K])
    stem = tmp_path / "meta_shots_pendulum_smoke"
    assert "| svd | zero | 4 |" in stem.with_suffix(".md").read_text()
    assert json.loads(stem.with_suffix(".json").read_text())["svd"]["mean"]["1"]
    assert stem.with_suffix(".png").exists()
    (ckpt,) = (tmp_path / "runs").glob("meta-pendulum-smoke-*/svd-seed0/checkpoint.pt")
    mtime = ckpt.stat().st_mtime_ns
    meta_shots.main(["--preset", "smoke", "--shots", "2", "--out", str(tmp_path)])
    assert ckpt.stat().st_mtime_ns == mtime  # the finished meta-training run was loaded, not redone


def test_shot_sweep_rejects_bad_shots(tmp_path):
    with pytest.raises(ValueError, match="--shots must be >= 1"):
        meta_shots.main(["--preset", "smoke", "--shots", "0", "--out", str(tmp_path)])


def test_batched_and_looped_meta_gradients_agree_in_the_benchmark():
    # The benchmark raises if the two computations differ; the table must show both timings.
    table = bench_maml.main(["--tasks", "2", "--points", "4", "--repeats", "1", "--no-save"])
    assert table.count("| MAML meta-gradient") == 1 and "latent meta-training iteration" in table
