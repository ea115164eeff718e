"""SerialInstrument: transport built from the lab config, the shared exchange sequence, on a
raw pseudo-terminal whose other end plays a line instrument (request CR, reply CR)."""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
import tty
from collections.abc import Callable, Iterator

import pytest

from drivers.serial_base import SerialInstrument, remaining_s
from drivers.serial_transport import SerialTransport
from qkd_hw.errors import CommunicationError, InstrumentTimeoutError

TIMEOUT_S = 0.3


class LineInstrument(SerialInstrument):
    MODEL = "test line instrument"
    BAUDRATE = 9600
    WRITE_TERMINATION = b"\r"
    READ_TERMINATIONS = (b"\r", b"\n")
    QUIET_S = 0.05

    def ask(self, request: bytes | Callable[[], bytes]) -> tuple[bytes, float]:
        """The reply line and the seconds left of the deadline when the read began."""
        def read(t: SerialTransport, deadline: float) -> tuple[bytes, float]:
            left = remaining_s(deadline)
            return self.read_line_logged(t), left

        return self.serial_exchange("ask", request, read, idempotent=True)


class Peer:
    """The instrument end of the pty: records every byte, answers each CR-terminated request
    with ``answer(request)`` (None: stays silent)."""

    def __init__(self, master: int, answer: Callable[[bytes], bytes | None]) -> None:
        self.master, self.answer = master, answer
        self.received = bytearray()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pending = b""
        while not self._stop.is_set():
            if not select.select([self.master], [], [], 0.01)[0]:
                continue
            try:
                data = os.read(self.master, 256)
            except OSError:
                return
            self.received += data
            pending += data
            while b"\r" in pending:
                request, pending = pending.split(b"\r", 1)
                reply = self.answer(request)
                if reply is not None:
                    os.write(self.master, reply)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@pytest.fixture
def pty() -> Iterator[tuple[int, str]]:
    master, slave = os.openpty()
    tty.setraw(slave)
    yield master, os.ttyname(slave)
    for fd in (master, slave):
        with contextlib.suppress(OSError):
            os.close(fd)


@contextlib.contextmanager
def session(path: str, answer: Callable[[bytes], bytes | None], master: int, **kw):
    peer = Peer(master, answer)
    inst = LineInstrument.from_resource(path, name="dut", timeout_s=TIMEOUT_S, **kw)
    try:
        with inst:
            yield inst, peer
    finally:
        peer.stop()


def test_init_builds_the_transport_from_the_config_without_opening_it():
    inst = LineInstrument.from_resource("/nonexistent/ttyQKD7", timeout_s=0.02,
                                        options={"baudrate": 19200})
    t = inst.transport
    assert isinstance(t, SerialTransport) and not t.is_open and not inst.is_open
    assert (t.port, t.baudrate, t.timeout_s) == ("/nonexistent/ttyQKD7", 19200, 0.02)
    assert t.write_termination == b"\r" and t.read_terminations == (b"\r", b"\n")
    assert t.quiet_s == 0.02                      # QUIET_S capped at the timeout
    assert LineInstrument.from_resource("/x", timeout_s=1.0).transport.baudrate == 9600
    # open() is where the port is touched: a missing port is one error naming it
    with pytest.raises(CommunicationError, match="/nonexistent/ttyQKD7") as info:
        inst.open()
    assert info.value.instrument == inst.name


def test_quiet_none_drains_a_full_timeout():
    class Untagged(LineInstrument):
        QUIET_S = None

    assert Untagged.from_resource("/x", timeout_s=0.7).transport.quiet_s is None


def test_exchange_drops_stale_input_writes_the_request_and_reads_its_reply(pty):
    master, path = pty
    with session(path, lambda req: b"re:" + req + b"\r", master) as (inst, peer):
        os.write(master, b"stale\r")   # e.g. a reply to a request abandoned earlier
        time.sleep(0.05)
        line, left = inst.ask(b"PING")
        assert line == b"re:PING"
        assert bytes(peer.received) == b"PING\r"
        # the reply's deadline is one timeout after the write
        assert 0 < left <= TIMEOUT_S


def test_request_function_is_called_once_per_attempt(pty):
    master, path = pty
    sent = iter([b"A1", b"A2", b"A3"])

    def answer(req: bytes) -> bytes | None:
        return None if req == b"A1" else b"ok:" + req + b"\r"   # first attempt unanswered

    with session(path, answer, master, retries=2) as (inst, peer):
        line, _ = inst.ask(lambda: next(sent))
        assert line == b"ok:A2"
        assert bytes(peer.received) == b"A1\rA2\r"


def test_silence_is_a_timeout_error_naming_instrument_and_command(pty):
    master, path = pty
    with session(path, lambda req: None, master, retries=0) as (inst, peer):
        with pytest.raises(InstrumentTimeoutError) as info:
            inst.ask(b"PING")
        assert (info.value.instrument, info.value.command) == ("dut", "ask")
        assert bytes(peer.received) == b"PING\r"   # not resent with retries=0
