"""MET-LDPC construction: the built graphs realise the ensembles exactly."""

from __future__ import annotations

import numpy as np
import pytest

from qkd_hw.postprocessing.codes import ENSEMBLES, MetEnsemble, build_code


def _degree_histograms(code, n_types):
    """Per node, the number of edges of each type -> Counter of degree tuples (var, check)."""
    edge_check = np.repeat(np.arange(code.m), np.diff(code.check_ptr))
    var_deg = np.zeros((code.n, n_types), dtype=np.int64)
    chk_deg = np.zeros((code.m, n_types), dtype=np.int64)
    np.add.at(var_deg, (code.check_var, code.edge_type), 1)
    np.add.at(chk_deg, (edge_check, code.edge_type), 1)

    def hist(deg):
        keys, counts = np.unique(deg, axis=0, return_counts=True)
        return {tuple(int(v) for v in k): int(c) for k, c in zip(keys, counts, strict=True)}

    return hist(var_deg), hist(chk_deg)


def _spec(types, z):
    out: dict[tuple[int, ...], int] = {}
    for count, degs in types:
        out[degs] = out.get(degs, 0) + count * z
    return out


@pytest.mark.parametrize("rate", sorted(ENSEMBLES))
def test_built_code_has_the_ensemble_degree_distribution(rate):
    ens = ENSEMBLES[rate]
    z = 20
    code = build_code(ens, ens.base_n * z, seed=3)
    n_types = len(ens.var_types[0][1])
    var_hist, chk_hist = _degree_histograms(code, n_types)
    assert var_hist == _spec(ens.var_types, z)
    assert chk_hist == _spec(ens.check_types, z)
    assert code.n == ens.base_n * z
    assert code.rate == pytest.approx(rate, abs=1e-12)
    # no multi-edges: each (check, variable) pair at most once
    edge_check = np.repeat(np.arange(code.m), np.diff(code.check_ptr))
    pairs = edge_check.astype(np.int64) * code.n + code.check_var
    assert np.unique(pairs).size == pairs.size


def test_construction_is_deterministic_from_the_seed():
    ens = ENSEMBLES[0.1]
    a = build_code(ens, 4000, seed=7)
    b = build_code(ens, 4000, seed=7)
    c = build_code(ens, 4000, seed=8)
    assert np.array_equal(a.check_var, b.check_var)
    assert np.array_equal(a.check_ptr, b.check_ptr)
    assert not np.array_equal(a.check_var, c.check_var)


def test_syndrome_is_h_times_the_word():
    code = build_code(ENSEMBLES[0.1], 2000, seed=1)
    h = np.zeros((code.m, code.n), dtype=np.int64)
    edge_check = np.repeat(np.arange(code.m), np.diff(code.check_ptr))
    h[edge_check, code.check_var] = 1
    word = np.random.default_rng(0).integers(0, 2, code.n).astype(np.uint8)
    np.testing.assert_array_equal(code.syndrome(word), (h @ word) % 2)


def test_unbalanced_ensemble_and_bad_length_are_refused():
    bad = MetEnsemble("bad", 2, ((2, (3,)),), ((1, (5,)),))
    with pytest.raises(ValueError, match="edge type 1"):
        build_code(bad, 20, 0)
    with pytest.raises(ValueError, match="multiple of 200"):
        build_code(ENSEMBLES[0.1], 1100, 0)


def _four_cycle_pairs(code) -> int:
    """Pairs of variable nodes sharing two or more checks (each such pair closes a 4-cycle)."""
    from scipy import sparse

    rows = np.repeat(np.arange(code.m), np.diff(code.check_ptr))
    h = sparse.csr_matrix((np.ones(rows.size, dtype=np.int32), (rows, code.check_var)),
                          shape=(code.m, code.n))
    g = (h.T @ h).tocoo()
    off = g.row < g.col
    return int((g.data[off] >= 2).sum())


@pytest.mark.parametrize("rate", [0.1, 0.05])
def test_lifted_code_has_no_four_cycles(rate):
    # 1e5 bits (rate 0.1: its default length); the rate-0.02 base graph has only 28
    # core nodes of degree ~93 and needs its default lifting size 1000 (no 4-cycle there,
    # checked outside the suite: the product H^T H of a 1e6-bit code takes ~10 s)
    ens = ENSEMBLES[rate]
    code = build_code(ens, 100_000, seed=20111213)
    assert _four_cycle_pairs(code) == 0


@pytest.mark.parametrize("rate", sorted(ENSEMBLES))
def test_small_frame_of_each_code_decodes_at_a_comfortable_snr(rate):
    from qkd_hw.postprocessing.ldpc import decode

    ens = ENSEMBLES[rate]
    code = build_code(ens, max(ens.base_n * 20, 20_000), seed=20111213)
    snr = 2 ** (2 * code.rate / 0.75) - 1           # beta 0.75
    rng = np.random.default_rng(5)
    bits = rng.integers(0, 2, (2, code.n)).astype(np.uint8)
    sigma = 1 / np.sqrt(snr)
    llr = 2 * ((1.0 - 2.0 * bits) + sigma * rng.normal(size=bits.shape)) / sigma**2
    res = decode(code, llr, np.stack([code.syndrome(b) for b in bits]), 200)
    assert res.converged.all()
    np.testing.assert_array_equal(res.bits, bits)
