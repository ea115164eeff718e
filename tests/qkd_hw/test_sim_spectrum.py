"""The spectrum of a simulated trace against the analytic expectation.

Signal model (simulate.py): ``x[n] = S Re{s[n] e^{j psi_n}} + pilots + white noise`` with
``s = sum_k u_k g(n - c_k)``, unit-energy pulse ``g`` (sum g^2 = 1) and E|u|^2 =
2 (V_A + xi). Per sample ``E|s|^2 = E|u|^2 / sps`` with the raised-cosine shape
``RC(nu)`` (nu in symbol rates, unit area), so the one-sided density of the quantum
band is ``P_q(f) = (S^2 / 2) (E|u|^2 / sps) RC((f - f_s - df) / Rs) / Rs``: flat at
``(S^2/2) E|u|^2 / fs`` for ``|f - f_c| < (1 - beta) Rs / 2``, half of that at
``Rs / 2``, zero beyond ``(1 + beta) Rs / 2``. A pilot ``A cos(...)`` carries ``A^2 / 2``.
The white noise floor is measured on the shot-noise capture (same noise level).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.signal import welch

from qkd_hw.sim import SimParams, simulate_recording
from qkd_hw.trace_io import TraceReader

NPERSEG = 2048


@pytest.fixture(scope="module")
def spectra(tmp_path_factory):
    p = SimParams(symbol_rate_hz=100e6, rolloff=0.3, signal_frequency_hz=150e6,
                  pilot_frequencies_hz=(260e6, 40e6), pilot_powers_dbsn=(17.0, 12.0),
                  frequency_offset_hz=7e6, linewidth_hz=1e3, delay_samples=777.7,
                  clock_offset_ppm=-40.0, shot_noise_samples=2_000_000)
    path = tmp_path_factory.mktemp("spec") / "rec.h5"
    simulate_recording(path, p, seed=21, n_symbols=200_000)
    with TraceReader(path) as rd:
        sig = rd.read("signal").astype(np.float64)
        shot = rd.read("shot_noise").astype(np.float64)
    fs = p.sample_rate_hz
    f, psd = welch(sig, fs, nperseg=NPERSEG, detrend=False)
    _, floor = welch(shot, fs, nperseg=NPERSEG, detrend=False)
    return p, f, psd, floor


def test_noise_floor_matches_shot_capture(spectra):
    p, f, psd, floor = spectra
    clean = (f > 400e6) & (f < 480e6)  # no band, no pilot
    ratio = psd[clean].mean() / floor[clean].mean()
    assert ratio == pytest.approx(1.0, abs=0.02)
    # and the floor is the analytic white level: (sigma_shot^2 + sigma_el^2) / (fs / 2)
    level = p.adc_shot_noise_rms_codes ** 2 * (1 + p.electronic_noise_snu) / (p.sample_rate_hz / 2)
    assert floor[clean].mean() == pytest.approx(level, rel=0.02)


def test_quantum_band_position_height_and_width(spectra):
    p, f, psd, floor = spectra
    rs, beta = p.symbol_rate_hz, p.rolloff
    fc = p.signal_frequency_hz + p.frequency_offset_hz
    excess = psd - floor
    e_u2 = 2 * (p.modulation_variance_snu + p.excess_noise_snu)
    flat = p.signal_amplitude_codes ** 2 / 2 * e_u2 / p.sample_rate_hz
    nu = (f - fc) / rs
    inner = np.abs(nu) < 0.8 * (1 - beta) / 2
    assert excess[inner].mean() == pytest.approx(flat, rel=0.04)
    edge = np.abs(np.abs(nu) - 0.5) < 0.02  # raised cosine is 1/2 at Rs / 2
    assert excess[edge].mean() == pytest.approx(0.5 * flat, rel=0.12)
    df = f[1] - f[0]
    outside = (np.abs(nu) > (1 + beta) / 2 + 4 * df / rs) & (np.abs(nu) < 0.9)
    # per-bin scatter of the two estimates is ~4 % of flat; the mean over ~30 bins is not
    assert abs(excess[outside].mean()) < 0.03 * flat
    # occupied bandwidth: the excess integrates to flat * Rs (unit-area raised cosine)
    band = np.abs(nu) < 0.9
    assert np.sum(excess[band]) * df == pytest.approx(flat * rs, rel=0.03)
    # the band is centred on f_s + df: first moment of the excess
    centre = np.sum(f[band] * excess[band]) / np.sum(excess[band])
    assert abs(centre - fc) < 0.01 * rs


def test_pilots_at_offset_frequency_with_their_power(spectra):
    p, f, psd, floor = spectra
    df = f[1] - f[0]
    for fp, amp in zip(p.pilot_frequencies_hz, p.pilot_amplitudes_codes, strict=True):
        target = fp + p.frequency_offset_hz
        near = np.abs(f - target) < 20 * df
        peak = f[near][np.argmax(psd[near])]
        assert abs(peak - target) <= df
        win = np.abs(f - target) <= 8 * df  # Hann leakage is within +-2 bins
        power = np.sum(psd[win] - floor[win]) * df
        assert power == pytest.approx(amp ** 2 / 2, rel=0.03)
        # and nothing at the nominal (offset-free) frequency: 7 MHz is 14 bins away
        nominal = np.abs(f - fp) <= 2 * df
        assert psd[nominal].max() < 1e-3 * psd[near].max()
    assert math.isclose(p.pilot_powers_dbsn[0], 17.0)
