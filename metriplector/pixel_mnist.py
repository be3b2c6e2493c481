"""Pixel MNIST: digits read one pixel per step (784 steps), the classic long-range benchmark of
recurrent networks (Le, Jaitly & Hinton 2015), and the sequence classifiers compared on it.

``sequential``: the pixels in raster order. ``permuted``: one fixed permutation of the 784
positions (:func:`permutation`, drawn from ``torch.Generator().manual_seed(0)``), applied to every
image, which spreads each stroke over the whole sequence.

Inputs are standardised pixels, ``(x / 255 - 0.1307) / 0.3081`` (MNIST's mean and std), one
per step, shape (B, 784, 1). Models map them to class logits (B, 10):

* the HML (:class:`sp_dynamics.sequence.HMLClassifier`);
* :class:`RNNClassifier`: one LSTM or GRU layer;
* :class:`MetriplectorClassifier`: causal Poisson blocks (:class:`~metriplector.language.CausalPoissonBlock`).

All share the same ends: the last step's hidden state (the final state of the sequence
model, read after all 784 pixels) and a two-layer GELU head. (A linear probe on the final
state of one untrained HML layer with 128 oscillators at evenly spaced frequencies already
classifies 91% of the permuted test digits; pooling the mean over time instead smears those
Fourier-like features, and the HML learned far more slowly with it in our first trials.)
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from sp_dynamics._checks import check_sequence
from sp_dynamics.serialization import serializable

from .language import CausalPoissonBlock

__all__ = ["ORDERS", "SEQUENCE_LENGTH", "permutation", "pixel_sequences", "RNNClassifier", "MetriplectorClassifier"]

ORDERS = ("sequential", "permuted")
SEQUENCE_LENGTH = 784
MEAN, STD = 0.1307, 0.3081
PERMUTATION_SEED = 0


def permutation(order: str) -> Tensor:
    """Pixel order (784,) int64: the identity (``sequential``) or the fixed permutation (``permuted``)."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if order == "sequential":
        return torch.arange(SEQUENCE_LENGTH)
    return torch.randperm(SEQUENCE_LENGTH, generator=torch.Generator().manual_seed(PERMUTATION_SEED))


def pixel_sequences(images: np.ndarray, order: str) -> Tensor:
    """uint8 images (N, 28, 28) -> standardised pixel sequences (N, 784, 1) float32 in ``order``."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"pixel MNIST needs uint8 images of shape (N, 28, 28), got {images.dtype} {images.shape}")
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0).sub_(MEAN).div_(STD)
    return x.view(len(images), SEQUENCE_LENGTH)[:, permutation(order)].unsqueeze(-1).contiguous()


def _head(width: int, classes: int) -> nn.Module:
    return nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, classes))


@serializable
class RNNClassifier(nn.Module):
    """One LSTM or GRU layer of ``hidden`` units, the last step's hidden state, a two-layer head."""

    def __init__(self, kind: str, input_size: int, classes: int, hidden: int):
        super().__init__()
        if kind not in ("lstm", "gru"):
            raise ValueError(f"kind must be 'lstm' or 'gru', got {kind!r}")
        self.kind, self.input_size, self.classes = kind, input_size, classes
        self.rnn = (nn.LSTM if kind == "lstm" else nn.GRU)(input_size, hidden, batch_first=True)
        self.head = _head(hidden, classes)

    def forward(self, x: Tensor) -> Tensor:
        check_sequence(x, self.input_size, type(self).__name__)
        return self.head(self.rnn(x)[0][:, -1])


@serializable
class MetriplectorClassifier(nn.Module):
    """A linear input map, ``depth`` causal Poisson blocks (token-level chains solved by the
    parallel scan), LayerNorm, the last step, a two-layer head."""

    def __init__(self, input_size: int, classes: int, width: int, depth: int = 2, fields: int = 8, mlp_ratio: int = 2,
                 memory_range: tuple[float, float] = (0.5, 0.999)):
        super().__init__()
        self.input_size, self.classes = input_size, classes
        self.inp = nn.Linear(input_size, width)
        self.blocks = nn.ModuleList(CausalPoissonBlock(width, fields, 1, mlp_ratio, memory_range=tuple(memory_range))
                                    for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.head = _head(width, classes)

    def forward(self, x: Tensor) -> Tensor:
        check_sequence(x, self.input_size, type(self).__name__)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h[:, -1]))
