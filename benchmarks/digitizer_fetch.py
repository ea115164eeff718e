"""Throughput of a large digitizer fetch over loopback through real pyvisa (pyvisa-py).

Starts the Infiniium emulator, acquires one record of ``--samples`` int16 samples (default
1e8 = 200 MB), fetches it with KeysightInfiniium.fetch in ``--chunk`` point chunks and reports
MB/s (1 MB = 1e6 bytes) for the transfer alone (the emulator's acquisition is not timed).
Checks the data against the emulator's pattern. Usage::

    python benchmarks/digitizer_fetch.py [--samples 1e8] [--chunk 8388608] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):   # `python benchmarks/digitizer_fetch.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivers.emulators.keysight_infiniium import InfiniiumEmulator, default_pattern
from drivers.keysight_infiniium import KeysightInfiniium


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=float, default=1e8)
    ap.add_argument("--chunk", type=int, default=8 << 20, help="points per :WAV:DATA? chunk")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    n = int(args.samples)
    rates = []
    emu = InfiniiumEmulator()
    with emu, KeysightInfiniium.from_resource(emu.resource, name="scope", timeout_s=5.0) as sc:
        sc.record_length = n
        sc.arm()
        sc.wait_acquired(timeout_s=60)
        out = np.empty(n, dtype=np.int16)
        for _ in range(args.repeat):
            out.fill(0)
            t0 = time.perf_counter()
            sc.fetch(1, chunk_points=args.chunk, out=out)
            dt = time.perf_counter() - t0
            rates.append(out.nbytes / dt / 1e6)
        ok = bool(np.array_equal(out, default_pattern(1, 0, n)))
    result = {"samples": n, "bytes": 2 * n, "chunk_points": args.chunk,
              "rates_MB_per_s": [round(r, 1) for r in rates], "best_MB_per_s": round(max(rates), 1),
              "data_ok": ok}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"fetched {n:.3g} int16 samples ({2 * n / 1e6:.0f} MB) in chunks of "
              f"{args.chunk} points: " + ", ".join(f"{r:.0f}" for r in rates)
              + f" MB/s (best {max(rates):.0f} MB/s); data {'OK' if ok else 'WRONG'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
