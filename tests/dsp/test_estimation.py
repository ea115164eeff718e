"""dsp.estimation: streaming estimation vs naive numpy, the truth and exact statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from dsp.estimation import STAT_NAMES, PeAccumulator, estimate_parameters, z_quantile


def _link(rng, k, *, va=5.0, T=0.5, xi=0.02, eta=0.7, vel=0.05, detection="heterodyne",
          dtype=np.complex128):
    """k complex symbols through the conventions.md channel y = t x + z (both quadratures)."""
    t = math.sqrt(eta * T / 2 if detection == "heterodyne" else eta * T)
    sigma2 = 1 + vel + t * t * xi
    x = (rng.standard_normal(k) + 1j * rng.standard_normal(k)) * math.sqrt(va)
    y = t * x + (rng.standard_normal(k) + 1j * rng.standard_normal(k)) * math.sqrt(sigma2)
    return x.astype(dtype), y.astype(dtype), t, sigma2


def _naive(x, y, detection):
    """Reference estimators straight from conventions.md, on the pooled real pairs."""
    if detection == "heterodyne":
        xr = np.concatenate([x.real, x.imag]).astype(np.float64)
        yr = np.concatenate([y.real, y.imag]).astype(np.float64)
    else:
        xr, yr = x.real.astype(np.float64), y.real.astype(np.float64)
    t = np.sum(xr * yr) / np.sum(xr**2)
    return t, np.mean((yr - t * xr) ** 2), xr.size


@pytest.mark.parametrize("detection", ["heterodyne", "homodyne"])
def test_matches_naive_numpy_with_random_chunking(detection):
    rng = np.random.default_rng(11)
    x, y, _, _ = _link(rng, 100_003, detection=detection, dtype=np.complex64)
    acc = PeAccumulator(detection)
    cuts = np.sort(rng.integers(0, x.size, 40))
    for a, b in zip(np.r_[0, cuts], np.r_[cuts, x.size], strict=True):
        acc.update(x[a:b], y[a:b])  # includes empty chunks
    t_ref, s2_ref, m_ref = _naive(x, y, detection)
    eta, vel, va = 0.7, 0.05, 5.0
    est = estimate_parameters(acc, modulation_variance_snu=va, efficiency=eta,
                              electronic_noise_snu=vel, eps_pe=1e-10)
    gain = eta / 2 if detection == "heterodyne" else eta
    assert est.n_pe == m_ref == acc.n
    assert acc.n_symbols == x.size
    assert est.t_eff == pytest.approx(t_ref, rel=1e-12)
    assert est.sigma2 == pytest.approx(s2_ref, rel=1e-11)
    assert est.transmittance == pytest.approx(t_ref**2 / gain, rel=1e-12)
    assert est.excess_noise_snu == pytest.approx((s2_ref - 1 - vel) / t_ref**2, rel=1e-9)
    assert est.excess_noise_out_snu == pytest.approx(
        est.transmittance * est.excess_noise_snu, rel=1e-9)
    assert est.snr == pytest.approx(t_ref**2 * va / s2_ref, rel=1e-11)
    # the paper's bounds, with the empirical sum(x^2) in place of m V_A
    z = stats.norm.isf(0.5e-10)
    xr = np.concatenate([x.real, x.imag]) if detection == "heterodyne" else x.real
    xx = np.sum(xr.astype(np.float64) ** 2)
    assert est.z_eps == pytest.approx(z, rel=1e-12)
    assert est.t_eff_min == pytest.approx(t_ref - z * math.sqrt(s2_ref / xx), rel=1e-10)
    assert est.sigma2_max == pytest.approx(s2_ref * (1 + z * math.sqrt(2 / m_ref)), rel=1e-11)
    assert est.transmittance_min == pytest.approx(est.t_eff_min**2 / gain, rel=1e-12)
    assert est.excess_noise_max_snu == pytest.approx(
        (est.sigma2_max - 1 - vel) / est.t_eff_min**2, rel=1e-9)
    d = est.as_dict()
    assert d["transmittance"] == est.transmittance and d["n_pe"] == m_ref


def test_homodyne_ignores_imaginary_parts_and_accepts_real_arrays():
    rng = np.random.default_rng(3)
    x, y, _, _ = _link(rng, 5000, detection="homodyne")
    a, b, c = PeAccumulator("homodyne"), PeAccumulator("homodyne"), PeAccumulator("homodyne")
    a.update(x, y)
    b.update(x.real + 7j * rng.standard_normal(x.size), y.real - 3j)
    c.update(x.real, y.real)
    assert a.sums() == b.sums() == c.sums()
    assert a.n == 5000


def test_merge_equals_one_shot_and_leaves_operands_alone():
    rng = np.random.default_rng(5)
    x, y, _, _ = _link(rng, 60_000)
    one = PeAccumulator("heterodyne")
    one.update(x, y)
    parts = []
    for a, b in [(0, 7), (7, 20_000), (20_000, 20_000), (20_000, 41_234), (41_234, 60_000)]:
        p = PeAccumulator("heterodyne")
        p.update(x[a:b], y[a:b])
        parts.append(p)
    before = [p.sums() for p in parts]
    merged = parts[0].merge(parts[1]).merge(parts[2].merge(parts[3].merge(parts[4])))
    assert [p.sums() for p in parts] == before
    assert merged.n == one.n and merged.n_symbols == one.n_symbols
    for k, v in one.sums().items():
        assert merged.sums()[k] == pytest.approx(v, rel=1e-14, abs=1e-9), k
    kw = dict(modulation_variance_snu=5.0, efficiency=0.7, electronic_noise_snu=0.05)
    assert estimate_parameters(merged, **kw).excess_noise_snu == pytest.approx(
        estimate_parameters(one, **kw).excess_noise_snu, rel=1e-10)
    with pytest.raises(ValueError, match="different detection"):
        one.merge(PeAccumulator("homodyne"))


def test_compensated_sums_over_many_chunks_are_correctly_rounded():
    # 20000 chunks: a plain running float64 sum drifts by ~sqrt(#chunks) ulp or more, the
    # compensated one must equal math.fsum (exactly rounded) of the per-chunk dot products.
    rng = np.random.default_rng(8)
    acc = PeAccumulator("homodyne")
    partials = []
    for _ in range(20_000):
        x = rng.standard_normal(4) * 1e3
        y = 0.3 * x + rng.standard_normal(4)
        acc.update(x, y)
        partials.append(float(x @ y))
    exact = math.fsum(partials)
    assert abs(acc.sums()["sxy"] - exact) <= 2 * math.ulp(exact)


@pytest.mark.parametrize("detection", ["heterodyne", "homodyne"])
def test_recovers_truth_within_statistical_tolerance(detection):
    # m real pairs; t_hat has std sqrt(sigma2/(m V_A)), so T_hat = t_hat^2/g has std
    # 2 t sqrt(sigma2/(m V_A))/g; xi_hat = (sigma2_hat - 1 - v_el)/t_hat^2 is dominated by
    # sigma2_hat (std sigma2 sqrt(2/m)) -> std ~ sqrt(2/m) sigma2/t^2 (conventions.md), plus
    # the t_hat part 2 xi_noise/t * std(t) added in quadrature. 5 sigma -> false alarm ~6e-7.
    rng = np.random.default_rng(2024)
    va, T, xi, eta, vel = 5.0, 0.3, 0.03, 0.7, 0.05
    x, y, t, s2 = _link(rng, 1_000_000, va=va, T=T, xi=xi, eta=eta, vel=vel, detection=detection)
    acc = PeAccumulator(detection)
    acc.update(x, y)
    est = estimate_parameters(acc, modulation_variance_snu=va, efficiency=eta,
                              electronic_noise_snu=vel)
    m = acc.n
    g = eta / 2 if detection == "heterodyne" else eta
    sd_t = math.sqrt(s2 / (m * va))
    sd_T = 2 * t * sd_t / g
    sd_xi = math.hypot(math.sqrt(2 / m) * s2 / t**2, 2 * xi * sd_t / t)
    assert abs(est.t_eff - t) < 5 * sd_t
    assert abs(est.transmittance - T) < 5 * sd_T
    assert abs(est.excess_noise_snu - xi) < 5 * sd_xi
    assert est.t_eff_std == pytest.approx(sd_t, rel=0.01)
    assert est.alice_variance_snu == pytest.approx(va, rel=5 * math.sqrt(2 / m))
    # the bounds are on the safe side of the truth (fails with probability <= 1e-10)
    assert est.transmittance_min < T < est.transmittance_min + 20 * sd_T
    assert xi < est.excess_noise_max_snu < xi + 20 * sd_xi
    assert abs(est.residual_phase_rad) < 5 * math.sqrt(s2 / (m * va)) / t


def test_residual_phase_detects_rotation():
    rng = np.random.default_rng(9)
    x, y, t, s2 = _link(rng, 200_000)
    acc = PeAccumulator("heterodyne")
    acc.update(x, y * np.exp(0.1j))
    est = estimate_parameters(acc, modulation_variance_snu=5, efficiency=0.7,
                              electronic_noise_snu=0.05)
    # angle error ~ std(t_hat)/t per quadrature pooled
    assert est.residual_phase_rad == pytest.approx(0.1, abs=5 * math.sqrt(s2 / (acc.n * 5)) / t)
    assert est.t_eff == pytest.approx(t * math.cos(0.1), rel=0.01)


def test_confidence_bounds_cover_truth_at_the_expected_frequency():
    # Exact small-sample failure probabilities of the two one-sided bounds (Gaussian data):
    #   RSS/sigma2 ~ chi2(m-1) independent of t_hat,  (t_hat - t) sqrt(sum x^2)/sigma ~ N(0,1), so
    #   P(t_min > t)             = P(Student_{m-1} > z sqrt((m-1)/m))
    #   P(sigma2_max < sigma2)   = P(chi2_{m-1} < m / (1 + z sqrt(2/m)))
    # Both are close to eps/2 (the paper's normal approximation). Counts over n_trials must fall
    # within 4.5 binomial standard deviations (false alarm ~ 1e-5 each).
    rng = np.random.default_rng(77)
    eps, n_trials, k = 0.05, 3000, 1000       # heterodyne: m = 2000 real pairs per trial
    va, T, xi, eta, vel = 4.0, 0.4, 0.05, 0.6, 0.1
    z = z_quantile(eps)
    m = 2 * k
    p_t = stats.t.sf(z * math.sqrt((m - 1) / m), m - 1)
    p_s = stats.chi2.cdf(m / (1 + z * math.sqrt(2 / m)), m - 1)
    assert 0.7 * eps / 2 < p_t < 1.3 * eps / 2 and 0.7 * eps / 2 < p_s < 1.4 * eps / 2
    fail_t = fail_s = fail_joint = 0
    t_true = math.sqrt(eta * T / 2)
    s2_true = 1 + vel + t_true**2 * xi
    for _ in range(n_trials):
        x, y, _, _ = _link(rng, k, va=va, T=T, xi=xi, eta=eta, vel=vel)
        acc = PeAccumulator("heterodyne")
        acc.update(x, y)
        est = estimate_parameters(acc, modulation_variance_snu=va, efficiency=eta,
                                  electronic_noise_snu=vel, eps_pe=eps)
        fail_t += est.t_eff_min > t_true
        fail_s += est.sigma2_max < s2_true
        fail_joint += not (est.transmittance_min <= T and est.excess_noise_max_snu >= xi)
    for fails, p in ((fail_t, p_t), (fail_s, p_s)):
        sd = math.sqrt(n_trials * p * (1 - p))
        assert abs(fails - n_trials * p) < 4.5 * sd, (fails, n_trials * p)
    # joint: T_min <= T and xi_max >= xi whenever both one-sided bounds hold (union bound)
    p_u = p_t + p_s
    assert fail_joint <= n_trials * p_u + 4.5 * math.sqrt(n_trials * p_u)


def test_exact_bounds_cover_at_the_nominal_frequency():
    # bounds="exact" uses the Student/chi2 quantiles, so each one-sided failure probability
    # is exactly eps/2 for Gaussian data; 4.5 binomial sd as above. Small m = 200 pairs, where
    # the normal approximation is visibly off (its sigma2 bound fails with p ~ 0.047 here).
    rng = np.random.default_rng(78)
    eps, n_trials, k = 0.05, 4000, 100
    va, T, xi, eta, vel = 4.0, 0.4, 0.05, 0.6, 0.1
    m = 2 * k
    p_s_normal = stats.chi2.cdf(m / (1 + z_quantile(eps) * math.sqrt(2 / m)), m - 1)
    assert p_s_normal > 1.6 * eps / 2
    t_true = math.sqrt(eta * T / 2)
    s2_true = 1 + vel + t_true**2 * xi
    fail_t = fail_s = 0
    for _ in range(n_trials):
        x, y, _, _ = _link(rng, k, va=va, T=T, xi=xi, eta=eta, vel=vel)
        acc = PeAccumulator("heterodyne")
        acc.update(x, y)
        est = estimate_parameters(acc, modulation_variance_snu=va, efficiency=eta,
                                  electronic_noise_snu=vel, eps_pe=eps, bounds="exact")
        fail_t += est.t_eff_min > t_true
        fail_s += est.sigma2_max < s2_true
    p = eps / 2
    sd = math.sqrt(n_trials * p * (1 - p))
    assert abs(fail_t - n_trials * p) < 4.5 * sd, fail_t
    assert abs(fail_s - n_trials * p) < 4.5 * sd, fail_s
    with pytest.raises(ValueError, match="leverrier"):
        estimate_parameters(acc, modulation_variance_snu=va, efficiency=eta,
                            electronic_noise_snu=vel, bounds="bootstrap")


def test_exact_bounds_with_the_phase_fitted_on_the_same_pairs():
    # the receiver rotates Bob's pairs by arg sum conj(x) y of the disclosed pairs themselves:
    # two fitted parameters (t and the phase), so RSS/sigma2 ~ chi2(m - 2) and |t_hat| is
    # biased up by the quadrature noise. fitted_phase=True must restore the nominal failure
    # rate eps/2 of each bound; without it both fail visibly more often at m = 40 pairs
    from dsp.pe import PairMoments

    rng = np.random.default_rng(11)
    eps, n_trials, k = 0.2, 10000, 20
    va, T, xi, eta, vel = 5.0, 0.5, 0.02, 0.7, 0.1
    t_true = math.sqrt(eta * T / 2)
    s2_true = 1 + vel + t_true**2 * xi
    fails = {True: [0, 0], False: [0, 0]}
    for _ in range(n_trials):
        x, y, _, _ = _link(rng, k, va=va, T=T, xi=xi, eta=eta, vel=vel)
        pm = PairMoments()
        pm.update(x, y * np.exp(1j * rng.uniform(-np.pi, np.pi)))
        acc = pm.accumulator("heterodyne", pm.phase())
        for fitted in (True, False):
            est = estimate_parameters(acc, modulation_variance_snu=va, efficiency=eta,
                                      electronic_noise_snu=vel, eps_pe=eps, bounds="exact",
                                      fitted_phase=fitted)
            fails[fitted][0] += est.t_eff_min > t_true
            fails[fitted][1] += est.sigma2_max < s2_true
    p = eps / 2
    sd = math.sqrt(n_trials * p * (1 - p))
    for f in fails[True]:
        assert abs(f - n_trials * p) < 4.5 * sd, fails
    for f in fails[False]:   # ~0.12 instead of 0.10
        assert f - n_trials * p > 4.5 * sd, fails


def test_bounds_stay_conservative_when_noise_is_below_shot_noise_plus_vel():
    # sigma2_max - 1 - v_el < 0 (v_el over-estimated): dividing by t_min^2 would make xi_max
    # *smaller* than xi_hat; the worst case divides by t_max^2 instead.
    rng = np.random.default_rng(4)
    x, y, _, _ = _link(rng, 50_000, xi=0.0, vel=0.0)
    acc = PeAccumulator("heterodyne")
    acc.update(x, y)
    est = estimate_parameters(acc, modulation_variance_snu=5, efficiency=0.7,
                              electronic_noise_snu=0.2, eps_pe=1e-10)
    assert est.excess_noise_snu < 0
    assert est.excess_noise_max_snu >= est.excess_noise_snu
    assert est.transmittance_min <= est.transmittance


def test_lower_bound_clipped_at_zero_gives_infinite_xi_max():
    rng = np.random.default_rng(6)
    x = rng.standard_normal(20) + 1j * rng.standard_normal(20)
    y = rng.standard_normal(20) + 1j * rng.standard_normal(20)  # no correlation at all
    acc = PeAccumulator("heterodyne")
    acc.update(x, y)
    est = estimate_parameters(acc, modulation_variance_snu=1, efficiency=0.5,
                              electronic_noise_snu=0.0, eps_pe=1e-10)
    assert est.t_eff_min == 0.0 and est.transmittance_min == 0.0
    assert est.excess_noise_max_snu == math.inf


def test_input_validation():
    with pytest.raises(ValueError, match=r"heterodyne.*homodyne"):
        PeAccumulator("intradyne")
    acc = PeAccumulator("heterodyne")
    with pytest.raises(ValueError, match="equal shapes"):
        acc.update(np.ones(3, complex), np.ones(4, complex))
    with pytest.raises(ValueError, match="1-D"):
        acc.update(np.ones((2, 2), complex), np.ones((2, 2), complex))
    with pytest.raises(ValueError, match="finite"):
        acc.update(np.array([1, np.nan], complex), np.ones(2, complex))
    with pytest.raises(ValueError, match="complex"):
        acc.update(np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match="numeric"):
        PeAccumulator("homodyne").update(np.array(["a"]), np.array(["b"]))
    assert acc.n == 0  # nothing half-added by the rejected chunks
    kw = dict(modulation_variance_snu=5.0, efficiency=0.7, electronic_noise_snu=0.05)
    with pytest.raises(ValueError, match=">= 3 real pairs"):
        estimate_parameters(acc, **kw)
    acc.update(np.ones(5, complex), np.ones(5, complex))
    for eps in (0.0, 1.0, -1e-3, math.nan):
        with pytest.raises(ValueError, match=r"eps_pe.*\(0, 1\)"):
            estimate_parameters(acc, **kw, eps_pe=eps)
    for name, bad in (("efficiency", 1.2), ("efficiency", 0.0), ("electronic_noise_snu", -0.1),
                      ("modulation_variance_snu", 0.0), ("efficiency", math.inf)):
        with pytest.raises(ValueError, match=name):
            estimate_parameters(acc, **{**kw, name: bad})
    with pytest.raises(ValueError, match="all zero"):
        z0 = PeAccumulator("homodyne")
        z0.update(np.zeros(5), np.ones(5))
        estimate_parameters(z0, **kw)


def test_from_sums_round_trips_and_validates():
    rng = np.random.default_rng(12)
    x, y, _, _ = _link(rng, 1000)
    acc = PeAccumulator("heterodyne")
    acc.update(x, y)
    raw = {k: v for k, v in acc.sums().items() if k in STAT_NAMES}
    again = PeAccumulator.from_sums("heterodyne", raw, n_symbols=1000)
    assert again.sums() == acc.sums() and again.n == 2000 and again.n_symbols == 1000
    with pytest.raises(ValueError, match="missing"):
        PeAccumulator.from_sums("heterodyne", {"xr_xr": 1.0}, n_symbols=1)
    with pytest.raises(ValueError, match="real parts only"):
        PeAccumulator.from_sums("homodyne", raw, n_symbols=1000)
    with pytest.raises(ValueError, match="n_symbols"):
        PeAccumulator.from_sums("heterodyne", raw, n_symbols=-1)
