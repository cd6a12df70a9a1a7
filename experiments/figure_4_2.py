"""Figure 4.2 of the thesis from a minimization sweep: bars, intervals and paired tests.

Reads ``<sweep>/runs.csv`` (one row per seed, strategy and threshold, as the sweep
writes it) and writes ``figure_4_2.png``, ``figure_4_2_summary.csv``,
``figure_4_2_tests.csv`` and ``figure_4_2.json`` next to it (or into ``--out``).
Takes a second or two.

Usage (with the package installed, ``pip install -e .``)::

  python experiments/figure_4_2.py --sweep=runs/sweep [--out=DIR]
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

from jaxshrink import stats
from jaxshrink.core import files


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", required=True, help="sweep workdir holding runs.csv")
    parser.add_argument("--out", default=None, help="output folder (default: --sweep)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the analysis, prints the table and the paths, and returns `stats.figure_4_2`."""
    args = parse_args(argv)
    rows = files.read_csv(os.path.join(args.sweep, "runs.csv"))
    result = stats.figure_4_2(rows, args.out or args.sweep)
    print(stats.format_table(result["summary"]))
    print()
    print(result["findings"])
    print()
    for path in result["paths"].values():
        print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
