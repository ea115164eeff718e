"""Synchronisation down-conversion kernels against naive numpy versions."""

from __future__ import annotations

import numpy as np
import pytest

from dsp.downconvert import fir_decimate, mix_down

RNG = np.random.default_rng(12345)


def _adc(n, dtype):
    if dtype == np.float32:
        return RNG.normal(0, 300, n).astype(np.float32)
    hi = 100 if dtype == np.int8 else 2000
    return RNG.integers(-hi, hi, n).astype(dtype)


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_mix_down_matches_numpy(dtype):
    x = _adc(50_000, dtype)
    ph = np.cumsum(RNG.normal(0, 0.3, 1500))
    t0, dt = 250.5, 28.0           # grid starts inside x and ends before its end: held
    f, fs = 171.234567e6, 1e9
    got = mix_down(x, fs, frequency_hz=f, phase=(t0, dt, ph))
    n = np.arange(x.shape[0])
    want = x.astype(np.float64) * np.exp(-1j * (2 * np.pi * f / fs * n
                                                + np.interp(n, t0 + dt * np.arange(1500), ph)))
    assert got.dtype == np.complex64
    # complex64 output: rounding <= 2^-24 |x| per part (6e-8); 2e-6 leaves the margin for
    # float64 phase differences (< 1e-9 rad) many times over, far below any wrong phase
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * np.abs(x).max())
    with pytest.raises(ValueError, match="2 points"):
        mix_down(x, fs, frequency_hz=f, phase=(0.0, 1.0, ph[:1]))


@pytest.mark.parametrize("n, R, N", [(1000, 4, 31), (1001, 5, 47), (7, 3, 9), (64, 1, 5)])
def test_fir_decimate_matches_numpy_convolution(n, R, N):
    x = (RNG.normal(size=n) + 1j * RNG.normal(size=n)).astype(np.complex64)
    h = RNG.normal(size=N).astype(np.float32)
    full = np.convolve(x.astype(np.complex128), h[::-1].astype(np.float64))
    # out[m] = sum_i h[i] x[R m + i - c] = full[R m + N - 1 - c] (np.convolve: sum_i h'[j-i] x[i])
    c = (N - 1) // 2
    want = full[np.arange(-(-n // R)) * R + N - 1 - c]
    got = fir_decimate(x, h, R)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * np.abs(want).max())
    with pytest.raises(ValueError, match="odd"):
        fir_decimate(x, h[:-1], R)
