"""benchmarks/weak_cycles.py: the weak-node graph and its shortest cycle on a hand-built code."""

from __future__ import annotations

import numpy as np

from benchmarks.weak_cycles import shortest_cycle, weak_graph
from qkd_hw.postprocessing.codes import LdpcCode


def _code(checks: list[list[int]], n: int) -> LdpcCode:
    ptr = np.cumsum([0] + [len(c) for c in checks]).astype(np.int64)
    var = np.concatenate([np.asarray(c) for c in checks]).astype(np.int32)
    return LdpcCode(n=n, m=len(checks), check_ptr=ptr, check_var=var,
                    edge_type=np.zeros(var.size, dtype=np.int8), name="hand")


def test_a_triangle_of_weak_nodes_is_a_codeword_and_its_length_is_found() -> None:
    # v0..v2 weak (two edges each into c0..c2, which hold no degree-one node); v3 has three
    # such edges, v4 one (and one into c3, which holds the degree-one v5): neither is weak
    code = _code([[0, 2, 3, 4], [0, 1, 3], [1, 2, 3], [4, 5]], n=6)
    adj, weak, deg = weak_graph(code)
    assert (weak, deg, sorted(adj)) == (3, 2.0, [0, 1, 2])
    assert shortest_cycle(adj) == 3
    word = np.zeros(6, dtype=np.uint8)
    word[:3] = 1
    assert not code.syndrome(word).any()


def test_parallel_edges_are_a_2_cycle_and_a_path_has_none() -> None:
    assert shortest_cycle({0: [(1, 0), (1, 1)], 1: [(0, 0), (0, 1)]}) == 2
    assert shortest_cycle({0: [(1, 0)], 1: [(0, 0), (2, 1)], 2: [(1, 1)]}) == 0


def test_a_qc_lift_is_searched_from_copy_0_only() -> None:
    # base triangle c0-c1-c2 with net shift 1, lifted by z = 2 (check c, copy i -> 2c + i):
    # one 6-cycle through every lifted check; copy 0 of each base check finds it
    z, edges = 2, []
    for i in range(z):
        edges += [(0 * z + i, 1 * z + i), (1 * z + i, 2 * z + i), (2 * z + i, 0 * z + (i + 1) % z)]
    adj: dict[int, list[tuple[int, int]]] = {}
    for e, (a, b) in enumerate(edges):
        adj.setdefault(a, []).append((b, e))
        adj.setdefault(b, []).append((a, e))
    assert shortest_cycle(adj) == shortest_cycle(adj, z) == 6
