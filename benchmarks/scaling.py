"""Scaling study of the receiver: throughput and peak memory against recording length and
against numba threads, measured by the bench suite (``qkd_hw.bench``: one fresh interpreter per
point, JIT compile apart, peak RSS of the warm calls, copy-rate ceiling).

Recordings are the cached simulated benchmark recordings (``benchmarks/common.py``); every
length is measured with ``NUMBA_NUM_THREADS`` = each of ``--threads``. The figures
(``scaling_length.png``, ``scaling_threads.png``) and a JSON of all points go to ``--out``.

Usage::

    python benchmarks/scaling.py [--samples 1e6,1e7,1e8,2e9] [--threads 1,2] [--repeat 2]
                                 [--workdir /tmp/qkd-hw-bench] [--out benchmarks/scaling]
                                 [--previous benchmarks/scaling.json]

The same recordings can be re-measured at any time with ``qkd-hw bench WORKDIR --history``.
A 2e9-sample recording is 4 GB of ADC codes plus 1.6 GB of symbols (simulated once, minutes).

A/B of source trees (same run, same machine)::

    python benchmarks/scaling.py --samples 2e9 --threads 1,2 --rounds 2 --repeat 1 \
        --tree 426ca4c --tree here=.

``--tree`` is ``NAME=DIR``, a folder, or a commit of this repository (unpacked once with
``git archive`` into ``/tmp/qkd-hw-trees/``, outside the work directory, whose ``*.h5`` files
``qkd-hw bench`` searches; the tree's numba cache stays there). Every (length, threads) point
runs each tree in its own fresh interpreter, trees alternated, ``--rounds`` times; the child's
first call runs on the small warm-up recording (JIT and cache load excluded, the long file not
read twice), and each point reports the best warm call, the in-memory copy rate of the same
data (each child measures it; the fastest of the run is the ceiling), the acquisition's share
of the call, the CPU seconds of the process (all threads; steadier than wall time on a loaded
machine), the peak RSS of the warm calls and the 1-minute load average before each child.
Output: a table with each tree's speed-up over the first one, and ``OUT_ab.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):   # `python benchmarks/scaling.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import DEFAULT_WORKDIR, ensure_recording, environment, print_table
from benchmarks.memory import check_disk
from benchmarks.throughput import tiny_recording
from qkd_hw.bench.suite import measure_recording

REPO = Path(__file__).resolve().parents[1]
TREES_DIR = Path(tempfile.gettempdir()) / "qkd-hw-trees"
KEYS = ("samples", "seconds", "seconds_all", "samples_per_second", "peak_memory_bytes",
        "compile_seconds", "copy_samples_per_second", "stage_seconds", "source_tree",
        "cpu_seconds_all")


def resolve_tree(spec: str, trees_dir: Path = TREES_DIR) -> tuple[str, Path]:
    """``(name, folder)`` of a ``--tree``: ``NAME=DIR``, a folder, or a commit of this
    repository unpacked (once) into ``trees_dir/<sha>``."""
    if "=" in spec:
        name, d = spec.split("=", 1)
        if not Path(d).is_dir():
            raise SystemExit(f"--tree {spec}: {d} is not a folder")
        return name, Path(d).absolute()
    if Path(spec).is_dir():
        return spec, Path(spec).absolute()
    rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", "--quiet",
                          f"{spec}^{{commit}}"], capture_output=True, text=True, check=False)
    if rev.returncode != 0:
        raise SystemExit(f"--tree {spec}: neither a folder nor a commit of {REPO}")
    sha = rev.stdout.strip()
    dest = Path(trees_dir) / sha[:12]
    if not (dest / "qkd_hw").is_dir():
        tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
        tmp.mkdir(parents=True)
        archive = subprocess.Popen(["git", "-C", str(REPO), "archive", sha],
                                   stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", str(tmp)], stdin=archive.stdout, check=True)
        if archive.wait() != 0:
            raise SystemExit(f"--tree {spec}: git archive {sha} failed")
        tmp.replace(dest)
    return (spec if sha.startswith(spec) else f"{spec} {sha[:7]}"), dest


def _row(rec: dict[str, Any], threads: int, tree: str | None, load: float) -> dict[str, Any]:
    return {"signal_samples": rec["capture_samples"]["signal"], "threads": threads,
            "tree": tree, "load_1min": [load], **{k: rec.get(k) for k in KEYS}}


def _merge(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (length, threads, tree): the fastest call of all rounds, every call kept."""
    best: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        key = (r["signal_samples"], r["threads"], r["tree"])
        b = best.get(key)
        if b is None:
            best[key] = dict(r)
            continue
        calls, loads = b["seconds_all"] + r["seconds_all"], b["load_1min"] + r["load_1min"]
        cpu = b["cpu_seconds_all"] + r["cpu_seconds_all"]
        copy = max(b["copy_samples_per_second"], r["copy_samples_per_second"])
        peak = max(b["peak_memory_bytes"], r["peak_memory_bytes"])
        if r["seconds"] < b["seconds"]:
            best[key] = dict(r)
        best[key].update(seconds_all=calls, load_1min=loads, copy_samples_per_second=copy,
                         peak_memory_bytes=peak, cpu_seconds_all=cpu)
    return list(best.values())


