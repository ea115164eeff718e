"""LabSession against the virtual lab: ramps as seen on the wire (the emulators' command logs),
restore of every changed setting on success, error and Ctrl-C."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import signal
import struct
import threading
from collections.abc import Iterator

import pytest

from drivers.nkt_koheras_basik import Reg
from drivers.thorlabs_mbx import MzmMode
from qkd_hw.errors import InstrumentError, LimitError
from qkd_hw.lab import VirtualLab, example_path
from qkd_hw.lab.session import LabSession, ramp_values
from qkd_hw.labconfig import LabConfig, RampLimits, load_lab_config


@pytest.fixture(scope="module")
def vlab() -> Iterator[VirtualLab]:
    with VirtualLab(load_lab_config(example_path(virtual=True))) as lab:
        yield lab


def client(lab: VirtualLab, **ramp: float | None) -> LabConfig:
    cfg = lab.client_config
    assert cfg is not None
    fields = {"bias_v_per_step": 0.5, "lo_mw_per_step": 1.0, "step_interval_s": 0.0, **ramp}
    return dataclasses.replace(cfg, ramp=RampLimits(**fields))


def hold_writes(lab: VirtualLab) -> list[int]:
    """mV values of every MZM:HOLD:VOLTAGE setting the bias controller received."""
    out = []
    for cmd in lab.emulator("bias_controller").commands:
        m = re.match(r"MZM:HOLD:VOLTAGE:\s*(-?\d+)$", cmd.upper())
        if m:
            out.append(int(m.group(1)))
    return out


def settings(snapshot: str) -> dict[str, object]:
    """Settings of a session snapshot (readings that drift, e.g. temperatures, left out)."""
    snap = json.loads(snapshot)["instruments"]
    keep = {"laser_lo": ("emission", "power_setpoint_mw"), "bias_i": ("mode", "hold_voltage_v"),
            "switch": ("channel",)}
    return {f"{name}.{p}": snap[name]["properties"][p]["value"]
            for name, props in keep.items() for p in props}


def test_ramp_values_counts_steps() -> None:
    assert ramp_values(0.0, 3.0, 0.5) == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.5, 3.0])
    assert ramp_values(1.0, 1.2, 0.5) == [1.2]
    assert ramp_values(2.0, -1.0, None) == [-1.0]
    assert ramp_values(0.0, -1.0, 0.3) == pytest.approx([-0.25, -0.5, -0.75, -1.0])


def test_bias_change_of_3v_goes_out_as_6_steps(vlab: VirtualLab) -> None:
    with LabSession(client(vlab)) as lab:
        lab.set("bias_controller", "hold_voltage_v", 0.0)
        vlab.emulator("bias_controller").commands.clear()
        lab.set("bias_controller", "hold_voltage_v", 3.0)
        assert hold_writes(vlab) == [500, 1000, 1500, 2000, 2500, 3000]
        vlab.emulator("bias_controller").commands.clear()
    # restore ramps back down to the value before the session (0 V at power-on)
    assert hold_writes(vlab) == [2500, 2000, 1500, 1000, 500, 0]


def test_without_ramp_limit_one_write(vlab: VirtualLab) -> None:
    with LabSession(client(vlab, bias_v_per_step=None)) as lab:
        vlab.emulator("bias_controller").commands.clear()
        lab.set("bias_controller", "hold_voltage_v", 3.0)
        assert hold_writes(vlab) == [3000]


def test_entering_manual_starts_at_the_applied_bias(vlab: VirtualLab) -> None:
    bias = vlab.emulator("bias_controller")
    with LabSession(client(vlab)) as lab:
        lab.set("bias_controller", "hold_voltage_v", 2.0)  # mode OFF: 0 V applied
        bias.commands.clear()
        lab.set("bias_controller", "mode", MzmMode.MANUAL)
        # hold voltage back to the applied 0 V before MANUAL, then ramped to 2 V
        assert hold_writes(vlab) == [0, 500, 1000, 1500, 2000]
        assert bias.working_point_v() == pytest.approx(2.0)
        bias.commands.clear()
    writes = hold_writes(vlab)
    assert writes[:4] == [1500, 1000, 500, 0]  # ramped to 0 V before OFF
    assert bias.mode == MzmMode.OFF and bias.hold_mv == 0


def lo_writes(lab: VirtualLab) -> list[tuple[str, float]]:
    """The LO laser's register writes on the wire: ("mW", set point) and ("emission", 0/1)."""
    out = []
    for reg, data in lab.emulator("lo_laser").writes:
        if reg == Reg.POWER_SETPOINT_MW:
            out.append(("mW", struct.unpack("<H", data)[0] / 100))
        elif reg == Reg.EMISSION:
            out.append(("emission", data[0]))
    return out


