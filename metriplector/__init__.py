"""Metriplector domain models built from sp-dynamics primitives.

Present: the exact screened-Poisson CG solver with implicit differentiation
(:func:`screened_poisson_solve` on :class:`GridGraph` / :class:`EdgeGraph`), the causal
Poisson scan (:func:`causal_scan`, :func:`causal_scan_loop`), the metriplectic field layer with
the stress-energy readout (:class:`MetriplecticLayer`, :func:`stress_energy`) and the maze
domain (:mod:`metriplector.maze`). Not yet: Sudoku, vision, language and world-model domains.
"""

from .graphs import EdgeGraph, GridGraph
from .layers import FieldCoupling, MetriplecticLayer, stress_energy
from .poisson import ConvergenceWarning, PoissonConvergenceError, SolveInfo, poisson_operator, screened_poisson_solve
from .scan import causal_scan, causal_scan_loop

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
]
