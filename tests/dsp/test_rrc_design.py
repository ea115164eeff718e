"""The matched filter's default taps against the truncation bound (analytic, no simulation)
and the least-squares design against a direct solve of its normal equations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dsp.options import ReceiverOptions
from dsp.rrc import STOP_GUARD_SYMBOL_RATES, MatchedFilterBank, ls_matched_taps, rrc_pulse
from qkd_hw.sim.pulse import auto_span_symbols, truncated_rrc

VA = 5.0    # the DSP-penalty table's modulation variance (SNU)


def _terms(bank: MatchedFilterBank, rolloff: float, sps: float) -> tuple[float, float, float]:
    """(V_A ISI in SNU, mismatch loss 1 - q0^2, worst stop band in dB) of the bank's taps
    against the simulator's transmit pulse (its own truncated-RRC code, automatic span)."""
    half_tx = auto_span_symbols(rolloff, VA) // 2
    d = np.arange(-bank.half + 1, bank.half + 1, dtype=np.float64)
    span = bank.span_symbols
    j = np.arange(-(half_tx + span), half_tx + span + 1)
    isi = loss = 0.0
    stop = -np.inf
    nf = 1 << 15
    f = np.arange(nf // 2 + 1) / nf * sps                  # symbol rates
    beyond = f >= (1 + rolloff) / 2 + STOP_GUARD_SYMBOL_RATES
    for p in range(bank.n_phases):
        tau = p / bank.n_phases - d
        h = bank.taps[p].real                              # mixer 0: the real taps
        q = truncated_rrc(j[:, None] - tau[None, :] / sps, rolloff, half_tx) @ h / math.sqrt(sps)
        q0 = q[half_tx + span]
        isi += VA * (np.sum(q * q) - q0 * q0) / q0**2 / bank.n_phases
        loss += (1 - q0 * q0) / bank.n_phases
        hf = np.abs(np.fft.rfft(h, nf)) ** 2 / sps         # |H|^2 / pass band
        stop = max(stop, 10 * math.log10(hf[beyond].max()))
    return isi, loss, stop


@pytest.mark.parametrize("rolloff,sps", [(0.1, 6.667), (0.2, 10.0), (0.3, 10.0), (0.35, 4.0),
                                         (0.5, 20.0)])
def test_default_span_meets_the_truncation_bound(rolloff, sps):
    """The default span and taps (benchmarks/dsp_penalty.md, "matched-filter span"): ISI
    < 0.01 mSNU at V_A 5, mismatch loss < 5e-4, stop band < -80 dB from 0.15 Rs beyond the
    band edge (a 22 dB pilot there leaks < 0.05 mSNU). The Kaiser-tapered RRC of the same
    span leaves 0.3-8 mSNU of ISI (the previous default, twice as long, 0.02-0.12)."""
    opt = ReceiverOptions()
    bank = MatchedFilterBank(samples_per_symbol=sps, rolloff=rolloff,
                             span_symbols=opt.span(rolloff), n_phases=8,
                             mixer_cycles_per_sample=0.0, taper=opt.taper)
    isi, loss, stop = _terms(bank, rolloff, sps)
    assert isi < 1e-5 and loss < 5e-4 and stop < -80.0, (isi, loss, stop)


def test_ls_taps_solve_their_normal_equations():
    """Naive twin: each row is A^-1 p_0 (unit energy) with A = V_A sum_j p_j p_j^T
    + 1e4 S + 1e-2 I built and solved directly, at designed and at interpolated offsets."""
    sps, b, half, n_ph = 6.6, 0.25, 40, 256
    g = ls_matched_taps(sps, b, half, n_ph)
    d = np.arange(-half + 1, half + 1, dtype=np.float64)
    f1 = ((1 + b) / 2 + STOP_GUARD_SYMBOL_RATES) / sps
    ff = np.linspace(f1, 0.5, 20001)                      # S by the trapezoid rule
    w = np.full(ff.size, ff[1] - ff[0])
    w[[0, -1]] /= 2
    lags = np.arange(-2 * half + 1, 2 * half)
    s_lag = 2 * np.cos(2 * np.pi * lags[:, None] * ff[None, :]) @ w
    s = s_lag[(d[:, None] - d[None, :]).astype(int) + 2 * half - 1]
    jj = np.arange(-30, 31)
    for p in (0, 5, 64, 127, 128, 200, 255):
        pulses = rrc_pulse(jj[:, None] - (p / n_ph - d[None, :]) / sps, b) / math.sqrt(sps)
        a = VA * pulses.T @ pulses + 1e4 * s + 1e-2 * np.eye(d.size)
        want = np.linalg.solve(a, pulses[30])
        want /= np.linalg.norm(want)
        np.testing.assert_allclose(g[p], want, rtol=0, atol=3e-5 * np.abs(want).max())
    assert not g.flags.writeable
