"""Koheras BasiK driver through real pyserial to the pty emulator: registers, faults, safety."""

from __future__ import annotations

import math
import signal
import struct
import threading
import time

import pytest

from drivers.emulators.nkt_koheras_basik import KoherasBasikEmulator
from drivers.emulators.serial_transport import Fault
from drivers.nkt_interbus import FrameSplitter, MessageType, decode
from drivers.nkt_koheras_basik import BasikStatus, KoherasBasik, Reg
from qkd_hw.errors import (
    CommunicationError,
    InstrumentError,
    InstrumentTimeoutError,
    LimitError,
    ProtocolError,
)
from qkd_hw.labconfig import Limits
from tests.drivers.serial_helpers import TIMEOUT_S, Timer, connected, run_threads, worst_case_s

QUIET_S = 0.05  # SerialTransport quiet period of the Interbus driver: min(0.05, timeout)


@pytest.fixture
def emu():
    return KoherasBasikEmulator(standard_wavelength_nm=1550.12)


@pytest.fixture
def laser(emu):
    with connected(KoherasBasik, emu,
                   limits=Limits.of(power_mw=(None, 20.0), wavelength_nm=(1550.0, 1550.2))
                   ) as inst:
        yield inst


def requests(emu):
    """Telegrams the emulator received (decoded)."""
    splitter = FrameSplitter()
    return [decode(f) for f in splitter.feed(emu.received())]


def test_init_touches_nothing(emu):
    with emu:
        KoherasBasik.from_resource(emu.port)
        time.sleep(0.05)
        assert emu.received() == b""


def test_open_identifies_module(laser, emu):
    assert laser.module_type == 0x33
    assert laser.serial_number == "EMU12345"
    assert laser.standard_wavelength_nm == pytest.approx(1550.12, abs=1e-9)


def test_open_rejects_other_module_type(emu):
    emu.read_reg = lambda reg, orig=emu.read_reg: b"\x21" if reg == Reg.MODULE_TYPE else orig(reg)
    with emu:
        inst = KoherasBasik.from_resource(emu.port, timeout_s=TIMEOUT_S)
        with pytest.raises(InstrumentError, match="type 0x21"):
            inst.open()
        assert not inst.is_open


def test_power_setpoint_bytes_on_the_wire(laser, emu):
    emu.clear_log()
    laser.power_setpoint_mw = 12.34
    (req,) = requests(emu)
    assert (req.destination, req.type, req.register, req.data) == (
        1, MessageType.WRITE, 0x22, struct.pack("<H", 1234))
    assert 161 <= req.source <= 255
    assert emu.power_raw == 1234
    assert laser.power_setpoint_mw == pytest.approx(12.34)
    assert laser.power_setpoint_dbm == pytest.approx(10 * math.log10(12.34), abs=0.006)


def test_power_setpoint_dbm_and_emission_roundtrip(laser, emu):
    laser.power_setpoint_dbm = 10.0
    assert emu.power_raw == 1000
    assert laser.emission is False
    assert laser.output_power_mw == 0.0
    laser.emission = True
    assert emu.emission == 1
    assert laser.emission is True
    assert laser.output_power_mw == pytest.approx(10.0)
    assert laser.output_power_dbm == pytest.approx(10.0)
    status = laser.status
    assert BasikStatus.EMISSION in status and BasikStatus.WAVELENGTH_STABILIZED in status
    laser.emission = False
    assert emu.emission == 0 and laser.output_power_mw == 0.0


def test_wavelength_offset_and_readouts(laser, emu):
    laser.wavelength_offset_setpoint_pm = -12.3
    assert emu.offset_raw == -123
    assert laser.wavelength_offset_setpoint_pm == pytest.approx(-12.3)
    assert laser.wavelength_offset_pm == pytest.approx(-12.3)
    assert laser.wavelength_nm == pytest.approx(1550.12 - 0.0123)
    laser.wavelength_setpoint_nm = 1550.15
    assert emu.offset_raw == 300
    assert laser.wavelength_setpoint_nm == pytest.approx(1550.15)
    assert laser.module_temperature_c == pytest.approx(25.0)
    assert laser.supply_voltage_v == pytest.approx(12.0)
    assert laser.error_code == 0
    laser.setup_bits = 0x0100
    assert emu.setup == 0x0100 and laser.setup_bits == 0x0100


def test_read_only_properties_refuse_writes(laser):
    with pytest.raises(AttributeError):
        laser.output_power_mw = 1.0


