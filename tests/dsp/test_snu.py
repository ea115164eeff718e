"""dsp.snu: shot-noise units from the noise captures' statistics, against the analytic
formulas of conventions.md ("Units") and the empirical spread of simulated captures."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dsp.noise import NoiseStats
from dsp.snu import calibrate_snu, calibration_std, rescaled


def test_calibration_matches_the_formulas():
    sn = NoiseStats(variance=5.0, variance_std=0.3, n_symbols=100)
    el = NoiseStats(variance=1.0, variance_std=0.4, n_symbols=100)
    cal = calibrate_snu(sn, el)
    assert cal.n0 == 4.0 and cal.n0_std == pytest.approx(0.5)
    assert cal.vel == 0.25
    # first order: d(V_el/N0) = (V_sn dV_el - V_el dV_sn) / N0^2, independent dV_el, dV_sn
    analytic = math.hypot(5.0 * 0.4, 1.0 * 0.3) / 16
    assert cal.vel_std == pytest.approx(analytic, rel=1e-12)
    assert cal.scale == np.float32(0.5) and cal.scale.dtype == np.float32


def test_noiseless_electronic_capture_has_zero_vel_and_sd():
    cal = calibrate_snu(NoiseStats(2.0, 0.1, 10), NoiseStats(0.0, 0.0, 10))
    assert (cal.n0, cal.n0_std, cal.vel, cal.vel_std) == (2.0, 0.1, 0.0, 0.0)


@pytest.mark.parametrize("el_var", [3.0, 3.5])
def test_no_shot_noise_units_is_an_error(el_var):
    with pytest.raises(ValueError, match="not above the electronic noise"):
        calibrate_snu(NoiseStats(3.0, 0.1, 10), NoiseStats(el_var, 0.1, 10))


def test_standard_deviations_match_the_spread_of_simulated_captures():
    """The sds are those of the estimates over 20000 independent pairs of captures (the
    empirical sd is known to 0.5 %, the first order to ~0.1 % at 1e5 outputs). Each capture's
    per-quadrature variance is the mean of n exponentials (|y|^2 / 2 of complex Gaussian
    outputs), a Gamma(n, V/n) draw; its sd is V/sqrt(n) (NoiseMeter's estimate, to
    O(1/sqrt(n))). V_el = V_sn / 2 (v_el = 1) makes the correlation of V_el's error in v_el's
    numerator and in N0 count: without it the sd is 13 % low."""
    rng = np.random.default_rng(7)
    n, trials, v_sn, v_el = 100_000, 20_000, 2.0, 1.0
    sn_var = rng.gamma(n, v_sn / n, trials)
    el_var = rng.gamma(n, v_el / n, trials)
    runs = [calibrate_snu(NoiseStats(s, s / math.sqrt(n), n), NoiseStats(e, e / math.sqrt(n), n))
            for s, e in zip(sn_var, el_var, strict=True)]
    n0 = np.array([c.n0 for c in runs])
    vel = np.array([c.vel for c in runs])
    assert n0.mean() == pytest.approx(1.0, rel=1e-3) and vel.mean() == pytest.approx(1.0, rel=1e-3)
    assert np.mean([c.n0_std for c in runs]) == pytest.approx(n0.std(ddof=1), rel=0.02)
    assert np.mean([c.vel_std for c in runs]) == pytest.approx(vel.std(ddof=1), rel=0.02)


def test_rescaled_multiplies_variance_and_sd_by_the_square():
    s = NoiseStats(variance=3.0, variance_std=0.25, n_symbols=7)
    assert rescaled(s, 1.0) is s
    r = rescaled(s, 2.0)
    assert (r.variance, r.variance_std, r.n_symbols) == (12.0, 1.0, 7)


def test_calibration_std_formulas():
    # xi = (sigma2 - V_shot)/t^2: sd(V_shot)/N0/t^2; T ~ 1/N0: T sd(N0)/N0
    xi_sd, t_sd = calibration_std(t_eff=0.5, transmittance=0.4, shot_variance_std=0.2,
                                  n0=4.0, n0_std=0.1)
    assert xi_sd == pytest.approx(0.2 / 4.0 / 0.25) and t_sd == pytest.approx(0.4 * 0.1 / 4)
    xi_sd, t_sd = calibration_std(t_eff=0.0, transmittance=0.0, shot_variance_std=0.2,
                                  n0=4.0, n0_std=0.1)
    assert xi_sd is None and t_sd == 0.0
