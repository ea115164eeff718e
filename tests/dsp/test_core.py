"""Shared numeric helpers (branch-free sincos/atan2) against numpy."""

from __future__ import annotations

import math

import numpy as np

from dsp.core import atan2_array, sincos

RNG = np.random.default_rng(12345)


def test_sincos_matches_numpy():
    q = np.arange(-40, 41)
    phis = np.concatenate([
        q * (np.pi / 4), q * (np.pi / 4) + 1e-12, q * (np.pi / 4) - 1e-12,   # octant borders
        RNG.uniform(-np.pi, np.pi, 2000), RNG.uniform(-1e4, 1e4, 2000),
        RNG.uniform(-1.5e6, 1.5e6, 2000), [0.0, -0.0, 1e-300, np.pi, -np.pi]])
    got = np.array([sincos(p) for p in phis])
    # np.cos/np.sin: ~0.5 ulp. The kernel: Taylor terms to r^16 (a few 1e-16) after reducing
    # by q * float64(pi/2), which errs by |q| 6.1e-17 <= 3.9e-17 |phi| (< 0.4 ulp of phi)
    tol = 4e-16 + 4.0e-17 * np.abs(phis)
    assert np.all(np.abs(got[:, 0] - np.cos(phis)) <= tol)
    assert np.all(np.abs(got[:, 1] - np.sin(phis)) <= tol)
    c, s = sincos(np.nan)
    assert math.isnan(c) and math.isnan(s)


def test_fast_atan2_matches_numpy():
    # magnitudes over 10 decades, all quadrants, the axes and the octant borders
    y = RNG.normal(size=200_000) * 10.0 ** RNG.uniform(-5, 5, 200_000)
    x = RNG.normal(size=200_000) * 10.0 ** RNG.uniform(-5, 5, 200_000)
    t = np.tan(np.pi / 8)
    y[:10] = [0.0, 1.0, 0.0, -1.0, 1.0, -1.0, t, -t, 1.0, 0.0]
    x[:10] = [1.0, 0.0, -1.0, 0.0, -1.0, -1.0, 1.0, -1.0, t, 0.0]
    got = np.empty_like(y)
    atan2_array(y, x, got)
    np.testing.assert_allclose(got, np.arctan2(y, x), rtol=0, atol=3e-14)


def test_cdot_of_real_arrays_is_the_complex_sum_bit_for_bit():
    """Two real inputs take a real loop; its value is the complex kernel's on the same
    numbers widened to complex128 (the streaming phase fit depends on these bits)."""
    from dsp.core import cdot

    rng = np.random.default_rng(11)
    for n in [*range(0, 40), 1000, 65_536, 100_001]:
        for dtype in (np.float64, np.float32):
            a = (np.arange(n) - (n - 1) / 2).astype(dtype)
            b = (rng.normal(size=n) * rng.uniform(0.1, 100)).astype(dtype)
            ref = cdot(a.astype(np.complex128), b.astype(np.complex128))
            got = cdot(a, b)
            assert got.real == ref.real and got.imag == 0.0
    assert cdot(np.ones(3), np.array([1.0, 2.0, 3.5])) == 6.5
