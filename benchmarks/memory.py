"""Peak memory of the DSP receiver versus recording length (must be flat, < 1.5 GB).

For each length, a fresh interpreter imports the receiver, runs it once on a tiny recording
(JIT kernels loaded from numba's cache, which a throwaway interpreter filled first; baseline
RSS noted), then runs ``process_recording`` (as ``qkd-hw process``
does: default options, PE fraction 0.5, no raw-key output) on a cached simulated recording of that
length (uncompressed int16) and reports its peak resident set size (``VmHWM`` of the child,
exact: the kernel's high-water mark) and the RSS it went back to. The parent also polls the
child's RSS with psutil to give the peak of the processing phase alone.

Usage::

    python benchmarks/memory.py [--workdir /tmp/qkd-hw-bench] [--samples 2e7,2e8,2e9] [--json out]

A 2e9-sample recording is 4 GB of ADC codes plus 1.6 GB of Alice's symbols: it is simulated
once (several minutes) and needs ~6 GB free in the work directory (checked first).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):   # `python benchmarks/memory.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (
    DEFAULT_WORKDIR,
    ensure_recording,
    environment,
    print_header,
    print_table,
    recording_path,
    recording_samples,
    symbols_for_samples,
    write_json,
)
from benchmarks.throughput import tiny_recording

LIMIT_GB = 1.5
#: bytes per signal sample of a simulated recording: int16 code + complex64 symbol per 10 samples
FILE_BYTES_PER_SAMPLE = 2 + 8 / 10

_CHILD = """
import json, re, resource, sys, time
import psutil
from qkd_hw.receiver import process_recording


