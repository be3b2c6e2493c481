"""Pixel MNIST: the input pipeline, the classifiers, the runner (train, eval, figure), bad input."""

import json

import numpy as np
import pytest
import torch

from metriplector.pixel_mnist import MetriplectorClassifier, RNNClassifier, permutation, pixel_sequences
from metriplector.runners import pixel_mnist as rp
from sp_dynamics.cli import main as cli
from sp_dynamics.sequence import HMLClassifier


def test_orders_and_scaling():
    # Catches: a permutation that changes between calls (train and eval would read different
    # sequences), a "sequential" order that is not raster order, or pixels not standardised.
    p = permutation("permuted")
    assert torch.equal(p, permutation("permuted")) and torch.equal(p.sort().values, torch.arange(784))
    assert not torch.equal(p, torch.arange(784))
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    seq, perm = pixel_sequences(images, "sequential"), pixel_sequences(images, "permuted")
    assert seq.shape == (3, 784, 1) and seq.dtype == torch.float32
    expected = (images[1, 5, 7] / 255 - 0.1307) / 0.3081
    assert seq[1, 5 * 28 + 7, 0].item() == pytest.approx(expected, rel=1e-6)
    assert torch.equal(perm[:, :, 0], seq[:, p, 0])
    with pytest.raises(ValueError, match="order must be one of"):
        permutation("spiral")
    with pytest.raises(ValueError, match=r"uint8 images of shape \(N, 28, 28\)"):
        pixel_sequences(images.astype(np.float32), "sequential")


@pytest.mark.parametrize("make", [
    lambda: HMLClassifier(1, 10, 8, 4, n_layers=2, mode="chunked", chunk=5, damping=True),
    lambda: RNNClassifier("gru", 1, 10, 6),
    lambda: MetriplectorClassifier(1, 10, 8, depth=2, fields=3),
])
def test_classifiers_shapes_gradients_and_bad_input(make):
    # Catches: a classifier that pools over the wrong axis (logits of the wrong shape), a
    # parameter cut off from the loss, or a bad input reaching torch's internals.
    torch.manual_seed(0)
    model = make()
    logits = model(torch.randn(3, 30, 1))
    assert logits.shape == (3, 10)
    logits.logsumexp(-1).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError, match=r"\(batch, time, 1\)"):
        model(torch.randn(3, 30))


def test_hml_classifier_chunked_equals_loop():
    # Catches: the classifier's chunked layers disagreeing with the plain leapfrog recurrence.
    torch.manual_seed(0)
    a = HMLClassifier(1, 10, 8, 4, n_layers=2, mode="chunked", chunk=7, damping=True).double()
    b = HMLClassifier(1, 10, 8, 4, n_layers=2, mode="loop", damping=True).double()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 50, 1, dtype=torch.float64)
    assert torch.allclose(a(x), b(x), atol=1e-10)


def test_train_eval_figure_round_trip_and_bad_input(tmp_path, capsys):
    out, ck = tmp_path / "r", tmp_path / "ck"
    assert cli(["pixel-mnist", "train", "--preset", "smoke", "--seeds", "0", "--out", str(out), "--ship",
                "--checkpoints", str(ck)]) == 0
    rows = json.loads((out / "pixel_mnist_smoke_permuted.json").read_text())
    assert {r["model"] for r in rows} == set(rp.MODELS)
    counts = [r["params"] for r in rows]
    assert max(counts) <= 1.1 * min(counts)
    assert all(r["finite_losses"] for r in rows)
    # the checkpoint gives the accuracy the run recorded, through the eval command on a file
    images, labels = rp.mnist_parts()["test"]
    data = tmp_path / "digits.npz"
    np.savez(data, images=images[:50], labels=labels[:50])
    capsys.readouterr()
    assert cli(["pixel-mnist", "eval", "--checkpoint", str(ck / "pixel_mnist_permuted_hml.pt"), "--data", str(data)]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    row = next(r for r in rows if r["model"] == "hml")
    assert line["count"] == 50 and line["accuracy"] == pytest.approx(row["test_accuracy"])
    assert cli(["pixel-mnist", "figure", "--checkpoint", str(ck / "pixel_mnist_permuted_hml.pt"),
                "--out", str(tmp_path / "energy.png")]) == 0
    assert (tmp_path / "energy.png").stat().st_size > 0
    # resuming a finished run reads its rows instead of training again
    assert cli(["pixel-mnist", "train", "--preset", "smoke", "--seeds", "0", "--models", "gru", "--out", str(out),
                "--no-save"]) == 0
    capsys.readouterr()
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, pixels=images[:5], labels=labels[:5])
    other = tmp_path / "other.pt"
    torch.save({"format": "metriplector-vision/1"}, other)
    shape = tmp_path / "shape.npz"
    np.savez(shape, images=images[:5, :14], labels=labels[:5])
    for argv, message in [(["--data", str(wrong)], "missing array(s) ['images']"),
                          (["--data", str(shape)], "(N, 28, 28)"),
                          (["--data", str(tmp_path / "none.npz")], "no such data file"),
                          (["--data", str(data), "--checkpoint", str(data)], "corrupt or unreadable pixel-MNIST checkpoint"),
                          (["--data", str(data), "--checkpoint", str(other)], "not a pixel-MNIST checkpoint")]:
        assert cli(["pixel-mnist", "eval", "--checkpoint", str(ck / "pixel_mnist_permuted_gru.pt"), *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert cli(["pixel-mnist", "train", "--preset", "smoke", "--orders", "spiral", "--out", str(out)]) == 2
    assert "unknown order 'spiral'" in capsys.readouterr().err
    assert cli(["pixel-mnist", "figure", "--checkpoint", str(ck / "pixel_mnist_permuted_gru.pt"),
                "--out", str(tmp_path / "x.png")]) == 2
    assert "needs an HML checkpoint" in capsys.readouterr().err


def test_shipped_checkpoints_reproduce_their_recorded_test_accuracy(tmp_path, capsys):
    # Regression test of the shipped artifacts: each model of the results table (seed 0), run
    # through the eval command on the test split written to a file, gives the accuracy recorded
    # at training time; the permuted HML meets the >= 90% target.
    images, labels = rp.mnist_parts()["test"]
    np.savez(tmp_path / "test.npz", images=images, labels=labels)
    for order, kinds in (("permuted", ("hml", "lstm", "gru")), ("sequential", ("hml",))):
        for kind in kinds:
            path = rp.CHECKPOINTS / f"pixel_mnist_{order}_{kind}.pt"
            assert cli(["pixel-mnist", "eval", "--checkpoint", str(path), "--data", str(tmp_path / "test.npz")]) == 0
            line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
            _, blob = rp.load_checkpoint(path)
            assert line["count"] == 1000 and line["order"] == order and line["model"] == kind
            assert line["accuracy"] == pytest.approx(blob["test_accuracy"], abs=1e-6)  # float32 mean; one digit is 1e-3
            if (order, kind) == ("permuted", "hml"):
                assert line["accuracy"] >= 0.90