def test_lo_emission_and_power_ramp_on_the_wire(vlab: VirtualLab) -> None:
    laser = vlab.emulator("lo_laser")
    with LabSession(client(vlab)) as lab:
        laser.writes.clear()
        lab.set("lo_laser", "power_setpoint_mw", 3.0)  # emission off: no light, one write
        assert lo_writes(vlab) == [("mW", 3.0)]
        laser.writes.clear()
        lab.set("lo_laser", "emission", True)  # starts at one step (1 mW), ramps up
        assert lo_writes(vlab) == [("mW", 1.0), ("emission", 1), ("mW", 2.0), ("mW", 3.0)]
        assert laser.output_power_mw() == pytest.approx(3.0, abs=0.02)
        laser.writes.clear()
        lab.set("lo_laser", "power_setpoint_mw", 5.5)  # emitting: 1 mW steps
        # 2.5 mW in 3 equal steps, sent in 0.01 mW units
        assert lo_writes(vlab) == [("mW", 3.83), ("mW", 4.67), ("mW", 5.5)]
        with pytest.raises(LimitError, match="power_setpoint_mw instead"):
            lab.set("lo_laser", "power_setpoint_dbm", 3.0)
        laser.writes.clear()
    # restore (last changed first): emission off after ramping down to one step, set point
    # back, then the set point before the session (10 mW at power-on), emission off: one write
    # (5.5 -> 1 mW: 4.5 mW in 5 equal steps)
    assert lo_writes(vlab) == [("mW", 4.6), ("mW", 3.7), ("mW", 2.8), ("mW", 1.9),
                               ("mW", 1.0), ("emission", 0), ("mW", 5.5), ("mW", 10.0)]
    assert laser.output_power_mw() == pytest.approx(0.0)


def test_restore_on_error_and_ctrl_c(vlab: VirtualLab) -> None:
    cfg = client(vlab)
    with LabSession(cfg) as lab:
        before = settings(lab.snapshot_json())
    for exc in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(exc)), LabSession(cfg) as lab:
            lab.set("lo_laser", "power_setpoint_mw", 4.0)
            lab.set("lo_laser", "emission", True)
            lab.set("switch", "channel", 2)
            lab.set("bias_controller", "mode", MzmMode.MANUAL)
            lab.set("bias_controller", "hold_voltage_v", 1.5)
            assert settings(lab.snapshot_json()) != before
            raise exc
        with LabSession(cfg) as lab:
            assert settings(lab.snapshot_json()) == before


@pytest.mark.parametrize("how", ["raise", "signal"])
def test_ctrl_c_during_restore_does_not_cut_it_short(vlab: VirtualLab, how: str) -> None:
    timers: list[threading.Timer] = []

    def progress(message: str) -> None:
        if not message.startswith("restore") or timers:
            return
        if how == "raise":
            raise KeyboardInterrupt
        # a real Ctrl-C a moment later, while the restore ramps the bias (0.25 s)
        timers.append(threading.Timer(0.03, os.kill, (os.getpid(), signal.SIGINT)))
        timers[0].start()

    cfg = client(vlab, step_interval_s=0.05)
    with LabSession(cfg) as lab:
        before = settings(lab.snapshot_json())
    with pytest.raises(KeyboardInterrupt), LabSession(cfg, progress=progress) as lab:
        lab.set("switch", "channel", 2)
        lab.set("bias_controller", "hold_voltage_v", 3.0)
    for t in timers:
        t.join()
    with LabSession(cfg) as lab:
        assert settings(lab.snapshot_json()) == before


def test_leaving_an_auto_mode_ramps_from_the_locked_bias(vlab: VirtualLab) -> None:
    bias = vlab.emulator("bias_controller")
    locked_mv = round(1000 * (bias.v_offset + bias.v_pi))  # AUTO_NULL locks at the null
    with LabSession(client(vlab)) as lab:
        lab.set("bias_controller", "mode", MzmMode.AUTO_NULL)
        assert lab.instrument("bias_controller").wait_locked() == pytest.approx(
            locked_mv / 1000)
        bias.commands.clear()
    # restore to OFF: MANUAL at the locked bias, 0.5 V steps down to 0 V, OFF, hold kept
    n = math.ceil(locked_mv / 500)
    assert hold_writes(vlab) == [locked_mv] + [round(locked_mv * (1 - k / n))
                                               for k in range(1, n + 1)] + [0]
    modes = [c for c in bias.commands if c.upper().startswith("MZM:MODE:")]
    assert [int(c.split(":")[-1]) for c in modes] == [int(MzmMode.MANUAL), int(MzmMode.OFF)]
    assert bias.mode == MzmMode.OFF


def test_unknown_or_read_only_property_is_one_clear_error(vlab: VirtualLab) -> None:
    with LabSession(client(vlab)) as lab:
        with pytest.raises(InstrumentError, match="no readable and writable property 'bogus'"):
            lab.set("lo_laser", "bogus", 1)
        with pytest.raises(InstrumentError, match="'output_power_mw'"):
            lab.set("lo_laser", "output_power_mw", 1.0)
        with pytest.raises(InstrumentError, match="has no channels"):
            lab.set("switch", "channel", 2, channel=1)
        with pytest.raises(InstrumentError, match=r"channel must be 1\.\.4, got 7"):
            lab.set("awg", "amplitude_v", 0.5, channel=7)