def run(workdir: Path, lengths: list[float], threads: list[int], repeat: int,
        log=print, trees: list[tuple[str, Path]] | None = None,
        rounds: int = 1, recordings: list[Path] | None = None) -> list[dict[str, Any]]:
    """One bench record per (length, threads[, tree]); with ``trees`` each tree in turn
    (alternated) after a warm-up call on the small recording. ``recordings`` (existing files)
    replace the simulated ``lengths``."""
    paths = list(recordings or [])
    workdir.mkdir(parents=True, exist_ok=True)   # the default cache on a fresh machine
    for n in [] if recordings else sorted(lengths):
        check_disk(workdir, n)
        paths.append(ensure_recording(workdir, signal_samples=n, seed=1, log=log))
    warmup = tiny_recording(workdir, log) if trees else None
    rows = []
    for _ in range(max(rounds, 1)):
        for path in paths:
            for t in threads:
                for name, tree in trees or [(None, None)]:
                    load = os.getloadavg()[0]
                    log(f"bench {path.name} with {t} thread(s)"
                        + (f", tree {name}" if name else "") + f" (load {load:.2f}) ...")
                    rec = measure_recording(path, repeat=repeat, tree=tree, warmup=warmup,
                                            env={"NUMBA_NUM_THREADS": str(t)})
                    if "error" in rec:
                        raise SystemExit(f"{path}: {rec['error']}")
                    rows.append(_row(rec, t, name, load))
    return _merge(rows)


def print_ab(rows: list[dict[str, Any]]) -> None:
    """The A/B table: each tree's best call and speed-up over the first tree."""
    first: dict[tuple, float] = {}
    copy: dict[int, float] = {}   # the ceiling: the least disturbed copy of the same data
    for r in rows:
        n = r["signal_samples"]
        copy[n] = max(copy.get(n, 0.0), r["copy_samples_per_second"])
    out = []
    for r in rows:
        key = (r["signal_samples"], r["threads"])
        first.setdefault(key, r["seconds"])
        sps, acq = r["samples_per_second"], r["stage_seconds"].get("acquisition", float("nan"))
        out.append([f"{r['signal_samples']:.3g}", r["threads"], r["tree"],
                    f"{r['seconds']:.2f}", f"{statistics.median(r['seconds_all']):.2f}",
                    len(r["seconds_all"]), f"{sps / 1e6:.1f}", f"{first[key] / r['seconds']:.2f}",
                    f"{min(r['cpu_seconds_all']):.2f}",
                    f"{copy[r['signal_samples']] / 1e6:.0f}",
                    f"{100 * sps / copy[r['signal_samples']]:.2f}",
                    f"{acq:.2f}", f"{100 * acq / r['seconds']:.1f}",
                    f"{r['peak_memory_bytes'] / 1e6:.0f}",
                    f"{min(r['load_1min']):.1f}-{max(r['load_1min']):.1f}"])
    print_table(out, ["signal samples", "threads", "tree", "best s", "median s", "calls",
                      "MS/s", "x first", "CPU s best", "copy MS/s", "% of copy", "acq. s", "acq. %",
                      "peak MB", "load"])


def _span(values: list[float] | None) -> str:
    return f"{min(values):.1f}-{max(values):.1f}" if values else "-"


