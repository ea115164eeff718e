"""The RRC pulse, its truncation and normalisation, against independent references."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qkd_hw.sim import pulse, waveform
from qkd_hw.sim.oracle import matched_filter
from qkd_hw.sim.simulate import TABLE_PHASES


def raised_cosine_spectrum(nu: np.ndarray, beta: float) -> np.ndarray:
    """|P(nu)|^2 of the RRC (nu in symbol rates), unit area: the textbook raised cosine."""
    a = np.abs(nu)
    out = np.where(a <= (1 - beta) / 2, 1.0, 0.0)
    mid = (a > (1 - beta) / 2) & (a <= (1 + beta) / 2)
    out[mid] = 0.5 * (1 + np.cos(np.pi / beta * (a[mid] - (1 - beta) / 2)))
    return out


@pytest.mark.parametrize("beta", [0.05, 0.2, 0.5, 1.0])
def test_rrc_spectrum_is_root_raised_cosine(beta):
    # an independent check of the closed form: its Fourier transform squared is the
    # raised cosine. Long window (400 symbols, tails ~ 1/t^2) and 32 samples/symbol.
    r, half = 32, 200
    u = np.arange(-half * r, half * r) / r
    p = pulse.rrc(u, beta)
    spec = np.abs(np.fft.fftshift(np.fft.fft(np.fft.ifftshift(p)))) ** 2 / r ** 2
    nu = np.fft.fftshift(np.fft.fftfreq(u.size, 1 / r))
    ref = raised_cosine_spectrum(nu, beta)
    # the truncation at 200 symbols ripples the spectrum by ~1e-3 near the band edges
    assert np.max(np.abs(spec - ref)) < 5e-3
    assert abs(np.sum(p ** 2) / r - 1) < 1e-3  # unit energy


@pytest.mark.parametrize("beta", [0.1, 0.25, 1.0])
def test_rrc_continuous_at_its_singular_points(beta):
    u0 = 1 / (4 * beta)
    v = pulse.rrc(np.array([u0 - 1e-6, u0, u0 + 1e-6, 0.0, 1e-7]), beta)
    assert abs(v[1] - v[0]) < 1e-5 and abs(v[1] - v[2]) < 1e-5
    assert abs(v[3] - v[4]) < 1e-9


def test_rrc_rejects_zero_rolloff():
    with pytest.raises(ValueError, match="rolloff"):
        pulse.rrc(np.zeros(3), 0.0)


@pytest.mark.parametrize("beta, half", [(0.2, 16), (0.05, 40), (1.0, 4)])
def test_truncated_pulse_has_unit_energy(beta, half):
    r = 2048
    u = np.arange(-half * r, half * r + 1) / r
    e = np.sum(pulse.truncated_rrc(u, beta, half) ** 2) / r
    assert abs(e - 1) < 1e-4  # rectangle rule with 2 discontinuous edges
    assert pulse.truncated_rrc(np.array([half + 1e-9]), beta, half)[0] == 0.0


def test_auto_span_meets_its_isi_bound():
    for beta, va in [(0.2, 5.0), (0.1, 8.4), (0.5, 1.0)]:
        span = pulse.auto_span_symbols(beta, va)
        assert va * pulse.truncation_isi(beta, span // 2) <= pulse.AUTO_SPAN_ISI_SNU
        if span > 16:  # the next shorter candidate does not
            assert va * pulse.truncation_isi(beta, span // 2 - 2) > pulse.AUTO_SPAN_ISI_SNU
    assert pulse.auto_span_symbols(0.2, 5.0) == 32


@pytest.mark.parametrize("sps, beta, half", [(10.0, 0.2, 16), (6.66663, 0.2, 16),
                                             (4.3, 0.5, 8)])
def test_noise_free_waveform_through_matched_filter_returns_the_symbols(sps, beta, half):
    """Pulse normalisation end to end: synthesis -> matched filter at the true instants.

    The residual is the truncation ISI (``isi(beta, L)`` of the symbol power) plus the
    nearest-phase error of the 1024-phase synthesis table, timing error uniform in
    +-1/2048 symbol: power ``E|u|^2 * int p'^2 / (12 * 1024^2)`` with
    ``int p'^2 <= (pi (1 + beta))^2 / 3`` (the spectrum's second moment) -- a few 1e-7.
    """
    rng = np.random.default_rng(11)
    k = 3000
    u = rng.normal(size=k) + 1j * rng.normal(size=k)  # E|u|^2 = 2
    delay = half * sps + 17.25
    n = math.ceil(delay + (k - 1) * sps + half * sps) + 2
    table = pulse.polyphase_table(beta, half, TABLE_PHASES) / math.sqrt(sps)
    pad = 2 * half + 4  # sample 0 is about half a span before symbol 0's window
    sym = np.concatenate([np.zeros(pad), u, np.zeros(pad)])
    common = dict(delay=delay, sps=sps, k_base=-pad, symbols=sym, table=table,
                  amplitude=1.0, signal_cycles_per_sample=0.0, pilot_cycles_per_sample=[],
                  pilot_amplitudes=[], pilot_phases=[], noise=np.zeros(n), noise_std=0.0)
    re, _ = waveform.synthesize(0, n, phase=np.zeros(n), **common)           # Re{s}
    im, _ = waveform.synthesize(0, n, phase=np.full(n, -np.pi / 2), **common)  # Re{-j s}
    y = matched_filter(re + 1j * im, delay + np.arange(k) * sps, rolloff=beta, half_span=half,
                       sps=sps)
    inner = slice(2 * half, k - 2 * half)  # symbols with full neighbours on both sides
    gain = np.vdot(u[inner], y[inner]).real / np.vdot(u[inner], u[inner]).real
    resid = np.mean(np.abs(y[inner] - u[inner]) ** 2) / 2.0
    quant = (math.pi * (1 + beta)) ** 2 / 3 / (12 * TABLE_PHASES ** 2)
    bound = pulse.truncation_isi(beta, half) + quant
    assert abs(gain - 1) < 1e-4
    assert resid < 3 * bound  # sample variance of ~3000 terms: within a factor of 3
