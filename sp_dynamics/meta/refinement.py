"""The refinement phase of meta-training: full-batch L-BFGS on the data term over the base and the
whole latent table jointly (see :func:`sp_dynamics.meta.meta_train`)."""

from __future__ import annotations

import time

import torch
from torch import Tensor
from tqdm import tqdm

from ..modulation import model_orthogonality as _orth
from ..optim import lbfgs_closure, make_lbfgs
from .adaptation import support_loss

__all__ = []


def refine(model, x, dx, latents, config, state, done: int, log, t0, save, progress,
            callback) -> Tensor:
    """The L-BFGS refinement phase of :func:`meta_train` (resumable after ``done`` evaluations)."""
    S, P, n = x.shape
    # A fixed subsample, drawn from its own stream so that it does not depend on the Adam phase.
    g = torch.Generator().manual_seed(config.seed + 7919)
    idx = torch.rand(S, P, generator=g).argsort(-1)[:, :config.refine_points].unsqueeze(-1).expand(-1, -1, n)
    xr, dxr = torch.gather(x, 1, idx), torch.gather(dx, 1, idx)
    table = latents.clone().requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad] + [table]
    opt = make_lbfgs(params, config.refine_chunk, config.refine_history)
    if state is not None:
        opt.load_state_dict(state)
    latest: dict = {}

    def objective() -> Tensor:
        # The data term only. The locality and orthogonality regularisers shaped the latent space
        # during the Adam phase; here they would dominate (on DNO SVD(3) after 3000 iterations
        # they are 10x the data loss) and their norms sit at a kink (orthogonal bases: ||U^T U - I||
        # at 0), which stalls the line search: no step in 600 evaluations (PROTOCOL.md).
        data = support_loss(model, xr, dxr, table, config.entropy_penalty).mean()
        latest.update(data=float(data.detach()), orth=float(_orth(model).detach()))
        return data

    counted = [0]
    closure = lbfgs_closure(opt, params, objective, lambda _: counted.__setitem__(0, counted[0] + 1))
    bar = tqdm(total=config.refine_evals, initial=done, desc="meta-refine (L-BFGS)", unit="eval",
               disable=None if progress is None else not progress)
    while done < config.refine_evals:
        chunk = min(config.refine_chunk, config.refine_evals - done)
        for group in opt.param_groups:
            group["max_iter"] = group["max_eval"] = chunk
        before = {k: v.detach().clone() for k, v in model.state_dict().items()}, table.detach().clone()
        counted[0] = 0
        phase = "lbfgs"
        try:
            opt.step(closure)
        except FloatingPointError:  # keep the last good parameters and stop refining
            model.load_state_dict(before[0])
            with torch.no_grad():
                table.copy_(before[1])
            phase = "lbfgs-stopped: non-finite loss"
        with torch.no_grad():
            latents.copy_(table)
        if phase == "lbfgs":
            objective()  # the loss at the accepted parameters (the last evaluation may be a rejected trial)
        step = max(counted[0], 1)
        if phase != "lbfgs" or counted[0] <= 1:  # failed, or a zero gradient: nothing left to do
            step = config.refine_evals - done    # (marked done, so a restart does not retry)
        done += step
        row = {"iteration": config.iterations + done, "phase": phase, "loss": latest.get("data", float("nan")),
               "latent_norm": float(latents.norm(dim=-1).mean()), "orth": latest.get("orth", float("nan")),
               "time_s": round(time.time() - t0, 3)}
        log.append(row)
        bar.update(step)
        bar.set_postfix(loss=f"{row['loss']:.3e}")
        if save is not None:
            save(config.iterations, opt, done)
        if callback is not None:
            callback(row["iteration"], row)
    bar.close()
    return latents.detach()
