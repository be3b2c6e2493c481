"""Meta-training run folders: what a checkpoint must agree on with the model and data it is
resumed with, and the finished run in the library's model format (:func:`save_run`,
:func:`load_run`)."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from torch import Tensor, nn

from ..io import atomic_save, safe_load

__all__ = ["model_signature", "data_fingerprint", "save_run", "load_run"]


def model_signature(model: nn.Module) -> dict:
    """What a checkpoint must agree on with the model it is loaded into: the class, every
    parameter's shape and dtype (``load_state_dict`` would cast a float64 checkpoint into a
    float32 model silently) and constant settings such as an energy scale."""
    return {
        "class": type(model).__name__,
        "parameters": {name: [list(p.shape), str(p.dtype)] for name, p in model.state_dict().items()},
        "energy_scale": getattr(model, "energy_scale", None),
    }


def data_fingerprint(x: Tensor, dx: Tensor) -> dict:
    """Shape, dtype and a SHA-256 digest of the training data: a checkpoint records it, and a run
    resumed on other data (another seed, fewer systems) is refused instead of silently mixing."""
    digest = hashlib.sha256()
    for t in (x, dx):
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return {"shape": list(x.shape), "dtype": str(x.dtype), "sha256": digest.hexdigest()}


def save_run(run_dir: str | Path, model: nn.Module, latents: Tensor, config=None) -> Path:
    """Write a finished meta-training run in the library's model format: ``run_dir/model/``
    (:func:`sp_dynamics.save`) and ``run_dir/latents.pt`` (the training latent table).
    :func:`load_run` reads it back with no outside knowledge."""
    from ..serialization import save

    run_dir = Path(run_dir)
    save(model, run_dir / "model", extra={"meta_config": dataclasses.asdict(config) if config else None})
    atomic_save({"latents": latents.detach().cpu()}, run_dir / "latents.pt")
    return run_dir


def load_run(run_dir: str | Path) -> tuple[nn.Module, Tensor]:
    """The meta-trained model and its training latents (S, k) from a finished run folder."""
    from ..serialization import load

    run_dir = Path(run_dir)
    if not (run_dir / "model" / "model.json").exists():
        hint = " (the run has a checkpoint but has not finished: run it again to resume)" \
            if (run_dir / "checkpoint.pt").exists() else ""
        raise ValueError(f"{str(run_dir)!r} holds no finished meta-training run{hint}")
    model = load(run_dir / "model")
    latents = safe_load(run_dir / "latents.pt", "latent table")["latents"]
    return model, latents.to(next(model.parameters()).dtype)
