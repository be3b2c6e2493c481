"""Evolving-latent meta-training (Jing et al., arXiv 2508.11205; ``experiments/PROTOCOL.md``).

A table of training latents (one per training system) is never reset; the base network
(MLP weights, hypernetwork, shared SVD bases) and the latents co-evolve. Each outer iteration
draws a batch of tasks and points, takes ``n_inner`` Adam steps on the batch's latents (base
fixed), then ``n_outer`` Adam steps on the base (latents fixed). All tasks of a batch go
through the network at once (tensors (K, N, n)): no Python loop over tasks.

Runs are resumable: every ``checkpoint_every`` iterations the model, both optimisers, the
latent table with its Adam moments and all random-number states are written atomically to
``run_dir/checkpoint.pt``; a run started again on the same folder continues from there and
ends exactly where an uninterrupted run with the same seed ends. ``metrics.csv`` and
``config.json`` are written next to it.
"""

from __future__ import annotations

import csv
import math
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn
from tqdm import tqdm

from ..io import atomic_save, atomic_write_text, safe_load
from ..modulation import model_orthogonality as _orth
from ..fitting import orient_entropy
from ..nn import standardize_inputs
from .adaptation import support_loss
from .distributed import Shard, from_environment
from .refinement import refine
from .runs import data_fingerprint, load_run, model_signature, save_run

__all__ = ["MetaConfig", "meta_train", "save_run", "load_run", "data_fingerprint"]


@dataclass(frozen=True)
class MetaConfig:
    """Meta-training settings; defaults follow protocol v1 (PROTOCOL.md)."""

    iterations: int = 2000
    tasks_per_batch: int = 10
    points_per_task: int = 256
    n_inner: int = 3
    n_outer: int = 1
    lr_base: float = 1e-3
    lr_latent: float = 1e-2
    grad_clip: float = 1.0
    lr_schedule: str = "constant"  # or "cosine": both learning rates decay as 0.5 (1 + cos(pi it / iterations))
    lam_z: float = 1e-2
    lam_phi: float = 1e-3
    lam_orth: float = 1e-2
    latent_init_std: float = 0.1
    entropy_penalty: float = 1.0  # GENERIC models: keeps entropies from decreasing along the data (support_loss)
    seed: int = 0
    checkpoint_every: int = 100
    log_every: int = 10
    # Refinement after the Adam iterations: full-batch L-BFGS on the data loss over the base and
    # the whole latent table jointly, on a fixed subsample of refine_points states per system
    # (0 = off).
    refine_evals: int = 0
    refine_points: int = 128
    refine_history: int = 50
    refine_chunk: int = 50  # evaluations per L-BFGS call; logged and checkpointed after each
    # Restarts of the Adam phase: R initialisations, each run for restart_iterations, best continued.
    restarts: int = 1
    restart_iterations: int = 300

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting outside its domain."""
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(f"unknown lr_schedule {self.lr_schedule!r}; choose from {SCHEDULES}")
        for name in ("tasks_per_batch", "points_per_task", "checkpoint_every", "log_every", "refine_points",
                     "refine_history", "refine_chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"MetaConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.restarts < 1:
            raise ValueError(f"MetaConfig.restarts must be >= 1, got {self.restarts}")
        if self.restarts > 1 and not 1 <= self.restart_iterations <= self.iterations:
            raise ValueError(f"MetaConfig.restart_iterations must be in [1, iterations = {self.iterations}] with "
                             f"restarts > 1, got {self.restart_iterations}")
        for name in ("iterations", "n_inner", "n_outer", "refine_evals"):
            if getattr(self, name) < 0:
                raise ValueError(f"MetaConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("lr_base", "lr_latent", "grad_clip"):
            if not getattr(self, name) > 0:
                raise ValueError(f"MetaConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("lam_z", "lam_phi", "lam_orth", "latent_init_std", "entropy_penalty"):
            if getattr(self, name) < 0:
                raise ValueError(f"MetaConfig.{name} must be >= 0, got {getattr(self, name)}")


SCHEDULES = ("constant", "cosine")


def lr_factor(config: MetaConfig, iteration: int) -> float:
    """Learning-rate multiplier at (0-based) ``iteration``: a pure function of the iteration, so a
    resumed run follows the same schedule without extra checkpoint state."""
    if config.lr_schedule == "constant":
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * iteration / config.iterations))


class _RowAdam:
    """Adam on rows of a table: rows outside the batch keep their value *and* their moments
    (a plain Adam over the whole table would keep moving them by momentum)."""

    def __init__(self, table: Tensor, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.lr, self.b1, self.b2, self.eps = lr, betas[0], betas[1], eps
        self.m = torch.zeros_like(table)
        self.v = torch.zeros_like(table)
        self.t = torch.zeros(table.shape[0], dtype=torch.long)

    @torch.no_grad()
    def step(self, table: Tensor, rows: Tensor, grad: Tensor) -> None:
        self.t[rows] += 1
        t = self.t[rows].to(table.dtype).unsqueeze(-1)
        self.m[rows] = self.b1 * self.m[rows] + (1 - self.b1) * grad
        self.v[rows] = self.b2 * self.v[rows] + (1 - self.b2) * grad**2
        m_hat = self.m[rows] / (1 - self.b1**t)
        v_hat = self.v[rows] / (1 - self.b2**t)
        table[rows] -= self.lr * m_hat / (v_hat.sqrt() + self.eps)

    def state_dict(self) -> dict:
        return {"m": self.m, "v": self.v, "t": self.t}

    def load_state_dict(self, state: dict) -> None:
        self.m, self.v, self.t = state["m"].clone(), state["v"].clone(), state["t"].clone()


def sample_tasks(x: Tensor, dx: Tensor, K: int, N: int, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """K random systems and N distinct random points of each: (task ids (K,), x (K, N, n), dx (K, N, n))."""
    S, P, n = x.shape
    tasks = torch.randperm(S, generator=gen)[:K]
    pts = torch.rand(len(tasks), P, generator=gen).argsort(-1)[:, :N].unsqueeze(-1).expand(-1, -1, n)
    return tasks, torch.gather(x[tasks], 1, pts), torch.gather(dx[tasks], 1, pts)


def _hyper_parameters(model: nn.Module) -> list[Tensor]:
    return [p for name, p in model.named_parameters() if ".hyper." in name]


def _as_model_dtype(model: nn.Module, *tensors: Tensor) -> tuple[Tensor, ...]:
    """The data in the model's floating dtype (float32 data for a float64 model would otherwise
    fail deep inside torch's linear layers)."""
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    return tuple(t if dtype is None else t.to(dtype) for t in tensors)


