"""Noise calibration against the virtual lab: v_el, N0 and the clearance recovered from the
physics the config set (the model's own truth), following a change of it; settings restored."""

from __future__ import annotations

import dataclasses
import math

import h5py
import pytest

from calibration.common import run_procedure
from calibration.noise import NoiseOptions, measure_noise
from tests.calibration.helpers import settings, virtual


def expected(vlab, lo_mw: float) -> dict[str, float]:
    """v_el (rounding included), N0 per quadrature (codes^2) from the model at the
    procedure's working point: LO on at lo_mw, detector enabled."""
    st = dataclasses.replace(vlab.state(), lo_power_mw=lo_mw, detector_enabled=True)
    truth = vlab.model.truth(st)
    # unit-energy matched filter: per-sample variance s2 of white noise -> s2 / 2 per
    # quadrature
    return {"v_el": truth["electronic_noise_snu"],
            "n0": truth["shot_noise_rms_codes"] ** 2 / 2}


@pytest.mark.parametrize("v_el", [0.1, 0.03])
def test_noise_recovers_v_el_n0_and_clearance(v_el: float, tmp_path) -> None:
    with virtual(electronic_noise_snu=v_el) as (cfg, vlab):
        before = settings(vlab)
        opt = NoiseOptions(n_samples=200_000)
        rec = run_procedure("noise", cfg, lambda s, r: measure_noise(s, r, opt), options={},
                            out_dir=tmp_path)
        ref = expected(vlab, cfg.link.lo_power_mw)
        assert settings(vlab) == before
    r = rec.results
    assert abs(r["electronic_noise_snu"] - ref["v_el"]) < 5 * r["electronic_noise_snu_std"]
    assert r["electronic_noise_snu_std"] < 0.05 * ref["v_el"]
    assert abs(r["shot_noise_variance"] - ref["n0"]) < 5 * r["shot_noise_variance_std"]
    clearance = 10 * math.log10((1 + ref["v_el"]) / ref["v_el"])
    # the clearance moves with v_el's estimate: d(clearance)/d(v_el) = -10/ln10 / (v (1 + v)),
    # about 40 dB per SNU at v_el = 0.1, so 5 sd of v_el (<= 0.005 SNU) is up to 1 dB there
    slope = 10 / math.log(10) / (ref["v_el"] * (1 + ref["v_el"]))
    assert r["clearance_db"] == pytest.approx(clearance,
                                              abs=5 * slope * r["electronic_noise_snu_std"])
    assert rec.passed and rec.complete
    with h5py.File(tmp_path / "noise.h5") as f:
        assert bool(f.attrs["complete"]) and f.attrs["software_version"]
        assert f["raw/shot_noise"].shape == (200_000,)
        assert f["results"].attrs["electronic_noise_snu"] == r["electronic_noise_snu"]
        assert b"laser_lo" in f["meta/snapshot"][()]


def test_noise_fails_on_a_low_clearance(tmp_path) -> None:
    # v_el = 0.5: clearance 10 log10(3) = 4.8 dB, under the 8 dB default
    with virtual(electronic_noise_snu=0.5) as (cfg, _vlab):
        opt = NoiseOptions(n_samples=100_000)
        rec = run_procedure("noise", cfg, lambda s, r: measure_noise(s, r, opt), options={},
                            out_dir=None)
    assert not rec.passed
    slope = 10 / math.log(10) / (0.5 * 1.5)  # dB per SNU of v_el, as above
    assert rec.results["clearance_db"] == pytest.approx(
        10 * math.log10(3), abs=5 * slope * rec.results["electronic_noise_snu_std"])
    assert any(line.startswith("FAIL") and "clearance" in line for line in rec.reasons)


def test_noise_refuses_an_lo_above_the_limit_before_changing_anything() -> None:
    from qkd_hw.errors import LimitError

    with virtual() as (cfg, vlab):
        before = settings(vlab)
        opt = NoiseOptions(n_samples=100_000, lo_power_mw=25.0)   # limit: 20 mW
        with pytest.raises(LimitError, match="power_mw"):
            run_procedure("noise", cfg, lambda s, r: measure_noise(s, r, opt), options={},
                          out_dir=None)
        assert settings(vlab) == before
