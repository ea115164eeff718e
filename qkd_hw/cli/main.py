"""Entry point of ``qkd-hw``.

Each subcommand lives in its own module ``qkd_hw.cli.<name>`` exposing
``add_parser(subparsers)``, which registers the parser and sets ``func``
(a callable taking the parsed namespace and returning the exit code).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from qkd_hw import __version__
from qkd_hw.errors import QkdHwError

SUBCOMMANDS = ("demo", "simulate", "info", "process", "keyrate", "bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qkd-hw", description="Host software of a CV-QKD link (DTU-style local-LO receiver)."
    )
    parser.add_argument("--version", action="version", version=f"qkd-hw {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"qkd_hw.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except QkdHwError as exc:
        print(f"qkd-hw {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"qkd-hw {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
