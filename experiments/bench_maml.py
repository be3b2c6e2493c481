"""Batched (torch.func.vmap) vs per-task loop: MAML meta-gradient and latent meta-training step.

    python -m experiments.bench_maml                 # K = 10 tasks, writes results/bench_maml.md
    python -m experiments.bench_maml --tasks 4 --repeats 2 --no-save

Both sides compute the same thing in one run and the script checks that they agree before it
reports a time:
1. MAML meta-gradient (second order, one inner step; and ANIL): ``maml_meta_gradient`` on all K
   tasks at once against a Python loop calling it on one task at a time and averaging.
2. One iteration of latent meta-training (SVD(5) latent HNN, the body of ``meta_train``: a latent
   step then a base step): the per-task losses from one batched forward against a loop over
   tasks, each forward and backward done per task.
Data are random states and derivatives of the pendulum's size (n = 2): the cost does not
depend on their values. Median over ``--repeats`` timed calls after one warm-up call.
"""

from __future__ import annotations

import statistics
import time

import torch

from experiments import _bench
from experiments._shim import run
from sp_dynamics import LatentHamiltonianNN
from sp_dynamics.meta.adaptation import support_loss
from sp_dynamics.meta.baselines import last_layer
from sp_dynamics.meta.maml import maml_meta_gradient
from sp_dynamics.nn import MLP
from sp_dynamics.runners.common import command_line, machine_line



def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_meta_gradient(K: int, N: int, repeats: int, anil: bool) -> dict:
    torch.manual_seed(0)
    net = MLP(2, 1, hidden=64, depth=3).double()
    params = {k: v.detach() for k, v in net.named_parameters()}
    g = torch.Generator().manual_seed(1)
    xs, dxs, xq, dxq = (torch.randn(K, N, 2, generator=g, dtype=torch.float64) for _ in range(4))
    trainable = last_layer(net) if anil else None

    def batched():
        return maml_meta_gradient(net, params, (xs, dxs), (xq, dxq), 1e-2, 1, False, trainable)[0]

    def loop():
        total = {k: torch.zeros_like(v) for k, v in params.items()}
        for k in range(K):
            grads, _ = maml_meta_gradient(net, params, (xs[k:k + 1], dxs[k:k + 1]), (xq[k:k + 1], dxq[k:k + 1]),
                                          1e-2, 1, False, trainable)
            for name, gr in grads.items():
                total[name] += gr / K
        return total

    a, b = batched(), loop()
    err = max(float((a[k] - b[k]).abs().max() / (b[k].abs().max() + 1e-300)) for k in a)
    if err > 1e-10:
        raise AssertionError(f"batched and looped meta-gradients differ (max relative {err:.2e})")
    tb, tl = _median_time(batched, repeats), _median_time(loop, repeats)
    return {"name": f"{'ANIL' if anil else 'MAML'} meta-gradient (2nd order)", "batched_s": tb, "loop_s": tl,
            "agreement": err}


def _grads(loss, params):
    grads = torch.autograd.grad(loss, params, allow_unused=True)  # a final bias never reaches grad H
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def bench_latent_step(K: int, N: int, repeats: int) -> dict:
    torch.manual_seed(0)
    model = LatentHamiltonianNN(2, kind="svd", rank=5, latent_dim=8).double()
    with torch.no_grad():  # the hypernetwork heads start at zero, where dL/dz = 0: move off it
        for name, p in model.named_parameters():
            if ".hyper." in name:
                p.normal_(0.0, 0.05)
    g = torch.Generator().manual_seed(2)
    x, dx = (torch.randn(K, N, 2, generator=g, dtype=torch.float64) for _ in range(2))
    z0 = 0.1 * torch.randn(K, 8, generator=g, dtype=torch.float64)
    base = [p for p in model.parameters() if p.requires_grad]

    def batched():
        z = z0.clone().requires_grad_(True)
        (gz,) = torch.autograd.grad(support_loss(model, x, dx, z).sum(), z)       # latent step
        loss = support_loss(model, x, dx, z0).mean()                               # base step
        return gz, _grads(loss, base)

    def loop():
        gzs, gbase = [], [torch.zeros_like(p) for p in base]
        for k in range(K):
            z = z0[k:k + 1].clone().requires_grad_(True)
            (gz,) = torch.autograd.grad(support_loss(model, x[k:k + 1], dx[k:k + 1], z).sum(), z)
            gzs.append(gz)
            for acc, gr in zip(gbase, _grads(support_loss(model, x[k:k + 1], dx[k:k + 1], z0[k:k + 1]).mean(), base)):
                acc += gr / K
        return torch.cat(gzs), gbase

    (za, ba), (zb, bb) = batched(), loop()
    err = max([float((za - zb).abs().max() / (zb.abs().max() + 1e-300))] +
              [float((p - q).abs().max() / (q.abs().max() + 1e-300)) for p, q in zip(ba, bb)])
    if err > 1e-10:
        raise AssertionError(f"batched and looped latent meta-training gradients differ (max relative {err:.2e})")
    tb, tl = _median_time(batched, repeats), _median_time(loop, repeats)
    return {"name": "latent meta-training iteration, SVD(5)", "batched_s": tb, "loop_s": tl, "agreement": err}


def main(argv: list[str] | None = None) -> str:
    parser = _bench.parser("bench_maml", __doc__)
    parser.add_argument("--tasks", type=int, default=10, help="tasks per meta-batch K")
    parser.add_argument("--points", type=int, default=128, help="support (and query) points per task")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.points < 1 or args.repeats < 1:
        parser.error("--tasks, --points and --repeats must be >= 1")
    start = time.time()
    rows = [bench_meta_gradient(args.tasks, args.points, args.repeats, anil=False),
            bench_meta_gradient(args.tasks, args.points, args.repeats, anil=True),
            bench_latent_step(args.tasks, args.points, args.repeats)]
    lines = [
        "# Batched vs per-task loop (meta-learning hot paths)",
        "",
        command_line(_bench.prog("bench_maml"), argv),
        machine_line(time.time() - start),
        f"- K = {args.tasks} tasks, {args.points} points per task (and per query set), float64, seeds 0-2 (random data), "
        f"median of {args.repeats} calls",
        "",
        "| computation | batched (s) | loop over tasks (s) | loop / batched | tasks per s, batched | tasks per s, loop "
        "| max relative difference |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['name']} | {r['batched_s']:.4f} | {r['loop_s']:.4f} | {r['loop_s'] / r['batched_s']:.2f} "
                     f"| {args.tasks / r['batched_s']:.1f} | {args.tasks / r['loop_s']:.1f} | {r['agreement']:.1e} |")
    table = "\n".join(lines) + "\n"
    return _bench.finish(table, "bench_maml.md" if args.save else None)


if __name__ == "__main__":
    run(main)
