"""Density evolution against known thresholds and the capacity bound."""

from __future__ import annotations

import math

import pytest

from qkd_hw.postprocessing import design
from qkd_hw.postprocessing.codes import MetEnsemble

# the regular (3,6) ensemble as a one-edge-type MET ensemble
REG36 = MetEnsemble("reg-3-6", 2, ((2, (3,)),), ((1, (6,)),))
# a small rate-0.1 ensemble of Jouguet et al.'s three-edge-type structure (degree-one nodes)
SMALL_MET = MetEnsemble(
    "small-met", 40,
    ((3, (2, 21, 0)), (2, (3, 21, 0)), (35, (0, 0, 1))),
    ((1, (12, 0, 0)), (35, (0, 3, 1))),
)


def test_biawgn_capacity_is_one_half_at_the_rate_half_shannon_limit():
    # Eb/N0 = 0.187 dB at rate 1/2: SNR = 2 Es/N0 = 10^(0.0187 - 0.301) * 2, sigma = 0.9787
    assert design.biawgn_capacity(0.9787) == pytest.approx(0.5, abs=1e-3)
    # low SNR: the binary input loses only to third order against 1/2 log2(1 + snr)
    s = design.sigma_of_snr(0.02)
    assert design.biawgn_capacity(s) / (0.5 * math.log2(1.02)) == pytest.approx(1.0, abs=1e-4)


def test_gaussian_approximation_threshold_of_the_3_6_code():
    # Chung, Richardson, Urbanke (2001): sigma_GA = 0.8747 (exact DE: 0.8809)
    assert design.ga_threshold(REG36, lo=0.5, hi=1.5, tol=1e-4) == pytest.approx(0.8747,
                                                                                  abs=0.005)


def test_discretised_de_brackets_the_3_6_threshold():
    # exact threshold sigma* = 0.8809 (Richardson, Urbanke 2001): converges 1.5 % below,
    # not 2 % above
    assert design.de_converges(REG36, 0.868, delta=0.1, llr_max=20.0)
    assert not design.de_converges(REG36, 0.90, delta=0.1, llr_max=20.0, max_iterations=150)


def test_met_ensemble_with_degree_one_nodes_obeys_the_capacity_bound():
    r = SMALL_MET.rate
    assert r == pytest.approx(0.1)
    s_cap = design.sigma_of_snr(2 ** (2 * r) - 1)       # beta = 1
    # no ensemble decodes beyond capacity; this one does at beta 0.75 (coarse grid: cheap)
    grid = {"delta": 0.2, "llr_max": 15.0}
    assert design.biawgn_capacity(s_cap * 1.02) < r
    assert not design.de_converges(SMALL_MET, s_cap * 1.02, max_iterations=60, **grid)
    assert not design.ga_converges(SMALL_MET, s_cap * 1.02)
    s_075 = design.sigma_of_snr(2 ** (2 * r / 0.75) - 1)
    assert design.de_converges(SMALL_MET, s_075, max_iterations=200, **grid)
    assert design.ga_converges(SMALL_MET, s_075)


def test_phi_and_its_inverse():
    assert float(design.phi(0.0)) == 1.0
    # phi(m) = 1 - E[tanh(u/2)]: at large m the asymptote sqrt(pi/m) exp(-m/4) (1 - 10/(7m))
    m = 80.0
    asym = math.sqrt(math.pi / m) * math.exp(-m / 4) * (1 - 10 / (7 * m))
    assert float(design.phi(m)) == pytest.approx(asym, rel=1e-12)
    for m in (1e-3, 0.5, 3.0, 30.0, 59.0, 100.0):
        assert float(design.phi_inv(design.phi(m))) == pytest.approx(m, rel=1e-3)


def test_jouguet_ensemble_is_balanced_and_has_the_rate():
    ens = design.jouguet_ensemble("x", 2000, 0.05, 0.065, 0.6, 2.7 * 0.935 / 0.065)
    ens.validate()
    assert ens.rate == pytest.approx(0.05)
    with pytest.raises(ValueError, match="core fraction"):
        design.jouguet_ensemble("x", 2000, 0.05, 0.04, 0.6, 20.0)


