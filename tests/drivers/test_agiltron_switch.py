"""Agiltron switch driver: 4-byte frames, verification, faults, limits, restore."""

from __future__ import annotations

import time

import pytest

from drivers.agiltron_switch import AgiltronSwitch, decode_reply, frame
from drivers.emulators.agiltron_switch import AgiltronSwitchEmulator
from drivers.emulators.serial_transport import Fault
from qkd_hw.errors import (
    ConfigError,
    InstrumentError,
    InstrumentTimeoutError,
    LimitError,
    ProtocolError,
)
from qkd_hw.labconfig import Limits
from tests.drivers.serial_helpers import TIMEOUT_S, Timer, connected, run_threads, worst_case_s

QUIET_S = TIMEOUT_S  # untagged replies: the drain waits for a quiet full timeout


@pytest.fixture
def emu():
    return AgiltronSwitchEmulator(channels=4)


@pytest.fixture
def switch(emu):
    with connected(AgiltronSwitch, emu, limits=Limits.of(channel=(1, 3)),
                   options={"channels": 4}) as inst:
        yield inst


def test_frames_match_command_list():
    assert frame(0x11) == bytes.fromhex("01 11 00 00")
    assert frame(0x12, 3) == bytes.fromhex("01 12 00 03")
    with pytest.raises(ValueError):
        frame(0x13)


@pytest.mark.parametrize(("reply", "command", "ok"), [
    ("01 11 00 02", 0x11, 2), ("01 12 00 04", 0x12, 4),
    ("02 11 00 02", 0x11, None), ("01 12 00 02", 0x11, None), ("01 11 01 02", 0x11, None),
    ("01 11 00 05", 0x11, None), ("01 11 00 00", 0x11, None), ("01 11 00", 0x11, None)])
def test_decode_reply(reply, command, ok):
    raw = bytes.fromhex(reply)
    if ok is None:
        with pytest.raises(ProtocolError) as info:
            decode_reply(raw, command, 4)
        assert info.value.reply == raw
    else:
        assert decode_reply(raw, command, 4) == ok


def test_select_sends_exact_frames_and_verifies(switch, emu):
    emu.clear_log()
    switch.channel = 3
    assert emu.received() == bytes.fromhex("01 12 00 03  01 11 00 00")
    assert emu.sent() == bytes.fromhex("01 12 00 03  01 11 00 03")
    assert emu.channel == 3 and switch.channel == 3
    switch.select_channel(2)
    assert emu.channel == 2


def test_unconfirmed_switching_raises(switch, emu):
    orig = emu.handle

    def stuck(req):  # echoes the selection but does not move
        if req[1] == 0x12:
            return req
        return orig(req)

    emu.handle = stuck
    with pytest.raises(InstrumentError, match="reports channel 1 after selecting 2"):
        switch.channel = 2


def test_confirm_reads_option(emu):
    with connected(AgiltronSwitch, emu, options={"channels": 4, "confirm_reads": True}) as sw:
        emu.clear_log()
        assert sw.channel == 1
        assert emu.received() == bytes.fromhex("01 11 00 00") * 2
        emu.channel = 2
        orig, calls = emu.handle, []

        def flaky(req):  # the first read reports a wrong (but valid) channel
            calls.append(req)
            reply = orig(req)
            return reply[:3] + b"\x03" if len(calls) == 1 else reply

        emu.handle = flaky
        with pytest.raises(ProtocolError, match="disagree"):
            sw.channel  # noqa: B018


@pytest.mark.parametrize("value", [4, 0, 9, 2.5, "2"])
def test_limit_violation_sends_nothing(switch, emu, value):
    emu.clear_log()
    with pytest.raises(LimitError):
        switch.channel = value
    time.sleep(0.05)
    assert emu.received() == b""


def test_channel_beyond_switch_size_sends_nothing(emu):
    with connected(AgiltronSwitch, emu, options={"channels": 2}) as sw:
        emu.clear_log()
        with pytest.raises(LimitError, match=r"1\.\.2"):
            sw.channel = 3
        assert emu.received() == b""


def test_bad_channels_option(emu):
    with pytest.raises(ConfigError, match="channels"):
        AgiltronSwitch.from_resource("/dev/null", options={"channels": 0})


@pytest.mark.parametrize("fault", [Fault.DROP, Fault.GARBLE, Fault.PARTIAL, Fault.NOISE,
                                   Fault.HANGUP, Fault.DELAY])
def test_transient_fault_recovered_within_bounds(switch, emu, fault):
    switch.channel = 2
    emu.inject(fault, delay=0.5 * TIMEOUT_S)
    with Timer() as t:
        assert switch.channel == 2
    assert t.elapsed < worst_case_s(2, TIMEOUT_S, QUIET_S)
    emu.inject(fault, delay=0.5 * TIMEOUT_S)
    switch.channel = 3  # the selection and its read-back survive the fault too
    assert emu.channel == 3


def test_persistent_silence_is_bounded(switch, emu):
    emu.inject(Fault.DROP, count=100)
    with Timer() as t, pytest.raises(InstrumentTimeoutError) as info:
        switch.channel  # noqa: B018
    assert t.elapsed < worst_case_s(3, TIMEOUT_S, QUIET_S)
    assert info.value.command == "01 11 00 00"


def test_late_echo_never_attributed_to_next_query(emu):
    with connected(AgiltronSwitch, emu, retries=0, options={"channels": 4}) as sw:
        emu.inject(Fault.DELAY, delay=1.5 * TIMEOUT_S)
        with pytest.raises(InstrumentTimeoutError):
            sw.read_channel()
        emu.channel = 4
        assert sw.read_channel() == 4  # the late "01 11 00 01" was drained


def test_threads_share_one_switch(switch, emu):
    def worker(i: int) -> None:
        for k in range(8):
            if i == 2 and k == 3:
                emu.inject(Fault.GARBLE)
            assert switch.channel in (1, 2, 3)

    switch.channel = 2
    assert run_threads(worker, 4) == []
    assert switch.channel == 2


def test_routed_restores_previous_channel(switch, emu):
    switch.channel = 1
    with switch.routed(3):
        assert emu.channel == 3
    assert emu.channel == 1
    with pytest.raises(RuntimeError), switch.routed(2):
        assert emu.channel == 2
        raise RuntimeError
    assert emu.channel == 1
