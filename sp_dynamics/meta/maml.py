"""MAML for Hamiltonian and GENERIC networks with torch.func, batched over tasks.

The HNN field ``J grad_x H(x; theta)`` (:func:`hnn_field`) and the GENERIC field
``L grad E + M grad S`` of a :class:`~sp_dynamics.GENERICNet` (:func:`generic_field`) are written
functionally (``functional_call`` + ``torch.func.grad`` over x); every function here takes the
field as ``field=`` (default :func:`hnn_field`), so the inner-loop adaptation ``theta' = theta - a grad L_s(theta)``
and the meta-gradient ``grad_theta L_q(theta')`` compose as function transforms: second-order
MAML through a derivative-matching HNN loss differentiates H three times. All tasks of a batch
go through ``torch.func.vmap`` (no Python loop over tasks). ``first_order=True`` stops the
gradient through the inner updates (FOMAML).

Shapes: support and query sets x, dx of (K, N, n) for K tasks.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

__all__ = ["hnn_field", "generic_field", "hnn_loss", "field_loss", "adapt_params", "maml_meta_gradient"]

Params = dict[str, Tensor]
FieldFn = Callable[[nn.Module, Params, Tensor], Tensor]


def hnn_field(energy_net: nn.Module, params: Params, x: Tensor) -> Tensor:
    """``J grad_x H(x)`` for points x (N, n) with H = ``energy_net`` evaluated at ``params``."""
    d = x.shape[-1] // 2

    def H(xi: Tensor) -> Tensor:
        return functional_call(energy_net, params, (xi,)).sum()

    dH = vmap(grad(H))(x)
    return torch.cat([dH[..., d:], -dH[..., :d]], -1)


def _sub(params: Params, prefix: str) -> Params:
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


def generic_field(net: nn.Module, params: Params, x: Tensor) -> Tensor:
    """``L grad E + M grad S`` of a GENERICNet ``net`` at ``params`` for points x (N, n).

    The bracket is applied to the gradients as in ``GENERICNet.forward``, so an exact bracket
    (projection, basis) keeps ``dE/dt = 0`` and ``dS/dt >= 0`` for any parameters, adapted
    ones included.
    """
    def scalar(prefix: str, module: nn.Module):
        return lambda xi: functional_call(module, _sub(params, prefix), (xi,)).sum()

    dE = vmap(grad(scalar("energy_net.", net.energy_net)))(x)
    dS = vmap(grad(scalar("entropy_net.", net.entropy_net)))(x)
    return functional_call(net.bracket, _sub(params, "bracket."), (x, dE, dS))


def field_loss(net: nn.Module, params: Params, x: Tensor, dx: Tensor, field: FieldFn = hnn_field) -> Tensor:
    """Derivative matching ``mean ||f(x) - dx||^2`` over points (N, n) for the field ``field``."""
    return (field(net, params, x) - dx).pow(2).sum(-1).mean()


def hnn_loss(energy_net: nn.Module, params: Params, x: Tensor, dx: Tensor) -> Tensor:
    """Derivative matching ``mean ||J grad H(x) - dx||^2`` over points (N, n)."""
    return field_loss(energy_net, params, x, dx, hnn_field)


def adapt_params(energy_net: nn.Module, params: Params, x: Tensor, dx: Tensor, inner_lr: float, inner_steps: int,
                 first_order: bool = False, trainable: Callable[[str], bool] | None = None,
                 field: FieldFn = hnn_field) -> Params:
    """``inner_steps`` of gradient descent on one task's support loss (differentiable).

    ``trainable(name)`` selects the adapted parameters (ANIL: the last layer only); the others
    stay at their meta values.
    """
    for _ in range(inner_steps):
        grads = grad(lambda p: field_loss(energy_net, p, x, dx, field))(params)
        new = {}
        for name, p in params.items():
            if trainable is not None and not trainable(name):
                new[name] = p
                continue
            g = grads[name].detach() if first_order else grads[name]
            new[name] = p - inner_lr * g
        params = new
    return params


def maml_meta_gradient(energy_net: nn.Module, params: Params, support: tuple[Tensor, Tensor],
                       query: tuple[Tensor, Tensor], inner_lr: float, inner_steps: int = 1,
                       first_order: bool = False, trainable: Callable[[str], bool] | None = None,
                       field: FieldFn = hnn_field) -> tuple[Params, Tensor]:
    """Meta-gradient of the mean query loss after inner adaptation, over K tasks at once.

    Returns (gradients w.r.t. ``params``, mean query loss).
    """
    xs, dxs = support
    xq, dxq = query
    if xs.ndim != 3 or xq.ndim != 3 or xs.shape[0] != xq.shape[0]:
        raise ValueError("support and query sets must be (K, N, n) with the same number of tasks K")

    def task_loss(p: Params, xs_, dxs_, xq_, dxq_) -> Tensor:
        adapted = adapt_params(energy_net, p, xs_, dxs_, inner_lr, inner_steps, first_order, trainable, field)
        return field_loss(energy_net, adapted, xq_, dxq_, field)

    def meta_loss(p: Params) -> Tensor:
        return vmap(task_loss, in_dims=(None, 0, 0, 0, 0))(p, xs, dxs, xq, dxq).mean()

    loss = meta_loss(params)
    return grad(meta_loss)(params), loss.detach()
