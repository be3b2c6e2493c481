"""Error and structure metrics (protocol v1 definitions, ``experiments/PROTOCOL.md``).

Shapes: trajectories are (J, T, n) -- J trajectories, T times, n state dimension.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .integrators import integrate

__all__ = ["relative_error", "eps_field", "eps_traj", "near_data", "data_region_states", "rollout", "energy_drift", "entropy_increments", "ssim",
           "field_ssim", "SSIM_IMPLEMENTATION"]

# Name to cite in tables (protocol: "name the implementation").
SSIM_IMPLEMENTATION = "sp_dynamics.metrics.ssim (Wang et al. 2004; 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03)"

VectorField = Callable[[Tensor, Tensor], Tensor]


def relative_error(pred: Tensor, true: Tensor, dims: tuple[int, ...]) -> Tensor:
    """``||pred - true||_F / ||true||_F`` over the dimensions ``dims``."""
    return (pred - true).pow(2).sum(dims).sqrt() / true.pow(2).sum(dims).sqrt()


@torch.no_grad()
def eps_field(model: VectorField, true_field: VectorField, grid: Tensor) -> float:
    """Relative Frobenius error of a learned field over a grid of states (G, n)."""
    return float(relative_error(model(0.0, grid), true_field(0.0, grid), (0, 1)))


@torch.no_grad()
def near_data(grid: Tensor, states: Tensor, radius: float, dims: tuple[int, ...] | None = None,
              chunk: int = 256) -> Tensor:
    """Boolean mask (G,) of the grid points (G, n) within ``radius`` of some data state (..., n),
    distances taken over the coordinates ``dims`` (default: all). ``eps_field`` on
    ``grid[mask]`` separates the field error where the data are from extrapolation error."""
    if radius <= 0:
        raise ValueError(f"radius must be positive, got {radius}")
    dims = list(range(grid.shape[-1])) if dims is None else list(dims)
    g = grid[:, dims]
    pts = states.reshape(-1, states.shape[-1])[:, dims].to(g.dtype)
    mask = torch.zeros(len(g), dtype=torch.bool)
    for i in range(0, len(g), chunk):
        mask[i:i + chunk] = torch.cdist(g[i:i + chunk], pts).min(-1).values <= radius
    return mask


@torch.no_grad()
def data_region_states(grid: Tensor, states: Tensor, radius: float, dims: tuple[int, ...]) -> Tensor:
    """The grid points (G, n) within ``radius`` of the data states (..., n) in the coordinates
    ``dims``, each with its *other* coordinates taken from its nearest data state; (G', n).

    For a Hamiltonian system with ``dims`` = all of (q, p) this is ``grid[near_data(...)]``. For a
    GENERIC system the protocol's grid fixes the entropies (the DNO's S = 0), a plane the data
    touch only at their initial states, so the grid measures the field where it was never
    trained; carrying the nearest data state's entropies puts each point where the data are."""
    dims = list(dims)
    mask = near_data(grid, states, radius, tuple(dims))
    points = grid[mask].clone()
    rest = [i for i in range(grid.shape[-1]) if i not in dims]
    if rest and len(points):
        pts = states.reshape(-1, states.shape[-1]).to(grid.dtype)
        nearest = torch.cat([torch.cdist(points[i:i + 256, dims], pts[:, dims]).argmin(-1)
                             for i in range(0, len(points), 256)])
        points[:, rest] = pts[nearest][:, rest]
    return points


@torch.no_grad()
def rollout(model: VectorField, x0: Tensor, t: Tensor, method: str = "dopri5", **kwargs) -> Tensor:
    """Trajectories of ``model`` from x0 (J, n) on times t, returned as (J, T, n).

    Default: dopri5 at rtol 1e-7, atol 1e-9 (protocol v1)."""
    if method == "dopri5":
        kwargs = {"rtol": 1e-7, "atol": 1e-9, **kwargs}
    return integrate(model, x0, t, method=method, **kwargs)


def eps_traj(pred: Tensor, true: Tensor) -> Tensor:
    """Per-trajectory relative error ``||X_hat - X||_F / ||X||_F`` of (J, T, n) tensors, (J,)."""
    return relative_error(pred, true, (-2, -1))


@torch.no_grad()
def energy_drift(energy: Callable[[Tensor], Tensor], xs: Tensor, relative: bool = True) -> Tensor:
    """``max_t |H(x(t)) - H(x(0))| / |H(x(0))|`` per trajectory of (J, T, n) states, (J,).

    ``relative=False`` drops the division: use it where H(x(0)) can be near zero (the DNO's
    energy p^2/2 - k cos q + S is), which makes the relative value meaningless."""
    H = energy(xs)
    drift = (H - H[..., :1]).abs().max(-1).values
    return drift / H[..., 0].abs() if relative else drift


@torch.no_grad()
def entropy_increments(entropy: Callable[[Tensor], Tensor], xs: Tensor) -> Tensor:
    """``S(x(t_{i+1})) - S(x(t_i))`` along (J, T, n) trajectories, (J, T - 1)."""
    S = entropy(xs)
    return S[..., 1:] - S[..., :-1]


def _gaussian_window(size: int, sigma: float, dtype, device) -> Tensor:
    r = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(pred: Tensor, true: Tensor, data_range: float | None = None, window: int = 11, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03) -> Tensor:
    """Structural similarity of (H, W) images (Wang, Bovik, Sheikh, Simoncelli 2004).

    Gaussian-weighted local statistics over the valid region (no padding), averaged; the
    data range defaults to that of ``true`` (protocol v1). Same constants as scikit-image's
    ``structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``.
    """
    if pred.shape != true.shape or pred.ndim != 2:
        raise ValueError(f"ssim takes two images of the same (H, W) shape, got {tuple(pred.shape)}, {tuple(true.shape)}")
    if min(pred.shape) < window:
        raise ValueError(f"images must be at least {window} x {window} for the SSIM window")
    L = float(true.max() - true.min()) if data_range is None else data_range
    if not L > 0:
        raise ValueError("SSIM data range must be positive (the true image is constant)")
    w = _gaussian_window(window, sigma, true.dtype, true.device)
    x, y = pred[None, None].to(true.dtype), true[None, None]
    conv = lambda a: torch.nn.functional.conv2d(a, w)  # noqa: E731
    mx, my = conv(x), conv(y)
    vx = conv(x * x) - mx**2
    vy = conv(y * y) - my**2
    cxy = conv(x * y) - mx * my
    c1, c2 = (k1 * L) ** 2, (k2 * L) ** 2
    s_map = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return s_map.mean()


@torch.no_grad()
def field_ssim(model: VectorField, true_field: VectorField, grid: Tensor, n: int) -> float:
    """SSIM between the true and learned |f| images on an n x n grid of states (n*n, dim)."""
    learned = model(0.0, grid).norm(dim=-1).reshape(n, n)
    true = true_field(0.0, grid).norm(dim=-1).reshape(n, n)
    return float(ssim(learned, true))
