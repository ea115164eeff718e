"""Our layered decoder against the C++ ``information-reconciliation`` package, same machine.

Benchmark only: run it in a separate environment that has the package
(``benchmarks/requirements-ir-compare.txt``, GPL-3.0); qkd-hw never imports or ships it.

Both decoders get frames of the binary-input AWGN channel that multidimensional
reconciliation induces (``y = (1 - 2 b) + n / sqrt(snr)``, LLR ``2 snr y``, the SNR where a
rate-0.1 code has efficiency ``beta``), with their own rate-0.1 code: ours (MET, 100 000 bits,
:mod:`qkd_hw.postprocessing.codes`) and theirs (rate-adaptive MET ``R_0p2_R_0p01_RA_SPPCOM_2``
at rate 0.1, 200 000 bits), the same iteration cap, early stop, one thread each
(``OMP_NUM_THREADS=1``, ``NUMBA_NUM_THREADS=1``: per-CPU speed, the load of a shared machine
matters less); ours gets ``--batch`` frames per call (its lock-step lanes), theirs one (its
interface). A frame fails when it does not converge to Bob's bits. Reported per beta and
decoder: FER (95 % Wilson), mean iterations, decoded bits per CPU-second.

Usage::

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 /tmp/ir-venv/bin/python benchmarks/ir_compare.py \
        --beta 0.88 --frames 200
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):   # `python benchmarks/ir_compare.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks.common import environment, print_header, print_table, write_json
from benchmarks.decoder import snr_for_beta, wilson


def _frames(n: int, snr: float, frames: int, rng: np.random.Generator):
    for _ in range(frames):
        b = rng.integers(0, 2, n).astype(np.uint8)
        yield b, 2.0 * snr * ((1.0 - 2.0 * b) + rng.normal(size=n) / np.sqrt(snr))


def ours(snr: float, frames: int, max_iter: int, seed: int, batch: int,
         family: int | None = None) -> dict[str, Any]:
    """The qkd-hw box-plus decoder on its rate-0.1 mother code (``family``: the
    :data:`~qkd_hw.postprocessing.codes.FAMILIES` index, None the default), ``batch`` frames
    per call (the way the post-processing calls it: lock-step lanes need several frames)."""
    from qkd_hw.postprocessing.codes import get_code
    from qkd_hw.postprocessing.ldpc import decode
    from qkd_hw.postprocessing.reconcile import CODE_SEED
    code = get_code(0.1, 100_000, CODE_SEED, family)
    decode(code, np.zeros((1, code.n)), np.zeros((1, code.m), np.uint8), 2)   # JIT warm-up
    ok, iters, cpu = 0, [], 0.0
    gen = _frames(code.n, snr, frames, np.random.default_rng(seed))
    for _ in range(0, frames, batch):
        bs, llrs = zip(*itertools.islice(gen, batch), strict=True)
        syns = np.stack([code.syndrome(b) for b in bs])
        c0 = time.process_time()
        res = decode(code, np.stack(llrs), syns, max_iter)
        cpu += time.process_time() - c0
        ok += sum(bool(c and np.array_equal(x, b)) for c, x, b in
                  zip(res.converged, res.bits, bs, strict=True))
        iters.extend(res.iterations.tolist())
    return {"n": code.n, "ok": ok, "iters": iters, "cpu_s": cpu, "code": code.name}


def theirs(snr: float, frames: int, max_iter: int, seed: int, batch: int,
           family: int | None = None) -> dict[str, Any]:
    """The C++ package's layered decoder on its rate-adaptive code at rate 0.1 (one frame
    per call: its interface; ``batch`` is unused)."""
    del batch, family
    return _theirs(snr, frames, max_iter, seed)


def _theirs(snr: float, frames: int, max_iter: int, seed: int) -> dict[str, Any]:
    import information_reconciliation as ir  # benchmark environment only (GPL-3.0)
    dec = ir.Decoder(NoI=max_iter, layered_flag=True, fast_flag=True)
    dec.set_rate(0.1)
    n = dec.get_N()
    ok, iters, cpu = 0, [], 0.0
    for b, llr in _frames(n, snr, frames, np.random.default_rng(seed)):
        syn = dec.get_syndrome(b.tolist())
        llr_list = llr.tolist()
        c0 = time.process_time()
        out, it, _ = dec.SPA_decoder(llr_list, syn)
        cpu += time.process_time() - c0
        ok += bool(np.array_equal(np.asarray(out, np.uint8), b))
        iters.append(int(it))
    return {"n": n, "ok": ok, "iters": iters, "cpu_s": cpu}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--beta", type=float, nargs="+", default=[0.88])
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--max-iterations", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--batch", type=int, default=16, help="frames per call of our decoder")
    ap.add_argument("--family", type=int, default=None,
                    help="our rate-0.1 code family (codes.FAMILIES index; default: the default)")
    ap.add_argument("--decoders", nargs="+", default=["qkd-hw", "information-reconciliation"])
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    env = environment()
    print_header("decoder: qkd-hw box-plus vs information-reconciliation (C++)", env)
    rows, results = [], []
    for beta in args.beta:
        snr = snr_for_beta(beta)
        for name, fn in (("qkd-hw", ours), ("information-reconciliation", theirs)):
            if name not in args.decoders:
                continue
            r = fn(snr, args.frames, args.max_iterations, args.seed, args.batch, args.family)
            err = args.frames - r["ok"]
            lo, hi = wilson(err, args.frames)
            r.update(decoder=name, beta=beta, frames=args.frames, errors=err,
                     mean_iterations=float(np.mean(r["iters"])),
                     bits_per_cpu_s=args.frames * r["n"] / r["cpu_s"], load=os.getloadavg()[0])
            results.append(r)
            rows.append([beta, name, r["n"], f"{err}/{args.frames}",
                         f"{err / args.frames:.3f} [{lo:.3f}, {hi:.3f}]",
                         f"{r['mean_iterations']:.1f}", f"{r['bits_per_cpu_s'] / 1e3:.0f}",
                         f"{r['load']:.1f}"])
            print("# " + "  ".join(str(c) for c in rows[-1]), flush=True)
    print_table(rows, ["beta", "decoder", "frame bits", "errors", "FER [95% Wilson]", "iter",
                       "kbit/CPU-s", "load"])
    write_json(args.json, {"environment": env, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
