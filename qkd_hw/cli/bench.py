"""`qkd-hw bench PATHS...`: benchmark the receiver over recorded traces, with a history.

Every recording (files, or folders searched for *.h5) is measured in a fresh interpreter:
ADC samples per second end to end (fastest of --repeat warm calls) and per stage, the
in-memory copy rate of the same data (the ceiling), peak RSS, the JIT compile time apart
(first call minus a warm one: with numba's on-disk cache filled, the kernels' load time;
NUMBA_CACHE_DIR=an empty folder gives the cold compile), the estimates and, where the
recording has /truth, each estimate's error in standard deviations. --reference also runs the
numpy/scipy implementation of the same steps and prints the speed ratio. With --history FILE
the run is compared with the stored runs on the same CPU with the same options (the noise
from their repeated calls), then appended; a regression (CPU time or peak memory beyond the
noise, an estimate moving by more than 0.1 of its standard deviation) exits 1. A recording
the receiver refuses is reported and the others kept (exit 2).
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from qkd_hw.bench.history import (
    ESTIMATE_FRACTION,
    append_run,
    find_regressions,
    load_history,
    make_run,
    plot_history,
)
from qkd_hw.bench.suite import DEFAULT_CHUNK, find_recordings, run_suite, total_record
from qkd_hw.cli.jsonout import json_safe, json_text
from qkd_hw.errors import BenchError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark the receiver over recordings (with history)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH", help="recording or folder of recordings")
    p.add_argument("--reference", action="store_true",
                   help="also run the numpy/scipy reference and print the speed ratio")
    p.add_argument("--reference-samples", type=float, default=None, metavar="N",
                   help="run the reference on the first N signal samples only (ratio per "
                        "sample; it is ~30x slower than the receiver)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per recording, then one with \"total\": true")
    p.add_argument("--history", metavar="FILE", help="compare with and append to this history "
                                                     "(JSON lines)")
    p.add_argument("--repeat", type=int, default=3, metavar="N",
                   help="warm receiver calls per recording, the fastest reported (default 3)")
    p.add_argument("--plot", metavar="DIR", help="write the history as PNG into DIR")
    p.add_argument("--seed", type=int, default=1,
                   help="seed of the disclosed subset (fixed: runs must be comparable)")
    p.add_argument("--pe-fraction", type=float, default=0.5, metavar="F")
    p.add_argument("--chunk-samples", type=int, default=DEFAULT_CHUNK, help=argparse.SUPPRESS)
    p.set_defaults(func=_run)


def _check(args: argparse.Namespace) -> None:
    if args.repeat < 1:
        raise BenchError(f"--repeat must be >= 1, got {args.repeat}")
    if not 0 < args.pe_fraction <= 1:
        raise BenchError(f"--pe-fraction must be in (0, 1], got {args.pe_fraction}")
    if args.chunk_samples < 1:
        raise BenchError(f"--chunk-samples must be >= 1, got {args.chunk_samples}")
    if args.reference_samples is not None and not args.reference_samples >= 1:
        raise BenchError(f"--reference-samples must be >= 1, got {args.reference_samples}")
    if args.plot and not args.history:
        raise BenchError("--plot draws the history: give --history FILE")


def _m(v: Any, scale: float = 1e-6, fmt: str = ".1f") -> str:
    return format(v * scale, fmt) if isinstance(v, int | float) and math.isfinite(v) else "-"


def _print_record(r: dict[str, Any], checks: list[dict[str, Any]]) -> None:
    if "error" in r:
        print(f"{r['file']}: FAILED: {r['error']}")
        return
    ceiling = r["samples_per_second"] / r["copy_samples_per_second"]
    line = (f"{r['file']}: {r['samples']:.3g} samples, {_m(r['samples_per_second'])} MS/s "
            f"(copy ceiling {_m(r['copy_samples_per_second'], fmt='.0f')} MS/s, "
            f"{100 * ceiling:.2g} % of it), peak {_m(r['peak_memory_bytes'], fmt='.0f')} MB, "
            f"compile {r['compile_seconds']:.1f} s")
    if "reference_speedup" in r:
        line += f", {r['reference_speedup']:.1f}x the numpy reference"
    print(line)
    print("  stages MS/s: " + ", ".join(f"{k} {_m(v)}" for k, v in
                                        r["stage_samples_per_second"].items()))
    e = r["estimates"]
    print(f"  T {e['transmittance']:.5g}, xi {e['excess_noise_snu']:.4g} SNU, "
          f"v_el {e['electronic_noise_snu']:.4g} SNU")
    if "truth" in r:
        print("  vs /truth (sd): " + ", ".join(f"{k} {v['error_sigma']:+.2f}"
                                               for k, v in r["truth"].items()))
    for c in checks:
        print(f"  {'REGRESSION' if c['regression'] else 'ok'}: {c['text']}")


def _flat(r: dict[str, Any], checks: list[dict[str, Any]] | None) -> dict[str, Any]:
    out = dict(r)
    out.update(r.get("estimates", {}))
    if checks is not None:
        out["checks"] = checks
        out["regression"] = any(c["regression"] for c in checks)
    return out


def _run(args: argparse.Namespace) -> int:
    _check(args)
    paths = find_recordings(args.paths)
    history = load_history(args.history) if args.history else []
    bar = None
    if sys.stderr.isatty():   # on stderr: the --json lines on stdout stay clean
        from tqdm import tqdm

        bar = tqdm(total=len(paths), unit="rec", desc="bench", file=sys.stderr)
    try:
        records = run_suite(paths, progress=(lambda r: bar.update(1)) if bar else None,
                            repeat=args.repeat, seed=args.seed, pe_fraction=args.pe_fraction,
                            chunk_samples=args.chunk_samples, reference=args.reference,
                            reference_samples=(None if args.reference_samples is None
                                               else int(args.reference_samples)))
    finally:
        if bar is not None:
            bar.close()
    records = json_safe(records)
    total = json_safe(total_record(records))
    options = {"seed": args.seed, "pe_fraction": args.pe_fraction,
               "chunk_samples": args.chunk_samples, "repeat": args.repeat}
    run = make_run(records, total, options)
    found = {f["file"]: f["checks"] for f in find_regressions(history, run)} if args.history \
        else {}
    regression = any(c["regression"] for cs in found.values() for c in cs)
    total["regression"] = regression
    for r in records:
        if args.json:
            print(json_text(_flat(r, found.get(r["file"]) if args.history else None)))
        else:
            _print_record(r, found.get(r["file"], []))
    if args.json:
        print(json_text(total))
    else:
        print(f"total: {total['recordings']} recordings ({total['failed']} failed), "
              f"{_m(total['samples_per_second'])} MS/s (copy ceiling "
              f"{_m(total['copy_samples_per_second'], fmt='.0f')} MS/s), peak "
              f"{_m(total['peak_memory_bytes'], fmt='.0f')} MB"
              + (f", {total['reference_speedup']:.1f}x the numpy reference"
                 if total.get("reference_speedup") else ""))
    if args.history:
        if not history and not args.json:
            print(f"history {args.history}: no stored run yet (this one is the first)")
        elif not args.json and not any(found.values()):
            print(f"history {args.history}: no comparable stored run with two or more calls "
                  "(same machine and options)")
        append_run(args.history, run)
        if args.plot:
            for p in plot_history([*history, run], args.plot):
                print(f"plot: {p}", file=sys.stderr)
    if regression:
        print(f"qkd-hw bench: regression against {args.history} (speed or memory beyond "
              f"the stored noise, or an estimate moved by more than {ESTIMATE_FRACTION} sd)",
              file=sys.stderr)
    if total["failed"]:
        return 2
    return 1 if regression else 0
