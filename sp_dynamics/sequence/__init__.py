"""Sequence models: the Hamiltonian Memory Layer and the associative scan it shares with the
Metriplector causal chain.

* :class:`HamiltonianMemoryLayer`, :class:`HMLStack` -- a sequence layer whose state evolves under
  a learned Hamiltonian with a symplectic (leapfrog) step; modes ``loop``, ``scan``, ``fft`` and
  ``reversible`` with equal values and gradients.
* :func:`affine_scan` -- all prefix states of ``s_t = A_t s_{t-1} + b_t`` in log2(T) rounds.
* diagnostics: :func:`energy_trace`, :func:`phase_space` (figures are drawn by the runners).
"""

from .hml import (HamiltonianMemoryLayer, HMLStack, causal_conv_fft, energy_trace, linear_leapfrog_coefficients,
                  matrix_powers, phase_space)
from .scan import affine_scan, affine_scan_loop

__all__ = ["HamiltonianMemoryLayer", "HMLStack", "affine_scan", "affine_scan_loop", "causal_conv_fft", "energy_trace",
           "linear_leapfrog_coefficients", "matrix_powers", "phase_space"]
