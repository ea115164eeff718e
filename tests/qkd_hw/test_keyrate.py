"""qkd_hw.keyrate: physical limits, hand-derived special cases, finite size, estimates."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from dsp.estimation import PeAccumulator, estimate_parameters
from qkd_hw.errors import QkdHwError
from qkd_hw.keyrate import (
    TRANSMITTANCE_FLOOR,
    KeyRateInputError,
    asymptotic_key_rate,
    expected_bounds,
    finite_size_delta,
    finite_size_key_rate,
    key_rate_from_estimates,
    key_rate_terms,
    max_tolerable_excess_noise,
    transmittance_from_distance,
)
from qkd_hw.symplectic import entropy_g

DETS = ("heterodyne", "homodyne")
CLI_EXAMPLE = dict(modulation_variance_snu=5.0, transmittance=0.5, excess_noise_snu=0.02,
                   efficiency=0.7, electronic_noise_snu=0.05, beta=0.95)


def rate(detection, **kw):
    return asymptotic_key_rate(**{**CLI_EXAMPLE, **kw, "detection": detection})


# -- hand-derived special cases ------------------------------------------------------------------
# Pure loss (xi = 0) and ideal detector (eta = 1, v_el = 0): Eve holds the other port of a
# beam splitter, so S(E) = g(V_A (1-T)/2) (she receives (1-T) of the modulation) and, with
# Cov(x_E, x_B) = -sqrt(T(1-T)) V_A, her state conditioned on Bob's outcome has
#   homodyne:   Var(x_E|x_B) = V/(1 + T V_A), Var(p_E) = 1 + (1-T) V_A
#               -> nu = sqrt(V (1 + (1-T) V_A) / (1 + T V_A))
#   heterodyne: Var(E|B) = 1 + (1-T)V_A - T(1-T)V_A^2/(2 + T V_A) = (2 + (2-T)V_A)/(2 + T V_A)
# and chi_BE = g(V_A (1-T)/2) - g((nu - 1)/2).
def _pure_loss_chi(va, T, detection):
    V = va + 1
    if detection == "homodyne":
        nu = math.sqrt(V * (1 + (1 - T) * va) / (1 + T * va))
    else:
        nu = (2 + (2 - T) * va) / (2 + T * va)
    return entropy_g(va * (1 - T) / 2) - entropy_g((nu - 1) / 2)


@pytest.mark.parametrize("detection", DETS)
@pytest.mark.parametrize("va", [0.1, 1.0, 5.0, 40.0])
@pytest.mark.parametrize("T", [1e-3, 0.1, 0.5, 0.9])
def test_pure_loss_ideal_detector_matches_hand_derivation(detection, va, T):
    r = asymptotic_key_rate(modulation_variance_snu=va, transmittance=T, excess_noise_snu=0.0,
                            efficiency=1.0, electronic_noise_snu=0.0, beta=1.0,
                            detection=detection)
    assert r.chi_be == pytest.approx(_pure_loss_chi(va, T, detection), rel=1e-11, abs=1e-14)
    k = 1.0 if detection == "heterodyne" else 0.5
    assert r.i_ab == pytest.approx(k * math.log2(1 + T * va / (2 if k == 1 else 1)), rel=1e-13)
    # PLOB bound (Pirandola et al., Nat. Commun. 8, 15043 (2017)): no protocol beats -log2(1-T)
    assert r.key_rate_bits_per_symbol < -math.log2(1 - T)
    # reverse reconciliation beats the 3 dB limit of direct reconciliation
    assert r.key_rate_bits_per_symbol > 0


@pytest.mark.parametrize("T", [0.01, 0.3, 0.7])
def test_large_modulation_limits(T):
    # V_A -> inf in the pure-loss formulas above (g(x) -> log2(e x) for large x):
    # homodyne K -> 1/2 log2(1/(1-T)) (half the PLOB bound, the well-known coherent-state RR
    # limit); heterodyne K -> log2(T/(e(1-T))) + g((1-T)/T). Corrections are O(1/V_A):
    # Richardson's 2 K(V_A) - K(V_A/2) removes them at the largest V_A accepted.
    def k(va, detection):
        return asymptotic_key_rate(
            modulation_variance_snu=va, transmittance=T, excess_noise_snu=0.0, efficiency=1.0,
            electronic_noise_snu=0.0, beta=1.0, detection=detection).key_rate_bits_per_symbol

    hom, het = (2 * k(1e4, d) - k(5e3, d) for d in ("homodyne", "heterodyne"))
    assert hom == pytest.approx(-0.5 * math.log2(1 - T), abs=1e-6)
    assert het == pytest.approx(math.log2(T / (math.e * (1 - T))) + entropy_g((1 - T) / T),
                                abs=1e-6)


@pytest.mark.parametrize("detection", DETS)
@pytest.mark.parametrize("eta,vel", [(1.0, 0.0), (0.7, 0.05), (0.4, 0.3)])
def test_no_channel_means_no_eve(detection, eta, vel):
    # T = 1, xi = 0: Eve has nothing (trusted detector noise is not hers): chi_BE = 0 and
    # K = beta I_AB with SNR = t^2 V_A/(1 + v_el), t^2 = eta/2 (het) or eta (hom).
    r = rate(detection, transmittance=1.0, excess_noise_snu=0.0, efficiency=eta,
             electronic_noise_snu=vel)
    assert abs(r.chi_be) < 1e-13
    t2 = eta / 2 if detection == "heterodyne" else eta
    i = (1 if detection == "heterodyne" else 0.5) * math.log2(1 + t2 * 5.0 / (1 + vel))
    assert r.i_ab == pytest.approx(i, rel=1e-13)
    assert r.key_rate_bits_per_symbol == pytest.approx(0.95 * i, rel=1e-12)
    assert all(lam == pytest.approx(1.0, abs=1e-12) for lam in r.symplectic_eigenvalues)


@pytest.mark.parametrize("detection", DETS)
@pytest.mark.parametrize("va,eta,vel", [(5.0, 0.7, 0.05), (8.4, 0.68, 0.1), (2.0, 0.5, 0.0)])
def test_rate_decreases_with_excess_noise_and_with_loss(detection, va, eta, vel):
    xi = np.linspace(0.0, 0.3, 61)
    k_xi, _, _ = key_rate_terms(va, 0.3, xi, eta, vel, 0.95, detection)
    assert np.all(np.diff(k_xi) < 0)
    T = transmittance_from_distance(np.linspace(0, 150, 76))
    k_T, _, _ = key_rate_terms(va, T, 0.01, eta, vel, 0.95, detection)
    assert np.all(np.diff(k_T) < 0)  # more distance, less key
    # the vectorised path is the scalar one
    r = rate(detection, modulation_variance_snu=va, transmittance=float(T[10]),
             excess_noise_snu=0.01, efficiency=eta, electronic_noise_snu=vel)
    assert float(k_T[10]) == pytest.approx(r.key_rate_bits_per_symbol, rel=1e-14)


@pytest.mark.parametrize("detection", DETS)
def test_max_tolerable_excess_noise_is_a_root_and_monotone_in_T(detection):
    kw = dict(modulation_variance_snu=5.0, efficiency=0.7, electronic_noise_snu=0.05, beta=0.95,
              detection=detection)
    Ts = np.geomspace(1e-3, 0.999, 25)
    tol = [max_tolerable_excess_noise(**kw, transmittance=float(T)) for T in Ts]
    assert np.all(np.diff(tol) > 0)
    for T, x in zip(Ts[::6], tol[::6], strict=True):
        k = lambda xi, T=T: asymptotic_key_rate(**kw, transmittance=float(T),  # noqa: E731
                                                excess_noise_snu=xi).key_rate_bits_per_symbol
        assert abs(k(x)) < 1e-10
        assert k(0.999 * x) > 0 > k(1.001 * x)


def test_cli_example_numbers():
    # qkd-hw keyrate --modulation-variance 5 --transmittance 0.5 --excess-noise 0.02
    #   --efficiency 0.7 --electronic-noise 0.05 --beta 0.95 --detection heterodyne
    # I_AB from the conventions channel: t^2 = 0.175, SNR = 0.875/(1.05 + 0.0035)
    r = rate("heterodyne")
    snr = 0.175 * 5 / (1.05 + 0.175 * 0.02)
    assert r.snr == pytest.approx(snr, rel=1e-14)
    assert r.i_ab == pytest.approx(math.log2(1 + snr), rel=1e-14)
    assert r.chi_tot == pytest.approx(0.02 - 1 + 2 * 1.05 / 0.35, rel=1e-14)
    assert r.key_rate_bits_per_symbol == pytest.approx(0.95 * r.i_ab - r.chi_be, rel=1e-14)
    assert 0.1 < r.key_rate_bits_per_symbol < r.i_ab
    assert r.secure and not r.finite_size
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.beta = 1.0  # type: ignore[misc]
    d = r.as_dict()
    assert d["key_rate_bits_per_symbol"] == r.key_rate_bits_per_symbol and d["secure"] is True


# -- finite size ---------------------------------------------------------------------------------
def test_delta_n_value():
    # Leverrier 2010: Delta(n) = 7 sqrt(log2(2/eps_bar)/n) + 2/n log2(1/eps_PA); by hand for
    # n = 5e8, eps = 1e-10: log2(2e10) = 34.219281, sqrt(34.219281/5e8) = 2.6160764e-4,
    # x 7 = 1.8312535e-3; 2 x 33.219281/5e8 = 1.3287712e-7; total 1.8313864e-3.
    assert finite_size_delta(500_000_000) == pytest.approx(1.8313864e-3, rel=1e-6)
    assert finite_size_delta(10**6, dim_hx=4) > finite_size_delta(10**6)


@pytest.mark.parametrize("detection", DETS)
def test_finite_size_below_asymptotic_and_converges(detection):
    asym = rate(detection).key_rate_bits_per_symbol
    ks, prev = [], -math.inf
    for N in (10**7, 10**8, 10**9, 10**10, 10**12, 10**16):
        m = N // 2 * (2 if detection == "heterodyne" else 1)  # half of the symbols for PE
        r = finite_size_key_rate(**CLI_EXAMPLE, detection=detection, block_size=N, n_pe=m)
        assert r.key_fraction == pytest.approx(0.5)
        assert r.n_key == N - N // 2
        assert r.transmittance < 0.5 and r.excess_noise_snu > 0.02
        assert r.key_rate_bits_per_symbol < 0.5 * asym
        assert r.key_rate_bits_per_symbol > prev
        assert r.asymptotic_key_rate_bits_per_symbol == asym
        prev = r.key_rate_bits_per_symbol
        ks.append(r.key_rate_bits_per_symbol / r.key_fraction)
    # N = 1e16: Delta ~ 6e-7 and the bounds are ~1e-7 from the truth
    assert ks[-1] == pytest.approx(asym, abs=1e-5)
    # the rate at N is exactly (n/N) (K(T_min, xi_max) - Delta(n))
    r = finite_size_key_rate(**CLI_EXAMPLE, detection=detection, block_size=10**9, n_pe=10**8)
    worst = rate(detection, transmittance=r.transmittance, excess_noise_snu=r.excess_noise_snu)
    assert r.key_rate_bits_per_symbol == pytest.approx(
        r.key_fraction * (worst.key_rate_bits_per_symbol - r.delta_n), rel=1e-13)


def test_expected_bounds_are_the_papers_formulas():
    # heterodyne, m = 1e6 real pairs: t^2 = 0.175, sigma2 = 1.05 + 0.175*0.02
    z = 6.466951087240516  # -ndtri(0.5e-10)
    t = math.sqrt(0.175)
    s2 = 1.05 + 0.175 * 0.02
    t_min = t - z * math.sqrt(s2 / (1e6 * 5.0))
    s2_max = s2 * (1 + z * math.sqrt(2 / 1e6))
    T_min, xi_max = expected_bounds(**{k: v for k, v in CLI_EXAMPLE.items() if k != "beta"},
                                    detection="heterodyne", n_pe=10**6)
    assert T_min == pytest.approx(t_min**2 / 0.35, rel=1e-12)
    assert xi_max == pytest.approx((s2_max - 1.05) / t_min**2, rel=1e-12)


def test_tiny_block_cannot_certify_a_key():
    r = finite_size_key_rate(**CLI_EXAMPLE, detection="heterodyne", block_size=40, n_pe=20)
    assert r.key_rate_bits_per_symbol == -math.inf and not r.secure
    assert r.transmittance == 0.0


def test_key_rate_from_estimates_of_simulated_block():
    rng = np.random.default_rng(31)
    va, T, xi, eta, vel = 5.0, 0.5, 0.02, 0.7, 0.05
    t = math.sqrt(eta * T / 2)
    s2 = 1 + vel + t * t * xi
    k_pe = 200_000
    x = (rng.standard_normal(k_pe) + 1j * rng.standard_normal(k_pe)) * math.sqrt(va)
    y = t * x + (rng.standard_normal(k_pe) + 1j * rng.standard_normal(k_pe)) * math.sqrt(s2)
    acc = PeAccumulator("heterodyne")
    acc.update(x, y)
    est = estimate_parameters(acc, modulation_variance_snu=va, efficiency=eta,
                              electronic_noise_snu=vel, eps_pe=1e-10)
    a = key_rate_from_estimates(est, beta=0.95)
    assert a.transmittance == est.transmittance and a.excess_noise_snu == max(
        est.excess_noise_snu, 0.0)
    N = 10**6
    f = key_rate_from_estimates(est, beta=0.95, block_size=N)
    assert f.n_pe == 2 * k_pe and f.n_key == N - k_pe and f.eps_pe == 1e-10
    assert f.transmittance == est.transmittance_min
    assert f.excess_noise_snu == est.excess_noise_max_snu
    worst = rate("heterodyne", transmittance=est.transmittance_min,
                 excess_noise_snu=est.excess_noise_max_snu)
    assert f.key_rate_bits_per_symbol == pytest.approx(
        (N - k_pe) / N * (worst.key_rate_bits_per_symbol - finite_size_delta(N - k_pe)),
        rel=1e-12)
    # the planning bounds describe what a block really gives: T_min from the data and from
    # the truth differ by the fluctuation of T_hat (sd 2 t sqrt(s2/(m V_A))/(eta/2))
    T_min_exp, xi_max_exp = expected_bounds(modulation_variance_snu=va, transmittance=T,
                                            excess_noise_snu=xi, efficiency=eta,
                                            electronic_noise_snu=vel, detection="heterodyne",
                                            n_pe=acc.n)
    sd_T = 2 * t * math.sqrt(s2 / (acc.n * va)) / (eta / 2)
    assert abs(est.transmittance_min - T_min_exp) < 5 * sd_T
    assert est.excess_noise_max_snu > xi and xi_max_exp > xi


@pytest.mark.parametrize("detection", DETS)
def test_rate_is_accurate_down_to_the_transmittance_floor(detection):
    # pure loss and a trusted detector: I_AB and chi_BE are both linear in T as T -> 0, so
    # K/T converges; at the floor it must still agree with T = 1e-6 (at T = 1e-15, where
    # rounding dominated, K even had the wrong sign)
    def k_over_t(T):
        r = rate(detection, transmittance=T, excess_noise_snu=0.0, efficiency=1.0)
        return r.key_rate_bits_per_symbol / T
    assert k_over_t(TRANSMITTANCE_FLOOR) == pytest.approx(k_over_t(1e-6), rel=1e-4)


def _estimates_from_sums(t2, s2, va, eta, vel, m):
    """Estimates of m heterodyne pairs whose sums are exactly their expectations."""
    sxx = m * va
    sums = dict(xr_xr=sxx / 2, xi_xi=sxx / 2, xr_yr=math.sqrt(t2) * sxx / 2,
                xi_yi=math.sqrt(t2) * sxx / 2, yr_yr=(t2 * va + s2) * m / 2,
                yi_yi=(t2 * va + s2) * m / 2, xr_yi=0.0, xi_yr=0.0, xr=0.0, xi=0.0, yr=0.0,
                yi=0.0)
    acc = PeAccumulator.from_sums("heterodyne", sums, m // 2)
    return estimate_parameters(acc, modulation_variance_snu=va, efficiency=eta,
                               electronic_noise_snu=vel)


def test_transmittance_above_one_keeps_the_measured_output_noise():
    # eta claimed 0.5, true eta 0.7 at T = 0.9: T_hat = 1.26 > 1. T is clipped to 1, and the
    # excess noise must then carry all of the output noise the data certify, t^2 xi =
    # sigma2 - 1 - v_el (keeping xi itself would model 1/T_min of it: a higher rate)
    va, eta, vel, m = 5.0, 0.5, 0.1, 2_000_000
    t2 = 0.7 * 0.9 / 2
    est = _estimates_from_sums(t2, 1 + vel + t2 * 0.05, va, eta, vel, m)
    assert est.transmittance_min > 1
    f = key_rate_from_estimates(est, beta=0.95, block_size=10 * m)
    assert f.transmittance == 1.0
    assert eta / 2 * f.excess_noise_snu == pytest.approx(est.sigma2_max - 1 - vel, rel=1e-12)
    a = key_rate_from_estimates(est, beta=0.95)
    assert a.transmittance == 1.0
    assert eta / 2 * a.excess_noise_snu == pytest.approx(est.sigma2 - 1 - vel, rel=1e-12)
    # and the rate is below the one at (1, xi_max), which the old clipping reported
    lax = rate("heterodyne", transmittance=1.0, excess_noise_snu=est.excess_noise_max_snu,
               efficiency=eta, electronic_noise_snu=vel)
    assert f.key_rate_bits_per_symbol < f.key_fraction * (lax.key_rate_bits_per_symbol
                                                          - f.delta_n)


def test_transmittance_below_the_floor_certifies_no_key():
    # T = 2e-8 from 6e9 pairs: T_min ~ 6e-9, positive but below the floor
    est = _estimates_from_sums(2e-8 * 0.35, 1.1, 5.0, 0.7, 0.1, 6_000_000_000)
    assert 0 < est.transmittance_min < TRANSMITTANCE_FLOOR
    f = key_rate_from_estimates(est, beta=0.95, block_size=10**10)
    assert f.key_rate_bits_per_symbol == -math.inf and not f.secure


# -- validation ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name,bad", [
    ("transmittance", -0.5), ("transmittance", 0.0), ("transmittance", 1.2),
    ("efficiency", 1.5), ("efficiency", 0.0), ("electronic_noise_snu", -0.1),
    ("excess_noise_snu", -0.01), ("modulation_variance_snu", 0.0), ("beta", 1.1),
    ("beta", 0.0), ("transmittance", math.nan), ("efficiency", "abc"),
    # below 80 dB the closed forms lose their precision (chi_BE ~ T from O(1) terms)
    ("transmittance", 0.5 * TRANSMITTANCE_FLOOR),
])
def test_out_of_range_parameters_raise_named_errors(name, bad):
    with pytest.raises(KeyRateInputError, match=name.split("_")[0]) as info:
        asymptotic_key_rate(**{**CLI_EXAMPLE, name: bad}, detection="heterodyne")
    assert isinstance(info.value, QkdHwError) and isinstance(info.value, ValueError)


def test_bad_detection_and_finite_size_arguments():
    with pytest.raises(KeyRateInputError, match=r"heterodyne.*homodyne"):
        asymptotic_key_rate(**CLI_EXAMPLE, detection="intradyne")
    fs = dict(**CLI_EXAMPLE, detection="homodyne")
    with pytest.raises(KeyRateInputError, match="block_size"):
        finite_size_key_rate(**fs, block_size=100, n_pe=100)
    with pytest.raises(KeyRateInputError, match="eps_pe"):
        finite_size_key_rate(**fs, block_size=10**6, n_pe=10**5, eps_pe=0.0)
    with pytest.raises(KeyRateInputError, match="eps_pa"):
        finite_size_key_rate(**fs, block_size=10**6, n_pe=10**5, eps_pa=1.0)
    with pytest.raises(KeyRateInputError, match="n_pe"):
        finite_size_key_rate(**fs, block_size=10**6, n_pe=0)
    with pytest.raises(KeyRateInputError, match="n_key"):
        finite_size_key_rate(**fs, block_size=10**6, n_pe=10**5, n_key=2 * 10**6)
