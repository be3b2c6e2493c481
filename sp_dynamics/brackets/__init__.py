"""Bracket library: the matrices that carry the structure of a dynamical system.

Dimension letters used in shapes: ``...`` any leading (batch) dimensions, ``n`` the state
dimension, ``r`` a rank, ``k`` a number of basis elements.

* :class:`CanonicalJ` -- the fixed symplectic matrix ``J = [[0, I], [-I, 0]]`` on ``x = (q, p)``
  (zero on any extra coordinates such as entropies).
* :class:`LearnedSkew` -- ``L = A - A^T`` from a strict lower triangle (constant or an MLP of x).
* :class:`LearnedSPD` -- ``M = C C^T + eps I`` with ``C`` lower triangular, positive diagonal.
* GENERIC constructions behind one interface, :class:`GenericBracket`:

  ===================== ==================================== ===========
  construction          source                               degeneracy
  ===================== ==================================== ===========
  :class:`ProjectionBracket` Gruber et al., ICLR 2025          exact
  :class:`BasisBracket`      GFINN, Zhang, Shin, Karniadakis 2022 exact
  :class:`MixedBracket`      L by projection, M from a grad-E basis  exact
  :class:`SoftBracket`       learned L, M + penalty              soft
  :class:`KnownBracket`      user functions L(x), M(x)           by projection
  ===================== ==================================== ===========

  A GENERIC vector field is ``dx/dt = L(x) dE + M(x) dS`` with ``L = -L^T``, ``M = M^T >= 0``
  and the degeneracy conditions ``L dS = 0``, ``M dE = 0``; then ``dE/dt = 0`` and
  ``dS/dt = dS^T M dS >= 0``. Every construction takes the gradients ``dE``, ``dS`` as arguments
  (not only the state), so the same bracket can be built from *discrete* gradients in the
  discrete-gradient integrator.
"""

from .generic import (BasisBracket, GenericBracket, KnownBracket, MixedBracket, ProjectionBracket, SoftBracket,
                      make_bracket)
from .matrices import CanonicalJ, LearnedSkew, LearnedSPD, degeneracy_penalty, guard_eps, project_out, projector

__all__ = [
    "CanonicalJ",
    "LearnedSkew",
    "LearnedSPD",
    "GenericBracket",
    "ProjectionBracket",
    "BasisBracket",
    "MixedBracket",
    "SoftBracket",
    "KnownBracket",
    "project_out",
    "projector",
    "degeneracy_penalty",
    "make_bracket",
    "guard_eps",
]
