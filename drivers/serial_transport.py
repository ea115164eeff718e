"""Serial-port transport (pyserial) for the serial instrument drivers.

:class:`SerialTransport` implements :class:`drivers.transport.Transport` for a serial port:
``write`` (+ write termination), ``read_line`` (up to one of the read terminations),
``read_exact`` and, for framed binary protocols, ``read_until``. Every read is bounded by a
deadline of ``timeout_s``: a read never blocks past it, whatever the instrument does (stays
silent, sends half a frame, floods the line).

Errors of pyserial and of the operating system become
:class:`~qkd_hw.errors.CommunicationError` (:class:`~qkd_hw.errors.InstrumentTimeoutError` for
timeouts) with ``raise ... from``; the message names the port, the error carries the bytes
received so far.

On POSIX the port is locked (``flock``, pyserial ``exclusive``) while open: a second program
opening the same instrument gets an error instead of interleaving its commands with ours.

Resync after a failed exchange (``resync()``, called by the driver base before the next
transaction): if the port failed (unplugged USB adapter, closed pseudo-terminal) it is
reopened by path, which is what a udev symlink such as ``/dev/serial/by-id/...`` is for;
otherwise the input is drained until the line has been quiet for ``quiet_s`` (default: the
timeout), so a late reply to the abandoned query is dropped, not read as the next reply.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable

import serial

from drivers.transport import Transport, excerpt
from qkd_hw.errors import CommunicationError

__all__ = ["POLL_S", "SerialTransport"]

_log = logging.getLogger(__name__)

#: pyserial read timeout: reads poll in slices this long and re-check their own deadline
#: (changing pyserial's timeout reconfigures the port), so a deadline is overrun by <= POLL_S
POLL_S = 0.02

#: pyserial's parity names by the usual one-letter code
_PARITY = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD}


class SerialTransport(Transport):
    """A serial port with deadline-bounded reads.

    Parameters
    ----------
    port : str
        Device path (``/dev/ttyUSB0``, ``COM3``, a pseudo-terminal or a symlink to one) or a
        pyserial URL.
    timeout_s : float
        Read timeout in seconds, per read call.
    baudrate, bytesize, parity, stopbits, rtscts :
        Line settings (default 115200 8N1, no hardware handshake).
    write_termination : bytes
        Appended by :meth:`write` (``b""`` for binary protocols).
    read_terminations : bytes or iterable of bytes
        Any of these ends a line in :meth:`read_line` (e.g. ``(b"\\r", b"\\n")``).
    quiet_s : float, optional
        Silence that ends a drain in :meth:`resync` (default ``timeout_s``).
    write_timeout_s : float
        Seconds a write may block before it fails.

    ``__init__`` does not touch the port; :meth:`open` does.
    """

    def __init__(
        self,
        port: str,
        *,
        timeout_s: float,
        baudrate: int = 115200,
        bytesize: int = 8,
        parity: str = "N",
        stopbits: float = 1,
        rtscts: bool = False,
        write_termination: bytes = b"",
        read_terminations: bytes | Iterable[bytes] = b"\n",
        quiet_s: float | None = None,
        write_timeout_s: float = 1.0,
        max_line: int = 4096,
    ) -> None:
        super().__init__(timeout_s=timeout_s)
        if parity not in _PARITY:
            raise ValueError(f"parity must be one of {sorted(_PARITY)}, got {parity!r}")
        if not timeout_s > 0 or not write_timeout_s > 0:
            raise ValueError(f"timeouts must be > 0 s, got timeout_s={timeout_s}, "
                             f"write_timeout_s={write_timeout_s}")
        self.port = str(port)
        self.baudrate = int(baudrate)
        self.bytesize = int(bytesize)
        self.parity = parity
        self.stopbits = stopbits
        self.rtscts = bool(rtscts)
        self.write_termination = bytes(write_termination)
        terms = ([read_terminations] if isinstance(read_terminations, bytes | bytearray)
                 else list(read_terminations))
        if not terms or any(len(t) == 0 for t in terms):
            raise ValueError(f"read terminations must be non-empty bytes, got {terms!r}")
        self.read_terminations = tuple(bytes(t) for t in terms)
        self.quiet_s = quiet_s
        self.write_timeout_s = float(write_timeout_s)
        self.max_line = int(max_line)
        self._serial: serial.Serial | None = None
        self._failed = False  # the port itself failed: resync reopens it

    # -- life cycle ---------------------------------------------------------------------------

    @property
    def description(self) -> str:
        return f"serial {self.port} {self.baudrate} {self.bytesize}{self.parity}{self.stopbits}"

    @property
    def is_open(self) -> bool:
        return self._serial is not None and self._serial.is_open

    def open(self) -> None:
        """Open the port and drop anything already pending in its input buffer."""
        if self.is_open:
            return
        try:
            ser = serial.serial_for_url(
                self.port, do_not_open=True, baudrate=self.baudrate, bytesize=self.bytesize,
                parity=_PARITY[self.parity], stopbits=self.stopbits, rtscts=self.rtscts,
                timeout=POLL_S, write_timeout=self.write_timeout_s)
            if os.name == "posix" and hasattr(ser, "exclusive"):
                # flock: a second program talking to the same laser is refused, not interleaved
                ser.exclusive = True
            ser.open()
        except (serial.SerialException, OSError, ValueError) as exc:
            raise self._error(f"cannot open serial port: {exc}") from exc
        self._serial = ser
        self._failed = False
        self.flush_input()

    def close(self) -> None:
        """Close the port (idempotent; errors while closing are logged, not raised)."""
        ser, self._serial = self._serial, None
        if ser is None:
            return
        try:
            ser.close()
        except (serial.SerialException, OSError) as exc:
            _log.debug("%s: error on close ignored: %s", self.description, exc)

    def _port(self) -> serial.Serial:
        if self._serial is None or not self._serial.is_open:
            raise self._error("serial port is not open")
        return self._serial

    def _link_failed(self, what: str, exc: BaseException, reply: bytes | None = None):
        self._failed = True
        return self._error(f"{what}: {exc}", reply=reply)

    # -- I/O ----------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Write ``data`` + write termination, all of it, or raise CommunicationError."""
        ser = self._port()
        payload = bytes(data) + self.write_termination
        try:
            n = ser.write(payload)
            ser.flush()
        except serial.SerialTimeoutException as exc:
            raise self._error(f"write timed out after {self.write_timeout_s:g} s",
                              timeout=True) from exc
        except (serial.SerialException, OSError, TypeError) as exc:
            raise self._link_failed("write failed", exc) from exc
        if n is not None and n != len(payload):
            raise self._error(f"short write: {n} of {len(payload)} bytes")

    def _read_some(self, ser: serial.Serial, n: int, deadline: float,
                   sofar: bytes = b"") -> bytes:
        if time.monotonic() >= deadline:
            return b""
        try:
            return ser.read(n)
        except (serial.SerialException, OSError, TypeError) as exc:
            # pyserial raises TypeError when the port was closed under its feet
            raise self._link_failed("read failed", exc, reply=sofar) from exc

    def read_exact(self, n: int, timeout_s: float | None = None) -> bytes:
        """Exactly ``n`` bytes, or InstrumentTimeoutError (partial bytes in ``reply``)."""
        ser = self._port()
        t = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + t
        buf = bytearray()
        while len(buf) < n:
            chunk = self._read_some(ser, n - len(buf), deadline, bytes(buf))
            if chunk:
                buf += chunk
            elif time.monotonic() >= deadline:
                raise self._error(f"timeout after {t:g} s reading {n} bytes "
                                  f"({len(buf)} received)", timeout=True, reply=bytes(buf))
        return bytes(buf)

    def read_until(self, terminators: bytes | Iterable[bytes], timeout_s: float | None = None,
                   *, partial_ok: bool = False) -> bytes:
        """Bytes up to and including the first of ``terminators``.

        At the deadline: InstrumentTimeoutError (partial bytes in ``reply``), or with
        ``partial_ok`` the bytes received so far (possibly none, never ending in a
        terminator). ``max_line`` bytes without a terminator (a flooding or garbled line):
        CommunicationError.
        """
        terms = ([terminators] if isinstance(terminators, bytes | bytearray)
                 else list(terminators))
        ser = self._port()
        t = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + t
        buf = bytearray()
        while True:
            # one byte at a time: reading past the terminator would swallow the next message
            chunk = self._read_some(ser, 1, deadline, bytes(buf))
            if not chunk:
                if time.monotonic() >= deadline:
                    if partial_ok:
                        return bytes(buf)
                    raise self._error(f"timeout after {t:g} s waiting for {terms!r}",
                                      timeout=True, reply=bytes(buf))
                continue
            buf += chunk
            if any(buf.endswith(term) for term in terms):
                return bytes(buf)
            if len(buf) >= self.max_line:
                raise self._error(f"{self.max_line} bytes without terminator {terms!r}",
                                  reply=excerpt(buf))

    def read_line(self) -> bytes:
        """One line without its termination; empty lines (the LF of a CR LF pair) skipped."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            line = self.read_until(self.read_terminations,
                                   timeout_s=max(0.0, deadline - time.monotonic()))
            for term in self.read_terminations:
                if line.endswith(term):
                    line = line[: -len(term)]
                    break
            if line:
                return line

    def flush_input(self) -> bytes:
        """Drop and return every byte pending in the input buffer."""
        ser = self._port()
        dropped = bytearray()
        try:
            while ser.in_waiting:
                chunk = ser.read(ser.in_waiting)
                if not chunk:
                    break
                dropped += chunk
            ser.reset_input_buffer()
        except (serial.SerialException, OSError, TypeError) as exc:
            raise self._link_failed("flushing input failed", exc) from exc
        if dropped:
            _log.debug("%s: flushed %d stale byte(s): %r", self.description, len(dropped),
                       excerpt(dropped))
        return bytes(dropped)

    def drain(self, quiet_s: float, max_s: float) -> bytes:
        """Drop incoming bytes until the line was silent for ``quiet_s`` (at most ``max_s``)."""
        ser = self._port()
        start = last = time.monotonic()
        dropped = bytearray()
        while True:
            now = time.monotonic()
            if now - last >= quiet_s or now - start >= max_s:
                break
            chunk = self._read_some(ser, 256, start + max_s)
            if chunk:
                dropped += chunk
                last = time.monotonic()
        dropped += self.flush_input()
        if dropped:
            _log.debug("%s: drained %d late byte(s): %r", self.description, len(dropped),
                       excerpt(dropped))
        return bytes(dropped)

    def resync(self) -> None:
        """Reopen a failed port; otherwise drain until quiet (see module docstring)."""
        if self._failed or not self.is_open:
            self.reopen()
            return
        quiet = self.timeout_s if self.quiet_s is None else self.quiet_s
        try:
            self.drain(quiet_s=quiet, max_s=4 * quiet + 0.1)
        except CommunicationError:
            self.reopen()

    def reopen(self) -> None:
        """Close and reopen the port, trying for up to ``timeout_s``: an unplugged USB adapter
        takes a moment to reappear (its device node is absent meanwhile)."""
        _log.debug("%s: reopening after link failure", self.description)
        self.close()
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                self.open()
                return
            except CommunicationError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(POLL_S)
