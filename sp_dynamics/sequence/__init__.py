"""Sequence models: the Hamiltonian Memory Layer and the associative scan it shares with the
Metriplector causal chain.

* :class:`HamiltonianMemoryLayer` -- a sequence layer whose state evolves under a learned
  Hamiltonian with a symplectic (leapfrog) step; modes ``loop``, ``scan``, ``fft``, ``chunked``
  and ``reversible`` with equal values and gradients.
* :class:`HMLStack` (tokens -> per-step logits) and :class:`HMLClassifier` (real inputs ->
  class logits): residual stacks of HMLs with MLP mixing.
* :func:`affine_scan` -- all prefix states of ``s_t = A_t s_{t-1} + b_t`` in log2(T) rounds.
* diagnostics: :func:`energy_trace`, :func:`phase_space` (figures are drawn by the runners).
"""

from .hml import (HamiltonianMemoryLayer, HMLClassifier, HMLStack, causal_conv_fft, chunked_linear_states, energy_trace,
                  linear_leapfrog_coefficients, matrix_powers, phase_space)
from .scan import affine_scan, affine_scan_loop

__all__ = ["HamiltonianMemoryLayer", "HMLClassifier", "HMLStack", "affine_scan", "affine_scan_loop", "causal_conv_fft",
           "chunked_linear_states", "energy_trace", "linear_leapfrog_coefficients", "matrix_powers", "phase_space"]
