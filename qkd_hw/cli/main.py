"""Entry point of ``qkd-hw``.

Each subcommand lives in its own module ``qkd_hw.cli.<name>`` exposing
``add_parser(subparsers)``, which registers the parser and sets ``func``
(a callable taking the parsed namespace and returning the exit code).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
import unicodedata
from types import FrameType

from qkd_hw import __version__, vector_width
from qkd_hw.errors import QkdHwError

SUBCOMMANDS = ("demo", "simulate", "info", "process", "keyrate", "bench", "postprocess", "lab",
               "acquire", "calibrate", "hil")


#: signals that end a run like Ctrl-C does (cleanup, one line), with exit code 128 + signum
TERMINATING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised like Ctrl-C so that every cleanup path of SIGINT runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


#: modules in which an exception raised by a signal handler goes wrong: swallowed
#: ("Exception ignored in" a weakref callback, the run goes on and exits 0), turned into a
#: wrong libhdf5 error (a Python callback of h5py), or leaking a just-created temporary
_DEFER_IN_MODULES = ("weakref", "h5py", "qkd_hw.atomic")


#: delay of a deferred signal's next delivery, seconds
RESEND_S = 0.005


def _unsafe_to_raise(frame: FrameType | None) -> bool:
    """Whether ``frame`` or a caller is a finaliser, a weakref callback, h5py or the
    atomic writer's bookkeeping."""
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if frame.f_code.co_name == "__del__" or any(
                module == m or module.startswith(m + ".") for m in _DEFER_IN_MODULES):
            return True
        frame = frame.f_back
    return False


def _on_signal(signum: int, frame: FrameType | None) -> None:
    """Raise KeyboardInterrupt (SIGINT) or :class:`Terminated` where it is safe to; inside
    one of :data:`_DEFER_IN_MODULES` the signal is sent again :data:`RESEND_S` later (by a
    timer thread: sent from here it would be handled at once, recursively), until the code
    is back in a safe place."""
    if _unsafe_to_raise(frame):
        timer = threading.Timer(RESEND_S, os.kill, (os.getpid(), signum))
        timer.daemon = True
        timer.start()
        return
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    signal.signal(signum, signal.SIG_DFL)  # a second one kills at once
    raise Terminated(signum)


def _set_handlers(handlers: dict[int, object]) -> dict[int, object]:
    """Install signal handlers, return the previous ones (a handler that cannot be set,
    e.g. outside the main thread or one not set from Python, is left as it is)."""
    previous = {}
    for signum, handler in handlers.items():
        if handler is None:
            continue
        try:
            previous[signum] = signal.signal(signum, handler)
        except (ValueError, TypeError):
            continue
    return previous


def _stdout_closed() -> int:
    """stdout's reader went away (``qkd-hw info --json | head -1``): point stdout at
    /dev/null so the interpreter's final flush does not fail too; exit as SIGPIPE would."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 128 + signal.SIGPIPE


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
    imports of numpy and numba, which happen in here) exits 130, SIGTERM 143 and SIGHUP
    129, each with one line and after the same cleanup (temporary files removed); a closed
    stdout (a pipe into ``head``) exits 141 quietly.
    """
    command = "qkd-hw"
    previous = _set_handlers(dict.fromkeys((signal.SIGINT, *TERMINATING_SIGNALS), _on_signal))
    try:
        try:  # 512-bit vectors on AVX-512 hosts: numba reads this before its first import
            vector_width.apply()
        except ValueError as exc:
            raise QkdHwError(str(exc)) from None
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
    except Terminated as exc:
        print(f"{command}: terminated ({signal.Signals(exc.signum).name})", file=sys.stderr)
        return 128 + exc.signum
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        if sys.stdout.closed:
            raise
        return _stdout_closed()
    finally:
        _set_handlers(previous)


if __name__ == "__main__":
    sys.exit(main())
