"""What every runner shares: parallel jobs, table cells, result files with their config, the
machine line, figures, and the user-error convention.

Result files: a runner writes ``<stem>.md`` (the table, with the command, machine, date and wall
time at its top), ``<stem>.json`` (the numbers) and ``<stem>.config.json`` (the full
configuration, so the run can be repeated) atomically into its output folder.

User errors: runners raise :class:`UsageError` (or let ``ValueError`` from the library through);
:func:`sp_dynamics.cli.main` prints it as one line and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..config import config_dict, config_hash
from ..io import atomic_write_text

__all__ = ["UsageError", "Parser", "run_jobs", "cell", "machine_line", "command_line", "write_results", "default_out",
           "pyplot", "set_threads"]


# Per-system choices of the GENERIC model class used by the runners (everything else uses the
# library defaults). Gas containers: the friction law gamma / (T1 T2)^2 is a function of the
# temperatures T_i = dE/dS_i alone, and a friction network fed grad E instead of x took a
# single-instance fit (instance 70, seed 0) from eps_traj 9.8e-3 to 2.1e-3 (PROTOCOL.md).
GENERIC_MODEL = {"gas_containers": {"friction_input": "gradient"}}


def generic_model_kwargs(system_name: str) -> dict:
    """Bracket keyword arguments the runners use for a GENERIC system (see ``GENERIC_MODEL``)."""
    return dict(GENERIC_MODEL.get(system_name, {}))


class UsageError(ValueError):
    """A mistake in what the user asked for (bad option, missing file): one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are :class:`UsageError` (one line, exit 2 from the CLI)
    instead of a usage block and ``SystemExit``."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message}")

    def add_run_options(self, jobs: bool = True) -> None:
        """The options every experiment runner shares: ``--set``, ``--jobs`` and ``--out``."""
        self.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                          help="override a setting of the preset (repeatable, type-checked)")
        if jobs:
            self.add_argument("--jobs", type=int, default=1, help="runs in parallel worker processes")
        self.add_argument("--out", default=None, help="results folder (default ./results; experiments/results "
                                                      "from a checkout)")
        self.add_argument("--tag", default="", help="suffix of the result file names (default with --set: a hash "
                                                    "of the overrides, so they never overwrite the preset's results)")

    def parse_args(self, args=None, namespace=None):
        ns = super().parse_args(args, namespace)
        if getattr(ns, "jobs", 1) < 1:
            self.error(f"--jobs must be >= 1, got {ns.jobs}")
        return ns


def result_stem(base: str, args: argparse.Namespace, suffix: str = "") -> str:
    """A result file stem: ``base``, then ``_<tag>``, then ``suffix``. The tag is ``--tag`` if
    given, else ``set-<hash>`` of the ``--set`` overrides (none without overrides), so a run with
    changed settings never overwrites the files of its preset's run."""
    overrides = getattr(args, "overrides", None) or []
    tag = getattr(args, "tag", "") or (f"set-{config_hash(overrides, 6)}" if overrides else "")
    return base + (f"_{tag}" if tag else "") + suffix


def set_threads(threads: int | None) -> None:
    if threads is not None:
        torch.set_num_threads(threads)


def run_jobs(fn: Callable, calls: dict, jobs: int = 1, report: Callable | None = None) -> dict:
    """``{key: fn(*calls[key])}``, with ``jobs`` > 1 in spawned worker processes that split the
    torch threads between them (``fn`` must be a top-level function taking ``threads=``).
    ``report(key, result)`` is called as each result arrives."""
    done = {}
    if jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {jobs}")
    if jobs == 1:
        for key, call in calls.items():
            done[key] = fn(*call)
            if report is not None:
                report(key, done[key])
        return done
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    threads = max(1, torch.get_num_threads() // jobs)
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_exit_with_parent, initargs=(os.getpid(),)) as pool:
        futures = {pool.submit(fn, *call, threads=threads): key for key, call in calls.items()}
        for fut in as_completed(futures):
            done[futures[fut]] = fut.result()
            if report is not None:
                report(futures[fut], done[futures[fut]])
    return done


def _exit_with_parent(parent: int, every_s: float = 2.0) -> None:
    """A worker's initializer: a daemon thread ends the worker once ``parent`` is gone. A parent
    killed by a signal it cannot handle (``kill -9``, an out-of-memory kill) does not shut its
    pool down, and its spawned workers would go on fitting, unseen, on cores the next run needs."""
    import threading
    import time

    def watch():
        while os.getppid() == parent:
            time.sleep(every_s)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def cell(values) -> str:
    """A table cell: mean +- std over seeds, NaN when any seed is NaN."""
    v = np.asarray(values, dtype=float)
    return "NaN" if np.isnan(v).any() else f"{v.mean():.3e} ± {v.std():.1e}"


def machine_line(wall: float, jobs: int = 1, extra: str = "") -> str:
    """``- machine: ...; torch ...; date ...; wall time ...; load ...`` for a results header.

    The load average of the last 15 minutes (where the OS reports one) says whether other work
    shared the cores: above the CPU count, the wall times are upper bounds and compare only within
    the run."""
    split = f" split over {jobs} worker processes" if jobs > 1 else ""
    return (f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads{split}; "
            f"torch {torch.__version__}; date {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; "
            f"total wall time {wall:.0f} s{extra}{load_note()}")


def load_note() -> str:
    """``; 15-min load average L`` (with a warning when above the CPU count), or "" where unknown."""
    try:
        load = os.getloadavg()[2]
    except (AttributeError, OSError):  # not on every platform
        return ""
    cpus = os.cpu_count() or 1
    shared = " (above the CPU count: the cores were shared, wall times are upper bounds)" if load > cpus + 0.5 else ""
    return f"; 15-min load average {load:.1f}{shared}"


def command_line(prog: str, argv: list[str] | None) -> str:
    """The command that produced a result, as a user would type it."""
    args = sys.argv[1:] if argv is None else list(argv)
    return f"- command: `{' '.join([prog, *args])}`"


def default_out(out: str | None, fallback: str | Path | None) -> Path:
    """``--out`` if given; else the caller's fallback (``experiments/results`` for the scripts in
    a checkout); else ``./results``."""
    return Path(out) if out else Path(fallback) if fallback else Path("results")


def write_results(out: Path, stem: str, text: str, payload: Any, config: Any = None) -> None:
    """``<stem>.md``, ``<stem>.json`` and (if ``config``) ``<stem>.config.json``, atomically."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(text, out / f"{stem}.md")
    atomic_write_text(json.dumps(payload, indent=1, default=float), out / f"{stem}.json")
    if config is not None:
        atomic_write_text(json.dumps(config_dict(config), indent=1, default=repr), out / f"{stem}.config.json")


def pyplot():
    """matplotlib's pyplot with the Agg backend, or None (with a one-line notice) when matplotlib
    is not installed: figures are optional (``pip install sp-dynamics[experiments]``)."""
    try:
        import matplotlib
    except ImportError:
        print("figures skipped: matplotlib is not installed (pip install 'sp-dynamics[experiments]')", flush=True)
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
