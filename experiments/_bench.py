"""What the ``bench_*`` scripts share: their parser and writing the table (their command and machine
lines are :func:`sp_dynamics.runners.common.command_line` and ``machine_line``, as in every runner).

Each benchmark measures our code and the alternative side by side in one run and prints a ratio;
timings on shared machines vary by 30-50%, so compare the numbers of one run only.
"""

from __future__ import annotations

from pathlib import Path

from experiments._shim import RESULTS
from sp_dynamics.io import atomic_write_text
from sp_dynamics.runners.common import Parser


def prog(script: str) -> str:
    return f"python -m experiments.{script}"


def parser(script: str, doc: str, save: bool = True) -> Parser:
    """The script's parser: user mistakes are one-line errors (exit status 2 through ``_shim.run``);
    ``save`` adds ``--no-save`` (print the table, write no file)."""
    p = Parser(prog=prog(script), description=doc)
    if save:
        p.add_argument("--no-save", dest="save", action="store_false", help="print the table only")
    return p


def finish(table: str, path: str | Path | None) -> str:
    """Print the table and, when ``path`` is given (a name in experiments/results, or a path), write it atomically."""
    if path:
        atomic_write_text(table, RESULTS / path)
    print(table)
    return table
