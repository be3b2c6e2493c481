"""One vocabulary for every few-shot method: **train -> adapter -> adapt**.

Each ``train_*`` function meta-trains on the training systems and returns an *adapter*; an
adapter's ``adapt(x, dx)`` takes support sets (K, N, n) of K new systems and returns K adapted
``(t, x)`` vector fields, ready for :func:`sp_dynamics.integrate` or
:func:`sp_dynamics.meta.evaluate_fields`::

    adapter = train_latent(model, x, dx, config=MetaConfig(), run_dir="runs/svd")
    fields = adapter.adapt(xs, dxs)                      # one field per support set

    adapter = train_gradient("maml", net, x, dx, config=GradientMetaConfig())
    fields = adapter.adapt(xs, dxs)

Arguments after the data are keyword-only, and every method takes its settings as ``config``.

* :class:`LatentAdapter` (FW, Shift, RO, MR, SVD): the base is frozen and only a latent is fitted
  per system (auto-decoding), by Adam (the paper) or by Gauss-Newton (:class:`AdaptConfig`).
* :class:`GradientAdapter` (MAML, ANIL, Reptile): gradient steps on the network's parameters
  from the meta-learned initialisation.
* :class:`ScratchAdapter`: a fresh network per system, trained on its shots by
  :func:`sp_dynamics.fit`.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from ..fitting import FitConfig
from .adaptation import adapt_latent, adapt_latent_gauss_newton, adapt_latent_lstsq
from .baselines import GradientMetaConfig, adapt_all, last_layer, train_maml, train_reptile, train_scratch
from .evaluation import FunctionalField
from .maml import hnn_field
from .training import MetaConfig, meta_train

__all__ = ["AdaptConfig", "LatentAdapter", "GradientAdapter", "ScratchAdapter", "train_latent", "train_gradient",
           "train_scratch_adapter", "LATENT_METHODS", "GRADIENT_METHODS", "METHODS"]

LATENT_METHODS = ("fw", "shift", "ro", "mr", "svd", "head")
GRADIENT_METHODS = ("maml", "anil", "reptile")
METHODS = LATENT_METHODS + GRADIENT_METHODS + ("scratch",)
LATENT_SOLVERS = ("adam", "gauss_newton", "lstsq")


@dataclass(frozen=True)
class AdaptConfig:
    """How a latent model is adapted to a new system.

    Attributes:
        solver: ``"adam"`` (the paper's gradient auto-decoding: ``steps`` Adam steps at ``lr``),
            ``"gauss_newton"`` (``gn_steps`` least-squares steps in the latent; float64) or
            ``"lstsq"`` (one exact least-squares solve, for fields linear in the latent: the
            ``head`` modulation of a Hamiltonian model; refused for others).
        init: start latent, ``"mean"`` of the training latents (the paper) or ``"zero"``.
        entropy_penalty: GENERIC models: the entropy-orientation term (Adam only).
    """

    solver: str = "adam"
    steps: int = 500
    lr: float = 1e-2
    gn_steps: int = 10
    init: str = "mean"
    entropy_penalty: float = 1.0

    def validate(self) -> None:
        if self.solver not in LATENT_SOLVERS:
            raise ValueError(f"AdaptConfig.solver must be one of {LATENT_SOLVERS}, got {self.solver!r}")
        if self.init not in ("mean", "zero"):
            raise ValueError(f"AdaptConfig.init must be 'mean' or 'zero', got {self.init!r}")
        for name in ("steps", "gn_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"AdaptConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"AdaptConfig.lr must be > 0, got {self.lr}")


@dataclass
class LatentAdapter:
    """A meta-trained latent model and its training latents; :meth:`adapt` fits new latents."""

    model: nn.Module
    latents: Tensor
    config: AdaptConfig = dataclasses.field(default_factory=AdaptConfig)
    log: list = dataclasses.field(default_factory=list)

    def start(self) -> Tensor:
        return self.latents.mean(0) if self.config.init == "mean" else torch.zeros_like(self.latents[0])

    def adapt_latents(self, x: Tensor, dx: Tensor) -> Tensor:
        """Adapted latents (K, k) for support sets (K, N, n)."""
        cfg = self.config
        cfg.validate()
        if cfg.solver == "lstsq":
            z = adapt_latent_lstsq(self.model, x, dx)
        elif cfg.solver == "gauss_newton":
            z, _ = adapt_latent_gauss_newton(self.model, x, dx, z_init=self.start(), steps=cfg.gn_steps)
        else:
            z, _ = adapt_latent(self.model, x, dx, z_init=self.start(), steps=cfg.steps, lr=cfg.lr,
                                entropy_penalty=cfg.entropy_penalty)
        return z

    def adapt(self, x: Tensor, dx: Tensor) -> list[nn.Module]:
        """One adapted field per support set, in float64 (the trained model is left as it is)."""
        z = self.adapt_latents(x, dx)
        model = copy.deepcopy(self.model).double()
        return [model.condition(z[i].double()) for i in range(len(z))]


@dataclass
class GradientAdapter:
    """Meta-learned parameters of a network and the inner loop that adapts them (MAML, ANIL,
    Reptile). ``trainable`` selects the adapted parameters (ANIL: the last layers)."""

    net: nn.Module
    params: dict[str, Tensor]
    inner_lr: float
    steps: int
    field: Callable = hnn_field
    trainable: Callable[[str], bool] | None = None
    log: list = dataclasses.field(default_factory=list)

    @property
    def diverged(self) -> bool:
        return bool(self.log and self.log[-1].get("diverged"))

    def adapt(self, x: Tensor, dx: Tensor) -> list[nn.Module]:
        """One adapted field per support set; an empty list if meta-training diverged."""
        if self.diverged:
            return []
        dtype = next(iter(self.params.values())).dtype
        params = adapt_all(self.net, self.params, x.to(dtype), dx.to(dtype), lr=self.inner_lr, steps=self.steps,
                           trainable=self.trainable, field=self.field)
        net = copy.deepcopy(self.net).double()
        return [FunctionalField(net, {k: v[i].detach().double() for k, v in params.items()}, self.field)
                for i in range(x.shape[0])]


@dataclass
class ScratchAdapter:
    """No meta-training: a fresh network from ``factory()`` per support set, fitted on it alone."""

    factory: Callable[[], nn.Module]
    config: FitConfig = dataclasses.field(default_factory=FitConfig)
    field: Callable = hnn_field
    log: list = dataclasses.field(default_factory=list)

    def adapt(self, x: Tensor, dx: Tensor) -> list[nn.Module]:
        params, results = train_scratch(self.factory, x, dx, config=self.config, field=self.field)
        self.log = [{"task": k, "loss": r.final_loss, "evaluations": r.evaluations} for k, r in enumerate(results)]
        net = self.factory().double()
        return [FunctionalField(net, {k: v[i].detach().double() for k, v in params.items()}, self.field)
                for i in range(x.shape[0])]


def train_latent(model: nn.Module, x: Tensor, dx: Tensor, *, config: MetaConfig = MetaConfig(),
                 adapt: AdaptConfig = AdaptConfig(), run_dir: str | Path | None = None,
                 progress: bool | None = None) -> LatentAdapter:
    """Evolving-latent meta-training (:func:`~sp_dynamics.meta.meta_train`) -> a :class:`LatentAdapter`."""
    latents, log = meta_train(model, x, dx, config=config, run_dir=run_dir, progress=progress)
    return LatentAdapter(model, latents, adapt, log)


def train_gradient(method: str, net: nn.Module, x: Tensor, dx: Tensor, *,
                   config: GradientMetaConfig = GradientMetaConfig(), adapt_steps: int = 10,
                   field: Callable = hnn_field) -> GradientAdapter:
    """MAML (second order), ANIL or Reptile meta-training of ``net`` -> a :class:`GradientAdapter`
    that takes ``adapt_steps`` inner steps at ``config.inner_lr``. A diverged run is not an
    error: its adapter returns no fields and ``adapter.diverged`` is true."""
    if method not in GRADIENT_METHODS:
        raise ValueError(f"unknown gradient method {method!r}; choose from {GRADIENT_METHODS}")
    if method == "reptile":
        params, log = train_reptile(net, x, dx, config=config, field=field)
    else:
        params, log = train_maml(net, x, dx, config=config, anil=method == "anil", field=field)
    trainable = last_layer(net) if method == "anil" else None
    return GradientAdapter(net, params, config.inner_lr, adapt_steps, field, trainable, log)


def train_scratch_adapter(factory: Callable[[], nn.Module], *, config: FitConfig = FitConfig(),
                          field: Callable = hnn_field) -> ScratchAdapter:
    """The Scratch baseline's adapter (nothing to meta-train)."""
    return ScratchAdapter(factory, config, field)
