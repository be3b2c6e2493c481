"""Screened Poisson CG solver (implicit differentiation) and the causal scan."""

import pytest
import torch

from metriplector import (
    ConvergenceWarning,
    EdgeGraph,
    GridGraph,
    PoissonConvergenceError,
    causal_scan,
    causal_scan_loop,
    poisson_operator,
    screened_poisson_solve,
)

F64 = torch.float64


def _log_uniform(shape, lo, hi, g):
    return torch.exp(torch.empty(shape, dtype=F64).uniform_(torch.log(torch.tensor(lo)), torch.log(torch.tensor(hi)), generator=g))


def _case(kind, g):
    """A graph with conductances spanning 1e-3..1e3, alpha, and b for 2 samples x 2 fields."""
    if kind == "edges":
        n = 12
        pairs = torch.combinations(torch.arange(n), 2)
        keep = torch.rand(len(pairs), generator=g) < 0.3
        graph = EdgeGraph(pairs[keep], n)
    else:
        graph = GridGraph(4, 5, connectivity=int(kind[-1]))
    weights = tuple(_log_uniform((2, 2) + s, 1e-3, 1e3, g) for s in graph.weight_shapes())
    alpha = _log_uniform((2, 2) + graph.node_shape, 1e-3, 1.0, g)
    b = torch.randn((2, 2) + graph.node_shape, generator=g, dtype=F64)
    return graph, weights, alpha, b


def _dense(graph, weights, alpha):
    """Materialise A (B, C, N, N) column by column from the matrix-free operator."""
    N = graph.n_nodes
    cols = torch.eye(N, dtype=F64).reshape((N, 1, 1) + graph.node_shape)
    A = torch.stack(
        [poisson_operator(graph, weights, alpha, cols[k].expand_as(alpha)).reshape(*alpha.shape[:2], N) for k in range(N)],
        -1,
    )
    return A


KINDS = ["grid4", "grid8", "edges"]


@pytest.mark.parametrize("kind", KINDS)
def test_solution_matches_dense_solve(kind):
    # Catches: a wrong stencil (missing or double-counted edge family), a broken
    # preconditioner, or CG stopping early. Conductances span six decades.
    g = torch.Generator().manual_seed(0)
    graph, weights, alpha, b = _case(kind, g)
    A = _dense(graph, weights, alpha)
    assert torch.allclose(A, A.transpose(-1, -2))  # symmetric
    assert torch.linalg.eigvalsh(A).min() > 0  # positive definite (alpha > 0)
    phi, info = screened_poisson_solve(graph, weights, alpha, b, max_iter=2000, return_info=True)
    ref = torch.linalg.solve(A, b.reshape(2, 2, -1)).reshape(b.shape)
    assert torch.allclose(phi, ref, rtol=1e-8, atol=1e-10 * ref.abs().max())
    assert info.residual <= 1e-9


@pytest.mark.parametrize("kind", KINDS)
def test_implicit_gradients_match_dense_autograd(kind):
    # Catches: a wrong adjoint formula for b, alpha or the conductances (e.g. the sign of
    # -(l_i - l_j)(phi_i - phi_j) or a missing sum over broadcast dimensions).
    g = torch.Generator().manual_seed(1)
    graph, weights, alpha, b = _case(kind, g)
    upstream = torch.randn(b.shape, generator=g, dtype=F64)
    leaves = [t.clone().requires_grad_(True) for t in (b, alpha, *weights)]
    phi = screened_poisson_solve(graph, tuple(leaves[2:]), leaves[1], leaves[0], max_iter=2000)
    ours = torch.autograd.grad((phi * upstream).sum(), leaves)
    leaves2 = [t.clone().requires_grad_(True) for t in (b, alpha, *weights)]
    A = _dense(graph, tuple(leaves2[2:]), leaves2[1])
    ref = torch.linalg.solve(A, leaves2[0].reshape(2, 2, -1)).reshape(b.shape)
    theirs = torch.autograd.grad((ref * upstream).sum(), leaves2)
    for o, t in zip(ours, theirs):
        assert torch.allclose(o, t, rtol=1e-6, atol=1e-8 * t.abs().max())


@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck(kind):
    # Finite differences against the implicit backward, including broadcast conductances.
    g = torch.Generator().manual_seed(2)
    graph, weights, alpha, b = _case(kind, g)
    weights = tuple(w[:1, :1] for w in weights)  # broadcast over samples and fields
    inputs = tuple(t.clone().requires_grad_(True) for t in (b, alpha, *weights))
    # Finite differences (eps 1e-6) amplify solve error 1e6-fold, so solve as tightly as round-off
    # allows; with six decades of conductances the true residual floor is ~1e-12, above this
    # rtol, hence on_fail="ignore" (accuracy is asserted against dense solves above).
    fn = lambda b, a, *w: screened_poisson_solve(graph, w, a, b, rtol=1e-13, max_iter=5000, on_fail="ignore")  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs, atol=1e-6, rtol=1e-5)


