"""What the ``bench_*`` scripts share: their parser, command and machine lines, and writing the table.

Each benchmark measures our code and the alternative side by side in one run and prints a ratio;
timings on shared machines vary by 30-50%, so compare the numbers of one run only.
"""

from __future__ import annotations

import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from experiments._shim import RESULTS
from sp_dynamics.io import atomic_write_text
from sp_dynamics.runners.common import Parser


def parser(script: str, doc: str, save: bool = True) -> Parser:
    """The script's parser: user mistakes are one-line errors (exit status 2 through ``_shim.run``);
    ``save`` adds ``--no-save`` (print the table, write no file)."""
    p = Parser(prog=f"python -m experiments.{script}", description=doc)
    if save:
        p.add_argument("--no-save", dest="save", action="store_false", help="print the table only")
    return p


def command(script: str, argv: list[str] | None) -> str:
    args = sys.argv[1:] if argv is None else argv
    return f"- command: `python -m experiments.{script}{''.join(' ' + a for a in args)}`"


def machine(where: str | None = None, start: float | None = None) -> str:
    """``- machine: ...`` with the torch threads (or ``where``), torch version, UTC date and, from
    ``start`` (a ``time.time()``), the total wall time."""
    where = f"{torch.get_num_threads()} torch threads" if where is None else where
    wall = "" if start is None else f"; total wall time {time.time() - start:.0f} s"
    return (f"- machine: {platform.machine()}, {where}; torch {torch.__version__}; "
            f"date {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC{wall}")


def finish(table: str, path: str | Path | None) -> str:
    """Print the table and, when ``path`` is given (a name in experiments/results, or a path), write it atomically."""
    if path:
        atomic_write_text(table, RESULTS / path)
    print(table)
    return table
