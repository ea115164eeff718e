"""Two-party reconciliation: Bob and Alice end with the same bits; interface and validation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from qkd_hw.errors import QkdHwError, ReconciliationError
from qkd_hw.postprocessing.reconcile import (
    DESIGN_BETA,
    AliceReconciler,
    BobReconciler,
    ReconciliationParams,
    capacity,
    choose_code,
    leakage_bits,
)


def _gaussian_frame(rng, n, snr, va=5.0, t=0.4):
    """Alice's x ~ N(0, va), Bob's y = t x + z with t^2 va / Var(z) = snr."""
    x = rng.normal(size=n) * np.sqrt(va)
    y = t * x + rng.normal(size=n) * np.sqrt(t * t * va / snr)
    return x, y


@pytest.mark.parametrize(("dimension", "beta"), [(1, 0.6), (2, 0.7), (8, 0.8)])
def test_bob_and_alice_end_with_identical_bits(dimension, beta):
    # rate-0.1 code of 40000 bits at an SNR where it decodes reliably (1-D reconciliation
    # sees a fading BIAWGN channel: lower efficiency than 8-D)
    snr = 2 ** (2 * 0.1 / beta) - 1
    params = choose_code(snr, frame_bits=40000, dimension=dimension, rate=0.1)
    assert params.mother_rate == 0.1 and params.shortened == params.punctured == 0
    rng = np.random.default_rng(11)
    bob = BobReconciler(params, np.random.default_rng(12))
    alice = AliceReconciler(params)
    for _ in range(2):
        x, y = _gaussian_frame(rng, params.frame_bits, snr)
        key, message = bob.encode(y)
        assert key.dtype == np.uint8 and key.shape == (params.frame_bits,)
        assert set(message) == {"maps", "norms", "syndrome"}
        bits, iterations = alice.decode(x, message, snr)
        assert bits is not None and 0 < iterations < params.max_iterations
        np.testing.assert_array_equal(bits, key)


def test_alice_llrs_are_calibrated():
    """E[(1 - 2b) | L] = tanh(L/2) for a correct LLR: checked in bins of L."""
    snr = 0.15
    params = choose_code(snr, frame_bits=40000)
    rng = np.random.default_rng(3)
    bob = BobReconciler(params, np.random.default_rng(4))
    alice = AliceReconciler(params)
    signs, llrs = [], []
    for _ in range(5):
        x, y = _gaussian_frame(rng, params.frame_bits, snr)
        key, message = bob.encode(y)
        llrs.append(alice.llr(x, message, snr))
        signs.append(1.0 - 2.0 * key)
    s, lv = np.concatenate(signs), np.concatenate(llrs)
    edges = np.quantile(lv, np.linspace(0, 1, 11))
    for lo, hi in itertools.pairwise(edges):
        sel = (lv >= lo) & (lv < hi)
        pred = np.tanh(lv[sel] / 2).mean()
        se = np.sqrt(1.0 / sel.sum())
        assert abs(s[sel].mean() - pred) < 5 * se


def test_failure_returns_none():
    params = choose_code(0.2, frame_bits=8000, rate=0.1)
    rng = np.random.default_rng(0)
    bob = BobReconciler(params, np.random.default_rng(1))
    x, y = _gaussian_frame(rng, params.frame_bits, 0.2)
    _, message = bob.encode(y)
    x_unrelated = rng.normal(size=x.size)
    bits, iterations = AliceReconciler(params).decode(x_unrelated, message, 0.2)
    assert bits is None and iterations == params.max_iterations


def test_choose_code_targets_the_design_efficiency():
    for snr in (0.03, 0.06, 0.1, 0.15):
        p = choose_code(snr, frame_bits=40000)     # a multiple of every base graph
        assert p.frame_bits == p.code_length - p.shortened - p.punctured
        assert p.frame_bits % p.dimension == 0
        beta = p.rate / capacity(snr)
        assert DESIGN_BETA[p.mother_rate] - 0.005 < beta <= DESIGN_BETA[p.mother_rate]
        assert leakage_bits(p) == round(p.code_length * (1 - p.mother_rate)) - p.punctured
        # net key per frame = frame bits - leakage
        assert p.frame_bits - leakage_bits(p) == pytest.approx(p.rate * p.frame_bits, abs=1)


def test_shortened_frames_still_reconcile():
    p = ReconciliationParams(dimension=8, rate=(800 - 400) / (8000 - 400),
                             frame_bits=8000 - 400, max_iterations=300, mother_rate=0.1,
                             code_length=8000, shortened=400)
    rng = np.random.default_rng(9)
    bob = BobReconciler(p, np.random.default_rng(10))
    x, y = _gaussian_frame(rng, p.frame_bits, 0.2)
    key, message = bob.encode(y)
    bits, _ = AliceReconciler(p).decode(x, message, 0.2)
    np.testing.assert_array_equal(bits, key)


def test_bad_inputs_give_one_clear_error():
    params = choose_code(0.2, frame_bits=8000, rate=0.1)
    bob = BobReconciler(params, np.random.default_rng(1))
    alice = AliceReconciler(params)
    with pytest.raises(ReconciliationError, match="expected 8000 real values"):
        bob.encode(np.ones(10))
    with pytest.raises(ReconciliationError, match="NaN"):
        bob.encode(np.full(8000, np.nan))
    y = np.random.default_rng(2).normal(size=8000)
    _, message = bob.encode(y)
    with pytest.raises(ReconciliationError, match="lacks 'syndrome'"):
        alice.decode(y, {"maps": message["maps"], "norms": message["norms"]}, 0.2)
    bad = dict(message, maps=message["maps"] * 2)
    with pytest.raises(ReconciliationError, match="unit"):
        alice.decode(y, bad, 0.2)
    with pytest.raises(ReconciliationError, match="snr"):
        choose_code(float("nan"))
    with pytest.raises(ReconciliationError, match="multiple"):
        choose_code(0.1, frame_bits=1100)
    assert issubclass(ReconciliationError, QkdHwError)
