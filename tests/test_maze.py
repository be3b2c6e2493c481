"""Maze generator, model and the shipped checkpoint."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from metriplector.maze import GOAL, OPEN, START, WALL, MazeSolver, f1_scores, generate_maze, maze_dataset, shortest_path

CHECKPOINT = Path(__file__).resolve().parents[1] / "metriplector" / "checkpoints" / "maze_seed0.pt"


@pytest.mark.parametrize("size", [5, 15, 39])
def test_dfs_maze_is_a_perfect_maze(size):
    # Catches: a generator producing loops or disconnected regions (the path would not be
    # unique, or not exist). A perfect maze on n^2 cells is a tree: n^2 cells + n^2 - 1 passages.
    n = (size - 1) // 2
    grid = generate_maze(size, np.random.default_rng(0))
    assert grid.shape == (size, size)
    assert (grid[0] == WALL).all() and (grid[-1] == WALL).all() and (grid[:, 0] == WALL).all()
    assert int((grid == OPEN).sum()) == n * n + (n * n - 1)
    full = shortest_path(grid, (1, 1), (size - 2, size - 2))  # every cell reachable
    assert full[1, 1] and full[size - 2, size - 2]


def test_dataset_seeded_and_targets_are_paths():
    cells, target = maze_dataset(15, 20, seed=7)
    again, _ = maze_dataset(15, 20, seed=7)
    other, _ = maze_dataset(15, 20, seed=8)
    assert torch.equal(cells, again) and not torch.equal(cells, other)
    for c, t in zip(cells, target):
        assert int((c == START).sum()) == 1 and int((c == GOAL).sum()) == 1
        assert t[c == START].item() == 1 and t[c == GOAL].item() == 1
        assert (t[c == WALL] == 0).all()
        # a simple path: start and goal have one path neighbour, every other path cell two
        tt = t.numpy() > 0.5
        pad = np.pad(tt, 1)
        nbrs = pad[:-2, 1:-1].astype(int) + pad[2:, 1:-1] + pad[1:-1, :-2] + pad[1:-1, 2:]
        ends = (c == START) | (c == GOAL)
        assert (nbrs[tt & ends.numpy()] == 1).all() and (nbrs[tt & ~ends.numpy()] == 2).all()


def test_bad_input():
    with pytest.raises(ValueError, match="odd"):
        generate_maze(14, np.random.default_rng(0))
    model = MazeSolver().double()
    with pytest.raises(ValueError, match="int64"):
        model(torch.zeros(1, 5, 5))
    with pytest.raises(ValueError, match="cell types"):
        model(torch.full((1, 5, 5), 9, dtype=torch.long))


def test_f1_scores():
    target = torch.tensor([[[1.0, 1.0, 0.0, 0.0]]])
    logits = torch.tensor([[[1.0, -1.0, 1.0, -1.0]]])
    s = f1_scores(logits, target)
    assert s["f1"] == pytest.approx(0.5) and s["exact"] == 0.0
    assert f1_scores(2 * target - 1, target) == {"f1": 1.0, "f1_mean_per_maze": 1.0, "exact": 1.0}


def test_training_learns_on_a_few_mazes():
    # The physics model learns quickly: a few dozen steps on 30 small mazes beat chance clearly.
    torch.manual_seed(0)
    cells, target = maze_dataset(11, 30, seed=0)
    model = MazeSolver(hidden=32).double()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    pos = float(target.mean())
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor((1 - pos) / pos, dtype=torch.float64))
    for _ in range(60):
        loss = loss_fn(model(cells), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert f1_scores(model(cells), target)["f1"] > 0.9


@pytest.mark.skipif(not CHECKPOINT.exists(), reason="shipped checkpoint missing")
def test_shipped_checkpoint_solves_fresh_mazes():
    # Regression test of the shipped artifact on mazes it never saw (seed 4242).
    from metriplector.runners.maze import evaluate, load

    model = load(CHECKPOINT)
    assert evaluate(model, 15, 20, seed=4242)["f1"] == 1.0
    assert evaluate(model, 21, 10, seed=4242)["f1"] >= 0.99


def test_corrupt_checkpoint_gives_clear_error(tmp_path):
    from metriplector.runners.maze import load

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt or unreadable maze checkpoint"):
        load(bad)


def test_charge_sources_are_unit_and_neutral():
    # catches: a "charges" source whose net charge or total current changes with the maze size
    # (then the damping and the readout scale are no longer size-free)
    torch.manual_seed(0)
    model = MazeSolver(sources="charges", damping_power=2.0).double()
    for size in (7, 21):
        cells, _ = maze_dataset(size, 2, seed=5)
        _, alpha, b, _ = model.operators(cells)
        # net charge zero and total |charge| <= 2 at every size (a unit + and a unit - distribution)
        assert torch.allclose(b.sum((-2, -1)), torch.zeros((), dtype=b.dtype), atol=1e-9)
        assert float(b.abs().sum((-2, -1)).max()) <= 2 + 1e-9
        assert float(alpha.max()) < 50 / (size * size) ** 2
    with pytest.raises(ValueError, match="sources must be"):
        MazeSolver(sources="other")


def test_checkpoints_without_the_size_free_keys_load_as_before(tmp_path):
    # catches: a checkpoint written before the size-free parametrisation being rebuilt with the
    # new defaults (charge sources, 1/N^2 damping) and silently scoring as a different model
    import dataclasses

    from metriplector.runners.maze import MazeConfig, build, load

    cfg = dataclasses.asdict(MazeConfig(hidden=8))
    for key in ("sources", "damping_power", "max_iter"):
        cfg.pop(key)
    old = MazeSolver(hidden=8).double()
    torch.save({"config": cfg, "model": old.state_dict()}, tmp_path / "old.pt")
    model = load(tmp_path / "old.pt")
    assert (model.sources, model.damping_power, model.max_iter) == ("free", 1.0, 5000)
    new = build(MazeConfig(hidden=8))
    assert (new.sources, new.damping_power, new.max_iter) == ("charges", 2.0, 0)


def test_scale_table_resumes_and_counts_every_maze(tmp_path, capsys):
    # catches: a size table that loses finished chunks on interruption, recounts them on resume,
    # or pools F1 wrongly across chunks
    from metriplector.runners.maze import main as maze_main

    out = tmp_path / "res"
    maze_main(["scale", "--sizes", "7", "--count", "3", "--chunk", "2", "--seed", "5", "--out", str(out)])
    state = json.loads((out / "maze_scale.json").read_text())
    assert [c["n"] for c in state["sizes"]["7"]] == [2, 1]
    maze_main(["scale", "--sizes", "7", "9", "--count", "3", "--chunk", "2", "--seed", "5", "--out", str(out)])
    state = json.loads((out / "maze_scale.json").read_text())
    assert [c["n"] for c in state["sizes"]["7"]] == [2, 1] and sum(c["n"] for c in state["sizes"]["9"]) == 3
    text = (out / "maze_scale.md").read_text()
    assert "| 7x7 | 49 | 3 |" in text and "| 9x9 | 81 | 3 |" in text
    from metriplector.runners.maze import evaluate, load

    direct = evaluate(load(CHECKPOINT), 9, 3, seed=5)
    assert f"| 9x9 | 81 | 3 | {direct['f1']:.4f} |" in text


def test_leak_augmentation_acts_in_training_only():
    # catches: the training-time wall-conductance augmentation leaking into evaluation (scores
    # would be random), or touching edges between two open cells
    torch.manual_seed(0)
    model = MazeSolver(sources="charges", damping_power=2.0, leak_augment=3.0).double()
    cells, _ = maze_dataset(9, 2, seed=1)
    model.eval()
    (r0, d0), *_ = model.operators(cells)
    (r1, d1), *_ = model.operators(cells)
    assert torch.equal(r0, r1) and torch.equal(d0, d1)
    model.train()
    (r2, d2), *_ = model.operators(cells)
    wall = cells == WALL
    open_right = (~wall[:, :, :-1] & ~wall[:, :, 1:])[:, None].expand_as(r0)
    assert torch.equal(r2[open_right], r0[open_right])
    ratio = (r2 / r0)[~open_right]
    assert float(ratio.min()) >= 1 - 1e-12 and float(ratio.max()) <= 1e3 * (1 + 1e-12) and float(ratio.max()) > 1
