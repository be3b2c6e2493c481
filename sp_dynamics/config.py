"""Configuration helpers: type-checked ``key=value`` overrides of frozen dataclasses, and a stable
hash of a configuration for naming run folders.

Every runner keeps its settings in a frozen dataclass (nested ones for nested settings, e.g.
``BenchConfig.meta`` is a :class:`~sp_dynamics.meta.MetaConfig`). A command line then changes
any of them with ``--set meta.iterations=5000 --set shots=10``::

    cfg = apply_overrides(PRESETS["paper"], ["meta.iterations=5000", "seeds=0,1"])
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from typing import Any, Iterable

__all__ = ["apply_overrides", "config_hash", "config_dict", "with_defaults"]


def config_dict(cfg: Any) -> Any:
    """A JSON-ready view of a (nested) dataclass configuration."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: config_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (tuple, list)):
        return [config_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {str(k): config_dict(v) for k, v in sorted(cfg.items(), key=lambda kv: str(kv[0]))}
    return cfg


def with_defaults(stored: dict, defaults: dict) -> dict:
    """A stored configuration (a :func:`config_dict`) with the settings it lacks, nested ones
    included, taken from ``defaults``: a results file written before a setting existed ran with
    that setting's default, the behaviour before it was added."""
    out = dict(stored)
    for k, d in defaults.items():
        if k not in out:
            out[k] = d
        elif isinstance(d, dict) and isinstance(out[k], dict):
            out[k] = with_defaults(out[k], d)
    return out


def config_hash(cfg: Any, length: int = 8) -> str:
    """A short, stable hex digest of a configuration: equal configurations, equal hashes."""
    text = json.dumps(config_dict(cfg), sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _parse(text: str, annotation: Any, current: Any, key: str) -> Any:
    """``text`` as a value of the field's type (from its annotation, else its current value)."""
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, types.UnionType):
        if text.lower() == "none" and type(None) in typing.get_args(annotation):
            return None
        errors = []
        for arg in args:  # the first member type that accepts the text
            try:
                return _parse(text, arg, current, key)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(f"--set {key}={text}: not a valid value ({'; '.join(errors)})")
    if origin in (tuple, list):
        item = args[0] if args else str
        parts = [p for p in text.split(",") if p.strip()]
        return tuple(_parse(p.strip(), item, None, key) for p in parts)
    if annotation is Any or annotation is None:
        annotation = type(current) if current is not None else str
    if annotation is bool:
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"--set {key}={text}: expected true or false")
    if annotation in (int, float, str):
        try:
            return annotation(text)
        except ValueError:
            raise ValueError(f"--set {key}={text}: expected {annotation.__name__}") from None
    if isinstance(annotation, str) and annotation in ("int", "float", "str", "bool"):
        return _parse(text, {"int": int, "float": float, "str": str, "bool": bool}[annotation], current, key)
    raise ValueError(f"--set {key}: cannot set a field of type {annotation!r} from the command line")


def _set(cfg: Any, path: list[str], text: str, full: str) -> Any:
    if not (dataclasses.is_dataclass(cfg) and not isinstance(cfg, type)):
        raise ValueError(f"--set {full}: {'.'.join(path)} is not a settings group")
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    name = path[0]
    if name not in fields:
        raise ValueError(f"--set {full}: unknown setting {name!r}; known: {', '.join(sorted(fields))}")
    current = getattr(cfg, name)
    if len(path) > 1:
        return dataclasses.replace(cfg, **{name: _set(current, path[1:], text, full)})
    if dataclasses.is_dataclass(current):
        raise ValueError(f"--set {full}: {name} is a group of settings; set one of its fields, e.g. {name}.<field>=...")
    hints = typing.get_type_hints(type(cfg))
    return dataclasses.replace(cfg, **{name: _parse(text, hints.get(name, Any), current, full)})


def apply_overrides(cfg: Any, overrides: Iterable[str]) -> Any:
    """A copy of the frozen dataclass ``cfg`` with ``"a.b.c=value"`` overrides applied.

    Values are parsed by the field's type annotation (int, float, str, bool, optional and union
    types, tuples as comma-separated lists). Raises ``ValueError`` naming the override for an
    unknown key, a malformed item or a value of the wrong type; runs the config's ``validate()``
    (and its nested configs') if it has one."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set {item}: expected key=value")
        key, text = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ValueError(f"--set {item}: empty key")
        cfg = _set(cfg, key.split("."), text.strip(), item)
    _validate(cfg)
    return cfg


def _validate(cfg: Any) -> None:
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        for f in dataclasses.fields(cfg):
            _validate(getattr(cfg, f.name))
        validate = getattr(cfg, "validate", None)
        if callable(validate):
            validate()
