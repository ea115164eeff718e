"""Every numba kernel of the receiver against a naive numpy version of itself."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dsp.carrier import rts_lengths
from dsp.kernels import (
    bernoulli_flags,
    boxcar_phase,
    fir_decimate,
    kalman_phase_forward,
    matched_filter_at,
    pilot_decimate,
    rts_smooth_block,
    rts_smooth_blocks,
)
from dsp.rrc import MatchedFilterBank, rrc_frequency_response, rrc_pulse

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


def _naive_mf(x, n0, bank: MatchedFilterBank, sps, rolloff, f_mix, tau0, period, ks, phase,
              first_order=True):
    """Direct evaluation: y_k = exp(-j phi) sum_n h(t - n) x[n] exp(-j w n), t rounded to the
    bank's phase grid, taps normalised to unit energy."""
    P, half = bank.n_phases, bank.half
    out = []
    for k in ks:
        t = tau0 + k * period
        tq = round(t * P) / P
        nc = math.floor(tq + 1e-12)
        n = np.arange(nc - half + 1, nc + half + 1)
        h = rrc_pulse((tq - n) / sps, rolloff)
        h /= np.sqrt(np.sum(h * h))
        terms = h * x[n - n0] * np.exp(-2j * np.pi * f_mix * n)
        if phase is None:
            y = np.sum(terms)
        else:
            # carrier phase psi_n ~ psi(t) + psi'(t) (n - t), applied to first order:
            # exp(-j psi_n) ~ exp(-j psi(t)) (1 + j psi'(t) (t - n))
            t0, dt, ph = phase
            grid = t0 + dt * np.arange(len(ph))
            j = int(np.clip(np.floor((tq - t0) / dt), 0, len(ph) - 2))
            slope = (ph[j + 1] - ph[j]) / dt if first_order else 0.0
            y = np.sum(terms * (1 + 1j * slope * (tq - n)))
            y *= np.exp(-1j * np.interp(tq, grid, ph))
        out.append(y)
    return np.array(out)


@pytest.mark.parametrize("sps,rolloff,span", [(10.0, 0.2, 16), (6.666666667, 0.5, 12),
                                              (4.4, 0.1, 24)])
@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_matched_filter_matches_numpy(sps, rolloff, span, dtype):
    f_mix = 0.1534567
    bank = MatchedFilterBank(samples_per_symbol=sps, rolloff=rolloff, span_symbols=span,
                             n_phases=128, mixer_cycles_per_sample=f_mix)
    n0 = 1000
    x = _adc(4000, dtype)
    tau0, period = 1000 + bank.half + 3.3719, sps * (1 + 3e-6)
    ks = np.arange(5, 5 + int((4000 - 2 * bank.half - 10) / period) - 6)
    ph = np.cumsum(RNG.normal(0, 0.3, 600))
    phase = (900.5, 9.0, ph)
    scale = None
    for first_order in (False, True):
        got = matched_filter_at(x, bank, first_sample=n0, tau0=tau0, period=period,
                                k_start=int(ks[0]), count=len(ks), phase=phase,
                                first_order=first_order)
        want = _naive_mf(x, n0, bank, sps, rolloff, f_mix, tau0, period, ks, phase, first_order)
        scale = np.sqrt(np.mean(np.abs(want) ** 2))
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * scale)
    got0 = matched_filter_at(x, bank, first_sample=n0, tau0=tau0, period=period,
                             k_start=int(ks[0]), count=len(ks))
    want0 = _naive_mf(x, n0, bank, sps, rolloff, f_mix, tau0, period, ks, None)
    np.testing.assert_allclose(got0, want0, rtol=0, atol=2e-5 * scale)


def test_matched_filter_refuses_missing_samples():
    bank = MatchedFilterBank(samples_per_symbol=10, rolloff=0.2, span_symbols=8, n_phases=16,
                             mixer_cycles_per_sample=0.1)
    with pytest.raises(ValueError, match="need samples"):
        matched_filter_at(np.zeros(200, np.int16), bank, first_sample=0, tau0=10.0, period=10.0,
                          k_start=0, count=5)


def test_bank_unit_energy_and_noise_gain():
    """Unit-energy taps: white noise of variance s2 per sample gives E|y|^2 = s2 at every
    fractional phase (what makes the SNU normalisation exact)."""
    bank = MatchedFilterBank(samples_per_symbol=6.6, rolloff=0.3, span_symbols=20, n_phases=64,
                             mixer_cycles_per_sample=0.2)
    np.testing.assert_allclose(np.sum(np.abs(bank.taps) ** 2, axis=1), 1.0, rtol=1e-12)
    x = RNG.normal(0, 100, 2_000_000).astype(np.float32)
    y = matched_filter_at(x, bank, first_sample=0, tau0=bank.half + 0.37, period=6.6,
                          k_start=0, count=300_000)
    # E|y|^2 = 2 * (real-signal variance) * sum|h|^2 / 2 ... for a real input the complex output
    # carries the full variance: E|y|^2 = s2 sum h^2 = s2; relative std 1/sqrt(n_indep)
    assert abs(np.mean(np.abs(y) ** 2) / 100**2 - 1) < 6 / np.sqrt(300_000)


