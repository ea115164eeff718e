"""`qkd-hw lab example [--virtual]` and `qkd-hw lab serve --lab CONFIG [--write-config PATH]`.

``example`` prints the shipped lab config of a real lab (commented) or, with ``--virtual``,
of the virtual lab (with its ``[virtual]`` physics). ``serve`` starts the virtual lab of
CONFIG (every instrument emulator on loopback sockets and pseudo-terminals, tied to one
physics model), prints the client lab config that points at them (or writes it to PATH,
atomically), and runs until Ctrl-C or SIGTERM; then it stops every emulator and removes the
file it wrote (the addresses in it are dead). Exit 0 after a clean stop, 2 with one error
line for a bad config or an unwritable PATH.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from qkd_hw.atomic import atomic_write
from qkd_hw.cli.jsonout import json_text
from qkd_hw.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lab", help="example lab configs; run the virtual lab",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    lab_sub = p.add_subparsers(dest="lab_command", required=True, metavar="LAB_COMMAND")
    ex = lab_sub.add_parser("example", help="print an example lab config")
    ex.add_argument("--virtual", action="store_true",
                    help="the virtual lab's config (with its [virtual] physics)")
    ex.add_argument("--json", action="store_true",
                    help='{"path": ..., "toml": ...} instead of the TOML text')
    ex.set_defaults(func=_example)
    serve = lab_sub.add_parser("serve", help="run the virtual lab until Ctrl-C / SIGTERM")
    serve.add_argument("--lab", required=True, type=Path, metavar="CONFIG",
                       help="lab config with a [virtual] table (qkd-hw lab example --virtual)")
    serve.add_argument("--write-config", type=Path, metavar="PATH",
                       help="write the client lab config here instead of printing it")
    serve.add_argument("--json", action="store_true",
                       help='one line {"lab": ..., "instruments": N, "client_config": PATH or '
                            'TOML} when the lab runs')
    serve.set_defaults(func=_serve)


def _example(args: argparse.Namespace) -> int:
    from qkd_hw.lab import example_path  # the lab (emulators, numba) only when used

    path = example_path(virtual=args.virtual)
    if args.json:
        print(json_text({"path": str(path), "toml": path.read_text()}))
    else:
        sys.stdout.write(path.read_text())
    return 0


def _serve(args: argparse.Namespace) -> int:
    stop = threading.Event()

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        stop.set()

    # before the slow start-up: a signal during it stops the lab right after it started
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    written: Path | None = None
    try:
        from qkd_hw.lab import VirtualLab

        with VirtualLab(args.lab).start() as lab:
            if args.write_config is not None:
                _write(args.write_config, lab.client_config_text)
                written = args.write_config
            if args.json:
                print(json_text({"lab": str(args.lab), "instruments": len(lab.emulators),
                                 "client_config": (str(written) if written is not None
                                                   else lab.client_config_text)}))
            elif written is None:
                sys.stdout.write(lab.client_config_text)
            sys.stdout.flush()
            print(f"qkd-hw lab serve: virtual lab of {args.lab} running "
                  f"({len(lab.emulators)} instruments); Ctrl-C or SIGTERM stops it",
                  file=sys.stderr, flush=True)
            while not stop.wait(0.2):
                pass
    finally:
        if written is not None:
            with contextlib.suppress(FileNotFoundError):
                written.unlink()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("qkd-hw lab serve: stopped", file=sys.stderr)
    return 0


def _write(path: Path, text: str) -> None:
    try:
        with atomic_write(path) as tmp:
            tmp.write_text(text)
    except OSError as exc:
        raise ConfigError(f"--write-config {path}: cannot write the client config: "
                          f"{exc.strerror or exc}") from exc
