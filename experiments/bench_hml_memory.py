"""HML backward memory and float32 accuracy: loop vs reversible vs FFT, side by side.

    python -m experiments.bench_hml_memory                  # writes results/bench_hml_memory.md
    python -m experiments.bench_hml_memory --T 100 500 --no-save

1. Memory: bytes autograd keeps for backward after one forward of one HML layer (distinct
   storages caught by ``saved_tensors_hooks``, as in ``bench_poisson``; the layer's input is
   excluded since it is the previous layer's output and alive anyway), and the time of one
   forward + backward, for T in ``--T``. Quadratic potential, batch 32, D = 128, float32.
2. Accuracy: the reversible backward rebuilds states by running the leapfrog backwards in
   float32, so round-off accumulates between checkpoints. Relative error of the parameter
   gradient against a float64 loop reference, for several checkpoint spacings.
"""

from __future__ import annotations

import math
import time

import torch

from experiments import _bench
from experiments._shim import run
from sp_dynamics.runners.common import command_line, machine_line
from sp_dynamics.sequence import HamiltonianMemoryLayer


def saved_bytes(layer: HamiltonianMemoryLayer, x: torch.Tensor) -> tuple[int, torch.Tensor]:
    storages: dict[int, int] = {}
    skip = x.untyped_storage().data_ptr()

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr != skip:
            storages[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y, _ = layer(x)
    return sum(storages.values()), y


def layer_for(mode: str, D: int, checkpoint_every: int = 64, seed: int = 0, gamma: float = 0.0) -> HamiltonianMemoryLayer:
    torch.manual_seed(seed)
    layer = HamiltonianMemoryLayer(16, D, 16, mode=mode, frequencies="linear", checkpoint_every=checkpoint_every,
                                   damping=gamma > 0, chunk=128)
    if gamma > 0:
        with torch.no_grad():
            layer.raw_gamma.fill_(math.log(math.expm1(gamma)))  # softplus^-1
    return layer


MODES = ("loop", "reversible", "fft", "chunked")


def memory_rows(Ts: list[int], B: int, D: int) -> list[dict]:
    for mode in MODES:  # warm-up: first calls pay one-off allocation costs
        layer_for(mode, D)(torch.randn(B, 16, 16))[0].sum().backward()
    rows = []
    for T in Ts:
        x = torch.randn(B, T, 16, generator=torch.Generator().manual_seed(T))
        row = {"T": T}
        for mode in MODES:
            layer = layer_for(mode, D)
            t0 = time.perf_counter()
            nbytes, y = saved_bytes(layer, x)
            y.square().mean().backward()
            row[mode] = (nbytes, time.perf_counter() - t0)
            del y
        rows.append(row)
        print(f"T = {T}: " + ", ".join(f"{mode} {row[mode][0] / 2**20:.1f} MiB saved, {row[mode][1]:.2f} s"
                                       for mode in MODES), flush=True)  # progress of a long benchmark
    return rows


def accuracy_rows(T: int, B: int, D: int, spacings: list[int], gamma: float = 0.0) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, T, 16, generator=g)
    ref = layer_for("loop", D, gamma=gamma).double()
    ref(x.double())[0].square().mean().backward()
    g_ref = torch.cat([p.grad.flatten() for p in ref.parameters() if p.grad is not None])
    rows = []
    for k in spacings:
        layer = layer_for("reversible", D, checkpoint_every=k, gamma=gamma)
        layer(x)[0].square().mean().backward()
        g_rev = torch.cat([p.grad.flatten() for p in layer.parameters() if p.grad is not None]).double()
        rows.append({"checkpoint_every": k, "gamma": gamma, "rel_error": float((g_rev - g_ref).norm() / g_ref.norm())})
    loop32 = layer_for("loop", D, gamma=gamma)
    loop32(x)[0].square().mean().backward()
    g32 = torch.cat([p.grad.flatten() for p in loop32.parameters() if p.grad is not None]).double()
    rows.append({"checkpoint_every": "loop, float32 (stores every state)", "gamma": gamma, "rel_error": float((g32 - g_ref).norm() / g_ref.norm())})
    return rows


def main(argv: list[str] | None = None) -> str:
    parser = _bench.parser("bench_hml_memory", __doc__)
    parser.add_argument("--T", type=int, nargs="+", default=[100, 500, 1000, 2000])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--state", type=int, default=128)
    parser.add_argument("--accuracy-T", type=int, default=2000)
    parser.add_argument("--no-accuracy", dest="accuracy", action="store_false", help="memory and time rows only")
    parser.add_argument("--stem", default="bench_hml_memory", help="results file name (without .md)")
    args = parser.parse_args(argv)
    if min(args.T) < 1 or args.batch < 1 or args.state < 1 or args.accuracy_T < 1:
        parser.error("T, batch, state and accuracy-T must be >= 1")
    start = time.time()
    mem = memory_rows(args.T, args.batch, args.state)
    spacings = [1, 16, 64, 256, args.accuracy_T]
    acc = (accuracy_rows(args.accuracy_T, 8, args.state, spacings) +
           accuracy_rows(args.accuracy_T, 8, args.state, spacings, gamma=0.02)) if args.accuracy else []
    mb = 2**20
    lines = [
        "# HML backward: memory and float32 accuracy",
        "",
        command_line(_bench.prog("bench_hml_memory"), argv),
        machine_line(time.time() - start, extra="; seeds 0 (layer), T (inputs), 1 (accuracy inputs)"),
        f"- one layer, quadratic potential, harmonic angles, batch {args.batch}, D = {args.state}, 16 inputs/outputs, float32; "
        "reversible mode with checkpoint_every = 64, chunked mode with chunk = 128",
        "",
        "| T | " + " | ".join(f"{m}: saved MB" for m in MODES) + " | loop / reversible memory | "
        + " | ".join(f"{m} fwd+bwd (s)" for m in MODES) + " | reversible / loop time | fft / chunked time |",
        "|---" * (2 * len(MODES) + 4) + "|",
    ]
    for r in mem:
        (lb, lt), (rb, rt), (_, ft), (_, ct) = (r[m] for m in MODES)
        lines.append(f"| {r['T']} | " + " | ".join(f"{r[m][0] / mb:.3f}" for m in MODES) + f" | {lb / rb:.0f} | "
                     + " | ".join(f"{r[m][1]:.3f}" for m in MODES) + f" | {rt / lt:.2f} | {ft / ct:.2f} |")
    if acc:
        lines += [
            "",
            f"Gradient accuracy of the reversible backward (float32) against a float64 loop, T = {args.accuracy_T}, batch 8:",
            "",
            "Undamped layers run backwards exactly (up to round-off, which does not grow); with damping the",
            "inverse step multiplies p by exp(+dt gamma), so reconstruction errors grow like exp(dt gamma k)",
            "between checkpoints -- the reason for the checkpoints.",
            "",
            "| damping gamma | checkpoint_every | relative error of the parameter gradient |",
            "|---|---|---|",
        ]
        lines += [f"| {r['gamma']} | {r['checkpoint_every']} | {r['rel_error']:.2e} |" for r in acc]
    table = "\n".join(lines) + "\n"
    return _bench.finish(table, f"{args.stem}.md" if args.save else None)


if __name__ == "__main__":
    run(main)
