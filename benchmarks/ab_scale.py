"""Same-run A/B of whole receivers (issue 18): source trees x numba thread counts, optionally
with a busy loop pinned to one core (``busy.py``).

Each run is a fresh interpreter with ``PYTHONPATH=TREE NUMBA_NUM_THREADS=T`` that calls
``process_recording`` once untimed (JIT from the cache, pages of the recording in memory) and
once timed (HDF5 read included); trees and thread counts alternate round by round, so a load
that comes and goes hits every configuration alike. Prints every run with the 1-minute load
average, then best and median wall and CPU seconds per configuration. Each tree runs with
its own ``qkd-hw`` vector width (``qkd_hw.vector_width.apply`` where the tree has it: 512-bit
on AVX-512 hosts; before issue 18, LLVM's default), not this script's.

Usage (unpack old commits with ``git archive C | tar -x -C DIR``)::

    python benchmarks/ab_scale.py RECORDING.h5 --tree 426ca4c=/tmp/t426 --tree new=. \\
        [--threads 1 2] [--rounds 5] [--busy] [--memcopy] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):   # `python benchmarks/ab_scale.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.busy import start_busy, stop_busy
from benchmarks.common import write_json
from qkd_hw.vector_width import caller_environ

_CHILD = """
import json, os, sys, time
# the tree's own vector width, as its qkd-hw sets it (before issue 18: LLVM's default); the
# file test, not an ImportError, since an editable install would lend an old tree its module
if os.path.isfile(os.path.join("qkd_hw", "vector_width.py")):  # cwd = the tree
    from qkd_hw.vector_width import apply
    apply()
import numba
from qkd_hw.receiver import process_recording
process_recording(sys.argv[1], seed=1, pe_fraction=0.5)
t0, c0 = time.perf_counter(), time.process_time()
r = process_recording(sys.argv[1], seed=1, pe_fraction=0.5)
print(json.dumps({"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0,
                  "key_rate": r.key_rate.key_rate_bits_per_symbol,
                  "prefer_256": "-prefer-256-bit" not in (numba.config.CPU_FEATURES or "")}))
"""


def run_once(tree: Path, recording: Path, threads: int) -> dict[str, float]:
    """Wall and CPU seconds of one timed ``process_recording`` in a fresh interpreter."""
    env = {**caller_environ(), "PYTHONPATH": str(tree), "NUMBA_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, "-c", _CHILD, str(recording)], env=env, cwd=tree,
                         capture_output=True, text=True, check=True)
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "load": os.getloadavg()[0]}


def _memcopy(recording: Path) -> dict[str, float]:
    """``memcopy_baseline`` of the recording (best of 5), printed with the load."""
    from benchmarks.throughput import memcopy_baseline

    c = {**memcopy_baseline(recording, repeat=5), "load": os.getloadavg()[0]}
    print(f"copy rate: np.copyto {c['memcpy_msps']:.0f} MS/s ({c['memcpy_gbytes_per_s']:.2f} "
          f"GB/s), HDF5 read {c['hdf5_read_msps']:.0f} MS/s, load {c['load']:.2f}", flush=True)
    return c


def summary(runs: list[dict[str, float]]) -> dict[str, float]:
    """Best and median wall and CPU seconds, load range."""
    w = [r["wall"] for r in runs]
    c = [r["cpu"] for r in runs]
    lo = [r["load"] for r in runs]
    return {"runs": len(runs), "wall_best": min(w), "wall_median": statistics.median(w),
            "cpu_best": min(c), "cpu_median": statistics.median(c),
            "load_min": min(lo), "load_max": max(lo)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recording", type=Path)
    ap.add_argument("--tree", action="append", required=True, metavar="NAME=DIR")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--busy", action="store_true", help="busy loop pinned to core 0")
    ap.add_argument("--memcopy", action="store_true",
                    help="np.copyto rate of the same samples before and after the runs "
                    "(benchmarks.throughput.memcopy_baseline): MS/s and share of it per config")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    copies = []
    trees = dict(t.split("=", 1) for t in args.tree)
    runs: dict[str, list[dict[str, float]]] = {}
    if args.memcopy:
        copies.append(_memcopy(args.recording))
    busy = start_busy(0) if args.busy else None
    try:
        for rnd in range(args.rounds):
            for name, tree in trees.items():
                for t in args.threads:
                    r = run_once(Path(tree).resolve(), args.recording, t)
                    runs.setdefault(f"{name} {t}T", []).append(r)
                    print(f"round {rnd} {name:>10} {t}T "
                          f"{256 if r['prefer_256'] else 512}-bit wall {r['wall']:.3f} cpu "
                          f"{r['cpu']:.3f} load {r['load']:.2f}", flush=True)
    finally:
        if busy is not None:
            stop_busy(busy)
    if args.memcopy:
        copies.append(_memcopy(args.recording))
    table = {k: summary(v) for k, v in runs.items()}
    print("config | runs | wall best / median s | CPU best / median s | load"
          + (" | MS/s (best wall) | of copy rate" if copies else ""))
    for k, s in table.items():
        extra = ""
        if copies:
            copy = max(c["memcpy_msps"] for c in copies)
            s["msps_best"] = copies[0]["samples"] / s["wall_best"] / 1e6
            s["copy_fraction"] = s["msps_best"] / copy
            extra = f" | {s['msps_best']:.1f} | {100 * s['copy_fraction']:.2f} %"
        print(f"{k} | {s['runs']} | {s['wall_best']:.3f} / {s['wall_median']:.3f} | "
              f"{s['cpu_best']:.3f} / {s['cpu_median']:.3f} | "
              f"{s['load_min']:.1f}-{s['load_max']:.1f}" + extra)
    if args.json:
        write_json(args.json, {"busy": args.busy, "summary": table, "runs": runs,
                               "memcopy": copies})
    return 0


if __name__ == "__main__":
    sys.exit(main())
