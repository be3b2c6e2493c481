"""Data-parallel meta-training under torchrun (gloo, 2 CPU processes): equivalence with one
process, kill-and-resume across process counts, a dying rank stopping the job, bad input."""

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sp_dynamics.meta import MetaConfig, meta_train
from sp_dynamics.meta import training as training_module
from sp_dynamics.meta.distributed import Shard

SCRIPT = Path(__file__).with_name("_dist_meta.py")
spec = importlib.util.spec_from_file_location("_dist_meta", SCRIPT)
dist_meta = importlib.util.module_from_spec(spec)
spec.loader.exec_module(dist_meta)

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not available")


def _torchrun(out, *args, timeout=240):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SP_DYNAMICS_DIST_TIMEOUT": "30"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(SCRIPT),
           str(out), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def _result(out):
    return torch.load(Path(out) / "result.pt", weights_only=True)


def _assert_same(a, b):
    # Catches: a W-process run that is not the one-process run (wrong gradient averaging, tasks
    # dropped or double-counted, latent rows updated by a rank that does not own them, a
    # schedule that sees other batches): base weights, latents and the loss curve must agree.
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(a["latents"], b["latents"], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(torch.tensor(a["loss"]), torch.tensor(b["loss"]), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(torch.tensor(a["latent_norm"]), torch.tensor(b["latent_norm"]), rtol=1e-10, atol=1e-12)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    dist_meta.main([str(out)])
    return _result(out)


def test_two_processes_equal_one(reference, tmp_path):
    proc = _torchrun(tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_same(reference, _result(tmp_path))


def test_kill_and_resume_across_process_counts(reference, tmp_path):
    # 2 processes stopped after the checkpoint at iteration 8, resumed by 1 process ...
    proc = _torchrun(tmp_path / "a", "--stop-at", "8")
    assert proc.returncode != 0 and not (tmp_path / "a" / "result.pt").exists()
    dist_meta.main([str(tmp_path / "a")])
    _assert_same(reference, _result(tmp_path / "a"))
    # ... and 1 process stopped at iteration 4, resumed by 2
    with pytest.raises(SystemExit):
        dist_meta.main([str(tmp_path / "b"), "--stop-at", "4"])
    proc = _torchrun(tmp_path / "b")
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_same(reference, _result(tmp_path / "b"))


def test_a_dying_rank_stops_the_job(tmp_path):
    # Catches: a job that hangs in a collective when one rank dies (no timeout, no error).
    start = time.time()
    proc = _torchrun(tmp_path, "--fail-rank", "1", "--fail-at", "5", timeout=180)
    assert proc.returncode != 0
    assert time.time() - start < 150
    assert "failed" in (proc.stderr + proc.stdout).lower()


def test_ranks_given_different_data_are_refused(tmp_path):
    # Catches: ranks that silently train on different data (each would fit its own copy).
    proc = _torchrun(tmp_path, "--other-data-on-rank", "1", timeout=180)
    assert proc.returncode != 0
    assert "were given different training data" in proc.stderr + proc.stdout


def test_bad_distributed_input_is_refused_before_any_collective(monkeypatch):
    x, dx = dist_meta.data()  # 7 systems
    torch.manual_seed(0)
    model = dist_meta.LatentHamiltonianNN(2, kind="svd", rank=2, latent_dim=3, hidden=8, depth=1, hyper_hidden=4).double()
    cfg = MetaConfig(iterations=2, tasks_per_batch=5, points_per_task=8)
    monkeypatch.setattr(training_module, "from_environment", lambda device: Shard(0, 8))
    with pytest.raises(ValueError, match="8 processes but only 7 training systems"):
        meta_train(model, x, dx, config=cfg)
    monkeypatch.setattr(training_module, "from_environment", lambda device: Shard(0, 2))
    with pytest.raises(ValueError, match="restarts and the L-BFGS refinement run on one process"):
        meta_train(model, x, dx, config=MetaConfig(iterations=2, tasks_per_batch=5, points_per_task=8, refine_evals=5, refine_points=8))
    monkeypatch.setattr(training_module, "from_environment", lambda device: Shard())
    with pytest.raises(ValueError, match="needs a torch.distributed job"):
        meta_train(model, x, dx, config=cfg, distributed=True)


def test_shard_ownership_covers_every_row_once():
    rows = torch.arange(11)
    masks = [Shard(r, 3).owned(rows) for r in range(3)]
    assert torch.stack(masks).sum(0).eq(1).all()