def test_fast_de_brackets_the_3_6_threshold():
    # sigma* = 0.8809 (Richardson, Urbanke 2001); the quantised analysis (step 0.1) sits a
    # little below it: converges 1 % below, sits at a fixed point of bit error ~0.07 1.5 % above
    ok, _, err = design.de_fast_run(REG36, 0.872, delta=0.1, llr_max=20.0)
    assert ok and err < 1e-7
    ok, _, err = design.de_fast_run(REG36, 0.894, delta=0.1, llr_max=20.0, max_iterations=80)
    assert not ok and err > 0.05


def test_fast_de_agrees_with_the_reference_de():
    # the same quantised analysis as de_converges, reorganised: the same decision on both
    # sides of the threshold of a MET ensemble with degree-one nodes (coarse grid, where the
    # threshold is sigma 2.15: both bisections in [2.0, 2.6] to 0.04 stop there, checked
    # outside the suite; here one noise each side, cheap)
    grid = {"delta": 0.25, "llr_max": 12.0, "max_iterations": 200}
    for sigma, expected in ((2.0, True), (2.5, False)):
        assert design.de_converges(SMALL_MET, sigma, **grid) is expected
        assert design.de_fast_run(SMALL_MET, sigma, **grid)[0] is expected


def test_forest_ensemble_is_the_shipped_rate_01_family_1_and_refuses_a_cycle():
    from qkd_hw.postprocessing.codes import FAMILIES
    from qkd_hw.postprocessing.design import forest_ensemble

    e = forest_ensemble("met-r0.10f", 200, 0.1, 25, 4, 25, 2.95)
    assert e == FAMILIES[0.1][1]
    assert e.rate == pytest.approx(0.1, abs=1e-12)
    # weak nodes: exactly two type-1 sockets; 5 type-1 checks hold at most 4 in a forest
    assert sum(c for c, d in e.var_types if d[0] == 2) == 4
    with pytest.raises(ValueError, match="forest"):
        forest_ensemble("x", 200, 0.1, 25, 5, 25, 2.95)


def test_girth_ensembles_are_the_shipped_rate_01_families():
    from qkd_hw.postprocessing.codes import ENSEMBLES, FAMILIES
    from qkd_hw.postprocessing.design import girth_ensemble

    assert ENSEMBLES[0.1] is FAMILIES[0.1][3]       # the default since 2026-12-07 (later)
    for fam, n_weak in ((2, 30), (3, 36)):
        e = girth_ensemble(FAMILIES[0.1][fam].name, 1000, 0.1, 125, n_weak, 21, 2.95)
        assert e == FAMILIES[0.1][fam] and e.weak_girth and not e.forest
        assert e.rate == pytest.approx(0.1, abs=1e-12)
        assert sum(c for c, d in e.var_types if d[0] == 2) == n_weak
    # 25 type-1 checks: at most 25 * 24 / 2 weak nodes without two on one pair of checks
    with pytest.raises(ValueError, match="parallel"):
        girth_ensemble("x", 1000, 0.1, 125, 301, 21, 2.95)


@pytest.mark.parametrize(("rate", "fam", "default", "args"),
                         [(0.05, 1, False, (2000, 0.05, 125, 50, 40, 2.81)),
                          (0.05, 2, True, (2000, 0.05, 130, 60, 40, 2.76)),
                          (0.02, 1, True, (4000, 0.02, 108, 64, 94, 2.6))])
def test_girth_ensembles_are_the_shipped_rate_005_002_families(rate, fam, default, args):
    from qkd_hw.postprocessing.codes import ENSEMBLES, FAMILIES

    e = design.girth_ensemble(FAMILIES[rate][fam].name, *args)
    assert e == FAMILIES[rate][fam]
    assert (ENSEMBLES[rate] is FAMILIES[rate][fam]) is default   # since 2026-12-07 (evening)
    assert e.rate == pytest.approx(rate, abs=1e-12)
    if rate == 0.02:
        # met-r0.02g: met-r0.02's weak nodes and edge counts per node on a 4x larger base
        # graph; kbar rounds to whole edges, so they agree to 1 edge per 1000 base nodes
        old = FAMILIES[0.02][0]
        assert sum(c for c, d in e.var_types if d[0] == 2) == 4 * 16
        for types_e, types_o in ((e.var_types, old.var_types), (e.check_types, old.check_types)):
            for t in range(3):
                edges_e = sum(c * d[t] for c, d in types_e) / e.base_n
                edges_o = sum(c * d[t] for c, d in types_o) / old.base_n
                assert edges_e == pytest.approx(edges_o, abs=1e-3)
