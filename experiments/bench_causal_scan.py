"""Benchmark: the causal Poisson chain by parallel scan against the sequential loop.

    python -m experiments.bench_causal_scan                 # T = 1k, 4k, 16k; writes results/bench_causal_scan.md
    python -m experiments.bench_causal_scan --lengths 1000 --no-save

``phi_t = a_t phi_{t-1} + x_t`` for a batch of 8 sequences x 16 fields (the language model's
shape, ``CausalPoissonBlock.fields_of``), forward + backward of ``sum(phi^2)``, float32:
``causal_scan`` (the library's Hillis-Steele associative scan, log2 T rounds) against
``causal_scan_loop`` (a Python loop over t: the model's ``mode="loop"``). Both are checked to
agree (values and gradients) before they are timed; median of ``--repeats`` calls after a
warm-up call. Timings on shared machines vary by 30-50%: compare within one run.
"""

from __future__ import annotations

import time

import torch

from experiments import _bench
from experiments._shim import run
from experiments.bench_maml import _median_time as _time
from metriplector import causal_scan, causal_scan_loop
from sp_dynamics.runners.common import command_line, machine_line


def bench(T: int, repeats: int, device: str) -> dict:
    g = torch.Generator().manual_seed(T)
    a = (0.5 + 0.5 * torch.rand(8, 16, T, generator=g)).to(device).requires_grad_(True)
    x = torch.randn(8, 16, T, generator=g).to(device).requires_grad_(True)

    def run(fn):
        def call():
            phi = fn(a, x)
            ga, gx = torch.autograd.grad(phi.square().sum(), (a, x))
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            return phi.detach(), ga, gx
        return call

    (p1, a1, x1), (p2, a2, x2) = run(causal_scan)(), run(causal_scan_loop)()
    err = max(float((u - v).abs().max() / v.abs().max()) for u, v in ((p1, p2), (a1, a2), (x1, x2)))
    if err > 1e-4:
        raise AssertionError(f"scan and loop disagree at T = {T} (max relative {err:.1e})")
    return {"T": T, "scan_s": _time(run(causal_scan), repeats), "loop_s": _time(run(causal_scan_loop), repeats),
            "agreement": err}


def main(argv: list[str] | None = None) -> str:
    p = _bench.parser("bench_causal_scan", __doc__)
    p.add_argument("--lengths", type=int, nargs="+", default=[1000, 4000, 16000])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    if min(args.lengths) < 2 or args.repeats < 1:
        p.error("need lengths >= 2 and --repeats >= 1")
    start = time.time()
    rows = [bench(T, args.repeats, args.device) for T in args.lengths]
    lines = [
        "# Causal Poisson chain: parallel scan vs sequential loop (forward + backward)",
        "",
        command_line(_bench.prog("bench_causal_scan"), argv),
        machine_line(time.time() - start, extra=f"; device {args.device}"),
        f"- batch 8 x 16 fields, float32, median of {args.repeats} calls",
        "",
        "| T | scan (s) | loop (s) | loop / scan | max relative difference |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['T']} | {r['scan_s']:.4f} | {r['loop_s']:.4f} | {r['loop_s'] / r['scan_s']:.2f} | "
                     f"{r['agreement']:.1e} |")
    lines.append("")
    table = "\n".join(lines)
    name = "bench_causal_scan.md" if args.device == "cpu" else f"bench_causal_scan_{args.device.split(':')[0]}.md"
    return _bench.finish(table, name if args.save else None)


if __name__ == "__main__":
    run(main)
