"""`qkd-hw process` (placeholder until its owner lands it)."""

from __future__ import annotations

import argparse

from qkd_hw.errors import QkdHwError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("process", help="(not yet available)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    raise QkdHwError("'process' is not implemented yet")
