"""The package as a user gets it: a wheel installed into a fresh venv, used outside the checkout.

Slow (a wheel build and a venv, about a minute) but part of the default run: it is the only test
that would notice a runner importing from the checkout, a missing package-data checkpoint, or a
console script that is not declared. The fresh venv borrows the test venv's third-party packages
(torch and friends) through a .pth line, so nothing is downloaded; sp-dynamics itself comes
only from the wheel."""

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PLUGIN = '''
import torch
from sp_dynamics import System, ring_states


class Spring(System):
    name, dim, param_names = "user_spring", 2, ("k",)
    param_box = ((0.5, 2.0),)
    field_radius = 1.2

    def E(self, mu, x):
        return 0.5 * x[..., 1] ** 2 + 0.5 * mu[..., 0] * x[..., 0] ** 2

    def f(self, mu, x):
        return torch.stack([x[..., 1], -mu[..., 0] * x[..., 0]], -1)

    def sample_initial_states(self, mu, n, generator):
        return ring_states(n, 0.2, 1.0, generator)
'''


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_runs_the_cli_outside_the_checkout(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                    str(REPO)], check=True, capture_output=True)
    (wheel,) = dist.glob("sp_dynamics-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   capture_output=True)
    work = tmp_path / "work"
    work.mkdir()
    (work / "user_plugin.py").write_text(PLUGIN)
    env = {**os.environ, "PYTHONPATH": str(work), "MPLBACKEND": "Agg", "SP_DYNAMICS_CACHE": str(tmp_path / "cache")}
    cli = str(venv / "bin" / "sp-dynamics")

    def run(*args, code=0):
        out = subprocess.run([cli, *args], cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == code, (args, out.stdout[-2000:], out.stderr[-2000:])
        return out

    where = subprocess.run([str(py), "-c", "import sp_dynamics; print(sp_dynamics.__file__)"], cwd=work, env=env,
                           check=True, capture_output=True, text=True).stdout
    assert str(REPO) not in where and site in where  # the wheel's copy, not the checkout's
    assert "meta-train" in run("--help").stdout
    assert "pendulum" in run("systems").stdout
    run("benchmark", "--system", "pendulum", "--preset", "smoke", "--methods", "svd", "--out", "results")
    assert (work / "results" / "meta_pendulum_smoke.md").exists()
    run("--plugin", "user_plugin:Spring", "meta-train", "--system", "user_spring", "--preset", "smoke",
        "--out", "run")
    subprocess.run([str(py), "-c", (
        "import user_plugin, sp_dynamics as sp; sp.register_system('user_spring', user_plugin.Spring);"
        "d = sp.make_family_dataset('user_spring', seed=3, n_instances=3, n_train=2, n_traj=2, n_points=21);"
        "sp.save_trajectories('new.npz', d.t, d.x[2:])")], cwd=work, env=env, check=True)
    adapted = json.loads(run("adapt", "run", "--data", "new.npz", "--shots", "10").stdout.strip().splitlines()[-1])
    assert adapted["instances"] == 1
    maze = json.loads(run("maze", "eval", "--size", "15", "--count", "5").stdout.strip().splitlines()[-1])
    assert maze["f1"] > 0.9  # the shipped checkpoint is package data
    run("sudoku", "generate", "--count", "3", "--seed", "1", "--out", "three.csv")
    sudoku = json.loads(run("sudoku", "eval", "--puzzles", "three.csv").stdout.strip().splitlines()[-1])
    assert sudoku["count"] == 3 and 0 <= sudoku["cells"] <= 1  # the shipped Sudoku checkpoint too
    subprocess.run([str(py), "-c", "from metriplector.runners.sudoku import SHIPPED_TEST; assert SHIPPED_TEST.is_file()"],
                   cwd=work, env=env, check=True)
    copy = json.loads(run("copy-task", "eval", "--T", "100", "--count", "20").stdout.strip().splitlines()[-1])
    assert copy["accuracy"] > 0.9
    err = run("benchmark", "--system", "nope", code=2).stderr.strip().splitlines()
    assert len(err) == 1 and "unknown system" in err[0]
