"""Data-parallel meta-training: iterations/s for 1 and 2 processes, and a weak-scaling projection.

    python -m experiments.bench_distributed                  # writes results/bench_distributed.md
    python -m experiments.bench_distributed --iterations 20 --no-save

Measured in one run, on this machine, with the same global batch, data and seed (the workload of
the pendulum paper preset: an SVD(5) latent HNN, 70 training systems x 1010 states, 10 tasks x
256 points per iteration, float32):
  * 1 process, 1 torch thread; 1 process, 2 threads (what one process does with the whole machine);
  * 2 processes under ``torchrun --standalone --nproc_per_node 2`` (gloo), 1 thread each.
Each run times ``--iterations`` meta-training iterations after ``--warmup`` ones (no checkpoints).

The projection for 8-64 processes is arithmetic, not a measurement: per-rank compute per
iteration (the measured 1-process, 1-thread time of a batch of tasks_per_rank tasks) against a
ring all-reduce of the base gradient, t = 2 (W - 1) / W * bytes / bandwidth + 2 (W - 1) * latency,
for two assumed networks (10 GbE: 1.25 GB/s, 30 us; InfiniBand HDR: 25 GB/s, 5 us).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from experiments import _bench
from experiments._shim import run
from sp_dynamics.runners.common import command_line, machine_line

NETWORKS = {"10 GbE": (1.25e9, 30e-6), "InfiniBand HDR": (25e9, 5e-6)}


def worker(out: str, iterations: int, warmup: int, tasks: int) -> None:
    """One process (or one rank of a torchrun job): time meta-training iterations."""
    from sp_dynamics import LatentHamiltonianNN
    from sp_dynamics.meta import MetaConfig
    from sp_dynamics.meta.distributed import end_job, from_environment
    from sp_dynamics.meta.training import _AdamRun

    shard = from_environment()
    g = torch.Generator().manual_seed(0)
    x, dx = torch.randn(70, 1010, 2, generator=g), torch.randn(70, 1010, 2, generator=g)
    torch.manual_seed(0)
    model = LatentHamiltonianNN(2, kind="svd", rank=5, latent_dim=8)
    cfg = MetaConfig(iterations=warmup + iterations, tasks_per_batch=tasks, points_per_task=256, seed=0)
    run = _AdamRun(model, x, dx, cfg, cfg.seed, shard)
    t0 = time.time()
    for it in range(warmup):
        run.iteration(it, t0)
    shard.barrier()
    start = time.perf_counter()
    for it in range(warmup, warmup + iterations):
        run.iteration(it, t0)
    shard.barrier()
    elapsed = time.perf_counter() - start
    if shard.is_main:
        n = sum(p.numel() for p in run.base_params)
        Path(out).write_text(json.dumps({"seconds": elapsed, "iterations": iterations, "params": n,
                                         "bytes": n * run.base_params[0].element_size(), "world": shard.world,
                                         "threads": torch.get_num_threads()}))
    end_job(shard)


def _launch(procs: int, threads: int, args, tasks: int) -> dict:
    root = str(Path(__file__).resolve().parent.parent)  # the workers run this file as a script: let them import experiments
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "timing.json")
        script = [str(Path(__file__).resolve()), "--worker", out, "--iterations", str(args.iterations),
                  "--warmup", str(args.warmup), "--tasks", str(tasks)]
        if procs == 1:
            cmd = [sys.executable, *script]
        else:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs), *script]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=root)
        if proc.returncode != 0:
            raise RuntimeError(f"benchmark run with {procs} processes failed:\n{proc.stderr[-2000:]}")
        return json.loads(Path(out).read_text())


def main(argv: list[str] | None = None) -> str:
    parser = _bench.parser("bench_distributed", __doc__)
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=10, help="global tasks per iteration")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.iterations < 1 or args.warmup < 0 or args.tasks < (1 if args.worker else 2):  # a worker may time one rank's single task
        parser.error("need --iterations >= 1, --warmup >= 0 and --tasks >= 2")
    if args.worker:
        worker(args.worker, args.iterations, args.warmup, args.tasks)
        return ""
    start = time.time()
    rows = [("1 process, 1 thread", _launch(1, 1, args, args.tasks)),
            ("1 process, 2 threads", _launch(1, 2, args, args.tasks)),
            ("2 processes (torchrun, gloo), 1 thread each", _launch(2, 1, args, args.tasks))]
    per_rank = _launch(1, 1, args, args.tasks // 2)  # the compute one rank of a 2-process run does
    base = rows[0][1]["iterations"] / rows[0][1]["seconds"]
    lines = [
        "# Data-parallel meta-training: 1 vs 2 processes",
        "",
        command_line(_bench.prog("bench_distributed"), argv),
        machine_line(time.time() - start),
        f"- workload: SVD(5) latent HNN ({rows[0][1]['params']} base parameters, float32), 70 systems, "
        f"{args.tasks} tasks x 256 points per iteration (global batch), {args.iterations} timed iterations after "
        f"{args.warmup} warm-up ones; the same batches in every row",
        "",
        "| run | iterations/s | speed-up over 1 process, 1 thread |",
        "|---|---|---|",
    ]
    for name, r in rows:
        ips = r["iterations"] / r["seconds"]
        lines.append(f"| {name} | {ips:.2f} | {ips / base:.2f} |")
    g = torch.Generator().manual_seed(0)  # tasks of random batches owned by the busiest of 2 ranks
    busiest = [int(max(((b % 2) == r).sum() for r in range(2))) for b in
               (torch.randperm(70, generator=g)[: args.tasks] for _ in range(10000))]
    c = per_rank["seconds"] / per_rank["iterations"]
    nbytes = rows[0][1]["bytes"]
    lines += [
        "",
        f"Measured compute of one rank's share ({args.tasks // 2} tasks, 1 thread): {1e3 * c:.1f} ms per iteration; "
        f"all-reduced per iteration: {nbytes / 1e3:.1f} kB of base gradient (+ 2 scalars). With 2 ranks the "
        f"busiest rank owns {sum(busiest) / len(busiest):.2f} of the {args.tasks} tasks of a random batch on average "
        f"(10,000 batches drawn), not {args.tasks / 2:g}: every iteration waits for it, and the base step, "
        "regulariser and Python overhead are repeated on every rank.",
        "",
        "**Projection, not a measurement** (weak scaling: every rank keeps "
        f"{args.tasks // 2} tasks per iteration, the global batch grows with W; ring all-reduce model in the "
        "docstring):",
        "",
        "| processes W | " + " | ".join(f"comm. per iteration, {n} (ms) | efficiency, {n}" for n in NETWORKS) + " |",
        "|---|" + "---|---|" * len(NETWORKS),
    ]
    for W in (8, 16, 32, 64):
        cells = []
        for bandwidth, latency in NETWORKS.values():
            t = 2 * (W - 1) / W * nbytes / bandwidth + 2 * (W - 1) * latency
            t += 2 * (W - 1) * latency  # the 2-scalar loss/norm all-reduce: latency only
            cells += [f"{1e3 * t:.2f}", f"{c / (c + t):.2f}"]
        lines.append(f"| {W} | " + " | ".join(cells) + " |")
    for name, (bandwidth, latency) in NETWORKS.items():
        bw, lat = 2 * 63 / 64 * nbytes / bandwidth, 4 * 63 * latency
        lines.append(f"- {name}, W = 64: bandwidth term {1e3 * bw:.3f} ms, latency terms {1e3 * lat:.3f} ms "
                     f"({'latency' if lat > bw else 'bandwidth'}-bound).")
    lines.append("")
    table = "\n".join(lines)
    return _bench.finish(table, "bench_distributed.md" if args.save else None)


if __name__ == "__main__":
    run(main)
