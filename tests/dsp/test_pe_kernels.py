"""PE kernels (pair moments, cdot, Bernoulli flags) against naive numpy versions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dsp.core import cdot
from dsp.pe import PairMoments, bernoulli_flags, pair_moments

RNG = np.random.default_rng(12345)


def test_pair_moments_and_cdot_match_numpy():
    x = (RNG.normal(size=1001) + 1j * RNG.normal(size=1001)).astype(np.complex64)
    y = RNG.normal(size=1001) + 1j * RNG.normal(size=1001)
    outer, first = pair_moments(x, y)
    v = np.stack([x.real, x.imag, y.real, y.imag]).astype(np.float64)
    np.testing.assert_allclose(outer, v @ v.T, rtol=1e-12)
    np.testing.assert_allclose(first, v.sum(axis=1), rtol=1e-12, atol=1e-12)
    assert cdot(x, y) == pytest.approx(np.vdot(x.astype(np.complex128), y), rel=1e-12)
    x2 = x.astype(np.complex128)
    assert cdot(y, x) == pytest.approx(np.vdot(y, x2), rel=1e-12)
    assert cdot(x, x) == pytest.approx(np.vdot(x2, x2), rel=1e-12)
    assert cdot(x.real, y) == pytest.approx(np.vdot(x2.real, y), rel=1e-12)
    with pytest.raises(ValueError, match="equal length"):
        cdot(x, y[:-1])
    m = RNG.random(1001) < 0.3
    outer, first = pair_moments(x, y, m, scale=0.5)
    w = np.stack([x.real, x.imag, 0.5 * y.real, 0.5 * y.imag]).astype(np.float64)[:, m]
    np.testing.assert_allclose(outer, w @ w.T, rtol=1e-12)
    np.testing.assert_allclose(first, w.sum(axis=1), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="complex"):
        pair_moments(x.real, y)


@pytest.mark.parametrize("n", [1, 37, 5000])
def test_pair_moments_serial_path_is_bit_identical_to_the_parallel_kernel(n):
    # short blocks skip the parallel region (PARALLEL_MIN_SYMBOLS) with the same task ranges:
    # a block's sums must not depend on which path summed them
    from dsp.pe import _PM_TASKS, _pair_moments, _pair_moments_serial

    x = (RNG.normal(size=n) + 1j * RNG.normal(size=n)).astype(np.complex64)
    y = (RNG.normal(size=n) + 1j * RNG.normal(size=n)).astype(np.complex64)
    m = RNG.random(n) < 0.5
    par, ser = np.zeros((_PM_TASKS, 14)), np.zeros((_PM_TASKS, 14))
    _pair_moments(x, y, m, True, 0.7, par)
    _pair_moments_serial(x, y, m, True, 0.7, ser)
    assert np.array_equal(par, ser)


def test_pair_moments_short_inputs_and_masked_out_nan():
    for n in (1, 3, 9, 17):
        x = (RNG.normal(size=n) + 1j * RNG.normal(size=n)).astype(np.complex64)
        y = (RNG.normal(size=n) + 1j * RNG.normal(size=n)).astype(np.complex64)
        outer, first = pair_moments(x, y, scale=2.0)
        v = np.stack([x.real, x.imag, 2 * y.real, 2 * y.imag]).astype(np.float64)
        np.testing.assert_allclose(outer, v @ v.T, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(first, v.sum(axis=1), rtol=1e-12, atol=1e-12)
    # a NaN in a pair that is not disclosed does not enter the sums; a disclosed one does
    x = np.ones(40, np.complex64)
    y = np.ones(40, np.complex64)
    y[7] = np.nan
    m = np.ones(40, bool)
    m[7] = False
    outer, first = pair_moments(x, y, m)
    assert np.all(np.isfinite(outer)) and first[2] == 39.0
    m[7] = True
    outer, first = pair_moments(x, y, m)
    assert np.isnan(first[2]) and np.isnan(outer[2, 2])


def _splitmix64_naive(z: int) -> int:
    m = (1 << 64) - 1
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def test_bernoulli_flags_match_naive_splitmix_and_are_fair():
    seed, p = 1234, 0.3
    key = _splitmix64_naive(seed ^ 0x5DEECE66D)
    thr = math.floor(p * 2.0**53)
    idx = [0, 1, 2, 999_999, 2**40 + 5]
    want = [(_splitmix64_naive((key + (i + 1) * 0x9E3779B97F4A7C15) & ((1 << 64) - 1)) >> 11)
            < thr for i in idx]
    got = [bool(bernoulli_flags(i, i + 1, probability=p, seed=seed)[0]) for i in idx]
    assert got == want
    n = 1_000_000
    f = bernoulli_flags(0, n, probability=p, seed=seed)
    np.testing.assert_array_equal(f[123:4567], bernoulli_flags(123, 4567, probability=p,
                                                               seed=seed))
    assert abs(f.mean() - p) < 5 * math.sqrt(p * (1 - p) / n)
    # no serial correlation between neighbours (5 sd of the null distribution, 1/sqrt(n))
    a = f.astype(float) - f.mean()
    assert abs(np.dot(a[1:], a[:-1]) / np.dot(a, a)) < 5 / math.sqrt(n)
    assert not bernoulli_flags(0, n, probability=0.0, seed=seed).any()
    assert bernoulli_flags(0, 100, probability=1.0, seed=seed).all()
    with pytest.raises(ValueError, match="probability"):
        bernoulli_flags(0, 5, probability=1.5, seed=0)


def test_accumulator_of_non_finite_moments_is_refused_as_such():
    """A NaN in Bob's outputs must be named as a non-finite sum (the hand-rolled fill of the
    accumulator let it through to a misleading "Alice's symbols are all zero")."""
    x = RNG.normal(size=1000) + 1j * RNG.normal(size=1000)
    y = x.copy()
    y[3] = np.nan
    m = PairMoments()
    m.update(x, y)
    for detection in ("heterodyne", "homodyne"):
        with pytest.raises(ValueError, match="sums must be finite"):
            m.accumulator(detection, 0.0)
