"""LDPC decoder check rules on the same frames: accuracy (FER, beta) and speed (A/B trees).

Frames: rate-0.1 mother code (unshortened), Gaussian ``x ~ N(0, 5)``, ``y = 0.3 x + z`` at
the SNR where the code has efficiency ``beta``; Bob's 8-D multidimensional encoding and
Alice's LLRs (:mod:`qkd_hw.postprocessing.reconcile`). Every rule decodes the SAME frames.
A frame fails when the decoder does not converge or converges to bits other than Bob's.

``accuracy``: per beta and rule the FER (95 % Wilson interval), mean iterations, the frames
where the rules disagree (paired), decoded bits per CPU-second; then the beta at which each
rule reaches ``--fer-target`` (log-linear interpolation between the betas run).

``speed``: one batch of frames per child interpreter, trees alternated (``--tree`` paths,
e.g. an old commit extracted with ``git archive``), 1 and 2 numba threads; decoded key bits
per wall second and per CPU-second, load average printed with each run.

Usage::

    python benchmarks/decoder.py accuracy --beta 0.87 0.88 0.89 0.9 --frames 200
    python benchmarks/decoder.py speed --tree . /tmp/tree_f22520c --frames 8 --repeat 3
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):   # `python benchmarks/decoder.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks.common import environment, print_header, print_table, write_json

RATE, LENGTH, VA, T = 0.1, 100_000, 5.0, 0.3


def snr_for_beta(beta: float) -> float:
    """SNR at which the rate-0.1 code has efficiency ``beta``."""
    return 2.0 ** (2.0 * RATE / beta) - 1.0


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of ``k/n``."""
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


FRAMES = rf"""
import math
import numpy as np
from qkd_hw.postprocessing.reconcile import AliceReconciler, BobReconciler, choose_code
from qkd_hw.postprocessing.codes import get_code

def make_frames(snr, frames, seed, length={LENGTH}, rate={RATE}, va={VA}, t={T}):
    p = choose_code(snr, frame_bits=length, dimension=8, max_iterations=400, rate=rate)
    rng = np.random.default_rng(seed)
    bob, alice = BobReconciler(p, np.random.default_rng(seed + 1)), AliceReconciler(p)
    noise = math.sqrt(t * t * va / snr)
    keys, llrs, syns = [], [], []
    for _ in range(frames):
        x = rng.normal(size=length) * math.sqrt(va)
        k, m = bob.encode(t * x + rng.normal(size=length) * noise)
        keys.append(k)
        llrs.append(alice.llr(x, m, snr))
        syns.append(m["syndrome"])
    return get_code(rate, length, p.code_seed), np.array(keys), np.array(llrs), np.array(syns)
"""


def accuracy(args: argparse.Namespace) -> dict[str, Any]:
    """Every rule on the same frames at each beta."""
    ns: dict[str, Any] = {}
    exec(FRAMES, ns)  # the same frame maker as the speed children
    from qkd_hw.postprocessing.ldpc import decode
    points = []
    per_frame: dict[str, np.ndarray] = {}
    for beta in args.beta:
        snr = snr_for_beta(beta)
        code, keys, llrs, syns = ns["make_frames"](snr, args.frames, args.seed)
        ok_by_rule = {}
        for rule in args.rules:
            decode(code, llrs[:1], syns[:1], 2, rule=rule)   # JIT warm-up
            ok, iters, cpu = [], [], 0.0
            for b0 in range(0, args.frames, args.batch):
                sl = slice(b0, b0 + args.batch)
                c0 = time.process_time()
                res = decode(code, llrs[sl], syns[sl], args.max_iterations, rule=rule)
                cpu += time.process_time() - c0
                ok.extend(bool(c and np.array_equal(b, k)) for c, b, k in
                          zip(res.converged, res.bits, keys[sl], strict=True))
                iters.extend(res.iterations.tolist())
            ok_by_rule[rule] = np.array(ok)
            per_frame[f"{beta}_{rule}"] = ok_by_rule[rule]
            err = args.frames - int(np.sum(ok))
            lo, hi = wilson(err, args.frames)
            points.append({"beta": beta, "snr_db": 10 * math.log10(snr), "rule": rule,
                           "frames": args.frames, "errors": err, "fer": err / args.frames,
                           "fer_lo": lo, "fer_hi": hi, "mean_iterations": float(np.mean(iters)),
                           "cpu_s": cpu, "bits_per_cpu_s": args.frames * LENGTH / cpu,
                           "load": os.getloadavg()[0]})
            print(f"# {points[-1]}", flush=True)
        ref = ok_by_rule[args.rules[0]]
        for p in points[-len(args.rules):]:
            mine = ok_by_rule[p["rule"]]
            p["only_this_fails"] = int(np.sum(ref & ~mine))
            p["only_reference_fails"] = int(np.sum(~ref & mine))
    if args.save_ok:    # per-frame outcomes, to pair runs of different trees
        np.savez(args.save_ok, **per_frame)
    return {"points": points, "beta_at_fer": beta_at_fer(points, args.fer_target)}


def beta_at_fer(points: list[dict[str, Any]], target: float) -> dict[str, float | None]:
    """Beta where each rule's FER crosses ``target`` (log-linear between adjacent betas)."""
    out: dict[str, float | None] = {}
    for rule in dict.fromkeys(p["rule"] for p in points):
        pts = sorted((p["beta"], max(p["fer"], 0.5 / p["frames"])) for p in points
                     if p["rule"] == rule)
        out[rule] = None
        for (b0, f0), (b1, f1) in itertools.pairwise(pts):
            if f0 <= target <= f1 and f1 > f0:
                w = (math.log(target) - math.log(f0)) / (math.log(f1) - math.log(f0))
                out[rule] = b0 + w * (b1 - b0)
                break
    return out


SPEED_CHILD = FRAMES + r"""
import json, os, time, numba
from qkd_hw.postprocessing.ldpc import decode
numba.set_num_threads({threads})
code, keys, llrs, syns = make_frames({snr}, {frames}, 7)
decode(code, llrs[:{threads}], syns[:{threads}], 3)     # JIT warm-up (cached)
w0, c0 = time.perf_counter(), time.process_time()
res = decode(code, llrs, syns, 400)
wall, cpu = time.perf_counter() - w0, time.process_time() - c0
good = int(sum(bool(c and (b == k).all()) for c, b, k in zip(res.converged, res.bits, keys)))
import qkd_hw
print(json.dumps({{"wall_s": wall, "cpu_s": cpu, "good": good, "module": qkd_hw.__file__,
                  "iterations": float(res.iterations.mean()),
                  "load": os.getloadavg()[0]}}))
"""


def _run_in_tree(tree: str, code: str) -> dict[str, Any]:
    """``code`` in a fresh interpreter importing qkd_hw from ``tree`` (its cwd too: ``-c``
    puts the cwd first on sys.path)."""
    root = str(Path(tree).resolve())
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=root, env={**os.environ, "PYTHONPATH": root}, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{tree}: child failed ({out.returncode}):\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def speed(args: argparse.Namespace) -> dict[str, Any]:
    """Decoded bits per second, trees alternated in fresh interpreters."""
    snr = snr_for_beta(args.beta[0])
    runs = []
    for rep in range(args.repeat):
        for threads in args.threads:
            for tree in args.tree:
                r = _run_in_tree(tree, SPEED_CHILD.format(snr=snr, frames=args.frames,
                                                          threads=threads))
                r.update(tree=tree, threads=threads, repeat=rep,
                         bits_per_s=args.frames * LENGTH / r["wall_s"],
                         bits_per_cpu_s=args.frames * LENGTH / r["cpu_s"])
                runs.append(r)
                print(f"# {r}", flush=True)
    return {"runs": runs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=("accuracy", "speed"))
    ap.add_argument("--beta", type=float, nargs="+", default=[0.88])
    ap.add_argument("--rules", nargs="+", default=["sum-product", "box-plus"])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-iterations", type=int, default=400)
    ap.add_argument("--fer-target", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tree", nargs="+", default=["."])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=None)
    ap.add_argument("--save-ok", default=None,
                    help="accuracy: .npz of each frame's success per beta and rule")
    args = ap.parse_args(argv)
    env = environment()
    print_header(f"LDPC decoder {args.mode}", env)
    if args.mode == "accuracy":
        out = accuracy(args)
        print_table([[p["beta"], f"{p['snr_db']:.3f}", p["rule"], f"{p['errors']}/{p['frames']}",
                      f"{p['fer']:.3f} [{p['fer_lo']:.3f}, {p['fer_hi']:.3f}]",
                      p["only_this_fails"], p["only_reference_fails"],
                      f"{p['mean_iterations']:.1f}", f"{p['bits_per_cpu_s'] / 1e3:.0f}",
                      f"{p['load']:.1f}"] for p in out["points"]],
                    ["beta", "SNR dB", "rule", "errors", "FER [95% Wilson]", "only it fails",
                     "only ref fails", "iter", "kbit/CPU-s", "load"])
        print(f"beta at FER {args.fer_target}: {out['beta_at_fer']}")
    else:
        out = speed(args)
        rows = []
        for tree in args.tree:
            for threads in args.threads:
                rs = [r for r in out["runs"] if r["tree"] == tree and r["threads"] == threads]
                rows.append([tree, threads, f"{np.median([r['bits_per_s'] for r in rs]) / 1e3:.0f}",
                             f"{np.median([r['bits_per_cpu_s'] for r in rs]) / 1e3:.0f}",
                             f"{np.mean([r['iterations'] for r in rs]):.1f}",
                             f"{rs[0]['good']}/{args.frames}",
                             " ".join(f"{r['load']:.1f}" for r in rs)])
        print_table(rows, ["tree", "threads", "kbit/s wall (median)", "kbit/CPU-s (median)",
                           "iter", "decoded", "load per run"])
    write_json(args.json, {"environment": env, "args": vars(args), **out})
    return 0


if __name__ == "__main__":
    sys.exit(main())
