"""Thorlabs MBX driver: exact command strings, reply parsing, faults, limits, restore."""

from __future__ import annotations

import math
import time

import pytest

from drivers.emulators.serial_transport import Fault
from drivers.emulators.thorlabs_mbx import ThorlabsMbxEmulator
from drivers.thorlabs_mbx import (
    MzmMode,
    ThorlabsMbx,
    format_setting,
    parse_bool,
    parse_float,
    parse_int,
)
from qkd_hw.errors import InstrumentError, InstrumentTimeoutError, LimitError, ProtocolError
from qkd_hw.labconfig import Limits
from tests.drivers.serial_helpers import TIMEOUT_S, Timer, connected, run_threads, worst_case_s

QUIET_S = TIMEOUT_S  # the MBX transport drains for a full timeout (untagged replies)


@pytest.fixture
def emu():
    return ThorlabsMbxEmulator(v_pi=5.0, v_offset=0.7, calibration_s=0.1)


@pytest.fixture
def mbx(emu):
    with connected(ThorlabsMbx, emu, limits=Limits.of(bias_v=(-4.0, 4.0))) as inst:
        yield inst


def test_format_and_parse():
    assert format_setting("MZM:HOLD:VOLTAGE", -1250) == b"MZM:HOLD:VOLTAGE: -1250"
    assert parse_int("-1250") == -1250
    assert parse_float("3.200") == 3.2 and parse_float("-.5") == -0.5
    assert parse_bool("1") is True
    for bad, fn in [("1.5", parse_int), ("abc", parse_float), ("2", parse_bool),
                    ("", parse_int), ("1e", parse_float)]:
        with pytest.raises(ValueError):
            fn(bad)


def test_exact_bytes_on_the_wire(mbx, emu):
    emu.clear_log()
    mbx.hold_voltage_v = -1.25
    mbx.mode = MzmMode.MANUAL
    assert mbx.mode is MzmMode.MANUAL
    mbx.hold_ratio = 12.5
    mbx.dither_amplitude_mv = 300
    mbx.dither_frequency_hz = 2500
    # MANUAL applies the stored hold voltage: it is read back and checked first
    assert emu.received() == (b"MZM:HOLD:VOLTAGE: -1250\r" b"MZM:HOLD:VOLTAGE?\r"
                              b"MZM:MODE: 7\r" b"MZM:MODE?\r"
                              b"MZM:HOLD:RATIO: 1250\r" b"MZM:DITHER:AMPLITUDE: 300\r"
                              b"MZM:DITHER:FREQUENCY: 2500\r")
    assert emu.sent() == b"1\n-1250\n1\n7\n1\n1\n1\n"


def test_every_property_round_trip(mbx, emu):
    assert (mbx.model, mbx.serial_number, mbx.firmware) == ("MBX", "M00999999", "1.9.4")
    mbx.hold_voltage_v = 1.234
    mbx.mode = MzmMode.MANUAL
    assert emu.hold_mv == 1234 and emu.mode is MzmMode.MANUAL
    assert mbx.hold_voltage_v == pytest.approx(1.234)
    assert mbx.bias_voltage_v == pytest.approx(1.234)
    # ideal MZM: P_in cos^2(pi (V - V_off) / (2 V_pi)) with P_in = 1 mW
    expected = math.cos(math.pi * (1.234 - 0.7) / 10) ** 2
    assert mbx.tap_power_mw == pytest.approx(expected, abs=1e-4)
    assert mbx.tap_power_dbm == pytest.approx(10 * math.log10(expected), abs=0.01)
    assert mbx.locked is True and mbx.calibrating is False
    mbx.hold_ratio = 50
    assert mbx.hold_ratio == 50.0 and emu.ratio == 5000
    mbx.dither_amplitude_mv = 1500
    mbx.dither_frequency_hz = 9000
    assert (mbx.dither_amplitude_mv, mbx.dither_frequency_hz) == (1500, 9000)


def test_auto_mode_calibrates_and_locks_at_working_point(mbx, emu):
    mbx.mode = MzmMode.AUTO_QUAD_POS
    assert mbx.calibrating is True and mbx.locked is False
    volts = mbx.wait_locked(timeout_s=3.0, poll_s=0.02)
    assert volts == pytest.approx(0.7 + 2.5)  # V_off + V_pi / 2
    mbx.calibrate()
    assert mbx.calibrating is True
    assert emu.commands[-2] == "MZM:RESET"


def test_locked_outside_lab_limit_raises(emu):
    with connected(ThorlabsMbx, emu, limits=Limits.of(bias_v=(-3.0, 3.0))) as mbx:
        mbx.mode = MzmMode.AUTO_QUAD_POS  # locks at 3.2 V
        with pytest.raises(LimitError, match="locked bias voltage"):
            mbx.wait_locked(timeout_s=3.0, poll_s=0.02)


