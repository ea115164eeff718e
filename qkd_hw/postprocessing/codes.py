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
(each base edge becomes a ``Z x Z`` circulant with a random shift, parallel base edges get
distinct shifts so the lifted graph has no multi-edges). This is the protograph/QC lifting of
Thorpe (IPN PR 42-154, 2003) applied to a random MET base graph; no girth optimisation (PEG or
shift search) is done.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = ["ENSEMBLES", "LdpcCode", "MetEnsemble", "build_code", "get_code"]


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
    """

    name: str
    base_n: int
    var_types: tuple[tuple[int, tuple[int, ...]], ...]
    check_types: tuple[tuple[int, tuple[int, ...]], ...]

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


# Degrees: the structure of Jouguet et al. (2011), rate 0.1 with their variable-node split
# 0.0775 / 0.0475 / 0.875 (core nodes with 2 or 3 type-1 edges, degree-one nodes). The type-2
# degrees (3 core edges per degree-one check, hence 21 type-2 edges per core node; at the
# lower rates a 40/60 mix of 2 and 3 core edges per degree-one check) and the type-1 check
# degrees 11/12 are chosen here so that every edge type balances; they were selected by short
# decoding simulations, not optimised by density evolution (the published tables were not
# available in this session). Rates 0.05 and 0.02: core fraction 1/16 and 1/40.
_R10 = MetEnsemble(
    "met-r0.10", 400,
    ((31, (2, 21, 0)), (19, (3, 21, 0)), (350, (0, 0, 1))),
    ((1, (11, 0, 0)), (9, (12, 0, 0)), (350, (0, 3, 1))),
)
_R05 = MetEnsemble(
    "met-r0.05", 1600,
    ((62, (2, 39, 0)), (38, (3, 39, 0)), (1500, (0, 0, 1))),
    ((2, (11, 0, 0)), (18, (12, 0, 0)), (600, (0, 2, 1)), (900, (0, 3, 1))),
)
_R02 = MetEnsemble(
    "met-r0.02", 1000,
    ((15, (2, 101, 0)), (10, (3, 101, 0)), (975, (0, 0, 1))),
    ((5, (12, 0, 0)), (400, (0, 2, 1)), (575, (0, 3, 1))),
)
#: mother ensembles by design rate
ENSEMBLES: dict[float, MetEnsemble] = {0.1: _R10, 0.05: _R05, 0.02: _R02}


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
                  rng: np.random.Generator) -> np.ndarray:
    """Circulant shifts chosen edge by edge so that the lifted graph has no 2- or 4-cycles.

    A closed walk ``e, e_c, e_b, e_a`` (variable ``v`` -> check ``c`` -> variable ``v'`` ->
    check ``c'`` -> ``v``) of the base graph lifts to 4-cycles iff
    ``s_e - s_ec + s_eb - s_ea = 0 (mod z)`` (Fossorier, IEEE Trans. IT 50, 1788 (2004));
    parallel base edges need distinct shifts. Each edge gets a random shift among those that
    close no such walk with the edges already placed; when ``z`` is too small for that, one
    closing the fewest.
    """
    n_e = base_v.size
    shifts = np.zeros(n_e, dtype=np.int64)
    var_edges: dict[int, list[int]] = {}
    chk_edges: dict[int, list[int]] = {}
    pair: dict[tuple[int, int], list[int]] = {}
    for e in rng.permutation(n_e):
        v, c = int(base_v[e]), int(base_c[e])
        banned = np.zeros(z, dtype=np.int64)
        for ec in chk_edges.get(c, ()):
            vp = int(base_v[ec])
            if vp == v:
                banned[shifts[ec]] += 1 << 40    # parallel edge: a multi-edge once lifted
            for eb in var_edges[vp]:
                if eb == ec:
                    continue
                for ea in pair.get((v, int(base_c[eb])), ()):
                    if ea != eb:
                        banned[(shifts[ec] - shifts[eb] + shifts[ea]) % z] += 1
        free = np.flatnonzero(banned == banned.min())
        shifts[e] = free[rng.integers(free.size)]
        var_edges.setdefault(v, []).append(int(e))
        chk_edges.setdefault(c, []).append(int(e))
        pair.setdefault((v, c), []).append(int(e))
    return shifts


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
        bv.append(vs)
        bc.append(rng.permutation(cs))
        bt.append(np.full(vs.size, t, dtype=np.int8))
    base_v, base_c, base_t = np.concatenate(bv), np.concatenate(bc), np.concatenate(bt)
    if np.bincount(base_v * ensemble.base_m + base_c).max() > z:
        raise ValueError(f"{ensemble.name}: lifting size {z} is smaller than the number of "
                         "parallel base edges")
    shifts = _girth_shifts(base_v, base_c, z, rng)
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


@lru_cache(maxsize=4)
def get_code(rate: float, n: int, seed: int) -> LdpcCode:
    """Cached :func:`build_code` of the mother ensemble of design ``rate`` (0.1, 0.05, 0.02)."""
    if rate not in ENSEMBLES:
        raise ValueError(f"no mother code of rate {rate}; available: {sorted(ENSEMBLES)}")
    return build_code(ENSEMBLES[rate], n, seed)
