"""The reconciliation benchmark's core runs and its statistics are right (no speed asserted)."""

from __future__ import annotations

import pytest

from benchmarks.reconciliation_efficiency import run_point, snr_for_beta, wilson
from qkd_hw.postprocessing.reconcile import capacity


def test_wilson_interval_matches_closed_forms():
    # k = 0: upper bound z^2 / (n + z^2); k = n: lower bound n / (n + z^2)
    z2 = 1.96 ** 2
    assert wilson(0, 200) == pytest.approx((0.0, z2 / (200 + z2)))
    assert wilson(50, 50)[0] == pytest.approx(50 / (50 + z2))
    # 10/100: the tabulated 95 % Wilson interval [0.0552, 0.1744]
    assert wilson(10, 100) == pytest.approx((0.0552, 0.1744), abs=1e-4)


def test_snr_for_beta_inverts_the_efficiency():
    assert 0.1 / capacity(snr_for_beta(0.1, 0.9)) == pytest.approx(0.9)


def test_run_point_on_a_small_code():
    r = run_point(0.1, snr_for_beta(0.1, 0.6), frames=2, length=8000, dimension=8,
                  max_iterations=200, batch=2, seed=3)
    assert r["frames"] == 2 and r["frame_errors"] == 0
    assert r["beta"] == pytest.approx(0.6) and r["fer_hi"] < 0.9


def test_run_point_adapted_code():
    # the adaptive path: choose_code's mother, punctured up to the target efficiency
    snr = 10 ** (-9.5 / 10)
    r = run_point(None, snr, frames=1, length=8000, dimension=8, max_iterations=200, batch=1,
                  seed=3, adaptive=True, beta=0.7)
    assert (r["mother_rate"], r["shortened"]) == (0.05, 0)
    assert r["punctured"] > 0 and r["beta"] == pytest.approx(0.7, abs=0.002)
    assert r["frame_bits"] == 8000 - r["punctured"] and r["frame_errors"] == 0
