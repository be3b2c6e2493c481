"""Benchmark: batched screened-Poisson CG vs scipy CG vs dense solve; backward memory of
implicit differentiation vs backprop through unrolled CG.

    python -m experiments.bench_poisson [--size 39] [--batch 32] [--out experiments/results/bench_poisson.md]

Systems: random 4-connected grids (size x size) with conductances log-uniform in [1e-3, 1],
alpha = 1 / N, random right-hand sides, float64, relative tolerance 1e-8 for every solver.
Timings vary +-30-50% on shared machines: compare the numbers of one run only.
Backward memory is measured exactly as the bytes of tensors autograd saves for backward
(torch.autograd.graph.saved_tensors_hooks), not as process RSS.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from experiments import _bench
from experiments._shim import run
from metriplector import GridGraph, poisson_operator, screened_poisson_solve
from sp_dynamics.runners.common import command_line, machine_line


def problems(size: int, batch: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    graph = GridGraph(size, size)

    def logu(shape):
        return torch.exp(torch.empty(shape, dtype=torch.float64).uniform_(np.log(1e-3), 0.0, generator=g))

    weights = tuple(logu((batch, 1) + s) for s in graph.weight_shapes())
    alpha = torch.full((batch, 1, size, size), 1.0 / graph.n_nodes, dtype=torch.float64)
    b = torch.randn(batch, 1, size, size, generator=g, dtype=torch.float64)
    return graph, weights, alpha, b


def scipy_matrix(graph: GridGraph, weights, alpha, k: int) -> sp.csr_matrix:
    H, W = graph.H, graph.W
    idx = np.arange(H * W).reshape(H, W)
    rows, cols, vals = [], [], []
    for w, (src, dst) in zip(weights, [(idx[:, :-1], idx[:, 1:]), (idx[:-1, :], idx[1:, :])]):
        wk = w[k, 0].numpy().ravel()
        s, d = src.ravel(), dst.ravel()
        rows += [s, d, s, d]
        cols += [d, s, s, d]
        vals += [-wk, -wk, wk, wk]
    rows.append(idx.ravel())
    cols.append(idx.ravel())
    vals.append(alpha[k, 0].numpy().ravel())
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(H * W, H * W))


def unrolled_cg(graph, weights, alpha, b, iters: int):
    """Plain differentiable Jacobi-PCG with a fixed iteration count (autograd through the loop)."""
    diag = graph.degree(weights, b) + alpha
    x = torch.zeros_like(b)
    r = b.clone()
    z = r / diag
    p = z
    rz = (r * z).sum((-2, -1), keepdim=True)
    for _ in range(iters):
        Ap = poisson_operator(graph, weights, alpha, p)
        step = rz / (p * Ap).sum((-2, -1), keepdim=True)
        x = x + step * p
        r = r - step * Ap
        z = r / diag
        rz_new = (r * z).sum((-2, -1), keepdim=True)
        p = z + rz_new / rz * p
        rz = rz_new
    return x


def saved_bytes(fn) -> int:
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    out.sum().backward()
    return total


def main(argv=None) -> str:
    parser = _bench.parser("bench_poisson", __doc__, save=False)
    parser.add_argument("--size", type=int, default=39)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--dense-batch", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the Markdown results here")
    args = parser.parse_args(argv)
    start = time.time()
    rtol = 1e-8
    graph, weights, alpha, b = problems(args.size, args.batch, args.seed)
    N = graph.n_nodes
    lines = [
        "# Screened-Poisson solver benchmark",
        "",
        command_line(_bench.prog("bench_poisson"), argv),
        f"- systems: {args.batch} grids {args.size}x{args.size} (N = {N}), conductances log-uniform [1e-3, 1], "
        f"alpha = 1/N, float64, rtol {rtol:g}",
        "",
    ]

    t0 = time.perf_counter()
    phi, info = screened_poisson_solve(graph, weights, alpha, b, rtol=rtol, max_iter=20_000, return_info=True)
    t_ours = time.perf_counter() - t0

    t0 = time.perf_counter()
    iters_sp, worst = [], 0.0
    for k in range(args.batch):
        A = scipy_matrix(graph, weights, alpha, k)
        Minv = sp.diags(1.0 / A.diagonal())
        count = [0]
        x, flag = spla.cg(A, b[k, 0].numpy().ravel(), rtol=rtol, maxiter=20_000, M=Minv,
                          callback=lambda _x: count.__setitem__(0, count[0] + 1))
        iters_sp.append(count[0])
        worst = max(worst, float(np.abs(x - phi[k, 0].numpy().ravel()).max() / np.abs(x).max()))
    t_scipy = time.perf_counter() - t0

    nd = args.dense_batch
    A_dense = torch.stack([torch.from_numpy(scipy_matrix(graph, weights, alpha, k).toarray()) for k in range(nd)])
    t0 = time.perf_counter()
    x_dense = torch.linalg.solve(A_dense, b[:nd, 0].reshape(nd, N))
    t_dense = (time.perf_counter() - t0) / nd * args.batch  # extrapolated to the whole batch
    dense_err = float((x_dense - phi[:nd, 0].reshape(nd, N)).abs().max() / x_dense.abs().max())

    lines += [
        "## Forward solve, whole batch",
        "",
        "| solver | time (s) | per system (ms) | iterations | max rel. diff. to ours |",
        "|---|---|---|---|---|",
        f"| ours: batched Jacobi-PCG (torch) | {t_ours:.3f} | {1e3 * t_ours / args.batch:.2f} | {info.iterations} (max) | - |",
        f"| scipy.sparse.linalg.cg + Jacobi, one system at a time | {t_scipy:.3f} | {1e3 * t_scipy / args.batch:.2f} | "
        f"{int(np.mean(iters_sp))} (mean) | {worst:.1e} |",
        f"| dense torch.linalg.solve (timed on {nd}, scaled to {args.batch}) | {t_dense:.3f} | {1e3 * t_dense / args.batch:.2f} | - | {dense_err:.1e} |",
        "",
        f"ratio scipy / ours = {t_scipy / t_ours:.2f}; dense / ours = {t_dense / t_ours:.2f}; "
        f"achieved relative residual (ours) {info.residual:.1e}",
        "",
        "## Backward memory: implicit differentiation vs backprop through unrolled CG",
        "",
        "Bytes autograd saves for backward (one batch of 4 systems; conductances and b require grad).",
        "",
        "| CG iterations | unrolled (MB) | implicit, ours (MB) | ratio | unrolled fwd+bwd (s) | implicit fwd+bwd (s) |",
        "|---|---|---|---|---|---|",
    ]
    small = (tuple(w[:4].clone().requires_grad_(True) for w in weights), alpha[:4], b[:4].clone().requires_grad_(True))
    for iters in [25, 50, 100, 200, 400]:
        t0 = time.perf_counter()
        m_unrolled = saved_bytes(lambda: unrolled_cg(graph, small[0], small[1], small[2], iters))
        t_u = time.perf_counter() - t0
        t0 = time.perf_counter()
        m_implicit = saved_bytes(
            lambda: screened_poisson_solve(graph, small[0], small[1], small[2], rtol=1e-300, max_iter=iters, on_fail="ignore")
        )
        t_i = time.perf_counter() - t0
        lines.append(f"| {iters} | {m_unrolled / 1e6:.2f} | {m_implicit / 1e6:.3f} | {m_unrolled / m_implicit:.0f} | {t_u:.3f} | {t_i:.3f} |")
    lines += ["", "The implicit backward stores phi, alpha and the conductances only: constant in the iteration count.", ""]
    lines.insert(3, machine_line(time.time() - start, extra=f"; seed {args.seed}"))  # after the command line
    text = "\n".join(lines)
    return _bench.finish(text, Path(args.out).resolve() if args.out else None)  # --out: relative to the working directory


if __name__ == "__main__":
    run(main)
