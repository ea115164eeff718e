"""A SCPI instrument emulator served over TCP (raw socket, ``\\n`` terminated) on loopback.

Drivers reach it through real pyvisa as ``TCPIP::127.0.0.1::<port>::SOCKET``. Each model
subclasses :class:`ScpiEmulator`, registers command handlers with the SCPI long/short form
spelling of its manual (``@command("[SENSe]:CORRection:WAVelength")``) and keeps its state as
plain attributes, so a virtual lab can read the state (output on? attenuation?) and feed
measured values through hook attributes.

Features shared by every emulator:

* IEEE 488.2 basics: ``*IDN?``, ``*CLS``, ``*RST``, ``*OPC?``, ``*WAI``, an error queue read
  by ``SYST:ERR?`` (``-113 Undefined header``, ``-222 Data out of range`` ... ; overflow
  replaces the last entry by ``-350 Queue overflow``), definite-length binary blocks in program
  messages (a ``\\n`` inside a block is data) and in replies (sent without copies).
* ``received``: every program message as raw bytes (blocks included) -- the byte-level tests
  compare it with the documented command set; ``connections``: number of accepted connections.
* Fault injection on demand (:meth:`ScpiEmulator.inject`): delayed reply, missing reply,
  garbled reply, reply trickled a few bytes at a time, disconnect in the middle of a binary
  reply, disconnect on receipt, an error pushed into the queue.
* Background threads; ``with Emulator() as emu:`` starts and stops cleanly (listening socket
  and client sockets closed, threads joined).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

log = logging.getLogger(__name__)

__all__ = ["BlockReply", "Fault", "HeaderPattern", "ScpiEmulator", "ScpiError", "command"]

ERROR_MESSAGES = {
    -100: "Command error",
    -102: "Syntax error",
    -108: "Parameter not allowed",
    -109: "Missing parameter",
    -113: "Undefined header",
    -160: "Block data error",
    -200: "Execution error",
    -221: "Settings conflict",
    -222: "Data out of range",
    -223: "Too much data",
    -224: "Illegal parameter value",
    -350: "Queue overflow",
}


class ScpiError(Exception):
    """Raised by a handler: pushed into the emulator's error queue, no reply sent."""

    def __init__(self, code: int, detail: str = "") -> None:
        msg = ERROR_MESSAGES.get(code, "Error")
        super().__init__(f'{code},"{msg}{"; " + detail if detail else ""}"')
        self.code = code


# --------------------------------------------------------------------------- header matching


class HeaderPattern:
    """A manual-style header (``[:SOURce]:VOLTage<n>[:LEVel]:OFFSet?``) to match against.

    Upper-case letters are the short form, the whole word the long form (either accepted,
    case-insensitive, nothing in between); ``[...]`` nodes are optional; ``<n>`` is a numeric
    suffix, returned by :meth:`match` (``""`` if omitted).
    """

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.query = spec.endswith("?")
        body = spec[:-1] if self.query else spec
        self.nodes: list[tuple[str, str, bool, bool]] = []
        for optional, required in re.findall(r"\[:?([^\]]+)\]|:?([^:\[]+)", body):
            node = (optional or required).lstrip(":")
            m = re.fullmatch(r"(\*?[A-Za-z]+?)(<n>)?", node)
            if not m:
                raise ValueError(f"bad SCPI node {node!r} in {spec!r}")
            name, suffix = m.groups()
            short = "".join(c for c in name if c.isupper() or c == "*")
            self.nodes.append((short, name.upper(), bool(optional), bool(suffix)))

    def match(self, header: str) -> tuple[str, ...] | None:
        is_query = header.endswith("?")
        if is_query != self.query:
            return None
        parts = header[:-1] if is_query else header
        got = [p.upper() for p in parts.lstrip(":").split(":")]
        return self._match(0, got, ())

    def _match(self, i: int, got: list[str], sfx: tuple[str, ...]) -> tuple[str, ...] | None:
        if i == len(self.nodes):
            return sfx if not got else None
        short, long_, optional, has_suffix = self.nodes[i]
        if got:
            word = got[0]
            digits = ""
            if has_suffix:
                m = re.fullmatch(r"([A-Z*]+)(\d*)", word)
                if m:
                    word, digits = m.groups()
            if word in (short, long_):
                r = self._match(i + 1, got[1:], (*sfx, digits) if has_suffix else sfx)
                if r is not None:
                    return r
        if optional:
            return self._match(i + 1, got, (*sfx, "") if has_suffix else sfx)
        return None


