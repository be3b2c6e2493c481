"""Copy-task benchmark pieces: data, the memoryless baseline, a tiny training run, the CLI."""

import json
import math

import pytest
import torch

from sp_dynamics.runners import copy_task as ct


def test_copy_batch_layout():
    x, y = ct.copy_batch(5, 30, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (5, 50)
    assert ((x[:, :10] >= 1) & (x[:, :10] <= 8)).all()
    assert (x[:, 10:39] == ct.BLANK).all() and (x[:, 39] == ct.DELIMITER).all() and (x[:, 40:] == ct.BLANK).all()
    assert torch.equal(y[:, -10:], x[:, :10]) and (y[:, :-10] == ct.BLANK).all()
    with pytest.raises(ValueError, match="T >= 1"):
        ct.copy_batch(2, 0, torch.Generator())


def test_memoryless_baseline_is_the_cross_entropy_of_the_best_memoryless_guess():
    # Catches: a wrong baseline formula (the table divides by it).
    T = 40
    x, y = ct.copy_batch(64, T, torch.Generator().manual_seed(1))
    logits = torch.full((64, T + 20, ct.VOCAB), -1e9)
    logits[:, :-10, ct.BLANK] = 0.0                  # blank, surely, before the recall
    logits[:, -10:, 1:9] = 0.0                       # uniform over the 8 symbols during the recall
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, ct.VOCAB), y.reshape(-1))
    assert math.isclose(float(ce), ct.memoryless_baseline(T), rel_tol=1e-6)


def test_hml_learns_a_short_copy_task():
    # Catches: an HML that cannot carry information across time (broken force or readout
    # path, or the FFT convolution misaligned by a step): chance accuracy is 1/8.
    cfg = ct.CopyConfig(max_iterations=40, eval_every=40, val_size=64)
    model, info = ct.train("hml", 20, cfg, seed=0, progress=False)
    scores = ct.evaluate(model, 20, 200, seed=5)
    assert info["parameters"] == ct.n_trainable(model)
    assert scores["accuracy"] > 0.6 and scores["ce_over_memoryless"] < 0.7


def test_eval_cli_and_corrupt_checkpoint(tmp_path, capsys):
    cfg = ct.CopyConfig(state_size=8, width=8)
    model = ct.build("hml", cfg)
    path = tmp_path / "copy.pt"
    ct.save_checkpoint(model, cfg, {"T": 12, "seed": 0}, path)
    ct.main(["eval", "--T", "12", "--count", "20", "--seed", "3", "--checkpoint", str(path)])
    out = json.loads(capsys.readouterr().out)
    assert out["count"] == 20 and 0.0 <= out["accuracy"] <= 1.0
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt or unreadable copy-task checkpoint"):
        ct.main(["eval", "--T", "12", "--checkpoint", str(path)])
    with pytest.raises(ValueError, match="unknown model 'rnn'"):
        ct.build("rnn", cfg)


def test_evaluation_does_not_depend_on_the_batch_split():
    # Catches: long-T evaluation (fewer sequences per batch, see eval_chunk) scoring other
    # sequences than the short-T one: the fresh sequences must depend on the seed and T only.
    cfg = ct.CopyConfig(state_size=8, width=8)
    torch.manual_seed(0)
    model = ct.build("hml", cfg)
    a, b = (ct.evaluate(model, 12, 21, seed=3, chunk=c) for c in (4, 250))
    assert a["cross_entropy"] == pytest.approx(b["cross_entropy"], rel=1e-6) and a["accuracy"] == b["accuracy"]
    assert ct.eval_chunk(1000) == 250 and ct.eval_chunk(100_000) == 4


@pytest.mark.parametrize("mode", ["chunked", "reversible"])
def test_bench_other_modes_write_their_own_table(tmp_path, mode):
    # Catches: a long-T bench overwriting the default table (copy_task.md), or a mode option
    # that does not reach the model.
    ct.main(["--out", str(tmp_path), "bench", "--T", "15", "--models", "hml", "--max-iterations", "2", "--count", "8",
             "--batch", "4", "--mode", mode, "--checkpoints", str(tmp_path / "ck")])
    assert not (tmp_path / "copy_task.md").exists()
    text = (tmp_path / "copy_task_T15.md").read_text()
    assert f"HML exact mode: {mode}" in text and "| 15 | HML |" in text
    model, T = ct.load_checkpoint(tmp_path / "ck" / "copy_hml_T15.pt")
    assert T == 15 and model.layers[0].mode == mode


def test_shipped_T10000_checkpoint_recalls_fresh_sequences(capsys):
    # Regression test of the shipped long-sequence artifact (results: 0.9997 on 1000 sequences):
    # the eval command on 40 fresh sequences of length 10,020.
    ct.main(["eval", "--T", "10000", "--count", "40", "--seed", "321"])
    out = json.loads(capsys.readouterr().out)
    assert out["T"] == 10000 and out["count"] == 40 and out["accuracy"] >= 0.99
