"""The main job end to end on tiny settings (the real run is `make demo`)."""

import json
import math

from experiments import demo


def test_demo_writes_results_and_figures(tmp_path):
    results = demo.main(["--steps", "3", "--out-root", str(tmp_path), "--dg-step", "0.05"])
    (run_dir,) = tmp_path.iterdir()
    names = {p.name for p in run_dir.iterdir()}
    for system in ["pendulum", "dno"]:
        assert {f"{system}_phase_portrait.png", f"{system}_energy.png", f"{system}_arrays.npz"} <= names
        assert math.isfinite(results[system]["eps_traj"])
        # structure holds even for a barely trained model
        assert results[system]["learned_energy_drift_discrete_gradient"] < 1e-10
    assert results["dno"]["min_learned_entropy_increment_discrete_gradient"] >= -1e-12
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["pendulum"]["eps_traj"] == results["pendulum"]["eps_traj"]
    assert json.loads((run_dir / "config.json").read_text())["steps"] == 3