class _AdamRun:
    """The state of one evolving-latent Adam run: model, base optimiser, latent table with its
    row-wise Adam, the batch generator and the log; :meth:`iteration` takes one iteration."""

    def __init__(self, model: nn.Module, x: Tensor, dx: Tensor, config: MetaConfig, seed: int,
                 shard: Shard | None = None):
        self.model, self.x, self.dx, self.config = model, x, dx, config
        self.shard = shard or Shard()
        self.gen = torch.Generator().manual_seed(seed)  # every random draw of the run comes from here
        self.latents = config.latent_init_std * torch.randn(x.shape[0], model.latent_dim, generator=self.gen,
                                                            dtype=x.dtype)
        self.base_params = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.Adam(self.base_params, lr=config.lr_base)
        self.row_adam = _RowAdam(self.latents, config.lr_latent)
        self.hyper = _hyper_parameters(model)
        self.log: list[dict] = []
        if config.entropy_penalty:  # a fresh run: start with entropies that grow along the data (fit.orient_entropy)
            orient_entropy(model, x[:, :64], dx[:, :64], self.latents)

    def regulariser(self) -> tuple[Tensor, Tensor]:
        orth = _orth(self.model)
        # vector_norm: gradient 0 at 0 (FW's zero-initialised hypernetwork); sqrt(sum) gives NaN
        reg = (self.config.lam_phi * torch.linalg.vector_norm(torch.cat([p.flatten() for p in self.hyper]))
               if self.hyper else 0.0)
        return reg + self.config.lam_orth * orth, orth

    def iteration(self, it: int, t0: float) -> dict:
        cfg, model, shard = self.config, self.model, self.shard
        tasks, xb, dxb = sample_tasks(self.x, self.dx, cfg.tasks_per_batch, cfg.points_per_task, self.gen)
        K = len(tasks)
        if shard.enabled:  # every rank drew the same global batch; keep the tasks this rank owns
            mine = shard.owned(tasks)
            tasks, xb, dxb = tasks[mine], xb[mine], dxb[mine]
        scale = lr_factor(cfg, it)
        self.row_adam.lr = cfg.lr_latent * scale
        for group in self.opt.param_groups:
            group["lr"] = cfg.lr_base * scale
        # inner loop: the batch's latents, base fixed (each task's latent step depends on it alone)
        for _ in range(cfg.n_inner if len(tasks) else 0):
            z = self.latents[tasks].clone().requires_grad_(True)
            loss_z = support_loss(model, xb, dxb, z, cfg.entropy_penalty).sum() + cfg.lam_z * z.norm(dim=-1).sum()
            (gz,) = torch.autograd.grad(loss_z, z)
            self.row_adam.step(self.latents, tasks, gz)
        # outer loop: the base, latents fixed; the data term's gradient is summed over ranks
        z = self.latents[tasks]
        for _ in range(cfg.n_outer):
            self.opt.zero_grad()
            if len(tasks):
                data_part = support_loss(model, xb, dxb, z, cfg.entropy_penalty).sum() / K
                data_part.backward()
                data_part = data_part.detach()
            else:
                data_part = torch.zeros((), dtype=self.x.dtype, device=self.x.device)
            shard.sum_gradients(self.base_params)
            reg, orth = self.regulariser()
            if reg.requires_grad:
                reg.backward()
            torch.nn.utils.clip_grad_norm_(self.base_params, cfg.grad_clip)
            self.opt.step()
        owned_rows = shard.owned(torch.arange(self.latents.shape[0])) if shard.enabled else slice(None)
        totals = shard.sum_(torch.stack([data_part.to(self.x.dtype),
                                         self.latents[owned_rows].norm(dim=-1).sum().to(self.x.dtype)]))
        data, latent_norm = totals[0], totals[1] / self.latents.shape[0]
        if not torch.isfinite(data):
            raise FloatingPointError(f"meta-training diverged at iteration {it} (loss {float(data)})")
        row = {"iteration": it + 1, "phase": "adam", "loss": float(data),
               "latent_norm": float(latent_norm), "orth": float(orth.detach()),
               "time_s": round(time.time() - t0, 3)}
        if (it + 1) % cfg.log_every == 0 or it + 1 == cfg.iterations:
            self.log.append(row)
        return row

    def score(self) -> float:
        """The data loss on a fixed sample of 64 states of every system at the run's own latents:
        what the restarts are compared by (the same sample for every candidate)."""
        g = torch.Generator().manual_seed(12345)
        S, P, n = self.x.shape
        idx = torch.rand(S, P, generator=g).argsort(-1)[:, :min(64, P)].unsqueeze(-1).expand(-1, -1, n)
        value = support_loss(self.model, torch.gather(self.x, 1, idx), torch.gather(self.dx, 1, idx), self.latents)
        return float(value.mean().detach())


