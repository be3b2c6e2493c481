"""Metriplector domain models built from sp-dynamics primitives.

Present: the exact screened-Poisson CG solver with implicit differentiation
(:func:`screened_poisson_solve` on :class:`GridGraph` / :class:`EdgeGraph`) and the causal
Poisson scan (:func:`causal_scan`, :func:`causal_scan_loop`). Not yet: metriplectic Euler
layers, the stress-energy readout, the maze domain and the benchmarks (issue 4).
"""

from .graphs import EdgeGraph, GridGraph
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
]
