"""System registry: systems are plugins found by name.

Built-in systems live in the ``systems`` package and are declared, like any third-party
system, under the ``sp_dynamics.systems`` entry-point group, so this module never imports a
concrete system. Another installed package adds systems without touching this repository::

    # its pyproject.toml
    [project.entry-points."sp_dynamics.systems"]
    my_system = "my_pkg.my_module:MySystem"

or, at run time, with one call: ``register_system("my_system", MySystem)``.
"""

from __future__ import annotations

import warnings
from importlib import metadata
from typing import Callable, Union

from .system import System

__all__ = ["register_system", "get_system", "list_systems", "unregister_system", "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "sp_dynamics.systems"

SystemSpec = Union[System, Callable[..., System]]
_REGISTRY: dict[str, SystemSpec] = {}
_entry_points_loaded = False


def register_system(name: str, system: SystemSpec, *, overwrite: bool = False) -> SystemSpec:
    """Register a :class:`System` subclass, factory or instance under ``name``.

    Raises ValueError if the name is taken (unless ``overwrite``) or the object is not a system.
    Returns ``system`` so it can be used as a decorator helper.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"system name must be a non-empty string, got {name!r}")
    if not (isinstance(system, System) or callable(system)):
        raise ValueError(f"register_system({name!r}, ...) needs a System subclass, factory or instance")
    if name in _REGISTRY and _REGISTRY[name] is not system and not overwrite:
        raise ValueError(f"a system named {name!r} is already registered; pass overwrite=True to replace it")
    _REGISTRY[name] = system
    return system


def unregister_system(name: str) -> None:
    """Remove ``name`` from the registry (no error if absent)."""
    _REGISTRY.pop(name, None)


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:  # a broken third-party plugin must not hide the others
            warnings.warn(f"could not load system plugin {ep.name!r} ({ep.value}): {exc}", RuntimeWarning)
            continue
        if ep.name in _REGISTRY:
            if _REGISTRY[ep.name] is not obj:
                warnings.warn(
                    f"system plugin {ep.name!r} ({ep.value}) ignored: that name is already registered",
                    RuntimeWarning,
                )
            continue
        _REGISTRY[ep.name] = obj


def list_systems() -> list[str]:
    """Sorted names of all registered and plugin systems."""
    _load_entry_points()
    return sorted(_REGISTRY)


def get_system(name: str | System, **kwargs) -> System:
    """The system registered as ``name``, instantiated with ``kwargs``.

    A :class:`System` instance is returned as it is. An unknown name raises ValueError listing
    the available systems.
    """
    if isinstance(name, System):
        return name
    if name not in _REGISTRY:
        _load_entry_points()
    try:
        spec = _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown system {name!r}; available systems: {', '.join(list_systems())}") from None
    if isinstance(spec, System):
        if kwargs:
            raise ValueError(f"system {name!r} was registered as an instance and takes no arguments")
        return spec
    system = spec(**kwargs)
    if not isinstance(system, System):
        raise ValueError(f"system factory for {name!r} returned {type(system).__name__}, not a System")
    return system
