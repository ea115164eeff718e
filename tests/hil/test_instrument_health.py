"""HIL: instrument readings against the ``[hil]`` thresholds of the lab config.

Read-only tests read what a lab in use shows; ``changes_state`` tests bring the instrument to
its working point through a LabSession (restored afterwards). Every failed quantity is one line
naming the role, the instrument, the quantity, the value and the allowed range.
"""

from __future__ import annotations

import numpy as np
import pytest

from calibration.common import capture
from calibration.hil.plugin import HilRun
from drivers.base import create_instrument
from drivers.thorlabs_mbx import MzmMode

pytestmark = pytest.mark.hil

#: signal-laser set point of the bias-lock check (mW): enough tap power to lock on
SIGNAL_TEST_MW = 10.0


def _lo_mw(hil: HilRun) -> float:
    link = hil.lab.link
    return link.lo_power_mw if link is not None and link.lo_power_mw else 5.0


def test_laser_temperature_and_wavelength(hil: HilRun, laser_role: str):
    with create_instrument(hil.lab.role(laser_role)) as laser, hil.checks_of() as check:
        check(laser_role, "module_temperature_c", laser.module_temperature_c, "degC")
        check(laser_role, "wavelength_offset_pm", laser.wavelength_offset_pm, "pm")


def test_detector_temperature(hil: HilRun):
    with create_instrument(hil.lab.role("detector")) as det, hil.checks_of() as check:
        check("detector", "temperature_c", det.temperature_c, "degC")


@pytest.mark.changes_state
def test_laser_power_follows_set_point(hil: HilRun, laser_role: str):
    target = _lo_mw(hil) if laser_role == "lo_laser" else SIGNAL_TEST_MW
    with hil.session(laser_role) as s, hil.checks_of() as check:
        s.set(laser_role, "power_setpoint_mw", target)
        s.set(laser_role, "emission", True)
        measured = s.get(laser_role, "output_power_mw")
        check(laser_role, "power_error_mw", measured - target, "mW")


@pytest.mark.changes_state
def test_detector_photocurrents_and_balance(hil: HilRun):
    with hil.session("detector", "lo_laser") as s, hil.checks_of() as check:
        s.set("detector", "enabled", True)
        s.set("lo_laser", "power_setpoint_mw", _lo_mw(hil))
        s.set("lo_laser", "emission", True)
        bal = s.instrument("detector").balance()
        check("detector", "pd1_current_ua", bal.pd1_ua, "uA")
        check("detector", "pd2_current_ua", bal.pd2_ua, "uA")
        check("detector", "imbalance", bal.imbalance, "")


@pytest.mark.changes_state
def test_bias_lock_working_point_and_tap_power(hil: HilRun):
    with hil.session("signal_laser", "bias_controller") as s, hil.checks_of() as check:
        s.set("signal_laser", "power_setpoint_mw", SIGNAL_TEST_MW)
        s.set("signal_laser", "emission", True)
        s.set("bias_controller", "mode", MzmMode.AUTO_NULL)
        bias = s.instrument("bias_controller")
        try:
            bias.wait_locked(timeout_s=20.0)
        except Exception as exc:  # a lock that never comes is the finding, not a traceback
            pytest.fail(f"bias_controller ({bias.name}): locked: no lock in AUTO_NULL within "
                        f"20 s: {exc}", pytrace=False)
        check("bias_controller", "bias_voltage_v", s.get("bias_controller", "bias_voltage_v"),
              "V")
        check("bias_controller", "tap_power_mw", s.get("bias_controller", "tap_power_mw"), "mW")


@pytest.mark.changes_state
def test_digitizer_noise_floor(hil: HilRun):
    """Detector off, LO off: what the digitizer records is its own noise (rms in codes)."""
    with hil.session("detector", "lo_laser", "digitizer") as s, hil.checks_of() as check:
        s.set("detector", "enabled", False)
        s.set("lo_laser", "emission", False)
        codes = capture(s, 100_000).astype(np.float64)
        check("digitizer", "noise_floor_rms_codes", float(np.std(codes)), "codes")


@pytest.mark.changes_state
def test_settings_round_trip(hil: HilRun):
    """Settings written come back as written, and the session restores them."""
    cfg = hil.lab
    voa_ch = cfg.port("voa_channel")
    cases = [("voa", "attenuation_db", 3.0, voa_ch), ("detector", "gain_step", 2, None),
             ("switch", "channel", cfg.port("switch_block_port"), None)]
    roles = [r for r, _, _, _ in cases]
    bad = []
    with hil.session(*roles) as s:
        before = {(r, p): s.get(r, p, channel=c) for r, p, _, c in cases}
        for role, prop, value, ch in cases:
            s.set(role, prop, value, channel=ch)
            got = s.get(role, prop, channel=ch)
            if got != value:
                bad.append(f"{role} ({cfg.role(role).name}): {prop}: wrote {value!r}, read "
                           f"back {got!r}")
    with hil.session(*roles) as s:
        for (role, prop), old in before.items():
            ch = next(c for r, p, _, c in cases if (r, p) == (role, prop))
            now = s.get(role, prop, channel=ch)
            if now != old:
                bad.append(f"{role} ({cfg.role(role).name}): {prop}: not restored: {old!r} -> "
                           f"{now!r}")
    if bad:
        pytest.fail("\n".join(bad), pytrace=False)
