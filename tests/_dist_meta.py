"""A small evolving-latent meta-training run, one process or one rank of a torchrun job.

    python tests/_dist_meta.py OUT [--iterations N] [--stop-at K] [--fail-rank R --fail-at K]
    torchrun --nproc_per_node 2 tests/_dist_meta.py OUT ...

Synthetic data (no cache, no files): 7 harmonic oscillators H = p^2/2 + k q^2/2, 64 states each.
Rank 0 writes OUT/result.pt (base weights, latent table, loss curve). ``--stop-at K`` ends every
rank at iteration K, right after the checkpoint there (a kill that a restart resumes from);
``--fail-rank R --fail-at K`` kills rank R alone at iteration K (the job must stop, not hang);
``--other-data-on-rank R`` gives rank R other data (refused before training).
"""

import argparse
import os
import sys

import torch

from sp_dynamics import LatentHamiltonianNN
from sp_dynamics.meta import MetaConfig, meta_train
from sp_dynamics.meta.distributed import end_job, from_environment


def data():
    g = torch.Generator().manual_seed(0)
    k = torch.linspace(0.5, 2.0, 7, dtype=torch.float64)
    x = torch.randn(7, 64, 2, generator=g, dtype=torch.float64)
    dx = torch.stack([x[..., 1], -k[:, None] * x[..., 0]], -1)
    return x, dx


def main(argv):
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--iterations", type=int, default=12)
    p.add_argument("--stop-at", type=int, default=None)
    p.add_argument("--fail-rank", type=int, default=None)
    p.add_argument("--fail-at", type=int, default=None)
    p.add_argument("--other-data-on-rank", type=int, default=None, help="give this rank different data")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    model = LatentHamiltonianNN(2, kind="svd", rank=2, latent_dim=3, hidden=16, depth=2, hyper_hidden=8).double()
    cfg = MetaConfig(iterations=args.iterations, tasks_per_batch=5, points_per_task=32, checkpoint_every=4,
                     log_every=1, seed=3)
    rank = int(os.environ.get("RANK", "0"))

    def callback(step, row):
        if args.stop_at is not None and step == args.stop_at:
            raise SystemExit(17)
        if args.fail_rank == rank and step == args.fail_at:
            os._exit(1)

    x, dx = data()
    if args.other_data_on_rank == rank:
        x = x + 1e-3
    latents, log = meta_train(model, x, dx, config=cfg, run_dir=os.path.join(args.out, "run"), callback=callback)
    if rank == 0:
        torch.save({"model": model.state_dict(), "latents": latents,
                    "loss": [r["loss"] for r in log], "latent_norm": [r["latent_norm"] for r in log]},
                   os.path.join(args.out, "result.pt"))
    # every rank waits for rank 0's save, then leaves without tearing gloo down (see end_job)
    end_job(from_environment())


if __name__ == "__main__":
    main(sys.argv[1:])
