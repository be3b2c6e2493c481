"""Character language models: causality, scan == loop, the runner (train, eval, sample), bad input."""

import json

import pytest
import torch

from metriplector.language import GPT, LSTMLM, CausalMetriplectorLM, CausalPoissonBlock, generate
from metriplector.runners import language as rl
from sp_dynamics.cli import main as cli
from sp_dynamics.sequence import HMLStack

V = 11


def _models():
    torch.manual_seed(0)
    return {
        "metriplector": CausalMetriplectorLM(V, 16, depth=3, fields=4, chunks=(1, 4, 3)),
        "gpt": GPT(V, 16, depth=2, heads=2, context=32),
        "lstm": LSTMLM(V, 16, 2),
        "hml": HMLStack(V, 16, 16, 2, mlp_ratio=2, selective=True, mode="loop"),
    }


@pytest.mark.parametrize("name", ["metriplector", "gpt", "lstm", "hml"])
def test_outputs_at_t_do_not_depend_on_later_inputs(name):
    # Catches: a leak from the future (a chunk scan handing a chunk its own summary, a missing
    # attention mask): changing the tokens after position t must leave the logits up to t alone.
    model = _models()[name].double().eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, V, (3, 29), generator=g)
    base = model(x)
    for t in (0, 3, 4, 11, 27):
        y = x.clone()
        y[:, t + 1 :] = torch.randint(0, V, y[:, t + 1 :].shape, generator=g)
        out = model(y)
        assert torch.allclose(out[:, : t + 1], base[:, : t + 1], atol=1e-12), (name, t)
        if t < 27:
            assert not torch.allclose(out[:, t + 1 :], base[:, t + 1 :])


def test_block_scan_equals_loop_in_values_and_gradients():
    # Catches: the parallel scan and the sequential recurrence disagreeing inside the model.
    torch.manual_seed(0)
    blocks = [CausalPoissonBlock(8, fields=3, chunk=c, mode=m).double() for c in (1, 4) for m in ("scan", "loop")]
    for scan, loop in (blocks[:2], blocks[2:]):
        loop.load_state_dict(scan.state_dict())
        h = torch.randn(2, 37, 8, dtype=torch.float64, requires_grad=True)
        a, b = scan(h), loop(h)
        assert torch.allclose(a, b, atol=1e-12)
        ga, = torch.autograd.grad(a.square().sum(), h)
        gb, = torch.autograd.grad(b.square().sum(), h)
        assert torch.allclose(ga, gb, atol=1e-10)


def test_initial_memory_spread_and_token_checks():
    block = CausalPoissonBlock(8, fields=5)
    a, _ = block.chain(torch.zeros(1, 3, 8))
    assert torch.allclose(a[0, :, 0], torch.linspace(0.5, 0.98, 5), atol=1e-3)  # (+1e-4 damping floor)
    model = _models()["gpt"]
    with pytest.raises(ValueError, match="exceeds the model's context of 32"):
        model(torch.zeros(1, 33, dtype=torch.long))
    with pytest.raises(ValueError, match=r"token ids must lie in 0..10"):
        _models()["metriplector"](torch.full((1, 4), 11))
    with pytest.raises(ValueError, match="int64"):
        _models()["lstm"](torch.zeros(1, 4))


def test_generate_is_seeded_and_greedy_is_deterministic():
    model = _models()["metriplector"]
    prompt = torch.tensor([1, 2, 3])
    a = generate(model, prompt, 10, 1.0, torch.Generator().manual_seed(0))
    b = generate(model, prompt, 10, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and len(a) == 13 and torch.equal(a[:3], prompt)
    gpt = _models()["gpt"]
    assert len(generate(gpt, prompt, 40, 0.0)) == 43  # beyond the context: the last 32 tokens are read
    with pytest.raises(ValueError, match="temperature"):
        generate(model, prompt, 1, -1.0)


def test_vocabulary_counts_unknown_characters():
    vocab = rl.Vocabulary("abc")
    ids, unknown = vocab.encode("abxcz")
    assert ids.tolist() == [0, 1, 3, 2, 3] and unknown == 2 and vocab.size == 4
    assert vocab.decode(ids) == "ab" + rl.UNKNOWN + "c" + rl.UNKNOWN


def test_tokens_to_reach():
    curve = [{"tokens": 100, "val_loss": 3.0}, {"tokens": 200, "val_loss": 2.0}, {"tokens": 300, "val_loss": 1.0}]
    assert rl.tokens_to_reach(curve, 2.5) == 150
    assert rl.tokens_to_reach(curve, 3.5) == 100
    assert rl.tokens_to_reach(curve, 0.5) is None


def test_train_eval_sample_round_trip_and_bad_input(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("to be or not to be, that is the question. " * 200, encoding="utf-8")
    assert cli(["language", "train", "--preset", "smoke", "--text", str(text), "--out", str(tmp_path / "r"),
                "--ship", "--checkpoints", str(tmp_path / "ck")]) == 0
    rows = json.loads((tmp_path / "r" / "language_smoke_text.json").read_text())
    assert {r["model"] for r in rows} == set(rl.MODELS)
    counts = [r["params"] for r in rows]
    assert max(counts) <= 1.1 * min(counts)
    # checkpoint round trip: the loaded model gives the scores the run recorded
    model, vocab, blob = rl.load_checkpoint(tmp_path / "ck" / "language_gpt.pt")
    row = next(r for r in rows if r["model"] == "gpt")
    _, _, val = rl.corpus(text, blob["context"])
    nats = rl.mean_loss(model, rl.windows(val, blob["context"] + 1, rl.PRESETS["smoke"].final_eval_limit))
    assert nats == pytest.approx(row["val_nats"], rel=1e-6)
    capsys.readouterr()
    held = tmp_path / "held.txt"
    held.write_text("that is the question? " * 20 + "Ω", encoding="utf-8")
    assert cli(["language", "eval", "--checkpoint", str(tmp_path / "ck" / "language_metriplector.pt"),
                "--text", str(held)]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["chars"] == len(held.read_text(encoding="utf-8")) and line["unknown_chars"] == 21  # 20 "?" and one "Ω"
    assert line["bits_per_char"] > 0
    assert cli(["language", "sample", "--checkpoint", str(tmp_path / "ck" / "language_hml.pt"), "--prompt", "to be",
                "--chars", "20"]) == 0
    assert capsys.readouterr().out.startswith("to be")
    # the HML energy figure along a passage of a user's file; other checkpoints are refused
    assert cli(["language", "figure", "--checkpoint", str(tmp_path / "ck" / "language_hml.pt"), "--text", str(held),
                "--layer", "1", "--out", str(tmp_path / "energy.png")]) == 0
    assert (tmp_path / "energy.png").stat().st_size > 0
    assert cli(["language", "figure", "--checkpoint", str(tmp_path / "ck" / "language_gpt.pt"), "--text", str(held),
                "--out", str(tmp_path / "x.png")]) == 2
    assert cli(["language", "figure", "--checkpoint", str(tmp_path / "ck" / "language_hml.pt"), "--text", str(held),
                "--layer", "9", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "needs an HML checkpoint" in err and "--layer must be in 0..1" in err
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9".encode("latin-1"))
    for argv, message in [(["--text", str(bad)], "not UTF-8 text"), (["--text", str(tmp_path / "none.txt")],
                                                                      "no such text file")]:
        assert cli(["language", "eval", "--checkpoint", str(tmp_path / "ck" / "language_gpt.pt"), *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
