"""Frame error rate of the rate-0.1 mother-code families on the same frames (paired).

Frames as in ``benchmarks/decoder.py``: Gaussian ``x ~ N(0, 5)``, ``y = 0.3 x + z`` at the
SNR where the rate-0.1 mother code has efficiency ``beta``; Bob's key bits, 8-D maps and
Alice's LLRs are drawn once per beta and shared by every family (the LLRs do not depend on
the code); each family gets the syndrome of the same key bits under its own code. A frame
fails when the decoder does not converge or converges to a word other than Bob's (a *wrong
word*: the syndrome is satisfied, only verification catches it). Prints per beta and family
the FER with its 95 % Wilson interval, the wrong words and their distance to Bob's bits, the
mean iterations, the frames where the families disagree, decoded bits per CPU-second.

    python benchmarks/family_fer.py --beta 0.88 0.90 0.92 0.94 --frames 200 --families 0 1
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):   # `python benchmarks/family_fer.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks.decoder import wilson

VA, T = 5.0, 0.3


def make_frames(snr: float, frames: int, seed: int, length: int,
                rate: float) -> tuple[np.ndarray, np.ndarray]:
    """Bob's key bits and Alice's LLRs of ``frames`` frames (uint8 and float64 ``(frames, n)``)."""
    from qkd_hw.postprocessing.reconcile import AliceReconciler, BobReconciler, choose_code
    p = choose_code(snr, frame_bits=length, dimension=8, rate=rate, family=0)
    rng = np.random.default_rng(seed)
    bob, alice = BobReconciler(p, np.random.default_rng(seed + 1)), AliceReconciler(p)
    noise = math.sqrt(T * T * VA / snr)
    keys = np.empty((frames, length), dtype=np.uint8)
    llrs = np.empty((frames, length))
    for i in range(frames):
        x = rng.normal(size=length) * math.sqrt(VA)
        keys[i], m = bob.encode(T * x + rng.normal(size=length) * noise)
        llrs[i] = alice.llr(x, m, snr)
    return keys, llrs


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every family on the same frames at each beta."""
    from qkd_hw.postprocessing.codes import get_code
    from qkd_hw.postprocessing.ldpc import decode
    points = []
    codes = {f: get_code(args.rate, args.length, args.code_seed, f) for f in args.families}
    for beta in args.beta:
        snr = 2.0 ** (2.0 * args.rate / beta) - 1.0
        keys, llrs = make_frames(snr, args.frames, args.seed, args.length, args.rate)
        ok_by = {}
        for fam, code in codes.items():
            syn = np.array([code.syndrome(k) for k in keys])
            decode(code, llrs[:1], syn[:1], 2)        # JIT warm-up
            ok, iters, dist, cpu = [], [], [], 0.0
            for b0 in range(0, args.frames, args.batch):
                sl = slice(b0, b0 + args.batch)
                c0 = time.process_time()
                res = decode(code, llrs[sl], syn[sl], args.max_iterations)
                cpu += time.process_time() - c0
                for c, b, k in zip(res.converged, res.bits, keys[sl], strict=True):
                    d = int(np.count_nonzero(b != k))
                    ok.append(bool(c and d == 0))
                    if c and d:
                        dist.append(d)
                iters.extend(res.iterations.tolist())
                print(f"  beta {beta} family {fam}: {len(ok)} frames, {len(ok) - sum(ok)} failed, "
                      f"{len(dist)} wrong words, cpu {cpu:.0f} s", file=sys.stderr, flush=True)
            ok_by[fam] = np.array(ok)
            err = args.frames - int(ok_by[fam].sum())
            lo, hi = wilson(err, args.frames)
            points.append({"beta": beta, "snr_db": 10 * math.log10(snr), "family": fam,
                           "code": code.name, "frames": args.frames, "errors": err,
                           "fer": err / args.frames, "fer_lo": lo, "fer_hi": hi,
                           "wrong_words": len(dist), "wrong_word_distances": dist,
                           "mean_iterations": float(np.mean(iters)), "cpu_s": cpu,
                           "bits_per_cpu_s": args.frames * args.length / cpu,
                           "load": os.getloadavg()[0]})
            print(f"# {json.dumps(points[-1])}", flush=True)
        ref = ok_by[args.families[0]]
        for p in points[-len(codes):]:
            mine = ok_by[p["family"]]
            p["only_this_fails"] = int(np.sum(ref & ~mine))
            p["only_reference_fails"] = int(np.sum(~ref & mine))
    return points


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--beta", type=float, nargs="+", default=[0.88, 0.90, 0.92, 0.94])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--length", type=int, default=100_000)
    ap.add_argument("--rate", type=float, default=0.1)
    ap.add_argument("--families", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--max-iterations", type=int, default=500)
    ap.add_argument("--batch", type=int, default=16, help="frames per decode call")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--code-seed", type=int, default=20111213)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    t0 = time.time()
    points = run(args)
    print(f"{'beta':>5} {'fam':>3} {'err':>4} {'FER':>6} {'95% CI':>15} {'wrong':>5} "
          f"{'iter':>6} {'only':>4} {'kbit/CPU-s':>10} {'load':>5}")
    for p in points:
        print(f"{p['beta']:5.3f} {p['family']:3d} {p['errors']:4d} {p['fer']:6.3f} "
              f"[{p['fer_lo']:.3f}, {p['fer_hi']:.3f}] {p['wrong_words']:5d} "
              f"{p['mean_iterations']:6.1f} {p['only_this_fails']:4d} "
              f"{p['bits_per_cpu_s'] / 1e3:10.0f} {p['load']:5.1f}")
    print(f"wall {time.time() - t0:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "points": points}, indent=1))


if __name__ == "__main__":
    main()
