"""Sudoku puzzles: a checker, a solution counter, a seeded generator and the CSV format.

Grids are (81,) or (N, 81) int64 arrays in row-major order, digits 1..9 and 0 for a blank.

* :func:`solve` counts solutions up to a limit by depth-first search over bitmasks with the
  minimum-remaining-values rule, and reports the search effort (the number of guesses: nodes
  where a cell had two or more candidates). Effort 0 means the puzzle falls to naked singles.
* :func:`generate` draws a random full grid, then removes givens in random order while the
  solution stays unique, stopping at a target number of givens or when no given can go
  (a minimal puzzle). The uniqueness check is exact, so every puzzle has exactly one solution.
* CSV: one puzzle per line, ``quiz,solution`` (81 digits each, ``0`` = blank; ``.`` is read
  as a blank too), an optional header line, and the solution column optional.

17 is the fewest givens a uniquely solvable puzzle can have (McGuire, Tugemann and Civario 2014).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sp_dynamics.io import atomic_write_text

__all__ = ["check_solution", "is_valid_grid", "solve", "generate", "generate_set", "read_csv", "write_csv", "UNITS"]

ROWS = [[9 * r + c for c in range(9)] for r in range(9)]
COLS = [[9 * r + c for r in range(9)] for c in range(9)]
BOXES = [[9 * (3 * br + i) + 3 * bc + j for i in range(3) for j in range(3)] for br in range(3) for bc in range(3)]
UNITS = ROWS + COLS + BOXES
PEERS = [sorted({p for u in UNITS if i in u for p in u} - {i}) for i in range(81)]
_FULL = 0x3FE  # bits 1..9


def is_valid_grid(grid) -> bool:
    """Every row, column and box of a full grid holds 1..9 once."""
    g = np.asarray(grid).reshape(81)
    if g.min() < 1 or g.max() > 9:
        return False
    return all(len(set(g[u].tolist())) == 9 for u in UNITS)


def check_solution(quiz, grid) -> bool:
    """``grid`` is a valid full grid that keeps every given of ``quiz``."""
    q, g = np.asarray(quiz).reshape(81), np.asarray(grid).reshape(81)
    return is_valid_grid(g) and bool(np.all((q == 0) | (q == g)))


def solve(quiz, limit: int = 2, rng: np.random.Generator | None = None) -> tuple[list[np.ndarray], int]:
    """Up to ``limit`` solutions of ``quiz`` and the number of guesses the search made.

    ``rng`` shuffles the candidate order (used to draw random full grids)."""
    q = np.asarray(quiz, dtype=np.int64).reshape(81)
    grid = [int(v) for v in q]
    cand = [_FULL] * 81
    for i, v in enumerate(grid):
        if v:
            bit = 1 << v
            if not cand[i] & bit:
                return [], 0  # an earlier peer given holds the same digit
            cand[i] = bit
            for p in PEERS[i]:
                cand[p] &= ~bit
    solutions: list[np.ndarray] = []
    guesses = 0

    def search(grid, cand):
        nonlocal guesses
        # propagate naked singles, then branch on the cell with the fewest candidates
        while True:
            best, best_n, progress = -1, 10, False
            for i in range(81):
                if grid[i]:
                    continue
                c = cand[i]
                if c == 0:
                    return
                n = bin(c).count("1")
                if n == 1:
                    v = c.bit_length() - 1
                    grid[i] = v
                    for p in PEERS[i]:
                        if cand[p] & c:
                            if grid[p] == v:
                                return
                            cand[p] &= ~c
                    progress = True
                elif n < best_n:
                    best, best_n = i, n
            if not progress:
                break
        if best < 0:
            solutions.append(np.array(grid, dtype=np.int64))
            return
        digits = [v for v in range(1, 10) if cand[best] >> v & 1]
        if rng is not None:
            rng.shuffle(digits)
        guesses += 1
        for v in digits:
            g2, c2 = grid[:], cand[:]
            g2[best], c2[best] = v, 1 << v
            bit = 1 << v
            ok = True
            for p in PEERS[best]:
                if g2[p] == v:
                    ok = False
                    break
                c2[p] &= ~bit
            if ok:
                search(g2, c2)
            if len(solutions) >= limit:
                return

    search(grid, cand)
    return solutions, guesses


def generate(rng: np.random.Generator, target_givens: int = 17) -> tuple[np.ndarray, np.ndarray]:
    """A puzzle with a unique solution and (at least) ``target_givens`` givens: (quiz, solution)."""
    if not 17 <= target_givens <= 81:
        raise ValueError(f"target_givens must be in 17..81, got {target_givens}")
    (solution,), _ = solve(np.zeros(81, dtype=np.int64), limit=1, rng=rng)
    quiz = solution.copy()
    for i in rng.permutation(81):
        if int((quiz > 0).sum()) <= target_givens:
            break
        keep = quiz[i]
        quiz[i] = 0
        if len(solve(quiz, limit=2)[0]) != 1:
            quiz[i] = keep
    return quiz, solution


def _generate_chunk(args) -> list[tuple[np.ndarray, np.ndarray, int]]:
    seed, count, low, high = args
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        quiz, sol = generate(rng, int(rng.integers(low, high + 1)))
        out.append((quiz, sol, solve(quiz, limit=2)[1]))
    return out


def generate_set(count: int, seed: int, givens: tuple[int, int] = (17, 45), jobs: int = 1,
                 chunk: int = 50) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``count`` puzzles from ``seed``: quizzes, solutions (count, 81) and guesses (count,).

    The target number of givens is uniform in ``givens``; puzzles that become minimal earlier
    keep more givens than the target's floor, never fewer. Chunks of ``chunk`` puzzles get
    their own seeds (``seed * 100003 + k``), so the set does not depend on ``jobs``."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    tasks = [(seed * 100003 + k, min(chunk, count - k * chunk), *givens) for k in range((count + chunk - 1) // chunk)]
    if jobs > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(jobs) as pool:
            parts = list(pool.map(_generate_chunk, tasks))
    else:
        parts = [_generate_chunk(t) for t in tasks]
    rows = [r for p in parts for r in p]
    return (np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows]), np.array([r[2] for r in rows]))


def _digits(text: str, where: str) -> np.ndarray:
    text = text.strip().replace(".", "0")
    if len(text) != 81 or not text.isdigit():
        raise ValueError(f"{where}: expected 81 digits (0 or . for a blank), got {len(text)} characters {text[:20]!r}...")
    return np.frombuffer(text.encode(), dtype=np.uint8).astype(np.int64) - 48


def read_csv(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """Quizzes (N, 81) and solutions (N, 81) or None when the file has no solution column.

    Raises ValueError naming the line for a field that is not 81 digits, a solution that is not
    a valid grid or contradicts its quiz's givens, or a file that mixes lines with and without
    solutions."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such puzzle file: {path}")
    quizzes, solutions = [], []
    lines = path.read_text().splitlines()
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split(",")]
        if n == 1 and not fields[0].replace(".", "0").isdigit():
            continue  # header
        if len(fields) > 2:
            raise ValueError(f"{path}:{n}: expected 'quiz' or 'quiz,solution', got {len(fields)} fields")
        quiz = _digits(fields[0], f"{path}:{n} quiz")
        quizzes.append(quiz)
        if len(fields) == 2 and fields[1]:
            sol = _digits(fields[1], f"{path}:{n} solution")
            if not check_solution(quiz, sol):
                raise ValueError(f"{path}:{n}: the solution is not a valid Sudoku grid consistent with the quiz's givens")
            solutions.append(sol)
    if not quizzes:
        raise ValueError(f"{path}: no puzzles found")
    if solutions and len(solutions) != len(quizzes):
        raise ValueError(f"{path}: {len(solutions)} of {len(quizzes)} lines have a solution; give all or none")
    return np.stack(quizzes), (np.stack(solutions) if solutions else None)


def write_csv(path: str | os.PathLike, quizzes: np.ndarray, solutions: np.ndarray | None = None) -> Path:
    """Write ``quiz,solution`` lines with a header (atomically)."""
    q = np.asarray(quizzes).reshape(-1, 81)
    rows = ["quiz,solution" if solutions is not None else "quiz"]
    s = None if solutions is None else np.asarray(solutions).reshape(-1, 81)
    for k in range(len(q)):
        line = "".join(map(str, q[k].tolist()))
        if s is not None:
            line += "," + "".join(map(str, s[k].tolist()))
        rows.append(line)
    return atomic_write_text("\n".join(rows) + "\n", path)