def test_interlock_problem_reported(laser, emu):
    emu.interlock_closed = False
    laser.emission = True
    assert laser.output_power_mw == 0.0
    assert "INTERLOCK_OFF" in laser.problems()


def test_physics_hook_supplies_measured_values():
    seen = []

    def measure(quantity, state):
        seen.append((quantity, state["emission"]))
        return {"output_power_mw": 3.21, "module_temperature_c": 31.4,
                "wavelength_offset_pm": 5.5}[quantity]

    with connected(KoherasBasik, KoherasBasikEmulator(measure=measure)) as laser:
        laser.emission = True
        assert laser.output_power_mw == pytest.approx(3.21)
        assert laser.module_temperature_c == pytest.approx(31.4)
        assert laser.wavelength_offset_pm == pytest.approx(5.5)
    assert ("output_power_mw", True) in seen


def test_nack_is_final_and_names_the_register(emu):
    with connected(KoherasBasik, emu) as laser:  # no lab limit: the module's 40 mW applies
        emu.clear_log()
        with pytest.raises(InstrumentError, match="NACK") as info:
            laser.power_setpoint_mw = 50.0
        assert type(info.value) is InstrumentError
        assert "0x22" in str(info.value.command)
        assert len(requests(emu)) == 1  # not resent
        assert emu.power_raw == 1000


# -- limits -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("prop", "value"), [
    ("power_setpoint_mw", 20.5), ("power_setpoint_dbm", 13.5),
    ("wavelength_offset_setpoint_pm", 100.0), ("wavelength_offset_setpoint_pm", -150.0),
    ("power_setpoint_mw", -1.0), ("power_setpoint_mw", float("nan")),
    ("emission", 2),
])
def test_limit_violation_sends_nothing(laser, emu, prop, value):
    emu.clear_log()
    with pytest.raises(LimitError, match=r"nothing was sent|outside|must be"):
        setattr(laser, prop, value)
    time.sleep(0.05)
    assert emu.received() == b""


def test_emission_refused_when_stored_setpoint_exceeds_limit(emu):
    emu.power_raw = 3000  # 30 mW stored in the module from an earlier session
    with connected(KoherasBasik, emu, limits=Limits.of(power_mw=(None, 20.0))) as laser:
        emu.clear_log()
        with pytest.raises(LimitError, match="stored power set point"):
            laser.emission = True
        assert [r.type for r in requests(emu)] == [MessageType.READ]  # read, never written
        assert emu.emission == 0


@pytest.mark.parametrize("offset_raw", [2500, -1500])  # 1550.37 nm / 1549.97 nm stored
def test_emission_refused_when_stored_wavelength_exceeds_limit(emu, offset_raw):
    emu.offset_raw = offset_raw  # left in the module by an earlier session / front panel
    with connected(KoherasBasik, emu, limits=Limits.of(power_mw=(None, 20.0),
                                                       wavelength_nm=(1550.0, 1550.2))) as laser:
        emu.clear_log()
        with pytest.raises(LimitError, match=r"stored wavelength set point.*wavelength_nm") as info:
            laser.emission = True
        assert info.value.instrument == "dut"
        assert f"{1550.12 + offset_raw * 1e-4:.2f}" in str(info.value)
        assert {r.type for r in requests(emu)} == {MessageType.READ}  # read, never written
        assert Reg.EMISSION not in [r.register for r in requests(emu)]
        assert emu.emission == 0 and not emu.emitting
        emu.offset_raw = 500  # 1550.17 nm: inside the limit, emission allowed
        laser.emission = True
        assert emu.emitting


# -- quantisation to the register step (checked as sent: rounded towards the inside) ------------


def writes(emu):
    return [(r.register, r.data) for r in requests(emu) if r.type == MessageType.WRITE]


