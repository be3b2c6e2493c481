"""Graphs for the screened Poisson operator ``A = L_w + diag(alpha)``, applied matrix-free.

``(L_w phi)_i = sum_j w_ij (phi_i - phi_j)`` with one conductance ``w_e >= 0`` per edge.

Shapes: node fields are (B, C, *nodes) -- B samples, C fields -- with ``*nodes`` = (H, W) on a
grid and (N,) on an edge list. Conductances are a tuple of tensors, one per edge family:

* :class:`GridGraph` 4-connected: (right (B, C, H, W-1), down (B, C, H-1, W));
  8-connected adds (down-right, down-left), each (B, C, H-1, W-1);
* :class:`EdgeGraph`: one tensor (B, C, E) for the E edges ``edges[e] = (i, j)``.

Leading dimensions of conductances may be broadcast (e.g. (1, 1, H, W-1)).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["GridGraph", "EdgeGraph"]

# (row offset, column offset) of each grid edge family, in the order of the weight tuple
_OFFSETS = {4: ((0, 1), (1, 0)), 8: ((0, 1), (1, 0), (1, 1), (1, -1))}


def _slices(H: int, W: int, di: int, dj: int) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """Index slices (source, destination) of the edges ``(i, j) -> (i + di, j + dj)``."""
    rows_s, rows_d = slice(0, H - di), slice(di, H)
    if dj >= 0:
        cols_s, cols_d = slice(0, W - dj), slice(dj, W)
    else:
        cols_s, cols_d = slice(-dj, W), slice(0, W + dj)
    return (rows_s, cols_s), (rows_d, cols_d)


class GridGraph:
    """4- or 8-connected H x W grid."""

    def __init__(self, height: int, width: int, connectivity: int = 4):
        if connectivity not in _OFFSETS:
            raise ValueError(f"grid connectivity must be 4 or 8, got {connectivity}")
        if height < 1 or width < 1:
            raise ValueError(f"grid size must be positive, got {height} x {width}")
        self.H, self.W, self.connectivity = height, width, connectivity
        self._families = [_slices(height, width, di, dj) for di, dj in _OFFSETS[connectivity]]

    @property
    def node_shape(self) -> tuple[int, ...]:
        return (self.H, self.W)

    @property
    def n_nodes(self) -> int:
        return self.H * self.W

    def weight_shapes(self) -> list[tuple[int, int]]:
        """Trailing shape of each conductance tensor."""
        return [(s[0].stop - s[0].start, s[1].stop - s[1].start) for s, _ in self._families]

    def edge_differences(self, phi: Tensor) -> list[Tensor]:
        """``phi_i - phi_j`` per edge family."""
        return [phi[..., rs, cs] - phi[..., rd, cd] for (rs, cs), (rd, cd) in self._families]

    def laplacian(self, weights: tuple[Tensor, ...], phi: Tensor) -> Tensor:
        out = torch.zeros_like(phi)
        for w, diff, ((rs, cs), (rd, cd)) in zip(weights, self.edge_differences(phi), self._families):
            flux = w * diff
            out[..., rs, cs] += flux
            out[..., rd, cd] -= flux
        return out

    def degree(self, weights: tuple[Tensor, ...], like: Tensor) -> Tensor:
        """``sum_j w_ij`` per node, shaped like ``like`` (B, C, H, W)."""
        out = torch.zeros_like(like)
        for w, ((rs, cs), (rd, cd)) in zip(weights, self._families):
            w = w.expand_as(out[..., rs, cs])
            out[..., rs, cs] += w
            out[..., rd, cd] += w
        return out


class EdgeGraph:
    """A general graph on N nodes given by an (E, 2) list of undirected edges."""

    def __init__(self, edges: Tensor, n_nodes: int):
        edges = torch.as_tensor(edges, dtype=torch.long)
        if edges.ndim != 2 or edges.shape[1] != 2:
            raise ValueError(f"edges must have shape (E, 2), got {tuple(edges.shape)}")
        if edges.numel() and (edges.min() < 0 or edges.max() >= n_nodes):
            raise ValueError(f"edge indices must lie in [0, {n_nodes})")
        if bool((edges[:, 0] == edges[:, 1]).any()):
            raise ValueError("self-loops are not allowed in the edge list")
        self.edges, self.n = edges, n_nodes

    @property
    def node_shape(self) -> tuple[int, ...]:
        return (self.n,)

    @property
    def n_nodes(self) -> int:
        return self.n

    def weight_shapes(self) -> list[tuple[int]]:
        return [(len(self.edges),)]

    def edge_differences(self, phi: Tensor) -> list[Tensor]:
        i, j = self.edges[:, 0].to(phi.device), self.edges[:, 1].to(phi.device)
        return [phi[..., i] - phi[..., j]]

    def laplacian(self, weights: tuple[Tensor, ...], phi: Tensor) -> Tensor:
        (w,) = weights
        i, j = self.edges[:, 0].to(phi.device), self.edges[:, 1].to(phi.device)
        flux = w * (phi[..., i] - phi[..., j])
        flux = flux.expand(*phi.shape[:-1], flux.shape[-1])
        return torch.zeros_like(phi).index_add(-1, i, flux).index_add(-1, j, -flux)

    def degree(self, weights: tuple[Tensor, ...], like: Tensor) -> Tensor:
        (w,) = weights
        i, j = self.edges[:, 0].to(like.device), self.edges[:, 1].to(like.device)
        w = w.expand(*like.shape[:-1], len(self.edges))
        return torch.zeros_like(like).index_add(-1, i, w).index_add(-1, j, w)
