"""Pseudo-terminal emulators: the instrument side of :mod:`drivers.serial_transport`.

A :class:`PtyEmulator` owns a pseudo-terminal pair (``os.openpty``, raw mode) and serves the
wire protocol of one instrument on it from a background thread. The driver under test opens
:attr:`PtyEmulator.port` with pyserial exactly as it would open ``/dev/ttyUSB0``. The port is a
symlink to the current pty slave (like a udev ``/dev/serial/by-id/...`` link), so a simulated
unplug/replug (:attr:`Fault.HANGUP`) gives a new pty behind the same path.

Subclasses implement the protocol:

* ``parse(data) -> list[request]``: cut the byte stream into requests (keep partial input);
* ``handle(request) -> bytes | None``: the instrument's state machine; returns the reply;
* optionally ``corrupt_checksum(reply)``, ``nack_reply(request)``, ``busy_reply(request)``
  for the protocol-specific faults.

Faults are injected on demand with :meth:`PtyEmulator.inject` and apply to the next replies:
DROP (no reply), DELAY (reply late by ``delay`` seconds; a real instrument answers in order, so
later requests wait too), GARBLE (bytes of the reply flipped), BAD_CHECKSUM, PARTIAL (half the
reply, then silence), HANGUP (half the reply, then the pty is closed and replaced: the link
dies mid-frame), NACK and BUSY (protocol refusals), NOISE (junk bytes before the reply).

Every byte the emulator receives is logged (:meth:`received`), so tests can assert that
nothing was written (a limit violation must be refused before any byte is sent).

Physics hook: ``measure(quantity, state) -> float`` supplied by a shared physics model (the
virtual lab) gives measured values (photocurrents, optical power); without it each emulator
uses its own simple model. ``state`` is a snapshot of the emulator's settings.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import select
import tempfile
import threading
import time
import tty
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Fault", "MeasureHook", "PtyEmulator"]

_log = logging.getLogger(__name__)

#: ``measure(quantity, state)``: measured value of ``quantity`` given the emulator's settings
MeasureHook = Callable[[str, Mapping[str, Any]], float]


class Fault(enum.Enum):
    DROP = "drop"
    DELAY = "delay"
    GARBLE = "garble"
    BAD_CHECKSUM = "bad_checksum"
    PARTIAL = "partial"
    HANGUP = "hangup"
    NACK = "nack"
    BUSY = "busy"
    NOISE = "noise"


@dataclass
class _Pending:
    fault: Fault
    remaining: int
    delay: float


class PtyEmulator:
    """Base class: a serial instrument on a pseudo-terminal, served by a background thread."""

    #: human-readable model name
    MODEL = "serial instrument"

    def __init__(self, *, measure: MeasureHook | None = None, name: str | None = None) -> None:
        self.measure_hook = measure
        #: fixed readings that win over the hook and the defaults (an aged or broken unit)
        self.readings_override: dict[str, float] = {}
        self.name = name or type(self).__name__
        self.lock = threading.RLock()  # guards the instrument state
        self._faults: deque[_Pending] = deque()
        self._rx_log = bytearray()
        self._tx_log = bytearray()
        self._requests: list[Any] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._master = -1
        self._slave = -1
        self._dir: Path | None = None  # made by start(): holds the port symlink
        self.hangups = 0

    @property
    def port(self) -> str:
        """Path the driver opens (a symlink to the current pty slave); valid after start()."""
        if self._dir is None:
            raise RuntimeError(f"{self.name}: start() the emulator before asking for its port")
        return str(self._dir / "tty")

    # -- life cycle ---------------------------------------------------------------------------

    def _new_pty(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        self._master, self._slave = master, slave
        assert self._dir is not None
        link = Path(self.port)
        tmp = self._dir / "tty.new"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(os.ttyname(slave))
        tmp.replace(link)  # atomic: the port path never dangles

    def _close_pty(self) -> None:
        for fd in (self._master, self._slave):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = -1

    def start(self) -> PtyEmulator:
        if self._thread is not None:
            return self
        self._dir = Path(tempfile.mkdtemp(prefix="qkdhw-pty-"))
        self._new_pty()
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name=f"{self.name}-emulator",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._close_pty()
        if self._dir is not None:
            for p in (self._dir / "tty", self._dir / "tty.new"):
                with contextlib.suppress(OSError):
                    p.unlink()
            with contextlib.suppress(OSError):
                self._dir.rmdir()
            self._dir = None

    def __enter__(self) -> PtyEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- test helpers -------------------------------------------------------------------------

    def inject(self, fault: Fault, count: int = 1, *, delay: float = 0.0) -> None:
        """Apply ``fault`` to the next ``count`` replies (``delay`` in s for DELAY)."""
        with self.lock:
            self._faults.append(_Pending(Fault(fault), int(count), float(delay)))

    def clear_faults(self) -> None:
        with self.lock:
            self._faults.clear()

    def received(self) -> bytes:
        """All bytes received since start (or the last :meth:`clear_log`)."""
        with self.lock:
            return bytes(self._rx_log)

    def sent(self) -> bytes:
        with self.lock:
            return bytes(self._tx_log)

    def requests(self) -> list[Any]:
        """Parsed requests served since start (or the last :meth:`clear_log`)."""
        with self.lock:
            return list(self._requests)

    def clear_log(self) -> None:
        with self.lock:
            self._rx_log.clear()
            self._tx_log.clear()
            self._requests.clear()

    def measured(self, quantity: str, default: float) -> float:
        """Value of ``quantity``: ``readings_override``, else the physics hook, else
        ``default``."""
        if quantity in self.readings_override:
            return float(self.readings_override[quantity])
        if self.measure_hook is None:
            return default
        return float(self.measure_hook(quantity, self.state()))

    # -- protocol (subclasses) ----------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Snapshot of the settings, for the physics hook and tests."""
        return {}

    def parse(self, data: bytes) -> list[Any]:
        raise NotImplementedError

    def handle(self, request: Any) -> bytes | None:
        raise NotImplementedError

    def corrupt_checksum(self, reply: bytes) -> bytes:
        return self.garble(reply)

    def nack_reply(self, request: Any) -> bytes | None:
        return None

    def busy_reply(self, request: Any) -> bytes | None:
        return None

    @staticmethod
    def garble(reply: bytes) -> bytes:
        """Flip bits in the middle of the reply (framing bytes at both ends kept)."""
        if len(reply) <= 2:
            return bytes(b ^ 0x5A for b in reply)
        body = bytearray(reply)
        mid = len(body) // 2
        body[mid] ^= 0x21
        if len(body) > 4:
            body[mid - 1] ^= 0x44
        return bytes(body)

    # -- server loop --------------------------------------------------------------------------

    def _next_fault(self) -> _Pending | None:
        with self.lock:
            if not self._faults:
                return None
            pending = self._faults[0]
            pending.remaining -= 1
            if pending.remaining <= 0:
                self._faults.popleft()
            return pending

    def _write(self, data: bytes) -> None:
        if not data:
            return
        with self.lock:
            self._tx_log += data
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._master, view)
            except BlockingIOError:
                time.sleep(0.001)
                continue
            except OSError:
                return
            view = view[n:]

    def _reply(self, request: Any) -> None:
        with self.lock:
            reply = self.handle(request)
        pending = self._next_fault()
        fault = pending.fault if pending else None
        if fault is Fault.DROP:
            return
        if fault is Fault.NACK:
            reply = self.nack_reply(request)
        elif fault is Fault.BUSY:
            reply = self.busy_reply(request)
        if reply is None:
            return
        if fault is Fault.DELAY:
            if self._stop.wait(pending.delay):
                return
        elif fault is Fault.GARBLE:
            reply = self.garble(reply)
        elif fault is Fault.BAD_CHECKSUM:
            reply = self.corrupt_checksum(reply)
        elif fault is Fault.NOISE:
            reply = b"\x00\xff\x13\x37" + reply
        elif fault is Fault.PARTIAL:
            reply = reply[: max(1, len(reply) // 2)]
        elif fault is Fault.HANGUP:
            self._write(reply[: max(1, len(reply) // 2)])
            time.sleep(0.02)
            self._hangup()
            return
        self._write(reply)

    def _hangup(self) -> None:
        """Close the pty (the driver's port dies) and put a fresh one behind the same path."""
        self._close_pty()
        self.hangups += 1
        self._on_hangup()
        self._new_pty()

    def _on_hangup(self) -> None:
        """Hook: discard partial input at a hangup."""

    def _serve(self) -> None:
        while not self._stop.is_set():
            master = self._master
            try:
                readable, _, _ = select.select([master], [], [], 0.05)
            except (OSError, ValueError):
                time.sleep(0.01)
                continue
            if not readable:
                continue
            try:
                data = os.read(master, 4096)
            except OSError:
                time.sleep(0.01)
                continue
            if not data:
                continue
            with self.lock:
                self._rx_log += data
                requests = self.parse(data)
                self._requests.extend(requests)
            for request in requests:
                try:
                    self._reply(request)
                except Exception:  # an emulator bug must show, not hang the test
                    _log.exception("%s: error handling %r", self.name, request)
