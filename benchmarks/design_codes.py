"""Search MET-LDPC ensembles of Jouguet et al.'s structure by density evolution.

Grid over the core fraction (as a multiple of the rate), the fraction of core nodes with two
type-1 edges and the mean number of core edges per type-2 check; each candidate scored by
its Gaussian-approximation threshold (:func:`qkd_hw.postprocessing.design.ga_threshold`),
the best ones checked by discretised density evolution.

Usage::

    python benchmarks/design_codes.py --rate 0.05 --base-n 2000 --top 5 --de 1
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from qkd_hw.postprocessing import design


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, required=True)
    ap.add_argument("--base-n", type=int, default=2000)
    ap.add_argument("--core", type=float, nargs="+", default=[1.15, 1.2, 1.25, 1.3, 1.4, 1.5])
    ap.add_argument("--two", type=float, nargs="+", default=[0.4, 0.5, 0.6, 0.7, 0.8])
    ap.add_argument("--kbar", type=float, nargs="+", default=[2.2, 2.4, 2.6, 2.8, 3.0, 3.3])
    ap.add_argument("--d1", type=int, nargs="+", default=[3])
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--de", type=int, default=0, help="check the best N by discretised DE")
    args = ap.parse_args(argv)
    r = args.rate
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
