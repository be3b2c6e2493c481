"""Metriplector vision: full metriplectic field layers with a stress-energy readout.

The recognition architecture of the Metriplector paper (Oprisa & Toth 2026, section 3.4), built
from the library's primitives. A representation ``h`` (B, D, H, W) runs through ``depth``
residual :class:`VisionLayer` blocks. In every block ``h`` configures a fresh physical system of
C fields (the "operator from input" principle):

* fresh fields ``phi_0`` and sources ``s`` (C channels each), an advection strength ``a >= 0``
  (one per position, as in the paper), conductances ``kappa`` and damping ``gamma`` (C channels
  each), all from one conv projection of the normalised ``h``;
* ``substeps`` steps of the metriplectic field equation ``phi' = a K phi - (L_kappa + gamma) phi + s``,
  split into

  1. advection by the skew coupling K (energy-neutral: ``phi^T K phi = 0``). ``"exact"``: K is
     written in real normal form ``K = Q (omega * J) Q^T`` with J the canonical symplectic matrix
     over C/2 conjugate pairs (:class:`sp_dynamics.brackets.CanonicalJ`), ``omega`` learned
     frequencies and ``Q = exp(S)`` for a learned skew S (:class:`sp_dynamics.brackets.LearnedSkew`);
     every real skew matrix has this form, and the step ``phi <- exp(h a K) phi`` is a rotation
     per position, so sum(phi^2) is kept to round-off for any step size. ``"euler"``: K is a
     learned skew matrix and ``phi <- phi + h a K phi`` (the paper's Euler step) grows sum(phi^2)
     by exactly ``h^2 |a K phi|^2``;
  2. diffusion and damping, ``phi <- phi - h (L_kappa + diag(gamma)) phi`` (explicit Euler, as in the
     paper), with L_kappa the conductance-weighted 4-neighbour grid Laplacian
     (:class:`~metriplector.graphs.GridGraph`). The coefficients are bounded,
     ``kappa <= kappa_max`` and ``gamma <= gamma_max`` with ``h (8 kappa_max + gamma_max) <= 2``, so by
     Gershgorin ``I - h D`` has its eigenvalues in [-1, 1] and this step never increases
     sum(phi^2). ``"implicit"`` solves ``(I + h D) phi' = phi`` with the exact CG instead
     (unconditionally non-expansive, slower);
  3. sources, ``phi <- phi + h s``.

* a readout of the evolved fields: ``"stress"`` (the paper's): the stress-energy tensor
  ``T_ij = sum_k d_k phi_i d_k phi_j`` with directional derivatives from learned depthwise 3x3
  convolutions initialised as Sobel filters and constrained to zero sum (so the readout ignores a
  constant added to a field), split into C diagonal energies, C(C-1)/2 symmetric cross energies and
  C(C-1)/2 antisymmetric vorticities ``d_x phi_i d_y phi_j - d_y phi_i d_x phi_j`` (C^2 features);
  ``"curvature"`` (the paper's alternative): ``phi_i lap phi_j + phi_j lap phi_i`` (i <= j) and
  ``phi_i lap phi_j - phi_j lap phi_i`` (i < j), also C^2 features; ``"values"`` (ablation): the
  field values and their pointwise products ``phi_i phi_j`` (i <= j), C + C(C+1)/2 features;
* a 1x1 conv projection of the features back to D channels, BatchNorm, SiLU, a learned
  per-channel gate (initialised at ``gate_init``) and stochastic depth, added to ``h``.

Our choices where the paper is silent: the coefficient projection is one 3x3 conv; the gate is a
learned per-channel scale rather than a data-dependent gate; the stem is one strided 3x3 conv
(28x28 digits -> 14x14 grid, as the paper's 32x32 -> 16x16); the head is global average pooling
and a linear layer.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sp_dynamics.brackets import CanonicalJ, LearnedSkew
from sp_dynamics.nn import matched_width
from sp_dynamics.serialization import serializable

from .graphs import GridGraph
from .layers import stress_from_gradients
from .poisson import screened_poisson_solve

__all__ = [
    "READOUTS",
    "ADVECTION_STEPS",
    "DIFFUSION_STEPS",
    "GradientFilters",
    "SkewAdvection",
    "readout_features",
    "readout_channels",
    "VisionLayer",
    "MetriplectorVision",
    "ResNetBaseline",
    "baseline_width",
]

READOUTS = ("stress", "curvature", "values")
ADVECTION_STEPS = ("exact", "euler")
DIFFUSION_STEPS = ("explicit", "implicit")

_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0


@serializable
class GradientFilters(nn.Module):
    """Learned directional derivatives ``(d_x phi, d_y phi)`` of C fields: depthwise 3x3 convs
    initialised as Sobel filters, replicate padding, each kernel projected to zero sum, so a
    constant field has zero derivative everywhere (borders included)."""

    def __init__(self, fields: int):
        super().__init__()
        self.fields = fields
        init = torch.stack([_SOBEL_X, _SOBEL_X.T]).repeat(fields, 1, 1)  # (2C, 3, 3): x, y per field
        self.weight = nn.Parameter(init.unsqueeze(1).clone())

    def kernels(self) -> Tensor:
        w = self.weight
        return w - w.mean(dim=(-2, -1), keepdim=True)

    def forward(self, phi: Tensor) -> tuple[Tensor, Tensor]:
        out = F.conv2d(F.pad(phi, (1, 1, 1, 1), mode="replicate"), self.kernels().to(phi), groups=self.fields)
        return out[:, 0::2], out[:, 1::2]


def readout_channels(readout: str, fields: int) -> int:
    """Number of readout features for C fields."""
    if readout not in READOUTS:
        raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
    return fields + fields * (fields + 1) // 2 if readout == "values" else fields * fields


def readout_features(readout: str, phi: Tensor, gradients: GradientFilters | None = None) -> Tensor:
    """The readout features of fields (B, C, H, W), shape (B, readout_channels(readout, C), H, W)."""
    C = phi.shape[1]
    if readout == "stress":
        if gradients is None:
            raise ValueError("the stress readout needs the GradientFilters")
        return torch.cat(stress_from_gradients(*gradients(phi)), 1)
    if readout == "curvature":
        ones = phi.new_ones(())  # the 5-point Laplacian with Neumann borders: -L phi on the unit grid graph
        lap = -GridGraph(phi.shape[-2], phi.shape[-1]).laplacian((ones, ones), phi)
        i, j = torch.triu_indices(C, C, 0, device=phi.device)
        k, m = torch.triu_indices(C, C, 1, device=phi.device)
        return torch.cat([phi[:, i] * lap[:, j] + phi[:, j] * lap[:, i], phi[:, k] * lap[:, m] - phi[:, m] * lap[:, k]], 1)
    if readout == "values":
        i, j = torch.triu_indices(C, C, 0, device=phi.device)
        return torch.cat([phi, phi[:, i] * phi[:, j]], 1)
    raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")


@serializable
class SkewAdvection(nn.Module):
    """The energy-neutral advection step ``phi' = a K phi`` with K skew (C x C), per position
    strength ``a`` (B, 1, H, W).

    ``step="exact"``: ``K = Q (omega * J) Q^T`` (real normal form; J canonical over C/2 pairs,
    ``Q = exp(S)``, S learned skew), applied as ``exp(h a K)``: orthogonal for every a and h.
    ``step="euler"``: K learned skew, ``phi + h a K phi``.
    """

    def __init__(self, fields: int, step: str = "exact", init_std: float = 0.5):
        super().__init__()
        if step not in ADVECTION_STEPS:
            raise ValueError(f"advection step must be one of {ADVECTION_STEPS}, got {step!r}")
        if step == "exact" and fields % 2:
            raise ValueError(f"the exact advection step pairs the fields: need an even number of fields, got {fields}")
        self.fields, self.step = fields, step
        if step == "exact":
            self.basis = LearnedSkew(fields, init_std=init_std)  # S, Q = exp(S)
            self.log_omega = nn.Parameter(torch.randn(fields // 2) * 0.3)
            self.register_buffer("J", CanonicalJ(fields // 2).matrix(torch.float32), persistent=False)
        else:
            self.skew = LearnedSkew(fields, init_std=init_std)

    def omega(self) -> Tensor:
        return self.log_omega.exp()

    def rotation(self) -> Tensor:
        """Q, the orthogonal basis of the normal form (exact step only)."""
        return torch.linalg.matrix_exp(self.basis.matrix())

    def matrix(self) -> Tensor:
        """The skew coupling K."""
        if self.step == "euler":
            return self.skew.matrix()
        Q, w = self.rotation(), self.omega().repeat(2)
        return Q @ (w[:, None] * self.J.to(Q)) @ Q.T

    def forward(self, phi: Tensor, a: Tensor, h: float) -> Tensor:
        if self.step == "euler":
            return phi + h * a * torch.einsum("ij,bjxy->bixy", self.matrix().to(phi), phi)
        Q = self.rotation().to(phi)
        d = self.fields // 2
        y = torch.einsum("ji,bjxy->bixy", Q, phi)                        # Q^T phi
        theta = h * a * self.omega().to(phi)[None, :, None, None]       # (B, C/2, H, W)
        c, s = theta.cos(), theta.sin()
        q, p = y[:, :d], y[:, d:]
        y = torch.cat([c * q + s * p, c * p - s * q], 1)                # exp(theta J) per pair
        return torch.einsum("ij,bjxy->bixy", Q, y)


@serializable
class VisionLayer(nn.Module):
    """One residual metriplectic block, (B, D, H, W) -> (B, D, H, W). See the module docstring."""

    def __init__(self, channels: int, fields: int = 8, substeps: int = 2, dt: float = 0.5, readout: str = "stress",
                 advection_step: str = "exact", diffusion_step: str = "explicit", drop_path: float = 0.0,
                 gate_init: float = 0.1, cg_rtol: float | None = None):
        super().__init__()
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
        if diffusion_step not in DIFFUSION_STEPS:
            raise ValueError(f"diffusion step must be one of {DIFFUSION_STEPS}, got {diffusion_step!r}")
        if not 0.0 <= drop_path < 1.0:
            raise ValueError(f"drop_path must be in [0, 1), got {drop_path}")
        if substeps < 1 or dt <= 0:
            raise ValueError(f"need substeps >= 1 and dt > 0, got {substeps} and {dt}")
        self.channels, self.fields, self.substeps, self.dt = channels, fields, substeps, dt
        self.readout, self.diffusion_step, self.drop_path, self.cg_rtol = readout, diffusion_step, drop_path, cg_rtol
        # explicit-step bounds: h (8 kappa_max + gamma_max) = 2 (Gershgorin, 4 neighbours)
        self.kappa_max, self.gamma_max = 0.2 / dt, 0.4 / dt
        self.norm = nn.BatchNorm2d(channels)
        # phi_0 (C), source (C), kappa (C), gamma (C), advection strength (1)
        self.project = nn.Conv2d(channels, 4 * fields + 1, kernel_size=3, padding=1)
        self.advection = SkewAdvection(fields, advection_step)
        self.gradients = GradientFilters(fields) if readout == "stress" else None
        self.mix = nn.Conv2d(readout_channels(readout, fields), channels, kernel_size=1, bias=False)
        self.mix_norm = nn.BatchNorm2d(channels)
        self.gate = nn.Parameter(torch.full((channels,), gate_init))

    def coefficients(self, h: Tensor) -> dict[str, Tensor]:
        """phi0, source, kappa, gamma (B, C, H, W) and the advection strength a (B, 1, H, W)."""
        C = self.fields
        out = self.project(self.norm(h))
        return {"phi0": out[:, :C], "source": out[:, C : 2 * C],
                "kappa": self.kappa_max * torch.sigmoid(out[:, 2 * C : 3 * C]),
                "gamma": self.gamma_max * torch.sigmoid(out[:, 3 * C : 4 * C]),
                "a": F.softplus(out[:, 4 * C :])}

    @staticmethod
    def edge_weights(kappa: Tensor) -> tuple[Tensor, Tensor]:
        """Conductances of the right and down edges: the mean of the two nodes' kappa."""
        return 0.5 * (kappa[..., :, 1:] + kappa[..., :, :-1]), 0.5 * (kappa[..., 1:, :] + kappa[..., :-1, :])

    def dissipate(self, phi: Tensor, kappa: Tensor, gamma: Tensor, h: float) -> Tensor:
        """The diffusion + damping step (explicit Euler, or implicit by CG)."""
        graph = GridGraph(phi.shape[-2], phi.shape[-1])
        weights = self.edge_weights(kappa)
        if self.diffusion_step == "explicit":
            return phi - h * (graph.laplacian(weights, phi) + gamma * phi)
        return screened_poisson_solve(graph, tuple(h * w for w in weights), 1.0 + h * gamma, phi, rtol=self.cg_rtol)

    def evolve(self, h: Tensor) -> Tensor:
        """The evolved fields (B, C, H, W)."""
        co = self.coefficients(h)
        phi = co["phi0"]
        for _ in range(self.substeps):
            phi = self.advection(phi, co["a"], self.dt)
            phi = self.dissipate(phi, co["kappa"], co["gamma"], self.dt)
            phi = phi + self.dt * co["source"]
        return phi

    def features(self, phi: Tensor) -> Tensor:
        return readout_features(self.readout, phi, self.gradients)

    def update(self, h: Tensor, phi: Tensor) -> Tensor:
        """The new representation from h and the fields it evolved."""
        update = F.silu(self.mix_norm(self.mix(self.features(phi)))) * self.gate[:, None, None]
        return h + _drop_path(update, self.drop_path, self.training)

    def forward(self, h: Tensor) -> Tensor:
        if h.ndim != 4 or h.shape[1] != self.channels:
            raise ValueError(f"expected a representation of shape (B, {self.channels}, H, W), got {tuple(h.shape)}")
        return self.update(h, self.evolve(h))


