"""Pilot stage kernel against a naive numpy version of itself."""

from __future__ import annotations

import numpy as np
import pytest

from dsp.pilot import pilot_decimate

RNG = np.random.default_rng(12345)


def _adc(n, dtype):
    if dtype == np.float32:
        return RNG.normal(0, 300, n).astype(np.float32)
    hi = 100 if dtype == np.int8 else 2000
    return RNG.integers(-hi, hi, n).astype(dtype)


@pytest.mark.parametrize("dtype", [np.int16, np.int8, np.float32])
@pytest.mark.parametrize("D", [1, 7, 64])
def test_pilot_decimate_matches_numpy(dtype, D):
    fs, f = 1e9, 251.234567e6
    n0 = 12345                       # absolute index of x[0]: oscillator uses absolute time
    x = _adc(5000, dtype)
    j0 = -(-n0 // D)                 # first whole block inside x
    nj = (n0 + x.shape[0]) // D - j0
    got = pilot_decimate(x, fs, frequency_hz=f, decimation=D, first_sample=n0, first_block=j0,
                         n_blocks=nj)
    n = np.arange(n0, n0 + x.shape[0])
    mixed = x.astype(np.float64) * np.exp(-2j * np.pi * f / fs * n)
    want = np.array([mixed[(j * D - n0):(j * D - n0 + D)].mean() for j in range(j0, j0 + nj)])
    # float32 partial sums: each term rounds at 2^-24 relative, at most ~D terms add up
    tol = 2.0**-24 * np.abs(x.astype(np.float64)).max() * max(D, 2) ** 0.5 * 2
    np.testing.assert_allclose(got, want, rtol=0, atol=tol)


def test_pilot_decimate_rejects_out_of_range():
    with pytest.raises(ValueError, match="outside samples"):
        pilot_decimate(np.zeros(100, np.int16), 1e9, frequency_hz=1e8, decimation=10,
                       first_sample=0, first_block=5, n_blocks=6)
    with pytest.raises(ValueError, match="int16, int8, float32"):
        pilot_decimate(np.zeros(100, np.int64), 1e9, frequency_hz=1e8, decimation=10,
                       first_sample=0, first_block=0, n_blocks=1)
