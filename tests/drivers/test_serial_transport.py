"""SerialTransport through real pyserial on raw pseudo-terminals."""

from __future__ import annotations

import contextlib
import os
import threading
import time
import tty

import pytest
import serial

from drivers.serial_transport import POLL_S, SerialTransport
from qkd_hw.errors import CommunicationError, InstrumentTimeoutError


@pytest.fixture
def pty():
    master, slave = os.openpty()
    tty.setraw(slave)
    yield master, os.ttyname(slave)
    for fd in (master, slave):
        with contextlib.suppress(OSError):
            os.close(fd)


def make(path, **kw):
    kw.setdefault("timeout_s", 0.2)
    t = SerialTransport(path, **kw)
    t.instrument_name = "dut"
    return t


def test_init_does_not_touch_port():
    t = make("/nonexistent/tty")
    assert not t.is_open


def test_open_missing_port_wraps_serial_exception():
    t = make("/nonexistent/ttyQKD0")
    with pytest.raises(CommunicationError) as info:
        t.open()
    assert "/nonexistent/ttyQKD0" in str(info.value)
    assert info.value.instrument == "dut"
    assert isinstance(info.value.__cause__, serial.SerialException)


def test_write_appends_termination_and_read_line(pty):
    master, path = pty
    t = make(path, write_termination=b"\r", read_terminations=(b"\r", b"\n"))
    t.open()
    try:
        t.write(b"MZM:MODE?")
        assert os.read(master, 100) == b"MZM:MODE?\r"
        # LF, CR, CR LF endings; the empty line between CR and LF is skipped
        os.write(master, b"1\n2\r3\r\n4\n")
        assert [t.read_line() for _ in range(4)] == [b"1", b"2", b"3", b"4"]
    finally:
        t.close()


def test_read_exact_timeout_carries_partial_bytes_and_is_bounded(pty):
    master, path = pty
    t = make(path)
    t.open()
    try:
        os.write(master, b"\x01\x11")
        t0 = time.monotonic()
        with pytest.raises(InstrumentTimeoutError) as info:
            t.read_exact(4)
        elapsed = time.monotonic() - t0
        assert 0.2 <= elapsed < 0.2 + 3 * POLL_S + 0.3
        assert info.value.reply == b"\x01\x11"
    finally:
        t.close()


def test_read_until_partial_ok_and_flood(pty):
    master, path = pty
    t = make(path, max_line=64)
    t.open()
    try:
        os.write(master, b"abc")
        assert t.read_until(b"\n", partial_ok=True) == b"abc"
        os.write(master, b"x" * 100)
        with pytest.raises(CommunicationError, match="without terminator"):
            t.read_until(b"\n")
    finally:
        t.close()


def test_flush_input_drops_stale_bytes(pty):
    master, path = pty
    t = make(path)
    t.open()
    try:
        os.write(master, b"stale reply\n")
        time.sleep(0.05)
        assert t.flush_input() == b"stale reply\n"
        os.write(master, b"fresh\n")
        assert t.read_line() == b"fresh"
    finally:
        t.close()


def test_resync_drains_a_late_reply(pty):
    master, path = pty
    t = make(path, quiet_s=0.1)
    t.open()
    try:
        # a late reply arrives 50 ms into the resync: it must be dropped, not read later
        threading.Timer(0.05, os.write, (master, b"late\n")).start()
        t0 = time.monotonic()
        t.resync()
        assert time.monotonic() - t0 >= 0.1
        os.write(master, b"next\n")
        assert t.read_line() == b"next"
    finally:
        t.close()


def test_closed_port_and_hangup_raise_communication_error():
    master, slave = os.openpty()
    tty.setraw(slave)
    t = make(os.ttyname(slave))
    t.open()
    os.close(master)
    os.close(slave)
    with pytest.raises(CommunicationError) as info:
        t.read_exact(1)
    assert not isinstance(info.value, InstrumentTimeoutError)
    assert info.value.__cause__ is not None
    t.close()
    with pytest.raises(CommunicationError, match="not open"):
        t.write(b"x")


def test_port_is_locked_against_a_second_opener(pty):
    _, path = pty
    first, second = make(path), make(path)
    first.open()
    try:
        with pytest.raises(CommunicationError, match="cannot open"):
            second.open()
    finally:
        first.close()
    second.open()  # free again once the first closed it
    second.close()
