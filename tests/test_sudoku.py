"""Sudoku data (generator, solver, checker, CSV) and the two Sudoku models (issue 14, in progress)."""

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