def _candidate_model(model: nn.Module, x: Tensor, seed: int) -> nn.Module:
    """A freshly initialised copy of ``model`` (rebuilt from its recorded constructor arguments,
    with initial weights from ``seed``; the caller's global RNG is left as it was)."""
    from ..serialization import _build, model_config

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = _build(model_config(model))
    fresh = fresh.to(dtype=x.dtype, device=x.device)
    standardize_inputs(fresh, x)
    return fresh


def meta_train(
    model: nn.Module,
    x: Tensor,
    dx: Tensor,
    *,
    config: MetaConfig = MetaConfig(),
    run_dir: str | Path | None = None,
    progress: bool | None = None,
    callback: Callable[[int, dict], None] | None = None,
    distributed: bool | None = None,
) -> tuple[Tensor, list[dict]]:
    """Meta-train a latent model on the training systems of a family.

    Two phases: ``config.iterations`` evolving-latent Adam iterations (the paper's algorithm:
    inner latent steps, outer base steps, on random batches of tasks and points), then, if
    ``config.refine_evals > 0``, a refinement of the data term by full-batch L-BFGS over the base
    and the whole latent table jointly, on a fixed subsample of ``refine_points`` states per
    system (the regularisers are left out there, see :mod:`.refinement`). On the DNO family the
    refinement takes the training loss from 7e-3 to 2e-5 (relative) in 500 evaluations, where
    more Adam iterations stall (``experiments/PROTOCOL.md``, "Meta-training refinement").

    With ``config.restarts = R > 1`` the Adam phase first runs R initialisations -- the model as
    given and R - 1 fresh ones -- for ``restart_iterations`` each and continues the one with the
    lowest loss on a fixed sample of every system's data (a run that starts in a basin without
    dissipation stays there: on DNO, SVD(3) seed 2 ended the Adam phase at a loss of 0.47 where
    seeds 0 and 1 reached 4e-4; after 200 iterations they were already 1.9 against 0.07-0.36).
    If the given initialisation wins, the run is the one it would have been without restarts.

    Args:
        model: a latent model, ``model(t, x, z)`` with x (K, N, n) and z (K, k), and a
            ``latent_dim`` attribute (:class:`~sp_dynamics.LatentHamiltonianNN`, ...). Restarts
            need a model built by a ``@serializable`` class (all of the library's are).
        x, dx: training states and derivatives per system, (S, P, n): S systems, P points each
            (e.g. ``dataset.x[train_ids].reshape(S, -1, n)``).
        config: settings. run_dir: folder for checkpoint, metrics and config (resumes if a
            checkpoint is there, in either phase). progress: tqdm bar (None: only on a terminal).
        callback: called as ``callback(step, metrics)`` after each Adam iteration of the
            continued run and after each chunk of refinement evaluations (``step`` counts
            iterations, then evaluations on top).
        distributed: data-parallel over the processes of a ``torch.distributed`` job (see
            :mod:`sp_dynamics.meta.distributed`; launch with ``torchrun``). None: when the
            environment has ``WORLD_SIZE`` > 1 or a process group is initialised. The Adam phase
            only: restarts and the L-BFGS refinement run on one process. Every rank returns the
            same latents and log; only rank 0 writes to ``run_dir``.

    Returns:
        The trained latent table (S, k) and the logged metrics (``phase`` "adam", "restart r"
        with each candidate's score, or "lbfgs").
    """
    if x.ndim != 3 or x.shape != dx.shape:
        raise ValueError(f"x and dx must both be (systems, points, n), got {tuple(x.shape)} and {tuple(dx.shape)}")
    if not bool(torch.isfinite(x).all() and torch.isfinite(dx).all()):
        raise ValueError("training data contain NaN or inf")
    config.validate()
    x, dx = _as_model_dtype(model, x, dx)
    S, P, _ = x.shape
    K, N = config.tasks_per_batch, config.points_per_task
    if K > S:
        raise ValueError(f"tasks_per_batch = {K} exceeds the {S} training systems; set it to at most {S}")
    if N > P:
        raise ValueError(f"points_per_task = {N} exceeds the {P} points per system; set it to at most {P}")
    if config.refine_evals and config.refine_points > P:
        raise ValueError(f"refine_points = {config.refine_points} exceeds the {P} points per system")
    shard = from_environment(x.device) if distributed is not False else Shard()
    if distributed and not shard.enabled:
        raise ValueError("distributed=True needs a torch.distributed job (launch with torchrun --nproc_per_node N)")
    if shard.enabled:
        if shard.world > S:
            raise ValueError(f"{shard.world} processes but only {S} training systems: every process must own at "
                             f"least one; use at most {S} processes")
        if config.restarts > 1 or config.refine_evals:
            raise ValueError("restarts and the L-BFGS refinement run on one process only; set "
                             "restarts=1 and refine_evals=0 for a distributed run, or launch one process")
    writer = shard.is_main  # only rank 0 writes files
    fingerprint = data_fingerprint(x, dx)
    shard.agree("training data", fingerprint["sha256"])
    shard.agree("meta-training settings", json.dumps(dataclasses.asdict(config), sort_keys=True))
    shard.agree("models (class, parameter shapes, dtypes)", json.dumps(model_signature(model), sort_keys=True, default=str))
    standardize_inputs(model, x)  # models with input standardisation (GENERIC): from the training data
    shard.broadcast_module(model)  # every rank starts from rank 0's base
    run = _AdamRun(model, x, dx, config, config.seed, shard)
    start, refine_state, refined, resumed = 0, None, 0, False

    run_dir = Path(run_dir) if run_dir is not None else None
    ckpt_path = run_dir / "checkpoint.pt" if run_dir is not None else None
    if run_dir is not None:
        if writer:
            run_dir.mkdir(parents=True, exist_ok=True)
        shard.barrier()
        if ckpt_path.exists():
            state = safe_load(ckpt_path, "meta-training checkpoint")
            if state.get("config") != dataclasses.asdict(config):
                raise ValueError(f"{ckpt_path} was written with a different config; use a new run folder")
            if "model_signature" in state and state["model_signature"] != model_signature(model):
                raise ValueError(f"{ckpt_path} was written for a different model (class, parameter shapes or "
                                 "dtypes, or energy scale); use a new run folder")
            if "data" in state and state["data"] != fingerprint:
                old = state["data"]
                raise ValueError(f"{ckpt_path} was trained on other data ({old['shape'][0]} systems x "
                                 f"{old['shape'][1]} points, digest {old['sha256'][:12]}) than given now "
                                 f"({S} x {P}, digest {fingerprint['sha256'][:12]}); use a new run folder")
            model.load_state_dict(state["model"])
            run.opt.load_state_dict(state["optimizer"])
            run.latents = state["latents"].clone()
            run.row_adam.load_state_dict(state["latent_adam"])
            run.gen.set_state(state["generator"])
            start, run.log = state["iteration"], list(state["log"])
            refine_state, refined = state.get("refine_optimizer"), state.get("refine_evals", 0)
            resumed = True
        # after the checks: a refused resume must not overwrite the folder's own config
        if writer:
            atomic_write_text(json.dumps(dataclasses.asdict(config), indent=2), run_dir / "config.json")

    def save(iteration: int, refine_opt=None, refined: int = 0) -> None:
        # the latent table and its moments, gathered from the rows each rank owns (collective)
        latents = shard.gather_rows(run.latents)
        adam = {k: shard.gather_rows(v) for k, v in run.row_adam.state_dict().items()}
        if not writer:
            shard.barrier()
            return
        atomic_save(
            {
                "config": dataclasses.asdict(config), "model_signature": model_signature(model),
                "data": fingerprint,
                "iteration": iteration, "model": model.state_dict(),
                "optimizer": run.opt.state_dict(), "latents": latents, "latent_adam": adam,
                "generator": run.gen.get_state(), "log": run.log,
                "refine_optimizer": None if refine_opt is None else refine_opt.state_dict(), "refine_evals": refined,
            },
            ckpt_path,
        )
        with open(run_dir / "metrics.csv", "w", newline="") as fh:  # rewritten: consistent after resume
            table = csv.DictWriter(fh, fieldnames=["iteration", "phase", "loss", "latent_norm", "orth", "time_s"])
            table.writeheader()
            table.writerows(run.log)
        shard.barrier()  # the checkpoint is on disk before any rank goes on

    t0 = time.time()
    if config.restarts > 1 and not resumed:
        run, start = _restarts(run, model, x, dx, config, t0, progress), config.restart_iterations
        if ckpt_path is not None:
            save(start)
    bar = tqdm(range(start, config.iterations), initial=start, total=config.iterations, desc="meta-train",
               disable=(None if progress is None else not progress) if writer else True)
    for it in bar:
        row = run.iteration(it, t0)
        if run.log and run.log[-1] is row:
            bar.set_postfix(loss=f"{row['loss']:.3e}")
        if ckpt_path is not None and ((it + 1) % config.checkpoint_every == 0 or it + 1 == config.iterations):
            save(it + 1)
        if callback is not None:
            callback(it + 1, row)
    bar.close()
    latents = shard.gather_rows(run.latents)
    if config.refine_evals > refined:
        latents = refine(model, x, dx, latents, config, refine_state, refined, run.log, t0,
                          save if ckpt_path is not None else None, progress, callback)
    if run_dir is not None and writer:
        save_run(run_dir, model, latents, config)
    shard.barrier()
    return latents, run.log


