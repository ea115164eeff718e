"""V_A calibration against the virtual lab: the chain's field per volt against the model's
small-signal transfer, V_A at the set amplitude against the model's exact modulator output,
and the up-front refusal of an amplitude above the AWG's limit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from calibration.common import run_procedure
from calibration.modulation import ModulationOptions, measure_modulation
from qkd_hw.errors import LimitError
from tests.calibration.helpers import settings, virtual

H_NU = 6.62607015e-34 * 299_792_458.0 / 1550e-9


def options(vlab, **kw) -> ModulationOptions:
    ph = vlab.physics
    return ModulationOptions(tap_db=ph.power_meter_tap_db,
                             tx_attenuation_db=ph.tx_attenuation_db, **kw)


# 56 dB leaves V_A = 5 about 10 % below the 1 V AWG limit (57 dB sat on it: a random segment
# could need just over 1 V)
@pytest.mark.parametrize(("target", "att_db"), [(5.0, 56.0), (2.5, 55.0)])
def test_modulation_sets_va_within_its_uncertainty(target: float, att_db: float) -> None:
    with virtual(tx_attenuation_db=att_db) as (cfg, vlab):
        before = settings(vlab)
        seen = {}

        def on_step(name: str) -> None:   # after the verifying readings: the state played
            st = vlab.state()
            seen["mean_m2"] = vlab.model.mean_modulator_power(st)
            seen["tx_mw"] = st.tx_power_mw
            awg = vlab.emulator("awg")
            seen["codes2"] = sum(float(np.mean(awg.output_codes(ch)[0].astype(float) ** 2))
                                 for ch in (1, 2))

        opt = options(vlab, target_snu=target)
        rec = run_procedure("modulation", cfg, lambda s, r: measure_modulation(s, r, opt),
                            options={}, out_dir=None, on_step=on_step)
        assert settings(vlab) == before
        ph = vlab.physics
        f_adc = vlab.state().adc_sample_rate_hz
    r = rec.results
    # small-signal field per drive volt of the model: 2 sqrt(P / (h nu f_adc)) kappa / sqrt 2
    # (field per ADC sample, quadrature units), kappa = pi rf_gain / (2 V_pi_rf)
    p_w = 1e-3 * seen["tx_mw"] * 10 ** (-ph.tx_attenuation_db / 10)
    kappa = math.pi * ph.rf_gain / (2 * ph.modulator_v_pi_rf_v)
    f_per_v = 2 * math.sqrt(p_w / (H_NU * f_adc)) * kappa / math.sqrt(2)
    assert r["field_per_volt"] == pytest.approx(f_per_v, rel=0.005)
    # V_A from the model's exact |M|^2 of the segment played, the quantum band's share of
    # its power as designed: V_d (5, [link]) per designed field power mean(I^2 + Q^2) / G^2
    field = 4 * p_w * seen["mean_m2"] / (H_NU * f_adc)
    va_true = 5.0 * field / (seen["codes2"] / r["codes_per_field"] ** 2)
    assert abs(r["modulation_variance_snu"] - va_true) < 3 * r["modulation_variance_snu_std"]
    assert abs(r["modulation_variance_snu"] - target) < 3 * r["modulation_variance_snu_std"]
    assert rec.passed


def test_modulation_refuses_an_amplitude_above_the_limit() -> None:
    with virtual() as (cfg, vlab):
        before = settings(vlab)
        opt = options(vlab, tx_power_mw=5.0)   # V_A = 5 would need ~1.8 V (limit 1 V)
        with pytest.raises(LimitError, match=r"amplitude.*Tx power of about"):
            run_procedure("modulation", cfg, lambda s, r: measure_modulation(s, r, opt),
                          options={}, out_dir=None)
        assert settings(vlab) == before
