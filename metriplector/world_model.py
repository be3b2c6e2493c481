"""Metriplector world model for control: pixels -> 8x8 latent grid -> action-conditioned
symplectic field dynamics, and a cross-entropy-method planner in latent space.

The world model of the Metriplector paper (Oprisa & Toth 2026, section 3.5), built from the
library's primitives:

* an encoder of ``history`` stacked 64x64 RGB frames (the current and, with ``history=2``, the
  previous one: a single frame does not show the arm's velocity) into a (D, 8, 8) latent grid
  (three stride-2 stages of two 3x3 convolutions with GroupNorm and SiLU, then a 1x1 map to D
  channels), and an EMA copy of it (the target encoder) that provides the prediction targets;
  variance and covariance regularisation of the online latents (:func:`variance_covariance`);
* optionally a pixel :class:`Decoder` whose reconstruction of the newest frame, from every online
  and every predicted latent, enters the loss. Without it the encoder collapsed in our CPU runs:
  the variance term was met by the static background and the latents ignored the arm;
* dynamics ``z_{t+1} = F(z_t, u_t)`` by ``layers`` non-shared :class:`PortHamiltonianLayer` blocks.
  Each block makes C fresh fields from the latent, organised as C/2 canonical conjugate pairs,
  and evolves them ``substeps`` times under

  1. advection ``phi' = a K phi`` with ``K = J + W`` (:class:`~metriplector.layers.FieldCoupling`:
     the canonical symplectic J of :mod:`sp_dynamics.brackets` plus a learned skew cross-pair term
     initialised small), one strength ``a >= 0`` per position, stepped by the Cayley map
     (:func:`~metriplector.layers.cayley_advect`): orthogonal, so sum(phi^2) is kept to round-off;
  2. diffusion and damping ``phi <- phi - h (L_kappa + diag(gamma)) phi`` (explicit, with the
     Gershgorin bounds of :class:`~metriplector.vision.VisionLayer`, so it never increases sum(phi^2));
  3. sources ``phi <- phi + h s``;

  then reads out the stress-energy tensor of the fields (learned Sobel-initialised gradients) and
  adds a gated, normalised 1x1 projection of it to the latent (residual);
* port-Hamiltonian action conditioning: the action u enters only the operators. A zero-initialised
  linear map of u gives a per-position offset of the source, conductance, damping and advection
  logits; the fields and the latent themselves never see u. At initialisation the model therefore
  predicts the same next latent for every action;
* a reward head (global average of the latent, linear), trained as an auxiliary target.

The baseline dynamics (``dynamics="conv"``) replace the layers by residual conv blocks that see the
action as two broadcast input channels, with the same encoder, heads and training.

Departures from the paper, for a CPU budget: smaller widths (the paper's encoder alone has 560K
parameters) and 8 fields (4 pairs) instead of 16 in the CPU preset; no post-residual GroupNorm,
since the targets come from the unnormalised EMA encoder. The two-frame observations and the
reconstruction term are ours (the paper's model is decoder-free).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sp_dynamics.nn import count_parameters, matched_width
from sp_dynamics.serialization import serializable

from .graphs import GridGraph
from .layers import FieldCoupling, cayley_advect
from .vision import GradientFilters, VisionLayer, readout_features

__all__ = ["PortHamiltonianLayer", "ConvDynamics", "Encoder", "Decoder", "WorldModel", "stack_history",
           "variance_covariance", "world_model_loss", "cem_plan", "latent_cost"]

DYNAMICS = ("metriplector", "conv")


def _check_latent(z: Tensor, channels: int) -> None:
    if z.ndim != 4 or z.shape[1] != channels:
        raise ValueError(f"expected latents of shape (B, {channels}, H, W), got {tuple(z.shape)}")


@serializable
class PortHamiltonianLayer(nn.Module):
    """One symplectic Metriplector block with port-Hamiltonian action conditioning,
    (latent (B, D, H, W), action (B, A)) -> latent (B, D, H, W). See the module docstring."""

    def __init__(self, channels: int, actions: int, grid: int = 8, fields: int = 8, substeps: int = 2,
                 dt: float = 0.5, gate_init: float = 0.1, cross_init_std: float = 0.01):
        super().__init__()
        if fields % 2 or fields < 2:
            raise ValueError(f"the fields form conjugate pairs: need an even number >= 2, got {fields}")
        if substeps < 1 or dt <= 0:
            raise ValueError(f"need substeps >= 1 and dt > 0, got {substeps} and {dt}")
        self.channels, self.actions, self.grid, self.fields, self.substeps, self.dt = channels, actions, grid, fields, substeps, dt
        self.kappa_max, self.gamma_max = 0.2 / dt, 0.4 / dt  # h (8 kappa_max + gamma_max) = 2 (Gershgorin)
        self.norm = nn.GroupNorm(1, channels)
        # phi_0 (C), then the operators: source (C), kappa (C), gamma (C), advection strength (1)
        self.project = nn.Conv2d(channels, 4 * fields + 1, kernel_size=3, padding=1)
        self.action_map = nn.Linear(actions, (3 * fields + 1) * grid * grid)
        nn.init.zeros_(self.action_map.weight)
        nn.init.zeros_(self.action_map.bias)
        self.coupling = FieldCoupling(fields, canonical=True, cross_init_std=cross_init_std)
        self.gradients = GradientFilters(fields)
        self.mix = nn.Conv2d(fields * fields, channels, kernel_size=1, bias=False)
        self.mix_norm = nn.GroupNorm(1, channels)
        self.gate = nn.Parameter(torch.full((channels,), gate_init))

    def coefficients(self, z: Tensor, u: Tensor) -> dict[str, Tensor]:
        """phi0, source, kappa, gamma (B, C, H, W) and the advection strength a (B, 1, H, W)."""
        C, B = self.fields, z.shape[0]
        out = self.project(self.norm(z))
        ops = out[:, C:] + self.action_map(u).view(B, 3 * C + 1, self.grid, self.grid)
        return {"phi0": out[:, :C], "source": ops[:, :C],
                "kappa": self.kappa_max * torch.sigmoid(ops[:, C : 2 * C]),
                "gamma": self.gamma_max * torch.sigmoid(ops[:, 2 * C : 3 * C]),
                "a": F.softplus(ops[:, 3 * C :])}

    def advect(self, phi: Tensor, a: Tensor) -> Tensor:
        """One Cayley step of the canonical + cross-pair advection (norm-preserving)."""
        return cayley_advect(phi, a, self.coupling.matrix().to(phi), self.dt)

    def evolve(self, z: Tensor, u: Tensor) -> Tensor:
        co = self.coefficients(z, u)
        graph = GridGraph(z.shape[-2], z.shape[-1])
        weights = VisionLayer.edge_weights(co["kappa"])
        phi = co["phi0"]
        for _ in range(self.substeps):
            phi = self.advect(phi, co["a"])
            phi = phi - self.dt * (graph.laplacian(weights, phi) + co["gamma"] * phi)
            phi = phi + self.dt * co["source"]
        return phi

    def forward(self, z: Tensor, u: Tensor) -> Tensor:
        _check_latent(z, self.channels)
        if z.shape[-2:] != (self.grid, self.grid):
            raise ValueError(f"this layer was built for a {self.grid}x{self.grid} grid, got {tuple(z.shape[-2:])}")
        feats = readout_features("stress", self.evolve(z, u), self.gradients)
        return z + F.silu(self.mix_norm(self.mix(feats))) * self.gate[:, None, None]


@serializable
class ConvDynamics(nn.Module):
    """Baseline dynamics: ``blocks`` residual blocks conv3x3(D + A -> width) - SiLU - conv3x3(-> D),
    the action broadcast as A constant input channels."""

    def __init__(self, channels: int, actions: int, width: int = 32, blocks: int = 2):
        super().__init__()
        self.channels, self.actions = channels, actions
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.GroupNorm(1, channels + actions), nn.Conv2d(channels + actions, width, 3, padding=1),
                          nn.SiLU(), nn.Conv2d(width, channels, 3, padding=1)) for _ in range(blocks))

    def forward(self, z: Tensor, u: Tensor) -> Tensor:
        _check_latent(z, self.channels)
        a = u[:, :, None, None].expand(-1, -1, *z.shape[-2:])
        for blk in self.blocks:
            z = z + blk(torch.cat([z, a], 1))
        return z


@serializable
class Encoder(nn.Module):
    """``history`` stacked 64x64 RGB frames (B, 3 * history, 64, 64), values in [0, 1] -> latent
    (B, D, 8, 8). The newest frame comes first in the channels (see :func:`stack_history`)."""

    def __init__(self, latent: int = 16, widths: tuple[int, ...] = (16, 32, 48), history: int = 1):
        super().__init__()
        layers, c = [], 3 * history
        for w in widths:
            layers += [nn.Conv2d(c, w, 3, stride=2, padding=1), nn.GroupNorm(4 if w % 4 == 0 else 1, w), nn.SiLU(),
                       nn.Conv2d(w, w, 3, padding=1), nn.GroupNorm(4 if w % 4 == 0 else 1, w), nn.SiLU()]
            c = w
        layers.append(nn.Conv2d(c, latent, 1))
        self.net = nn.Sequential(*layers)
        self.downsample = 2 ** len(widths)
        self.history = history

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 3 * self.history:
            what = "RGB frames" if self.history == 1 else f"{self.history} stacked RGB frames"
            raise ValueError(f"expected {what} of shape (B, {3 * self.history}, H, W), got {tuple(x.shape)}")
        return self.net(x - 0.5)


@serializable
class Decoder(nn.Module):
    """Latent (B, D, 8, 8) -> the newest frame at half resolution (B, 3, 32, 32): one nearest-
    neighbour upsampling and a 3x3 convolution (GroupNorm, SiLU) per stage, the encoder's widths
    reversed, one stage fewer than the encoder (decoding at full resolution made training 6x
    slower on the CPU). Used only for the reconstruction term of :func:`world_model_loss`, which
    keeps the latent from dropping what the frame shows (the arm)."""

    def __init__(self, latent: int = 16, widths: tuple[int, ...] = (16, 32, 48)):
        super().__init__()
        widths = tuple(widths)[::-1][1:] or tuple(widths)
        layers, c = [nn.Conv2d(latent, widths[0], 1)], widths[0]
        for w in widths:
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, w, 3, padding=1),
                       nn.GroupNorm(4 if w % 4 == 0 else 1, w), nn.SiLU()]
            c = w
        layers.append(nn.Conv2d(c, 3, 1))
        self.net = nn.Sequential(*layers)
        self.upsample = 2 ** len(widths)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z) + 0.5

    def loss(self, z: Tensor, frames: Tensor, weights: Tensor | None = None) -> Tensor:
        """Mean squared pixel error of the decoded latents (N, D, h, w) against frames
        (N, 3, H, W), average-pooled to the decoder's output size; with per-pixel ``weights``
        (N, 1, h', w') at that size, their weighted mean."""
        out = self(z)
        err = (out - F.adaptive_avg_pool2d(frames, out.shape[-2:])) ** 2
        if weights is None:
            return err.mean()
        return (err * weights).sum() / (weights.sum() * err.shape[1])


def stack_history(frames: Tensor, history: int) -> Tensor:
    """Frames (B, T + history - 1, 3, H, W), oldest first -> observations (B, T, 3 * history, H, W):
    observation t holds frames t + history - 1, ..., t (newest first). ``history = 1`` is the
    identity."""
    if history < 1 or frames.shape[1] < history:
        raise ValueError(f"need history >= 1 and at least {history} frames, got {history} and {frames.shape[1]}")
    T = frames.shape[1] - history + 1
    return torch.cat([frames[:, history - 1 - k : history - 1 - k + T] for k in range(history)], dim=2)


@serializable
class WorldModel(nn.Module):
    """Encoder + EMA target encoder + latent dynamics + reward head.

    Args:
        latent: D, channels of the latent grid. actions: A. image: frame side (a multiple of 8).
        dynamics: ``"metriplector"`` (:class:`PortHamiltonianLayer` blocks) or ``"conv"``.
        layers, fields, substeps: of the Metriplector dynamics. conv_width, conv_blocks: of the baseline.
        history: frames per observation (2: the current and the previous frame, which shows the
            arm's velocity; one frame alone does not determine the next).
        decoder: add a :class:`Decoder` for the reconstruction term of :func:`world_model_loss`.
    """

    def __init__(self, latent: int = 16, actions: int = 2, image: int = 64, widths: tuple[int, ...] = (16, 32, 48),
                 dynamics: str = "metriplector", layers: int = 2, fields: int = 8, substeps: int = 2,
                 conv_width: int = 32, conv_blocks: int = 2, history: int = 1, decoder: bool = False):
        super().__init__()
        if dynamics not in DYNAMICS:
            raise ValueError(f"dynamics must be one of {DYNAMICS}, got {dynamics!r}")
        if image % 2 ** len(widths):
            raise ValueError(f"the frame side {image} must be a multiple of {2 ** len(widths)}")
        self.latent, self.actions, self.image, self.kind = latent, actions, image, dynamics
        self.grid = image // 2 ** len(widths)
        if history < 1:
            raise ValueError(f"history must be >= 1 frame, got {history}")
        self.history = history
        self.encoder = Encoder(latent, tuple(widths), history)
        self.decoder = Decoder(latent, tuple(widths)) if decoder else None
        self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        if dynamics == "metriplector":
            self.layers = nn.ModuleList(PortHamiltonianLayer(latent, actions, self.grid, fields, substeps)
                                        for _ in range(layers))
        else:
            self.layers = nn.ModuleList([ConvDynamics(latent, actions, conv_width, conv_blocks)])
        self.reward_head = nn.Linear(latent, 1)

    def dynamics_parameters(self) -> int:
        return count_parameters(self.layers)

    def encode(self, frames: Tensor) -> Tensor:
        return self.encoder(frames)

    def observe(self, frame: Tensor, previous: Tensor | None = None) -> Tensor:
        """The latent of a frame (B, 3, H, W), given the frame before it (the same frame when there
        is none, i.e. the arm at rest, as after a reset or in a goal frame)."""
        frames = [frame] + [frame if previous is None else previous] * (self.history - 1)
        return self.encoder(torch.cat(frames, 1))

    @torch.no_grad()
    def target(self, frames: Tensor) -> Tensor:
        return self.target_encoder(frames)

    @torch.no_grad()
    def update_target(self, decay: float) -> None:
        """EMA: target <- decay * target + (1 - decay) * online."""
        for t, o in zip(self.target_encoder.parameters(), self.encoder.parameters()):
            t.lerp_(o, 1.0 - decay)

    def step(self, z: Tensor, u: Tensor) -> Tensor:
        if u.ndim != 2 or u.shape[1] != self.actions or u.shape[0] != z.shape[0]:
            raise ValueError(f"expected actions of shape ({z.shape[0]}, {self.actions}), got {tuple(u.shape)}")
        for layer in self.layers:
            z = layer(z, u)
        return z

    def rollout(self, z: Tensor, actions: Tensor) -> Tensor:
        """Open-loop latents after each action: z (B, D, H, W), actions (B, T, A) -> (B, T, D, H, W)."""
        out = []
        for t in range(actions.shape[1]):
            z = self.step(z, actions[:, t])
            out.append(z)
        return torch.stack(out, 1)

    def reward(self, z: Tensor) -> Tensor:
        return self.reward_head(z.mean(dim=(-2, -1))).squeeze(-1)


def conv_width_for(target: int, latent: int = 16, actions: int = 2, blocks: int = 2) -> int:
    """The ConvDynamics width whose parameter count is closest to ``target``."""
    return matched_width(lambda w: ConvDynamics(latent, actions, w, blocks), target)


def variance_covariance(z: Tensor) -> tuple[Tensor, Tensor]:
    """VICReg-style terms of latents (B, D, H, W), every position a sample of D channels: the mean
    hinge ``relu(1 - std)`` per channel, and the mean squared off-diagonal channel covariance."""
    x = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    x = x - x.mean(0)
    std = (x.var(0) + 1e-4).sqrt()
    cov = x.T @ x / max(len(x) - 1, 1)
    off = cov - torch.diag(torch.diag(cov))
    return F.relu(1.0 - std).mean(), (off**2).sum() / z.shape[1]


def world_model_loss(model: WorldModel, frames: Tensor, actions: Tensor, rewards: Tensor, ar_steps: int = 0,
                     var_weight: float = 1.0, cov_weight: float = 0.04, reward_weight: float = 0.1,
                     recon_weight: float = 0.0, recon_focus: float = 0.0) -> dict[str, Tensor]:
    """Multi-step latent prediction loss of sequences: observations (B, T+1, 3 * history, H, W) in
    [0, 1] (:func:`stack_history`), actions (B, T, A), rewards (B, T).

    Step t predicts the EMA target latent of observation t+1 from an input latent: for the first
    ``ar_steps`` steps the model's own previous prediction (autoregressive; step 0 starts from the
    encoded observation 0), after that the online encoding of observation t (teacher forcing).
    With ``recon_weight > 0`` (needs the model's decoder), the decoder must also reproduce the
    newest frame from every online latent and from every predicted latent (mean squared pixel
    error at the decoder's resolution), so neither the encoder nor the dynamics can drop what the
    frames show. ``recon_focus = k`` weights by ``1 + k`` the pixels that move within a sequence
    (more than 0.1 summed over the channels from the sequence's per-pixel median): the thin arm
    covers a few percent of a frame, and an unweighted mean lets the decoder draw the background."""
    B, T1 = frames.shape[:2]
    T = T1 - 1
    if actions.shape[:2] != (B, T) or rewards.shape != (B, T):
        raise ValueError(f"frames {tuple(frames.shape)}, actions {tuple(actions.shape)} and rewards "
                         f"{tuple(rewards.shape)} do not describe the same (B, T) sequences")
    if recon_weight > 0 and model.decoder is None:
        raise ValueError("recon_weight > 0 needs a model built with decoder=True")
    flat = frames.flatten(0, 1)
    online = model.encode(flat).unflatten(0, (B, T1))
    targets = model.target(frames[:, 1:].flatten(0, 1)).unflatten(0, (B, T))
    pred, losses = None, []
    preds = []
    for t in range(T):
        z_in = pred if (pred is not None and t < ar_steps) else online[:, t]
        pred = model.step(z_in, actions[:, t])
        preds.append(pred)
        losses.append(F.mse_loss(pred, targets[:, t]))
    preds = torch.stack(preds, 1)
    var, cov = variance_covariance(online.flatten(0, 1))
    reward = F.mse_loss(model.reward(preds.flatten(0, 1)), rewards.flatten())
    prediction = torch.stack(losses).mean()
    total = prediction + var_weight * var + cov_weight * cov + reward_weight * reward
    out = {"prediction": prediction, "per_step": torch.stack(losses).detach(), "variance": var,
           "covariance": cov, "reward": reward}
    if recon_weight > 0:
        newest = frames[:, :, :3]
        w = None
        if recon_focus > 0:
            size = tuple(n * model.decoder.upsample for n in online.shape[-2:])   # the decoder's output size
            small = F.adaptive_avg_pool2d(newest.flatten(0, 1), size).unflatten(0, (B, T1))
            moving = ((small - small.median(1, keepdim=True).values).abs().sum(2, keepdim=True) > 0.1).float()
            w = 1.0 + recon_focus * moving
        recon = (model.decoder.loss(online.flatten(0, 1), newest.flatten(0, 1), None if w is None else w.flatten(0, 1))
                 + model.decoder.loss(preds.flatten(0, 1), newest[:, 1:].flatten(0, 1),
                                      None if w is None else w[:, 1:].flatten(0, 1)))
        total = total + recon_weight * recon
        out["reconstruction"] = recon
    return {"total": total, **out}


@torch.no_grad()
def latent_cost(model: WorldModel, z0: Tensor, z_goal: Tensor):
    """The CEM cost of action sequences (P, H, A): the smallest squared distance of a predicted
    latent from the goal latent over the H steps. z0, z_goal: (1, D, h, w)."""

    def cost(actions: Tensor) -> Tensor:
        z = model.rollout(z0.expand(len(actions), -1, -1, -1), actions)
        return ((z - z_goal.unsqueeze(1)) ** 2).flatten(2).sum(-1).min(1).values

    return cost


@torch.no_grad()
def cem_plan(cost, horizon: int, action_dim: int, population: int = 64, elites: int = 8, iterations: int = 4,
             generator: torch.Generator | None = None, mean: Tensor | None = None, std: float = 0.7,
             low: float = -1.0, high: float = 1.0) -> Tensor:
    """The cross-entropy method over action sequences: sample ``population`` Gaussian sequences
    (horizon, action_dim), clipped to [low, high], score them with ``cost`` (batched, lower is
    better), refit mean and std to the ``elites`` best, ``iterations`` times. Returns the final mean
    (horizon, action_dim); warm-start with ``mean`` (e.g. the previous plan shifted by one step)."""
    if not 1 <= elites <= population:
        raise ValueError(f"need 1 <= elites <= population, got {elites} and {population}")
    if horizon < 1 or iterations < 1:
        raise ValueError(f"need horizon >= 1 and iterations >= 1, got {horizon} and {iterations}")
    mu = torch.zeros(horizon, action_dim) if mean is None else mean.clone()
    sigma = torch.full((horizon, action_dim), float(std))
    for _ in range(iterations):
        noise = torch.randn(population, horizon, action_dim, generator=generator)
        samples = (mu + sigma * noise).clamp(low, high)
        samples[0] = mu.clamp(low, high)  # keep the current mean among the candidates
        best = samples[torch.topk(cost(samples), elites, largest=False).indices]
        mu, sigma = best.mean(0), best.std(0, unbiased=False).clamp_min(0.05)
    return mu