def plot(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    from qkd_hw.plotting import pyplot

    plt = pyplot()

    threads = sorted({r["threads"] for r in rows})
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for t in threads:
        pts = sorted((r for r in rows if r["threads"] == t), key=lambda r: r["samples"])
        n = [r["samples"] for r in pts]
        line, = a1.loglog(n, [r["seconds"] for r in pts], "o-", label=f"{t} thread(s), wall")
        cpu = [min(r.get("cpu_seconds_all") or [math.nan]) for r in pts]
        if not all(math.isnan(c) for c in cpu):   # the steadier figure on a loaded machine
            a1.loglog(n, cpu, "s:", color=line.get_color(), label=f"{t} thread(s), CPU")
        a2.semilogx(n, [r["peak_memory_bytes"] / 1e6 for r in pts], "o-",
                    label=f"{t} thread(s)")
    top = max(rows, key=lambda r: (r["samples"], -r["seconds"]))
    xs = sorted({r["samples"] for r in rows})
    a1.loglog(xs, [top["seconds"] * x / top["samples"] for x in xs], "k--", lw=0.8,
              label="linear in samples")
    a1.set_xlabel("ADC samples (3 captures)")
    a1.set_ylabel("seconds (warm call)")
    a1.legend()
    a2.set_xlabel("ADC samples (3 captures)")
    a2.set_ylabel("peak RSS (MB)")
    a2.set_ylim(bottom=0)
    a2.legend()
    fig.tight_layout()
    p1 = out.with_name(out.name + "_length.png")
    fig.savefig(p1, dpi=90)
    plt.close(fig)
    big = max(r["samples"] for r in rows)
    pts = sorted((r for r in rows if r["samples"] == big), key=lambda r: r["threads"])
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.bar([str(r["threads"]) for r in pts], [r["samples_per_second"] / 1e6 for r in pts])
    ax.set_xlabel("NUMBA_NUM_THREADS")
    ax.set_ylabel(f"MS/s on {big:.3g} samples")
    fig.tight_layout()
    p2 = out.with_name(out.name + "_threads.png")
    fig.savefig(p2, dpi=90)
    plt.close(fig)
    return [p1, p2]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    ap.add_argument("--samples", default="1e6,1e7,1e8,2e9")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeat", type=int, default=2, help="warm calls per child")
    ap.add_argument("--rounds", type=int, default=1,
                    help="children per point (trees alternated within each round)")
    ap.add_argument("--recording", action="append", default=[], type=Path,
                    help="an existing recording instead of --samples (repeat; e.g. one "
                         "simulated by an earlier version, whose cache name differs)")
    ap.add_argument("--tree", action="append", default=[],
                    help="A/B: NAME=DIR, a folder or a commit (repeat; the first is the "
                         "reference)")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("scaling"))
    ap.add_argument("--previous", type=Path, default=None,
                    help="JSON of an earlier run: its points are kept (e.g. the short lengths "
                         "measured before the long ones)")
    args = ap.parse_args(argv)
    lengths = [float(s) for s in args.samples.split(",") if s.strip()]
    threads = [int(s) for s in args.threads.split(",") if s.strip()]
    env = environment()
    trees = [resolve_tree(t) for t in args.tree]
    for p in args.recording:
        if not p.is_file():
            raise SystemExit(f"--recording {p}: no such file")
    print(f"# {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    rows = run(args.workdir, lengths, threads, args.repeat,
               log=lambda m: print(f"# {m}", file=sys.stderr, flush=True),
               trees=trees, rounds=args.rounds, recordings=args.recording)
    if trees:
        print_ab(rows)
        print(f"# trees: {', '.join(f'{n} = {d}' for n, d in trees)}; cpu "
              f"{env['cpu_model']} x {env['cpu_count']}")
        ab = args.out.with_name(args.out.name + "_ab.json")
        ab.write_text(json.dumps({"environment": env, "trees": [[n, str(d)] for n, d in trees],
                                  "rows": rows}, indent=1, default=float) + "\n")
        print(f"# {ab}", file=sys.stderr)
        return 0
    if args.previous is not None:
        new = {(r["signal_samples"], r["threads"]) for r in rows}
        rows = [r for r in json.loads(args.previous.read_text())["rows"]
                if (r["signal_samples"], r["threads"]) not in new] + rows
        rows.sort(key=lambda r: (r["signal_samples"], r["threads"]))
    # CPU seconds (all threads) beside the wall time: on the shared machine the wall time
    # moves with the neighbours' load, the CPU time much less
    print_table([[f"{r['signal_samples']:.3g}", r["threads"], f"{r['samples']:.3g}",
                  f"{r['seconds']:.2f}", f"{min(r.get('cpu_seconds_all') or [math.nan]):.2f}",
                  f"{r['samples_per_second'] / 1e6:.1f}",
                  f"{r['stage_seconds'].get('signal', math.nan):.2f}",
                  f"{r['copy_samples_per_second'] / 1e6:.0f}",
                  f"{r['peak_memory_bytes'] / 1e6:.0f}", f"{r['compile_seconds']:.1f}",
                  _span(r.get("load_1min"))]
                 for r in rows],
                ["signal samples", "threads", "ADC samples", "seconds", "CPU s", "MS/s",
                 "signal stage s", "copy MS/s", "peak MB", "compile s", "load"])
    print(f"# load average (1 min) at start {env['load_average_1min']:.1f}, cpu "
          f"{env['cpu_model']} x {env['cpu_count']}")
    args.out.with_suffix(".json").write_text(json.dumps({"environment": env, "rows": rows},
                                                        indent=1, default=float) + "\n")
    for p in plot(rows, args.out):
        print(f"# figure {p}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