def command(spec: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering an emulator handler ``f(self, args: str, *suffixes) -> reply``."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        specs = getattr(fn, "_scpi_specs", [])
        specs.append(spec)
        fn._scpi_specs = specs  # type: ignore[attr-defined]
        return fn

    return deco


# --------------------------------------------------------------------------- faults


@dataclasses.dataclass
class Fault:
    """One injected fault. ``match`` is a regex searched in the program message (None: any).

    kinds: ``delay`` (reply after ``seconds``), ``drop`` (no reply), ``garble`` (reply replaced
    by ``payload`` bytes), ``trickle`` (the whole reply, ``step`` bytes every ``seconds``: an
    instrument that never goes quiet but never finishes in time), ``cut_block`` (binary reply:
    send ``fraction`` of the data, then close the connection), ``disconnect`` (close the
    connection on receipt, command not executed), ``error`` (execute, then push ``code`` into
    the error queue).
    """

    kind: str
    match: str | None = None
    count: int = 1
    seconds: float = 0.0
    payload: bytes = b"\x8f#garbled\xff"
    fraction: float = 0.5
    code: int = -200
    step: int = 1
    hits: int = 0

    KINDS: ClassVar[tuple[str, ...]] = ("delay", "drop", "garble", "trickle", "cut_block",
                                        "disconnect", "error")

    def __post_init__(self) -> None:
        if self.kind not in self.KINDS:
            raise ValueError(f"fault kind must be one of {self.KINDS}, got {self.kind!r}")

    def matches(self, message: bytes) -> bool:
        if self.count <= 0:
            return False
        if self.match is None:
            return True
        return re.search(self.match.encode(), message, re.IGNORECASE) is not None


@dataclasses.dataclass
class BlockReply:
    """A binary reply: definite-length block of ``data`` (sent zero-copy)."""

    data: memoryview


class _DisconnectError(Exception):
    pass


# --------------------------------------------------------------------------- server


class ScpiEmulator:
    """Base emulator; see the module docstring. Subclasses set ``IDN`` and add handlers."""

    IDN: ClassVar[str] = "Emulator,SCPI,0,0"
    ERROR_QUEUE_SIZE: ClassVar[int] = 30

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0,
                 reply_jitter_s: float = 0.0) -> None:
        self.host = host
        self._requested_port = port
        self.port: int | None = None
        self.reply_jitter_s = reply_jitter_s
        self.state_lock = threading.RLock()
        self.received: list[bytes] = []
        self.rx_bytes = 0  # every byte received, complete message or not
        self.connections = 0
        self.errors: deque[str] = deque()
        self.faults: list[Fault] = []
        self._server: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._clients: set[socket.socket] = set()
        self._stop = threading.Event()
        self._handlers: list[tuple[HeaderPattern, Callable[..., Any]]] = []
        seen: set[str] = set()
        for klass in type(self).__mro__:  # subclass first: overrides win
            for name, attr in vars(klass).items():
                if name in seen:
                    continue
                seen.add(name)
                for spec in getattr(attr, "_scpi_specs", []):
                    self._handlers.append((HeaderPattern(spec), attr))
        self.reset()

    # -- life cycle ----------------------------------------------------------------------

    @property
    def resource(self) -> str:
        if self.port is None:
            raise RuntimeError("emulator not started")
        return f"TCPIP::{self.host}::{self.port}::SOCKET"

    def start(self) -> ScpiEmulator:
        if self._server is not None:
            raise RuntimeError("already started")
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((self.host, self._requested_port))
        srv.listen(8)
        srv.settimeout(0.05)
        self._server = srv
        self.port = srv.getsockname()[1]
        self._stop.clear()
        t = threading.Thread(target=self._accept_loop, name=f"{type(self).__name__}-accept",
                             daemon=True)
        self._threads.append(t)
        t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        srv, self._server = self._server, None
        if srv is not None:
            srv.close()
        with self.state_lock:
            clients = list(self._clients)
        for c in clients:
            self._close_client(c)
        for t in self._threads:
            t.join(timeout=5.0)
        alive = [t.name for t in self._threads if t.is_alive()]
        self._threads = []
        if alive:
            raise RuntimeError(f"emulator threads did not stop: {alive}")

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def drop_connections(self) -> None:
        """Close every client connection now (simulates a link failure)."""
        with self.state_lock:
            clients = list(self._clients)
        for c in clients:
            self._close_client(c)

    def _close_client(self, conn: socket.socket) -> None:
        with self.state_lock:
            self._clients.discard(conn)
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_RDWR)
        conn.close()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            srv = self._server
            if srv is None:
                return
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            # blocking: a send must wait for a slow reader, never give up after a socket
            # timeout (stop() shuts the socket down, which ends a blocked send)
            conn.settimeout(None)
            with self.state_lock:
                self.connections += 1
                self._clients.add(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True,
                                 name=f"{type(self).__name__}-conn{self.connections}")
            self._threads = [x for x in self._threads if x.is_alive()] + [t]
            t.start()

    # -- program message framing -----------------------------------------------------------

    def _messages(self, conn: socket.socket) -> Iterator[bytes]:
        """Yield complete program messages; a definite block may contain ``\\n``."""
        buf = bytearray()
        pos = 0  # bytes before pos are scanned: outside blocks, no terminator
        wait_for = 0  # a block is incomplete until len(buf) >= wait_for
        block_end = -1  # end of the last block scanned: a '\r' there is data, not CRLF
        while not self._stop.is_set():
            while len(buf) >= wait_for and pos < len(buf):
                nl = buf.find(b"\n", pos)
                hs = buf.find(b"#", pos, nl if nl != -1 else len(buf))
                if hs != -1:
                    if hs + 2 > len(buf):
                        wait_for = hs + 2
                        break
                    nd = buf[hs + 1]
                    if not 0x31 <= nd <= 0x39:  # not '#1'..'#9': no definite block here
                        pos = hs + 1
                        continue
                    ndig = nd - 0x30
                    if hs + 2 + ndig > len(buf):
                        wait_for = hs + 2 + ndig
                        break
                    digits = bytes(buf[hs + 2: hs + 2 + ndig])
                    if not digits.isdigit():
                        pos = hs + 1
                        continue
                    end = hs + 2 + ndig + int(digits)
                    if end > len(buf):
                        wait_for = end
                        pos = hs
                        break
                    pos = block_end = end
                    continue
                if nl == -1:
                    pos = len(buf)
                    break
                msg = bytes(buf[:nl])
                del buf[: nl + 1]
                ends_in_block = block_end == nl
                pos = wait_for = 0
                block_end = -1
                yield msg if ends_in_block else msg.rstrip(b"\r")
            try:
                ready, _, _ = select.select([conn], [], [], 0.05)
                if not ready:
                    continue
                chunk = conn.recv(4 << 20)
            except (OSError, ValueError):  # closed by stop()/drop_connections()
                return
            if not chunk:
                return
            with self.state_lock:
                self.rx_bytes += len(chunk)
            buf += chunk

    def _serve(self, conn: socket.socket) -> None:
        try:
            for msg in self._messages(conn):
                self._handle_message(conn, msg)
        except _DisconnectError:
            pass
        except OSError as exc:  # client went away mid-reply
            log.debug("emulator connection ended: %s", exc)
        finally:
            self._close_client(conn)

    def _take_fault(self, msg: bytes, kinds: tuple[str, ...]) -> Fault | None:
        with self.state_lock:
            for f in self.faults:
                if f.kind in kinds and f.matches(msg):
                    f.count -= 1
                    f.hits += 1
                    return f
        return None

    def _handle_message(self, conn: socket.socket, msg: bytes) -> None:
        with self.state_lock:
            self.received.append(msg)
        if self._take_fault(msg, ("disconnect",)):
            raise _DisconnectError
        replies: list[Any] = []
        with self.state_lock:
            for unit in _split_units(msg):
                try:
                    r = self._dispatch(unit)
                except ScpiError as exc:
                    self.push_error(str(exc))
                    continue
                if r is not None:
                    replies.append(r)
            err = self._take_fault(msg, ("error",))
            if err is not None:
                self.push_error(f'{err.code},"{ERROR_MESSAGES.get(err.code, "Error")}; '
                                f'injected"')
        if not replies:
            return
        fault = self._take_fault(msg, ("delay", "drop", "garble", "trickle", "cut_block"))
        if self.reply_jitter_s:
            time.sleep(self.reply_jitter_s * (0.5 + 0.5 * (hash(msg) % 7) / 6))
        if fault is not None and fault.kind == "drop":
            return
        if fault is not None and fault.kind == "delay":
            time.sleep(fault.seconds)
        if fault is not None and fault.kind == "garble":
            conn.sendall(fault.payload + b"\n")
            return
        if fault is not None and fault.kind == "trickle":
            self._trickle(conn, _serialise(replies), fault)
            return
        for i, r in enumerate(replies):
            last = i == len(replies) - 1
            if isinstance(r, BlockReply):
                head = b"#" + str(len(str(len(r.data)))).encode() + str(len(r.data)).encode()
                conn.sendall(head)
                if fault is not None and fault.kind == "cut_block":
                    conn.sendall(r.data[: int(len(r.data) * fault.fraction)])
                    raise _DisconnectError
                _send_view(conn, r.data)
                conn.sendall(b"\n" if last else b";")
            else:
                conn.sendall(str(r).encode("ascii") + (b"\n" if last else b";"))

    def _trickle(self, conn: socket.socket, reply: bytes, fault: Fault) -> None:
        # stop() (or the client closing) ends it: a send fails or the stop event is set
        for off in range(0, len(reply), max(1, fault.step)):
            if self._stop.wait(fault.seconds):
                return
            conn.sendall(reply[off: off + max(1, fault.step)])

    def _dispatch(self, unit: bytes) -> Any:
        header, _, args = unit.partition(b" ")
        try:
            h = header.decode("ascii").strip()
        except UnicodeDecodeError:
            raise ScpiError(-102, "non-ASCII header") from None
        args = args.lstrip()
        if b"#" not in args:  # never strip bytes off binary block data
            args = args.rstrip()
        for pattern, fn in self._handlers:
            suffixes = pattern.match(h)
            if suffixes is not None:
                return fn(self, args, *suffixes)
        raise ScpiError(-113, h[:40])

    # -- state helpers ------------------------------------------------------------------

    def push_error(self, entry: str) -> None:
        with self.state_lock:
            if len(self.errors) >= self.ERROR_QUEUE_SIZE:
                self.errors[-1] = '-350,"Queue overflow"'
            else:
                self.errors.append(entry)

    def inject(self, kind: str, match: str | None = None, **kw: Any) -> Fault:
        """Arm a fault (see :class:`Fault`); returns it (``hits`` counts how often it fired)."""
        f = Fault(kind, match, **kw)
        with self.state_lock:
            self.faults.append(f)
        return f

    def clear_received(self) -> None:
        with self.state_lock:
            self.received.clear()
            self.rx_bytes = 0

    def reset(self) -> None:
        """``*RST`` state; subclasses extend (call super)."""

    # -- IEEE 488.2 common commands ----------------------------------------------------------

    @command("*IDN?")
    def _idn(self, args: bytes) -> str:
        return self.IDN

    @command("*CLS")
    def _cls(self, args: bytes) -> None:
        self.errors.clear()

    @command("*RST")
    def _rst(self, args: bytes) -> None:
        self.reset()

    @command("*OPC?")
    def _opc(self, args: bytes) -> str:
        return "1"

    @command("*WAI")
    def _wai(self, args: bytes) -> None:
        return None

    @command("SYSTem:ERRor[:NEXT]?")
    def _syst_err(self, args: bytes) -> str:
        if self.errors:
            return self.errors.popleft()
        return '0,"No error"'

    # -- argument helpers for handlers --------------------------------------------------------

    @staticmethod
    def number(args: bytes, *, lo: float | None = None, hi: float | None = None,
               units: dict[str, float] | None = None,
               special: dict[str, float] | None = None) -> float:
        """Parse a decimal numeric parameter (optional unit suffix, MIN/MAX/DEF)."""
        text = args.decode("ascii", "replace").strip()
        if not text:
            raise ScpiError(-109)
        up = text.upper()
        for key, val in (special or {}).items():
            if up in (key, key[:3]):
                return val
        m = re.fullmatch(r"([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z]*)", text)
        if not m:
            raise ScpiError(-224, text[:20])
        value = float(m.group(1))
        unit = m.group(2).upper()
        if unit:
            if not units or unit not in units:
                raise ScpiError(-224, f"unit {unit}")
            value *= units[unit]
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ScpiError(-222, text[:20])
        return value

    @staticmethod
    def boolean(args: bytes) -> bool:
        t = args.decode("ascii", "replace").strip().upper()
        if t in ("1", "ON"):
            return True
        if t in ("0", "OFF"):
            return False
        raise ScpiError(-224, t[:20])

    @staticmethod
    def block(args: bytes) -> tuple[bytes, bytes]:
        """Split ``args`` into (text before the block, block data); ScpiError if malformed."""
        hs = args.find(b"#")
        if hs == -1 or hs + 2 > len(args) or not args[hs + 1: hs + 2].isdigit():
            raise ScpiError(-160, "no block")
        nd = int(args[hs + 1: hs + 2])
        if nd == 0:
            raise ScpiError(-160, "indefinite block")
        length = int(args[hs + 2: hs + 2 + nd])
        data = args[hs + 2 + nd:]
        if len(data) != length:
            raise ScpiError(-160, f"block length {len(data)} != {length}")
        return args[:hs], data


def _serialise(replies: list[Any]) -> bytes:
    """The response message of ``replies`` as bytes (blocks as definite-length blocks)."""
    out = bytearray()
    for i, r in enumerate(replies):
        if isinstance(r, BlockReply):
            out += b"#" + str(len(str(len(r.data)))).encode() + str(len(r.data)).encode()
            out += r.data
        else:
            out += str(r).encode("ascii")
        out += b"\n" if i == len(replies) - 1 else b";"
    return bytes(out)


def _send_view(conn: socket.socket, data: memoryview) -> None:
    # sendall on a memoryview slices without copying; 8 MiB pieces keep the GIL released
    step = 8 << 20
    for off in range(0, len(data), step):
        conn.sendall(data[off: off + step])


def _split_units(msg: bytes) -> list[bytes]:
    """Split a program message at ';' outside blocks and quotes."""
    if b";" not in msg:
        return [msg] if msg.strip() else []
    if b"#" in msg or b'"' in msg:
        # conservative: messages with blocks/strings are never compound in our drivers
        return [msg]
    return [u.strip() for u in msg.split(b";") if u.strip()]