def test_rrc_spectrum_is_fourier_pair_of_pulse():
    sps, b = 8.0, 0.25
    t = np.arange(-4096, 4096) / sps
    h = rrc_pulse(t, b)
    H = np.abs(np.fft.fft(np.fft.ifftshift(h)))
    f = np.fft.fftfreq(h.shape[0], 1 / sps)        # in units of the symbol rate
    want = rrc_frequency_response(f, 1.0, b)
    np.testing.assert_allclose(H / H[0], want, atol=2e-3)


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


@pytest.mark.parametrize("drift", [0.0, 0.05, -0.9])
def test_kalman_and_rts_match_naive(drift):
    # drift (rad/step): the phase crosses +-pi every 2 pi / drift steps, exercising the
    # kernel's re-wrapping of its speculative steady-state runs
    n, q, r = 2000, 1e-3, 2e-2
    phi = np.cumsum(RNG.normal(drift, np.sqrt(q), n)) + 3.0
    z = np.exp(1j * (phi + RNG.normal(0, np.sqrt(r), n)))
    got_f, got_p = kalman_phase_forward(z, phi0=3.0, p0=0.1, q=q, r=r)
    # naive: textbook scalar Kalman filter with the innovation wrapped to (-pi, pi]
    x, p, fx, fp = 3.0, 0.1, [], []
    for zz in z:
        p = p + q
        inn = np.angle(zz * np.exp(-1j * x))
        k = p / (p + r)
        x, p = x + k * inn, (1 - k) * p
        fx.append(x)
        fp.append(p)
    np.testing.assert_allclose(got_f, fx, atol=1e-9)
    np.testing.assert_allclose(got_p, fp, rtol=1e-12)
    sm = rts_smooth_block(got_f, got_p, q, got_f[-1], got_p[-1])
    xs = np.array(fx)
    ps = np.array(fp)
    want = xs.copy()
    for j in range(n - 2, -1, -1):
        c = ps[j] / (ps[j] + q)
        want[j] = xs[j] + c * (want[j + 1] - xs[j])
    np.testing.assert_allclose(sm, want, atol=1e-9)
    # and the smoother is better than the filter on this realisation (physics sanity)
    assert np.mean((sm - phi) ** 2) < np.mean((got_f - phi) ** 2)


def test_pair_moments_and_cdot_match_numpy():
    from dsp.kernels import cdot, pair_moments

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


def test_sincos_matches_numpy():
    from dsp.kernels import _sincos

    q = np.arange(-40, 41)
    phis = np.concatenate([
        q * (np.pi / 4), q * (np.pi / 4) + 1e-12, q * (np.pi / 4) - 1e-12,   # octant borders
        RNG.uniform(-np.pi, np.pi, 2000), RNG.uniform(-1e4, 1e4, 2000),
        RNG.uniform(-1.5e6, 1.5e6, 2000), [0.0, -0.0, 1e-300, np.pi, -np.pi]])
    got = np.array([_sincos(p) for p in phis])
    # np.cos/np.sin: ~0.5 ulp. The kernel: Taylor terms to r^16 (a few 1e-16) after reducing
    # by q * float64(pi/2), which errs by |q| 6.1e-17 <= 3.9e-17 |phi| (< 0.4 ulp of phi)
    tol = 4e-16 + 4.0e-17 * np.abs(phis)
    assert np.all(np.abs(got[:, 0] - np.cos(phis)) <= tol)
    assert np.all(np.abs(got[:, 1] - np.sin(phis)) <= tol)
    c, s = _sincos(np.nan)
    assert math.isnan(c) and math.isnan(s)


def test_matched_filter_large_carrier_phase_and_serial_equals_parallel():
    # an unwrapped pilot phase of ~1e5 rad (long recording, residual offset) must not cost
    # precision: the kernel reduces the angle before cos/sin
    sps, rolloff, f_mix = 10.0, 0.2, 0.173
    bank = MatchedFilterBank(samples_per_symbol=sps, rolloff=rolloff, span_symbols=16,
                             n_phases=64, mixer_cycles_per_sample=f_mix)
    x = _adc(30_000, np.int16)
    ph = 1.0e5 + np.cumsum(RNG.normal(0, 0.05, 2000))
    phase = (0.0, 16.0, ph)
    tau0, period = bank.half + 2.6, sps * (1 - 2e-6)
    ks = np.arange(0, int((30_000 - 2 * bank.half - 10) / period))
    kw = dict(first_sample=0, tau0=tau0, period=period, k_start=0, count=len(ks), phase=phase)
    got = matched_filter_at(x, bank, **kw)
    want = _naive_mf(x, 0, bank, sps, rolloff, f_mix, tau0, period, ks, phase, False)
    scale = np.sqrt(np.mean(np.abs(want) ** 2))
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * scale)
    np.testing.assert_array_equal(matched_filter_at(x, bank, parallel=False, **kw), got)


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


