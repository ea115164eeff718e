"""Matched-filter kernel and bank against naive numpy versions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dsp.matched_filter import matched_filter_at, pairs_share_taps
from dsp.rrc import MatchedFilterBank, rrc_frequency_response, rrc_pulse

RNG = np.random.default_rng(12345)


def _adc(n, dtype):
    if dtype == np.float32:
        return RNG.normal(0, 300, n).astype(np.float32)
    hi = 100 if dtype == np.int8 else 2000
    return RNG.integers(-hi, hi, n).astype(dtype)


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


def test_matched_filter_pairs_do_not_depend_on_call_boundaries():
    """At (near-)integer samples per symbol the kernel runs symbol pairs through shared taps;
    a symbol must come out bit-identical whether it was paired or not, i.e. for any split of
    the symbols into calls (the streaming pass splits them by chunk)."""
    bank = MatchedFilterBank(samples_per_symbol=10.0, rolloff=0.2, span_symbols=16,
                             n_phases=256, mixer_cycles_per_sample=0.17)
    x = _adc(60_000, np.int16)
    ph = np.cumsum(RNG.normal(0, 0.02, 3000))
    period = 10.0 * (1 + 1e-6)
    assert pairs_share_taps(bank, period) and not pairs_share_taps(bank, 10.0 * 1.001)
    kw = dict(first_sample=0, tau0=bank.half + 1.25, period=period, phase=(3.5, 20.0, ph))
    n = 5000
    whole = matched_filter_at(x, bank, k_start=0, count=n, **kw)
    for cut in (1, 777, 2047, 2048, 2049, 4001):
        parts = [matched_filter_at(x, bank, k_start=0, count=cut, **kw),
                 matched_filter_at(x, bank, k_start=cut, count=n - cut, **kw)]
        np.testing.assert_array_equal(np.concatenate(parts), whole)
    serial = matched_filter_at(x, bank, k_start=3, count=n - 3, parallel=False, **kw)
    np.testing.assert_array_equal(serial, whole[3:])


def test_one_compilation_of_the_matched_filter_kernel():
    """numba caches a kernel under its Python function: two dispatchers of one function (a
    parallel and a serial one) shared one cache entry, and the variant compiled first in a
    fresh cache was loaded for both (after a serial compile the streaming pass ran on one
    thread, and the results depended on the cache's history). One dispatcher per function,
    and the small calls give the large calls' bits."""
    from numba.core.registry import CPUDispatcher

    from dsp import matched_filter as mf
    from dsp.rrc import MatchedFilterBank

    per_function: dict[int, set[int]] = {}
    for v in vars(mf).values():
        if isinstance(v, CPUDispatcher):
            per_function.setdefault(id(v.py_func), set()).add(id(v))
    assert all(len(d) == 1 for d in per_function.values())

    rng = np.random.default_rng(4)
    x = rng.integers(-2000, 2000, 30_000).astype(np.int16)
    bank = MatchedFilterBank(samples_per_symbol=10.0, rolloff=0.2, span_symbols=24,
                             n_phases=256, mixer_cycles_per_sample=0.21, taper=5.0)
    kw = {"first_sample": 0, "tau0": 200.3, "period": 10.0, "k_start": 0, "count": 2500,
          "phase": (0.0, 64.0, np.cumsum(rng.normal(0, 0.05, 30_000 // 64 + 2)))}
    a = mf.matched_filter_at(x, bank, parallel=True, **kw)
    b = mf.matched_filter_at(x, bank, parallel=False, **kw)
    assert np.array_equal(a.view(np.uint64), b.view(np.uint64))
