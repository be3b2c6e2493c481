"""Metriplectic field layer and the stress-energy readout (Metriplector, full branch).

A representation h (B, D, H, W) configures a small physical system of C fields on the grid:
per-position advection strength a >= 0, diffusion kappa >= 0, damping gamma >= 0 and sources s
are projected from h (1x1 convolutions), fresh fields phi_0 are projected from h, and each of
``substeps`` steps applies

1. advection  ``phi <- phi + h a K phi``: K is a C x C skew coupling from
   :mod:`sp_dynamics.brackets` (a learned :class:`~sp_dynamics.brackets.LearnedSkew`, or the
   canonical J over C/2 conjugate pairs plus a learned skew cross-pair term). Energy-neutral
   in continuous time (phi^T K phi = 0). ``advection_step="euler"`` grows sum(phi^2) by exactly
   ``h^2 |a K phi|^2``; ``"cayley"`` uses ``(I - h a K / 2)^{-1} (I + h a K / 2)``, an orthogonal
   map that keeps sum(phi^2) to round-off;
2. diffusion + damping, implicitly: ``(I + h (L_kappa + diag(gamma))) phi' = phi`` solved with
   the screened-Poisson CG; ``(I + h D)^{-1}`` with D symmetric PSD never increases sum(phi^2),
   for any step size;
3. sources ``phi <- phi + h s``.

The stress-energy readout ``T_ij = sum_k d_k phi_i d_k phi_j`` (forward differences) gives C
diagonal energies, C(C-1)/2 symmetric cross terms and C(C-1)/2 antisymmetric vorticities
``d_x phi_i d_y phi_j - d_y phi_i d_x phi_j``; a 1x1 convolution maps them back to D channels,
added to h (residual).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sp_dynamics.brackets import CanonicalJ, LearnedSkew
from sp_dynamics.serialization import serializable

from .graphs import GridGraph
from .poisson import screened_poisson_solve

__all__ = ["FieldCoupling", "cayley_advect", "stress_energy", "stress_from_gradients", "MetriplecticLayer"]


@serializable
class FieldCoupling(nn.Module):
    """Skew C x C coupling K across fields: learned, or canonical J plus a learned cross term."""

    def __init__(self, fields: int, canonical: bool = False, cross_init_std: float = 0.01):
        super().__init__()
        if canonical and fields % 2:
            raise ValueError(f"canonical coupling pairs fields (q, p): need an even number, got {fields}")
        self.fields, self.canonical = fields, canonical
        self.learned = LearnedSkew(fields, init_std=cross_init_std if canonical else 0.5)
        if canonical:
            self.register_buffer("J", CanonicalJ(fields // 2).matrix(torch.float32), persistent=False)

    def matrix(self) -> Tensor:
        K = self.learned.matrix()
        return K + self.J.to(K) if self.canonical else K


def cayley_advect(phi: Tensor, a: Tensor, K: Tensor, h: float) -> Tensor:
    """``(I - h a K / 2)^{-1} (I + h a K / 2) phi`` per position: fields (B, C, H, W), strength a
    (B, 1, H, W), K skew (C, C). The Cayley map of a skew matrix is orthogonal, so sum(phi^2) is kept
    to round-off for any a and h (the implicit midpoint rule of ``phi' = a K phi``).

    When no gradient is needed (planning, evaluation), the map is applied through one
    eigendecomposition of K instead of a linear solve per position: ``iK = V diag(w) V^H`` is
    Hermitian, K's eigenvalues are ``-i w``, and the Cayley map multiplies eigencomponent k by
    ``(1 - i s w_k) / (1 + i s w_k)`` with ``s = h a / 2``, a unit complex number. Training keeps the solve: the eigenvectors of the
    canonical J are degenerate, and their derivative is not defined."""
    if not torch.is_grad_enabled() or not (phi.requires_grad or a.requires_grad or K.requires_grad):
        return _cayley_spectral(phi, a, K, h)
    return _cayley_solve(phi, a, K, h)


def _cayley_solve(phi: Tensor, a: Tensor, K: Tensor, h: float) -> Tensor:
    """:func:`cayley_advect` by one C x C linear solve per position (differentiable)."""
    eye = torch.eye(K.shape[0], dtype=phi.dtype, device=phi.device)
    half = (0.5 * h * a).permute(0, 2, 3, 1)[..., None] * K               # (B, H, W, C, C)
    rhs = phi.permute(0, 2, 3, 1).unsqueeze(-1)
    rhs = rhs + half @ rhs
    return torch.linalg.solve(eye - half, rhs).squeeze(-1).permute(0, 3, 1, 2)


def _cayley_spectral(phi: Tensor, a: Tensor, K: Tensor, h: float) -> Tensor:
    """:func:`cayley_advect` through the eigenvectors of the Hermitian iK (no autograd)."""
    ctype = torch.complex128 if phi.dtype == torch.float64 else torch.complex64
    w, V = torch.linalg.eigh(1j * K.to(ctype))                            # iK = V diag(w) V^H, w real
    s = (0.5 * h * a).to(ctype)                                           # (B, 1, H, W)
    isw = 1j * s * w.view(1, -1, 1, 1)                                    # -s mu_k, mu_k = -i w_k the eigenvalues of K
    factor = (1 - isw) / (1 + isw)                                        # (1 + s mu) / (1 - s mu): |factor| = 1
    coeff = torch.einsum("ck,bchw->bkhw", V.conj(), phi.to(ctype))        # V^H phi
    return torch.einsum("ck,bkhw->bchw", V, factor * coeff).real.to(phi.dtype)


def _grads(phi: Tensor) -> tuple[Tensor, Tensor]:
    """Forward differences along x (width) and y (height), zero at the far edge."""
    gx = torch.zeros_like(phi)
    gy = torch.zeros_like(phi)
    gx[..., :, :-1] = phi[..., :, 1:] - phi[..., :, :-1]
    gy[..., :-1, :] = phi[..., 1:, :] - phi[..., :-1, :]
    return gx, gy


def stress_energy(phi: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Stress-energy features of fields (B, C, H, W).

    Returns diagonal (B, C, H, W), symmetric cross (B, C(C-1)/2, H, W) and antisymmetric
    vorticity (B, C(C-1)/2, H, W) parts, pairs ordered as ``torch.triu_indices(C, C, 1)``.
    """
    return stress_from_gradients(*_grads(phi))


def stress_from_gradients(gx: Tensor, gy: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`stress_energy` from given directional derivatives (B, C, H, W) of the fields."""
    i, j = torch.triu_indices(gx.shape[1], gx.shape[1], 1, device=gx.device)
    diag = gx**2 + gy**2
    cross = gx[:, i] * gx[:, j] + gy[:, i] * gy[:, j]
    vort = gx[:, i] * gy[:, j] - gy[:, i] * gx[:, j]
    return diag, cross, vort


@serializable
class MetriplecticLayer(nn.Module):
    """One metriplectic layer: fresh fields, ``substeps`` split steps, stress-energy readout.

    Args:
        channels: D of the representation. fields: C.
        substeps, dt: number and size of the split steps.
        canonical: canonical J over conjugate pairs plus a learned skew cross-pair term.
        advection_step: ``"euler"`` or ``"cayley"`` (exactly norm-preserving).
        cg_rtol: tolerance of the implicit diffusion solve.

    Shapes: (B, D, H, W) -> (B, D, H, W).
    """

    def __init__(self, channels: int, fields: int = 8, substeps: int = 2, dt: float = 0.5,
                 canonical: bool = False, advection_step: str = "cayley", cg_rtol: float | None = None):
        super().__init__()
        if advection_step not in ("euler", "cayley"):
            raise ValueError(f"advection_step must be 'euler' or 'cayley', got {advection_step!r}")
        self.channels, self.fields, self.substeps, self.dt = channels, fields, substeps, dt
        self.advection_step, self.cg_rtol = advection_step, cg_rtol
        self.coupling = FieldCoupling(fields, canonical)
        # fields, source (C each); advection strength, diffusion, damping (1 each)
        self.project = nn.Conv2d(channels, 2 * fields + 3, kernel_size=1)
        self.readout = nn.Conv2d(fields * fields, channels, kernel_size=1)
        nn.init.zeros_(self.readout.weight)  # starts as the identity map (residual)
        nn.init.zeros_(self.readout.bias)

    def coefficients(self, h: Tensor):
        C = self.fields
        out = self.project(h)
        phi0, source = out[:, :C], out[:, C : 2 * C]
        pos = nn.functional.softplus(out[:, 2 * C :])
        return phi0, source, pos[:, :1], pos[:, 1:2], pos[:, 2:3]  # a, kappa, gamma: (B, 1, H, W)

    def advect(self, phi: Tensor, a: Tensor, h: float) -> Tensor:
        """One advection step of size h with per-position strength a (B, 1, H, W)."""
        K = self.coupling.matrix().to(phi)
        if self.advection_step == "euler":
            return phi + h * a * torch.einsum("ij,bjxy->bixy", K, phi)
        return cayley_advect(phi, a, K, h)

    def dissipate(self, phi: Tensor, kappa: Tensor, gamma: Tensor, h: float) -> Tensor:
        """Implicit diffusion + damping: solve (I + h (L_kappa + diag(gamma))) phi' = phi."""
        graph = GridGraph(phi.shape[-2], phi.shape[-1])
        weights = (h * 0.5 * (kappa[..., :, 1:] + kappa[..., :, :-1]), h * 0.5 * (kappa[..., 1:, :] + kappa[..., :-1, :]))
        return screened_poisson_solve(graph, weights, 1.0 + h * gamma, phi, rtol=self.cg_rtol)

    def evolve(self, h: Tensor) -> Tensor:
        """The fields after all substeps, (B, C, H, W)."""
        phi, source, a, kappa, gamma = self.coefficients(h)
        dt = self.dt
        for _ in range(self.substeps):
            phi = self.advect(phi, a, dt)
            phi = self.dissipate(phi, kappa, gamma, dt)
            phi = phi + dt * source
        return phi

    def forward(self, h: Tensor) -> Tensor:
        if h.ndim != 4 or h.shape[1] != self.channels:
            raise ValueError(f"expected a representation of shape (B, {self.channels}, H, W), got {tuple(h.shape)}")
        phi = self.evolve(h)
        feats = torch.cat(stress_energy(phi), 1)
        return h + self.readout(feats)
