"""Multi-edge-type (MET) LDPC codes for low-SNR reverse reconciliation.

A MET ensemble (Richardson & Urbanke, "Multi-edge type LDPC codes", 2004) is given here by
integer node counts on a *base graph* of ``base_n`` variable nodes: each node type lists how
many sockets of each edge type it has. The CV-QKD ensembles follow the structure of Jouguet,
Kunz-Jacques, Leverrier, PRA 84, 062317 (2011) (three edge types: high-degree variable nodes
with edge types 1 and 2, degree-one variable nodes with edge type 3 hanging on the type-2
checks), as also used by Milicevic et al., npj Quantum Inf. 4, 21 (2018) and Wang et al.,
QIC 18, 0197 (2018).

Construction (deterministic from a seed): a random base graph is drawn by matching the sockets
of each edge type with a random permutation, then lifted quasi-cyclically by ``Z = n/base_n``
(each base edge becomes a ``Z x Z`` circulant; protograph lifting of Thorpe, IPN PR 42-154,
2003). The circulant shifts are chosen edge by edge so that the lifted graph has no multi-edge
and no 4-cycle (the cycle condition of Fossorier, IEEE Trans. IT 50, 1788 (2004)), a
progressive-edge-growth-like greedy rule on the base graph (Hu, Eleftheriou, Arnold, IEEE
Trans. IT 51, 386 (2005) grow the graph edge by edge the same way). At tiny lifting sizes
where that is impossible the fewest 4-cycles are closed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numba import njit

__all__ = ["DEFAULT_FAMILY", "DE_THRESHOLD", "ENSEMBLES", "FAMILIES", "LdpcCode", "MetEnsemble",
           "build_code", "ensemble", "get_code"]


@dataclass(frozen=True)
class MetEnsemble:
    """A MET-LDPC ensemble as integer node counts on a base graph.

    Attributes
    ----------
    name : str
        Identifier used in code caches and reports.
    base_n : int
        Variable nodes of the base graph; the frame length must be a multiple of it.
    var_types : tuple
        ``(count, (d1, d2, ...))``: ``count`` variable nodes with ``d_t`` sockets of edge type t.
    check_types : tuple
        Same for check nodes.
    forest : bool
        Place the weak nodes (two type-1 edges) as a forest on the type-1 checks
        (:func:`build_code` redraws the type-1 matching until they form one).
    weak_girth : bool
        Place the weak nodes PEG-like on the type-1 checks and choose their circulant shifts
        for a long lifted weak girth (:func:`build_code`).
    """

    name: str
    base_n: int
    var_types: tuple[tuple[int, tuple[int, ...]], ...]
    check_types: tuple[tuple[int, tuple[int, ...]], ...]
    forest: bool = False
    weak_girth: bool = False

    @property
    def base_m(self) -> int:
        """Check nodes of the base graph."""
        return sum(c for c, _ in self.check_types)

    @property
    def rate(self) -> float:
        """Design rate ``1 - m/n``."""
        return 1.0 - self.base_m / self.base_n

    def validate(self) -> None:
        """Raise ValueError unless the counts and socket numbers of every edge type agree."""
        if sum(c for c, _ in self.var_types) != self.base_n:
            raise ValueError(f"{self.name}: variable counts do not add up to base_n")
        n_types = len(self.var_types[0][1])
        for t in range(n_types):
            v = sum(c * d[t] for c, d in self.var_types)
            c = sum(c * d[t] for c, d in self.check_types)
            if v != c:
                raise ValueError(f"{self.name}: edge type {t + 1}: {v} variable sockets vs {c}")


# Degrees: the three-edge-type structure of Jouguet et al. (2011), parameters found by this
# project (the published tables were not available). Rate 0.1: a grid over the core fraction
# (1.1 to 1.7 times the rate), the share of core nodes with two type-1 edges and the mean
# number of core edges per type-2 check, scored by the Gaussian-approximation threshold, the
# best candidates checked by discretised density evolution (de_converges: LLR step 0.1,
# saturation 25, 2000 iterations, posterior error < 1e-7). Rates 0.05 and 0.02: coordinate
# hill climbing of the same parameters on a 1000-node base graph scored by the fast
# discretised DE (design.de_fast_run, same grid and criterion, 1500 iterations;
# ``benchmarks/design_codes.py --search de``). DE_THRESHOLD holds the BIAWGN noise sigma at
# which DE still converges and the bracket of the efficiency
# beta = R / (1/2 log2(1 + 1/sigma^2)) at the threshold (the upper end: no convergence
# within the iteration cap).
_R10 = MetEnsemble(
    "met-r0.10", 200,
    ((12, (2, 22, 0)), (12, (3, 22, 0)), (176, (0, 0, 1))),
    ((4, (15, 0, 0)), (176, (0, 3, 1))),
)
_R05 = MetEnsemble(
    "met-r0.05", 1000,
    ((25, (2, 43, 0)), (21, (3, 43, 0)), (16, (3, 42, 0)), (938, (0, 0, 1))),
    ((7, (13, 0, 0)), (5, (14, 0, 0)), (164, (0, 2, 1)), (774, (0, 3, 1))),
)
_R02 = MetEnsemble(
    "met-r0.02", 1000,
    ((16, (2, 94, 0)), (3, (3, 94, 0)), (8, (3, 93, 0)), (973, (0, 0, 1))),
    ((5, (9, 0, 0)), (2, (10, 0, 0)), (389, (0, 2, 1)), (584, (0, 3, 1))),
)
# Rate 0.1 without the error floor (benchmarks/reconciliation.md, item 2b): the ensemble
# above has 12 weak core nodes (two type-1 edges, i.e. two edges into checks without a
# degree-one node) on 4 type-1 checks, so cycles of 4 weak nodes (codewords of weight ~92)
# exist whatever the lifting. Here fewer weak nodes than type-1 checks, placed as a forest in
# the base graph (build_code redraws the type-1 matching until they form one; a forest lifts
# to a forest): no weak cycle at any length. Parameters: design.forest_ensemble (base 200,
# 25 core nodes, 4 weak of type-2 degree 25, 2.95 core edges per type-2 check), from a
# Gaussian-approximation grid (core nodes 24-26, weak nodes, their type-2 degree 20-32, core
# edges per type-2 check 2.95-3.05) and fast discretised DE probes around its best: DE
# converges at beta 0.950, not at 0.952 (2000 iterations), against 0.967 above. Paired FER
# on the same 1e5-bit frames (benchmarks/reconciliation.md): 4/200 against 17/200 at beta
# 0.90, no wrong word; the default since 2026-12-07.
_R10F = MetEnsemble(
    "met-r0.10f", 200,
    ((4, (2, 25, 0)), (4, (3, 19, 0)), (17, (3, 20, 0)), (175, (0, 0, 1))),
    ((4, (14, 0, 0)), (1, (15, 0, 0)), (9, (0, 2, 1)), (166, (0, 3, 1))),
    forest=True,
)
# Rate 0.1 with more weak nodes but no short weak cycle (issue 16; benchmarks/reconciliation.md,
# top section): a 1000-node base graph, 125 core nodes on 25 type-1 checks, weak nodes of
# type-2 degree 21, 2.95 core edges per type-2 check (design.girth_ensemble, parameters from
# benchmarks/weak_girth_design.py). build_code places the weak nodes PEG-like on the type-1
# checks and picks their shifts by QC-PEG on the lifted weak graph (weak_girth=True).
# met-r0.10g: 30 weak nodes (weak-graph mean degree 2.4), DE beta 0.962-0.963, shortest
# lifted weak cycle 20 nodes at 1e5 and 1e6 bits (weight ~440).
# met-r0.10h: 36 weak nodes (mean degree 2.9), DE 0.965-0.967, shortest weak cycle 15 nodes
# at 1e5 bits, 18 at 1e6 (weight ~330 / ~400). Paired FER on 1e6-bit frames at beta 0.94:
# met-r0.10h 2/200, met-r0.10g 7/192, met-r0.10f 32/64 (4 wrong words of distance 126); no
# wrong word of g or h: met-r0.10h is the default since 2026-12-07 (later).
_R10G = MetEnsemble(
    "met-r0.10g", 1000,
    ((30, (2, 21, 0)), (44, (3, 20, 0)), (51, (3, 21, 0)), (875, (0, 0, 1))),
    ((5, (13, 0, 0)), (20, (14, 0, 0)), (44, (0, 2, 1)), (831, (0, 3, 1))),
    weak_girth=True,
)
_R10H = MetEnsemble(
    "met-r0.10h", 1000,
    ((36, (2, 21, 0)), (44, (3, 20, 0)), (45, (3, 21, 0)), (875, (0, 0, 1))),
    ((11, (13, 0, 0)), (14, (14, 0, 0)), (44, (0, 2, 1)), (831, (0, 3, 1))),
    weak_girth=True,
)
# Rates 0.05 and 0.02 with the weak nodes placed as in met-r0.10h (issue 16;
# benchmarks/reconciliation.md, top section; build_code, weak_girth=True).
# met-r0.05g: 125 core nodes on a 2000-node base graph (25 type-1 checks), 50 of them weak
# (type-2 degree 40), 2.81 core edges per type-2 check (design.girth_ensemble; parameters
# from benchmarks/weak_girth_design.py --bracket-all): DE 0.963 against met-r0.05's 0.951-0.955;
# shortest lifted weak cycle 9 / 12 nodes at 1e5 / 1e6 bits (met-r0.05: 5 / 7). Paired FER
# on the same frames: 1e6 bits, beta 0.95: 12/64 against 24/64; 1.6e5 bits, beta 0.90: 7/200
# against 14/200 (2 wrong words of distance 176); beta 0.94 on 1e6 bits: 4/200.
_R05G = MetEnsemble(
    "met-r0.05g", 2000,
    ((50, (2, 40, 0)), (31, (3, 43, 0)), (44, (3, 44, 0)), (1875, (0, 0, 1))),
    ((25, (13, 0, 0)), (356, (0, 2, 1)), (1519, (0, 3, 1))),
    weak_girth=True,
)
# met-r0.05h: 130 core nodes (30 type-1 checks), 60 weak of type-2 degree 40, kbar 2.76:
# DE 0.9715-0.9720; shortest weak cycle 9 / 10 / 12 nodes at 1e5 / 1.6e5 / 1e6 bits. On the
# same frames: 1e6 bits, beta 0.95: 2/64 (met-r0.05g 12/64, met-r0.05 24/64), 5/200 in all;
# 1.6e5 bits, beta 0.90: 0/200 (7/200, 14/200). The rate-0.05 default since 2026-12-07
# (evening).
_R05H = MetEnsemble(
    "met-r0.05h", 2000,
    ((60, (2, 40, 0)), (39, (3, 39, 0)), (31, (3, 40, 0)), (1870, (0, 0, 1))),
    ((30, (11, 0, 0)), (449, (0, 2, 1)), (1421, (0, 3, 1))),
    weak_girth=True,
)
# met-r0.02g: met-r0.02's degree fractions on a 4000-node base graph (28 type-1 checks
# instead of 7), so the same DE threshold; shortest weak cycle 7 / 10 nodes at 1e5 / 1e6
# bits (weight ~950 at 1e6) against met-r0.02's 6 / 6 (~570). Paired FER on the same 1e6-bit
# frames at beta 0.94: 6/64 against 16/64 (2 wrong words of distance 568 / 570); 19/200 in all.
# The rate-0.02 default since 2026-12-07 (evening); families 0 stay decodable.
_R02G = MetEnsemble(
    "met-r0.02g", 4000,
    ((64, (2, 94, 0)), (33, (3, 93, 0)), (11, (3, 94, 0)), (3892, (0, 0, 1))),
    ((20, (9, 0, 0)), (8, (10, 0, 0)), (1557, (0, 2, 1)), (2335, (0, 3, 1))),
    weak_girth=True,
)
#: discretised-DE threshold per ensemble name: (sigma that converges, (beta low, beta high))
DE_THRESHOLD: dict[str, tuple[float, tuple[float, float]]] = {
    "met-r0.10": (2.5470, (0.9670, 0.9690)),
    "met-r0.10f": (2.5228, (0.9500, 0.9520)),
    "met-r0.10g": (2.5394, (0.9616, 0.9630)),
    "met-r0.10h": (2.5443, (0.9650, 0.9665)),
    "met-r0.05": (3.6368, (0.9510, 0.9550)),
    "met-r0.02": (5.8511, (0.9630, 0.9670)),
    "met-r0.05g": (3.6605, (0.9630, 0.9635)),
    "met-r0.05h": (3.6772, (0.9715, 0.9720)),
    "met-r0.02g": (5.8614, (0.9663, 0.9667)),
}
#: every mother ensemble per design rate, indexed by the ``code_family`` number announced in
#: the public code message; new ensembles are appended, never reordered, so a recorded
#: announcement (family 0 when it names none) keeps naming the code it was decoded with
FAMILIES: dict[float, tuple[MetEnsemble, ...]] = {0.1: (_R10, _R10F, _R10G, _R10H),
                                                  0.05: (_R05, _R05G, _R05H),
                                                  0.02: (_R02, _R02G)}
#: family used for new reconciliations per design rate
DEFAULT_FAMILY: dict[float, int] = {0.1: 3, 0.05: 2, 0.02: 1}
#: default mother ensemble per design rate
ENSEMBLES: dict[float, MetEnsemble] = {r: FAMILIES[r][DEFAULT_FAMILY[r]] for r in FAMILIES}


def ensemble(rate: float, family: int | None = None) -> MetEnsemble:
    """Mother ensemble of design ``rate`` and ``family`` (None: :data:`DEFAULT_FAMILY`)."""
    if rate not in FAMILIES:
        raise ValueError(f"no mother code of rate {rate}; available: {sorted(FAMILIES)}")
    f = DEFAULT_FAMILY[rate] if family is None else int(family)
    if not 0 <= f < len(FAMILIES[rate]):
        raise ValueError(f"rate {rate}: no code family {family}; "
                         f"0 to {len(FAMILIES[rate]) - 1}")
    return FAMILIES[rate][f]


@dataclass(frozen=True, eq=False)
class LdpcCode:
    """A binary LDPC code stored check by check (CSR of the parity-check matrix).

    Attributes
    ----------
    n, m : int
        Variable and check nodes.
    check_ptr : numpy.ndarray
        int64 ``(m+1,)``: the edges of check ``c`` are ``check_ptr[c]:check_ptr[c+1]``.
    check_var : numpy.ndarray
        int32 ``(E,)``: variable node of each edge.
    edge_type : numpy.ndarray
        int8 ``(E,)``: MET edge type (0-based) of each edge.
    name : str
        Ensemble name, frame length and seed.
    """

    n: int
    m: int
    check_ptr: np.ndarray
    check_var: np.ndarray
    edge_type: np.ndarray
    name: str

    @property
    def rate(self) -> float:
        """Design rate ``1 - m/n``."""
        return 1.0 - self.m / self.n

    def syndrome(self, bits: np.ndarray) -> np.ndarray:
        """Syndrome ``H bits`` (uint8, length m) of one word of ``n`` bits."""
        b = np.asarray(bits, dtype=np.uint8)
        if b.shape != (self.n,):
            raise ValueError(f"{self.name}: word must have shape ({self.n},), got {b.shape}")
        return np.bitwise_xor.reduceat(b[self.check_var], self.check_ptr[:-1]).astype(np.uint8)


def _sockets(types: tuple[tuple[int, tuple[int, ...]], ...], t: int) -> np.ndarray:
    """Node index of every socket of edge type ``t``, nodes numbered type after type."""
    counts = np.concatenate([np.full(c, d[t], dtype=np.int64) for c, d in types])
    return np.repeat(np.arange(counts.size), counts)


def _girth_shifts(base_v: np.ndarray, base_c: np.ndarray, z: int,
                  rng: np.random.Generator, fixed: np.ndarray | None = None) -> np.ndarray:
    """Circulant shifts chosen edge by edge so that the lifted graph has no 2- or 4-cycles.

    A closed walk ``e, e_c, e_b, e_a`` (variable ``v`` -> check ``c`` -> variable ``v'`` ->
    check ``c'`` -> ``v``) of the base graph lifts to 4-cycles iff
    ``s_e - s_ec + s_eb - s_ea = 0 (mod z)`` (Fossorier, IEEE Trans. IT 50, 1788 (2004)),
    including walks through ``e`` twice over parallel base edges; parallel base edges need
    distinct shifts. The edges are placed in a random order, each
    with a random shift among those that close no such walk with the edges already placed;
    when ``z`` is too small for that, one closing the fewest. ``fixed`` (``-1``: free) holds
    shifts set beforehand (the weak edges of a ``weak_girth`` ensemble): they count as placed
    from the start.
    """
    order = rng.permutation(base_v.size)
    u = rng.random(base_v.size)
    if fixed is None:
        fixed = np.full(base_v.size, -1, dtype=np.int64)
    order = order[fixed[order] < 0]
    return _girth_shifts_nb(base_v.astype(np.int64), base_c.astype(np.int64), int(z), order, u,
                            fixed.astype(np.int64))


@njit(cache=True)
def _csr(node, count):
    """Edges grouped by node: edges of node i are ``edge[ptr[i]:ptr[i+1]]``."""
    ptr = np.zeros(count + 1, dtype=np.int64)
    for i in node:
        ptr[i + 1] += 1
    for i in range(count):
        ptr[i + 1] += ptr[i]
    fill = ptr[:-1].copy()
    edge = np.empty(node.size, dtype=np.int64)
    for e in range(node.size):
        edge[fill[node[e]]] = e
        fill[node[e]] += 1
    return ptr, edge


@njit(cache=True)
def _girth_shifts_nb(base_v, base_c, z, order, u, fixed):
    vptr, vedge = _csr(base_v, base_v.max() + 1)
    cptr, cedge = _csr(base_c, base_c.max() + 1)
    placed = fixed >= 0
    shifts = np.where(placed, fixed, 0)
    banned = np.zeros(z, dtype=np.int64)
    for e in order:
        v, c = base_v[e], base_c[e]
        banned[:] = 0
        for k in range(cptr[c], cptr[c + 1]):
            ec = cedge[k]
            if not placed[ec]:
                continue
            vp = base_v[ec]
            if vp == v:
                banned[shifts[ec]] += 1 << 40      # parallel edge: a multi-edge once lifted
            for kb in range(vptr[vp], vptr[vp + 1]):
                eb = vedge[kb]
                if eb == ec or not placed[eb]:
                    continue
                cp = base_c[eb]
                for ka in range(vptr[v], vptr[v + 1]):
                    ea = vedge[ka]
                    if ea != eb and placed[ea] and base_c[ea] == cp:
                        banned[(shifts[ec] - shifts[eb] + shifts[ea]) % z] += 1
        # walks through e twice, e p e q with p, q parallel to e: 2 s_e = s_p + s_q (mod z)
        for kp in range(vptr[v], vptr[v + 1]):
            ep = vedge[kp]
            if ep == e or not placed[ep] or base_c[ep] != c:
                continue
            for kq in range(vptr[v], vptr[v + 1]):
                eq = vedge[kq]
                if eq == e or not placed[eq] or base_c[eq] != c:
                    continue
                for sh in range(z):
                    if (2 * sh - shifts[ep] - shifts[eq]) % z == 0:
                        banned[sh] += 1
        low = banned.min()
        free = np.flatnonzero(banned == low)
        shifts[e] = free[min(int(u[e] * free.size), free.size - 1)]
        placed[e] = True
    return shifts


def _weak_forest(var: np.ndarray, chk: np.ndarray) -> bool:
    """Do the variable nodes with exactly two type-1 edges (``var[i]`` -> ``chk[i]``) form a
    forest on the type-1 checks (no cycle, no two edges into one check)? Union-find."""
    deg = np.bincount(var)
    parent = {int(c): int(c) for c in np.unique(chk)}

    def root(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for v in np.flatnonzero(deg == 2):
        a, b = (int(c) for c in chk[var == v])
        ra, rb = root(a), root(b)
        if ra == rb:                    # a cycle (a == b: both edges into one check)
            return False
        parent[ra] = rb
    return True


def _weak_peg(vs: np.ndarray, cs: np.ndarray, n_c1: int, rng: np.random.Generator,
              tries: int = 1000) -> np.ndarray:
    """Type-1 matching of a ``weak_girth`` ensemble: check of every type-1 socket.

    The weak nodes (two type-1 sockets, ``vs``) become the edges of a *weak graph* on the
    ``n_c1`` type-1 checks, placed one by one PEG-like (Hu et al. 2005 on this graph): the
    first end on a check with the most weak sockets left, the second on the check farthest
    from it (unreachable first) that is not yet its neighbour, ties by sockets left, then at
    random; every check takes ``2 n_weak / n_c1`` weak sockets (floor or ceiling); with fewer
    weak nodes than checks the result must be a forest (else redrawn). The other
    sockets of each check (``cs`` holds every check's type-1 degree) are matched to the other
    core nodes at random. Redrawn (new order) if the weak graph gets stuck.
    """
    deg = np.bincount(vs)
    weak = np.flatnonzero(deg == 2)
    cap = np.bincount(cs, minlength=n_c1)
    n_w = weak.size
    quota0 = np.full(n_c1, (2 * n_w) // n_c1)
    extra = rng.permutation(n_c1)[: 2 * n_w - quota0.sum()]
    quota0[extra] += 1
    if np.any(quota0 > cap):
        raise ValueError("type-1 checks too small for the weak nodes")
    for _ in range(tries):
        quota = quota0.copy()
        adj: list[set[int]] = [set() for _ in range(n_c1)]
        ends = np.empty((n_w, 2), dtype=np.int64)
        ok = True
        for k in range(n_w):
            left = np.flatnonzero(quota > 0)
            a = int(rng.choice(left[quota[left] == quota[left].max()]))
            dist = np.full(n_c1, n_c1 + 1)          # unreachable: farther than any path
            dist[a] = 0
            frontier = [a]
            while frontier:
                nxt = []
                for x in frontier:
                    for y in adj[x]:
                        if dist[y] > n_c1:
                            dist[y] = dist[x] + 1
                            nxt.append(y)
                frontier = nxt
            cand = np.array([c for c in left if c != a and c not in adj[a]], dtype=np.int64)
            if cand.size == 0:
                ok = False
                break
            key = dist[cand] * (quota.max() + 1) + quota[cand]
            b = int(rng.choice(cand[key == key.max()]))
            ends[k] = a, b
            adj[a].add(b)
            adj[b].add(a)
            quota[a] -= 1
            quota[b] -= 1
        # fewer weak nodes than checks: a forest (no weak cycle at any lifting) or redraw
        if ok and (n_w >= n_c1 or _weak_forest(np.repeat(np.arange(n_w), 2), ends.ravel())):
            break
    else:
        raise ValueError("no PEG placement of the weak nodes found")
    perm = np.empty(vs.size, dtype=np.int64)
    is_weak = deg[vs] == 2
    perm[np.flatnonzero(is_weak)] = ends.ravel()  # sockets of node weak[k]: 2k, 2k+1 in order
    rest = np.repeat(np.arange(n_c1), cap - quota0)
    perm[np.flatnonzero(~is_weak)] = rng.permutation(rest)
    return perm


@njit(cache=True)
def _fiber_bfs(ends, volt, placed, n_c1, z, src):
    """Distances from lifted check ``(src, 0)`` in the lifted weak graph of the placed edges
    (edge k joins ``(a_k, i)`` and ``(b_k, i + volt_k)``); -1 unreachable. Also the shortest
    cycle through ``(src, 0)`` closed by a non-tree edge (0: none)."""
    adj_ptr = np.zeros(n_c1 + 1, dtype=np.int64)
    for k in range(ends.shape[0]):
        if placed[k]:
            adj_ptr[ends[k, 0] + 1] += 1
            adj_ptr[ends[k, 1] + 1] += 1
    for c in range(n_c1):
        adj_ptr[c + 1] += adj_ptr[c]
    fill = adj_ptr[:-1].copy()
    adj_to = np.empty(adj_ptr[-1], dtype=np.int64)
    adj_dv = np.empty(adj_ptr[-1], dtype=np.int64)
    adj_id = np.empty(adj_ptr[-1], dtype=np.int64)
    for k in range(ends.shape[0]):
        if placed[k]:
            a, b = ends[k, 0], ends[k, 1]
            adj_to[fill[a]], adj_dv[fill[a]], adj_id[fill[a]] = b, volt[k], k
            fill[a] += 1
            adj_to[fill[b]], adj_dv[fill[b]], adj_id[fill[b]] = a, (z - volt[k]) % z, k
            fill[b] += 1
    dist = np.full(n_c1 * z, -1, dtype=np.int64)
    via = np.full(n_c1 * z, -1, dtype=np.int64)     # lifted edge id (k * z + copy) into it
    queue = np.empty(n_c1 * z, dtype=np.int64)
    dist[src * z] = 0
    queue[0] = src * z
    head, tail, best = 0, 1, 0
    while head < tail:
        u = queue[head]
        head += 1
        cu, iu = u // z, u % z
        for j in range(adj_ptr[cu], adj_ptr[cu + 1]):
            w = adj_to[j] * z + (iu + adj_dv[j]) % z
            k = adj_id[j]
            # the lifted copy of edge k at u, named by the copy index of its a-end
            lid = k * z + (iu if ends[k, 0] == cu else (iu + adj_dv[j]) % z)
            if lid == via[u]:
                continue
            if dist[w] < 0:
                dist[w] = dist[u] + 1
                via[w] = lid
                queue[tail] = w
                tail += 1
            elif best == 0 or dist[u] + dist[w] + 1 < best:
                best = dist[u] + dist[w] + 1
    return dist, best


def _lifted_weak_girth(ends: np.ndarray, volt: np.ndarray, n_c1: int, z: int) -> int:
    """Girth of the lifted weak graph (0: no cycle); BFS from every fibre's copy 0 suffices
    (the cyclic shift maps every lifted check onto one of them)."""
    placed = np.ones(ends.shape[0], dtype=np.bool_)
    g = 0
    for c in np.unique(ends):
        _, best = _fiber_bfs(ends, volt, placed, n_c1, z, int(c))
        if best and (g == 0 or best < g):
            g = best
    return g


def _weak_voltages(ends: np.ndarray, n_c1: int, z: int, rng: np.random.Generator,
                   tries: int = 8) -> np.ndarray:
    """Circulant shift difference of every weak node (QC-PEG on the weak graph).

    Edge by edge in a random order, the voltage ``x`` of edge ``(a, b)`` is the one whose
    lifted copy ``(a, 0) - (b, x)`` joins the two farthest lifted checks in the weak graph
    placed so far (unreachable first), ties at random: the shortest cycle it closes is as long
    as possible. ``tries`` orders; the one of the longest lifted girth is kept.
    """
    best_v, best_g = None, -1
    for _ in range(tries):
        order = rng.permutation(ends.shape[0])
        volt = np.zeros(ends.shape[0], dtype=np.int64)
        placed = np.zeros(ends.shape[0], dtype=np.bool_)
        for k in order:
            a, b = int(ends[k, 0]), int(ends[k, 1])
            dist, _ = _fiber_bfs(ends, volt, placed, n_c1, z, a)
            d = dist[b * z:(b + 1) * z].copy()
            d[d < 0] = 1 << 40
            cand = np.flatnonzero(d == d.max())
            volt[k] = int(cand[min(int(rng.random() * cand.size), cand.size - 1)])
            placed[k] = True
        g = _lifted_weak_girth(ends, volt, n_c1, z)
        g = 1 << 40 if g == 0 else g
        if g > best_g:
            best_v, best_g = volt, g
    return best_v


def build_code(ensemble: MetEnsemble, n: int, seed: int) -> LdpcCode:
    """Build the QC-lifted code of ``n`` bits of a MET ensemble, deterministically from ``seed``.

    Parameters
    ----------
    ensemble : MetEnsemble
        Base-graph node counts.
    n : int
        Frame length; a multiple of ``ensemble.base_n``.
    seed : int
        Seed of the base-graph permutations and the circulant shifts.

    Returns
    -------
    LdpcCode
    """
    ensemble.validate()
    if n <= 0 or n % ensemble.base_n:
        raise ValueError(f"{ensemble.name}: frame length {n} is not a positive multiple of "
                         f"{ensemble.base_n}")
    z = n // ensemble.base_n
    rng = np.random.default_rng(seed)
    n_types = len(ensemble.var_types[0][1])
    bv, bc, bt = [], [], []
    for t in range(n_types):
        vs = _sockets(ensemble.var_types, t)
        cs = _sockets(ensemble.check_types, t)
        perm = rng.permutation(cs)
        if ensemble.forest and t == 0:
            # redraw until the weak nodes form a forest (a base forest lifts to a forest)
            for _ in range(100_000):
                if _weak_forest(vs, perm):
                    break
                perm = rng.permutation(cs)
            else:
                raise ValueError(f"{ensemble.name}: no forest placement of the weak nodes found")
        if ensemble.weak_girth and t == 0:
            perm = _weak_peg(vs, cs, int(cs.max()) + 1, rng)
        bv.append(vs)
        bc.append(perm)
        bt.append(np.full(vs.size, t, dtype=np.int8))
    base_v, base_c, base_t = np.concatenate(bv), np.concatenate(bc), np.concatenate(bt)
    if np.bincount(base_v * ensemble.base_m + base_c).max() > z:
        raise ValueError(f"{ensemble.name}: lifting size {z} is smaller than the number of "
                         "parallel base edges")
    fixed = None
    if ensemble.weak_girth:
        # weak nodes' shifts first: QC-PEG of the lifted weak graph (long weak cycles only)
        # sockets of edge type 0 come first in base_v, so their indices are base-edge indices
        weak = np.bincount(bv[0])[bv[0]] == 2
        sock = np.flatnonzero(weak).reshape(-1, 2)          # the two sockets of each weak node
        n_c1 = int(bc[0].max()) + 1
        volt = _weak_voltages(bc[0][sock], n_c1, z, rng)
        fixed = np.full(base_v.size, -1, dtype=np.int64)
        r = rng.integers(0, z, sock.shape[0])
        fixed[sock[:, 0]] = r
        fixed[sock[:, 1]] = (r + volt) % z
    shifts = _girth_shifts(base_v, base_c, z, rng, fixed)
    i = np.arange(z, dtype=np.int64)
    var = (base_v[:, None] * z + i[None, :]).ravel()
    chk = (base_c[:, None] * z + (i[None, :] + shifts[:, None]) % z).ravel()
    etype = np.repeat(base_t, z)
    order = np.argsort(chk, kind="stable")
    m = ensemble.base_m * z
    ptr = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(np.bincount(chk, minlength=m), out=ptr[1:])
    return LdpcCode(n=n, m=m, check_ptr=ptr, check_var=var[order].astype(np.int32),
                    edge_type=etype[order], name=f"{ensemble.name}-n{n}-s{seed}")


def get_code(rate: float, n: int, seed: int, family: int | None = None) -> LdpcCode:
    """Cached :func:`build_code` of the mother ensemble of design ``rate`` (0.1, 0.05, 0.02)
    and ``family`` (None: :data:`DEFAULT_FAMILY`; see :data:`FAMILIES`)."""
    return _get_code(ensemble(rate, family), n, seed)


@lru_cache(maxsize=4)
def _get_code(ens: MetEnsemble, n: int, seed: int) -> LdpcCode:
    return build_code(ens, n, seed)
