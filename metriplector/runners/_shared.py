"""What the metriplector training runners share: model-name and device checks, the parameter
parity check of a comparison, the warm-up + cosine schedule, and loading a checkpoint file of a
given format with a clear error."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from sp_dynamics.io import safe_load
from sp_dynamics.runners.common import UsageError


def check_models(kinds, allowed) -> tuple[str, ...]:
    for k in kinds:
        if k not in allowed:
            raise UsageError(f"unknown model {k!r}; choose from {', '.join(allowed)}")
    return tuple(kinds)


def check_device(device: str) -> str:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: CUDA is not available on this machine")
    return device


def check_parity(counts: dict[str, int], reference: int, name: str, tolerance: float = 0.10) -> dict[str, int]:
    """``counts`` unchanged if every one lies within ``tolerance`` of ``reference`` (the count of
    the ``name`` model); a UsageError naming the others otherwise."""
    bad = {k: n for k, n in counts.items() if abs(n - reference) > tolerance * reference}
    if bad:
        raise UsageError(f"parameter counts differ by more than {tolerance:.0%} from the {name} model's {reference}: {bad}")
    return counts


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """Learning-rate factor at (0-based) ``step``: linear warm-up over ``warmup`` steps, then a
    cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def percent_stat(values) -> str:
    """Fractions as a table cell in percent: mean ± std (population) over the seeds."""
    v = np.asarray(values, dtype=float)
    return f"{100 * v.mean():.2f} ± {100 * v.std():.2f}"


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, batch: int) -> torch.Tensor:
    """Predicted classes (on the CPU) of inputs x, in batches of ``batch`` on the model's device."""
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([model(x[i : i + batch].to(device)).argmax(-1).cpu() for i in range(0, len(x), batch)])


def load_blob(path: str | Path, fmt: str, what: str) -> dict:
    """A checkpoint dict whose ``format`` is ``fmt`` (FileNotFoundError / ValueError otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such {what}: {path}")
    blob = safe_load(path, what)
    if not isinstance(blob, dict) or blob.get("format") != fmt:
        raise ValueError(f"{path} is not a {what} (expected format {fmt!r})")
    return blob


def add_train_options(t, presets, models, checkpoints: str, seeds=(0,),
                      ship_help: str = "copy the first seed's models to --checkpoints") -> None:
    """The options every Metriplector ``train`` command shares (add the domain's own after)."""
    t.add_argument("--preset", choices=sorted(presets), default="cpu")
    t.add_argument("--seeds", type=int, nargs="+", default=list(seeds))
    t.add_argument("--models", nargs="+", default=list(models), help=f"any of {', '.join(models)}")
    t.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (the paper preset is meant for a GPU)")
    t.add_argument("--no-save", dest="save", action="store_false", help="do not write results or figures")
    t.add_argument("--ship", action="store_true", help=ship_help)
    t.add_argument("--checkpoints", default=checkpoints)


def load_model_blob(path: str | Path, fmt: str, what: str, build) -> tuple[torch.nn.Module, dict]:
    """The model of a ``fmt`` checkpoint, rebuilt by ``build(kind, kwargs)``, in eval mode, and the
    checkpoint dict; a ValueError naming the file when its contents do not fit the model."""
    blob = load_blob(path, fmt, what)
    try:
        model = build(blob["kind"], blob["kwargs"])
        model.load_state_dict(blob["model"])
    except (KeyError, TypeError, RuntimeError) as err:
        raise ValueError(f"{path} is not a usable {what}: {str(err).splitlines()[0]}") from None
    return model.eval(), blob