RESTART_SEED_STRIDE = 104729


def _restarts(run: _AdamRun, model: nn.Module, x: Tensor, dx: Tensor, config: MetaConfig, t0: float,
              progress) -> _AdamRun:
    """Run ``config.restarts`` candidates for ``restart_iterations`` Adam iterations and return the
    best one, continued in ``model`` (the caller's object holds the result)."""
    # Candidate r > 0 draws its initial weights, latents and batches from seed + 104729 r (a prime
    # stride), so no candidate of one run shares a seed with another run of a small seed.
    seeds = [config.seed + RESTART_SEED_STRIDE * r for r in range(1, config.restarts)]
    candidates = [run] + [_AdamRun(_candidate_model(model, x, s), x, dx, config, s) for s in seeds]
    scores = []
    for r, cand in enumerate(tqdm(candidates, desc="meta-train restarts", disable=None if progress is None else not progress)):
        for it in range(config.restart_iterations):
            cand.iteration(it, t0)
        scores.append(cand.score())
    best = min(range(len(candidates)), key=lambda r: scores[r])
    chosen = candidates[best]
    if chosen is not run:  # carry the winner into the caller's model, with its optimiser state
        model.load_state_dict(chosen.model.state_dict())
        opt = torch.optim.Adam(run.base_params, lr=config.lr_base)
        opt.load_state_dict(chosen.opt.state_dict())
        chosen.model, chosen.opt, chosen.base_params = model, opt, run.base_params
        chosen.hyper = run.hyper
    for r, value in enumerate(scores):
        chosen.log.append({"iteration": config.restart_iterations, "phase": f"restart {r}" + (" (chosen)" if r == best else ""),
                           "loss": value, "latent_norm": float(candidates[r].latents.norm(dim=-1).mean()),
                           "orth": float("nan"), "time_s": round(time.time() - t0, 3)})
    return chosen
