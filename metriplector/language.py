"""Causal Metriplector language model, and the baselines it is compared with.

:class:`CausalMetriplectorLM` (Metriplector paper, section 3.6): character embeddings, then
``depth`` non-shared :class:`CausalPoissonBlock` s. Each block configures a causal chain from its
input: per position and field a conductance ``w_t > 0``, a damping ``alpha_t > 0`` and a source
``b_t``. On a chain with only backward edges the screened Poisson equation is the first-order
recurrence ``phi_t = a_t phi_{t-1} + x_t`` with ``a_t = w_t / (w_t + alpha_t)`` and
``x_t = b_t / (w_t + alpha_t)``, solved exactly by :func:`metriplector.causal_scan` (parallel
scan; :func:`causal_scan_loop` is the sequential fallback). The readout is the chain analogue of
the stress-energy features: the fields ``phi``, the chain-gradient energies ``g_i^2`` and the
cross-field products ``g_i g_j`` (i < j) of ``g_t = phi_t - phi_{t-1}``; a linear map mixes them
back into the representation (residual), followed by a residual MLP.

The paper's three-level hierarchy (token, chunk and section scans; section 3.6) is followed in
spirit: a block with ``chunk = s > 1`` runs its scan over the means of consecutive chunks of s
positions and hands chunk k's result to the positions of chunk k + 1 (shifted, so position t
sees only chunks that ended before it: strictly causal). Our choices where the paper is silent:
pre-LayerNorm, GELU MLP of 4x width, chunk sizes per block given by ``chunks`` (default: token
level in the first half of the blocks, chunks of 4 and 16 later), the initial memory
``a = w / (w + alpha)`` spread over 0.5..0.98 across fields, a tied output head.

Baselines for the same runs: :class:`GPT` (decoder-only transformer, pre-LN, learned positions,
``scaled_dot_product_attention`` with a causal mask, tied head), :class:`LSTMLM`, and the HML
stack (:class:`sp_dynamics.sequence.HMLStack`, with an MLP between layers).

All models: tokens (B, T) int64 -> logits (B, T, vocab), causal (the logits at t depend on
tokens 0..t only; tested).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sp_dynamics._checks import check_tokens
from sp_dynamics.serialization import serializable

from .scan import causal_scan, causal_scan_loop

__all__ = ["CausalPoissonBlock", "CausalMetriplectorLM", "GPT", "LSTMLM", "generate"]


class _MLP(nn.Module):
    def __init__(self, width: int, ratio: int = 4):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.up, self.down = nn.Linear(width, ratio * width), nn.Linear(ratio * width, width)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.down(F.gelu(self.up(self.norm(h))))


@serializable
class CausalPoissonBlock(nn.Module):
    """One causal Poisson block, (B, T, D) -> (B, T, D); see the module docstring."""

    def __init__(self, width: int, fields: int = 16, chunk: int = 1, mlp_ratio: int = 4, mode: str = "scan",
                 memory_range: tuple[float, float] = (0.5, 0.98)):
        super().__init__()
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        if mode not in ("scan", "loop"):
            raise ValueError(f"mode must be 'scan' or 'loop', got {mode!r}")
        self.width, self.fields, self.chunk, self.mode = width, fields, chunk, mode
        self.norm = nn.LayerNorm(width)
        self.coef = nn.Linear(width, 3 * fields)  # conductance, damping, source per field
        a0 = torch.linspace(memory_range[0], memory_range[1], fields)
        with torch.no_grad():  # w = 1 and alpha = (1 - a0) / a0 at zero input: a = a0
            self.coef.bias[:fields] = math.log(math.expm1(1.0))
            self.coef.bias[fields : 2 * fields] = torch.log(torch.expm1((1 - a0) / a0))
        n_features = 2 * fields + fields * (fields - 1) // 2
        self.read = nn.Linear(n_features, width)
        self.mlp = _MLP(width, mlp_ratio)

    def chain(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """Coefficients (a, x) of the recurrence for u (B, T', D): each (B, C, T')."""
        C = self.fields
        c = self.coef(u)
        w, alpha, b = F.softplus(c[..., :C]), F.softplus(c[..., C : 2 * C]) + 1e-4, c[..., 2 * C :]
        return (w / (w + alpha)).transpose(1, 2), (b / (w + alpha)).transpose(1, 2)

    def fields_of(self, h: Tensor) -> Tensor:
        """The solved fields per position, (B, T, C)."""
        u = self.norm(h)
        B, T, D = u.shape
        s = self.chunk
        if s > 1:
            n = -(-T // s)
            u = F.pad(u, (0, 0, 0, n * s - T)).view(B, n, s, D).mean(2)      # chunk means
        a, x = self.chain(u)
        phi = (causal_scan if self.mode == "scan" else causal_scan_loop)(a, x).transpose(1, 2)
        if s > 1:  # chunk k's field is seen by the positions of chunk k + 1 on: strictly causal
            phi = F.pad(phi, (0, 0, 1, 0))[:, :-1].repeat_interleave(s, dim=1)[:, :T]
        return phi

    def features(self, phi: Tensor) -> Tensor:
        g = phi - F.pad(phi, (0, 0, 1, 0))[:, :-1]                              # phi_t - phi_{t-1}
        i, j = torch.triu_indices(self.fields, self.fields, 1, device=phi.device)
        return torch.cat([phi, g * g, g[..., i] * g[..., j]], -1)

    def forward(self, h: Tensor) -> Tensor:
        h = h + self.read(self.features(self.fields_of(h)))
        return self.mlp(h)


@serializable
class CausalMetriplectorLM(nn.Module):
    """Character/byte language model of causal Poisson blocks. Tokens (B, T) -> logits (B, T, V)."""

    def __init__(self, vocab: int, width: int = 128, depth: int = 4, fields: int = 16,
                 chunks: tuple[int, ...] | None = None, mlp_ratio: int = 4, mode: str = "scan"):
        super().__init__()
        if chunks is None:
            chunks = tuple(1 if k < (depth + 1) // 2 else (4 if k < depth - 1 else 16) for k in range(depth))
        if len(chunks) != depth:
            raise ValueError(f"chunks must give one chunk size per block ({depth}), got {chunks}")
        self.vocab, self.context = vocab, None  # no fixed context: any length works
        self.embed = nn.Embedding(vocab, width)
        nn.init.normal_(self.embed.weight, std=0.02)  # tied head: unit-variance embeddings give huge logits
        self.blocks = nn.ModuleList(CausalPoissonBlock(width, fields, c, mlp_ratio, mode) for c in chunks)
        self.norm = nn.LayerNorm(width)

    def forward(self, tokens: Tensor) -> Tensor:
        check_tokens(tokens, self.vocab)
        h = self.embed(tokens)
        for block in self.blocks:
            h = block(h)
        return self.norm(h) @ self.embed.weight.T


@serializable
class GPT(nn.Module):
    """Decoder-only transformer (pre-LN, learned positions, causal attention, tied head)."""

    def __init__(self, vocab: int, width: int = 128, depth: int = 4, heads: int = 4, context: int = 128,
                 mlp_ratio: int = 4):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} must be divisible by heads {heads}")
        self.vocab, self.context, self.heads = vocab, context, heads
        self.embed = nn.Embedding(vocab, width)
        nn.init.normal_(self.embed.weight, std=0.02)  # tied head
        self.pos = nn.Parameter(torch.zeros(context, width))
        nn.init.normal_(self.pos, std=0.02)
        self.attn_norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(depth))
        self.qkv = nn.ModuleList(nn.Linear(width, 3 * width) for _ in range(depth))
        self.proj = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.mlps = nn.ModuleList(_MLP(width, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(width)

    def forward(self, tokens: Tensor) -> Tensor:
        check_tokens(tokens, self.vocab, self.context)
        B, T = tokens.shape
        h = self.embed(tokens) + self.pos[:T]
        for norm, qkv, proj, mlp in zip(self.attn_norms, self.qkv, self.proj, self.mlps):
            q, k, v = qkv(norm(h)).view(B, T, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            h = h + proj(y.transpose(1, 2).reshape(B, T, -1))
            h = mlp(h)
        return self.norm(h) @ self.embed.weight.T


@serializable
class LSTMLM(nn.Module):
    """Embedding, a multi-layer LSTM, a linear head."""

    def __init__(self, vocab: int, width: int = 128, depth: int = 2):
        super().__init__()
        self.vocab, self.context = vocab, None
        self.embed = nn.Embedding(vocab, width)
        self.lstm = nn.LSTM(width, width, num_layers=depth, batch_first=True)
        self.head = nn.Linear(width, vocab)

    def forward(self, tokens: Tensor) -> Tensor:
        check_tokens(tokens, self.vocab)
        return self.head(self.lstm(self.embed(tokens))[0])


@torch.no_grad()
def generate(model: nn.Module, prompt: Tensor, steps: int, temperature: float = 1.0,
             generator: torch.Generator | None = None) -> Tensor:
    """Sample ``steps`` tokens after ``prompt`` (1-D int64), re-reading the last ``context``
    tokens each step. ``temperature`` 0 is greedy."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    model.eval()
    seq = prompt.clone()
    context = getattr(model, "context", None)
    for _ in range(steps):
        window = seq[-context:] if context else seq
        logits = model(window[None])[0, -1]
        if temperature == 0:
            nxt = logits.argmax()
        else:
            nxt = torch.multinomial(F.softmax(logits / temperature, -1), 1, generator=generator)[0]
        seq = torch.cat([seq, nxt.view(1)])
    return seq
