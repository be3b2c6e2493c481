"""Metriplector domain models built from sp-dynamics primitives.

Present: the exact screened-Poisson CG solver with implicit differentiation
(:func:`screened_poisson_solve` on :class:`GridGraph` / :class:`EdgeGraph`), the causal
Poisson scan (:func:`causal_scan`, :func:`causal_scan_loop`), the metriplectic field layer with
the stress-energy readout (:class:`MetriplecticLayer`, :func:`stress_energy`), the maze
domain (:mod:`metriplector.maze`) and the vision domain (:mod:`metriplector.vision`:
:class:`MetriplectorVision`, data in :mod:`metriplector.images`), language, pixel MNIST and the
Sudoku data and models (:mod:`metriplector.sudoku_data`, :mod:`metriplector.sudoku`). Not yet:
the world-model domain.
"""

from .graphs import EdgeGraph, GridGraph
from .layers import FieldCoupling, MetriplecticLayer, stress_energy, stress_from_gradients
from .poisson import ConvergenceWarning, PoissonConvergenceError, SolveInfo, poisson_operator, screened_poisson_solve
from .scan import causal_scan, causal_scan_loop
from .vision import MetriplectorVision, ResNetBaseline, VisionLayer

__all__ = [
    "GridGraph",
    "EdgeGraph",
    "screened_poisson_solve",
    "poisson_operator",
    "SolveInfo",
    "ConvergenceWarning",
    "PoissonConvergenceError",
    "causal_scan",
    "causal_scan_loop",
    "FieldCoupling",
    "MetriplecticLayer",
    "stress_energy",
    "stress_from_gradients",
    "VisionLayer",
    "MetriplectorVision",
    "ResNetBaseline",
]
