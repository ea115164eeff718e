"""Simulator honesty: the oracle receiver recovers the truth within statistical bounds.

Statistical model of the oracle's estimates (conventions.md estimators), with
m real (x, y) pairs (2 per symbol heterodyne, 1 homodyne), per-quadrature
noise sigma2 = 1 + v_el + t^2 xi, and M_sh, M_el real matched-filter outputs
of the shot-noise and electronic-noise captures (2 per output; the outputs at
symbol spacing are independent because the RRC matched filter is Nyquist):

* sample variances: Var(S) = 2 S^2 / M for a Gaussian variance estimate S.
* N0_hat = S_sh - S_el, delta = N0_hat / N0 - 1:
  Var(delta) = 2 (1 + v_el)^2 / M_sh + 2 v_el^2 / M_el.
* t_hat = sum(xy)/sum(x^2) in SNU: t_hat = t (1 + e_t)(1 - delta/2) with
  Var(e_t) = sigma2 / (m V_A t^2)  (regression slope), so
  Var(T_hat) / T^2 = 4 sigma2 / (m V_A t^2) + Var(delta).
* sigma2_hat = sigma2 (1 + e_s)(1 - delta), Var(e_s) = 2 / m.
* v_el_hat = S_el / (S_sh - S_el):
  Var = v_el^2 (1 + v_el)^2 (2 / M_el + 2 / M_sh)  (delta method).
* xi_hat = (sigma2_hat - 1 - v_el_hat) / t_hat^2. To first order the N0 error
  cancels in sigma2_hat / t_hat^2 and in (1 + v_el_hat)/t_hat^2 all that is
  left of the calibration is the shot-capture variance error:
  xi_hat - xi = (sigma2/t^2) e_s - 2 xi e_t - (S_sh - E S_sh) / (N0 t^2), so
  Var(xi_hat) = 2 sigma2^2 / (m t^4) + 4 xi^2 sigma2 / (m V_A t^2)
                + 2 (1 + v_el)^2 / (M_sh t^4).
Bounds are 4.5 standard deviations (deterministic seeds; a false alarm of a
correct simulator would be a ~1e-5 event per comparison). Systematic errors
of the simulator (pulse normalisation, the heterodyne 3 dB, noise scaling,
quantisation noise bookkeeping, ISI) would show as many sigma: e.g. a 1 %
error in the shot-noise level moves xi_hat by 0.01/t^2 = 0.06 SNU here. That is 5.2 sd(xi)
at the hard-link cases' 4e5 symbols (heterodyne, case 1) and would be 3.9 sd at 2e5, inside
the bound: 4e5 is the smallest size at which it fails the test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from qkd_hw.sim import SimParams, oracle_receive, simulate_recording
from qkd_hw.sim.oracle import lowpass_phase
from qkd_hw.trace_io import read_truth_dataset

N_SIGMA = 4.5

# offset, linewidth, fractional delay, clock offset, non-integer sps (1 GSa/s, 150 MBaud),
# two pilots of different power
HARD = dict(sample_rate_hz=1e9, symbol_rate_hz=150e6, rolloff=0.2, signal_frequency_hz=160e6,
            pilot_frequencies_hz=(330e6, 30e6), pilot_powers_dbsn=(17.0, 10.0),
            pilot_phases_rad=(0.3, -1.2), frequency_offset_hz=-17e6, linewidth_hz=1e3,
            delay_samples=2871.37, clock_offset_ppm=25.0, shot_noise_samples=2_000_000,
            electronic_noise_samples=1_000_000)


@dataclass
class Bounds:
    sd_transmittance: float
    sd_xi: float
    sd_v: float
    sd_s2: float


def predicted_sd(p: SimParams, m: int, n_shot: int, n_el: int) -> Bounds:
    t2, xi, v, va = p.t_eff ** 2, p.excess_noise_snu, p.electronic_noise_snu, \
        p.modulation_variance_snu
    s2 = 1 + v + t2 * xi
    m_sh, m_el = 2 * n_shot, 2 * n_el
    var_delta = 2 * (1 + v) ** 2 / m_sh + 2 * v ** 2 / m_el
    sd_transmittance = p.transmittance * math.sqrt(4 * s2 / (m * va * t2) + var_delta)
    sd_xi = math.sqrt(2 * s2 ** 2 / (m * t2 ** 2) + 4 * xi ** 2 * s2 / (m * va * t2)
                      + 2 * (1 + v) ** 2 / (m_sh * t2 ** 2))
    sd_v = v * (1 + v) * math.sqrt(2 / m_el + 2 / m_sh)
    sd_s2 = s2 * math.sqrt(2 / m + var_delta)
    return Bounds(sd_transmittance, sd_xi, sd_v, sd_s2)


def check_against_truth(p: SimParams, res) -> dict[str, float]:
    b = predicted_sd(p, res.m, res.n_shot, res.n_electronic)
    s2 = 1 + p.electronic_noise_snu + p.t_eff ** 2 * p.excess_noise_snu
    z = {
        "T": (res.transmittance - p.transmittance) / b.sd_transmittance,
        "xi": (res.excess_noise_snu - p.excess_noise_snu) / b.sd_xi,
        "v_el": (res.electronic_noise_snu - p.electronic_noise_snu) / b.sd_v,
        "sigma2": (res.sigma2 - s2) / b.sd_s2,
    }
    bad = {k: v for k, v in z.items() if not abs(v) < N_SIGMA}
    assert not bad, f"estimates off by {bad} sigma; result {res}; bounds {b}"
    print("z-scores", {k: round(v, 2) for k, v in z.items()})
    return z


CASES = [
    ("heterodyne", 1, {}),
    ("heterodyne", 2, dict(transmittance=0.25, excess_noise_snu=0.01,
                           electronic_noise_snu=0.05, modulation_variance_snu=4.0)),
    ("homodyne", 3, {}),
    ("homodyne", 4, dict(transmittance=0.8, excess_noise_snu=0.05, efficiency=0.6,
                         modulation_variance_snu=2.0)),
    # wide roll-off at 5 samples/symbol, unquantised float32 ADC, small v_el
    ("heterodyne", 5, dict(symbol_rate_hz=200e6, rolloff=0.5, signal_frequency_hz=220e6,
                           pilot_frequencies_hz=(420e6, 30e6), adc_dtype="float32",
                           electronic_noise_snu=0.02)),
]


@pytest.mark.parametrize("detection, seed, extra", CASES)
def test_oracle_recovers_truth_hard_link(tmp_path, detection, seed, extra):
    p = SimParams(detection=detection, **{**HARD, **extra})
    path = tmp_path / "rec.h5"
    simulate_recording(path, p, seed=seed, n_symbols=400_000)
    res = oracle_receive(path)
    assert res.n_symbols == 400_000 and res.first_symbol == 0
    assert res.m == (2 if detection == "heterodyne" else 1) * 400_000
    check_against_truth(p, res)


def test_oracle_precision_case(tmp_path):
    """Strong signal, long calibration: xi resolved to 4e-3 SNU (sd), T to 1.5e-3 relative."""
    p = SimParams(transmittance=0.9, efficiency=0.9, excess_noise_snu=0.03,
                  modulation_variance_snu=8.0, electronic_noise_snu=0.08,
                  frequency_offset_hz=5e6, linewidth_hz=500.0, delay_samples=1234.6,
                  shot_noise_samples=8_000_000, electronic_noise_samples=2_000_000)
    path = tmp_path / "rec.h5"
    simulate_recording(path, p, seed=5, n_symbols=1_000_000)
    res = oracle_receive(path)
    b = predicted_sd(p, res.m, res.n_shot, res.n_electronic)
    assert b.sd_xi < 4.5e-3  # the case is as sharp as claimed
    check_against_truth(p, res)


def test_oracle_without_phase_dataset_regenerates_the_phase(tmp_path):
    p = SimParams(**HARD)
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    simulate_recording(a, p, seed=6, n_symbols=50_000, truth_phase=True)
    simulate_recording(b, p, seed=6, n_symbols=50_000, truth_phase=False)
    assert read_truth_dataset(b, "phase_rad") is None
    ra, rb = oracle_receive(a), oracle_receive(b)
    assert ra.excess_noise_snu == pytest.approx(rb.excess_noise_snu, abs=1e-9)
    assert ra.transmittance == pytest.approx(rb.transmittance, rel=1e-9)


def test_phase_noise_floor_receiver(tmp_path):
    """The low-passed-phase oracle loses what a residual phase error must cost.

    With a residual phase error eps (Gaussian, variance v, slow against a symbol)
    ``y = t x e^{j eps} + z`` gives ``t_hat = t c`` with ``c = E cos(eps) = e^{-v/2}``
    and ``sigma2_hat = sigma2 + t^2 V_A (1 - c^2)``, so
    ``xi_floor = (xi_exact + V_A (1 - c^2)) / c^2``. For a Wiener phase and the
    centred boxcar of N samples ``v = 2 pi linewidth N / (12 fs)``. Compared on the
    same recording (the statistical noise of both estimates is common), tolerance
    10 % of the shift: the realised v of ~4000 averaging windows scatters by
    ~2 %, and the phase wander within a pulse (~1e-3 rad^2) adds a few %.
    """
    lw, bw = 1e4, 2e5
    p = SimParams(linewidth_hz=lw, frequency_offset_hz=3e6, shot_noise_samples=1_000_000)
    path = tmp_path / "rec.h5"
    simulate_recording(path, p, seed=7, n_symbols=1_000_000)
    exact = oracle_receive(path)
    floor = oracle_receive(path, phase_lowpass_hz=bw)
    n_avg = round(p.sample_rate_hz / (2 * bw))
    v = 2 * math.pi * lw * n_avg / (12 * p.sample_rate_hz)
    c2 = math.exp(-v)
    expected = (exact.excess_noise_snu + p.modulation_variance_snu * (1 - c2)) / c2
    shift = expected - exact.excess_noise_snu
    assert shift > 0.05  # the case is sensitive
    assert floor.excess_noise_snu - exact.excess_noise_snu == pytest.approx(shift, rel=0.10)
    assert floor.transmittance / exact.transmittance == pytest.approx(c2, abs=0.1 * (1 - c2))
    # a filter as wide as the band changes nothing
    wide = oracle_receive(path, phase_lowpass_hz=p.sample_rate_hz)
    assert wide.excess_noise_snu == pytest.approx(exact.excess_noise_snu, abs=1e-12)
    # an external phase estimate: a constant 0.1 rad error costs exactly cos(0.1) in t
    theta = read_truth_dataset(path, "phase_rad")
    off = oracle_receive(path, phase_estimate_rad=theta + 0.1)
    assert off.t_eff / exact.t_eff == pytest.approx(math.cos(0.1), rel=1e-3)


def test_lowpass_phase_keeps_the_ramp_and_averages_the_walk():
    fs, df = 1e9, 12.5e6
    n = np.arange(200_000)
    rng = np.random.default_rng(8)
    walk = np.cumsum(rng.normal(0, 1e-3, n.size))
    theta = 2 * np.pi * df / fs * n + walk
    out = lowpass_phase(theta, sample_rate_hz=fs, frequency_offset_hz=df, bandwidth_hz=5e6)
    # N = 100: interior equals the centred moving average of the walk plus the exact ramp
    ref = np.convolve(walk, np.ones(100) / 100, mode="same")
    inner = slice(200, -200)
    np.testing.assert_allclose(out[inner] - 2 * np.pi * df / fs * n[inner], ref[inner],
                               atol=1e-9)
