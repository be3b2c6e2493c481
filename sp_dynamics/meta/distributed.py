"""Data-parallel evolving-latent meta-training over ``torch.distributed`` processes.

Launched by ``torchrun`` (one process per rank; gloo on CPU, NCCL when CUDA is present), every
rank holds the training data and an identical copy of the base network; the *training instances*
are sharded: instance ``s`` belongs to rank ``s % world_size``, which alone updates its latent
row and that row's Adam moments. Each iteration every rank draws the same global batch from the
shared generator (so a W-process run sees exactly the tasks of a one-process run with the same
global batch and seed), works on the tasks of the batch it owns, and the base gradients are
summed with one bucketed all-reduce (no DDP wrapper: the HNN loss needs double backward, which
DDP does not support well). Every rank then takes the same base step. A rank with no task in a
batch still takes part in the all-reduce (with zero gradients), so uneven batches cannot hang.

Checkpoints gather the latent table and its Adam moments to every rank (a sum of the ranks'
owned rows); rank 0 writes them atomically, so a run resumes with the same or a different number
of processes. Collectives time out after ``SP_DYNAMICS_DIST_TIMEOUT`` seconds (default 300): a
rank that dies makes the others fail with an error instead of waiting forever, and torchrun
stops the job.
"""

from __future__ import annotations

import hashlib
import os
import sys
from datetime import timedelta

import torch
from torch import Tensor

__all__ = ["Shard", "from_environment", "end_job", "DEFAULT_TIMEOUT_S"]

DEFAULT_TIMEOUT_S = 300


class Shard:
    """This process's place in the job: ``rank`` of ``world`` (1 and 0 on a single process)."""

    def __init__(self, rank: int = 0, world: int = 1):
        self.rank, self.world = rank, world

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def owned(self, rows: Tensor) -> Tensor:
        """Boolean mask of the rows (instance indices) this rank owns."""
        return rows % self.world == self.rank

    def sum_(self, tensor: Tensor) -> Tensor:
        """In-place sum over ranks (identity on one process)."""
        if self.enabled:
            torch.distributed.all_reduce(tensor)
        return tensor

    def sum_gradients(self, params: list[Tensor]) -> None:
        """Sum the ``.grad`` of ``params`` over ranks in one flat bucket (missing grads count as 0)."""
        if not self.enabled:
            return
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)  # keeps the parameter's memory layout
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        torch.distributed.all_reduce(flat)
        offset = 0
        for p in params:
            n = p.numel()
            p.grad.copy_(flat[offset : offset + n].view(p.shape))
            offset += n

    def gather_rows(self, table: Tensor) -> Tensor:
        """The full table from the rows each rank owns (a sum of the ranks' owned rows)."""
        if not self.enabled:
            return table
        mask = self.owned(torch.arange(table.shape[0]))
        full = torch.where(mask.view(-1, *([1] * (table.ndim - 1))), table, torch.zeros_like(table))
        return self.sum_(full.clone())

    def agree(self, what: str, text: str) -> None:
        """Raise ``ValueError`` on every rank unless all ranks passed the same ``text``."""
        if not self.enabled:
            return
        h = int(hashlib.sha256(text.encode()).hexdigest()[:15], 16)
        t = torch.tensor([h, -h], dtype=torch.int64)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        if int(t[0]) != -int(t[1]):
            raise ValueError(f"the {self.world} processes were given different {what}; every rank must get the same")

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Rank 0's parameters and buffers to every rank (a fresh run starts from one base)."""
        if self.enabled:
            for tensor in module.state_dict().values():
                torch.distributed.broadcast(tensor, 0)

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()


def from_environment(device: torch.device | str = "cpu", timeout_s: float | None = None) -> Shard:
    """The :class:`Shard` of this process: from an initialised process group, or from torchrun's
    environment (``WORLD_SIZE`` > 1: the group is initialised here, NCCL for data on a CUDA
    ``device``, else gloo), else a single process."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return Shard(dist.get_rank(), dist.get_world_size())
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Shard()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    timeout = timeout_s if timeout_s is not None else float(os.environ.get("SP_DYNAMICS_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
    backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout))
    return Shard(dist.get_rank(), dist.get_world_size())


def end_job(shard: Shard) -> None:
    """End this process of a distributed job (nothing happens on a single process).

    Every rank waits at a barrier (so rank 0's files are written before any rank leaves), the
    output streams are flushed and the process exits with status 0 at once, without Python's
    teardown. Tearing gloo down at exit, even after a barrier and ``destroy_process_group``,
    aborted a rank now and then ("terminate called without an active exception", about one
    full test run in six on 2 loaded cores); an exit that runs no destructors cannot. Call it
    last: nothing after it runs.
    """
    if not shard.enabled:
        return
    torch.distributed.barrier()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
