"""Sudoku data (generator, solver, checker, CSV), the two Sudoku models and the sudoku runner."""

import json

import numpy as np
import pytest
import torch

from metriplector.sudoku import RecurrentRelationalNet, SudokuMetriplector, directional_scans, fill_givens, sudoku_loss
from metriplector.sudoku_data import check_solution, generate, generate_set, is_valid_grid, read_csv, solve, write_csv


@pytest.fixture(scope="module")
def puzzles():
    return generate_set(6, seed=11, givens=(24, 40))


def test_generated_puzzles_have_one_solution(puzzles):
    # catches: a clue removal that keeps a second solution (a non-unique training target)
    quizzes, solutions, guesses = puzzles
    for q, s in zip(quizzes, solutions):
        found, _ = solve(q, limit=3)
        assert len(found) == 1 and np.array_equal(found[0], s)
        assert check_solution(q, s) and (q > 0).sum() >= 24
    assert guesses.shape == (6,) and (guesses >= 0).all()


def test_generate_set_is_seeded():
    a = generate_set(3, seed=4, chunk=2)
    b = generate_set(3, seed=4, chunk=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    with pytest.raises(ValueError, match="target_givens"):
        generate(np.random.default_rng(0), 10)


def test_checker_catches_a_wrong_grid(puzzles):
    quizzes, solutions, _ = puzzles
    q, s = quizzes[0], solutions[0].copy()
    assert is_valid_grid(s)
    swapped = s.copy()
    swapped[[0, 1]] = swapped[[1, 0]]               # breaks two columns
    assert not is_valid_grid(swapped) and not check_solution(q, swapped)
    other = s.copy()
    given = np.flatnonzero(q > 0)[0]
    other[given] = other[given] % 9 + 1             # contradicts a given
    assert not check_solution(q, other)


def test_csv_round_trip_with_and_without_solutions(tmp_path, puzzles):
    quizzes, solutions, _ = puzzles
    path = write_csv(tmp_path / "p.csv", quizzes, solutions)
    q, s = read_csv(path)
    assert np.array_equal(q, quizzes) and np.array_equal(s, solutions)
    path = write_csv(tmp_path / "q.csv", quizzes)
    q, s = read_csv(path)
    assert np.array_equal(q, quizzes) and s is None


@pytest.mark.parametrize("line, match", [
    ("123", "expected 81 digits"),
    ("0" * 80 + "x", "expected 81 digits"),
    ("0" * 81 + "," + "1" * 81, "not a valid Sudoku grid"),
    ("0" * 81 + ",a,b", "expected 'quiz' or 'quiz,solution'"),
])
def test_bad_csv_lines_name_the_problem(tmp_path, line, match):
    path = tmp_path / "bad.csv"
    path.write_text("quiz,solution\n" + line + "\n")
    with pytest.raises(ValueError, match=match):
        read_csv(path)


def test_inconsistent_solution_column_is_refused(tmp_path, puzzles):
    quizzes, solutions, _ = puzzles
    wrong = solutions.copy()
    wrong[0, [0, 1]] = wrong[0, [1, 0]]
    path = write_csv(tmp_path / "w.csv", quizzes, wrong)
    with pytest.raises(ValueError, match=":2: the solution"):
        read_csv(path)
    with pytest.raises(FileNotFoundError, match="no such puzzle file"):
        read_csv(tmp_path / "missing.csv")


def test_directional_scans_sum_the_cells_beyond():
    # catches: an off-by-one in the ray shifts (a cell counting itself or missing the board edge)
    x = torch.ones(1, 81, 1)
    s = directional_scans(x).reshape(9, 9, 8)
    assert s[0, 0, 0] == 8 and s[0, 0, 1] == 0       # east / west from the top-left corner
    assert s[4, 4].tolist() == [4.0] * 8               # the centre sees 4 cells on every ray
    assert s[0, 0, 4] == 8 and s[0, 0, 6] == 0        # south-east diagonal, south-west


@pytest.mark.parametrize("cls, kwargs", [
    (SudokuMetriplector, dict(width=16, fields=2, objects=4, object_fields=2, scan_width=2, rounds=3)),
    (SudokuMetriplector, dict(width=16, fields=2, objects=4, object_fields=2, scan_width=2, rounds=3, readout="full")),
    (RecurrentRelationalNet, dict(width=16, rounds=3)),
])
def test_smoke_training_lowers_the_loss(puzzles, cls, kwargs):
    quizzes, solutions, _ = puzzles
    q, s = torch.from_numpy(quizzes), torch.from_numpy(solutions)
    torch.manual_seed(0)
    model = cls(**kwargs)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        out = model(q)
        assert len(out) == 3 and out[-1].shape == (6, 81, 9)
        loss = sudoku_loss(q, s, out)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.isfinite(losses).all() and losses[-1] < losses[0] - 0.05
    grid = fill_givens(q, out[-1])
    assert torch.equal(grid[q > 0], q[q > 0]) and int(grid.min()) >= 1


def test_validation_rounds_picks_the_best_round(puzzles):
    # catches: the test-time round count being chosen off by one, by the last round instead of the
    # best, or by blank-cell accuracy before exact solves
    from metriplector.runners.sudoku import PRESETS, validation_rounds

    quizzes, solutions, _ = puzzles
    q, s = torch.from_numpy(quizzes), torch.from_numpy(solutions)
    right = torch.nn.functional.one_hot(s - 1, 9).float()
    wrong = torch.nn.functional.one_hot(s % 9, 9).float()        # every blank cell wrong
    rows, first_blank = torch.arange(len(q)), (q == 0).float().argmax(-1)
    one_off = right.clone()
    one_off[rows, first_blank] = wrong[rows, first_blank]          # one blank cell of each board wrong

    class Scripted(torch.nn.Module):
        rounds = 3

        def forward(self, quizzes, rounds=None):   # round 3 and 4 solve every board: 3 (the fewer) wins
            script = [wrong, one_off, right, right, one_off, wrong]
            return [script[k][: len(quizzes)] for k in range(rounds or self.rounds)]

    assert validation_rounds(Scripted(), q, s, PRESETS["smoke"]) == 3


def test_models_refuse_bad_quizzes():
    model = RecurrentRelationalNet(width=8, rounds=1)
    with pytest.raises(ValueError, match="shape \\(B, 81\\)"):
        model(torch.zeros(2, 80, dtype=torch.long))
    with pytest.raises(ValueError, match="0..9"):
        model(torch.full((1, 81), 10, dtype=torch.long))


def test_solver_refuses_clashing_givens():
    # catches: a clash between two givens going unnoticed (the solver would then "solve" a bad quiz)
    quiz = np.zeros(81, dtype=np.int64)
    quiz[0] = quiz[8] = 5                           # the same digit twice in row 0
    assert solve(quiz)[0] == []
    quiz[8], quiz[80] = 0, 5                        # not peers: solvable
    assert len(solve(quiz, limit=1)[0]) == 1


def test_augmentation_keeps_puzzles_valid(puzzles):
    # catches: a "symmetry" that breaks the Sudoku constraints (a row permutation across bands, a
    # relabelling that moves the blank) -- training on it would teach wrong rules
    from metriplector.runners.sudoku import augment

    quizzes, solutions, _ = puzzles
    q, s = torch.from_numpy(quizzes), torch.from_numpy(solutions)
    q2, s2 = augment(q, s, torch.Generator().manual_seed(0))
    assert not torch.equal(s2, s)
    for a, b, a0 in zip(q2.numpy(), s2.numpy(), quizzes):
        assert check_solution(a, b) and (a > 0).sum() == (a0 > 0).sum()
        assert len(solve(a, limit=2)[0]) == 1  # still a unique solution


def test_stratified_batches_draw_equally_from_each_band():
    from metriplector.runners.sudoku import stratified_batch

    masks = {"a": torch.arange(100) < 90, "b": torch.arange(100) >= 90}
    idx = stratified_batch(masks, 20, torch.Generator().manual_seed(0))
    assert len(idx) == 20 and int((idx >= 90).sum()) == 10
    only = stratified_batch({"a": torch.ones(5, dtype=torch.bool), "b": torch.zeros(5, dtype=torch.bool)}, 7,
                            torch.Generator().manual_seed(0))
    assert len(only) == 7  # an empty band is skipped, not divided by


def test_rrn_messages_equal_the_per_edge_mlp():
    # catches: the factored message (first layer per node, second after the sum) drifting from
    # sum over the 20 peers of MLP([h_src, h_dst])
    torch.manual_seed(0)
    model = RecurrentRelationalNet(width=6, rounds=1).double()
    h = torch.randn(2, 81, 6, dtype=torch.float64)
    src, dst = model.edges[:, 0], model.edges[:, 1]
    w1 = torch.cat([model.msg_src.weight, model.msg_dst.weight], 1)
    per_edge = model.msg_out(torch.nn.functional.gelu(torch.cat([h[:, src], h[:, dst]], -1) @ w1.T + model.msg_src.bias))
    want = torch.zeros_like(h).index_add(1, dst, per_edge)
    hidden = torch.nn.functional.gelu(model.msg_src(h)[:, src] + model.msg_dst(h)[:, dst])
    got = model.msg_out(torch.zeros_like(h).index_add(1, dst, hidden)) + (model.degree - 1) * model.msg_out.bias
    assert torch.allclose(got, want, atol=1e-12)


@pytest.mark.parametrize("cls, kwargs", [
    (SudokuMetriplector, dict(width=8, fields=2, objects=4, object_fields=2, scan_width=2, rounds=3)),
    (RecurrentRelationalNet, dict(width=8, rounds=3)),
])
def test_extra_test_time_rounds_leave_the_trained_rounds_unchanged(puzzles, cls, kwargs):
    # catches: running more rounds at test time changing the schedule of the trained ones (the
    # accuracy-against-rounds curve would then not extend the trained model)
    torch.manual_seed(0)
    model = cls(**kwargs).double().eval()
    q = torch.from_numpy(puzzles[0])
    with torch.no_grad():
        base, longer = model(q), model(q, rounds=6)
    assert len(longer) == 6 and all(torch.allclose(a, b) for a, b in zip(base, longer[:3]))


def test_object_nmi():
    from metriplector.runners.sudoku import mutual_information
    from metriplector.sudoku_data import BOXES

    box = np.array([next(k for k, b in enumerate(BOXES) if i in b) for i in range(81)])
    assert mutual_information(box, box) == pytest.approx(1.0)
    assert mutual_information((box * 5 + 2) % 9, box) == pytest.approx(1.0)  # relabelled
    # rows are not boxes: a row fixes only the band of its box, half the information
    assert mutual_information(np.arange(81) // 9, box) == pytest.approx(0.5)


def test_sudoku_cli_train_resume_eval_generate(tmp_path, capsys):
    # catches: the smoke preset not running end to end, an eval that does not print one JSON line
    # of exact/cells/count (or validity without solutions), a run that does not resume
    from sp_dynamics.cli import main

    out, ck = tmp_path / "res", tmp_path / "ck"
    argv = ["sudoku", "train", "--preset", "smoke", "--out", str(out), "--checkpoints", str(ck), "--ship"]
    from metriplector.runners import sudoku as runner

    shipped = runner.SHIPPED_TEST
    runner.SHIPPED_TEST = tmp_path / "test.csv"  # --ship also writes the test set; keep the package's
    try:
        assert main(argv) == 0
    finally:
        runner.SHIPPED_TEST = shipped
    assert (out / "sudoku_smoke.md").exists() and (ck / "sudoku_metriplector.pt").exists()
    row = json.loads((out / "sudoku_smoke.json").read_text())[0]
    assert row["curve"][-1]["step"] == 4 and len(row["test_by_round"]) == 6
    assert 1 <= row["val_rounds"] <= 6 and row["test_val_rounds"] == row["test_by_round"][row["val_rounds"] - 1]
    # resume: drop the finished files, keep the training state -> no step is retrained
    run_dir = next((out / "runs").iterdir())
    for f in run_dir.glob("metriplector_seed0.json"):
        f.unlink()
    resumed = runner.train_one(runner.PRESETS["smoke"], "metriplector", 0, str(run_dir), str(out / "sudoku_data"))
    assert resumed["curve"] == row["curve"]
    capsys.readouterr()
    assert main(["sudoku", "generate", "--count", "3", "--seed", "4", "--givens", "30", "40",
                 "--out", str(tmp_path / "new.csv")]) == 0
    assert json.loads(capsys.readouterr().out)["count"] == 3
    assert main(["sudoku", "eval", "--checkpoint", str(ck / "sudoku_rrn.pt"), "--puzzles", str(tmp_path / "new.csv")]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["count"] == 3 and 0 <= line["exact"] <= 1 and 0 <= line["cells"] <= 1
    rrn = json.loads((out / "sudoku_smoke.json").read_text())[1]
    assert rrn["model"] == "rrn" and line["rounds"] == rrn["val_rounds"]   # eval thinks as long as validation chose
    # think: more test-time rounds, chosen on validation, shipped with the checkpoint for eval's default
    assert main(["sudoku", "think", "--preset", "smoke", "--out", str(out), "--max-rounds", "4", "--ship",
                 "--checkpoints", str(ck)]) == 0
    thought = json.loads((out / "sudoku_smoke_think.json").read_text())
    assert [len(r["test_by_round"]) for r in thought] == [4, 4] and (out / "sudoku_smoke_think.md").exists()
    capsys.readouterr()
    assert main(["sudoku", "eval", "--checkpoint", str(ck / "sudoku_rrn.pt"), "--puzzles", str(tmp_path / "new.csv")]) == 0
    assert json.loads(capsys.readouterr().out)["rounds"] == thought[1]["rounds"]
    assert main(["sudoku", "generate", "--count", "2", "--seed", "4", "--no-solutions",
                 "--out", str(tmp_path / "quiz.csv")]) == 0
    capsys.readouterr()
    assert main(["sudoku", "eval", "--checkpoint", str(ck / "sudoku_metriplector.pt"),
                 "--puzzles", str(tmp_path / "quiz.csv"), "--rounds", "5"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["count"] == 2 and "valid" in line and line["rounds"] == 5


@pytest.mark.parametrize("argv, message", [
    (["eval", "--puzzles", "BAD"], "expected 81 digits"),
    (["eval", "--puzzles", "MISSING"], "no such puzzle file"),
    (["eval", "--checkpoint", "CORRUPT", "--puzzles", "GOOD"], "corrupt or unreadable sudoku checkpoint"),
    (["generate", "--givens", "10", "20", "--out", "x.csv"], "--givens needs 17"),
    (["train", "--preset", "smoke", "--models", "transformer"], "unknown model 'transformer'"),
    (["think", "--preset", "smoke", "--seeds", "5"], "no trained metriplector_seed5.pt"),
    (["think", "--preset", "smoke", "--max-rounds", "0"], "--max-rounds must be >= 1"),
])
def test_sudoku_cli_mistakes_are_one_line(tmp_path, capsys, argv, message):
    from sp_dynamics.cli import main

    (tmp_path / "bad.csv").write_text("123,456\n")
    (tmp_path / "good.csv").write_text("0" * 81 + "\n")
    (tmp_path / "corrupt.pt").write_bytes(b"junk")
    names = {"BAD": "bad.csv", "MISSING": "missing.csv", "CORRUPT": "corrupt.pt", "GOOD": "good.csv"}
    argv = [str(tmp_path / names[a]) if a in names else a for a in argv]
    assert main(["sudoku", *argv, *([] if argv[0] not in ("train", "think") else ["--out", str(tmp_path)])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_checkpoints_from_before_the_readout_option_still_load(tmp_path):
    # catches: a checkpoint trained with the hidden-state decoder (saved before its kwargs named the
    # readout) being rebuilt with the full readout, whose decoder has a different input width
    from metriplector.runners.sudoku import CHECKPOINT_FORMAT, load_checkpoint

    kwargs = dict(width=8, fields=2, objects=3, object_fields=2, scan_width=2, rounds=2)
    old = SudokuMetriplector(**kwargs, readout="hidden")
    torch.save({"format": CHECKPOINT_FORMAT, "kind": "metriplector", "kwargs": kwargs, "model": old.state_dict(),
                "seed": 0, "test": {}}, tmp_path / "old.pt")
    model, _ = load_checkpoint(tmp_path / "old.pt")
    assert model.readout == "hidden"
    q = torch.zeros(1, 81, dtype=torch.long)
    assert torch.equal(model(q)[-1], old.eval()(q)[-1])
    assert SudokuMetriplector(**kwargs).readout == "full"
    with pytest.raises(ValueError, match="readout must be"):
        SudokuMetriplector(**kwargs, readout="stress")


def test_scores_count_exact_solves_cells_and_wrong_cells(puzzles):
    # catches: givens counted as solved cells, or the wrong-cell count of unsolved boards taken
    # over all boards (it would hide how far off the failures are)
    from metriplector.runners.sudoku import scores

    quizzes, solutions, _ = puzzles
    q, s = torch.from_numpy(quizzes), torch.from_numpy(solutions)
    pred = s.clone()
    blanks = (q[0] == 0).nonzero().squeeze(-1)[:3]
    pred[0, blanks] = s[0, blanks] % 9 + 1                         # three blank cells wrong on board 0
    got = scores(q, s, pred)["all"]
    assert got["count"] == len(q) and got["exact"] == pytest.approx((len(q) - 1) / len(q))
    assert got["cells"] == pytest.approx(1 - 3 / int((q == 0).sum()))
    assert got["wrong_per_unsolved"] == 3
    assert scores(q, s, s)["all"]["wrong_per_unsolved"] == 0
