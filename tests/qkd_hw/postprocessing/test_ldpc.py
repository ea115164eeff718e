"""Layered decoder (every check rule) against exact marginals and naive references."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from qkd_hw.postprocessing.codes import FAMILIES, LdpcCode, build_code
from qkd_hw.postprocessing.ldpc import decode
from tests.qkd_hw.postprocessing.bp_reference import (
    brute_force_posterior,
    exact_check_messages,
    flooding_sum_product,
    layered_reference,
    min_sum_check_messages,
)

# a small rate-0.1 code: the 200-node base graph of family 1 lifts to 800 bits
SMALL = FAMILIES[0.1][1]


def _code_from_rows(rows, n):
    ptr = np.cumsum([0] + [len(r) for r in rows]).astype(np.int64)
    var = np.concatenate([np.array(r, dtype=np.int32) for r in rows])
    return LdpcCode(n=n, m=len(rows), check_ptr=ptr, check_var=var,
                    edge_type=np.zeros(var.size, dtype=np.int8), name="rows")


# box-plus: float32 messages and a tabulated correction (error < 1e-3 per pairwise operation)
@pytest.mark.parametrize("rule, tol", [("sum-product", 1e-9), ("box-plus", 5e-3)])
def test_posteriors_on_a_tree_code_are_the_exact_marginals(rule, tol):
    # cycle-free Tanner graph: BP is exact there; checks of degree 2 to 4 (box-plus: degree 4
    # has a kernel of its own, the others the general one); 8 frames decoded together fill
    # every lock-step lane (the vector code), each alone uses one lane (the scalar code)
    code = _code_from_rows([[0, 1, 2], [2, 3, 4, 10], [4, 5, 6], [1, 7, 8], [8, 9]], 11)
    rng = np.random.default_rng(4)
    llr = rng.normal(0.5, 1.5, (8, code.n))
    syn = rng.integers(0, 2, (8, code.m)).astype(np.uint8)
    res = decode(code, llr, syn, 30, early_stop=False, rule=rule)
    for f in range(8):
        exact = brute_force_posterior(code.check_ptr, code.check_var, llr[f], syn[f])
        np.testing.assert_allclose(res.posterior[f], exact, rtol=tol, atol=tol)
        alone = decode(code, llr[f], syn[f], 30, early_stop=False, rule=rule)
        np.testing.assert_allclose(alone.posterior[0], exact, rtol=tol, atol=tol)


@pytest.mark.parametrize("rule, messages, tol", [
    ("box-plus", exact_check_messages, 0.01),
    ("min-sum", lambda q, s: min_sum_check_messages(q, s, 0.75, 0.1), 1e-3),
])
def test_layered_rules_match_the_textbook_layered_reference(rule, messages, tol):
    # the same schedule on a loopy MET code at the operating SNR of rate 0.1 (messages far
    # from saturation): posteriors after a fixed number of iterations
    code = build_code(SMALL, 800, seed=2)
    rng = np.random.default_rng(11)
    bits = rng.integers(0, 2, code.n).astype(np.uint8)
    snr = 10 ** (-8.0 / 10)
    llr = 2 * snr * ((1.0 - 2 * bits) + rng.normal(size=code.n) / np.sqrt(snr))
    syn = code.syndrome(bits)
    res = decode(code, llr, syn, 4, early_stop=False, rule=rule, min_sum_scale=0.75,
                 min_sum_offset=0.1)
    ref = layered_reference(code.check_ptr, code.check_var, llr, syn, 4, messages)
    np.testing.assert_allclose(res.posterior[0], ref, rtol=tol, atol=tol)
    # the same frame in the last lane of a full lock-step batch (the others: other noise)
    batch = np.vstack([llr + rng.normal(size=(7, code.n)), llr])
    res8 = decode(code, batch, np.tile(syn, (8, 1)), 4, early_stop=False, rule=rule,
                  min_sum_scale=0.75, min_sum_offset=0.1)
    np.testing.assert_allclose(res8.posterior[7], ref, rtol=tol, atol=tol)


def test_lock_step_decoding_gives_each_frame_its_one_frame_result():
    # more frames than lanes (lanes refilled as frames converge), iterations from 0 (channel
    # decisions already right) to the cap (no information), SNR -8.5 to -6 dB: every frame's
    # posteriors, iterations and convergence exactly as when it is decoded alone
    code = build_code(SMALL, 800, seed=2)
    rng = np.random.default_rng(8)
    frames = 19
    bits = rng.integers(0, 2, (frames, code.n)).astype(np.uint8)
    snr = 10 ** (rng.uniform(-8.5, -6.0, (frames, 1)) / 10)
    llr = 2 * snr * ((1.0 - 2 * bits) + rng.normal(size=bits.shape) / np.sqrt(snr))
    llr[3] = rng.normal(0.0, 0.1, code.n)
    llr[5] = 30.0 * (1.0 - 2 * bits[5])
    syn = np.stack([code.syndrome(b) for b in bits])
    res = decode(code, llr, syn, 40)
    assert res.iterations[5] == 0 and not res.converged[3] and res.iterations[3] == 40
    assert len(set(res.iterations[res.converged].tolist())) > 3
    for f in range(frames):
        alone = decode(code, llr[f], syn[f], 40)
        np.testing.assert_array_equal(alone.posterior[0], res.posterior[f])
        np.testing.assert_array_equal(alone.bits[0], res.bits[f])
        assert alone.iterations[0] == res.iterations[f]
        assert alone.converged[0] == res.converged[f]


@functools.lru_cache(maxsize=2)
def _flooding_case(snr_db: float):
    """Frames at ``snr_db`` and the flooding reference's (bits, iterations) per frame; cached:
    the numpy reference is the slow part, shared by both rules."""
    code = build_code(SMALL, 800, seed=2)
    rng = np.random.default_rng(int(-snr_db))
    snr = 10 ** (snr_db / 10)
    bits = rng.integers(0, 2, (3, code.n)).astype(np.uint8)
    llr = 2 * snr * ((1.0 - 2 * bits) + rng.normal(size=bits.shape) / np.sqrt(snr))
    syn = np.stack([code.syndrome(b) for b in bits])
    ref = [flooding_sum_product(code.check_ptr, code.check_var, llr[f], syn[f], 100)[:2]
           for f in range(3)]
    return code, bits, llr, syn, ref


@pytest.mark.parametrize("rule", ["sum-product", "box-plus"])
@pytest.mark.parametrize("snr_db", [-1.0, -3.0])
def test_decoder_matches_the_flooding_reference_on_a_small_met_code(snr_db, rule):
    code, bits, llr, syn, ref = _flooding_case(snr_db)
    res = decode(code, llr, syn, 100, rule=rule)
    for f in range(3):
        ref_bits, ref_it = ref[f]
        assert ref_it > 0 and res.converged[f]
        np.testing.assert_array_equal(res.bits[f], ref_bits)
        np.testing.assert_array_equal(res.bits[f], bits[f])
        np.testing.assert_array_equal(code.syndrome(res.bits[f]), syn[f])
        assert res.iterations[f] <= ref_it       # layered needs no more iterations


def test_non_convergence_is_reported():
    code = build_code(SMALL, 800, seed=2)
    rng = np.random.default_rng(1)
    llr = rng.normal(0.0, 0.1, code.n)       # no information: cannot converge
    syn = rng.integers(0, 2, code.m).astype(np.uint8)
    res = decode(code, llr, syn, 5)
    assert not res.converged[0] and res.iterations[0] == 5
    assert not np.array_equal(code.syndrome(res.bits[0]), syn)


def test_bad_inputs_are_refused():
    code = build_code(SMALL, 800, seed=2)
    llr = np.zeros(code.n)
    syn = np.zeros(code.m, dtype=np.uint8)
    with pytest.raises(ValueError, match="columns"):
        decode(code, llr[:-1], syn)
    with pytest.raises(ValueError, match="syndrome must have shape"):
        decode(code, llr, syn[:-1])
    with pytest.raises(ValueError, match="NaN"):
        decode(code, np.full(code.n, np.nan), syn)
    with pytest.raises(ValueError, match="unknown check rule 'tanh'"):
        decode(code, llr, syn, rule="tanh")


@pytest.mark.parametrize("rule", ["box-plus", "min-sum"])
def test_huge_llrs_of_known_bits_are_handled(rule):
    # the float32 rules see 1e300 (beyond float32) and 1e30 (beyond int64 after scaling)
    code = build_code(SMALL, 800, seed=2)
    rng = np.random.default_rng(5)
    bits = rng.integers(0, 2, code.n).astype(np.uint8)
    snr = 10 ** (-1.0 / 10)
    llr = 2 * snr * ((1.0 - 2 * bits) + rng.normal(size=code.n) / np.sqrt(snr))
    known = rng.random(code.n) < 0.5
    llr[known] = np.where(bits[known] == 0, 1.0, -1.0) * rng.choice([1e30, 1e300],
                                                                     int(known.sum()))
    res = decode(code, llr, code.syndrome(bits), 100, rule=rule, min_sum_scale=0.75)
    assert res.converged[0] and np.all(np.isfinite(res.posterior))
    np.testing.assert_array_equal(res.bits[0], bits)
