"""The ``sp-dynamics`` command line.

    sp-dynamics --help
    sp-dynamics systems                                   # registered systems
    sp-dynamics benchmark --system pendulum --preset quick
    sp-dynamics meta-train --system dno --method svd --out runs/dno-svd
    sp-dynamics adapt runs/dno-svd --data new_system.npz --out runs/dno-svd/adapted
    sp-dynamics evaluate runs/dno-svd --latents runs/dno-svd/adapted --data new_system.npz
    sp-dynamics maze eval --size 39 --count 200            # domain commands, see --help

Every command takes ``--plugin module:Class`` (repeatable) to register a user's own system
before it runs, besides the ``sp_dynamics.systems`` entry points of installed packages. Domain
packages add commands through the ``sp_dynamics.commands`` entry-point group (``metriplector``
adds ``maze``). A user mistake -- an unknown system, a missing or malformed file, a bad
``--set`` -- prints one line and exits with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import importlib
import sys
from importlib.metadata import entry_points
from typing import Callable

__all__ = ["main", "run_main", "load_plugin"]

# command -> (module, function, one-line help); imported only when the command runs
BUILTIN = {
    "systems": ("sp_dynamics.runners.tasks", "systems_main", "list the registered systems"),
    "meta-train": ("sp_dynamics.runners.tasks", "meta_train_main", "meta-train one method on a family; save the run"),
    "adapt": ("sp_dynamics.runners.tasks", "adapt_main", "adapt a trained run to new systems from a data file"),
    "evaluate": ("sp_dynamics.runners.tasks", "evaluate_main", "score a trained (and adapted) run on a data file"),
    "fit": ("sp_dynamics.runners.tasks", "fit_main", "fit one model to one system's trajectories from a data file"),
    "benchmark": ("sp_dynamics.runners.benchmark", "main", "the protocol-v1 meta-learning benchmark on one family"),
    "shots": ("sp_dynamics.runners.shots", "main", "shot sweep and latent initialisation ablation"),
    "multidomain": ("sp_dynamics.runners.multidomain", "main", "one base over several families"),
    "sweep": ("sp_dynamics.runners.sweep", "main", "the lambda_z x lambda_phi locality sweep"),
    "fit-instances": ("sp_dynamics.runners.fit_instances", "main", "single-instance fits of a family's test instances"),
    "fit-trajectories": ("sp_dynamics.runners.trajectories", "main", "trajectory losses against derivative matching"),
    "diagnose-generic": ("sp_dynamics.runners.diagnosis", "main", "why GENERIC networks (did not) learn: measurements"),
    "demo": ("sp_dynamics.runners.demo", "main", "one HNN and one GENERIC network on single instances"),
    "copy-task": ("sp_dynamics.runners.copy_task", "main", "Hamiltonian Memory Layer on the copy task (train, eval)"),
}


def load_plugin(spec: str) -> None:
    """Import ``module:Class`` and register the system class it names (``module`` alone: import
    it, for modules that register their systems themselves)."""
    from .registry import register_system
    from .system import System

    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"--plugin {spec}: cannot import {module_name!r} ({exc})") from None
    if not attr:
        return
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise ValueError(f"--plugin {spec}: {module_name!r} has no attribute {attr!r}") from None
    if not (isinstance(obj, type) and issubclass(obj, System)):
        raise ValueError(f"--plugin {spec}: {attr} is not a System subclass")
    register_system(getattr(obj, "name", attr), obj, overwrite=True)


def _commands() -> dict[str, tuple[str, str, str]]:
    commands = dict(BUILTIN)
    for ep in entry_points(group="sp_dynamics.commands"):
        module, _, func = ep.value.partition(":")
        commands.setdefault(ep.name, (module, func or "main", f"(a {module.split('.')[0]} command; see its --help)"))
    return commands


def run_main(fn: Callable[[list[str]], object], argv: list[str], debug: bool = False) -> int:
    """Run a command's ``main(argv)`` with the user-error convention: ``ValueError`` (including
    :class:`~sp_dynamics.runners.common.UsageError`), ``FileNotFoundError`` and ``KeyError`` from a
    lookup print one line and give status 2; Ctrl-C gives 130 (runs resume from their checkpoints)."""
    try:
        fn(argv)
    except SystemExit as exc:  # argparse: --help (0) or its own one-line usage error (2)
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    except KeyboardInterrupt:
        print("interrupted; a run started again with the same arguments resumes from its last checkpoint",
              file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, KeyError) as exc:
        if debug:
            raise
        message = str(exc).strip().strip("'\"") if isinstance(exc, KeyError) else str(exc).strip()
        print(f"error: {message.splitlines()[0] if message else type(exc).__name__}", file=sys.stderr)
        return 2
    return 0


def _help(commands: dict) -> str:
    lines = ["usage: sp-dynamics [--plugin MODULE:CLASS] [--debug] COMMAND [options]", "",
             "Structure-preserving dynamics: meta-learning, benchmarks and domain models.", "", "commands:"]
    lines += [f"  {name:18s} {help_}" for name, (_, _, help_) in commands.items()]
    lines += ["", "options (before or after the command):",
              "  --plugin MODULE:CLASS  register a System subclass before running (repeatable)",
              "  --debug                show tracebacks instead of one-line errors",
              "  --version              print the version", "",
              "sp-dynamics COMMAND --help shows a command's own options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = _commands()
    plugins, debug, command, rest = [], False, None, []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--plugin":
            if i + 1 >= len(argv):
                print("error: --plugin needs MODULE:CLASS", file=sys.stderr)
                return 2
            plugins.append(argv[i + 1])
            i += 2
            continue
        if a.startswith("--plugin="):
            plugins.append(a.split("=", 1)[1])
        elif a == "--debug":
            debug = True
        elif command is not None:
            rest.append(a)
        elif a in ("-h", "--help"):
            print(_help(commands))
            return 0
        elif a == "--version":
            from . import __version__

            print(f"sp-dynamics {__version__}")
            return 0
        elif a.startswith("-"):
            print(f"error: unknown option {a!r} before the command; run sp-dynamics --help", file=sys.stderr)
            return 2
        else:
            command = a
        i += 1
    if command is None:
        print(_help(commands))
        return 0
    if command not in commands:
        print(f"error: unknown command {command!r}; run sp-dynamics --help for the list", file=sys.stderr)
        return 2
    try:
        for spec in plugins:
            load_plugin(spec)
        module, func, _ = commands[command]
        fn = getattr(importlib.import_module(module), func)
    except (ValueError, ImportError, AttributeError) as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run_main(fn, rest, debug)


if __name__ == "__main__":
    sys.exit(main())
