"""Meta-learning on parameter families: evolving-latent meta-training and latent auto-decoding."""

from .adaptation import adapt_latent, adapt_latent_gauss_newton, support_loss
from .baselines import GradientMetaConfig, adapt_all, train_maml, train_reptile, train_scratch
from .maml import maml_meta_gradient
from .training import MetaConfig, load_run, meta_train, save_run

__all__ = [
    "MetaConfig",
    "meta_train",
    "save_run",
    "load_run",
    "adapt_latent",
    "adapt_latent_gauss_newton",
    "support_loss",
    "maml_meta_gradient",
    "GradientMetaConfig",
    "train_maml",
    "train_reptile",
    "train_scratch",
    "adapt_all",
]
