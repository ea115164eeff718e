"""Byte transports under the drivers: the only place that touches pyvisa (serial: see below).

A :class:`Transport` moves bytes; it knows nothing about commands. It raises only
:class:`~qkd_hw.errors.CommunicationError` (:class:`~qkd_hw.errors.InstrumentTimeoutError` for
timeouts) carrying the instrument name and the bytes received so far; the driver adds the
command (``InstrumentError.with_context``).

:class:`VisaTransport` wraps a pyvisa message-based resource (pyvisa-py ``@py`` by default, any
VISA library by name). Serial transports (pyserial) implement the same five methods; see
``drivers/base.py`` for how a serial driver plugs in.

Deadlines, not inactivity timeouts (pyvisa-py raw sockets, ``TCPIP::...::SOCKET``, read and
written here directly through the session's socket and pending-input buffer):

* a reply line must be complete within ``timeout_s`` of the start of the read, whatever the
  instrument does (stays silent, trickles one byte at a time, floods);
* a binary read or a write of ``n`` bytes must finish within ``timeout_s + n /
  min_block_rate`` (:data:`MIN_BLOCK_RATE_BPS`, 1 MB/s: far below LAN rates, so only a
  stalled or crawling transfer hits it; GPIB-slow links need a lower ``min_block_rate``), and
  fails sooner when no byte moves for ``timeout_s``;
* waits are sliced (:data:`READ_SLICE_S`); between slices the deadline and
  ``interrupt_check`` (set by the owning Instrument: a Ctrl-C that has waited too long) are
  checked, so an abandoned read ends within one slice.

Other VISA sessions (USB, GPIB, VXI-11 INSTR, other VISA libraries) go through pyvisa with the
VISA timeout; there a reply line is bounded by the library's own timeout semantics, and binary
reads are read in pieces of at most 1 MiB with the deadline and Ctrl-C checked between them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator

from qkd_hw.errors import CommunicationError, InstrumentTimeoutError

try:  # pyvisa is a hard dependency, but keep import errors readable
    import pyvisa
    from pyvisa import constants as visa_constants
    from pyvisa.errors import VisaIOError
except ImportError as _exc:  # pragma: no cover - declared dependency
    raise ImportError("drivers.transport needs pyvisa (pip install pyvisa pyvisa-py)") from _exc

__all__ = ["MIN_BLOCK_RATE_BPS", "READ_SLICE_S", "Transport", "VisaTransport", "excerpt"]

log = logging.getLogger(__name__)

#: longest single blocking wait of a read: a deadline or a Ctrl-C is noticed within this
READ_SLICE_S = 0.05
#: slowest binary transfer accepted (bytes/s): the deadline of an n-byte read is
#: ``timeout_s + n / MIN_BLOCK_RATE_BPS`` (200 MB: timeout + 200 s)
MIN_BLOCK_RATE_BPS = 1e6
_MSG_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)


def excerpt(data: bytes | bytearray | memoryview, limit: int = 64) -> bytes:
    """At most ``limit`` bytes of ``data`` for error messages and logs (head ... tail)."""
    data = bytes(data[: limit * 4]) if len(data) > limit * 4 else bytes(data)
    if len(data) <= limit:
        return data
    half = limit // 2
    return data[:half] + b"..." + data[-half:]


class Transport(ABC):
    """Moves bytes to and from one instrument. Not thread safe: the Instrument's lock serialises.

    Implementations: :class:`VisaTransport` here, pyserial transports in the serial drivers.
    """

    #: name of the owning instrument (for error messages); set by the Instrument
    instrument_name: str = "?"
    #: set by the owning Instrument: ``check(read_started)`` is True when a pending Ctrl-C
    #: should abandon the read under way (the Instrument then resyncs the link)
    interrupt_check: Callable[[float], bool] | None = None
    #: see :data:`MIN_BLOCK_RATE_BPS`
    min_block_rate: float = MIN_BLOCK_RATE_BPS

    def __init__(self, *, timeout_s: float) -> None:
        self._timeout_s = float(timeout_s)

    def block_deadline_s(self, n: int) -> float:
        """Seconds allowed for an ``n``-byte binary read: ``timeout_s + n / min_block_rate``."""
        return self._timeout_s + n / self.min_block_rate

    def _interrupted(self, started: float) -> bool:
        check = self.interrupt_check
        return check is not None and check(started)

    @property
    @abstractmethod
    def description(self) -> str:
        """Resource string / port, for messages."""

    @property
    def timeout_s(self) -> float:
        return self._timeout_s

    @timeout_s.setter
    def timeout_s(self, value: float) -> None:
        self._timeout_s = float(value)
        if self.is_open:
            self._apply_timeout()

    def _apply_timeout(self) -> None:  # noqa: B027 - optional hook
        """Push ``timeout_s`` to the open link (override where the link caches it)."""

    @property
    @abstractmethod
    def is_open(self) -> bool: ...

    @abstractmethod
    def open(self) -> None:
        """Connect. Raises CommunicationError if the instrument cannot be reached."""

    @abstractmethod
    def close(self) -> None:
        """Disconnect; never raises (logs instead), idempotent."""

    @abstractmethod
    def write(self, data: bytes) -> None:
        """Send ``data`` followed by the write termination (if the protocol has one)."""

    @abstractmethod
    def read_line(self) -> bytes:
        """Read up to the read termination; return the line without it."""

    @abstractmethod
    def read_exact(self, n: int) -> bytes:
        """Read exactly ``n`` bytes (binary data; the termination byte has no meaning here)."""

    def resync(self) -> None:
        """After a timeout or a garbled reply: make sure no stale byte of an earlier exchange
        can be read as the reply to the next one. Default: reconnect."""
        self.close()
        self.open()

    def has_stale_input(self) -> bool:
        """True if bytes nobody asked for are waiting (checked before each exchange, without
        blocking). Default: unknown -> False. Serial transports: ``in_waiting > 0``."""
        return False

    def _error(self, message: str, *, timeout: bool = False,
               reply: bytes | bytearray | memoryview | None = None) -> CommunicationError:
        cls = InstrumentTimeoutError if timeout else CommunicationError
        return cls(f"{message} ({self.description})", instrument=self.instrument_name,
                   reply=excerpt(reply) if reply is not None else None)


_RM_LOCK = threading.Lock()
_RESOURCE_MANAGERS: dict[str, pyvisa.ResourceManager] = {}


def resource_manager(visa_library: str = "@py") -> pyvisa.ResourceManager:
    """One pyvisa ResourceManager per VISA library, shared by all instruments."""
    with _RM_LOCK:
        rm = _RESOURCE_MANAGERS.get(visa_library)
        if rm is None:
            try:
                rm = pyvisa.ResourceManager(visa_library)
            except (OSError, ValueError, pyvisa.errors.Error) as exc:
                raise CommunicationError(
                    f"cannot load VISA library {visa_library!r}: {exc}") from exc
            _RESOURCE_MANAGERS[visa_library] = rm
        return rm


class VisaTransport(Transport):
    """A pyvisa message-based resource (TCPIP SOCKET/INSTR, USB, GPIB, ASRL).

    Binary reads switch the termination character off (a ``\\n`` inside int16 data is data) and
    use large chunks; for pyvisa-py raw sockets the receive size is raised from 4 KiB to
    ``recv_size`` so that ~200 MB records come in at loopback speed.
    """

    def __init__(
        self,
        resource: str,
        *,
        timeout_s: float,
        visa_library: str = "@py",
        read_termination: str = "\n",
        write_termination: str = "\n",
        chunk_size: int = 16 << 20,
        recv_size: int = 1 << 20,
    ) -> None:
        super().__init__(timeout_s=timeout_s)
        self.resource_name = resource
        self.visa_library = visa_library
        self.read_termination = read_termination
        self.write_termination = write_termination.encode("ascii")
        self.chunk_size = int(chunk_size)
        self.recv_size = int(recv_size)
        self._res: pyvisa.resources.MessageBasedResource | None = None

    @property
    def description(self) -> str:
        return self.resource_name

    @property
    def is_open(self) -> bool:
        return self._res is not None

    @property
    def is_socket(self) -> bool:
        return self.resource_name.upper().rstrip().endswith("::SOCKET")

    @property
    def resource(self) -> pyvisa.resources.MessageBasedResource:
        if self._res is None:
            raise CommunicationError(f"{self.description} is not open",
                                     instrument=self.instrument_name)
        return self._res

    def _apply_timeout(self) -> None:
        if self._res is not None:
            self._res.timeout = max(1, round(self._timeout_s * 1000))

    def open(self) -> None:
        if self._res is not None:
            return
        rm = resource_manager(self.visa_library)
        ms = max(1, round(self._timeout_s * 1000))
        try:
            res = rm.open_resource(
                self.resource_name,
                read_termination=self.read_termination,
                write_termination="",
                timeout=ms,
                open_timeout=ms,
            )
        except VisaIOError as exc:
            raise self._error(f"cannot open: {exc.description}") from exc
        # pyvisa-py raises bare Exception("could not connect: ...") for refused sockets,
        # ValueError for malformed resource strings
        except Exception as exc:
            raise self._error(f"cannot open: {exc}") from exc
        if not isinstance(res, pyvisa.resources.MessageBasedResource):
            res.close()
            raise self._error("not a message-based VISA resource")
        res.chunk_size = self.chunk_size
        try:
            self._check_pyvisa_py_socket(res)
        except CommunicationError:
            res.close()
            raise
        self._tune_pyvisa_py(res)
        self._res = res

    @staticmethod
    def _pyvisa_py_session(res: pyvisa.resources.MessageBasedResource) -> object | None:
        return getattr(getattr(res, "visalib", None), "sessions", {}).get(res.session)

    def _check_pyvisa_py_socket(self, res: pyvisa.resources.MessageBasedResource) -> None:
        # pyvisa-py connects raw sockets non-blocking and reports success once select() says
        # "writable" -- which a refused connection also is. Ask the socket itself.
        sock = getattr(self._pyvisa_py_session(res), "interface", None)
        if not isinstance(sock, socket.socket):
            return
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise self._error(f"cannot open: connect failed: {os.strerror(err)}")
        try:
            sock.getpeername()
        except OSError as exc:
            raise self._error(f"cannot open: not connected ({exc})") from exc

    def _tune_pyvisa_py(self, res: pyvisa.resources.MessageBasedResource) -> None:
        # pyvisa-py's TCPIPSocketSession receives at most 4 KiB per recv() call; at 200 MB that
        # is 50 000 select()+recv() rounds. The attribute is public-by-convention there.
        session = self._pyvisa_py_session(res)
        if session is not None and hasattr(session, "max_recv_size"):
            session.max_recv_size = max(session.max_recv_size, self.recv_size)

    def close(self) -> None:
        res, self._res = self._res, None
        if res is None:
            return
        try:
            res.close()
        except Exception as exc:  # closing must never mask the error that made us close
            log.debug("%s: error on close ignored: %s", self.description, exc)

    def write(self, data: bytes) -> None:
        sock = self._socket_session()
        if sock is not None:
            self._socket_write(sock[0], data + self.write_termination)
            return
        res = self.resource
        try:
            res.write_raw(data + self.write_termination)
        except VisaIOError as exc:
            raise self._error(f"write failed: {exc.description}") from exc
        except OSError as exc:
            raise self._error(f"write failed: {exc}") from exc

    def _socket_session(self) -> tuple[socket.socket, bytearray] | None:
        """(socket, pyvisa-py's pending-input buffer) of a pyvisa-py raw-socket session; None
        for any other VISA session (read through pyvisa then)."""
        session = self._pyvisa_py_session(self.resource)
        sock = getattr(session, "interface", None)
        pending = getattr(session, "_pending_buffer", None)
        if isinstance(sock, socket.socket) and isinstance(pending, bytearray):
            return sock, pending
        return None

    def _wait_readable(self, sock: socket.socket, started: float, deadline: float,
                       last_rx: float, what: str, got: bytes | bytearray) -> bool:
        """Wait up to one slice for input; raise at the deadline, after ``timeout_s`` without
        a byte, or when a pending Ctrl-C abandons the read."""
        now = time.monotonic()
        if now >= deadline or now - last_rx >= self._timeout_s:
            why = (f"after {deadline - started:.3g} s" if now >= deadline
                   else f"(no byte for {self._timeout_s:g} s)")
            raise self._error(f"timeout {why} {what} ({len(got)} bytes received)",
                              timeout=True, reply=got)
        if self._interrupted(started):
            raise self._error(f"read abandoned on Ctrl-C {what} ({len(got)} bytes received)",
                              reply=got)
        try:
            readable, _, _ = select.select([sock], [], [], min(READ_SLICE_S, deadline - now))
        except (OSError, ValueError) as exc:
            raise self._error(f"read failed {what}: {exc}", reply=got) from exc
        return bool(readable)

    def _socket_write(self, sock: socket.socket, payload: bytes) -> None:
        """All of ``payload`` within ``timeout_s + len / min_block_rate``, failing after
        ``timeout_s`` without progress (an instrument that stopped reading: pyvisa-py waits
        for a writable socket without a timeout)."""
        started = last_tx = time.monotonic()
        deadline = started + self.block_deadline_s(len(payload))
        view = memoryview(payload)
        sent = 0
        while sent < len(payload):
            now = time.monotonic()
            what = f"writing {len(payload)} bytes ({sent} sent)"
            if now >= deadline or now - last_tx >= self._timeout_s:
                why = (f"after {deadline - started:.3g} s" if now >= deadline
                       else f"(instrument took no byte for {self._timeout_s:g} s)")
                raise self._error(f"timeout {why} {what}", timeout=True)
            if self._interrupted(started):
                raise self._error(f"write abandoned on Ctrl-C {what}")
            try:
                _, writable, _ = select.select([], [sock], [], min(READ_SLICE_S, deadline - now))
                if not writable:
                    continue
                # MSG_DONTWAIT: the socket is blocking; never wait inside send()
                k = sock.send(view[sent: sent + (1 << 20)], _MSG_DONTWAIT)
            except BlockingIOError:
                continue
            except (OSError, ValueError) as exc:
                raise self._error(f"write failed {what}: {exc}") from exc
            sent += k
            last_tx = time.monotonic()

    def _socket_line(self, sock: socket.socket, pending: bytearray) -> bytes:
        term = self.read_termination.encode("ascii") or b"\n"
        started = last_rx = time.monotonic()
        deadline = started + self._timeout_s
        what = "waiting for a reply line"
        scanned = 0
        while True:
            i = pending.find(term, scanned)
            if i >= 0:
                line = bytes(pending[: i + len(term)])
                del pending[: i + len(term)]  # bytes after the line stay for has_stale_input
                return line
            scanned = max(0, len(pending) - len(term) + 1)
            if len(pending) > self.chunk_size:  # a flood without terminator
                raise self._error(f"{len(pending)} bytes without a line termination",
                                  reply=bytes(pending))
            if not self._wait_readable(sock, started, deadline, last_rx, what, pending):
                continue
            try:
                data = sock.recv(self.recv_size)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise self._error(f"read failed {what}: {exc}", reply=bytes(pending)) from exc
            if not data:
                raise self._error(f"connection closed by the instrument {what}",
                                  reply=bytes(pending))
            pending += data
            last_rx = time.monotonic()

    def _socket_exact(self, sock: socket.socket, pending: bytearray, n: int) -> bytes:
        started = last_rx = time.monotonic()
        deadline = started + self.block_deadline_s(n)
        what = f"during a {n}-byte binary read"
        out = bytearray(n)
        view = memoryview(out)
        got = min(n, len(pending))
        view[:got] = pending[:got]
        del pending[:got]
        while got < n:
            if not self._wait_readable(sock, started, deadline, last_rx, what, view[:got]):
                continue
            try:  # never past n: what follows belongs to the next read
                k = sock.recv_into(view[got:], min(n - got, self.recv_size))
            except BlockingIOError:
                continue
            except OSError as exc:
                raise self._error(f"read failed {what}: {exc}", reply=view[:got]) from exc
            if k == 0:
                raise self._error(f"connection closed by the instrument {what} ({got} bytes "
                                  f"received)", reply=view[:got])
            got += k
            last_rx = time.monotonic()
        view.release()
        return bytes(out)

    @contextlib.contextmanager
    def _visa_timeout(self, seconds: float) -> Iterator[None]:
        """Other VISA sessions: the VISA timeout of one call is the time left to the
        deadline (the VISA library's own timeout semantics apply within the call)."""
        res = self.resource
        res.timeout = max(1, round(seconds * 1000))
        try:
            yield
        finally:
            res.timeout = max(1, round(self._timeout_s * 1000))

    def read_line(self) -> bytes:
        sock = self._socket_session()
        data = self._socket_line(*sock) if sock is not None else self._visa_line()
        term = self.read_termination.encode("ascii")
        if term and data.endswith(term):
            data = data[: -len(term)]
        if data.endswith(b"\r"):  # instruments ending lines in CR LF
            data = data[:-1]
        return data

    def _visa_line(self) -> bytes:
        res = self.resource
        try:
            return res.read_raw()
        except VisaIOError as exc:
            timeout = exc.error_code == visa_constants.StatusCode.error_timeout
            what = "timeout" if timeout else "read failed"
            raise self._error(f"{what} after {self._timeout_s:g} s waiting for a reply: "
                              f"{exc.description}", timeout=timeout) from exc
        except OSError as exc:
            raise self._error(f"read failed: {exc}") from exc

    def read_exact(self, n: int) -> bytes:
        if n == 0:
            return b""
        sock = self._socket_session()
        if sock is not None:
            return self._socket_exact(*sock, n)
        return self._visa_exact(n)

    def _visa_exact(self, n: int) -> bytes:
        res = self.resource
        got = bytearray()
        started = time.monotonic()
        deadline = started + self.block_deadline_s(n)
        # pieces of at most 1 MiB, so that the deadline and Ctrl-C are checked between them
        piece_max = min(self.chunk_size, 1 << 20)
        try:
            # read_termination "" -> TERMCHAR_EN off for the duration
            with res.read_termination_context(""):
                while len(got) < n:
                    left = deadline - time.monotonic()
                    if left <= 0 or self._interrupted(started):
                        why = "deadline passed" if left <= 0 else "abandoned on Ctrl-C"
                        raise self._error(f"{why} during a {n}-byte binary read ({len(got)} "
                                          f"bytes received)", timeout=left <= 0,
                                          reply=bytes(got))
                    piece = min(piece_max, n - len(got))
                    with self._visa_timeout(min(left, self._timeout_s)):
                        got += res.read_bytes(piece, chunk_size=piece)
                return bytes(got)
        except VisaIOError as exc:
            timeout = exc.error_code == visa_constants.StatusCode.error_timeout
            what = "timeout" if timeout else "read failed"
            raise self._error(f"{what} during a {n}-byte binary read (at least {len(got)} "
                              f"bytes arrived): {exc.description}", timeout=timeout,
                              reply=bytes(got)) from exc
        except OSError as exc:
            raise self._error(f"read failed during a {n}-byte binary read: {exc}",
                              reply=bytes(got)) from exc

    def has_stale_input(self) -> bool:
        # pyvisa-py raw sockets: bytes buffered by pyvisa-py or readable on the socket
        session = self._pyvisa_py_session(self._res) if self._res is not None else None
        if session is None:
            return False
        if getattr(session, "_pending_buffer", None):
            return True
        sock = getattr(session, "interface", None)
        if not isinstance(sock, socket.socket):
            return False
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return bool(readable)

    def resync(self) -> None:
        """Raw sockets: reconnect (a late reply can only arrive on the old connection).
        Other VISA interfaces: IEEE 488.2 device clear (clears the output queue) and flush."""
        if self.is_socket or self._res is None:
            super().resync()
            return
        try:
            self._res.clear()
            self._res.flush(visa_constants.BufferOperation.discard_read_buffer_no_io)
        except (VisaIOError, OSError, NotImplementedError):
            super().resync()
