"""Reconciliation efficiency, frame error rate and decoding speed of the MET-LDPC codes.

For each point (mother rate, SNR): frames of correlated Gaussian data ``x ~ N(0, V_A)``,
``y = t x + z`` with ``t^2 V_A / Var(z) = snr`` (the linear channel of conventions.md; the
BIAWGN channel induced by multidimensional reconciliation is what matters, so the simulator
is not needed), Bob's encode and Alice's decode of :mod:`qkd_hw.postprocessing.reconcile`.
A frame fails when the decoder does not converge or its bits differ from Bob's.

Reported: ``beta = R / C(snr)``, ``C = 1/2 log2(1 + snr)``; FER with the 95 % Wilson
interval; mean iterations; decoded key bits per second (wall time of ``decode_frames`` on
batches of ``--batch`` frames, all numba threads; the machine is shared, see load average),
and per CPU-second of the process (what one dedicated core would do).

Usage::

    python benchmarks/reconciliation_efficiency.py --rate 0.1 --beta 0.9 0.93 --frames 200
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):   # `python benchmarks/reconciliation_efficiency.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks.common import environment, print_header, print_table, write_json
from qkd_hw.postprocessing.reconcile import (
    AliceReconciler,
    BobReconciler,
    capacity,
    choose_code,
)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a binomial proportion ``k/n``."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def snr_for_beta(rate: float, beta: float) -> float:
    """SNR at which a code of ``rate`` has efficiency ``beta``."""
    return 2.0 ** (2.0 * rate / beta) - 1.0


def run_point(mother_rate: float | None, snr: float, *, frames: int, length: int | None,
              dimension: int, max_iterations: int, batch: int, seed: int,
              adaptive: bool = False, beta: float | None = None,
              family: int | None = None) -> dict:
    """Reconcile ``frames`` frames at one SNR with the unmodified mother code of
    ``mother_rate``, or (``adaptive``) with the code, shortening and puncturing
    ``choose_code(snr, beta=beta, rate=mother_rate)`` picks (``mother_rate`` None: its
    choice of mother); ``family``: the mother's code family (None: the default)."""
    if adaptive:
        params = choose_code(snr, frame_bits=length, dimension=dimension,
                             max_iterations=max_iterations, beta=beta, rate=mother_rate,
                             family=family)
    else:
        params = choose_code(snr, frame_bits=length, dimension=dimension,
                             max_iterations=max_iterations, rate=mother_rate, family=family)
    rng = np.random.default_rng(seed)
    bob = BobReconciler(params, np.random.default_rng(seed + 1))
    alice = AliceReconciler(params)
    va, t = 5.0, 0.3
    noise = math.sqrt(t * t * va / snr)
    errors, iters, busy, cpu = 0, [], 0.0, 0.0
    done = 0
    while done < frames:
        nb = min(batch, frames - done)
        xs, msgs, keys = [], [], []
        for _ in range(nb):
            x = rng.normal(size=params.frame_bits) * math.sqrt(va)
            y = t * x + rng.normal(size=params.frame_bits) * noise
            k, m = bob.encode(y)
            xs.append(x)
            msgs.append(m)
            keys.append(k)
        t0, c0 = time.perf_counter(), time.process_time()
        out, it = alice.decode_frames(xs, msgs, snr)
        busy += time.perf_counter() - t0
        cpu += time.process_time() - c0
        errors += sum(o is None or not np.array_equal(o, k) for o, k in zip(out, keys,
                                                                              strict=True))
        iters.extend(int(i) for i in it)
        done += nb
    lo, hi = wilson(errors, frames)
    return {"mother_rate": params.mother_rate, "code_family": params.code_family,
            "shortened": params.shortened,
            "punctured": params.punctured, "code_length": params.code_length,
            "rate": params.rate, "snr": snr,
            "snr_db": 10 * math.log10(snr), "beta": params.rate / capacity(snr),
            "frame_bits": params.frame_bits, "frames": frames, "frame_errors": errors,
            "fer": errors / frames, "fer_lo": lo, "fer_hi": hi,
            "mean_iterations": float(np.mean(iters)), "decode_s": busy,
            "bits_per_s": frames * params.frame_bits / busy,
            "bits_per_cpu_s": frames * params.frame_bits / cpu}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=None, choices=(0.1, 0.05, 0.02),
                    help="mother code (default 0.1; with --snr-db: choose_code's choice)")
    ap.add_argument("--beta", type=float, nargs="+", default=[0.9],
                    help="efficiencies of the mother code; with --snr-db: target efficiencies "
                         "of the adapted code at each SNR")
    ap.add_argument("--snr-db", type=float, nargs="+", default=None,
                    help="SNRs: code, shortening and puncturing chosen by choose_code for "
                         "each --beta")
    ap.add_argument("--family", type=int, default=None,
                    help="code family of the mother (default: codes.DEFAULT_FAMILY)")
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--length", type=int, default=None, help="code length (default per rate)")
    ap.add_argument("--dimension", type=int, default=8)
    ap.add_argument("--max-iterations", type=int, default=500)
    ap.add_argument("--batch", type=int, default=4, help="frames decoded concurrently")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    env = environment()
    print_header("reconciliation efficiency (MET-LDPC, multidimensional)", env)
    adaptive = args.snr_db is not None
    mother = args.rate if adaptive or args.rate is not None else 0.1
    # JIT warm-up outside the timings
    run_point(mother or 0.1, snr_for_beta(mother or 0.1, 0.5), frames=1, length=args.length,
              dimension=args.dimension, max_iterations=5, batch=1, seed=0)
    rows, results = [], []
    points = ([(10 ** (d / 10), b) for d in args.snr_db for b in args.beta] if adaptive
              else [(snr_for_beta(mother, b), None) for b in args.beta])
    for snr, target in points:
        r = run_point(mother, snr, frames=args.frames, length=args.length,
                      dimension=args.dimension, max_iterations=args.max_iterations,
                      batch=args.batch, seed=args.seed, adaptive=adaptive, beta=target,
                      family=args.family)
        results.append(r)
        rows.append([f"{r['mother_rate']}/{r['code_family']}", r["shortened"], r["punctured"],
                     f"{r['rate']:.4f}",
                     r["frame_bits"],
                     f"{r['snr_db']:.2f}",
                     f"{r['beta']:.3f}", f"{r['frame_errors']}/{r['frames']}",
                     f"{r['fer']:.3f} [{r['fer_lo']:.3f}, {r['fer_hi']:.3f}]",
                     f"{r['mean_iterations']:.0f}", f"{r['bits_per_s'] / 1e3:.0f}",
                     f"{r['bits_per_cpu_s'] / 1e3:.0f}"])
        print("# point: " + "  ".join(str(c) for c in rows[-1]), flush=True)
    print_table(rows, ["mother/family", "short", "punct", "R", "frame", "SNR dB", "beta", "errors",
                       "FER [95% Wilson]", "iter", "kbit/s wall", "kbit/CPU-s"])
    write_json(args.json, {"environment": env, "points": results})


if __name__ == "__main__":
    main()
