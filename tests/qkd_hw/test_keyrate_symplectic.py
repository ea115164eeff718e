"""Closed-form Holevo bound and I_AB vs the purified covariance matrix built mode by mode.

The reference here shares no formula with qkd_hw.keyrate: it builds the 6-mode pure state
(Alice's EPR pair A-B, Eve's entangling-cloner EPR pair E1-E2, the trusted detector-noise
EPR pair F-G), applies the channel and detector beam splitters as symplectic matrices,
takes symplectic spectra numerically (|eig(i Omega gamma)|) and conditions on Bob's
homodyne (Moore-Penrose) or heterodyne measurement.
"""

from __future__ import annotations

import decimal
import math
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qkd_hw import symplectic as sy
from qkd_hw.keyrate import holevo_bound, mutual_information


def purified_state(va, T, xi, eta, vel, detection):
    """Covariance of A, B, F, G after channel and detector (Eve's modes traced out).

    Entangling cloner: Eve's EPR variance W = 1 + T xi/(1-T) makes Bob's input variance
    T(V + chi_line) = 1 + T(V_A + xi). Trusted detector: beam splitter eta with one arm
    of an EPR pair of variance v; v = 1 + v_el/(1-eta) homodyne, 1 + 2 v_el/(1-eta)
    heterodyne (the ideal heterodyne's 50:50 split halves the noise per quadrature), so
    each measured quadrature carries 1 + v_el + t^2 xi of noise as in conventions.md.
    """
    V = va + 1
    W = 1 + T * xi / (1 - T) if T < 1 else 1.0
    k = 2 if detection == "heterodyne" else 1
    v = 1 + k * vel / (1 - eta) if eta < 1 else 1.0
    # modes: 0 A, 1 B, 2 E1, 3 E2, 4 F, 5 G
    g = sy.direct_sum(sy.two_mode_squeezed(V), sy.two_mode_squeezed(W), sy.two_mode_squeezed(v))
    for S in (sy.beam_splitter(T, 6, 1, 2), sy.beam_splitter(eta, 6, 1, 4)):
        g = S @ g @ S.T
    keep = [0, 1, 2, 3, 8, 9, 10, 11]
    return g[np.ix_(keep, keep)]  # modes A, B, F, G


def chi_numeric(va, T, xi, eta, vel, detection):
    g = purified_state(va, T, xi, eta, vel, detection)
    # Eve purifies ABFG: S(E) = S(ABFG); after Bob's rank-one measurement A,E,F,G is pure
    # given the outcome, so S(E|b) = S(AFG|b).
    if detection == "heterodyne":
        cond = sy.condition_on_heterodyne(g, 1)
    else:
        cond = sy.condition_on_homodyne(g, 1)
    return sy.von_neumann_entropy(g) - sy.von_neumann_entropy(cond), g, cond


def i_ab_numeric(va, T, xi, eta, vel, detection):
    """I_AB from the covariance matrix: Alice's heterodyne of A is her coherent-state choice."""
    g = purified_state(va, T, xi, eta, vel, detection)
    gb = g[2:4, 2:4]
    gb_a = sy.condition_on_heterodyne(g, 0)[0:2, 0:2]  # B given Alice's outcome
    if detection == "heterodyne":  # Bob's ideal heterodyne adds one vacuum unit per quadrature
        return math.log2((gb[0, 0] + 1) / (gb_a[0, 0] + 1))  # 2 quadratures x 1/2 log2
    return 0.5 * math.log2(gb[0, 0] / gb_a[0, 0])


GRID = [
    (5.0, 0.5, 0.02, 0.7, 0.05),
    (8.4, 0.01, 0.01, 0.68, 0.1),     # ~100 km, DTU-like
    (2.0, 0.9, 0.001, 0.9, 0.01),
    (5.0, 0.999, 1e-4, 0.99, 0.0),
    (5.0, 1.0, 0.0, 0.6, 0.1),        # no channel: chi_BE = 0
    (20.0, 0.3, 0.1, 0.5, 0.3),
    (5.0, 1 - 1e-9, 1e-9, 0.5, 0.1),  # near-pure: the naive quadratic loses 7 digits here
    (0.01, 0.5, 0.01, 0.5, 0.1),
    (40.0, 1e-4, 0.05, 0.8, 0.02),
]


@pytest.mark.parametrize("detection", ["heterodyne", "homodyne"])
@pytest.mark.parametrize("params", GRID)
def test_closed_form_holevo_matches_symplectic_numerics(params, detection):
    ref, g, cond = chi_numeric(*params, detection)
    chi, lams = holevo_bound(*params, detection)
    assert float(chi) == pytest.approx(ref, abs=1e-9)
    # and the eigenvalues themselves: ABFG has (l1, l2, 1, 1), AFG|b has (l3, l4, 1)
    nu_e = sy.symplectic_eigenvalues(g)
    nu_c = sy.symplectic_eigenvalues(cond)
    np.testing.assert_allclose(nu_e, np.sort([lams[0], lams[1], 1.0, 1.0]), rtol=1e-7)
    np.testing.assert_allclose(nu_c, np.sort([lams[2], lams[3], 1.0]), rtol=1e-7)


