"""What the metriplector training runners share: model-name and device checks, and loading a
checkpoint file of a given format with a clear error."""

from __future__ import annotations

from pathlib import Path

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


def load_blob(path: str | Path, fmt: str, what: str) -> dict:
    """A checkpoint dict whose ``format`` is ``fmt`` (FileNotFoundError / ValueError otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such {what}: {path}")
    blob = safe_load(path, what)
    if not isinstance(blob, dict) or blob.get("format") != fmt:
        raise ValueError(f"{path} is not a {what} (expected format {fmt!r})")
    return blob
