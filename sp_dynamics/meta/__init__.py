"""Meta-learning on parameter families: evolving-latent meta-training, latent auto-decoding and
the MAML / ANIL / Reptile / Scratch baselines, under one vocabulary (train -> adapter -> adapt,
:mod:`.methods`), and the protocol's scoring of adapted models (:mod:`.evaluation`)."""

from .adaptation import (adapt_latent, adapt_latent_gauss_newton, adapt_latent_lstsq, field_is_linear_in_latent,
                         support_loss)
from .baselines import GradientMetaConfig, adapt_all, train_maml, train_reptile, train_scratch
from .evaluation import FunctionalField, data_region, evaluate_fields
from .maml import maml_meta_gradient
from .methods import (AdaptConfig, GradientAdapter, LatentAdapter, ScratchAdapter, train_gradient, train_latent,
                      train_scratch_adapter)
from .training import MetaConfig, load_run, meta_train, save_run

__all__ = [
    "MetaConfig",
    "meta_train",
    "save_run",
    "load_run",
    "AdaptConfig",
    "LatentAdapter",
    "GradientAdapter",
    "ScratchAdapter",
    "train_latent",
    "train_gradient",
    "train_scratch_adapter",
    "adapt_latent",
    "adapt_latent_gauss_newton",
    "adapt_latent_lstsq",
    "field_is_linear_in_latent",
    "support_loss",
    "maml_meta_gradient",
    "GradientMetaConfig",
    "train_maml",
    "train_reptile",
    "train_scratch",
    "adapt_all",
    "evaluate_fields",
    "data_region",
    "FunctionalField",
]
