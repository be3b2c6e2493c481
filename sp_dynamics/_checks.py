"""Input checks shared by the library: clear ``ValueError``s instead of deep torch traces."""

from __future__ import annotations

import torch
from torch import Tensor


def check_shape(x: Tensor, dim: int, name: str = "state") -> Tensor:
    """Cheap check (no host sync) that x is a tensor of shape (..., dim)."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim == 0 or x.shape[-1] != dim:
        raise ValueError(
            f"{name} must have shape (..., {dim}) (last dimension = state dimension {dim}), "
            f"got shape {tuple(x.shape)}"
        )
    return x


def check_state(x: Tensor, dim: int, name: str = "state") -> Tensor:
    """Validate a batch of states of shape (..., dim).

    Raises ValueError naming the problem: not a tensor, wrong last dimension, NaN or inf.
    """
    check_shape(x, dim, name)
    check_finite(x, name)
    return x


def check_finite(x: Tensor, name: str) -> Tensor:
    """Raise ValueError if ``x`` holds NaN or inf (skipped under tracing / torch.func transforms)."""
    if torch.jit.is_tracing() or _is_functorch_tensor(x):
        return x
    finite = torch.isfinite(x.detach())
    if not bool(finite.all()):
        n_bad = int((~finite).sum())
        kind = "NaN" if bool(torch.isnan(x.detach()).any()) else "inf"
        raise ValueError(f"{name} contains {n_bad} non-finite value(s) ({kind}); first shape {tuple(x.shape)}")
    return x


def check_tokens(tokens: Tensor, vocab: int, context: int | None = None) -> Tensor:
    """Token ids (batch, time) for a sequence model: int64, in 0..vocab-1, at most ``context`` long."""
    if tokens.ndim != 2 or tokens.dtype != torch.long:
        raise ValueError(f"tokens must be an int64 tensor (batch, time), got {tokens.dtype} {tuple(tokens.shape)}")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab):
        raise ValueError(f"token ids must lie in 0..{vocab - 1}, got {int(tokens.min())}..{int(tokens.max())}")
    if context is not None and tokens.shape[1] > context:
        raise ValueError(f"sequence of {tokens.shape[1]} tokens exceeds the model's context of {context}")
    return tokens


def check_sequence(x, features: int, name: str) -> Tensor:
    """Real-valued sequences (batch, time, features) for a sequence classifier."""
    if not isinstance(x, Tensor) or x.ndim != 3 or x.shape[-1] != features or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} input must be a float tensor (batch, time, {features}), got {shape}")
    return x


def _is_functorch_tensor(x: Tensor) -> bool:
    # Inside torch.func.vmap / grad, data-dependent Python control flow is not allowed.
    try:
        from torch._C._functorch import is_batchedtensor, is_gradtrackingtensor

        return bool(is_batchedtensor(x) or is_gradtrackingtensor(x))
    except Exception:  # pragma: no cover - private API moved
        return False
