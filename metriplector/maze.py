"""Maze pathfinding with one screened-Poisson solve (Metriplector, dissipative branch only).

Generator: seeded recursive-backtracker (DFS) mazes of ``n x n`` cells on a ``(2n + 1)^2``
grid, so any odd size >= 5 works (15 = 2*7 + 1, 39 = 2*19 + 1). Cells carry anonymous integer
types (0 wall, 1 open, 2 start, 3 goal) that the model only sees through an embedding; the
target marks the cells of the (unique) shortest path from start to goal.

Model (:class:`MazeSolver`): per-cell embeddings give edge conductances ``w_ij >= 0`` (a
symmetric function of both cells, softplus), per-node damping ``alpha_i = softplus(.) / N``
(scaled by the number of nodes N so the screening length grows with the maze; paper Sec. 4)
and sources ``b_i``; one CG solve gives C potential fields; the readout uses, per cell, the
current ``sum_j w_ij |phi_i - phi_j|`` and the stress-energy terms
``sum_j sqrt(w^a_ij w^b_ij) (phi^a_i - phi^a_j)(phi^b_i - phi^b_j)`` of every field pair, each divided by its
maximum over the maze (scale-free across maze sizes), then a small MLP. The readout never sees the
cell types: with them it can settle in the local optimum "every open cell is on the path".
Physical picture: with a source at the start and a sink at the goal, current flows along the
solution path only (dead ends carry just the small screening leak).
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch
from torch import Tensor, nn

from sp_dynamics.nn import MLP
from sp_dynamics.serialization import serializable

from .graphs import GridGraph
from .poisson import screened_poisson_solve

__all__ = ["WALL", "OPEN", "START", "GOAL", "generate_maze", "maze_dataset", "shortest_path", "MazeSolver", "f1_scores",
           "path_counts"]

WALL, OPEN, START, GOAL = 0, 1, 2, 3
_STEPS = ((0, 1), (1, 0), (0, -1), (-1, 0))


def generate_maze(size: int, rng: np.random.Generator) -> np.ndarray:
    """A perfect maze (a spanning tree of cells) as a (size, size) array of WALL/OPEN."""
    if size < 5 or size % 2 == 0:
        raise ValueError(f"maze size must be odd and >= 5 (2 n + 1 for n cells), got {size}")
    n = (size - 1) // 2
    grid = np.zeros((size, size), dtype=np.int64)
    visited = np.zeros((n, n), dtype=bool)
    start = (int(rng.integers(n)), int(rng.integers(n)))
    stack = [start]
    visited[start] = True
    grid[2 * start[0] + 1, 2 * start[1] + 1] = OPEN
    while stack:
        r, c = stack[-1]
        options = [(r + dr, c + dc) for dr, dc in _STEPS if 0 <= r + dr < n and 0 <= c + dc < n and not visited[r + dr, c + dc]]
        if not options:
            stack.pop()
            continue
        nr, nc = options[int(rng.integers(len(options)))]
        visited[nr, nc] = True
        grid[2 * nr + 1, 2 * nc + 1] = OPEN
        grid[r + nr + 1, c + nc + 1] = OPEN  # the wall between the two cells
        stack.append((nr, nc))
    return grid


def shortest_path(grid: np.ndarray, start: tuple[int, int], goal: tuple[int, int]) -> np.ndarray:
    """Boolean mask of the cells on the shortest open path from start to goal (BFS)."""
    H, W = grid.shape
    prev = {start: None}
    queue = deque([start])
    while queue:
        cur = queue.popleft()
        if cur == goal:
            break
        for dr, dc in _STEPS:
            nxt = (cur[0] + dr, cur[1] + dc)
            if 0 <= nxt[0] < H and 0 <= nxt[1] < W and grid[nxt] != WALL and nxt not in prev:
                prev[nxt] = cur
                queue.append(nxt)
    if goal not in prev:
        raise ValueError("goal is not reachable from start")
    mask = np.zeros_like(grid, dtype=bool)
    node = goal
    while node is not None:
        mask[node] = True
        node = prev[node]
    return mask


def maze_dataset(size: int, count: int, seed: int) -> tuple[Tensor, Tensor]:
    """``count`` mazes of one size: cell types (count, size, size) int64 and path targets
    (count, size, size) float. Start and goal are two distinct random cells."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    rng = np.random.default_rng(seed)
    cells, targets = [], []
    n = (size - 1) // 2
    for _ in range(count):
        grid = generate_maze(size, rng)
        a, b = rng.choice(n * n, size=2, replace=False)
        start = (2 * (a // n) + 1, 2 * (a % n) + 1)
        goal = (2 * (b // n) + 1, 2 * (b % n) + 1)
        targets.append(shortest_path(grid, start, goal))
        grid = grid.copy()
        grid[start], grid[goal] = START, GOAL
        cells.append(grid)
    return torch.from_numpy(np.stack(cells)), torch.from_numpy(np.stack(targets)).double()


def _mlp(i: int, h: int, o: int) -> MLP:
    return MLP(i, o, hidden=h, depth=1, act="silu")


@serializable
class MazeSolver(nn.Module):
    """Per-cell path logits from one screened-Poisson solve on the 4-connected grid.

    Args:
        n_types: number of anonymous cell types. embed, hidden: widths. fields: C potentials.
        rtol, max_iter: CG settings (float64); ``max_iter=0`` means ``2 N + 1000`` for N nodes (CG
            needs at least as many iterations as the path is long, which grows with the maze).
        damping_power: damping ``alpha_i = softplus(.) / N^p``; p = 1 is the paper's law.
        sources: ``"free"`` (an unconstrained source per cell, as in the first checkpoints) or
            ``"charges"``: per field a unit positive and a unit negative charge distribution,
            ``b = relu(s+) / sum relu(s+) - relu(s-) / sum relu(s-)``. The net source is zero and the
            total |charge| is at most 2 at every maze size, and a cell type with ``s <= 0`` carries exactly no
            source, so the background cannot grow with the number of open cells. With
            ``damping_power=2`` and ``leak_augment=3`` this is the shipped, size-free model
            (``metriplector.runners.maze.MazeConfig``).
        leak_augment: in training mode only, the conductances of edges that touch a wall cell are
            multiplied by ``10**u`` with ``u`` uniform in ``[0, leak_augment]`` per maze. Current
            that leaks through walls grows with the maze; on small training mazes it costs
            nothing, so without this the model has no reason to make wall conductances
            negligible rather than merely small. 0 (the default) turns it off.

    After a forward pass ``last_info`` holds the CG :class:`SolveInfo` (iterations, residual).

    Shapes: cell types (B, H, W) int64 -> logits (B, H, W).
    """

    def __init__(self, n_types: int = 4, embed: int = 16, hidden: int = 64, fields: int = 4,
                 rtol: float = 1e-8, max_iter: int = 5000, damping_power: float = 1.0,
                 sources: str = "free", leak_augment: float = 0.0):
        super().__init__()
        self.fields, self.rtol, self.max_iter, self.leak_augment = fields, rtol, max_iter, leak_augment
        if sources not in ("free", "charges"):
            raise ValueError(f"sources must be 'free' or 'charges', got {sources!r}")
        self.damping_power, self.sources = damping_power, sources
        self.last_info = None
        self.embed = nn.Embedding(n_types, embed)
        self.edge_net = _mlp(2 * embed, hidden, fields)        # symmetric in the two cells
        self.node_net = _mlp(embed, hidden, 2 * fields)        # source and damping
        if sources == "charges":
            self.charge_net = _mlp(embed, hidden, fields)
        n_pair = fields * (fields + 1) // 2
        # The readout sees physics features only: with the cell types available it can settle in
        # the local optimum "every open cell is on the path" and never learn the sources.
        self.readout = _mlp(fields + n_pair, hidden, 1)

    def operators(self, cells: Tensor):
        """Conductances (right, down), damping alpha and sources b, each (B, C, ...)."""
        if cells.ndim != 3 or cells.dtype != torch.long:
            raise ValueError(f"cells must be an int64 tensor of shape (B, H, W), got {cells.dtype} {tuple(cells.shape)}")
        if int(cells.min()) < 0 or int(cells.max()) >= self.embed.num_embeddings:
            raise ValueError(f"cell types must lie in [0, {self.embed.num_embeddings})")
        e = self.embed(cells)                                              # (B, H, W, E)
        pairs = [(e[:, :, :-1], e[:, :, 1:]), (e[:, :-1, :], e[:, 1:, :])]
        weights = tuple(
            nn.functional.softplus(self.edge_net(torch.cat([a + b, a * b], -1))).permute(0, 3, 1, 2) for a, b in pairs
        )
        if self.training and self.leak_augment > 0:
            wall = cells == WALL
            touching = ((wall[:, :, :-1] | wall[:, :, 1:]), (wall[:, :-1, :] | wall[:, 1:, :]))
            u = torch.rand(cells.shape[0], 1, 1, 1, dtype=weights[0].dtype, device=cells.device)
            factor = 10 ** (self.leak_augment * u)
            weights = tuple(torch.where(t[:, None], w * factor, w) for w, t in zip(weights, touching))
        node = self.node_net(e).permute(0, 3, 1, 2)                        # (B, 2C, H, W)
        if self.sources == "charges":
            node = torch.cat([node, self.charge_net(e).permute(0, 3, 1, 2)], 1)
        n_nodes = cells.shape[1] * cells.shape[2]
        alpha = nn.functional.softplus(node[:, self.fields : 2 * self.fields]) / n_nodes**self.damping_power + 1e-12
        b = node[:, : self.fields]
        if self.sources == "charges":
            pos = nn.functional.relu(node[:, : self.fields])
            neg = nn.functional.relu(node[:, 2 * self.fields :])
            b = pos / (pos.sum((-2, -1), keepdim=True) + 1e-12) - neg / (neg.sum((-2, -1), keepdim=True) + 1e-12)
        return weights, alpha, b, e

    def features(self, cells: Tensor):
        weights, alpha, b, e = self.operators(cells)
        graph = GridGraph(cells.shape[1], cells.shape[2])
        max_iter = self.max_iter if self.max_iter else 2 * graph.n_nodes + 1000
        phi, self.last_info = screened_poisson_solve(graph, weights, alpha, b, rtol=self.rtol, max_iter=max_iter, return_info=True)
        diffs = graph.edge_differences(phi)                               # per edge family
        current = graph.degree(tuple(w * d.abs() for w, d in zip(weights, diffs)), phi) / 2
        C = self.fields
        stress = []
        for a in range(C):
            for c in range(a, C):
                # field a's own conductance on the diagonal, the geometric mean across fields
                flux = tuple(
                    (w[:, a : a + 1] * w[:, c : c + 1]).sqrt() * d[:, a : a + 1] * d[:, c : c + 1]
                    for w, d in zip(weights, diffs)
                )
                stress.append(graph.degree(flux, phi[:, :1]) / 2)
        feats = torch.cat([current.abs(), torch.cat(stress, 1).abs()], 1)  # (B, F, H, W)
        feats = feats / (feats.amax(dim=(-2, -1), keepdim=True) + 1e-30)  # scale-free
        return feats, phi

    def forward(self, cells: Tensor) -> Tensor:
        feats, _ = self.features(cells)
        return self.readout(feats.permute(0, 2, 3, 1)).squeeze(-1)


def path_counts(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per maze: true positives, false positives and false negatives over path cells (float64),
    and whether the maze is solved exactly (bool)."""
    pred = logits > 0
    true = target > 0.5
    tp = (pred & true).sum((-2, -1)).double()
    fp = (pred & ~true).sum((-2, -1)).double()
    fn = (~pred & true).sum((-2, -1)).double()
    return tp, fp, fn, (pred == true).all(-1).all(-1)


def f1_scores(logits: Tensor, target: Tensor) -> dict:
    """Pooled F1 over path cells, mean per-maze F1, and the fraction of mazes solved exactly."""
    tp, fp, fn, solved = path_counts(logits, target)
    pooled = float(2 * tp.sum() / (2 * tp.sum() + fp.sum() + fn.sum()))
    per_maze = 2 * tp / (2 * tp + fp + fn).clamp_min(1)
    return {"f1": pooled, "f1_mean_per_maze": float(per_maze.mean()), "exact": float(solved.double().mean())}
