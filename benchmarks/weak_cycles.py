"""Shortest cycle of weak nodes in the mother codes (the error floor's codewords).

A variable node is *weak* when exactly two of its edges go to checks that hold no degree-one
variable node. A cycle of L weak nodes, with the degree-one nodes of the other checks they
touch, satisfies every check: a codeword of weight about L times the weak nodes' degree.
Prints, per mother code, the weak nodes and the shortest cycle among them (breadth-first
search from every such check, stopped at the best cycle found so far).

    python benchmarks/weak_cycles.py [--rate 0.1 0.05 0.02] [--family N] [--length N]
"""

from __future__ import annotations

import argparse
import sys
from collections import deque
from pathlib import Path

import numpy as np

if __package__ in (None, ""):   # `python benchmarks/weak_cycles.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qkd_hw.postprocessing.codes import LdpcCode, ensemble, get_code
from qkd_hw.postprocessing.reconcile import choose_code


def weak_graph(code: LdpcCode) -> tuple[dict[int, list[tuple[int, int]]], int, float]:
    """Adjacency of the checks without a degree-one node, one edge per weak node; the count of
    weak nodes and their mean degree."""
    chk = np.repeat(np.arange(code.m), np.diff(code.check_ptr))
    var = code.check_var.astype(np.int64)
    vdeg = np.bincount(var, minlength=code.n)
    held = np.zeros(code.m, dtype=bool)
    held[chk[vdeg[var] == 1]] = True
    free = ~held[chk]
    per_v = np.bincount(var[free], minlength=code.n)
    sel = free & (per_v[var] == 2)
    order = np.argsort(var[sel], kind="stable")
    ends = chk[sel][order].reshape(-1, 2)
    adj: dict[int, list[tuple[int, int]]] = {}
    for e, (a, b) in enumerate(ends):
        adj.setdefault(int(a), []).append((int(b), e))
        adj.setdefault(int(b), []).append((int(a), e))
    weak = np.flatnonzero(per_v == 2)
    return adj, weak.size, float(vdeg[weak].mean()) if weak.size else 0.0


def shortest_cycle(adj: dict[int, list[tuple[int, int]]], z: int = 1) -> int:
    """Girth (in edges = weak nodes) of the multigraph ``adj``; 0 if it has no cycle.

    ``z``: lifting size of a quasi-cyclic code (checks numbered ``base check * z + copy``);
    the cyclic shift maps every check onto copy 0 of its base check, so a breadth-first
    search from those (``z`` times fewer) finds the same girth.
    """
    best = 1 << 30
    for src in adj:
        if src % z:
            continue
        dist, via = {src: 0}, {src: -1}
        q = deque([src])
        while q:
            u = q.popleft()
            if 2 * dist[u] + 1 >= best:
                break
            for w, e in adj[u]:
                if e == via[u]:
                    continue
                if w in dist:
                    best = min(best, dist[u] + dist[w] + 1)
                else:
                    dist[w], via[w] = dist[u] + 1, e
                    q.append(w)
    return 0 if best == 1 << 30 else best


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, nargs="+", default=[0.1, 0.05, 0.02])
    ap.add_argument("--family", type=int, default=None,
                    help="mother ensemble (codes.FAMILIES index; default: the default one)")
    ap.add_argument("--length", type=int, default=None, help="code length (default per rate)")
    args = ap.parse_args(argv)
    for rate in args.rate:
        # the unmodified mother, default seed
        p = choose_code(0.1, rate=rate, family=args.family, frame_bits=args.length)
        code = get_code(p.mother_rate, p.code_length, p.code_seed, p.code_family)
        adj, weak, deg = weak_graph(code)
        cyc = shortest_cycle(adj, p.code_length // ensemble(p.mother_rate, p.code_family).base_n)
        short = (f"shortest weak cycle {cyc} nodes (codeword weight ~{cyc * (deg - 1):.0f})"
                 if cyc else "no weak cycle (the weak nodes form a forest)")
        print(f"rate {rate}: {code.name}: {weak} weak nodes of mean degree {deg:.1f} on "
              f"{len(adj)} checks; {short}")


if __name__ == "__main__":
    main()