@pytest.mark.parametrize(("limits", "prop", "value", "register", "data"), [
    # nearest step 10.01 mW > 10.006: the step inside (10.00) is sent
    ({"power_mw": (None, 10.006)}, "power_setpoint_mw", 10.006, 0x22, struct.pack("<H", 1000)),
    ({"power_mw": (9.994, None)}, "power_setpoint_mw", 9.994, 0x22, struct.pack("<H", 1000)),
    # power_dbm limit on the mW set point: 9.9985 mW = 9.99935 dBm, 10.00 mW = 10 dBm > 9.9995
    ({"power_dbm": (None, 9.9995)}, "power_setpoint_mw", 9.9985, 0x22, struct.pack("<H", 999)),
    ({"power_dbm": (None, 10.006)}, "power_setpoint_dbm", 10.006, 0xA0, struct.pack("<h", 1000)),
    # power_mw limit on the dBm set point: 10.0 dBm = 10.0 mW > 9.9995 mW
    ({"power_mw": (None, 9.9995)}, "power_setpoint_dbm", 9.99975, 0xA0, struct.pack("<h", 999)),
    # wavelength: 1550.12 nm + 50.1 pm > 1550.17008 nm -> 50.0 pm; low side likewise
    ({"wavelength_nm": (1550.0, 1550.17008)}, "wavelength_offset_setpoint_pm", 50.06, 0x2A,
     struct.pack("<h", 500)),
    ({"wavelength_nm": (1549.99992, 1550.2)}, "wavelength_offset_setpoint_pm", -120.06, 0x2A,
     struct.pack("<h", -1200)),
    # nearest step inside the limit: the nearest step is kept
    ({"power_mw": (None, 10.006)}, "power_setpoint_mw", 10.004, 0x22, struct.pack("<H", 1000)),
    ({"power_mw": (None, 10.016)}, "power_setpoint_mw", 10.006, 0x22, struct.pack("<H", 1001)),
    # no limit: plain nearest step
    ({}, "power_setpoint_mw", 10.006, 0x22, struct.pack("<H", 1001)),
])
def test_quantised_setpoint_never_beyond_limit(emu, limits, prop, value, register, data):
    with connected(KoherasBasik, emu, limits=Limits.of(**limits)) as laser:
        emu.clear_log()
        setattr(laser, prop, value)
        assert writes(emu) == [(register, data)]


@pytest.mark.parametrize(("limits", "prop", "value"), [
    ({"power_mw": (10.002, 10.008)}, "power_setpoint_mw", 10.005),  # no 0.01 mW step inside
    ({"power_dbm": (10.002, 10.008)}, "power_setpoint_dbm", 10.005),
    ({"wavelength_nm": (1550.17002, 1550.17008)}, "wavelength_offset_setpoint_pm", 50.05),
])
def test_limit_narrower_than_a_step_refused(emu, limits, prop, value):
    with connected(KoherasBasik, emu, limits=Limits.of(**limits)) as laser:
        emu.clear_log()
        with pytest.raises(LimitError, match="step") as info:
            setattr(laser, prop, value)
        assert info.value.instrument == "dut"
        assert writes(emu) == []


# -- faults -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", [Fault.DROP, Fault.GARBLE, Fault.BAD_CHECKSUM, Fault.BUSY,
                                   Fault.PARTIAL, Fault.NOISE, Fault.HANGUP])
def test_transient_fault_recovered_within_bounds(laser, emu, fault):
    laser.power_setpoint_mw = 7.5
    emu.inject(fault)
    with Timer() as t:
        assert laser.power_setpoint_mw == pytest.approx(7.5)
    assert t.elapsed < worst_case_s(2, TIMEOUT_S, QUIET_S)
    assert laser.module_temperature_c == pytest.approx(25.0)  # next query in step


def test_persistent_silence_raises_timeout_in_bounded_time(laser, emu):
    emu.inject(Fault.DROP, count=100)
    with Timer() as t, pytest.raises(InstrumentTimeoutError) as info:
        laser.power_setpoint_mw  # noqa: B018
    assert t.elapsed < worst_case_s(3, TIMEOUT_S, QUIET_S)
    assert t.elapsed >= 3 * TIMEOUT_S
    assert "after 3 attempts" in str(info.value) and info.value.instrument == "dut"
    emu.clear_faults()
    assert laser.power_setpoint_mw == pytest.approx(10.0)


def test_persistent_bad_crc_raises(laser, emu):
    emu.inject(Fault.BAD_CHECKSUM, count=100)
    with Timer() as t, pytest.raises(CommunicationError):
        laser.emission  # noqa: B018
    assert t.elapsed < worst_case_s(3, TIMEOUT_S, QUIET_S)


def test_late_reply_skipped_by_retry(laser, emu):
    laser.power_setpoint_mw = 5.0
    emu.inject(Fault.DELAY, delay=2.5 * TIMEOUT_S)  # later than the first two attempts
    with Timer() as t:
        assert laser.module_temperature_c == pytest.approx(25.0)
    assert t.elapsed < worst_case_s(3, TIMEOUT_S, QUIET_S)
    assert laser.power_setpoint_mw == pytest.approx(5.0)
    assert laser.supply_voltage_v == pytest.approx(12.0)


