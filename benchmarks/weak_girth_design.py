"""DE threshold of rate-0.1 ensembles against their number of weak core nodes (issue 16).

:func:`qkd_hw.postprocessing.design.girth_ensemble` on a ``--base-n`` base graph: ``n_core``
core nodes (``n_c1 = n_core - R base_n`` type-1 checks), ``n_weak`` of them *weak* (two type-1
edges). Per ``(n_core, n_weak)`` a small grid over the weak nodes' type-2 degree and the mean
core edges per type-2 check ``kbar`` is scored by one fast discretised DE run
(:func:`~qkd_hw.postprocessing.design.de_fast_run`, LLR step 0.1, saturation 25) at
``--beta``: converged beats not, fewer iterations beat more, lower error breaks the rest; the
best is then bracketed by bisection (``de_fast_threshold``, tolerance ``--tol`` in sigma).
With ``--bracket-all`` every grid point is bracketed instead: the threshold is not smooth in
``kbar`` near the ridge where the decoder stops starting (steps of 0.005 move it by 0.005 in
beta), so a one-run score at one ``--beta`` can miss the best point.

    python benchmarks/weak_girth_design.py --core 125 --weak 24 30 36 44 50 60
    python benchmarks/weak_girth_design.py --base-n 2000 --rate 0.05 --core 125 --weak 50 \
        --weak-type2 38 40 --kbar 2.79 2.8 2.81 2.815 2.82 --bracket-all
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):   # `python benchmarks/weak_girth_design.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import environment, print_header
from qkd_hw.postprocessing import design
from qkd_hw.postprocessing.codes import MetEnsemble


def sigma_at(rate: float, beta: float) -> float:
    """BIAWGN noise at which a rate-``rate`` code has efficiency ``beta``."""
    return design.sigma_of_snr(2.0 ** (2.0 * rate / beta) - 1.0)


def grid(args: argparse.Namespace, n_core: int, n_weak: int
         ) -> list[tuple[int, float, MetEnsemble]]:
    """``(weak type-2 degree, kbar, ensemble)`` of every grid point that has an ensemble."""
    out = []
    for w2 in args.weak_type2:
        for kb in args.kbar:
            try:
                out.append((w2, kb, design.girth_ensemble("w", args.base_n, args.rate, n_core,
                                                          n_weak, w2, kb)))
            except (ValueError, ZeroDivisionError):
                continue
    return out


def report(args: argparse.Namespace, n_core: int, n_weak: int, w2: int, kb: float,
           ens: MetEnsemble, kw: dict) -> None:
    """Bracket the DE threshold of ``ens`` and print it with the ensemble."""
    lo, hi = sigma_at(args.rate, 0.93), sigma_at(args.rate, 0.985)
    try:
        s = design.de_fast_threshold(ens, lo, hi, args.tol, **kw)
    except ValueError:      # no convergence at lo
        print(f"core {n_core} weak {n_weak} w2 {w2} kbar {kb}: DE threshold below beta 0.93",
              flush=True)
        return
    n_c1 = n_core - round(args.rate * args.base_n)
    print(f"core {n_core} n_c1 {n_c1} weak {n_weak} (weak-graph mean degree "
          f"{2 * n_weak / n_c1:.2f}) w2 {w2} kbar {kb}: DE threshold sigma {s:.4f} "
          f"beta {design.efficiency(ens.rate, s):.4f}-"
          f"{design.efficiency(ens.rate, s + args.tol):.4f}  "
          f"{ens.var_types} {ens.check_types} load {os.getloadavg()[0]:.1f}", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-n", type=int, default=1000)
    ap.add_argument("--rate", type=float, default=0.1)
    ap.add_argument("--core", type=int, nargs="+", default=[125])
    ap.add_argument("--weak", type=int, nargs="+", default=[24, 30, 36, 44, 50, 60])
    ap.add_argument("--weak-type2", type=int, nargs="+", default=[21, 24, 27])
    ap.add_argument("--kbar", type=float, nargs="+", default=[2.9, 2.95, 3.0, 3.05])
    ap.add_argument("--beta", type=float, default=0.96, help="scoring efficiency")
    ap.add_argument("--tol", type=float, default=2e-3, help="bisection tolerance in sigma")
    ap.add_argument("--max-iterations", type=int, default=2000)
    ap.add_argument("--bracket-all", action="store_true",
                    help="bracket the threshold of every grid point, not only the best")
    args = ap.parse_args(argv)
    print_header("DE threshold against the weak count", environment())
    kw = {"max_iterations": args.max_iterations}
    s_test = sigma_at(args.rate, args.beta)
    for n_core in args.core:
        for n_weak in args.weak:
            points = grid(args, n_core, n_weak)
            if args.bracket_all:
                for w2, kb, ens in points:
                    report(args, n_core, n_weak, w2, kb, ens, kw)
                continue
            scored = []
            for w2, kb, ens in points:
                t0 = time.time()
                ok, it, err = design.de_fast_run(ens, s_test, **kw)
                print(f"  core {n_core} weak {n_weak} w2 {w2} kbar {kb}: "
                      f"{'conv' if ok else 'fail'} {it} it err {err:.2e} "
                      f"({time.time() - t0:.0f} s)", flush=True)
                scored.append(((not ok, it if ok else 0, err), w2, kb, ens))
            if scored:
                _, w2, kb, ens = min(scored, key=lambda x: x[0])
                report(args, n_core, n_weak, w2, kb, ens, kw)


if __name__ == "__main__":
    main()
