"""Atomic file writes: write to a temporary file in the same folder, then rename."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["atomic_save", "atomic_write_text", "atomic_savez", "safe_load"]


def _atomic(path: str | os.PathLike, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` that never leaves a half-written file at ``path``."""
    return _atomic(path, lambda fh: torch.save(obj, fh))


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    return _atomic(path, lambda fh: fh.write(text.encode()))


def atomic_savez(path: str | os.PathLike, **arrays) -> Path:
    """``numpy.savez`` that never leaves a half-written file at ``path``."""
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return _atomic(path, lambda fh: fh.write(buffer.getvalue()))


def safe_load(path: str | os.PathLike, what: str = "file") -> Any:
    """``torch.load`` (weights only) that turns a corrupt or truncated file into a clear ValueError."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:
        # torch's own message can suggest weights_only=False, which is wrong advice here
        raise ValueError(
            f"corrupt or unreadable {what} {str(path)!r} (torch.load raised {type(exc).__name__}; "
            "the file is truncated, not a torch file, or holds non-tensor objects)"
        ) from exc
