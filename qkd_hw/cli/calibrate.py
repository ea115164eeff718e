"""``qkd-hw calibrate NAME``: run one calibration procedure on the lab.

    qkd-hw calibrate NAME [--lab CONFIG] [--out DIR] [--json]

Without ``--lab`` the shipped virtual lab is started in-process. ``--set KEY=VALUE`` sets
any option of the procedure (``--help`` lists them per procedure in its epilog); on a virtual
lab the attenuation chain of ``modulation``/``link`` (``tap_db``, ``tx_attenuation_db``) is
taken from its ``[virtual]`` table unless set. Writes ``DIR/NAME.h5``
(record: settings snapshot, raw data, results, version, UTC time) and ``DIR/NAME.png``;
prints a summary ending in the verdict. Exit 0 on PASS, 1 on FAIL, 2 on an error (an
interrupted or failed run leaves ``DIR/NAME.h5`` marked ``complete = false``); every
setting the procedure changed is restored in every case.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from calibration import PROCEDURES
from calibration.common import Record, lab, run_procedure
from qkd_hw.cli.jsonout import json_text
from qkd_hw.errors import ConfigError, QkdHwError
from qkd_hw.plotting import save_png


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="run a calibration procedure on the lab",
                       description=__doc__.split("\n\n")[0].strip("`"),
                       epilog="procedures: " + "; ".join(
                           f"{n}: {proc.help}" for n, proc in PROCEDURES.items()))
    p.add_argument("name", choices=sorted(PROCEDURES), metavar="NAME",
                   help="procedure: " + ", ".join(PROCEDURES))
    p.add_argument("--lab", type=Path, default=None,
                   help="lab config (default: the shipped virtual lab, started here)")
    p.add_argument("--out", type=Path, default=None,
                   help="directory of the record and plot (default: ./calibration)")
    p.add_argument("--samples", type=int, default=None,
                   help="samples per capture (procedures that capture)")
    p.add_argument("--symbols", type=int, default=None, help="data symbols (link)")
    p.add_argument("--set", dest="assignments", action="append", default=[],
                   metavar="KEY=VALUE", help="set a procedure option (repeatable)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_run)


def _parse(name: str, key: str, text: str, current: Any) -> Any:
    """``text`` as the type of the option's default (numbers, flags, tuples of numbers)."""
    try:
        if isinstance(current, bool):
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes")
        if isinstance(current, int):
            return int(text)
        if isinstance(current, tuple):
            return tuple(float(x) for x in text.split(","))
        return float(text)
    except ValueError:
        raise ConfigError(f"calibrate {name}: --set {key}={text}: not a valid value (default "
                          f"{current!r})") from None


def options_for(name: str, *, samples: int | None = None, symbols: int | None = None,
                assignments: list[str] = (), show_progress: bool = False,  # type: ignore[assignment]
                physics: Any = None, out: Path | None = None) -> Any:
    """The procedure's options with the command-line overrides (and, on a virtual lab, its
    attenuation chain from ``physics``)."""
    cls = PROCEDURES[name].options
    fields = {f.name: f for f in dataclasses.fields(cls)}
    defaults = cls()
    kw: dict[str, Any] = {"show_progress": show_progress}
    if samples is not None:
        if samples < 10_000:
            raise ConfigError(f"--samples must be >= 10000, got {samples}")
        key = "n_samples" if "n_samples" in fields else "noise_samples"
        if key not in fields:
            raise ConfigError(f"calibrate {name} takes no --samples")
        kw[key] = samples
    if symbols is not None:
        if "n_symbols" not in fields:
            raise ConfigError(f"calibrate {name} takes no --symbols")
        if symbols < 20_000:
            raise ConfigError(f"--symbols must be >= 20000, got {symbols}")
        kw["n_symbols"] = symbols
    if physics is not None:
        for key, attr in (("tap_db", "power_meter_tap_db"),
                          ("tx_attenuation_db", "tx_attenuation_db")):
            if key in fields:
                kw[key] = getattr(physics, attr)
    if "out_dir" in fields:
        kw["out_dir"] = out
    for item in assignments:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or key not in fields or key in ("show_progress", "out_dir"):
            settable = sorted(set(fields) - {"show_progress", "out_dir"})
            raise ConfigError(f"calibrate {name}: --set {item!r}: expected KEY=VALUE with KEY "
                              f"one of {', '.join(settable)}")
        current = getattr(defaults, key)
        kw[key] = float(text) if current is None else _parse(name, key, text, current)
    try:
        return cls(**kw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"calibrate {name}: {exc}") from exc


def run_named(name: str, config: Any, opt: Any, out: Path | None) -> Record:
    """Run procedure ``name`` with options ``opt``; record (and PNG) in ``out``."""
    proc = PROCEDURES[name]
    if out is not None:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--out {out}: cannot use it as the output directory: "
                              f"{exc.strerror or exc}") from exc
    rec = run_procedure(name, config, lambda s, r: proc.measure(s, r, opt),
                        options={}, out_dir=out)
    if out is not None:
        rec.results["plot"] = str(save_png(proc.plot(rec), out / f"{name}.png"))
    return rec


def _run(args: argparse.Namespace) -> int:
    show = not args.json and sys.stderr.isatty()
    out = args.out if args.out is not None else Path("calibration")
    options_for(args.name, samples=args.samples, symbols=args.symbols,
                assignments=args.assignments)   # bad options: refused before the lab starts
    try:
        with lab(args.lab) as (config, vlab):
            opt = options_for(args.name, samples=args.samples, symbols=args.symbols,
                              assignments=args.assignments, show_progress=show,
                              physics=vlab.physics if vlab is not None else None, out=out)
            rec = run_named(args.name, config, opt, out)
    except (QkdHwError, KeyboardInterrupt, ValueError) as exc:
        partial = out / f"{args.name}.h5"
        if partial.exists():
            print(f"qkd-hw calibrate: record of the interrupted run: {partial} "
                  f"(complete = false)", file=sys.stderr)
        if isinstance(exc, ValueError):
            raise QkdHwError(f"calibrate {args.name}: {exc}") from exc
        raise
    if args.json:
        print(json_text(rec.summary(), indent=2))
    else:
        print_summary(rec)
    return 0 if rec.passed else 1


def print_summary(rec: Record) -> None:
    """Short text summary: results, checks, verdict."""
    print(f"calibrate {rec.name}")
    for k, v in rec.results.items():
        if isinstance(v, float):
            print(f"  {k:<28}{v:.6g}")
        else:
            print(f"  {k:<28}{v}")
    for line in rec.reasons:
        print(f"  {line}")
    print(f"record: {rec.path}")
    print(f"verdict: {rec.verdict}")