def test_pair_moments_short_inputs_and_masked_out_nan():
    from dsp.kernels import pair_moments

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


def test_fast_atan2_matches_numpy():
    from dsp.kernels import _atan2_array

    # magnitudes over 10 decades, all quadrants, the axes and the octant borders
    y = RNG.normal(size=200_000) * 10.0 ** RNG.uniform(-5, 5, 200_000)
    x = RNG.normal(size=200_000) * 10.0 ** RNG.uniform(-5, 5, 200_000)
    t = np.tan(np.pi / 8)
    y[:10] = [0.0, 1.0, 0.0, -1.0, 1.0, -1.0, t, -t, 1.0, 0.0]
    x[:10] = [1.0, 0.0, -1.0, 0.0, -1.0, -1.0, 1.0, -1.0, t, 0.0]
    got = np.empty_like(y)
    _atan2_array(y, x, got)
    np.testing.assert_allclose(got, np.arctan2(y, x), rtol=0, atol=3e-14)


@pytest.mark.parametrize("lookahead", [None, 512, 100, 1])
def test_rts_blocks_equal_blockwise_rts(lookahead):
    n, q, r, L = 5000, 2e-4, 1e-3, 512
    H = L if lookahead is None else lookahead
    phi = np.cumsum(RNG.normal(0.3, np.sqrt(q), n))
    z = np.exp(1j * (phi + RNG.normal(0, np.sqrt(r), n)))
    f, p = kalman_phase_forward(z, phi0=0.0, p0=r, q=q, r=r)
    nb = n // L - 1
    got = rts_smooth_blocks(f, p, q, L, nb, lookahead=lookahead)
    want = np.concatenate([rts_smooth_block(f[b * L:(b + 1) * L + H], p[b * L:(b + 1) * L + H],
                                            q, f[(b + 1) * L + H - 1], p[(b + 1) * L + H - 1])[:L]
                           for b in range(nb)])
    np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="forward estimates"):
        rts_smooth_blocks(f[:L], p[:L], q, L, 1)
    with pytest.raises(ValueError, match="lookahead"):
        rts_smooth_blocks(f, p, q, L, nb, lookahead=L + 1)


@pytest.mark.parametrize("tc", [1.2, 2.0, 30.0])
def test_rts_lookahead_of_the_design_matches_the_exact_smoother(tc):
    """The look-ahead of ``rts_lengths`` (16 tc, >= 64 blocks) must give the smoothed phase of
    a backward pass over the WHOLE record: the truncation is to decay below 1e-6 of the
    forward-vs-smoothed difference it starts from (~sqrt(p) ~ 0.03-0.3 rad here)."""
    q = 1e-4
    r = q * tc * tc
    L, H = rts_lengths(q, r)
    assert 64 <= H <= L and 16 * tc <= H
    n = 3 * L + H + 1
    phi = np.cumsum(RNG.normal(0.0, np.sqrt(q), n))
    z = np.exp(1j * (phi + RNG.normal(0, np.sqrt(r), n)))
    f, p = kalman_phase_forward(z, phi0=0.0, p0=r, q=q, r=r)
    exact = rts_smooth_block(f, p, q, f[-1], p[-1])
    got = rts_smooth_blocks(f, p, q, L, 3, lookahead=H)
    err = np.abs(got - exact[:3 * L]).max()
    start = np.abs(exact - f).max()
    assert err <= 1e-6 * start, (err, start)


def test_matched_filter_pairs_do_not_depend_on_call_boundaries():
    """At (near-)integer samples per symbol the kernel runs symbol pairs through shared taps;
    a symbol must come out bit-identical whether it was paired or not, i.e. for any split of
    the symbols into calls (the streaming pass splits them by chunk)."""
    from dsp.kernels import _pairs_share_taps

    bank = MatchedFilterBank(samples_per_symbol=10.0, rolloff=0.2, span_symbols=16,
                             n_phases=256, mixer_cycles_per_sample=0.17)
    x = _adc(60_000, np.int16)
    ph = np.cumsum(RNG.normal(0, 0.02, 3000))
    period = 10.0 * (1 + 1e-6)
    assert _pairs_share_taps(bank, period) and not _pairs_share_taps(bank, 10.0 * 1.001)
    kw = dict(first_sample=0, tau0=bank.half + 1.25, period=period, phase=(3.5, 20.0, ph))
    n = 5000
    whole = matched_filter_at(x, bank, k_start=0, count=n, **kw)
    for cut in (1, 777, 2047, 2048, 2049, 4001):
        parts = [matched_filter_at(x, bank, k_start=0, count=cut, **kw),
                 matched_filter_at(x, bank, k_start=cut, count=n - cut, **kw)]
        np.testing.assert_array_equal(np.concatenate(parts), whole)
    serial = matched_filter_at(x, bank, k_start=3, count=n - 3, parallel=False, **kw)
    np.testing.assert_array_equal(serial, whole[3:])


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_mix_down_matches_numpy(dtype):
    from dsp.kernels import mix_down

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
