"""Privacy amplification speed and memory: Toeplitz hashing of 1e6 to 1e8 bits by FFT.

For each (input bits n, output bits m) a fresh interpreter draws a random key and seed,
times :func:`qkd_hw.postprocessing.privacy.toeplitz_hash` (the FFT length, the in-place
transforms and the exactness check included; drawing the inputs excluded), with the CPU time
it took (user and system: on a shared machine the wall time mostly says how busy it was) and
the load average after it, and reports its
peak resident set size (``ru_maxrss`` of the child: the kernel's high-water mark, inputs
included) and the RSS before the hash. Then it spot-checks output bits against the
definition ``parity(sum_j seed[(i - j) mod L] key[j])`` computed directly (the full
bit-exact comparison with randextract is in the tests, up to 1e6 bits).

Usage::

    python benchmarks/privacy_amplification.py [--bits 1e6,1e7,1e8] [--out-fraction 0.5]
        [--repeat 1] [--json out.json]

Target: 1e8 bits in at most 15 s and 4 GB.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):   # `python benchmarks/privacy_amplification.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import environment, fmt, print_header, print_table, run_python, write_json

CHILD = r"""
import json, resource, time
import numpy as np
from qkd_hw.postprocessing.privacy import random_bits, toeplitz_hash, toeplitz_seed_length
n, m, max_fft = {n}, {m}, {max_fft}
key = random_bits(n)
seed = random_bits(toeplitz_seed_length(n, m))
toeplitz_hash(key[:4096], seed[:4096 + 1023], 1024)   # warm-up: imports, FFT plans
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
ru0 = resource.getrusage(resource.RUSAGE_SELF)
t = time.perf_counter()
out = toeplitz_hash(key, seed, m, **({{}} if max_fft is None else {{"max_fft_len": max_fft}}))
seconds = time.perf_counter() - t
ru1 = resource.getrusage(resource.RUSAGE_SELF)
peak = ru1.ru_maxrss
user, system = ru1.ru_utime - ru0.ru_utime, ru1.ru_stime - ru0.ru_stime
L = n + m - 1
rows = np.random.default_rng(0).choice(m, 4, replace=False).tolist() + [0, m - 1]
ok = True
for i in rows:   # parity of sum_j seed[(i - j) mod L] key[j], in 1e7-bit pieces
    acc = 0
    for j0 in range(0, n, 10**7):
        j = np.arange(j0, min(n, j0 + 10**7))
        acc += int(seed[(i - j) % L].astype(np.int64) @ key[j0:j0 + j.size].astype(np.int64))
    ok &= (acc & 1) == int(out[i])
print(json.dumps({{"seconds": seconds, "cpu_user_s": user, "cpu_system_s": system,
                  "load_average_1min": __import__("os").getloadavg()[0],
                  "peak_rss_mb": peak / 1024, "rss_before_mb": rss0 / 1024,
                  "spot_check_ok": bool(ok), "spot_rows": len(rows)}}))
"""


def run_case(n: int, m: int, max_fft: int | None) -> dict[str, Any]:
    """One hash of ``n`` -> ``m`` bits in a fresh interpreter."""
    return run_python(CHILD.format(n=n, m=m, max_fft=max_fft))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bits", default="1e6,1e7,1e8", help="input lengths, comma-separated")
    ap.add_argument("--out-fraction", default="0.5",
                    help="output length / input length, comma-separated")
    ap.add_argument("--max-fft-len", type=float, default=None,
                    help="override privacy.MAX_FFT_LEN (block split above it)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per case; the fastest counts")
    ap.add_argument("--json", default=None, metavar="PATH", help="write every figure ('-': stdout)")
    args = ap.parse_args(argv)
    env = environment()
    print_header("privacy amplification (Toeplitz hashing by FFT)", env)
    max_fft = None if args.max_fft_len is None else int(args.max_fft_len)
    rows, results = [], []
    for n in (int(float(b)) for b in args.bits.split(",")):
        for frac in (float(f) for f in args.out_fraction.split(",")):
            m = max(1, int(n * frac))
            runs = [run_case(n, m, max_fft) for _ in range(max(1, args.repeat))]
            best = min(runs, key=lambda r: r["seconds"])
            best.update(n=n, m=m, max_fft_len=max_fft)
            results.append(best)
            rows.append([f"{n:.0e}", f"{m:.2g}", fmt(best["seconds"]), fmt(best["cpu_user_s"]),
                         fmt(best["cpu_system_s"]), fmt(best["load_average_1min"]),
                         fmt(n / best["seconds"] / 1e6), fmt(best["rss_before_mb"]),
                         fmt(best["peak_rss_mb"]), best["spot_check_ok"]])
    print_table(rows, ["input bits", "output bits", "s", "user s", "sys s", "load", "Mbit/s",
                       "RSS before MB", "peak RSS MB", "spot check"])
    write_json(args.json, {"environment": env, "results": results})
    return 0 if all(r["spot_check_ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
