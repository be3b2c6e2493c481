"""Save and load models with no outside knowledge: weights plus the constructor's arguments.

A saved model is a folder::

    model.json    {"format": "sp-dynamics-model", "format_version": 1, "library_version": ...,
                   "class": "sp_dynamics.models.GENERICNet", "dtype": "float64", "config": {...}}
    weights.pt    the state_dict (tensors only; loaded with weights_only=True)

``config`` holds the arguments the model was built with, so :func:`load` rebuilds it exactly and
then loads the weights. Classes take part through the :func:`serializable` decorator, which
records the arguments of ``__init__``; nested modules given as arguments (a bracket passed to
``GENERICNet``) are recorded the same way. Arguments that are code -- a known energy function, a
friction law -- cannot be saved, and :func:`save` says so instead of writing a model that could
not be rebuilt.

Example::

    sp_dynamics.save(model, "runs/my-model")
    model = sp_dynamics.load("runs/my-model")
"""

from __future__ import annotations

import functools
import inspect
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .io import atomic_save, atomic_write_text, safe_load

__all__ = ["serializable", "save", "load", "model_config", "FORMAT_VERSION"]

FORMAT = "sp-dynamics-model"
FORMAT_VERSION = 1
_REGISTRY: dict[str, type] = {}


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def serializable(cls: type) -> type:
    """Class decorator: record the arguments of ``__init__`` so :func:`save` can rebuild the
    object, and allow :func:`load` to build this class by name. The outermost constructor of a
    subclass chain is the one recorded."""
    init = cls.__init__
    signature = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        if "_sp_config" not in self.__dict__:
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            arguments = dict(bound.arguments)
            arguments.pop(next(iter(signature.parameters)))  # self
            for name, p in signature.parameters.items():
                if p.kind is inspect.Parameter.VAR_KEYWORD:
                    arguments.update(arguments.pop(name, {}))
                elif p.kind is inspect.Parameter.VAR_POSITIONAL and arguments.get(name):
                    raise TypeError(f"{cls.__name__}: positional *args cannot be recorded for saving")
                elif p.kind is inspect.Parameter.VAR_POSITIONAL:
                    arguments.pop(name, None)
            object.__setattr__(self, "_sp_config", (cls, arguments))
        init(self, *args, **kwargs)

    cls.__init__ = __init__
    _REGISTRY[_name(cls)] = cls
    return cls


def model_config(model: nn.Module) -> dict:
    """The JSON description :func:`save` writes for ``model`` (class, dtype, config)."""
    record = model.__dict__.get("_sp_config")
    if record is None:
        raise ValueError(f"cannot save a {type(model).__name__}: it is not a serializable sp-dynamics model "
                         "(decorate the class with sp_dynamics.serialization.serializable)")
    cls, arguments = record
    if cls is not type(model):
        raise ValueError(f"cannot save a {type(model).__name__}: it subclasses {cls.__name__} without being "
                         "decorated with @serializable itself")
    return {"class": _name(cls), "config": {k: _encode(v, f"{cls.__name__}.{k}") for k, v in arguments.items()}}


def _encode(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, (list, tuple)):
        return {"__tuple__": [_encode(v, where) for v in value]} if isinstance(value, tuple) else \
            [_encode(v, where) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"__dict__": {k: _encode(v, f"{where}.{k}") for k, v in value.items()}}
    if isinstance(value, torch.dtype):
        return {"__dtype__": str(value).removeprefix("torch.")}
    if isinstance(value, nn.Module) and "_sp_config" in value.__dict__:
        return {"__module__": model_config(value)}
    raise ValueError(f"cannot save the argument {where} = {type(value).__name__}: only numbers, strings, "
                     "lists and sp-dynamics modules can be saved (a known function is code, not a weight; "
                     "rebuild such a model in your own code and load its state_dict)")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tuple__" in value:
        return tuple(_decode(v) for v in value["__tuple__"])
    if "__dict__" in value:
        return {k: _decode(v) for k, v in value["__dict__"].items()}
    if "__float__" in value:
        return float(value["__float__"])
    if "__dtype__" in value:
        return getattr(torch, value["__dtype__"])
    if "__module__" in value:
        return _build(value["__module__"])
    raise ValueError(f"unreadable config entry {value!r}")


def _build(record: dict) -> nn.Module:
    try:
        cls = _REGISTRY[record["class"]]
    except KeyError:
        raise ValueError(f"unknown model class {record['class']!r}: import the module that defines it "
                         "(or register it with @serializable) before loading") from None
    return cls(**{k: _decode(v) for k, v in record["config"].items()})


def _dtype(model: nn.Module) -> str | None:
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return str(t.dtype).removeprefix("torch.")
    return None


def save(model: nn.Module, path: str | Path, extra: dict | None = None) -> Path:
    """Write ``model`` to the folder ``path`` (created; files written atomically).

    ``extra``: JSON-ready metadata stored beside the config (e.g. training settings).
    Raises ``ValueError`` if the model (or an argument it was built with) cannot be saved."""
    from . import __version__

    description = {"format": FORMAT, "format_version": FORMAT_VERSION, "library_version": __version__,
                   **model_config(model), "dtype": _dtype(model), "extra": extra or {}}
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    atomic_save(model.state_dict(), path / "weights.pt")
    atomic_write_text(json.dumps(description, indent=1), path / "model.json")
    return path


def read_description(path: str | Path) -> dict:
    """The checked ``model.json`` of a saved model folder."""
    path = Path(path)
    meta = path / "model.json"
    if not meta.exists():
        raise ValueError(f"{str(path)!r} is not a saved sp-dynamics model (no model.json in it)")
    try:
        description = json.loads(meta.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"corrupt model description {str(meta)!r}: {exc}") from None
    if description.get("format") != FORMAT:
        raise ValueError(f"{str(meta)!r} is not an sp-dynamics model description")
    version = description.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"{str(path)!r} was written in model format {version} (sp-dynamics "
                         f"{description.get('library_version', '?')}); this version of sp-dynamics reads format "
                         f"{FORMAT_VERSION}: load it with a matching version and re-save")
    return description


def load(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model written by :func:`save`: its class from the config, its dtype, its weights.

    Raises ``ValueError`` for a folder that is not a saved model, one written in another format
    version, an unknown class, or weights that do not fit the rebuilt model."""
    _import_model_modules()
    path = Path(path)
    description = read_description(path)
    model = _build(description)
    if description.get("dtype"):
        model = model.to(getattr(torch, description["dtype"]))
    state = safe_load(path / "weights.pt", "model weights")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"the weights in {str(path)!r} do not fit a {description['class']} built from its config: "
                         f"{str(exc).splitlines()[0]}") from None
    return model.to(map_location)


def _import_model_modules() -> None:
    """Import the library's model modules, so their classes are registered before a load."""
    import importlib

    for name in ("sp_dynamics.models", "sp_dynamics.brackets", "sp_dynamics.modulation", "sp_dynamics.sequence",
                 "metriplector"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass
