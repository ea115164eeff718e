"""Search MET-LDPC ensembles of Jouguet et al.'s structure by density evolution.

Two searches over :func:`qkd_hw.postprocessing.design.jouguet_ensemble` (core fraction as a
multiple of the rate, fraction of core nodes with two type-1 edges, mean number of core edges
per type-2 check ``kbar``, type-1 degree of the other core nodes):

- ``--search ga`` (default): a grid scored by the Gaussian-approximation threshold, the best
  ones checked by discretised density evolution (slow, minutes per candidate);
- ``--search de``: coordinate hill climbing scored by the fast discretised density evolution
  (:func:`~qkd_hw.postprocessing.design.de_fast_run`, 5-20 s per candidate) at a test noise:
  a candidate that converges beats one that does not, fewer iterations beat more, and among
  non-converging ones the lower posterior error wins. Whenever the best converges the test
  noise is raised (by ``--raise`` in beta), so the climb pushes the threshold up. The
  threshold of the result is then bracketed by bisection.

Usage::

    python benchmarks/design_codes.py --rate 0.05 --base-n 2000 --top 5 --de 1
    python benchmarks/design_codes.py --search de --rate 0.02 --base-n 1000 \
        --start 1.4 0.6 2.6 3 --beta 0.97
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):   # `python benchmarks/design_codes.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from qkd_hw.postprocessing import design


def _sigma_at(rate: float, beta: float) -> float:
    return design.sigma_of_snr(2 ** (2 * rate / beta) - 1)


def _ensemble(rate: float, base_n: int, x: tuple[float, float, float, int]):
    core_mult, two, kbar, d1 = x
    f = core_mult * rate
    return design.jouguet_ensemble(f"met-r{rate}", base_n, rate, f, two,
                                   kbar * (1.0 - f) / f, int(d1))


def _score(res: tuple[bool, int, float]) -> tuple[int, float]:
    ok, it, err = res
    return (0, float(it)) if ok else (1, err)


def climb(rate: float, base_n: int, start: tuple[float, float, float, int], beta: float,
          raise_beta: float, rounds: int, max_iterations: int,
          steps: tuple[float, float, float] = (0.05, 0.1, 0.05)) -> tuple:
    """Coordinate hill climbing of the Jouguet parameters by fast DE (see module doc)."""
    steps = [*steps, 1]
    lows = [1.02, 0.0, 1.2, 3]
    highs = [3.0, 1.0, 6.0, 5]
    x = list(start)
    sigma = _sigma_at(rate, beta)

    def evaluate(xx):
        try:
            ens = _ensemble(rate, base_n, tuple(xx))
        except ValueError:
            return None, (2, 0.0)
        t0 = time.time()
        res = design.de_fast_run(ens, sigma, max_iterations=max_iterations)
        print(f"    {tuple(round(v, 3) for v in xx)} beta {beta:.4f}: {res[0]} "
              f"it {res[1]} err {res[2]:.2e} ({time.time() - t0:.0f} s)", flush=True)
        return ens, _score(res)

    ens, best = evaluate(x)
    for rnd in range(rounds):
        improved = False
        for i in range(4):
            for sgn in (1, -1):
                y = list(x)
                y[i] = min(highs[i], max(lows[i], y[i] + sgn * steps[i]))
                if y == x:
                    continue
                e2, sc = evaluate(y)
                if sc < best:
                    x, ens, best, improved = y, e2, sc, True
                    break
        if best[0] == 0:
            beta += raise_beta
            sigma = _sigma_at(rate, beta)
            print(f"round {rnd}: {tuple(x)} converges; test beta -> {beta:.4f}", flush=True)
            _, best = evaluate(x)
        elif not improved:
            steps = [s / 2 for s in steps[:3]] + [1]
            print(f"round {rnd}: no move improves; steps {steps}", flush=True)
            if steps[0] < 0.005:
                break
    return tuple(x), ens


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, required=True)
    ap.add_argument("--base-n", type=int, default=2000)
    ap.add_argument("--search", choices=("ga", "de"), default="ga")
    ap.add_argument("--core", type=float, nargs="+", default=[1.15, 1.2, 1.25, 1.3, 1.4, 1.5])
    ap.add_argument("--two", type=float, nargs="+", default=[0.4, 0.5, 0.6, 0.7, 0.8])
    ap.add_argument("--kbar", type=float, nargs="+", default=[2.2, 2.4, 2.6, 2.8, 3.0, 3.3])
    ap.add_argument("--d1", type=int, nargs="+", default=[3])
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--de", type=int, default=0, help="check the best N by discretised DE")
    ap.add_argument("--start", type=float, nargs=4, default=[1.2, 0.5, 3.0, 3],
                    metavar=("CORE", "TWO", "KBAR", "D1"), help="--search de: start point")
    ap.add_argument("--beta", type=float, default=0.96, help="--search de: first test beta")
    ap.add_argument("--raise", dest="raise_beta", type=float, default=0.004)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--steps", type=float, nargs=3, default=[0.05, 0.1, 0.05],
                    metavar=("CORE", "TWO", "KBAR"), help="--search de: first step sizes")
    ap.add_argument("--max-iterations", type=int, default=1500)
    args = ap.parse_args(argv)
    r = args.rate
    if args.search == "de":
        x, ens = climb(r, args.base_n, tuple(args.start), args.beta, args.raise_beta,
                       args.rounds, args.max_iterations, tuple(args.steps))
        print(f"result {x}: {ens}", flush=True)
        lo, hi = _sigma_at(r, args.beta - 0.03), _sigma_at(r, 0.999)
        s = design.de_fast_threshold(ens, lo, hi, tol=lo * 1e-3)
        print(f"  DE sigma {s:.4f} snr {10 * math.log10(design.snr_of_sigma(s)):.2f} dB "
              f"beta {design.efficiency(ens.rate, s):.4f} (tol {lo * 1e-3:.4f})", flush=True)
        return
    rows = []
    for c in args.core:
        f = c * r
        for k in args.kbar:
            b = k * (1.0 - f) / f
            res = design.optimise_jouguet(r, args.base_n, cores=np.array([f]),
                                          twos=np.array(args.two), type2s=np.array([b]),
                                          three_type1=tuple(args.d1))
            for beta, ens in res[:1]:
                rows.append((beta, c, k, ens))
                print(f"core {c:.2f}xR kbar {k:.2f}: GA beta {beta:.4f}  {ens}", flush=True)
    rows.sort(key=lambda x: -x[0])
    print("best:")
    for beta, c, k, ens in rows[:args.top]:
        print(f"  GA beta {beta:.4f} core {c} kbar {k}: {ens}")
    for beta, _, _, ens in rows[:args.de]:
        s_ga = design.sigma_of_snr(2 ** (2 * r / beta) - 1)
        s = design.de_threshold(ens, lo=s_ga * 0.9, hi=s_ga * 1.05, tol=s_ga * 2e-3)
        print(f"  DE sigma {s:.4f} snr {10 * math.log10(design.snr_of_sigma(s)):.2f} dB "
              f"beta {design.efficiency(ens.rate, s):.4f}  (GA {beta:.4f})", flush=True)


if __name__ == "__main__":
    main()