def test_late_reply_never_attributed_to_next_query(emu):
    with connected(KoherasBasik, emu, retries=0) as laser:
        laser.power_setpoint_mw = 5.0
        emu.inject(Fault.DELAY, delay=1.5 * TIMEOUT_S)
        with pytest.raises(InstrumentTimeoutError):
            laser.power_setpoint_mw  # noqa: B018
        # the late datagram (register 0x22, old host address) arrives during this query
        assert laser.module_temperature_c == pytest.approx(25.0)
        assert laser.supply_voltage_v == pytest.approx(12.0)
        assert laser.power_setpoint_mw == pytest.approx(5.0)


def test_write_toggle_is_never_resent(laser, emu):
    emu.clear_log()
    emu.inject(Fault.DROP)
    with pytest.raises(InstrumentTimeoutError, match="not resent"):
        laser.write_register(Reg.SETUP, b"\x01\x00", mtype=MessageType.WRITE_TOGGLE)
    assert [r.type for r in requests(emu)] == [MessageType.WRITE_TOGGLE]


def test_wrong_reply_type_is_protocol_error(laser, emu):
    orig = emu.handle

    def datagram_for_write(frame):
        reply = orig(frame)
        t = decode(reply)
        if t.type == MessageType.ACK:
            return type(t)(t.destination, t.source, MessageType.DATAGRAM, t.register).encode()
        return reply

    emu.handle = datagram_for_write
    with pytest.raises(ProtocolError, match="instead of ACK"):
        laser.power_setpoint_mw = 3.0


def test_threads_share_one_laser(laser, emu):
    laser.power_setpoint_mw = 12.5
    emu.inject(Fault.GARBLE, count=2)  # at most 2 faults per transaction: retries=2
    expected = {"power_setpoint_mw": 12.5, "module_temperature_c": 25.0,
                "supply_voltage_v": 12.0, "wavelength_offset_setpoint_pm": 0.0}
    names = list(expected)

    def worker(i: int) -> None:
        for k in range(15):
            if i == 0 and k in (5, 10):
                emu.inject(Fault.BAD_CHECKSUM if k == 5 else Fault.DROP)
            name = names[(i + k) % len(names)]
            assert getattr(laser, name) == pytest.approx(expected[name]), name

    assert run_threads(worker, 4) == []


# -- safe procedures ----------------------------------------------------------------------------


def test_emission_session_turns_emission_off_on_error(laser, emu):
    with pytest.raises(RuntimeError), laser.emission_session():
        assert emu.emission == 1
        raise RuntimeError("procedure failed")
    assert emu.emission == 0


def test_emission_session_restores_entry_state(laser, emu):
    with laser.emission_session():
        assert emu.emission == 1
    assert emu.emission == 0
    with laser.emission_session(keep_on=True):
        pass
    assert emu.emission == 1
    with pytest.raises(KeyboardInterrupt), laser.emission_session():
        raise KeyboardInterrupt
    assert emu.emission == 1  # it was on before: left on


def test_settings_session_restores_setpoints_on_error(laser, emu):
    laser.power_setpoint_mw = 4.0
    with pytest.raises(ValueError), laser.settings_session():
        laser.power_setpoint_mw = 15.0
        laser.wavelength_offset_setpoint_pm = 50.0
        raise ValueError
    assert emu.power_raw == 400 and emu.offset_raw == 0


def test_ctrl_c_does_not_split_query_from_reply(laser, emu):
    laser.power_setpoint_mw = 6.0
    emu.inject(Fault.DELAY, delay=0.1)
    timer = threading.Timer(0.03, signal.raise_signal, (signal.SIGINT,))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        laser.power_setpoint_mw  # noqa: B018
    timer.join()
    # the reply was read inside the transaction: nothing stale left for the next query
    time.sleep(0.05)
    assert laser.transport.flush_input() == b""
    assert laser.module_temperature_c == pytest.approx(25.0)


def test_emission_off_on_close_option(emu):
    with connected(KoherasBasik, emu, options={"emission_off_on_close": True}) as laser:
        laser.emission = True
        assert emu.emission == 1
    assert emu.emission == 0


# -- emulator behaviour at telegram level ------------------------------------------------------


