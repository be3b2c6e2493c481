"""Benchmark: the Cayley advection step without autograd, spectral path against per-position solves.

    python -m experiments.bench_cayley                  # CEM batches of 64 and 320; writes results/bench_cayley.md
    python -m experiments.bench_cayley --batches 64 --no-save

``metriplector.layers.cayley_advect`` applies ``(I - h a K/2)^{-1} (I + h a K/2)`` per grid position.
Under ``torch.no_grad`` (CEM planning with the Reacher world model) it goes through one
eigendecomposition of the Hermitian iK (``_cayley_spectral``); with autograd it solves a C x C
system per position (``_cayley_solve``). Both run here on the planner's shape (B candidates x 8
fields x 8x8 grid, float32, the canonical J plus a learned cross term), are checked to agree, and
are timed forward only: median of ``--repeats`` calls after a warm-up call. Timings on shared
machines vary by 30-50%: compare within one run.
"""

from __future__ import annotations

import time

import torch

from experiments import _bench
from experiments._shim import run
from experiments.bench_maml import _median_time as _time
from metriplector.layers import FieldCoupling, _cayley_solve, _cayley_spectral
from sp_dynamics.runners.common import command_line, machine_line


@torch.no_grad()
def bench(batch: int, repeats: int) -> dict:
    g = torch.Generator().manual_seed(batch)
    torch.manual_seed(0)
    K = FieldCoupling(8, canonical=True, cross_init_std=0.1).matrix()
    phi = torch.randn(batch, 8, 8, 8, generator=g)
    a = torch.rand(batch, 1, 8, 8, generator=g) * 2
    fast, slow = _cayley_spectral(phi, a, K, 0.5), _cayley_solve(phi, a, K, 0.5)
    err = float((fast - slow).abs().max() / slow.abs().max())
    if err > 1e-5:
        raise AssertionError(f"the spectral and solve paths disagree at batch {batch} (max relative {err:.1e})")
    return {"batch": batch, "spectral_s": _time(lambda: _cayley_spectral(phi, a, K, 0.5), repeats),
            "solve_s": _time(lambda: _cayley_solve(phi, a, K, 0.5), repeats), "agreement": err}


def main(argv: list[str] | None = None) -> str:
    p = _bench.parser("bench_cayley", __doc__)
    p.add_argument("--batches", type=int, nargs="+", default=[64, 320])
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args(argv)
    if min(args.batches) < 1 or args.repeats < 1:
        p.error("need batches >= 1 and --repeats >= 1")
    start = time.time()
    rows = [bench(b, args.repeats) for b in args.batches]
    lines = [
        "# Cayley advection without autograd: spectral path vs per-position solves (forward)",
        "",
        command_line(_bench.prog("bench_cayley"), argv),
        machine_line(time.time() - start),
        f"- B x 8 fields x 8x8 grid, float32, median of {args.repeats} calls",
        "",
        "| batch | spectral (s) | solve (s) | solve / spectral | max relative difference |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['batch']} | {r['spectral_s']:.5f} | {r['solve_s']:.5f} | {r['solve_s'] / r['spectral_s']:.1f} | "
                     f"{r['agreement']:.1e} |")
    lines.append("")
    table = "\n".join(lines)
    return _bench.finish(table, "bench_cayley.md" if args.save else None)


if __name__ == "__main__":
    run(main)
