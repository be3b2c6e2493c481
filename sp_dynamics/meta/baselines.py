"""Gradient-based meta-learning baselines: MAML, ANIL, Reptile, Scratch.

All use a functional field of :mod:`sp_dynamics.meta.maml` -- the HNN (``field=hnn_field``, the
default; the network is the energy MLP) or the GENERIC network (``field=generic_field``; the
network is a :class:`~sp_dynamics.GENERICNet`) -- and are batched over tasks with
``torch.func.vmap`` (per-task parameters carry a leading task dimension K). Divergence is not
an exception: a non-finite loss ends training and is recorded (``log[-1]["diverged"]``), as the
protocol asks for NaN/divergence to be reported as it happens.

Shapes: per-system data (S, P, n); support/query sets (K, N, n).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import grad, vmap

from ..fitting import FitConfig, FitResult, fit
from ..models import HamiltonianNN
from .maml import FieldFn, adapt_params, field_loss, hnn_field, maml_meta_gradient
from .training import sample_tasks

__all__ = ["GradientMetaConfig", "train_maml", "train_reptile", "adapt_all", "train_scratch", "last_layer",
           "batched_field"]

Params = dict[str, Tensor]


@dataclass(frozen=True)
class GradientMetaConfig:
    iterations: int = 1000
    tasks_per_batch: int = 10
    support_points: int = 128
    query_points: int = 128
    inner_lr: float = 1e-2
    inner_steps: int = 1
    outer_lr: float = 1e-3
    first_order: bool = False
    reptile_step: float = 0.1
    reptile_inner_steps: int = 5
    grad_clip: float = 1.0
    seed: int = 0


def last_layer(net: nn.Module) -> callable:
    """Selector of the last linear layer's parameters (ANIL adapts only these).

    For a GENERIC network (``energy_net`` and ``entropy_net`` attributes) the last layers of both
    the energy and the entropy networks; the bracket stays at its meta-learned value.
    """
    if hasattr(net, "energy_net") and hasattr(net, "entropy_net"):
        lasts = {f"{prefix}.{name.rsplit('.', 1)[0]}" for prefix in ("energy_net", "entropy_net")
                 for name in [[n for n, _ in getattr(net, prefix).named_parameters()][-1]]}
    else:
        lasts = {[name for name, _ in net.named_parameters()][-1].rsplit(".", 1)[0]}
    return lambda name: name.rsplit(".", 1)[0] in lasts


def _params(net: nn.Module) -> Params:
    return {k: v.detach().clone().requires_grad_(True) for k, v in net.named_parameters()}


def _sample(x: Tensor, dx: Tensor, K: int, n_s: int, n_q: int, gen: torch.Generator):
    P = x.shape[1]
    if n_s + n_q > P:
        raise ValueError(f"support ({n_s}) + query ({n_q}) points exceed the {P} points per system")
    _, xb, dxb = sample_tasks(x, dx, K, n_s + n_q, gen)
    return (xb[:, :n_s], dxb[:, :n_s]), (xb[:, n_s:], dxb[:, n_s:])


def _clip_(grads: Params, max_norm: float) -> None:
    total = torch.sqrt(sum(g.pow(2).sum() for g in grads.values()))
    if total > max_norm:
        for g in grads.values():
            g.mul_(max_norm / (total + 1e-12))


def _batch_size(cfg: GradientMetaConfig, S: int) -> int:
    if cfg.tasks_per_batch > S:
        raise ValueError(f"tasks_per_batch = {cfg.tasks_per_batch} exceeds the {S} training systems; "
                         f"set it to at most {S}")
    return cfg.tasks_per_batch


def train_maml(energy_net: nn.Module, x: Tensor, dx: Tensor, *, config: GradientMetaConfig = GradientMetaConfig(),
               anil: bool = False, field: FieldFn = hnn_field) -> tuple[Params, list[dict]]:
    """MAML (second order unless ``config.first_order``) or ANIL (last layer adapted) meta-training.

    Returns the meta-learned parameters and the log (``log[-1]["diverged"]`` on divergence)."""
    cfg = config
    gen = torch.Generator().manual_seed(cfg.seed)
    params = _params(energy_net)
    opt = torch.optim.Adam(list(params.values()), lr=cfg.outer_lr)
    trainable = last_layer(energy_net) if anil else None
    log: list[dict] = []
    K = _batch_size(cfg, x.shape[0])
    for it in range(cfg.iterations):
        support, query = _sample(x, dx, K, cfg.support_points, cfg.query_points, gen)
        grads, loss = maml_meta_gradient(energy_net, {k: v.detach() for k, v in params.items()}, support, query,
                                         cfg.inner_lr, cfg.inner_steps, cfg.first_order, trainable, field)
        if not math.isfinite(float(loss)) or not all(torch.isfinite(g).all() for g in grads.values()):
            log.append({"iteration": it + 1, "loss": float(loss), "diverged": True})
            break
        _clip_(grads, cfg.grad_clip)
        for k, p in params.items():
            p.grad = grads[k]
        opt.step()
        log.append({"iteration": it + 1, "loss": float(loss), "diverged": False})
    return {k: v.detach() for k, v in params.items()}, log


def adapt_all(energy_net: nn.Module, params: Params, x: Tensor, dx: Tensor, *, lr: float, steps: int,
              trainable=None, field: FieldFn = hnn_field) -> Params:
    """Gradient-descent adaptation of shared ``params`` to each of K support sets at once:
    per-task parameters with a leading dimension K."""
    return vmap(lambda xs, dxs: adapt_params(energy_net, params, xs, dxs, lr, steps, True, trainable, field))(x, dx)


def batched_field(energy_net: nn.Module, task_params: Params, x: Tensor, field: FieldFn = hnn_field) -> Tensor:
    """Fields of K per-task parameter sets at their own points x (K, N, n)."""
    return vmap(lambda p, xs: field(energy_net, p, xs))(task_params, x)


def train_reptile(energy_net: nn.Module, x: Tensor, dx: Tensor, *, config: GradientMetaConfig = GradientMetaConfig(),
                  field: FieldFn = hnn_field) -> tuple[Params, list[dict]]:
    """Reptile: adapt per task with SGD, then move the shared parameters toward the mean of the
    adapted ones, ``theta <- theta + eps (mean_k theta_k - theta)``."""
    cfg = config
    gen = torch.Generator().manual_seed(cfg.seed)
    params = {k: v.detach() for k, v in _params(energy_net).items()}
    log: list[dict] = []
    K = _batch_size(cfg, x.shape[0])
    for it in range(cfg.iterations):
        (xs, dxs), (xq, dxq) = _sample(x, dx, K, cfg.support_points, cfg.query_points, gen)
        adapted = adapt_all(energy_net, params, xs, dxs, lr=cfg.inner_lr, steps=cfg.reptile_inner_steps, field=field)
        loss = float(vmap(lambda p, a, b: field_loss(energy_net, p, a, b, field))(adapted, xq, dxq).mean())
        if not math.isfinite(loss) or not all(torch.isfinite(v).all() for v in adapted.values()):
            log.append({"iteration": it + 1, "loss": loss, "diverged": True})
            break
        params = {k: v + cfg.reptile_step * (adapted[k].mean(0) - v) for k, v in params.items()}
        log.append({"iteration": it + 1, "loss": loss, "diverged": False})
    return params, log


def train_scratch(net_factory, x: Tensor, dx: Tensor, *, config: FitConfig | None = None,
                  field: FieldFn = hnn_field) -> tuple[Params, list[FitResult]]:
    """Scratch baseline: a fresh network per task trained on its K shots only by
    :func:`sp_dynamics.fit` (x, dx: (K, N, n)).

    ``net_factory()`` builds the network ``field`` expects: the energy MLP for ``hnn_field``, a
    :class:`~sp_dynamics.GENERICNet` for ``generic_field``. The networks keep identity input
    standardisation (the functional field shares one set of buffers across tasks). Returns the
    per-task parameters (leading dimension K) and each task's :class:`~sp_dynamics.FitResult`.
    """
    config = config or FitConfig()
    config = dataclasses.replace(config, standardize=False)
    params, results = [], []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        for k in range(x.shape[0]):
            net = net_factory()
            model = HamiltonianNN(x.shape[-1], energy=net) if field is hnn_field else net
            results.append(fit(model, x[k], dx[k], config=dataclasses.replace(config, seed=config.seed + k),
                               progress=False))
            params.append({name: p.detach() for name, p in net.named_parameters()})
    return {name: torch.stack([p[name] for p in params]) for name in params[0]}, results