def test_wait_locked_times_out(mbx, emu):
    emu.calibration_s = 10.0
    mbx.calibrate()
    with Timer() as t, pytest.raises(InstrumentTimeoutError, match="not locked"):
        mbx.wait_locked(timeout_s=0.3, poll_s=0.05)
    assert t.elapsed < 1.5


def test_physics_hook():
    def measure(quantity, state):
        return {"input_power_mw": 2.0, "bias_voltage_v": 0.7, "tap_power_mw": 1.5}[quantity]

    with connected(ThorlabsMbx, ThorlabsMbxEmulator(measure=measure)) as mbx:
        assert mbx.bias_voltage_v == pytest.approx(0.7)
        assert mbx.tap_power_mw == pytest.approx(1.5)


def test_rejected_setting_is_instrument_error_not_retried(mbx, emu):
    emu.clear_log()
    emu.inject(Fault.NACK)  # the controller answers 0
    with pytest.raises(InstrumentError, match="not accepted") as info:
        mbx.dither_frequency_hz = 3000
    assert info.value.command == "MZM:DITHER:FREQUENCY: 3000" and info.value.reply == "0"
    assert emu.received() == b"MZM:DITHER:FREQUENCY: 3000\r"


def test_unparseable_reply_is_protocol_error(mbx, emu):
    orig = emu.handle
    emu.handle = lambda request: b"OK?\n" if request == "MZM:HOLD:VOLTAGE?" else orig(request)
    with pytest.raises(ProtocolError, match="not an integer") as info:
        mbx.hold_voltage_v  # noqa: B018
    assert info.value.reply == "OK?" and "after 3 attempts" in str(info.value)
    assert emu.received().count(b"MZM:HOLD:VOLTAGE?\r") == 3


@pytest.mark.parametrize(("prop", "value"), [
    ("hold_voltage_v", 4.5), ("hold_voltage_v", -10.5), ("hold_ratio", 1.0),
    ("dither_amplitude_mv", 10), ("dither_frequency_hz", 10001), ("mode", 12),
    ("dither_amplitude_mv", 100.5)])
def test_limit_violation_sends_nothing(mbx, emu, prop, value):
    emu.clear_log()
    with pytest.raises(LimitError):
        setattr(mbx, prop, value)
    time.sleep(0.05)
    assert emu.received() == b""


@pytest.mark.parametrize("hold_mv", [9000, -4500])
def test_manual_mode_refused_when_stored_hold_voltage_exceeds_limit(mbx, emu, hold_mv):
    emu.hold_mv = hold_mv  # left by a previous session / the front panel
    emu.clear_log()
    with pytest.raises(LimitError, match=r"stored hold voltage.*bias_v \[-4, 4\]") as info:
        mbx.mode = MzmMode.MANUAL
    assert info.value.instrument == "dut"
    assert repr(hold_mv / 1000) in str(info.value)
    assert emu.received() == b"MZM:HOLD:VOLTAGE?\r"  # read, mode never sent
    assert emu.mode is MzmMode.OFF and emu.bias_v() == 0.0
    mbx.hold_voltage_v = 3.5  # a legal hold voltage: MANUAL is allowed
    mbx.mode = MzmMode.MANUAL
    assert emu.mode is MzmMode.MANUAL and emu.bias_v() == 3.5


def test_other_modes_do_not_need_the_hold_voltage(mbx, emu):
    emu.hold_mv = 9000
    emu.clear_log()
    mbx.mode = MzmMode.AUTO_NULL
    assert emu.received() == b"MZM:MODE: 2\r"


@pytest.mark.parametrize(("limit", "value", "sent"), [
    ((None, 1.0007), 1.0007, b"MZM:HOLD:VOLTAGE: 1000\r"),  # nearest 1001 mV > limit
    ((-1.0007, None), -1.0007, b"MZM:HOLD:VOLTAGE: -1000\r"),
    ((None, 1.0007), 1.0004, b"MZM:HOLD:VOLTAGE: 1000\r"),  # nearest inside: kept
    ((None, 1.0017), 1.0007, b"MZM:HOLD:VOLTAGE: 1001\r"),
    ((None, None), 1.0007, b"MZM:HOLD:VOLTAGE: 1001\r"),  # no limit: nearest mV
])
def test_hold_voltage_quantised_inside_limit(emu, limit, value, sent):
    with connected(ThorlabsMbx, emu, limits=Limits.of(bias_v=limit)) as mbx:
        emu.clear_log()
        mbx.hold_voltage_v = value
        assert emu.received() == sent
        assert abs(emu.hold_mv / 1000 - value) < 0.001


def test_hold_voltage_limit_narrower_than_a_step_refused(emu):
    with connected(ThorlabsMbx, emu, limits=Limits.of(bias_v=(1.0003, 1.0007))) as mbx:
        emu.clear_log()
        with pytest.raises(LimitError, match=r"hold_voltage_v.*step") as info:
            mbx.hold_voltage_v = 1.0005
        assert info.value.instrument == "dut"
        time.sleep(0.05)
        assert emu.received() == b"" and emu.hold_mv == 0


