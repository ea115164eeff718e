"""Deadlines of VISA reads and Ctrl-C during long reads, through real pyvisa-py to loopback
emulators that trickle their replies (an instrument that never goes quiet but never finishes).

Times are asserted with generous bounds: these check that a deadline exists and is kept, they
are not benchmarks.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import numpy as np
import pytest

from drivers.base import INTERRUPT_GRACE_S
from drivers.emulators.keysight_infiniium import InfiniiumEmulator, default_pattern
from drivers.emulators.keysight_m8195a import M8195AEmulator
from drivers.emulators.keysight_n77xx import N77xxEmulator
from drivers.emulators.thorlabs_pm100d import PM100DEmulator
from drivers.keysight_infiniium import KeysightInfiniium
from drivers.keysight_m8195a import KeysightM8195A
from drivers.keysight_n77xx import KeysightN77xxVoa
from drivers.thorlabs_pm100d import ThorlabsPM100D
from drivers.transport import MIN_BLOCK_RATE_BPS, VisaTransport
from qkd_hw.errors import InstrumentTimeoutError
from tests.drivers.scpi_helpers import config, running

main_thread_only = pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(),
    reason="signals are delivered to the main thread only")


@pytest.fixture
def pm_emu():
    with running(PM100DEmulator()) as e:
        yield e


@pytest.fixture
def awg_emu():
    with running(M8195AEmulator()) as e:
        yield e


def _awg(emu, **kw) -> KeysightM8195A:
    return KeysightM8195A(config("awg", "keysight_m8195a", emu.resource, **kw))


def test_trickled_reply_line_fails_at_the_deadline(pm_emu):
    """*IDN? answered one byte per 0.2 s (~9 s in all): an inactivity timeout of 0.5 s never
    fires (the reply was read after ~9 s); the deadline ends the query after 0.5 s."""
    timeout = 0.5
    with ThorlabsPM100D(config("pm", "thorlabs_pm100d", pm_emu.resource,
                               timeout_s=timeout, retries=0)) as pm:
        pm_emu.inject("trickle", match=r"^\*IDN\?$", seconds=0.2, step=1)
        t0 = time.monotonic()
        with pytest.raises(InstrumentTimeoutError, match="waiting for a reply line") as ei:
            pm.query("*IDN?")
        dt = time.monotonic() - t0
        assert timeout * 0.9 < dt < 2 * timeout
        assert ei.value.command == "*IDN?" and 0 < len(ei.value.reply) < 10
        # the rest of the trickle never reaches the next query: it gets its own reply
        conns = pm_emu.connections
        assert pm.averaging == 1
        assert pm_emu.connections == conns + 1


def _segment(emu: M8195AEmulator, n: int) -> np.ndarray:
    codes = (np.arange(n) % 251 - 125).astype(np.int8)
    emu.segments[1][1] = bytearray(codes.tobytes())
    return codes


def test_trickled_block_fails_at_its_deadline(awg_emu):
    """An 8 kB block at 64 bytes per 0.05 s (6.4 s in all, ~1.3 kB/s): the old inactivity
    timeout let it through after 6.4 s; its deadline is 0.5 s + 8192 B / 1 MB/s."""
    timeout = 0.5
    n = 8192
    _segment(awg_emu, n)
    deadline = timeout + n / MIN_BLOCK_RATE_BPS
    with _awg(awg_emu, timeout_s=timeout, retries=0) as awg:
        awg_emu.inject("trickle", match=r"^:TRAC1:DATA\? ", seconds=0.05, step=64)
        t0 = time.monotonic()
        with pytest.raises(InstrumentTimeoutError, match=f"during a {n}-byte binary read"):
            awg.channel(1).read_segment(1, 0, n)
        dt = time.monotonic() - t0
        assert deadline * 0.9 < dt < 2 * deadline
        assert awg.channel(1).catalog() == {1: n}  # next query: its own reply


def test_large_block_slower_than_timeout_but_above_the_minimum_rate_succeeds(awg_emu):
    """4 MiB at ~6 MB/s takes ~0.7 s, longer than timeout_s = 0.3 s: a block read has its own
    deadline (0.3 s + 4.2 s here), so a healthy long transfer is not cut off."""
    n = 4 << 20
    codes = _segment(awg_emu, n)
    with _awg(awg_emu, timeout_s=0.3, retries=0) as awg:
        awg_emu.inject("trickle", match=r"^:TRAC1:DATA\? ", seconds=0.01, step=64 << 10)
        t0 = time.monotonic()
        back = awg.channel(1).read_segment(1, 0, n)
        assert time.monotonic() - t0 > 0.3
        assert np.array_equal(back, codes)


def _interrupt_at(seconds: float, sent_at: list[float]) -> threading.Timer:
    """SIGINT to this process after ``seconds``; the time it was sent goes to ``sent_at``."""
    def fire() -> None:
        sent_at.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Timer(seconds, fire)
    timer.start()
    return timer


@main_thread_only
def test_ctrl_c_during_a_trickling_block_read_is_delivered_within_a_second(awg_emu):
    """timeout 5 s, an 8 kB block trickling for 6.4 s: Ctrl-C is neither sat out until the
    deadline nor the end of the transfer; the read is abandoned INTERRUPT_GRACE_S after the
    signal, not retried, and the link resynchronised (the rest of the block never reaches
    the next query)."""
    n = 8192
    _segment(awg_emu, n)
    with _awg(awg_emu, timeout_s=5.0, retries=2) as awg:
        f = awg_emu.inject("trickle", match=r"^:TRAC1:DATA\? ", seconds=0.05, step=64)
        sent_at: list[float] = []
        timer = _interrupt_at(0.3, sent_at)
        with pytest.raises(KeyboardInterrupt):
            awg.channel(1).read_segment(1, 0, n)
        after = time.monotonic() - sent_at[0]
        timer.join()
        assert INTERRUPT_GRACE_S * 0.9 < after < 1.5
        assert f.hits == 1  # no retry after the interrupt
        conns = awg_emu.connections
        assert awg.channel(1).catalog() == {1: n}  # own reply, on a new connection
        assert awg_emu.connections == conns + 1


@main_thread_only
def test_ctrl_c_during_a_long_opc_wait_is_delivered_and_the_late_reply_dropped(pm_emu):
    """*OPC? with a 10 s timeout, answered after 3 s: Ctrl-C ends the wait within a second;
    the late "1" is never read as the answer to the next query."""
    with ThorlabsPM100D(config("pm", "thorlabs_pm100d", pm_emu.resource,
                               timeout_s=0.5)) as pm:
        pm_emu.inject("delay", match=r"^\*OPC\?$", seconds=3.0)
        pm_emu.wavelength_nm = 1310.0
        sent_at: list[float] = []
        timer = _interrupt_at(0.2, sent_at)
        with pytest.raises(KeyboardInterrupt):
            pm.opc(timeout_s=10.0)
        after = time.monotonic() - sent_at[0]
        timer.join()
        assert INTERRUPT_GRACE_S * 0.9 < after < 1.5
        assert pm.wavelength_nm == 1310.0  # its own reply, not the late "1" of *OPC?


def test_trickled_digitizer_fetch_fails_at_its_deadline():
    """:WAVeform:DATA? of 16 kB at 64 bytes per 0.05 s (12.8 s in all) ends at the block
    deadline; the next fetch gets its own, complete block."""
    timeout, n = 0.5, 8192
    with running(InfiniiumEmulator()) as emu, KeysightInfiniium(
            config("scope", "keysight_infiniium", emu.resource, timeout_s=timeout,
                   retries=0)) as sc:
        sc.record_length = n
        sc.arm()
        sc.wait_acquired(timeout_s=2.0)
        emu.inject("trickle", match=r"^:WAV:DATA\? ", seconds=0.05, step=64)
        deadline = timeout + 2 * n / MIN_BLOCK_RATE_BPS
        t0 = time.monotonic()
        with pytest.raises(InstrumentTimeoutError, match=f"{2 * n}-byte binary read"):
            sc.fetch(1)
        assert deadline * 0.9 < time.monotonic() - t0 < 2 * deadline
        assert np.array_equal(sc.fetch(1), default_pattern(1, 0, n))


def test_write_to_an_instrument_that_stopped_reading_fails_instead_of_hanging():
    """A peer that accepts but never reads: pyvisa-py's write waited for a writable socket
    without a timeout (forever, Ctrl-C deferred); now it fails once no byte was taken for
    timeout_s."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    t = VisaTransport(f"TCPIP::127.0.0.1::{srv.getsockname()[1]}::SOCKET", timeout_s=0.3)
    try:
        t.open()
        t0 = time.monotonic()
        with pytest.raises(InstrumentTimeoutError, match=r"instrument took no byte for 0\.3 s"):
            t.write(b"\0" * (64 << 20))
        assert time.monotonic() - t0 < 10.0  # buffers fill within seconds, then 0.3 s
    finally:
        t.close()
        srv.close()


@main_thread_only
def test_ctrl_c_during_block_all_waits_until_every_shutter_is_closed():
    """The VOA's safe state is not cut short by an overdue Ctrl-C (cf. M8195A outputs_off)."""
    with running(N77xxEmulator()) as emu, KeysightN77xxVoa(
            config("voa", "keysight_n77xx", emu.resource, timeout_s=2.0)) as voa:
        emu.output.update(dict.fromkeys(emu.output, True))
        emu.inject("delay", match=r"^SYST:ERR\?$", seconds=1.0)  # first shutter answers late
        sent_at: list[float] = []
        timer = _interrupt_at(0.1, sent_at)
        with pytest.raises(KeyboardInterrupt):
            voa.block_all()
        timer.join()
        assert not any(emu.output.values())
