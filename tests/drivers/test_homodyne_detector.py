"""Balanced homodyne detector (BHD-CTRL v1): framing, checksums, round trips, faults, safety."""

from __future__ import annotations

import functools
import operator
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.emulators.homodyne_detector import HomodyneDetectorEmulator
from drivers.emulators.serial_transport import Fault
from drivers.homodyne_detector import (
    GAIN_V_PER_A,
    Balance,
    HomodyneDetector,
    checksum,
    encode,
    parse_reply,
)
from qkd_hw.errors import InstrumentError, InstrumentTimeoutError, LimitError, ProtocolError
from qkd_hw.labconfig import Limits
from tests.drivers.serial_helpers import TIMEOUT_S, Timer, connected, run_threads, worst_case_s

QUIET_S = 0.05


@pytest.fixture
def emu():
    return HomodyneDetectorEmulator()


@pytest.fixture
def bhd(emu):
    with connected(HomodyneDetector, emu, limits=Limits.of(gain_db=(None, 100.0))) as inst:
        yield inst


def test_encode_worked_examples():
    # G^A^I^N = 0x47^0x41^0x49^0x4E = 0x01; then ^ ',' (0x2C) ^ '2' (0x32) = 0x1F
    assert encode("GAIN") == b"$GAIN*01\r\n"
    assert encode("GAIN,2") == b"$GAIN,2*1F\r\n"
    assert encode("DC,1,500.000", b"!") == b"!DC,1,500.000*" + b"%02X" % functools.reduce(
        operator.xor, b"DC,1,500.000") + b"\r\n"
    with pytest.raises(ValueError):
        encode("GAIN*2")


@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E,
                                      blacklist_characters="$!*"), max_size=60))
def test_checksum_is_xor_and_reply_roundtrip(body):
    assert checksum(body.encode()) == functools.reduce(operator.xor, body.encode(), 0)
    assert parse_reply(encode(body, b"!")) == body.split(",")


@pytest.mark.parametrize("line", [b"GAIN,1*1E\r\n", b"!GAIN,1*1F\r\n", b"!GAIN,1*ZZ\r\n",
                                  b"!GAIN,1\r\n", b"!\xff*FF\r\n", b""])
def test_parse_reply_rejects(line):
    with pytest.raises(ProtocolError):
        parse_reply(line)


def test_exact_bytes_and_round_trips(bhd, emu):
    assert bhd.identity == ("QKD-HW", "BHD-1", "SN0042", "1.0.3")
    emu.clear_log()
    bhd.gain_step = 2
    bhd.enabled = True
    assert emu.received() == b"$GAIN,2*1F\r\n$EN,1*" + b"%02X" % checksum(b"EN,1") + b"\r\n"
    assert (emu.gain, emu.enabled) == (2, True)
    assert bhd.gain_step == 2 and bhd.enabled is True
    assert bhd.gain_v_per_a == GAIN_V_PER_A[2] == 1e5
    assert bhd.temperature_c == pytest.approx(31.5)
    assert bhd.dc_current_ua(1) == pytest.approx(500.0)
    assert bhd.dc_current_ua(2) == pytest.approx(490.0)
    bal = bhd.balance()
    assert bal == Balance(500.0, 490.0)
    assert bal.imbalance == pytest.approx(10 / 990)
    bhd.enabled = False
    assert emu.enabled is False
    with pytest.raises(ValueError):
        bhd.dc_current_ua(3)


def test_instrument_refusals(bhd, emu):
    with pytest.raises(InstrumentError, match="error 3") as info:
        bhd.dc_current_ua(1)  # disabled: monitor not available
    assert type(info.value) is InstrumentError
    assert info.value.command == "DC,1"
    with pytest.raises(InstrumentError, match="error 1"):
        bhd.request("FOO")
    with pytest.raises(InstrumentError, match="error 2"):
        bhd.request("GAIN,7")


