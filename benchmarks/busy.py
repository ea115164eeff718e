"""Receiver throughput with one core kept busy by another process (issue 18).

Starts a plain busy-loop process pinned to one core (``os.sched_setaffinity``), runs
``qkd-hw process`` on one recording with ``NUMBA_NUM_THREADS=1`` and ``=2`` for each source
tree given (e.g. the start commit unpacked by ``git archive`` and the worktree), runs alternated
so that the other users' load hits every configuration alike, then stops the loop and prints the
median throughput of each (tree, threads) with the 1-minute load average seen around the runs.

Usage::

    python benchmarks/busy.py RECORDING.h5 [--tree before=/tmp/old --tree after=.]
        [--repeat 3] [--idle] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):   # `python benchmarks/busy.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_json


def _spin(core: int) -> None:
    os.sched_setaffinity(0, {core})
    while True:
        pass


def start_busy(core: int) -> mp.Process:
    """A busy-loop process pinned to ``core`` (stop it with ``stop_busy``)."""
    p = mp.get_context("fork").Process(target=_spin, args=(core,), daemon=True)
    p.start()
    return p


def stop_busy(p: mp.Process) -> None:
    p.terminate()
    p.join()


def run_receiver(tree: Path, recording: Path, threads: int) -> float:
    """Throughput (MS/s) of one ``qkd-hw process`` run of ``tree``'s code."""
    env = {**os.environ, "PYTHONPATH": str(tree), "NUMBA_NUM_THREADS": str(threads)}
    cli = "from qkd_hw.cli.main import main; main()"
    out = subprocess.run([sys.executable, "-c", cli, "process", str(recording), "--json",
                          "--pe-fraction", "0.5", "--seed", "1"],
                         env=env, capture_output=True, text=True, check=True, cwd=tree)
    return float(json.loads(out.stdout)["throughput_msps"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("recording", type=Path)
    ap.add_argument("--tree", action="append", default=[],
                    help="NAME=DIR of a source tree (default: this one, as 'here')")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--idle", action="store_true", help="no busy loop (reference)")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    trees = dict(t.split("=", 1) for t in args.tree) or {
        "here": str(Path(__file__).resolve().parents[1])}
    configs = [(name, Path(d).resolve(), n) for name, d in trees.items() for n in (1, 2)]
    for _, tree, n in configs:   # warm the numba caches outside the measurement
        run_receiver(tree, args.recording, n)
    busy = None if args.idle else start_busy(os.cpu_count() - 1)
    res: dict[str, list[float]] = {f"{c[0]} threads={c[2]}": [] for c in configs}
    loads = [os.getloadavg()[0]]
    try:
        for _ in range(args.repeat):
            for name, tree, n in configs:
                res[f"{name} threads={n}"].append(run_receiver(tree, args.recording, n))
                loads.append(os.getloadavg()[0])
    finally:
        if busy is not None:
            stop_busy(busy)
    print(f"{'busy' if busy else 'idle'}; load average (1 min) {min(loads):.1f}"
          f"..{max(loads):.1f}; {args.repeat} alternated runs; MS/s:")
    for key, v in res.items():
        print(f"  {key:24s} median {statistics.median(v):6.1f}   runs "
              + " ".join(f"{x:.1f}" for x in v))
    if args.json:
        write_json(args.json, {"busy": busy is not None, "load": loads, "msps": res})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
