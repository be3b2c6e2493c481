"""Meta-learning on parameter families: evolving-latent meta-training and latent auto-decoding."""

from .adaptation import adapt_latent, support_loss
from .training import MetaConfig, meta_train

__all__ = ["MetaConfig", "meta_train", "adapt_latent", "support_loss"]