def test_physics_hook_drives_balance():
    def measure(quantity, state):
        assert state["enabled"]
        return {"pd1_current_ua": 812.5, "pd2_current_ua": 787.5,
                "temperature_c": 29.0}[quantity]

    with connected(HomodyneDetector, HomodyneDetectorEmulator(measure=measure)) as bhd:
        bhd.enabled = True
        assert bhd.balance().imbalance == pytest.approx(25 / 1600)
        assert bhd.temperature_c == pytest.approx(29.0)


@pytest.mark.parametrize(("prop", "value"), [("gain_step", 3), ("gain_step", 4),
                                             ("gain_step", -1), ("enabled", "yes")])
def test_limit_violation_sends_nothing(bhd, emu, prop, value):
    emu.clear_log()
    with pytest.raises(LimitError):
        setattr(bhd, prop, value)
    time.sleep(0.05)
    assert emu.received() == b""


@pytest.mark.parametrize("fault", [Fault.DROP, Fault.GARBLE, Fault.BAD_CHECKSUM, Fault.BUSY,
                                   Fault.PARTIAL, Fault.NOISE, Fault.HANGUP])
def test_transient_fault_recovered_within_bounds(bhd, emu, fault):
    bhd.gain_step = 2
    emu.inject(fault)
    with Timer() as t:
        assert bhd.gain_step == 2
    assert t.elapsed < worst_case_s(2, TIMEOUT_S, QUIET_S)
    assert bhd.temperature_c == pytest.approx(31.5)


def test_request_checksum_error_is_retried(bhd, emu):
    orig = emu._body
    calls = []

    def first_corrupt(request):  # the detector sees the first request garbled
        calls.append(request)
        body, ok = orig(request)
        return body, ok and len(calls) > 1

    emu._body = first_corrupt
    assert bhd.gain_step == 1
    assert len(calls) == 2


def test_nack_is_final(bhd, emu):
    emu.clear_log()
    emu.inject(Fault.NACK)
    with pytest.raises(InstrumentError, match="error 2"):
        bhd.gain_step  # noqa: B018
    assert emu.received().count(b"$GAIN*") == 1


def test_persistent_busy_is_bounded(bhd, emu):
    emu.inject(Fault.BUSY, count=100)
    with Timer() as t, pytest.raises(InstrumentError, match="busy"):
        bhd.temperature_c  # noqa: B018
    assert t.elapsed < worst_case_s(3, TIMEOUT_S, QUIET_S)


def test_persistent_silence_is_bounded(bhd, emu):
    emu.inject(Fault.DROP, count=100)
    with Timer() as t, pytest.raises(InstrumentTimeoutError):
        bhd.temperature_c  # noqa: B018
    assert t.elapsed < worst_case_s(3, TIMEOUT_S, QUIET_S)


def test_late_reply_never_attributed_to_next_query(emu):
    with connected(HomodyneDetector, emu, retries=0) as bhd:
        bhd.gain_step = 3
        emu.inject(Fault.DELAY, delay=1.5 * TIMEOUT_S)
        with pytest.raises(InstrumentTimeoutError):
            bhd.gain_step  # noqa: B018
        # the late "!GAIN,3" arrives during the next request: recognised by its tag
        assert bhd.enabled is False
        assert bhd.gain_step == 3


def test_threads_share_one_detector(bhd, emu):
    bhd.enabled = True

    def worker(i: int) -> None:
        for k in range(10):
            if i == 0 and k == 5:
                emu.inject(Fault.BAD_CHECKSUM)
            assert bhd.balance() == Balance(500.0, 490.0)
            assert bhd.gain_step == 1

    assert run_threads(worker, 4) == []


def test_settings_session_restores_on_error(bhd, emu):
    with pytest.raises(RuntimeError), bhd.settings_session():
        bhd.gain_step = 0
        bhd.enabled = True
        raise RuntimeError
    assert (emu.gain, emu.enabled) == (1, False)
