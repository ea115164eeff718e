"""End-to-end throughput and peak memory of ``qkd-hw process`` (the receiver on a file).

Simulates (once, cached in --dir) a recording of >= 2e8 ADC samples with the project's
simulator, warms the JIT up on a small recording, then times ``process_recording`` on the big
one (HDF5 int16 read included, JIT excluded) and reports samples/s over all three captures
and the peak resident memory. Also times the streaming signal pass alone on an in-memory
int16 array (no I/O). On a shared machine, use ``--repeat`` and quote the best and the median
with the load average (printed).

    python -m benchmarks.receiver_throughput [--symbols 2e7] [--dir /tmp/qkd-bench] [--repeat 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import statistics
import time
from pathlib import Path

import numpy as np

from dsp.pipeline import SignalStream, acquire
from qkd_hw.receiver import _link, process_recording
from qkd_hw.sim.params import SimParams
from qkd_hw.sim.simulate import simulate_recording
from qkd_hw.trace_io import TraceReader

LINK = {"frequency_offset_hz": 23e6, "linewidth_hz": 1e3, "delay_samples": 1777.3}


def _recording(path: Path, n_symbols: int) -> Path:
    if not path.exists():
        print(f"simulating {n_symbols:.3g} symbols -> {path}", flush=True)
        simulate_recording(path, SimParams(**LINK), seed=1, n_symbols=n_symbols,
                           truth_phase=False)
    return path


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def in_memory(path: Path, n_samples: int) -> float:
    """Signal pass only, on an int16 array in memory (tiled from the recording's head)."""
    with TraceReader(path) as r:
        link = _link(r)
        head = r.read("signal", 0, 2_000_000)
        alice = r.symbols()
    acq = acquire(head, alice[:16384], link)
    link2 = dataclasses.replace(link, n_symbols=int(n_samples / link.samples_per_symbol))
    acq = dataclasses.replace(acq, link=link2)
    x = np.resize(head, n_samples)
    sym = np.resize(alice, link2.n_symbols)
    chunk = 1 << 22
    s = SignalStream(acq, alice=lambda a, b: sym[a:b])
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(0, n_samples, chunk):
        s.feed(x[i:i + chunk])
    s.finish()
    return n_samples / (time.perf_counter() - t0), n_samples / (time.process_time() - c0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--symbols", type=float, default=2e7)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/qkd-bench"))
    ap.add_argument("--chunk", type=int, default=1 << 22)
    ap.add_argument("--repeat", type=int, default=1, help="timed runs of the file (best, median)")
    args = ap.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    small = _recording(args.dir / "warmup.h5", 200_000)
    big = _recording(args.dir / f"big-{int(args.symbols)}.h5", int(args.symbols))
    process_recording(small, pe_fraction=0.5)                   # JIT warm-up (cache)
    rate_mem, rate_cpu = in_memory(small, 100_000_000)
    print(f"signal pass on int16 in memory: {rate_mem / 1e6:.0f} MS/s wall, "
          f"{rate_cpu / 1e6:.0f} MS per CPU-second", flush=True)
    rates = []
    for i in range(max(1, args.repeat)):
        load = os.getloadavg()[0]
        t0, c0 = time.perf_counter(), time.process_time()
        res = process_recording(big, pe_fraction=0.5, chunk_samples=args.chunk)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        rates.append(res.samples / dt / 1e6)
        size_gb = big.stat().st_size / 1e9
        print(f"[{i + 1}] file {big} ({size_gb:.2f} GB, {res.samples:.3g} samples): {dt:.2f} s, "
              f"{rates[-1]:.0f} MS/s end to end ({res.samples / dc / 1e6:.0f} MS per "
              f"CPU-second; load average {load:.2f}); peak RSS {_peak_rss_mb():.0f} MB; "
              f"xi = {res.estimates.excess_noise_snu:.4f} SNU, "
              f"T = {res.estimates.transmittance:.4f}", flush=True)
        print("    stages (s): " + ", ".join(f"{k} {v:.3f}" for k, v in res.stage_seconds.items()),
              flush=True)
    if len(rates) > 1:
        print(f"end to end over {len(rates)} runs: best {max(rates):.0f} MS/s, "
              f"median {statistics.median(rates):.0f} MS/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
