"""qkd_hw.keyrate at the edges of its numerical domain, against a 120-digit reference.

The reference (tests/qkd_hw/keyrate_reference.py) evaluates the textbook closed forms with
``decimal`` at 120 digits, independently of the cancellation-free float64 rearrangements.
"""

from __future__ import annotations

import itertools
import math
import warnings
from decimal import Decimal, localcontext

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qkd_hw.keyrate import (
    MODULATION_VARIANCE_MAX,
    NOISE_MAX,
    TRANSMITTANCE_FLOOR,
    KeyRateInputError,
    asymptotic_key_rate,
    finite_size_delta,
    finite_size_key_rate,
    holevo_bound,
    max_tolerable_excess_noise,
)
from tests.qkd_hw.keyrate_reference import reference

DETS = ("heterodyne", "homodyne")
EXAMPLE = dict(modulation_variance_snu=5.0, transmittance=0.5, excess_noise_snu=0.02,
               efficiency=0.7, electronic_noise_snu=0.05, beta=0.95, detection="heterodyne")
#: relative precision of the symplectic eigenvalues inside the domain (measured worst 7e-9)
EIG_RTOL = 1e-8


def _rate(**kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a numpy warning inside the domain is a failure
        return asymptotic_key_rate(**{**EXAMPLE, **kw})


def _check_against_reference(r):
    ref = reference(r.modulation_variance_snu, r.transmittance, r.excess_noise_snu,
                    r.efficiency, r.electronic_noise_snu, r.beta, r.detection)
    lams = np.array(r.symplectic_eigenvalues)
    assert np.all(np.isfinite(lams)) and np.all(lams >= 1 - EIG_RTOL)
    np.testing.assert_allclose(lams, ref["lams"], rtol=EIG_RTOL)
    assert math.isfinite(r.key_rate_bits_per_symbol)
    assert r.chi_be >= 0 and r.key_rate_bits_per_symbol <= r.beta * r.i_ab
    assert abs(r.key_rate_bits_per_symbol - ref["k"]) <= r.rounding_error_bits
    if r.secure:  # a key only where the exact rate is positive too
        assert ref["k"] > 0


# -- issue 12: the reviewer's inputs ----------------------------------------------------------
@pytest.mark.parametrize("kw,needle", [
    # eta T = 1e-16: K 1.2e-14 > I_AB 3.6e-16, chi_BE < 0, secure (the floor bypassed by eta)
    (dict(transmittance=1e-8, efficiency=1e-8, excess_noise_snu=0.0,
          electronic_noise_snu=0.0, beta=1.0), r"efficiency \* transmittance"),
    (dict(efficiency=1e-300), r"efficiency \* transmittance"),       # K -2.298, null eigenvalues
    (dict(electronic_noise_snu=1e300), r"electronic_noise_snu must be in \[0, 1e\+06\]"),
    (dict(excess_noise_snu=1e300), r"excess_noise_snu must be in \[0, 1e\+06\]"),    # K NaN
    (dict(modulation_variance_snu=1e300), r"modulation_variance_snu must be in \(0, 10000\]"),
    (dict(modulation_variance_snu=1.0001e4), "modulation_variance_snu"),
    (dict(excess_noise_snu=1.0001e6), "excess_noise_snu"),
])
@pytest.mark.parametrize("detection", DETS)
def test_inputs_outside_the_domain_are_refused_naming_the_range(kw, needle, detection):
    with pytest.raises(KeyRateInputError, match=needle):
        asymptotic_key_rate(**{**EXAMPLE, **kw, "detection": detection})


def test_eta_t_floor_is_on_the_product():
    _rate(transmittance=TRANSMITTANCE_FLOOR, efficiency=1.0)
    _rate(transmittance=1e-4, efficiency=1e-4)
    with pytest.raises(KeyRateInputError, match="1e-09 is below 1e-08"):
        _rate(transmittance=1e-4, efficiency=1e-5)


# -- the domain, against the reference ----------------------------------------------------------
_GRID = [
    (det, va, T, xi, eta, vel)
    for det, va, T, xi, eta, vel in itertools.product(
        DETS, [1e-3, 1.0, 30.0, MODULATION_VARIANCE_MAX],
        [TRANSMITTANCE_FLOOR, 1e-3, 0.5, 0.999, 1.0], [0.0, 1e-6, 0.02, 3.0, NOISE_MAX],
        [1.0, 0.5], [0.0, 0.1, NOISE_MAX])
    if eta * T >= TRANSMITTANCE_FLOOR
]


def test_domain_corners_match_the_high_precision_reference():
    # eigenvalues to 1e-8 relative, K within its rounding bound, the invariants
    for det, va, T, xi, eta, vel in _GRID:
        r = _rate(modulation_variance_snu=va, transmittance=T, excess_noise_snu=xi,
                  efficiency=eta, electronic_noise_snu=vel, beta=1.0, detection=det)
        _check_against_reference(r)


def _log_uniform(lo, hi):
    return st.floats(math.log10(lo), math.log10(hi)).map(lambda e: 10.0**e)


_noise = st.one_of(st.just(0.0), _log_uniform(1e-9, NOISE_MAX))


@settings(max_examples=300, deadline=None)
@given(det=st.sampled_from(DETS), va=_log_uniform(1e-3, MODULATION_VARIANCE_MAX),
       log_eta_t=st.floats(-8.0, 0.0), split=st.floats(0.0, 1.0), xi=_noise, vel=_noise,
       beta=st.floats(0.01, 1.0))
def test_invariants_over_the_domain(det, va, log_eta_t, split, xi, vel, beta):
    # eta T = 10^log_eta_t, shared between eta and T by `split`
    T = min(1.0, 10.0 ** (log_eta_t * split))
    eta = min(1.0, max(10.0**log_eta_t / T, TRANSMITTANCE_FLOOR / T))
    r = _rate(modulation_variance_snu=va, transmittance=T, excess_noise_snu=xi,
              efficiency=eta, electronic_noise_snu=vel, beta=beta, detection=det)
    _check_against_reference(r)


@pytest.mark.parametrize("va,T,xi,det", [
    (1e5, 1.0, 1e-6, "heterodyne"),   # V_A 10x the bound: the V^2 terms of A cancel
    (1e5, 1.0, 1e-6, "homodyne"),
    (1e-3, 1.0, 1e10, "heterodyne"),  # xi 1e4x the bound (5e-7; 2e-9 at 1e8)
    (1e-3, 1.0, 1e10, "homodyne"),
])
def test_float64_loses_the_eigenvalues_beyond_the_bounds(va, T, xi, det):
    # what the bounds guard against: the unvalidated closed forms drift past EIG_RTOL
    _, lams = holevo_bound(va, T, xi, 1.0, 0.0, det)
    ref = reference(va, T, xi, 1.0, 0.0, 1.0, det)["lams"]
    assert max(abs(float(a) - b) / b for a, b in zip(lams, ref, strict=True)) > EIG_RTOL


def test_secure_is_not_a_rounding_artefact():
    # at the excess noise where the rate vanishes, float64 gives K = +3.8e-16 where the exact
    # rate is -1.0e-14: inside the rounding bound, so no key
    kw = dict(modulation_variance_snu=10.0, transmittance=1e-8, efficiency=1.0,
              electronic_noise_snu=0.0, beta=0.95, detection="homodyne")
    xi0 = max_tolerable_excess_noise(**kw)
    r = _rate(**kw, excess_noise_snu=xi0)
    assert not r.secure
    assert reference(10.0, 1e-8, xi0, 1.0, 0.0, 0.95, "homodyne")["k"] < 0
    assert _rate(**kw, excess_noise_snu=0.9 * xi0).secure


# -- max tolerable excess noise at the extremes -------------------------------------------------
@pytest.mark.parametrize("det", DETS)
@pytest.mark.parametrize("va,T,eta,vel", [
    (MODULATION_VARIANCE_MAX, 1.0, 1.0, 0.0), (1e-3, 1.0, 1.0, 0.0),
    (5.0, TRANSMITTANCE_FLOOR, 1.0, 0.0), (5.0, 0.5, 0.7, NOISE_MAX),
])
def test_max_tolerable_excess_noise_at_the_extremes(det, va, T, eta, vel):
    kw = dict(modulation_variance_snu=va, transmittance=T, efficiency=eta,
              electronic_noise_snu=vel, beta=0.95, detection=det)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        xi0 = max_tolerable_excess_noise(**kw)
    assert 0 <= xi0 < 2  # xi = 2 SNU breaks any link (Eve's cloner)
    if xi0 > 0:
        # (at 0.99 xi0 the rate at the 80 dB floor, 4e-11, is still inside its rounding bound)
        r = _rate(**kw, excess_noise_snu=0.9 * xi0)
        assert r.secure and r.key_rate_bits_per_symbol > 0
        at_root = _rate(**kw, excess_noise_snu=xi0)
        assert abs(at_root.key_rate_bits_per_symbol) <= at_root.rounding_error_bits
        assert not _rate(**kw, excess_noise_snu=min(1.01 * xi0, NOISE_MAX)).secure
    else:
        assert not _rate(**kw, excess_noise_snu=0.0).secure


def test_max_tolerable_excess_noise_search_bound_is_validated():
    kw = {k: v for k, v in EXAMPLE.items() if k != "excess_noise_snu"}
    for bad in (0.0, -1.0, math.nan, 1e300):
        with pytest.raises(KeyRateInputError, match="xi_hi"):
            max_tolerable_excess_noise(**kw, xi_hi=bad)


# -- finite size ----------------------------------------------------------------------------------
def test_delta_at_tiny_eps_is_finite_and_exact():
    # log2(2/eps) overflowed (2/1e-320 = inf): Delta and the key rate became inf / -inf
    n, eps = 10**9, 1e-320
    with localcontext() as ctx:
        ctx.prec = 50
        ln2 = Decimal(2).ln()
        lb = lambda x: x.ln() / ln2  # noqa: E731
        d = Decimal(eps)
        exact = float(7 * (lb(2 / d) / n).sqrt() + Decimal(2) / n * lb(1 / d))
    assert finite_size_delta(n, eps_bar=eps, eps_pa=eps) == pytest.approx(exact, rel=1e-13)
    r = finite_size_key_rate(**EXAMPLE, block_size=10**12, n_pe=10**12, eps_pe=eps,
                             eps_pa=eps, eps_bar=eps)
    assert math.isfinite(r.key_rate_bits_per_symbol) and r.secure


@pytest.mark.parametrize("bad", [0, -2, 2.5, True, math.nan, "2"])
def test_dim_hx_must_be_a_positive_integer(bad):
    # dim_hx = -2 made the offset negative: a finite-size rate above the asymptotic one
    with pytest.raises(KeyRateInputError, match="dim_hx"):
        finite_size_delta(10**9, dim_hx=bad)
    with pytest.raises(KeyRateInputError, match="dim_hx"):
        finite_size_key_rate(**EXAMPLE, block_size=10**9, n_pe=10**9, dim_hx=bad)


@pytest.mark.parametrize("eps", [1e-300, 1e-100, 0.5, 0.999999])
@pytest.mark.parametrize("block", [10**4, 10**9, 2**53])
def test_finite_size_extremes_are_finite_and_below_asymptotic(eps, block):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = finite_size_key_rate(**EXAMPLE, block_size=block, n_pe=block, eps_pe=eps,
                                 eps_pa=eps, eps_bar=eps)
    k = r.key_rate_bits_per_symbol
    assert k == -math.inf or (math.isfinite(k) and k < r.asymptotic_key_rate_bits_per_symbol)
    if math.isfinite(k):
        assert r.transmittance <= r.transmittance_estimate
        assert r.excess_noise_snu >= r.excess_noise_estimate_snu


@pytest.mark.parametrize("name", ["block_size", "n_pe"])
def test_counts_beyond_int64_are_refused_in_a_short_message(name):
    # a block of 1e300 symbols was accepted (its 301-digit integer went into the JSON) and
    # n_pe = 1e300 printed a 300-digit number in the error
    kw = dict(block_size=2**63 - 1, n_pe=2**62)
    finite_size_key_rate(**EXAMPLE, **kw)
    for bad in (2**63, 10**300, 1e300):
        with pytest.raises(KeyRateInputError, match=rf"{name} must be <= 2\^63 - 1") as info:
            finite_size_key_rate(**EXAMPLE, **{**kw, name: bad})
        assert len(str(info.value)) < 120
