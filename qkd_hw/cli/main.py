"""Entry point of ``qkd-hw``.

Each subcommand lives in its own module ``qkd_hw.cli.<name>`` exposing
``add_parser(subparsers)``, which registers the parser and sets ``func``
(a callable taking the parsed namespace and returning the exit code).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import unicodedata
from types import FrameType

from qkd_hw import __version__
from qkd_hw.errors import QkdHwError

SUBCOMMANDS = ("demo", "simulate", "info", "process", "keyrate")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every cleanup path of SIGINT runs for it too."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills at once
    raise Terminated


def _set_sigterm(handler: object) -> object:
    """Install a SIGTERM handler, return the previous one (``None``: not possible here,
    e.g. outside the main thread, or the previous one was not set from Python)."""
    if handler is None:
        return None
    try:
        return signal.signal(signal.SIGTERM, handler)
    except (ValueError, TypeError):
        return None


def one_line(text: str) -> str:
    """``text`` with control characters escaped (``\\n``, ``\\x1b``, ...), so that an
    error naming a file called ``a\\nb`` or quoting a libhdf5 message stays one line."""
    return "".join(
        ch.encode("unicode_escape").decode("ascii")
        if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch
        for ch in text
    )


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
    """Run one subcommand; return its exit code.

    Errors of qkd-hw are one line on stderr and exit code 2; Ctrl-C (also during the
    imports of numpy and numba, which happen in here) exits 130 and SIGTERM 143, each with
    one line and after the same cleanup (temporary files removed).
    """
    command = "qkd-hw"
    previous = _set_sigterm(_on_sigterm)
    try:
        parser = build_parser()  # imports numpy, numba, h5py, ...: interruptible too
        args = parser.parse_args(argv)
        command = f"qkd-hw {args.command}"
        level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
        logging.basicConfig(level=level,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return int(args.func(args) or 0)
    except QkdHwError as exc:
        print(f"{command}: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except Terminated:
        print(f"{command}: terminated (SIGTERM)", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    finally:
        _set_sigterm(previous)


if __name__ == "__main__":
    sys.exit(main())
