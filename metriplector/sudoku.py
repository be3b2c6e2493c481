"""Sudoku by iterated screened-Poisson equilibria (Metriplector, dissipative branch), and a
recurrent relational network baseline.

:class:`SudokuMetriplector` (after Oprisa & Toth 2026, Secs. 3.2-3.3) sees the 81 cells on a
plain 8-connected 9x9 lattice: no row, column or box edges. Digits enter as anonymous
embeddings (token 0 = blank). Each of ``rounds`` recurrent rounds (weights shared):

1. a cell encoder reads the hidden state, the givens, the previous round's predictions
   (softmax at an annealed temperature: ``tau`` falls linearly from ``tau_start`` to
   ``tau_end`` over the rounds), a fixed position code and the round fraction;
2. directional scans: sums of a projection of the encoding along the 8 rays (4 cardinal,
   4 diagonal) leaving each cell, so a cell sees its row and column without long-range edges;
3. an object layer (a two-level V-cycle): a soft assignment of the 81 cells to K objects
   (softmax at temperature ``assign_tau``), pooled object features, a screened Poisson solve
   on the complete object graph with learned conductances, and prolongation back;
4. ``fields`` screened Poisson equations ``(L_w + diag(alpha)) phi = b`` on the lattice,
   solved by the library's CG (:func:`screened_poisson_solve`, implicit gradients), with
   conductances from the two cells' encodings and damping and sources from an MLP that also
   reads the scans and the object features;
5. the gradient-energy ("dissipation") readout ``D_i = 1/2 sum_j w_ij (phi_i - phi_j)^2`` per
   field (the diagonal of the stress-energy tensor, paper Sec. 5), then a residual update of
   the hidden state and a decoder to 9 digit logits. The decoder reads the full feature set as
   in the paper (hidden state, fields, dissipation, scans, object features, position);
   ``readout="hidden"`` reads the hidden state, fields and dissipation only (the checkpoints
   shipped before 2026-12-05 were trained so).

The model returns the logits of every round (deep supervision trains all of them).

Departures from the paper, and why: the scans and objects of a round feed that round's
damping and sources (the paper feeds the previous round's objects; this needs no extra state);
the coarse solve uses a complete object graph with conductances from pooled features (the
paper does not give its object-graph edges); the training presets (``sp-dynamics sudoku``)
augment with Sudoku symmetries and are smaller than the paper's on a CPU (see
``metriplector.runners.sudoku``).

:class:`RecurrentRelationalNet` (Palm et al. 2018) message-passes on the true constraint graph
(each cell to its 20 row, column and box peers) with an LSTM cell per node: it is the baseline
that is given the structure the Metriplector model must discover.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from sp_dynamics.nn import MLP
from sp_dynamics.serialization import serializable

from .graphs import EdgeGraph, GridGraph
from .poisson import screened_poisson_solve
from .sudoku_data import PEERS

__all__ = ["SudokuMetriplector", "RecurrentRelationalNet", "position_code", "check_quizzes", "sudoku_loss",
           "fill_givens"]

# unit steps of the 8 scan directions (row, column)
_RAYS = ((0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (-1, -1), (1, -1), (-1, 1))


def check_quizzes(quizzes: Tensor) -> None:
    if not isinstance(quizzes, Tensor) or quizzes.dtype != torch.long or quizzes.ndim != 2 or quizzes.shape[1] != 81:
        shape = tuple(quizzes.shape) if isinstance(quizzes, Tensor) else type(quizzes).__name__
        raise ValueError(f"quizzes must be an int64 tensor of shape (B, 81), got {shape}")
    if int(quizzes.min()) < 0 or int(quizzes.max()) > 9:
        raise ValueError("quiz digits must lie in 0..9 (0 = blank)")


def position_code(freqs: int = 2) -> Tensor:
    """(81, 4 freqs) sin/cos codes of the row and column coordinates: where a cell is, not which
    cells share a constraint."""
    r, c = torch.meshgrid(torch.arange(9.0), torch.arange(9.0), indexing="ij")
    parts = []
    for k in range(1, freqs + 1):
        for x in (r, c):
            parts += [torch.sin(math.pi * k * x / 9), torch.cos(math.pi * k * x / 9)]
    return torch.stack(parts, -1).reshape(81, -1)


def directional_scans(x: Tensor) -> Tensor:
    """(B, 81, F) -> (B, 81, 8 F): per cell, the sum of ``x`` over the cells strictly beyond it
    along each of the 8 rays."""
    B, _, F = x.shape
    grid = x.reshape(B, 9, 9, F)
    out = []
    for dr, dc in _RAYS:
        acc = torch.zeros_like(grid)
        for k in range(1, 9):
            sr, sc = dr * k, dc * k
            # acc[i, j] += grid[i + sr, j + sc] where inside the board
            rs, rd = (slice(sr, 9), slice(0, 9 - sr)) if sr >= 0 else (slice(0, 9 + sr), slice(-sr, 9))
            cs, cd = (slice(sc, 9), slice(0, 9 - sc)) if sc >= 0 else (slice(0, 9 + sc), slice(-sc, 9))
            acc[:, rd, cd] = acc[:, rd, cd] + grid[:, rs, cs]
        out.append(acc)
    return torch.cat(out, -1).reshape(B, 81, 8 * F)


def fill_givens(quizzes: Tensor, logits: Tensor) -> Tensor:
    """Predicted grids (B, 81): the givens where given, the argmax digit elsewhere."""
    return torch.where(quizzes > 0, quizzes, logits.argmax(-1) + 1)


def sudoku_loss(quizzes: Tensor, solutions: Tensor, round_logits: list[Tensor]) -> Tensor:
    """Deep supervision: cross-entropy on the blank cells, averaged over rounds."""
    blank = quizzes == 0
    target = solutions[blank] - 1
    return torch.stack([nn.functional.cross_entropy(lg[blank], target) for lg in round_logits]).mean()


@serializable
class SudokuMetriplector(nn.Module):
    """Recurrent multigrid Metriplector on the 8-connected lattice (see the module docstring).

    Shapes: quizzes (B, 81) int64 (0 = blank) -> list of ``rounds`` logits (B, 81, 9).
    """

    def __init__(self, width: int = 64, fields: int = 8, objects: int = 16, object_fields: int = 4,
                 scan_width: int = 8, rounds: int = 16, tau_start: float = 2.0, tau_end: float = 0.5,
                 assign_tau: float = 1.0, rtol: float = 1e-4, max_iter: int = 200, readout: str = "full"):
        super().__init__()
        if readout not in ("hidden", "full"):
            raise ValueError(f"readout must be 'hidden' or 'full', got {readout!r}")
        self.readout = readout
        self.width, self.fields, self.objects, self.object_fields = width, fields, objects, object_fields
        self.rounds, self.tau_start, self.tau_end, self.assign_tau = rounds, tau_start, tau_end, assign_tau
        self.rtol, self.max_iter = rtol, max_iter
        self.register_buffer("pos", position_code(), persistent=False)
        d, P = width, self.pos.shape[1]
        self.digit = nn.Embedding(10, d)
        self.encoder = MLP(2 * d + 9 + P + 1, d, hidden=d, depth=1, act="silu")
        self.scan_in = nn.Linear(d, scan_width)
        self.scan_out = nn.Linear(8 * scan_width, d)
        self.assign = MLP(d + P, objects, hidden=d, depth=1, act="silu")
        self.obj_edge = nn.Linear(d, object_fields)   # bilinear conductances (a_k . a_l)
        self.obj_node = nn.Linear(d, 2 * object_fields)
        self.edge = MLP(2 * d, fields, hidden=d, depth=1, act="silu")
        self.node = MLP(3 * d + object_fields, 2 * fields, hidden=d, depth=1, act="silu")
        self.update = MLP(3 * d + object_fields + 2 * fields, d, hidden=2 * d, depth=1, act="silu")
        self.norm = nn.LayerNorm(d)
        extra = 2 * d + object_fields + P if readout == "full" else 0   # scans, objects, position
        self.decoder = MLP(d + 2 * fields + extra, 9, hidden=d, depth=1, act="silu")
        self.lattice = GridGraph(9, 9, connectivity=8)
        pairs = torch.combinations(torch.arange(objects), 2)
        self.object_graph = EdgeGraph(pairs, objects)
        self.register_buffer("pairs", pairs, persistent=False)
        self.last_assignment: Tensor | None = None

    def _edges(self, u: Tensor) -> tuple[Tensor, ...]:
        """Conductances of the 4 edge families of the 8-connected lattice, (B, C, ...) each."""
        g = u.reshape(u.shape[0], 9, 9, -1)
        pairs = [(g[:, :, :-1], g[:, :, 1:]), (g[:, :-1, :], g[:, 1:, :]),
                 (g[:, :-1, :-1], g[:, 1:, 1:]), (g[:, :-1, 1:], g[:, 1:, :-1])]
        return tuple(nn.functional.softplus(self.edge(torch.cat([a + b, a * b], -1))).permute(0, 3, 1, 2)
                     for a, b in pairs)

    def _objects(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """Soft assignment (B, 81, K) and prolongated object features (B, 81, d + object_fields)."""
        B = u.shape[0]
        a = torch.softmax(self.assign(torch.cat([u, self.pos.to(u.dtype).expand(B, -1, -1)], -1)) / self.assign_tau, -1)
        pooled = a.transpose(1, 2) @ u / (a.sum(1).unsqueeze(-1) + 1e-6)          # (B, K, d)
        e = self.obj_edge(pooled)                                                 # (B, K, Co)
        i, j = self.pairs[:, 0], self.pairs[:, 1]
        w = nn.functional.softplus(e[:, i] * e[:, j]).transpose(1, 2)              # (B, Co, E)
        node = self.obj_node(pooled).transpose(1, 2)                              # (B, 2Co, K)
        alpha = nn.functional.softplus(node[:, self.object_fields :]) + 0.05
        psi = screened_poisson_solve(self.object_graph, w, alpha, node[:, : self.object_fields],
                                     rtol=self.rtol, max_iter=self.max_iter)      # (B, Co, K)
        coarse = torch.cat([pooled, psi.transpose(1, 2)], -1)                     # (B, K, d + Co)
        return a, a @ coarse

    def forward(self, quizzes: Tensor, rounds: int | None = None) -> list[Tensor]:
        """Logits of every round. ``rounds`` (default: as built) may exceed the trained count:
        the schedules (round fraction, feedback temperature) then hold their final values."""
        check_quizzes(quizzes)
        B, R = quizzes.shape[0], self.rounds
        x = self.digit(quizzes)                                                   # (B, 81, d)
        h = torch.zeros_like(x)
        prob = torch.zeros(B, 81, 9, dtype=x.dtype, device=x.device)
        pos = self.pos.to(x.dtype).expand(B, -1, -1)
        out = []
        for t in range(rounds or R):
            progress = min(t, R - 1) / max(R - 1, 1)
            frac = torch.full((B, 81, 1), progress, dtype=x.dtype, device=x.device)
            u = self.encoder(torch.cat([h, x, prob, pos, frac], -1))
            scans = self.scan_out(directional_scans(self.scan_in(u)))
            assign, objs = self._objects(u)
            weights = self._edges(u)
            node = self.node(torch.cat([u, scans, objs], -1)).transpose(1, 2).reshape(B, 2 * self.fields, 9, 9)
            alpha = nn.functional.softplus(node[:, self.fields :]) + 0.05
            phi = screened_poisson_solve(self.lattice, weights, alpha, node[:, : self.fields],
                                         rtol=self.rtol, max_iter=self.max_iter)  # (B, C, 9, 9)
            flux = tuple(w * d.square() for w, d in zip(weights, self.lattice.edge_differences(phi)))
            dissipation = self.lattice.degree(flux, phi) / 2                       # (B, C, 9, 9)
            phys = torch.cat([phi, dissipation], 1).reshape(B, 2 * self.fields, 81).transpose(1, 2)
            h = self.norm(h + self.update(torch.cat([u, scans, objs, phys], -1)))
            feats = [h, phys] + ([scans, objs, pos] if self.readout == "full" else [])
            logits = self.decoder(torch.cat(feats, -1))
            out.append(logits)
            tau = self.tau_start + (self.tau_end - self.tau_start) * progress
            prob = torch.softmax(logits / tau, -1)
        self.last_assignment = assign.detach()
        return out


def constraint_edges() -> Tensor:
    """(1620, 2) directed edges: every cell to each of its 20 row, column and box peers."""
    return torch.tensor([(i, p) for i in range(81) for p in PEERS[i]], dtype=torch.long)


@serializable
class RecurrentRelationalNet(nn.Module):
    """Palm et al. (2018): message passing on the constraint graph with an LSTM node update.

    Shapes: quizzes (B, 81) int64 -> list of ``rounds`` logits (B, 81, 9).
    """

    def __init__(self, width: int = 64, rounds: int = 16):
        super().__init__()
        self.width, self.rounds = width, rounds
        d = width
        self.digit = nn.Embedding(10, d)
        self.row = nn.Embedding(9, d)
        self.col = nn.Embedding(9, d)
        self.input = MLP(3 * d, d, hidden=d, depth=1, act="gelu")
        # the message MLP(h_src, h_dst) with one hidden layer, split so that the first layer runs per
        # node (before the gather) and the second after the sum over peers (it is linear, so the sum
        # of 20 messages is msg_out of the summed hidden activations plus 20 biases): the same
        # function class, 20x fewer matmul rows
        self.msg_src = nn.Linear(d, d)
        self.msg_dst = nn.Linear(d, d, bias=False)
        self.msg_out = nn.Linear(d, d)
        self.cell = nn.LSTMCell(2 * d, d)
        self.decoder = nn.Linear(d, 9)
        self.register_buffer("edges", constraint_edges(), persistent=False)
        self.degree = len(PEERS[0])  # 20 peers per cell
        idx = torch.arange(81)
        self.register_buffer("rows", idx // 9, persistent=False)
        self.register_buffer("cols", idx % 9, persistent=False)

    def forward(self, quizzes: Tensor, rounds: int | None = None) -> list[Tensor]:
        """Logits of every round (``rounds`` defaults to the count it was built with)."""
        check_quizzes(quizzes)
        B, d = quizzes.shape[0], self.width
        x = self.input(torch.cat([self.digit(quizzes), self.row(self.rows).expand(B, -1, -1),
                                  self.col(self.cols).expand(B, -1, -1)], -1))
        h = x
        c = torch.zeros_like(x)
        src, dst = self.edges[:, 0], self.edges[:, 1]
        out = []
        for _ in range(rounds or self.rounds):
            a, b = self.msg_src(h), self.msg_dst(h)
            hidden = nn.functional.gelu(a[:, src] + b[:, dst])                     # (B, E, d)
            agg = self.msg_out(torch.zeros_like(h).index_add(1, dst, hidden)) + (self.degree - 1) * self.msg_out.bias
            hc = self.cell(torch.cat([x, agg], -1).reshape(B * 81, 2 * d), (h.reshape(B * 81, d), c.reshape(B * 81, d)))
            h, c = hc[0].reshape(B, 81, d), hc[1].reshape(B, 81, d)
            out.append(self.decoder(h))
        return out
