"""Boxcar tracker kernel against a naive numpy version of itself."""

from __future__ import annotations

import numpy as np

from dsp.trackers.boxcar import boxcar_phase

RNG = np.random.default_rng(12345)


def test_boxcar_phase_matches_numpy():
    z = np.exp(1j * np.cumsum(RNG.normal(0, 0.4, 3000))) * 5 + RNG.normal(0, 1, 3000)
    h, z0, n_in = 6, 100, 3100          # z[0] is block 100; blocks 0..99 already dropped
    j0, j1 = 106, 3100
    got = boxcar_phase(z, first_block=z0, n_blocks_in=n_in, out_first=j0, out_stop=j1,
                       half_window=h, last_phase=40.0)
    idx = np.arange(z0, z0 + z.shape[0])
    sums = np.array([z[(idx >= j - h) & (idx < min(j + h + 1, n_in))].sum()
                     for j in range(j0, j1)])
    want = np.unwrap(np.concatenate([[40.0], np.angle(sums)]))[1:]
    np.testing.assert_allclose(got, want, atol=1e-9)


def test_boxcar_phase_long_and_split_calls_match_numpy():
    # > several parallel runs of outputs; the same outputs computed in two calls
    n = 23_000
    z = np.exp(1j * np.cumsum(RNG.normal(0, 0.3, n))) * 3 + RNG.normal(0, 1, n)
    z = z + 1j * RNG.normal(0, 1, n)
    h = 4
    got = boxcar_phase(z, first_block=0, n_blocks_in=n, out_first=0, out_stop=n,
                       half_window=h, last_phase=0.0)
    c = np.concatenate([[0], np.cumsum(z)])
    j = np.arange(n)
    sums = c[np.minimum(j + h + 1, n)] - c[np.maximum(j - h, 0)]
    want = np.unwrap(np.concatenate([[np.angle(sums[0])], np.angle(sums)]))[1:]
    np.testing.assert_allclose(got, want, atol=1e-9)
    a = boxcar_phase(z, first_block=0, n_blocks_in=n, out_first=0, out_stop=9_999,
                     half_window=h, last_phase=0.0)
    b = boxcar_phase(z, first_block=0, n_blocks_in=n, out_first=9_999, out_stop=n,
                     half_window=h, last_phase=float(a[-1]))
    np.testing.assert_allclose(np.concatenate([a, b]), got, rtol=0, atol=1e-12)
