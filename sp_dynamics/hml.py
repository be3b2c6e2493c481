"""Hamiltonian Memory Layer (HML): a sequence layer whose state evolves under a learned
Hamiltonian with a symplectic integrator (``experiments/PROTOCOL.md``; proposal by Y. Wang).

State ``s_t = (q_t, p_t)`` in R^{2D}, ``H(q, p) = p^T p / 2 + V(q)`` (unit mass), the input
acts as an external force ``F_t = W_f x_t`` on p, and each time step is one leapfrog
(kick-drift-kick) step of a learnable size dt:

    p_half = p - dt/2 (grad V(q) - F_t);  q' = q + dt p_half;  p' = p_half - dt/2 (grad V(q') - F_t)

optionally followed by exact damping ``p' <- exp(-dt gamma) p'`` with gamma >= 0 (a PSD
dissipation ``-diag(gamma) p``; off by default: a conservative layer cannot forget). The output
is ``y_t = W_o [q_t, p_t] + b``.

Potentials: ``"quadratic"`` -- V = sum_i k_i q_i^2 / 2 with k_i >= 0 (the linear variant: per
channel a 2x2 symplectic map, so the whole sequence is an exact associative scan, as in LinOSS,
Rusch & Rus 2025); ``"mlp"`` -- V = sum_i k_i q_i^2 / 2 + MLP(q) (nonlinear, sequential).

Dimension letters: B batch, T time, D oscillators (state size 2D), I input, O output.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .nn import MLP, gradient

__all__ = ["HamiltonianMemoryLayer", "HMLStack", "linear_leapfrog_coefficients", "scan_affine_2x2"]


def linear_leapfrog_coefficients(k: Tensor, dt: Tensor) -> tuple[Tensor, Tensor]:
    """Leapfrog for V = k q^2 / 2 as ``(q', p') = A (q, p) + u F``: A (..., 2, 2), u (..., 2).

    ``det A = 1`` exactly in exact arithmetic (symplectic); stable (|eigenvalues| = 1) for
    ``dt^2 k < 4``.
    """
    a = dt**2 * k / 2
    A = torch.stack(
        [torch.stack([1 - a, dt.expand_as(a)], -1), torch.stack([-(dt * k / 2) * (2 - a), 1 - a], -1)], -2
    )
    u = torch.stack([dt.expand_as(a) ** 2 / 2, dt * (1 - a / 2)], -1)
    return A, u


def scan_affine_2x2(A: Tensor, b: Tensor) -> Tensor:
    """All prefix states of ``s_t = A_t s_{t-1} + b_t`` (s_{-1} = 0) along dim 1 (time).

    A: (B or 1, T, D, 2, 2), b: (B, T, D, 2) -> (B, T, D, 2). Hillis--Steele doubling with the
    composition ``(A2, b2) o (A1, b1) = (A2 A1, A2 b1 + b2)``: log2(T) rounds.
    """
    T = b.shape[1]
    A = A.expand(b.shape[0], *A.shape[1:])
    d = 1  # (A of shape (1, T, ...) broadcasts over the batch)
    while d < T:
        A_prev = torch.cat([torch.eye(2, dtype=A.dtype, device=A.device).expand_as(A[:, :d]), A[:, :-d]], 1)
        b_prev = torch.cat([torch.zeros_like(b[:, :d]), b[:, :-d]], 1)
        b = (A @ b_prev.unsqueeze(-1)).squeeze(-1) + b
        A = A @ A_prev
        d *= 2
    return b


class HamiltonianMemoryLayer(nn.Module):
    """One HML over sequences (B, T, I) -> (B, T, O), with final state (q, p).

    Args:
        input_size, state_size (D), output_size.
        potential: ``"quadratic"`` (linear variant, parallel scan available) or ``"mlp"``.
        dt: initial step size (learnable, per channel). Quadratic potential: kept inside the
            leapfrog stability limit, ``dt = 0.95 (2 / sqrt(k)) sigmoid(.)``; MLP potential:
            positive by softplus.
        damping: add a learnable non-negative damping gamma (off by default).
        stiffness_range: initial k_i log-uniform in this range (diverse frequencies).
        hidden: width of the potential MLP.
        mode: ``"loop"`` (sequential) or ``"scan"`` (quadratic potential only).
        selective: input-dependent step per channel, ``dt_t = softplus(c + W x_t)`` (LinOSS /
            Mamba-style selectivity). Every step stays symplectic whatever its size; a step
            near zero freezes the oscillators, so blank inputs need not cost memory.
    """

    def __init__(self, input_size: int, state_size: int, output_size: int, potential: str = "quadratic",
                 dt: float = 0.5, damping: bool = False, stiffness_range: tuple[float, float] = (0.01, 3.0),
                 hidden: int = 32, mode: str = "loop", selective: bool = False):
        super().__init__()
        if potential not in ("quadratic", "mlp"):
            raise ValueError(f"potential must be 'quadratic' or 'mlp', got {potential!r}")
        if mode not in ("loop", "scan") or (mode == "scan" and potential != "quadratic"):
            raise ValueError("mode must be 'loop' or 'scan', and 'scan' needs the quadratic potential")
        self.input_size, self.D, self.output_size = input_size, state_size, output_size
        self.potential, self.mode, self.damping = potential, mode, damping
        lo, hi = stiffness_range
        k0 = torch.exp(torch.empty(state_size).uniform_(math.log(lo), math.log(hi)))
        self.raw_k = nn.Parameter(torch.log(torch.expm1(k0)))  # softplus^-1
        if potential == "quadratic":
            # dt = dt_max sigmoid(raw) with dt_max = 0.95 * 2 / sqrt(k): inside the leapfrog
            # stability limit dt^2 k < 4 for any parameters and inputs (|eigenvalues| = 1)
            frac = torch.clamp(dt / self._dt_max(k0), 0.01, 0.99)
            self.raw_dt = nn.Parameter(torch.log(frac / (1 - frac)))
        else:
            self.raw_dt = nn.Parameter(torch.full((state_size,), math.log(math.expm1(dt))))
        self.raw_gamma = nn.Parameter(torch.full((state_size,), -4.0)) if damping else None
        self.force = nn.Linear(input_size, state_size)
        self.readout = nn.Linear(2 * state_size, output_size)
        self.V_net = MLP(state_size, 1, hidden, 2) if potential == "mlp" else None
        self.dt_proj = nn.Linear(input_size, state_size) if selective else None
        if selective:
            nn.init.zeros_(self.dt_proj.weight)
            nn.init.zeros_(self.dt_proj.bias)

    # -- physics ---------------------------------------------------------------------------------
    @property
    def stiffness(self) -> Tensor:
        return F.softplus(self.raw_k)

    @staticmethod
    def _dt_max(k: Tensor) -> Tensor:
        return 0.95 * 2.0 / torch.sqrt(k)

    def _dt_from_raw(self, raw: Tensor) -> Tensor:
        if self.potential == "quadratic":
            return self._dt_max(self.stiffness.to(raw)) * torch.sigmoid(raw)
        return F.softplus(raw)

    @property
    def dt(self) -> Tensor:
        """Per-channel step (D,) (the step for zero input when ``selective``)."""
        return self._dt_from_raw(self.raw_dt)

    def potential_energy(self, q: Tensor) -> Tensor:
        V = 0.5 * (self.stiffness.to(q) * q**2).sum(-1)
        if self.V_net is not None:
            V = V + self.V_net(q).squeeze(-1)
        return V

    def energy(self, q: Tensor, p: Tensor) -> Tensor:
        """H(q, p) = p^T p / 2 + V(q), shape (...)."""
        return 0.5 * (p**2).sum(-1) + self.potential_energy(q)

    def grad_V(self, q: Tensor) -> Tensor:
        if self.V_net is None:
            return self.stiffness.to(q) * q
        return gradient(self.potential_energy, q)

    def step_sizes(self, x: Tensor) -> Tensor:
        """Step sizes (B, T, D) for inputs (B, T, I) (constant unless ``selective``)."""
        if self.dt_proj is None:
            return self.dt.to(x).expand(x.shape[0], x.shape[1], self.D)
        return self._dt_from_raw(self.raw_dt.to(x) + self.dt_proj(x))

    def step(self, q: Tensor, p: Tensor, force: Tensor, dt: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One kick-drift-kick step (plus damping if enabled). ``dt < 0`` runs time backwards."""
        dt = self.dt.to(q) if dt is None else dt
        p = p - 0.5 * dt * (self.grad_V(q) - force)
        q = q + dt * p
        p = p - 0.5 * dt * (self.grad_V(q) - force)
        if self.raw_gamma is not None:
            p = p * torch.exp(-dt * F.softplus(self.raw_gamma.to(q)))
        return q, p

    # -- sequences -------------------------------------------------------------------------------
    def states(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """All states (q_t, p_t) after each input, each (B, T, D)."""
        self._check(x)
        B, T, _ = x.shape
        forces = self.force(x)
        dts = self.step_sizes(x)                                                       # (B, T, D)
        if state is None:
            q = p = x.new_zeros(B, self.D)
        else:
            q, p = state
        if self.mode == "scan":
            if self.raw_gamma is not None:
                raise ValueError("the scan mode does not support damping; use mode='loop'")
            A, u = linear_leapfrog_coefficients(self.stiffness.to(x), dts)   # (B, T, D, 2, 2), (B, T, D, 2)
            b = u * forces.unsqueeze(-1)                                     # (B, T, D, 2)
            b = b.clone()
            b[:, 0] = b[:, 0] + (A[:, 0] @ torch.stack([q, p], -1).unsqueeze(-1)).squeeze(-1)  # initial state
            s = scan_affine_2x2(A, b)
            return s[..., 0], s[..., 1]
        qs, ps = [], []
        for t in range(T):
            q, p = self.step(q, p, forces[:, t], dts[:, t])
            qs.append(q)
            ps.append(p)
        return torch.stack(qs, 1), torch.stack(ps, 1)

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        qs, ps = self.states(x, state)
        return self.readout(torch.cat([qs, ps], -1)), (qs[:, -1], ps[:, -1])

    def _check(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or x.ndim != 3 or x.shape[-1] != self.input_size:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"HML input must have shape (batch, time, {self.input_size}), got {shape}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("HML input contains NaN or inf")


class HMLStack(nn.Module):
    """Token embedding, ``n_layers`` HMLs with residual connections and LayerNorm, and a head.

    Shapes: tokens (B, T) int64 -> logits (B, T, vocab).
    """

    def __init__(self, vocab: int, width: int, state_size: int, n_layers: int = 1, **layer_kwargs):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.layers = nn.ModuleList(HamiltonianMemoryLayer(width, state_size, width, **layer_kwargs) for _ in range(n_layers))
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(n_layers))
        self.head = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, vocab))

    def forward(self, tokens: Tensor) -> Tensor:
        if tokens.ndim != 2 or tokens.dtype != torch.long:
            raise ValueError(f"tokens must be an int64 tensor (batch, time), got {tokens.dtype} {tuple(tokens.shape)}")
        h = self.embed(tokens)
        for layer, norm in zip(self.layers, self.norms):
            y, _ = layer(h)
            h = norm(h + y)
        return self.head(h)
