"""``qkd-hw simulate``: write a simulated recording (format v1 with /truth).

    qkd-hw simulate OUT.h5 --symbols N --seed S [--set name=value ...] [--json]

Every physical parameter of :class:`qkd_hw.sim.params.SimParams` is settable
with ``--set`` (names as in conventions.md; lists comma-separated, e.g.
``--set pilot_frequencies_hz=250e6,330e6``); ``--list-params`` prints them
with their defaults. Parameters are validated before anything is written:
a bad name or value is a one-line error, exit code 2, and nothing appears at OUT.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from qkd_hw.cli.jsonout import json_text
from qkd_hw.errors import ConfigError
from qkd_hw.sim.params import SimParams, field_help, parse_assignments


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate", help="write a simulated recording with ground truth",
        description="Simulate the CV-QKD link and write a format-v1 recording with /truth.",
        epilog="Parameters (--set name=value): " + ", ".join(SimParams.names()))
    p.add_argument("out", nargs="?", help="output HDF5 file")
    p.add_argument("--symbols", type=_positive_int, help="number of data symbols")
    p.add_argument("--seed", type=_nonneg_int, default=None, help="RNG seed (non-negative)")
    p.add_argument("--set", dest="assignments", action="append", default=[],
                   metavar="NAME=VALUE", help="set a simulator parameter (repeatable)")
    p.add_argument("--chunk-samples", type=_positive_int, default=1 << 20,
                   help="processing chunk (samples; output does not depend on it)")
    tp = p.add_mutually_exclusive_group()
    tp.add_argument("--truth-phase", dest="truth_phase", action="store_true", default=None,
                    help="always write /truth/phase_rad (float64 per signal sample)")
    tp.add_argument("--no-truth-phase", dest="truth_phase", action="store_false",
                    help="never write /truth/phase_rad (default: only up to 2**25 samples)")
    p.add_argument("--compression", choices=["gzip", "lzf"], default=None)
    p.add_argument("--description", default=None, help="free text for the root attribute")
    pg = p.add_mutually_exclusive_group()
    pg.add_argument("--progress", dest="progress", action="store_true", default=None,
                    help="progress bar on stderr (default: when stderr is a terminal)")
    pg.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--json", action="store_true", help="print parameters and summary as JSON")
    p.add_argument("--list-params", action="store_true",
                   help="list the parameters with their defaults and exit")
    p.set_defaults(func=_run)


def _positive_int(s: str) -> int:
    v = _int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {s!r}")
    return v


def _nonneg_int(s: str) -> int:
    v = _int(s)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {s!r}")
    return v


def _int(s: str) -> int:
    try:
        f = float(s)
        if not f.is_integer():
            raise ValueError
        return int(f)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"not an integer: {s!r}") from None


def _run(args: argparse.Namespace) -> int:
    if args.list_params:
        for name, text in field_help().items():
            print(f"{name:28s} {text}")
        return 0
    missing = [flag for flag, v in (("OUT", args.out), ("--symbols", args.symbols),
                                    ("--seed", args.seed)) if v is None]
    if missing:
        raise ConfigError(f"missing {', '.join(missing)} (usage: qkd-hw simulate OUT.h5 "
                          "--symbols N --seed S [--set name=value ...])")
    params = parse_assignments(args.assignments)  # every check before a byte is written
    # numba's OpenMP workers spin-wait between parallel regions by default, taking the
    # core that the main thread (RNG, HDF5) needs; on a shared 2-core machine passive
    # waiting measured 2x faster. Only effective before the first parallel kernel runs.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from qkd_hw.sim.simulate import describe, simulate_recording

    progress = sys.stderr.isatty() if args.progress is None else args.progress
    t0 = time.perf_counter()
    truth = simulate_recording(args.out, params, seed=args.seed, n_symbols=args.symbols,
                               chunk_samples=args.chunk_samples, progress=progress,
                               truth_phase=args.truth_phase, description=args.description,
                               compression=args.compression)
    wall = time.perf_counter() - t0
    summary = describe(args.out, truth)
    n_signal = params.signal_samples(args.symbols)
    summary.update(wall_s=wall, signal_samples=n_signal,
                   samples_per_s=(n_signal + params.shot_noise_samples
                                  + params.electronic_noise_samples) / wall)
    if args.json:
        print(json_text({"params": params.to_json(), "output": summary}, indent=2))
    else:
        clip = summary["clipped_fraction"]
        print(f"wrote {args.out}: {args.symbols} symbols, {n_signal} signal samples, "
              f"seed {args.seed}, t_eff {truth.t_eff:.6g}, {wall:.1f} s "
              f"({summary['samples_per_s'] / 1e6:.1f} MS/s); clipped fraction signal "
              f"{clip['signal']:.2e}, shot {clip['shot_noise']:.2e}, "
              f"electronic {clip['electronic_noise']:.2e}")
    return 0
