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

(One file of about 500 lines on purpose: the layer's five modes -- loop, scan, fft, chunked, reversible --
are five evaluations of the same recurrence that the tests hold equal in values and gradients,
and they are easiest to keep equal side by side.)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .._checks import check_sequence, check_tokens
from ..nn import MLP, gradient
from ..serialization import serializable
from .scan import affine_scan

__all__ = [
    "HamiltonianMemoryLayer", "HMLStack", "HMLClassifier", "causal_conv_fft", "chunked_linear_states", "energy_trace",
    "linear_leapfrog_coefficients", "matrix_powers", "phase_space",
]


def linear_leapfrog_coefficients(k: Tensor, dt: Tensor, gamma: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Leapfrog for V = k q^2 / 2 as ``(q', p') = A (q, p) + u F``: A (..., 2, 2), u (..., 2).

    ``det A = 1`` exactly in exact arithmetic (symplectic); stable (|eigenvalues| = 1) for
    ``dt^2 k < 4``. With damping ``gamma`` the p row is scaled by ``exp(-dt gamma)`` (then
    ``det A = exp(-dt gamma) <= 1``).
    """
    a = dt**2 * k / 2
    A = torch.stack(
        [torch.stack([1 - a, dt.expand_as(a)], -1), torch.stack([-(dt * k / 2) * (2 - a), 1 - a], -1)], -2
    )
    u = torch.stack([dt.expand_as(a) ** 2 / 2, dt * (1 - a / 2)], -1)
    if gamma is not None:
        decay = torch.stack([torch.ones_like(a), torch.exp(-dt * gamma).expand_as(a)], -1)
        A, u = A * decay.unsqueeze(-1), u * decay
    return A, u


def matrix_powers(A: Tensor, n: int) -> Tensor:
    """``A^0, ..., A^(n-1)`` for A (..., 2, 2) by doubling: (n, ..., 2, 2)."""
    P = torch.eye(2, dtype=A.dtype, device=A.device).expand(1, *A.shape)
    A_m = A  # A^m, m = current number of powers
    while P.shape[0] < n:
        P = torch.cat([P, A_m @ P], 0)
        A_m = A_m @ A_m
    return P[:n]


def causal_conv_fft(F_in: Tensor, kernel: Tensor) -> Tensor:
    """``s_t = sum_{tau <= t} kernel_tau F_{t - tau}`` for F_in (B, T, D), kernel (T, D, 2) -> (B, T, D, 2).

    Zero-padded FFT convolution (length >= 2T - 1, no wrap-around; a power of two, since FFT
    sizes with large prime factors are several times slower): O(T log T) per channel.
    """
    T = F_in.shape[1]
    n = 1 << (2 * T - 1).bit_length()
    spec_F = torch.fft.rfft(F_in.transpose(1, 2), n=n)                  # (B, D, n/2 + 1), time last
    spec_k = torch.fft.rfft(kernel.permute(1, 2, 0), n=n)               # (D, 2, n/2 + 1)
    s = torch.fft.irfft(spec_F.unsqueeze(2) * spec_k, n=n)[..., :T]     # (B, D, 2, T)
    return s.permute(0, 3, 1, 2)


def chunked_linear_states(A: Tensor, u: Tensor, forces: Tensor, s0: Tensor | None, chunk: int) -> Tensor:
    """States of ``s_t = A s_{t-1} + u F_t`` (time-invariant A (D, 2, 2), u (D, 2)) for forces
    (B, T, D) and initial state s0 (B, D, 2) or None (zero): (B, T, D, 2).

    Chunked evaluation (the block form of a linear recurrence, as in the SSD algorithm of
    Mamba-2, Dao & Gu 2024): cut time into chunks of ``chunk`` steps; inside a chunk the states
    are one batched matrix product with the lower-triangular Toeplitz kernel ``A^(r - r') u``
    (B T D chunk work, dense BLAS); the chunk-end states are carried across chunks by an
    associative scan with ``A^chunk``, and ``A^(r + 1)`` applies the carried state to each step.
    Exact (no truncation). On a CPU it is 1.2-2x faster than the FFT convolution at T ~ 1000 and
    3.5-4.6x faster at T = 10^4-10^5, and autograd keeps 2-6x less memory for backward than for the FFT
    (``experiments/results/bench_hml_memory*.md``).
    """
    B, T, D = forces.shape
    c = max(1, min(int(chunk), T))
    m = -(-T // c)
    P = matrix_powers(A, c + 1)                                          # A^0 .. A^c, (c + 1, D, 2, 2)
    k = (P[:c] @ u.unsqueeze(-1)).squeeze(-1)                            # kernel A^tau u, (c, D, 2)
    lag = torch.arange(c, device=forces.device)
    lag = lag[:, None] - lag[None, :]
    K = k[lag.clamp(min=0)] * (lag >= 0).to(k)[..., None, None]          # (c, c, D, 2), zero above the diagonal
    Fc = F.pad(forces, (0, 0, 0, m * c - T)).view(B, m, c, D)
    inner = torch.einsum("bmsd,rsdk->bmrdk", Fc, K)                      # zero-start states per chunk
    ends = inner[:, :, -1]                                               # (B, m, D, 2)
    if s0 is not None:
        ends = torch.cat([ends[:, :1] + (P[c] @ s0.unsqueeze(-1)).squeeze(-1).unsqueeze(1), ends[:, 1:]], 1)
    carried = affine_scan(P[c].expand(1, m, D, 2, 2), ends, dim=1)       # true state at each chunk's end
    start = torch.zeros_like(carried[:, :1]) if s0 is None else s0.unsqueeze(1)
    before = torch.cat([start, carried[:, :-1]], 1)                      # state before each chunk
    s = inner + torch.einsum("rdkl,bmdl->bmrdk", P[1:], before)
    return s.reshape(B, m * c, D, 2)[:, :T]


MODES = ("loop", "scan", "fft", "chunked", "reversible")


@serializable
class HamiltonianMemoryLayer(nn.Module):
    """One HML over sequences (B, T, I) -> (B, T, O), with final state (q, p).

    Args:
        input_size, state_size (D), output_size.
        potential: ``"quadratic"`` (linear variant, parallel modes available) or ``"mlp"``.
        dt: initial step size (learnable, per channel). Quadratic potential: kept inside the
            leapfrog stability limit, ``dt = 0.95 (2 / sqrt(k)) sigmoid(.)``; MLP potential:
            positive by softplus.
        damping: add a learnable non-negative damping gamma (off by default).
        stiffness_range: initial k_i log-uniform in this range (``frequencies="random"``).
        frequencies: ``"random"`` (stiffness log-uniform, step ``dt``) or ``"linear"``: unit
            stiffness and steps whose per-step rotation angles are evenly spaced,
            ``theta_n = 2.4 n / D`` (the analogue of S4D-Lin's ``pi n`` imaginary parts, Gu et
            al. 2022). Harmonic angles let a linear readout form sharp delay kernels
            ``sum_n c_n cos(theta_n tau + phi_n)`` at long lags; ``dt`` is then ignored.
        hidden: width of the potential MLP.
        mode: how the sequence is computed; all give the same values and gradients.
            ``"loop"``: sequential, autograd stores every step. ``"scan"``: exact associative
            scan (quadratic potential). ``"fft"``: the state is a causal convolution of the
            forces with the kernel ``A^tau u``, done by FFT (quadratic, not selective).
            ``"reversible"``: sequential; backward rebuilds the states from the final state by
            running the leapfrog backwards, so only ``ceil(T / checkpoint_every)`` states are
            stored; exact states are kept every ``checkpoint_every`` steps so float32
            round-off in the reconstruction cannot accumulate over more than that many steps
            (UnICORNN, Rusch & Mishra 2021, does the reconstruction without checkpoints).
            ``"chunked"``: block evaluation of the linear recurrence
            (:func:`chunked_linear_states`; quadratic, not selective), the fastest exact mode
            on a CPU from ~500 steps on in our measurements.
        selective: input-dependent step per channel, ``dt_t = dt(c + W x_t)`` (LinOSS /
            Mamba-style selectivity), still inside the stability limit. Every step stays
            symplectic whatever its size; a step near zero freezes the oscillators.
        checkpoint_every: checkpoint spacing of the reversible mode.
        chunk: chunk length of the chunked mode.
    """

    def __init__(self, input_size: int, state_size: int, output_size: int, potential: str = "quadratic",
                 dt: float = 0.5, damping: bool = False, stiffness_range: tuple[float, float] = (0.01, 3.0),
                 hidden: int = 32, mode: str = "loop", selective: bool = False, frequencies: str = "random",
                 checkpoint_every: int = 64, chunk: int = 32):
        super().__init__()
        if potential not in ("quadratic", "mlp"):
            raise ValueError(f"potential must be 'quadratic' or 'mlp', got {potential!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode in ("scan", "fft", "chunked") and potential != "quadratic":
            raise ValueError(f"mode={mode!r} needs the quadratic potential (a nonlinear potential is not "
                             "associative); use mode='loop' or 'reversible'")
        if mode in ("fft", "chunked") and selective:
            raise ValueError(f"mode={mode!r} needs time-invariant steps; use mode='scan' for selective steps")
        if frequencies not in ("random", "linear"):
            raise ValueError(f"frequencies must be 'random' or 'linear', got {frequencies!r}")
        for name, value in (("checkpoint_every", checkpoint_every), ("chunk", chunk)):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.input_size, self.D, self.output_size = input_size, state_size, output_size
        self.potential, self.mode, self.damping = potential, mode, damping
        self.checkpoint_every, self.chunk = int(checkpoint_every), int(chunk)
        if frequencies == "linear":
            # leapfrog on k q^2/2 rotates by theta with cos(theta) = 1 - dt^2 k / 2, i.e.
            # dt sqrt(k) = 2 sin(theta / 2); 2.4 rad keeps every channel inside the dt bound below
            k0 = torch.ones(state_size)
            dt0 = 2 * torch.sin(1.2 * torch.arange(1, state_size + 1) / state_size)
        else:
            lo, hi = stiffness_range
            k0 = torch.exp(torch.empty(state_size).uniform_(math.log(lo), math.log(hi)))
            dt0 = torch.full((state_size,), float(dt))
        self.raw_k = nn.Parameter(torch.log(torch.expm1(k0)))  # softplus^-1
        if potential == "quadratic":
            # dt = dt_max sigmoid(raw) with dt_max = 0.95 * 2 / sqrt(k): inside the leapfrog
            # stability limit dt^2 k < 4 for any parameters and inputs (|eigenvalues| = 1)
            frac = torch.clamp(dt0 / self._dt_max(k0), 0.01, 0.99)
            self.raw_dt = nn.Parameter(torch.log(frac / (1 - frac)))
        else:
            self.raw_dt = nn.Parameter(torch.log(torch.expm1(dt0)))
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

    @property
    def gamma(self) -> Tensor | None:
        """Damping rates (D,) >= 0, or None without damping."""
        return None if self.raw_gamma is None else F.softplus(self.raw_gamma)

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

    def rotation_angles(self) -> Tensor:
        """Per-step phase advance theta (D,) of each free oscillator (quadratic potential, zero input)."""
        if self.potential != "quadratic":
            raise ValueError("rotation angles are defined for the quadratic potential only")
        return torch.arccos(1 - self.dt**2 * self.stiffness / 2)

    def most_read_channels(self, n: int = 4) -> list[int]:
        """The ``n`` oscillators whose (q, p) the readout weighs most (column norms), sorted."""
        with torch.no_grad():
            weight = self.readout.weight.reshape(self.output_size, 2, self.D).norm(dim=(0, 1))
        return weight.topk(min(n, self.D)).indices.sort().values.tolist()

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
            return self.dt.to(x).expand(*x.shape[:-1], self.D)
        return self._dt_from_raw(self.raw_dt.to(x) + self.dt_proj(x))

    def step(self, q: Tensor, p: Tensor, force: Tensor, dt: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One kick-drift-kick step (plus damping if enabled). ``dt < 0`` runs time backwards."""
        dt = self.dt.to(q) if dt is None else dt
        p = p - 0.5 * dt * (self.grad_V(q) - force)
        q = q + dt * p
        p = p - 0.5 * dt * (self.grad_V(q) - force)
        if self.raw_gamma is not None:
            p = p * torch.exp(-dt * self.gamma.to(q))
        return q, p

    def inverse_step(self, q: Tensor, p: Tensor, force: Tensor, dt: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The exact inverse of :meth:`step` (undo damping, then kick-drift-kick with -dt)."""
        dt = self.dt.to(q) if dt is None else dt
        if self.raw_gamma is not None:
            p = p * torch.exp(dt * self.gamma.to(q))
        p = p + 0.5 * dt * (self.grad_V(q) - force)
        q = q - dt * p
        p = p + 0.5 * dt * (self.grad_V(q) - force)
        return q, p

    # -- sequences -------------------------------------------------------------------------------
    def _initial(self, x: Tensor, state: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor]:
        if state is None:
            zero = x.new_zeros(x.shape[0], self.D)
            return zero, zero
        q, p = state
        for name, s in (("q", q), ("p", p)):
            if s.shape != (x.shape[0], self.D):
                raise ValueError(f"initial {name} must have shape ({x.shape[0]}, {self.D}), got {tuple(s.shape)}")
        return q, p

    def states(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """All states (q_t, p_t) after each input, each (B, T, D)."""
        self._check(x)
        T = x.shape[1]
        q, p = self._initial(x, state)
        forces = self.force(x)
        if self.mode in ("scan", "fft", "chunked"):
            k, gamma = self.stiffness.to(x), None if self.gamma is None else self.gamma.to(x)
            s0 = torch.stack([q, p], -1)                                     # (B, D, 2)
            if self.mode == "chunked":
                A, u = linear_leapfrog_coefficients(k, self.dt.to(x), gamma)
                s = chunked_linear_states(A, u, forces, None if state is None else s0, self.chunk)
            elif self.mode == "fft":
                A, u = linear_leapfrog_coefficients(k, self.dt.to(x), gamma)  # (D, 2, 2), (D, 2)
                P = matrix_powers(A, T + 1)                                  # A^0 .. A^T
                s = causal_conv_fft(forces, (P[:T] @ u.unsqueeze(-1)).squeeze(-1))
                if state is not None:
                    s = s + (P[1:] @ s0[:, None, :, :, None]).squeeze(-1)
            else:
                dts = self.step_sizes(x) if self.dt_proj is not None else self.dt.to(x).expand(1, T, self.D)
                A, u = linear_leapfrog_coefficients(k, dts, gamma)            # (B or 1, T, D, 2, 2)
                b = u * forces.unsqueeze(-1)                                 # (B, T, D, 2)
                if state is not None:
                    b = torch.cat([b[:, :1] + (A[:, :1] @ s0[:, None, :, :, None]).squeeze(-1), b[:, 1:]], 1)
                s = affine_scan(A, b, dim=1)
            return s[..., 0], s[..., 1]
        dts = self.step_sizes(x)
        qs, ps = [], []
        for f_t, dt_t in zip(forces.unbind(1), dts.unbind(1)):  # unbind: a linear-time backward (see affine_scan_loop)
            q, p = self.step(q, p, f_t, dt_t)
            qs.append(q)
            ps.append(p)
        return torch.stack(qs, 1), torch.stack(ps, 1)

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        if self.mode == "reversible" and torch.is_grad_enabled():
            self._check(x)
            q0, p0 = self._initial(x, state)
            params = tuple(self.parameters())
            y, q, p = _ReversibleLeapfrog.apply(self, x, q0, p0, *params)
            return y, (q, p)
        qs, ps = self.states(x, state)
        return self.readout(torch.cat([qs, ps], -1)), (qs[:, -1], ps[:, -1])

    def _check(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or x.ndim != 3 or x.shape[-1] != self.input_size:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"HML input must have shape (batch, time, {self.input_size}), got {shape}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("HML input contains NaN or inf")


class _ReversibleLeapfrog(torch.autograd.Function):
    """Sequential HML whose backward reconstructs the states instead of storing them.

    Saved for backward: the input x (already alive as the previous layer's output), the final
    state, and one exact state every ``checkpoint_every`` steps -- O(T / k) states instead of
    the loop's O(T) states and intermediates. Backward walks t = T-1 .. 0: it rebuilds the state
    before step t with :meth:`HamiltonianMemoryLayer.inverse_step` (or takes the checkpoint),
    re-runs step t with autograd on, and pulls the cotangents back through it.
    """

    @staticmethod
    def forward(ctx, layer: HamiltonianMemoryLayer, x: Tensor, q: Tensor, p: Tensor, *params: Tensor):
        every, T = layer.checkpoint_every, x.shape[1]
        with torch.no_grad():
            forces, dts = layer.force(x), layer.step_sizes(x)
            ys, checkpoints = [], []
            for t in range(T):
                if t % every == 0:
                    checkpoints.append(torch.stack([q, p]))
                q, p = layer.step(q, p, forces[:, t], dts[:, t])
                ys.append(layer.readout(torch.cat([q, p], -1)))
        ctx.layer = layer
        ctx.save_for_backward(x, torch.stack(checkpoints), q, p)
        return torch.stack(ys, 1), q, p

    @staticmethod
    @once_differentiable
    def backward(ctx, gy: Tensor, gq: Tensor, gp: Tensor):
        layer = ctx.layer
        x, checkpoints, q, p = ctx.saved_tensors
        every, T = layer.checkpoint_every, x.shape[1]
        params = tuple(layer.parameters())
        trainable = [i for i, w in enumerate(params) if w.requires_grad]
        gparams = [torch.zeros_like(params[i]) for i in trainable]
        gx = torch.zeros_like(x)
        with torch.no_grad():
            forces, dts = layer.force(x), layer.step_sizes(x)
        for t in reversed(range(T)):
            if t % every == 0:
                q_prev, p_prev = checkpoints[t // every].unbind(0)
            else:
                with torch.no_grad():
                    q_prev, p_prev = layer.inverse_step(q, p, forces[:, t], dts[:, t])
            with torch.enable_grad():
                qi, pi = q_prev.detach().requires_grad_(), p_prev.detach().requires_grad_()
                xi = x[:, t].detach().requires_grad_()
                q1, p1 = layer.step(qi, pi, layer.force(xi), layer.step_sizes(xi))
                y = layer.readout(torch.cat([q1, p1], -1))
                grads = torch.autograd.grad(
                    (q1, p1, y), (qi, pi, xi, *(params[i] for i in trainable)), (gq, gp, gy[:, t]),
                    allow_unused=True)
            gq, gp, gx[:, t] = grads[0], grads[1], grads[2]
            for acc, g in zip(gparams, grads[3:]):
                if g is not None:
                    acc += g
            q, p = q_prev, p_prev
        out: list[Tensor | None] = [None] * len(params)
        for i, g in zip(trainable, gparams):
            out[i] = g
        return None, gx, gq, gp, *out


class _ResidualHMLs(nn.Module):
    """``n_layers`` HMLs of width ``width``, each added residually and LayerNormed, with an
    optional residual GELU MLP after each (nonlinear mixing between layers; ``mlp_ratio`` > 0)."""

    def __init__(self, width: int, state_size: int, n_layers: int, mlp_ratio: int, **layer_kwargs):
        super().__init__()
        if int(n_layers) < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        self.layers = nn.ModuleList(HamiltonianMemoryLayer(width, state_size, width, **layer_kwargs) for _ in range(n_layers))
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(n_layers))
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(width), nn.Linear(width, mlp_ratio * width), nn.GELU(),
                          nn.Linear(mlp_ratio * width, width)) for _ in range(n_layers)) if mlp_ratio else None

    def mix(self, h: Tensor, stop: int | None = None) -> Tensor:
        """(B, T, width) -> (B, T, width) through every layer (through the first ``stop``
        layers if given: the input that layer ``stop`` sees)."""
        for k, (layer, norm) in enumerate(zip(self.layers[:stop], self.norms[:stop])):
            y, _ = layer(h)
            h = norm(h + y)
            if self.mlps is not None:
                h = h + self.mlps[k](h)
        return h


@serializable
class HMLStack(_ResidualHMLs):
    """Token embedding, ``n_layers`` HMLs with residual connections and LayerNorm, and a head.

    Shapes: tokens (B, T) int64 -> logits (B, T, vocab).
    """

    def __init__(self, vocab: int, width: int, state_size: int, n_layers: int = 1, mlp_ratio: int = 0,
                 **layer_kwargs):
        super().__init__(width, state_size, n_layers, mlp_ratio, **layer_kwargs)
        self.vocab, self.context = vocab, None
        self.embed = nn.Embedding(vocab, width)
        self.head = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, vocab))

    def forward(self, tokens: Tensor) -> Tensor:
        check_tokens(tokens, self.vocab)
        return self.head(self.mix(self.embed(tokens)))


@serializable
class HMLClassifier(_ResidualHMLs):
    """Sequence classifier: real inputs (B, T, input_size) -> class logits (B, classes).

    A linear input map to ``width``, the residual HML layers of :class:`HMLStack`, pooling over
    time (``pool``: ``"last"`` step or ``"mean"``), and a two-layer head (e.g. pixel MNIST: one
    pixel per step, ``input_size`` 1).
    """

    def __init__(self, input_size: int, classes: int, width: int, state_size: int, n_layers: int = 2,
                 mlp_ratio: int = 2, pool: str = "last", **layer_kwargs):
        super().__init__(width, state_size, n_layers, mlp_ratio, **layer_kwargs)
        if pool not in ("last", "mean"):
            raise ValueError(f"pool must be 'last' or 'mean', got {pool!r}")
        self.input_size, self.classes, self.pool = input_size, classes, pool
        self.inp = nn.Linear(input_size, width)
        self.head = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, classes))

    def forward(self, x: Tensor) -> Tensor:
        check_sequence(x, self.input_size, "HMLClassifier")
        h = self.mix(self.inp(x))
        return self.head(h[:, -1] if self.pool == "last" else h.mean(1))


# -- diagnostics -----------------------------------------------------------------------------------
def energy_trace(layer: HamiltonianMemoryLayer, x: Tensor, state: tuple[Tensor, Tensor] | None = None) -> dict[str, Tensor]:
    """Energy of a layer's state along a sequence x (B, T, I), each entry (B, T).

    ``H``: ``H(q_t, p_t)``. ``H_forced``: ``H(q_t, p_t) - F_t . q_t``, the energy of the system
    in the current force field: while the input (hence the force) stays constant it is a
    conserved quantity of the forced flow, so leapfrog keeps it bounded without drift; it
    changes only where the input changes (the input does work). ``work``: the jump of
    ``H_forced`` at each step that is due to the change of force, ``-(F_t - F_{t-1}) . q_{t-1}``.
    ``H_shadow`` (quadratic potential without damping only): the quadratic form that leapfrog
    conserves exactly, ``sum_i p_i^2 / 2 + (k_i / 2) (1 - dt_i^2 k_i / 4) (q_i - F_i / k_i)^2``
    (``A^T Q A = Q`` for the one-step map A): constant to round-off while the input is
    constant, so it shows what the layer holds and where the input changes it.
    """
    with torch.no_grad():
        qs, ps = layer.states(x, state)
        forces = layer.force(x)
        H = layer.energy(qs, ps)
        H_forced = H - (forces * qs).sum(-1)
        q_prev = torch.cat([torch.zeros_like(qs[:, :1]) if state is None else state[0][:, None], qs[:, :-1]], 1)
        f_prev = torch.cat([torch.zeros_like(forces[:, :1]), forces[:, :-1]], 1)
        work = -((forces - f_prev) * q_prev).sum(-1)
        out = {"H": H, "H_forced": H_forced, "work": work}
        if layer.potential == "quadratic" and layer.gamma is None:
            k, dts = layer.stiffness.to(x), layer.step_sizes(x)
            shadow = 0.5 * ps**2 + 0.5 * k * (1 - dts**2 * k / 4) * (qs - forces / k) ** 2
            out["H_shadow"] = shadow.sum(-1)
    return out


def phase_space(layer: HamiltonianMemoryLayer, x: Tensor, channels: list[int] | None = None,
                state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """Phase-space trajectories (q_t, p_t) of the chosen channels, each (B, T, len(channels))."""
    channels = list(range(min(layer.D, 4))) if channels is None else list(channels)
    bad = [c for c in channels if not 0 <= c < layer.D]
    if bad:
        raise ValueError(f"channels {bad} out of range for a layer with {layer.D} oscillators")
    with torch.no_grad():
        qs, ps = layer.states(x, state)
    return qs[..., channels], ps[..., channels]