def test_emulator_crc_error_reply_and_bus_addressing(emu):
    from drivers.nkt_interbus import Telegram
    from drivers.serial_transport import SerialTransport

    with emu:
        t = SerialTransport(emu.port, timeout_s=TIMEOUT_S)
        t.open()
        try:
            t.write(Telegram(2, 0xA1, MessageType.READ, 0x30).encode())  # another module
            assert t.read_until(b"\n", partial_ok=True) == b""
            bad = bytearray(Telegram(1, 0xA1, MessageType.READ, 0x30).encode())
            bad[-2] ^= 0x01  # CRC low byte corrupted on the way
            t.write(bytes(bad))
            reply = decode(t.read_until(b"\n"))
            assert (reply.type, reply.destination, reply.register) == (
                MessageType.CRC_ERROR, 0xA1, 0x30)
            t.write(Telegram(1, 0xA1, MessageType.WRITE, Reg.STATUS, b"\0\0").encode())
            assert decode(t.read_until(b"\n")).type == MessageType.NACK  # read-only register
        finally:
            t.close()


def test_crc_error_reply_is_retried(laser, emu):
    orig, calls = emu.handle, []

    def corrupt_first(frame):
        calls.append(frame)
        if len(calls) == 1:  # the module saw our first request with a bad CRC
            req = decode(frame)
            return type(req)(req.source, 1, MessageType.CRC_ERROR, req.register).encode()
        return orig(frame)

    emu.handle = corrupt_first
    assert laser.power_setpoint_mw == pytest.approx(10.0)
    assert len(calls) == 2


def test_lab_config_file_drives_limits_and_options(emu, tmp_path):
    from qkd_hw.errors import ConfigError
    from qkd_hw.labconfig import load_lab_config

    with emu:
        path = tmp_path / "lab.toml"
        path.write_text(f"""
[instruments.lo_laser]
driver = "nkt_koheras_basik"
resource = "{emu.port}"
timeout_s = 0.2
[instruments.lo_laser.limits]
power_dbm = {{ max = 10.0 }}
[instruments.lo_laser.options]
address = 1
""")
        cfg = load_lab_config(path).instrument("lo_laser")
        with KoherasBasik(cfg) as laser:
            emu.clear_log()
            with pytest.raises(LimitError, match="power_dbm") as info:
                laser.power_setpoint_mw = 10.5  # 10.21 dBm
            assert str(path) in str(info.value)
            assert emu.received() == b""
            laser.power_setpoint_mw = 9.9
        bad = cfg.__class__(**{**cfg.__dict__, "options": {"address": 200}})
        with pytest.raises(ConfigError, match="address"):
            KoherasBasik(bad)
        bad = cfg.__class__(**{**cfg.__dict__, "options": {"adress": 1}})
        with pytest.raises(ConfigError, match="adress"):
            KoherasBasik(bad)


def test_traffic_logged_at_debug(laser, emu, caplog):
    import logging

    emu.clear_log()
    with caplog.at_level(logging.DEBUG, logger="drivers.dut"):
        laser.power_setpoint_mw = 2.5
    messages = [r.getMessage() for r in caplog.records]
    assert f"-> {emu.received()!r}" in messages
    assert f"<- {emu.sent()!r}" in messages


def test_wavelength_offset_limit_message_names_the_pm_request_and_the_wavelength(laser, emu):
    # standard 1550.12 nm + 100 pm = 1550.22 nm > 1550.2 nm: the message shows the request in
    # the property's unit (pm) and the wavelength the limit is on (nm), never nm under a pm name
    emu.clear_log()
    with pytest.raises(LimitError) as info:
        laser.wavelength_offset_setpoint_pm = 100.0
    msg = str(info.value)
    assert "wavelength_offset_setpoint_pm (100.0 pm)" in msg
    assert "= 1550.22 nm violates lab-config limit wavelength_nm [1550, 1550.2]" in msg
    assert "_pm = 1550" not in msg
    assert emu.received() == b""


def test_emulator_output_power_follows_emission_interlock_and_setpoint(laser, emu):
    # the virtual lab reads output_power_mw(): what the module emits after the wire commands
    laser.emission = False
    laser.power_setpoint_mw = 7.5
    assert emu.output_power_mw() == 0.0
    laser.emission = True
    assert emu.output_power_mw() == pytest.approx(7.5)
    emu.interlock_closed = False
    assert emu.output_power_mw() == 0.0
    assert laser.output_power_mw == 0.0
