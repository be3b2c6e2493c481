"""``python -m experiments.<name>``: run an installed runner with this checkout's folders.

The runners live in the installed packages (``sp_dynamics.runners``, ``metriplector.runners``) so
that ``sp-dynamics <command>`` works after ``pip install``; from a checkout these scripts run the
same code with results in ``experiments/results`` (and, for training commands, checkpoints in the
packages' ``checkpoints`` folders, which ship with them)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
REPO = HERE.parent


def main_of(module: str, script: str, **defaults):
    """A ``main(argv)`` that calls ``module.main`` with this checkout's defaults."""
    runner = importlib.import_module(module)

    def main(argv=None):
        return runner.main(argv, prog=f"python -m experiments.{script}", **defaults)

    return main


def run(main) -> None:
    """Run ``main`` with the CLI's user-error convention (one line, exit status 2)."""
    from sp_dynamics.cli import run_main

    argv = sys.argv[1:]
    debug = "--debug" in argv
    sys.exit(run_main(main, [a for a in argv if a != "--debug"], debug))