@pytest.mark.parametrize("detection", ["heterodyne", "homodyne"])
@pytest.mark.parametrize("params", GRID)
def test_mutual_information_matches_covariance_matrix(params, detection):
    i_ab, snr, _ = mutual_information(*params, detection)
    assert float(i_ab) == pytest.approx(i_ab_numeric(*params, detection), rel=1e-10, abs=1e-14)
    # and the conventions.md channel: per-quadrature SNR = t^2 V_A / (1 + v_el + t^2 xi)
    va, T, xi, eta, vel = params
    t2 = eta * T / 2 if detection == "heterodyne" else eta * T
    assert float(snr) == pytest.approx(t2 * va / (1 + vel + t2 * xi), rel=1e-12)


@settings(max_examples=int(os.environ.get("KEYRATE_HYPOTHESIS_EXAMPLES", 150)),
          deadline=None)
@given(
    detection=st.sampled_from(["heterodyne", "homodyne"]),
    log_va=st.floats(-2, 2),
    T=st.one_of(st.floats(1e-6, 1 - 1e-6), st.floats(0.99, 1 - 1e-6), st.just(1.0)),
    log_xi=st.floats(-9, 0),
    xi_zero=st.booleans(),
    eta=st.floats(0.05, 0.99),
    vel=st.one_of(st.just(0.0), st.floats(0.0, 1.0)),
)
def test_closed_form_holevo_matches_numerics_hypothesis(detection, log_va, T, log_xi, xi_zero,
                                                       eta, vel):
    # Domain: the *reference* loses digits when its auxiliary EPR variances explode
    # (W = 1 + T xi/(1-T) for T -> 1, v = 1 + 2 v_el/(1-eta) for eta -> 1): entries of 1e6
    # cost ~1e-10..1e-9 in the numerical conditioning, so 1-T >= 1e-6 and eta <= 0.99.
    va = 10**log_va
    # T = 1 with xi > 0 (noise without loss) has no entangling-cloner purification to build
    xi = 0.0 if xi_zero or T == 1.0 else 10**log_xi
    ref, _, _ = chi_numeric(va, T, xi, eta, vel, detection)
    chi, _ = holevo_bound(va, T, xi, eta, vel, detection)
    assert float(chi) == pytest.approx(ref, abs=1e-9)


# -- the generic tools themselves --------------------------------------------------------------
def _g_decimal(n: float) -> float:
    """(n+1) log2(n+1) - n log2 n in 40-digit decimal arithmetic (no cancellation issue)."""
    with decimal.localcontext() as ctx:
        ctx.prec = 40
        d = decimal.Decimal(n)
        if d == 0:
            return 0.0
        return float(((d + 1) * (d + 1).ln() - d * d.ln()) / decimal.Decimal(2).ln())


def test_entropy_of_thermal_state_and_g():
    # thermal state of variance V = 2n + 1 has entropy g(n)
    for n in (0.0, 1e-12, 0.3, 1.0, 7.5, 1e6, 1e12):
        assert sy.von_neumann_entropy((2 * n + 1) * np.eye(2)) == pytest.approx(
            _g_decimal(n), rel=1e-12, abs=1e-14)
    assert sy.entropy_g(1.0) == pytest.approx(2.0)
    assert sy.entropy_g(-1e-16) == 0.0


def test_symplectic_invariance_and_pure_states():
    epr = sy.two_mode_squeezed(7.0)
    np.testing.assert_allclose(sy.symplectic_eigenvalues(epr), [1.0, 1.0], atol=1e-12)
    bs = sy.beam_splitter(0.3, 2, 0, 1)
    om = sy.omega(2)
    np.testing.assert_allclose(bs @ om @ bs.T, om, atol=1e-15)  # symplectic
    mixed = sy.direct_sum(3.0 * np.eye(2), 5.0 * np.eye(2))
    np.testing.assert_allclose(sy.symplectic_eigenvalues(bs @ mixed @ bs.T), [3.0, 5.0], rtol=1e-12)


def test_conditioning_formulas_on_an_epr_pair():
    # EPR pair, homodyne x of B: A's x variance 1/V, p stays V (textbook); heterodyne: 1 both
    V = 4.0
    epr = sy.two_mode_squeezed(V)
    np.testing.assert_allclose(sy.condition_on_homodyne(epr, 1), np.diag([1 / V, V]), rtol=1e-12)
    np.testing.assert_allclose(sy.condition_on_homodyne(epr, 1, "p"), np.diag([V, 1 / V]),
                               rtol=1e-12)
    het = V - (V * V - 1) / (V + 1)
    np.testing.assert_allclose(sy.condition_on_heterodyne(epr, 1), het * np.eye(2), rtol=1e-12)
    with pytest.raises(ValueError, match="symmetric"):
        sy.symplectic_eigenvalues(np.array([[1.0, 2.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="'x' or 'p'"):
        sy.condition_on_homodyne(epr, 1, "q")