@pytest.mark.parametrize("fault", [Fault.DROP, Fault.GARBLE, Fault.PARTIAL, Fault.NOISE,
                                   Fault.HANGUP])
def test_transient_fault_recovered_within_bounds(mbx, emu, fault):
    mbx.hold_voltage_v = -2.0
    emu.inject(fault)
    with Timer() as t:
        assert mbx.hold_voltage_v == pytest.approx(-2.0)
    assert t.elapsed < worst_case_s(2, TIMEOUT_S, QUIET_S)
    assert mbx.mode is MzmMode.OFF  # next query in step


def test_persistent_silence_is_bounded(mbx, emu):
    emu.inject(Fault.DROP, count=100)
    with Timer() as t, pytest.raises(InstrumentTimeoutError) as info:
        mbx.mode  # noqa: B018
    assert t.elapsed < worst_case_s(3, TIMEOUT_S, QUIET_S, extra=2 * TIMEOUT_S)
    assert info.value.command == "MZM:MODE?"


def test_late_reply_never_attributed_to_next_query(emu):
    with connected(ThorlabsMbx, emu, retries=0) as mbx:
        mbx.hold_voltage_v = -2.0
        emu.inject(Fault.DELAY, delay=1.5 * TIMEOUT_S)
        with pytest.raises(InstrumentTimeoutError):
            mbx.hold_voltage_v  # noqa: B018
        # the late "-2000" must not be read as the mode or the dither frequency
        assert mbx.mode is MzmMode.OFF
        assert mbx.dither_frequency_hz == 2000
        assert mbx.hold_voltage_v == pytest.approx(-2.0)


def test_very_late_reply_dropped_by_sync_query(mbx, emu):
    # The late "0" (mode OFF) arrives after the drain of the resync, while the next query
    # waits for its reply; only the SYSTEM:MODEL? handshake can tell it is stale.
    mbx.hold_voltage_v = -2.0
    emu.inject(Fault.DELAY, delay=2.5 * TIMEOUT_S)
    with pytest.raises(InstrumentTimeoutError):
        mbx.query("MZM:MODE?", parse_int, retries=0)
    with Timer() as t:
        assert mbx.hold_voltage_v == pytest.approx(-2.0)
    assert t.elapsed < worst_case_s(1, TIMEOUT_S, QUIET_S, extra=2 * TIMEOUT_S)
    assert mbx.mode is MzmMode.OFF


def test_out_of_range_mode_reply_is_protocol_error(mbx, emu):
    orig = emu.handle
    emu.handle = lambda request: b"42\n" if request == "MZM:MODE?" else orig(request)
    with pytest.raises(ProtocolError, match="42"):
        mbx.mode  # noqa: B018


def test_threads_share_one_controller(mbx, emu):
    mbx.hold_voltage_v = 1.5
    mbx.dither_amplitude_mv = 400

    def worker(i: int) -> None:
        for k in range(10):
            if i == 1 and k == 4:
                emu.inject(Fault.GARBLE)
            if (i + k) % 3 == 0:
                assert mbx.hold_voltage_v == pytest.approx(1.5)
            elif (i + k) % 3 == 1:
                assert mbx.dither_amplitude_mv == 400
            else:
                assert mbx.mode is MzmMode.OFF

    assert run_threads(worker, 4) == []


def test_bias_session_restores_on_error(mbx, emu):
    mbx.hold_voltage_v = 0.5
    mbx.mode = MzmMode.MANUAL
    with pytest.raises(KeyboardInterrupt), mbx.bias_session():
        mbx.hold_voltage_v = 3.0
        mbx.mode = MzmMode.AUTO_NULL
        raise KeyboardInterrupt
    assert emu.mode is MzmMode.MANUAL and emu.hold_mv == 500


def test_emulator_accepts_short_forms_and_rejects_unknown(mbx, emu):
    assert mbx.query("MZM:HOLD:V?", parse_int) == 0
    assert mbx.query("SYS:MODEL?", str) == "MBX"
    assert mbx.query("SYSTEM:MODEL?", str) == "MBX"
    with pytest.raises(InstrumentError, match="not accepted"):
        mbx.set("MZM:BOGUS", 1)


@pytest.mark.parametrize(("mode", "phase"), [
    (MzmMode.AUTO_NULL, math.pi / 2), (MzmMode.AUTO_PEAK, 0.0),
    (MzmMode.AUTO_QUAD_POS, math.pi / 4), (MzmMode.AUTO_QUAD_NEG, -math.pi / 4),
])
def test_emulator_working_point_is_the_modes_bias_for_the_lab(mbx, emu, mode, phase):
    # the virtual lab reads working_point_v(): the bias of the mode set over the wire, i.e.
    # the MZM field phase pi (V - V_off) / (2 V_pi) of the mode's transmission point
    mbx.mode = mode
    v = emu.working_point_v()
    assert math.pi * (v - emu.v_offset) / (2 * emu.v_pi) == pytest.approx(phase)
    assert mbx.bias_voltage_v == pytest.approx(v, abs=1e-3)