def _drop_path(x: Tensor, p: float, training: bool) -> Tensor:
    """Stochastic depth: drop the whole residual update of a sample with probability p."""
    if p == 0.0 or not training:
        return x
    keep = torch.rand(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device) >= p
    return x * keep / (1.0 - p)


def _stem(in_channels: int, width: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width), nn.SiLU())


def _check_images(x: Tensor, in_channels: int) -> None:
    if x.ndim != 4 or x.shape[1] != in_channels:
        raise ValueError(f"expected images of shape (B, {in_channels}, H, W), got {tuple(x.shape)}")


@serializable
class MetriplectorVision(nn.Module):
    """Image classifier: strided conv stem, ``depth`` non-shared :class:`VisionLayer` blocks,
    global average pooling and a linear head. Images (B, in_channels, H, W) -> logits (B, classes).

    ``drop_path`` is the stochastic-depth rate of the last block (linear in depth from 0)."""

    def __init__(self, in_channels: int = 1, classes: int = 10, width: int = 32, depth: int = 6, fields: int = 8,
                 substeps: int = 2, dt: float = 0.5, readout: str = "stress", advection_step: str = "exact",
                 diffusion_step: str = "explicit", drop_path: float = 0.05):
        super().__init__()
        if depth < 1 or width < 1 or fields < 1 or classes < 2:
            raise ValueError(f"need depth, width, fields >= 1 and classes >= 2, got {depth}, {width}, {fields}, {classes}")
        self.in_channels, self.classes = in_channels, classes
        self.stem = _stem(in_channels, width)
        rates = [drop_path * k / max(depth - 1, 1) for k in range(depth)]
        self.layers = nn.ModuleList(
            VisionLayer(width, fields, substeps, dt, readout, advection_step, diffusion_step, r) for r in rates)
        self.head_norm = nn.BatchNorm2d(width)
        self.head = nn.Linear(width, classes)

    def _run(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The last representation and the evolved fields of every block."""
        _check_images(x, self.in_channels)
        h, phis = self.stem(x), []
        for layer in self.layers:
            phis.append(layer.evolve(h))
            h = layer.update(h, phis[-1])
        return h, phis

    @torch.no_grad()
    def fields(self, x: Tensor) -> list[Tensor]:
        """The evolved fields of every block (for figures), each (B, C, H', W')."""
        return self._run(x)[1]

    def forward(self, x: Tensor) -> Tensor:
        h = self._run(x)[0]
        return self.head(F.silu(self.head_norm(h)).mean(dim=(-2, -1)))


@serializable
class ResNetBaseline(nn.Module):
    """ResNet-style CNN baseline: the same stem and head as :class:`MetriplectorVision`, with
    ``blocks`` basic residual blocks (conv3x3-BN-SiLU-conv3x3-BN, identity skip) at constant width."""

    def __init__(self, in_channels: int = 1, classes: int = 10, width: int = 32, blocks: int = 3):
        super().__init__()
        self.in_channels, self.classes = in_channels, classes
        self.stem = _stem(in_channels, width)

        def block():
            return nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.SiLU(),
                                 nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width))

        self.blocks = nn.ModuleList(block() for _ in range(blocks))
        self.head = nn.Linear(width, classes)

    def forward(self, x: Tensor) -> Tensor:
        _check_images(x, self.in_channels)
        h = self.stem(x)
        for blk in self.blocks:
            h = F.silu(h + blk(h))
        return self.head(h.mean(dim=(-2, -1)))


def baseline_width(target: int, blocks: int, in_channels: int = 1, classes: int = 10) -> int:
    """The ResNetBaseline width whose parameter count is closest to ``target``."""
    return matched_width(lambda w: ResNetBaseline(in_channels, classes, w, blocks), target)

