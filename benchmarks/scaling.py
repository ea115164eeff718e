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
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):   # `python benchmarks/scaling.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import DEFAULT_WORKDIR, ensure_recording, environment, print_table
from benchmarks.memory import check_disk
from qkd_hw.bench.suite import measure_recording


def run(workdir: Path, lengths: list[float], threads: list[int], repeat: int,
        log=print) -> list[dict[str, Any]]:
    """One bench record per (length, threads)."""
    rows = []
    for n in sorted(lengths):
        check_disk(workdir, n)
        path = ensure_recording(workdir, signal_samples=n, seed=1, log=log)
        for t in threads:
            log(f"bench {path.name} with {t} thread(s) ...")
            rec = measure_recording(path, repeat=repeat, env={"NUMBA_NUM_THREADS": str(t)})
            if "error" in rec:
                raise SystemExit(f"{path}: {rec['error']}")
            rows.append({"signal_samples": rec["capture_samples"]["signal"], "threads": t,
                         **{k: rec[k] for k in ("samples", "seconds", "seconds_all",
                                                "samples_per_second", "peak_memory_bytes",
                                                "compile_seconds", "copy_samples_per_second",
                                                "stage_seconds")}})
    return rows


def plot(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    from qkd_hw.plotting import pyplot

    plt = pyplot()

    threads = sorted({r["threads"] for r in rows})
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for t in threads:
        pts = sorted((r for r in rows if r["threads"] == t), key=lambda r: r["samples"])
        n = [r["samples"] for r in pts]
        a1.loglog(n, [r["seconds"] for r in pts], "o-", label=f"{t} thread(s)")
        a2.semilogx(n, [r["peak_memory_bytes"] / 1e6 for r in pts], "o-",
                    label=f"{t} thread(s)")
    top = max(rows, key=lambda r: (r["samples"], -r["seconds"]))
    xs = sorted({r["samples"] for r in rows})
    a1.loglog(xs, [top["seconds"] * x / top["samples"] for x in xs], "k--", lw=0.8,
              label="linear in samples")
    a1.set_xlabel("ADC samples (3 captures)")
    a1.set_ylabel("wall seconds (warm)")
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
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("scaling"))
    ap.add_argument("--previous", type=Path, default=None,
                    help="JSON of an earlier run: its points are kept (e.g. the short lengths "
                         "measured before the long ones)")
    args = ap.parse_args(argv)
    lengths = [float(s) for s in args.samples.split(",") if s.strip()]
    threads = [int(s) for s in args.threads.split(",") if s.strip()]
    env = environment()
    rows = run(args.workdir, lengths, threads, args.repeat,
               log=lambda m: print(f"# {m}", file=sys.stderr, flush=True))
    if args.previous is not None:
        new = {(r["signal_samples"], r["threads"]) for r in rows}
        rows = [r for r in json.loads(args.previous.read_text())["rows"]
                if (r["signal_samples"], r["threads"]) not in new] + rows
        rows.sort(key=lambda r: (r["signal_samples"], r["threads"]))
    print_table([[f"{r['signal_samples']:.3g}", r["threads"], f"{r['samples']:.3g}",
                  f"{r['seconds']:.2f}", f"{r['samples_per_second'] / 1e6:.1f}",
                  f"{r['copy_samples_per_second'] / 1e6:.0f}",
                  f"{r['peak_memory_bytes'] / 1e6:.0f}", f"{r['compile_seconds']:.1f}"]
                 for r in rows],
                ["signal samples", "threads", "ADC samples", "seconds", "MS/s",
                 "copy MS/s", "peak MB", "compile s"])
    print(f"# load average (1 min) at start {env['load_average_1min']:.1f}, cpu "
          f"{env['cpu_model']} x {env['cpu_count']}")
    args.out.with_suffix(".json").write_text(json.dumps({"environment": env, "rows": rows},
                                                        indent=1, default=float) + "\n")
    for p in plot(rows, args.out):
        print(f"# figure {p}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
