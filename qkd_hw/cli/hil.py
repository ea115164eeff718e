"""`qkd-hw hil report HISTORY --out DIR`: trend plots and a one-page summary of the nightly
HIL runs.

HISTORY is the JSON-lines file the suite appends to (``pytest tests/hil -m hil --lab CONFIG
--hil-history HISTORY``). DIR receives one PNG per quantity (``group.quantity.png``: values,
failed runs red, drift alarms orange, the absolute range and the baseline +- tolerance) and
``summary.md`` (the latest run's tests and every quantity's status). Exit 0, or 2 with one
error line for an unreadable or empty history.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from qkd_hw.atomic import atomic_write
from qkd_hw.cli.jsonout import json_text
from qkd_hw.errors import QkdHwError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("hil", help="reports of the nightly hardware-in-the-loop runs",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    hil_sub = p.add_subparsers(dest="hil_command", required=True, metavar="HIL_COMMAND")
    rep = hil_sub.add_parser("report", help="trend plots and summary of a HIL history")
    rep.add_argument("history", type=Path, metavar="HISTORY", help="HIL history (JSON lines)")
    rep.add_argument("--out", type=Path, required=True, metavar="DIR",
                     help="directory of the plots and summary.md")
    rep.add_argument("--json", action="store_true", help="machine-readable output")
    rep.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    from calibration.hil.history import read_history
    from calibration.hil.report import quantity_keys, summary_text, trend_figure
    from qkd_hw.plotting import save_png

    if not args.history.exists():
        raise QkdHwError(f"{args.history}: no such HIL history")
    runs = read_history(args.history)
    if not runs:
        raise QkdHwError(f"{args.history}: the HIL history has no runs")
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise QkdHwError(f"{args.out}: cannot create the report directory: {exc}") from exc
    keys = quantity_keys(runs)
    for key in keys:
        save_png(trend_figure(runs, key), args.out / f"{key}.png")
    summary = args.out / "summary.md"
    try:
        with atomic_write(summary) as tmp:
            tmp.write_text(summary_text(runs, str(args.history)), encoding="utf-8")
    except OSError as exc:
        raise QkdHwError(f"{summary}: cannot write the summary: {exc}") from exc
    if args.json:
        print(json_text({"runs": len(runs), "summary": str(summary),
                         "plots": [str(args.out / f"{key}.png") for key in keys]}))
    else:
        print(f"{len(keys)} trend plots and {summary} ({len(runs)} runs)")
    return 0
