"""Full-batch L-BFGS, as used by :func:`sp_dynamics.fit` and the refinement phase of
:func:`sp_dynamics.meta.meta_train`.

The small, smooth regression problems of this library (derivative matching of a few thousand
states) are solved far more accurately by full-batch L-BFGS with a strong-Wolfe line search than
by Adam: on a DNO instance Adam stalls at a relative loss of 1e-3 to 1e-6, L-BFGS reaches 1e-7 in
the same time (``experiments/PROTOCOL.md``, "Why the GENERIC networks did not learn").
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import Tensor

__all__ = ["make_lbfgs", "lbfgs_closure"]


def make_lbfgs(params: Iterable[Tensor], evaluations: int, history: int = 50) -> torch.optim.LBFGS:
    """An L-BFGS optimiser that makes at most ``evaluations`` loss evaluations per ``step`` call
    and never stops early on its own tolerances (the caller decides when to stop)."""
    return torch.optim.LBFGS(list(params), lr=1.0, max_iter=evaluations, max_eval=evaluations, history_size=history,
                             tolerance_grad=0.0, tolerance_change=0.0, line_search_fn="strong_wolfe")


def lbfgs_closure(opt: torch.optim.Optimizer, params: list[Tensor], loss_fn: Callable[[], Tensor],
                  on_loss: Callable[[float], None] | None = None) -> Callable[[], Tensor]:
    """The closure L-BFGS calls: zero the gradients, evaluate ``loss_fn()``, backpropagate.

    Gradients are made contiguous (torch's L-BFGS flattens them with ``view``, which fails for the
    strided gradients of sliced parameters such as a modulation head's). ``on_loss`` sees every
    evaluated loss. A non-finite loss raises ``FloatingPointError`` instead of feeding NaN into the
    curvature history."""

    def closure() -> Tensor:
        opt.zero_grad()
        loss = loss_fn()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {float(loss.detach())}")
        loss.backward()
        for p in params:
            if p.grad is not None and not p.grad.is_contiguous():
                p.grad = p.grad.contiguous()
        if on_loss is not None:
            on_loss(float(loss.detach()))
        return loss

    return closure