def hwm():
    # VmHWM is this address space's own high-water mark; ru_maxrss survives execve and so
    # starts at the parent's RSS at fork (a 1.5 GB test worker gave a 1.5 GB "peak")
    try:
        return int(re.search(r"VmHWM:\\s+(\\d+)\\s+kB",
                             open("/proc/self/status").read()).group(1)) * 1024
    except (OSError, AttributeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


me = psutil.Process()
process_recording({tiny!r}, chunk_samples={chunk})
base = me.memory_info().rss
base_hwm = hwm()
print("READY", flush=True)
t0 = time.perf_counter()
res = process_recording({path!r}, chunk_samples={chunk}, pe_fraction={pe!r},
                        raw_key_out={raw!r})
dt = time.perf_counter() - t0
print(json.dumps({{"baseline_rss": base, "baseline_hwm": base_hwm,
                   "peak_rss": hwm(),
                   "end_rss": me.memory_info().rss, "seconds": dt, "samples": res.samples,
                   "excess_noise_snu": res.estimates.excess_noise_snu,
                   "n_symbols_received": res.n_received}}))
"""


def measure(path: Path, tiny: Path, *, chunk_samples: int, pe_fraction: float,
            raw_key_out: Path | None = None, poll_s: float = 0.1) -> dict[str, Any]:
    """Peak RSS of ``process_recording(path)`` in a fresh interpreter."""
    import psutil

    code = _CHILD.format(tiny=str(tiny), path=str(path), chunk=int(chunk_samples), pe=pe_fraction,
                         raw=None if raw_key_out is None else str(raw_key_out))
    errf = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (a pipe could fill and block)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=errf,
                            text=True)
    ps = psutil.Process(proc.pid)
    peak_polled = [0]
    ready = threading.Event()
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            if ready.is_set():
                try:
                    peak_polled[0] = max(peak_polled[0], ps.memory_info().rss)
                except psutil.Error:
                    return
            time.sleep(poll_s)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == "READY":
            ready.set()
        else:
            lines.append(line)
    proc.wait()
    errf.seek(0)
    err = errf.read()
    errf.close()
    done.set()
    th.join()
    if proc.returncode != 0:
        raise RuntimeError(f"receiver subprocess failed on {path} ({proc.returncode}):\n"
                           f"{err[-4000:]}")
    out = json.loads(lines[-1])
    out["peak_rss_polled"] = peak_polled[0]
    return out


def check_disk(workdir: Path, samples: float, seed: int = 1) -> None:
    path = recording_path(workdir, symbols_for_samples(samples), seed)
    if path.is_file():
        return
    need = samples * FILE_BYTES_PER_SAMPLE * 1.05 + 2e9   # + margin for everyone else
    free = shutil.disk_usage(workdir).free
    if free < need:
        raise SystemExit(f"not enough disk in {workdir} for a {samples:.3g}-sample recording: "
                         f"{free / 1e9:.1f} GB free, need {need / 1e9:.1f} GB")


def run(workdir: Path, lengths: list[float], *, chunk_samples: int = 1 << 22,
        pe_fraction: float = 0.5, raw_key: bool = False, log=print) -> dict[str, Any]:
    """Peak RSS for every length (the core the smoke test runs on tiny sizes)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    tiny = tiny_recording(workdir, log)
    # fill numba's on-disk cache first, in a throwaway interpreter: a child that compiles
    # (after a code change) peaks at ~500 MB in LLVM before it processes anything
    subprocess.run([sys.executable, "-c", "from qkd_hw.receiver import process_recording; "
                    f"process_recording({str(tiny)!r})"], check=True, capture_output=True)
    rows = []
    for n in sorted(lengths):
        check_disk(workdir, n)
        path = ensure_recording(workdir, signal_samples=n, seed=1, progress=False, log=log)
        log(f"receiver on {path.name} ...")
        raw = workdir / f"raw-key-{os.getpid()}.h5" if raw_key else None
        try:
            m = measure(path, tiny, chunk_samples=chunk_samples, pe_fraction=pe_fraction,
                        raw_key_out=raw)
        finally:
            if raw is not None:
                raw.unlink(missing_ok=True)
        rows.append({"signal_samples": recording_samples(path)["signal"], "path": str(path),
                     "file_bytes": path.stat().st_size, **m})
    x = np.array([r["signal_samples"] for r in rows], float)
    y = np.array([r["peak_rss"] for r in rows], float)
    slope = float(np.polyfit(x, y, 1)[0]) if len(rows) >= 2 else float("nan")
    peak = float(y.max())
    growth = float(y[-1] - y[0]) if len(rows) >= 2 else 0.0
    return {"rows": rows, "chunk_samples": chunk_samples, "pe_fraction": pe_fraction,
            "raw_key_out": raw_key,
            "limit_bytes": LIMIT_GB * 1e9, "max_peak_rss": peak,
            "peak_growth_bytes": growth, "slope_bytes_per_signal_sample": slope,
            "under_limit": peak < LIMIT_GB * 1e9}


def report(out: dict[str, Any]) -> None:
    mb = 1e6
    print_table([[f"{r['signal_samples']:.3g}", f"{r['file_bytes'] / 1e9:.2f}",
                  f"{r['baseline_rss'] / mb:.0f}", f"{r['peak_rss'] / mb:.0f}",
                  f"{r['peak_rss_polled'] / mb:.0f}", f"{r['end_rss'] / mb:.0f}",
                  f"{r['seconds']:.1f}", f"{r['samples'] / r['seconds'] / 1e6:.1f}",
                  f"{r['excess_noise_snu']:.4f}"] for r in out["rows"]],
                ["signal samples", "file GB", "RSS after warm-up MB", "peak RSS MB",
                 "peak polled MB", "RSS at end MB", "seconds", "MS/s", "xi SNU"])
    print(f"(PE fraction {out['pe_fraction']}, chunk {out['chunk_samples']} samples, raw key "
          f"{'written' if out['raw_key_out'] else 'not written'})")
    ok = "MET" if out["under_limit"] else "NOT MET"
    print(f"\nmax peak RSS {out['max_peak_rss'] / mb:.0f} MB vs limit {LIMIT_GB * 1e3:.0f} MB: "
          f"{ok}; growth smallest -> largest {out['peak_growth_bytes'] / mb:+.0f} MB, "
          f"slope {out['slope_bytes_per_signal_sample']:.3g} bytes per signal sample")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    ap.add_argument("--samples", default="2e7,2e8,2e9",
                    help="comma-separated signal lengths (default 2e7,2e8,2e9)")
    ap.add_argument("--chunk-samples", type=int, default=1 << 22)
    ap.add_argument("--pe-fraction", type=float, default=0.5)
    ap.add_argument("--raw-key", action="store_true",
                    help="also write the raw key (qkd-hw process --out), as the lab does")
    ap.add_argument("--json", metavar="PATH", help="write all figures as JSON ('-': stdout)")
    args = ap.parse_args(argv)
    env = environment()
    print_header("qkd-hw receiver peak memory vs recording length", env)
    lengths = [float(s) for s in args.samples.split(",") if s.strip()]
    out = run(args.workdir, lengths, chunk_samples=args.chunk_samples,
              pe_fraction=args.pe_fraction, raw_key=args.raw_key,
              log=lambda m: print(f"# {m}", file=sys.stderr, flush=True))
    out["environment"] = env
    out["command"] = " ".join(sys.argv)
    report(out)
    write_json(args.json, out)
    return 0 if out["under_limit"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
