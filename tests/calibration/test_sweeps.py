"""Linearity and bias procedures against the virtual lab: the slope, saturation power and
bias nulls the config set (and a change of them); Ctrl-C and an instrument fault in the
middle of a sweep leave every setting as it was and an incomplete record."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from calibration.bias import BiasOptions, measure_bias
from calibration.common import run_procedure
from calibration.linearity import LinearityOptions, fit_saturating_line, measure_linearity
from drivers.emulators.scpi_server import Fault
from qkd_hw.errors import InstrumentError
from qkd_hw.lab.model import INT16_SPAN
from tests.calibration.helpers import settings, virtual

POWERS = (2.0, 4.0, 6.0, 8.0, 10.0, 14.0, 16.0, 18.0)


def test_fit_saturating_line_exact() -> None:
    import numpy as np

    p = np.array(POWERS)
    v = 3.0 + 2.0 * np.minimum(p, 11.0)
    fit = fit_saturating_line(p, v)
    assert fit["slope"] == pytest.approx(2.0)
    assert fit["offset"] == pytest.approx(3.0)
    assert fit["saturation_lo_mw"] == pytest.approx(11.0)
    assert fit["r_squared"] == pytest.approx(1.0)
    assert fit_saturating_line(p, 1 + p)["saturation_lo_mw"] is None


@pytest.mark.parametrize(("sat_mw", "rms_v"), [(12.0, 0.02), (7.0, 0.015)])
def test_linearity_recovers_slope_and_saturation(sat_mw: float, rms_v: float) -> None:
    with virtual(lo_saturation_mw=sat_mw, shot_noise_rms_v=rms_v) as (cfg, vlab):
        before = settings(vlab)
        opt = LinearityOptions(lo_powers_mw=POWERS, n_samples=100_000)
        rec = run_procedure("linearity", cfg, lambda s, r: measure_linearity(s, r, opt),
                            options={}, out_dir=None)
        assert settings(vlab) == before
        lsb = vlab.state().adc_range_v / INT16_SPAN
        ref = vlab.physics.lo_reference_mw
    # shot-noise variance per quadrature through a unit-energy filter: (rms/lsb)^2 / 2 at
    # the reference power, proportional to the LO power below saturation
    slope = (rms_v / lsb) ** 2 / 2 / ref
    r = rec.results
    # the fitted slope is linear in the linear part's variances: its sd from theirs (with 3
    # points up to 6 mW about 2.5 % of the slope, so a fixed 3 % was ~1 sd)
    k = r["n_linear"]
    p = np.asarray(POWERS[:k])
    w = (p - p.mean()) / np.sum((p - p.mean()) ** 2)
    slope_sd = float(np.sqrt(np.sum((w * rec.raw["variance_std_codes2"][:k]) ** 2)))
    assert slope_sd < 0.05 * slope
    assert abs(r["slope"] - slope) < 5 * slope_sd
    # p_sat = (plateau - offset) / slope: its sd is dominated by the slope's (~0.12 mW here)
    assert r["saturation_lo_mw"] == pytest.approx(sat_mw, abs=5 * sat_mw * slope_sd / slope)
    # a linear detector's points scatter by their own standard deviations: every relative
    # deviation within 4.5 sd of its point (a family-wise p of ~5e-5 over <= 8 points)
    rel_sd = rec.raw["variance_std_codes2"][:k] / rec.raw["variance_codes2"][:k]
    assert 0 <= r["max_nonlinearity"] <= 4.5 * float(rel_sd.max())
    assert r["linear_chi2_per_dof"] < 20
    assert rec.passed == (sat_mw > cfg.link.lo_power_mw)


@pytest.mark.parametrize("offset_v", [0.7, -1.2])
def test_bias_finds_the_nulls_and_locks(offset_v: float) -> None:
    with virtual(bias_v_offset_v=offset_v) as (cfg, vlab):
        before = settings(vlab)
        v_pi = vlab.physics.bias_v_pi_v
        opt = BiasOptions(step_v=0.5)
        rec = run_procedure("bias", cfg, lambda s, r: measure_bias(s, r, opt), options={},
                            out_dir=None)
        assert settings(vlab) == before
    r = rec.results
    # P ~ cos^2(pi (V - offset) / (2 V_pi)): nulls at offset + V_pi (2k + 1)
    nulls = [offset_v + v_pi * (2 * k + 1) for k in (-2, -1, 0, 1) if
             -8 <= offset_v + v_pi * (2 * k + 1) <= 8]
    assert r["nulls_v"] == pytest.approx(nulls, abs=0.02)
    assert min(abs(r["bias_v"]["bias_controller"] - n) for n in nulls) < 0.02
    assert r["v_pi_v"] == pytest.approx(v_pi, rel=0.01)
    assert r["extinction_db"] > 20 and rec.passed


def test_ctrl_c_in_the_lo_sweep_restores_and_marks_incomplete(tmp_path) -> None:
    with virtual() as (cfg, vlab):
        before = settings(vlab)
        steps = []

        def on_step(name: str) -> None:
            steps.append(name)
            if len(steps) == 3:
                raise KeyboardInterrupt

        opt = LinearityOptions(lo_powers_mw=POWERS, n_samples=50_000)
        with pytest.raises(KeyboardInterrupt):
            run_procedure("linearity", cfg, lambda s, r: measure_linearity(s, r, opt),
                          options={}, out_dir=tmp_path, on_step=on_step)
        assert settings(vlab) == before
    with h5py.File(tmp_path / "linearity.h5") as f:
        assert not f.attrs["complete"] and f.attrs["error"] == "KeyboardInterrupt"
        assert f.attrs["verdict"].startswith("INCOMPLETE")
        done = f["raw/variance_codes2"][()]
    assert (done[:3] > 0).all() and (done[3:] != done[3:]).all()   # 3 points, then NaN


def test_instrument_fault_in_the_bias_sweep_restores_and_marks_incomplete(tmp_path) -> None:
    with virtual() as (cfg, vlab):
        before = settings(vlab)
        pm = vlab.emulator("power_meter")
        steps = []

        def on_step(name: str) -> None:
            steps.append(name)
            if len(steps) == 5:   # the power meter stops answering mid-sweep
                pm.faults.append(Fault("drop", match="MEAS", count=1000))

        with pytest.raises(InstrumentError) as err:
            run_procedure("bias", cfg, lambda s, r: measure_bias(s, r, BiasOptions()),
                          options={}, out_dir=tmp_path, on_step=on_step)
        assert settings(vlab) == before
    with h5py.File(tmp_path / "bias.h5") as f:
        assert not f.attrs["complete"]
        assert type(err.value).__name__ in f.attrs["error"]
