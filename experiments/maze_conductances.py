"""What the shipped maze checkpoints learned: per field, the mean conductance of open-open,
open-wall and wall-wall edges, and the damping times N^2, on one 15x15 maze (seed 5).

    python experiments/maze_conductances.py [CHECKPOINT ...]    # default: maze_seed{0,1,2}.pt

Current that leaks through the walls grows with the maze, so the ratio open-wall / open-open on
the fields the readout relies on says how far a model can generalise in size (PROTOCOL.md).
"""

import sys
from pathlib import Path

import torch

from metriplector.maze import WALL, maze_dataset
from metriplector.runners.maze import CHECKPOINTS, load

paths = sys.argv[1:] or [str(CHECKPOINTS / f"maze_seed{s}.pt") for s in range(3)]
cells, _ = maze_dataset(15, 1, 5)
c = cells[0]
a, b = c[:, :-1], c[:, 1:]  # the right-neighbour edges
kinds = {"open-open": (a != WALL) & (b != WALL), "open-wall": (a != WALL) ^ (b != WALL),
         "wall-wall": (a == WALL) & (b == WALL)}
print("checkpoint | field | " + " | ".join(kinds) + " | open-wall / open-open | alpha N^2 (open)")
for path in paths:
    model = load(Path(path))
    with torch.no_grad():
        (right, _), alpha, _, _ = model.operators(cells)
    for f in range(model.fields):
        w = {k: float(right[0, f][m].mean()) for k, m in kinds.items()}
        damp = float((alpha[0, f][c != WALL] * c.numel() ** 2).mean())
        print(f"{Path(path).name} | {f} | " + " | ".join(f"{v:.3g}" for v in w.values())
              + f" | {w['open-wall'] / w['open-open']:.2g} | {damp:.3g}")
