"""``qkd-hw calibrate NAME``: run one calibration procedure on the lab.

    qkd-hw calibrate NAME [--lab CONFIG] [--out DIR] [--json]

Without ``--lab`` the shipped virtual lab is started in-process. Writes ``DIR/NAME.h5``
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
from qkd_hw.cli.plots import save_png
from qkd_hw.errors import ConfigError, QkdHwError


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
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_run)


def options_for(name: str, samples: int | None, show_progress: bool) -> Any:
    """The procedure's options with the command-line overrides."""
    cls = PROCEDURES[name].options
    kw: dict[str, Any] = {"show_progress": show_progress}
    if samples is not None:
        if samples < 10_000:
            raise ConfigError(f"--samples must be >= 10000, got {samples}")
        if "n_samples" not in {f.name for f in dataclasses.fields(cls)}:
            raise ConfigError(f"calibrate {name} takes no --samples")
        kw["n_samples"] = samples
    return cls(**kw)


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
    opt = options_for(args.name, args.samples, show)
    out = args.out if args.out is not None else Path("calibration")
    try:
        with lab(args.lab) as (config, _vlab):
            rec = run_named(args.name, config, opt, out)
    except (QkdHwError, KeyboardInterrupt, ValueError) as exc:
        partial = out / f"{args.name}.h5"
        if partial.exists():
            print(f"qkd-hw calibrate: incomplete record (complete = false): {partial}",
                  file=sys.stderr)
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