def test_float32_warm_start_and_info():
    g = torch.Generator().manual_seed(3)
    graph, weights, alpha, b = _case("grid4", g)
    phi64 = screened_poisson_solve(graph, weights, alpha, b, max_iter=2000)
    w32 = tuple(w.float() for w in weights)
    phi32, info = screened_poisson_solve(graph, w32, alpha.float(), b.float(), max_iter=2000, return_info=True)
    # float32's round-off floor on these conductances (1e-3..1e3): median ~1.3e-4 and up to 5.6e-4
    # over 20 seeds, for the in-place and the earlier out-of-place iteration alike
    assert phi32.dtype == torch.float32 and info.residual <= 1e-3
    assert torch.allclose(phi32.double(), phi64, rtol=1e-3, atol=1e-3 * phi64.abs().max())
    _, cold = screened_poisson_solve(graph, weights, alpha, b, max_iter=2000, return_info=True)
    _, warm = screened_poisson_solve(graph, weights, alpha, b, x0=phi64 * (1 + 1e-6), max_iter=2000, return_info=True)
    assert warm.iterations < cold.iterations
    leaves = alpha.clone().requires_grad_(True)
    phi, info = screened_poisson_solve(graph, weights, leaves, b, max_iter=2000, return_info=True)
    phi.sum().backward()
    assert info.backward_iterations > 0 and info.backward_residual <= 1e-9


def test_nonconvergence_warns_or_raises():
    g = torch.Generator().manual_seed(4)
    graph, weights, alpha, b = _case("grid4", g)
    with pytest.warns(ConvergenceWarning, match="inexact"):
        screened_poisson_solve(graph, weights, alpha, b, max_iter=2)
    with pytest.raises(PoissonConvergenceError):
        screened_poisson_solve(graph, weights, alpha, b, max_iter=2, on_fail="raise")


def test_bad_input():
    g = torch.Generator().manual_seed(5)
    graph, weights, alpha, b = _case("grid4", g)
    with pytest.raises(ValueError, match="alpha"):
        screened_poisson_solve(graph, weights, torch.zeros_like(alpha), b)
    nan_w = (weights[0].clone(), weights[1])
    nan_w[0][0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        screened_poisson_solve(graph, nan_w, alpha, b)
    with pytest.raises(ValueError, match=">= 0"):
        screened_poisson_solve(graph, (-weights[0], weights[1]), alpha, b)
    with pytest.raises(ValueError, match="b must have shape"):
        screened_poisson_solve(graph, weights, alpha, b[..., :-1])
    with pytest.raises(ValueError, match="trailing shape"):
        screened_poisson_solve(graph, (weights[1], weights[0]), alpha, b)
    with pytest.raises(ValueError, match="2 conductance"):
        screened_poisson_solve(graph, weights[:1], alpha, b)
    with pytest.raises(ValueError, match="connectivity"):
        GridGraph(3, 3, connectivity=6)
    with pytest.raises(ValueError, match="self-loops"):
        EdgeGraph(torch.tensor([[0, 0]]), 2)


def test_scan_equals_loop_values_and_gradients():
    # Catches: an associative-scan combination in the wrong order or an off-by-one offset.
    g = torch.Generator().manual_seed(6)
    for T in [1, 2, 7, 64, 100]:
        a = torch.rand(3, 4, T, generator=g, dtype=F64).requires_grad_(True)
        x = torch.randn(3, 4, T, generator=g, dtype=F64).requires_grad_(True)
        up = torch.randn(3, 4, T, generator=g, dtype=F64)
        s, l = causal_scan(a, x), causal_scan_loop(a, x)
        assert torch.allclose(s, l, atol=1e-12)
        # T = 1: phi_0 = x_0 does not involve a_0 (zero gradient, unused in the scan)
        gs = torch.autograd.grad((s * up).sum(), (a, x), allow_unused=True, materialize_grads=True)
        gl = torch.autograd.grad((l * up).sum(), (a, x), allow_unused=True, materialize_grads=True)
        assert all(torch.allclose(u, v, atol=1e-12) for u, v in zip(gs, gl))
    a = torch.rand(2, 9, dtype=F64, requires_grad=True)
    x = torch.randn(2, 9, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(causal_scan, (a, x))
    with pytest.raises(ValueError, match="same shape"):
        causal_scan(a, x[:, :3])


def test_right_hand_side_without_its_sample_and_field_dimensions_is_named():
    # Catches: b of shape (H, W) -- no (B, C) -- failing inside an internal expand.
    from metriplector.graphs import GridGraph
    from metriplector.poisson import screened_poisson_solve

    g = GridGraph(4, 5)
    w = (torch.ones(1, 1, 4, 4, dtype=torch.float64), torch.ones(1, 1, 3, 5, dtype=torch.float64))
    for b in (torch.ones(4, 5, dtype=torch.float64), torch.ones(2, 4, 5, dtype=torch.float64)):
        with pytest.raises(ValueError, match=r"b must have shape \(B, C, 4, 5\).*b\[None"):
            screened_poisson_solve(g, w, 0.1, b)
