"""benchmarks/decoder.py: the beta at a target FER from the measured points."""

from __future__ import annotations

import pytest

from benchmarks.decoder import beta_at_fer, snr_for_beta


def _pt(rule: str, beta: float, fer: float) -> dict:
    return {"rule": rule, "beta": beta, "fer": fer, "frames": 200}


def test_beta_at_fer_interpolates_log_fer_between_the_bracketing_betas() -> None:
    pts = [_pt("a", 0.87, 0.02), _pt("a", 0.88, 0.05), _pt("a", 0.89, 0.2),
           _pt("b", 0.88, 0.2), _pt("b", 0.89, 0.3)]
    got = beta_at_fer(pts, 0.1)
    # log 0.1 is halfway between log 0.05 and log 0.2
    assert got["a"] == pytest.approx(0.885, abs=1e-12)
    assert got["b"] is None          # never below the target: not bracketed


def test_snr_for_beta_gives_the_capacity_of_the_code_rate() -> None:
    import math
    snr = snr_for_beta(0.9)
    assert 0.1 / (0.5 * math.log2(1 + snr)) == pytest.approx(0.9, rel=1e-12)
