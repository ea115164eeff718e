"""NKT Photonics Interbus: the register protocol of NKT's lasers (Koheras BasiK, AdjustiK, ...).

Source: NKT Photonics, "Software Development Kit for NKT Photonics Instruments - Instruction
Manual" (SDK), chapter 2 "Interbus protocol" (v2.1.3 Oct 2018 and later). We had no copy of the
PDF; the facts below are those the manual is quoted for in two independent public drivers
(QuTech QMI ``nkt_photonics_interbus_protocol.py``; UC Berkeley ``amodevices`` ``interbus.py``,
which cites SDK 2.1.16) and they agree on every point used here:

- Serial line 115200 bit/s, 8 data bits, no parity, 1 stop bit.
- A telegram is ``SOT`` (0x0D), the message, ``EOT`` (0x0A). The message is destination
  address, source address, message type, register number, 0..240 data bytes, CRC high byte,
  CRC low byte.
- CRC-16-CCITT: polynomial 0x1021 (x^16 + x^12 + x^5 + 1), initial value 0x0000, no
  reflection, no final XOR ("XModem" variant), over the message before escaping, appended
  big-endian. Run over message + CRC, it yields 0.
- Escaping, after the CRC is appended: each 0x0A, 0x0D or 0x5E (``SOE``) in the message,
  CRC bytes included, is sent as 0x5E followed by the byte + 0x40. So SOT and EOT never occur
  inside a message.
- Message types: 0 NACK, 1 CRC error, 2 busy, 3 ACK, 4 read, 5 write, 6 write-set-bits,
  7 write-clear-bits, 8 datagram, 9 write-toggle-bits. A read is answered with a datagram
  carrying the register number and content, a write with an ACK carrying the register number;
  an unknown or read-only register with a NACK; busy and CRC-error replies ask for a repeat.
- Module addresses are 1..160; host (source) addresses 161..255. A module answers to the
  source address it was asked from, so cycling the host address per request pairs each reply
  with its request: a late reply to an earlier request is recognised and dropped.
- Register values are little-endian (the CRC alone is big-endian).

Worked examples used in the tests (request/response pairs from QMI's test suite): reading
register 0x32 of module 1 from host 0xA1 is ``0D 01 A1 04 32 26 CD 0A``, and the datagram
``0D A1 01 08 32 20 6A A2 00 2C 8C 0A`` carries the value 10644000 (U32 LE).
"""

from __future__ import annotations

import enum
import itertools
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from drivers.base import Property, quantise_inside
from drivers.serial_base import SerialInstrument, remaining_s
from drivers.serial_transport import SerialTransport
from drivers.transport import Transport
from qkd_hw.errors import (
    CommunicationError,
    ConfigError,
    InstrumentError,
    ProtocolError,
)
from qkd_hw.labconfig import InstrumentConfig

SOT = 0x0D
EOT = 0x0A
SOE = 0x5E
ESCAPE_OFFSET = 0x40
SPECIAL = frozenset((SOT, EOT, SOE))
MAX_DATA = 240
MODULE_ADDRESSES = range(1, 161)
HOST_ADDRESSES = range(161, 256)
BAUDRATE = 115200


class MessageType(enum.IntEnum):
    NACK = 0
    CRC_ERROR = 1
    BUSY = 2
    ACK = 3
    READ = 4
    WRITE = 5
    WRITE_SET = 6
    WRITE_CLEAR = 7
    DATAGRAM = 8
    WRITE_TOGGLE = 9


WRITE_TYPES = frozenset((MessageType.WRITE, MessageType.WRITE_SET, MessageType.WRITE_CLEAR,
                         MessageType.WRITE_TOGGLE))


def _make_crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC_TABLE = _make_crc_table()


def crc16_ccitt(data: bytes, crc: int = 0x0000) -> int:
    """CRC-16-CCITT (poly 0x1021, init 0x0000, MSB first, no final XOR) of ``data``."""
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC_TABLE[((crc >> 8) ^ byte) & 0xFF]
    return crc


def escape(message: bytes) -> bytes:
    """Replace each special byte (SOT, EOT, SOE) by SOE, byte + 0x40."""
    out = bytearray()
    for byte in message:
        if byte in SPECIAL:
            out += bytes((SOE, byte + ESCAPE_OFFSET))
        else:
            out.append(byte)
    return bytes(out)


def unescape(body: bytes) -> bytes:
    """Undo :func:`escape`; raises ProtocolError on a bad or dangling escape sequence."""
    out = bytearray()
    it = iter(body)
    for byte in it:
        if byte == SOE:
            nxt = next(it, None)
            if nxt is None or (nxt - ESCAPE_OFFSET) not in SPECIAL:
                raise ProtocolError(f"invalid Interbus escape sequence 0x5E {nxt!r}",
                                    reply=bytes(body))
            out.append(nxt - ESCAPE_OFFSET)
        elif byte in (SOT, EOT):
            raise ProtocolError(f"unescaped 0x{byte:02X} inside an Interbus telegram",
                                reply=bytes(body))
        else:
            out.append(byte)
    return bytes(out)


@dataclass(frozen=True)
class Telegram:
    """One Interbus message (before framing)."""

    destination: int
    source: int
    type: MessageType | int
    register: int
    data: bytes = field(default=b"")

    def __post_init__(self) -> None:
        for name in ("destination", "source", "register"):
            value = getattr(self, name)
            if not 0 <= value <= 0xFF:
                raise ValueError(f"Interbus {name} must be a byte, got {value!r}")
        if not 0 <= int(self.type) <= 0xFF:
            raise ValueError(f"Interbus message type must be a byte, got {self.type!r}")
        if len(self.data) > MAX_DATA:
            raise ValueError(f"Interbus data field holds at most {MAX_DATA} bytes, "
                             f"got {len(self.data)}")

    def message(self) -> bytes:
        """The message bytes without CRC, escaping and framing."""
        return bytes((self.destination, self.source, int(self.type), self.register)) + self.data

    def encode(self) -> bytes:
        """The bytes on the wire: SOT, escaped (message + CRC big-endian), EOT."""
        msg = self.message()
        msg += crc16_ccitt(msg).to_bytes(2, "big")
        return bytes((SOT,)) + escape(msg) + bytes((EOT,))

    @property
    def type_name(self) -> str:
        try:
            return MessageType(self.type).name
        except ValueError:
            return f"type 0x{int(self.type):02X}"


def decode(frame: bytes) -> Telegram:
    """Parse one framed telegram (SOT ... EOT); raises ProtocolError (raw frame in ``reply``)."""
    frame = bytes(frame)
    if len(frame) < 2 or frame[0] != SOT or frame[-1] != EOT:
        raise ProtocolError("Interbus telegram not framed by SOT 0x0D ... EOT 0x0A", reply=frame)
    msg = unescape(frame[1:-1])
    # destination, source, type, CRC: an ACK of an old module may lack the register byte
    if len(msg) < 5:
        raise ProtocolError(f"Interbus telegram too short ({len(msg)} bytes)", reply=frame)
    crc_rx = int.from_bytes(msg[-2:], "big")
    crc = crc16_ccitt(msg[:-2])
    if crc != crc_rx:
        raise ProtocolError(f"Interbus CRC mismatch: received 0x{crc_rx:04X}, "
                            f"computed 0x{crc:04X}", reply=frame)
    body = msg[:-2]
    register = body[3] if len(body) >= 4 else 0
    try:
        mtype: MessageType | int = MessageType(body[2])
    except ValueError:
        mtype = body[2]
    return Telegram(body[0], body[1], mtype, register, body[4:])


class FrameSplitter:
    """Cut a byte stream into SOT...EOT frames, dropping noise between frames.

    SOT and EOT never occur inside an escaped message, so a SOT always starts a new frame (the
    bytes before it were noise or a frame cut short by a disconnect).
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.dropped = 0

    def feed(self, data: bytes) -> list[bytes]:
        frames = []
        for byte in data:
            if byte == SOT:
                self.dropped += len(self._buf)
                self._buf = bytearray((SOT,))
            elif not self._buf:
                self.dropped += 1  # noise outside a frame
            else:
                self._buf.append(byte)
                if byte == EOT:
                    frames.append(bytes(self._buf))
                    self._buf = bytearray()
        return frames


# -- register value packing ------------------------------------------------------------------

_FORMATS = {"u8": "<B", "i8": "<b", "u16": "<H", "i16": "<h", "u32": "<I", "i32": "<i",
            "f32": "<f"}


def pack_value(kind: str, value: int | float) -> bytes:
    """Little-endian register content of ``value`` (kind: u8, i8, u16, i16, u32, i32, f32)."""
    fmt = _FORMATS[kind]
    try:
        return struct.pack(fmt, value if kind == "f32" else int(value))
    except struct.error as exc:
        raise ValueError(f"{value!r} does not fit an Interbus {kind} register") from exc


def unpack_value(kind: str, data: bytes, *, instrument: str | None = None,
                 register: int | None = None) -> int | float:
    """Inverse of :func:`pack_value`; raises ProtocolError when ``data`` is too short."""
    fmt = _FORMATS[kind]
    size = struct.calcsize(fmt)
    if len(data) < size:
        reg = f"register 0x{register:02X}" if register is not None else "register"
        raise ProtocolError(f"{reg} returned {len(data)} byte(s), {kind} needs {size}",
                            instrument=instrument, reply=bytes(data))
    return struct.unpack(fmt, bytes(data[:size]))[0]


# -- instrument base -------------------------------------------------------------------------


class InterbusInstrument(SerialInstrument):
    """Base of the drivers of NKT Interbus modules on a serial port (USB virtual COM port).

    Config: ``resource`` = serial port; options ``address`` (module address, default
    :attr:`DEFAULT_ADDRESS`), ``baudrate`` (default 115200).

    Each attempt of a transaction sends the request from the next host address (161..255) and
    waits ``timeout_s`` for the reply addressed back to it; frames that are garbled, carry a bad
    CRC or answer an earlier attempt are dropped. Silence, BUSY and CRC-error replies are
    retried by :meth:`Instrument.exchange` (``retries`` from the lab config); a write-toggle is
    never resent. A NACK raises :class:`~qkd_hw.errors.InstrumentError` at once.
    """

    MODEL = "NKT Interbus module"
    OPTIONS: ClassVar[Mapping[str, type | tuple[type, ...]]] = {
        **SerialInstrument.OPTIONS, "address": int}
    BAUDRATE = BAUDRATE
    QUIET_S = 0.05  # replies are addressed to the host address of their request
    DEFAULT_ADDRESS = 1
    #: pause before the repeat of a request the module answered BUSY / CRC error
    BUSY_DELAY_S = 0.02

    def __init__(self, config: InstrumentConfig, *, transport: Transport | None = None) -> None:
        super().__init__(config, transport=transport)
        self.address = int(self.option("address", self.DEFAULT_ADDRESS))
        if self.address not in MODULE_ADDRESSES:
            raise ConfigError(f"{config.source}: instruments.{self.name}.options.address must be "
                              f"1..160, got {self.address}")
        self._hosts = itertools.cycle(HOST_ADDRESSES)
        self.dropped_frames = 0

    def _await_reply(self, t: SerialTransport, request: Telegram, deadline: float) -> Telegram:
        splitter = FrameSplitter()
        received = bytearray()
        while True:
            chunk = t.read_until(bytes((EOT,)), timeout_s=remaining_s(deadline),
                                 partial_ok=True)
            received += chunk
            if not chunk.endswith(bytes((EOT,))):
                raise t._error(f"no reply within {t.timeout_s:g} s", timeout=True,
                               reply=bytes(received[-64:]))
            for frame in splitter.feed(chunk):
                self._log_rx(frame)
                try:
                    reply = decode(frame)
                except ProtocolError as exc:
                    self.dropped_frames += 1
                    self.log.debug("dropped frame %s: %s", frame.hex(" "), exc.message)
                    continue
                if reply.destination != request.source or reply.source != request.destination:
                    self.dropped_frames += 1
                    self.log.debug("dropped frame of another request: %s", frame.hex(" "))
                    continue
                return reply

    def transact(self, mtype: MessageType, register: int, data: bytes = b"", *,
                 address: int | None = None) -> Telegram:
        """One request/response (read -> datagram, write -> ACK), retried as described above."""
        dest = self.address if address is None else address
        what = f"{MessageType(mtype).name} 0x{register:02X} @{dest}"
        expected = MessageType.DATAGRAM if mtype == MessageType.READ else MessageType.ACK

        sent: list[Telegram] = []

        def request() -> bytes:
            # each attempt from the next host address: a late reply to an earlier attempt is
            # recognised by its destination and dropped
            sent.append(Telegram(dest, next(self._hosts), mtype, register, bytes(data)))
            return sent[-1].encode()

        def read(t: SerialTransport, deadline: float) -> Telegram:
            reply = self._await_reply(t, sent[-1], deadline)
            raw = reply.encode()
            if reply.type in (MessageType.BUSY, MessageType.CRC_ERROR):
                time.sleep(self.BUSY_DELAY_S)
                raise CommunicationError(f"module answered {reply.type_name}", reply=raw)
            if reply.type == MessageType.NACK:
                raise InstrumentError("module answered NACK (register unknown or read-only, "
                                      "or value not allowed)", reply=raw)
            if reply.type != expected:
                raise ProtocolError(f"answered {reply.type_name} instead of {expected.name}",
                                    reply=raw)
            # an ACK of an old module may carry register 0 (SDK)
            if reply.register != register and not (expected == MessageType.ACK
                                                    and reply.register == 0):
                raise ProtocolError(f"reply is for register 0x{reply.register:02X}", reply=raw)
            return reply

        return self.serial_exchange(what, request, read,
                                    idempotent=mtype != MessageType.WRITE_TOGGLE)

    def read_register(self, register: int, *, address: int | None = None) -> bytes:
        """Raw content of a register."""
        return self.transact(MessageType.READ, register, address=address).data

    def write_register(self, register: int, data: bytes, *, address: int | None = None,
                       mtype: MessageType = MessageType.WRITE) -> None:
        """Write raw ``data`` to a register (or set/clear/toggle bits with ``mtype``)."""
        if mtype not in WRITE_TYPES:
            raise ValueError(f"{mtype!r} is not a write message type")
        self.transact(mtype, register, data, address=address)

    def read_value(self, register: int, kind: str) -> int | float:
        return unpack_value(kind, self.read_register(register), instrument=self.name,
                            register=register)

    def write_value(self, register: int, kind: str, value: int | float) -> None:
        self.write_register(register, pack_value(kind, value))


class RegisterProperty(Property[Any]):
    """A register declared once: address, type, scale (value = raw * scale) and unit.

    Without ``encode`` a value is sent as a whole number of steps of ``scale``; the lab limits
    (:meth:`check_limits`) are checked again on the value actually sent and the request is
    rounded towards the inside of the limit when its nearest step lies beyond it (see
    :func:`quantise_inside`).
    """

    def __init__(self, register: int, kind: str, *, scale: float = 1.0,
                 decode: Callable[[Any], Any] | None = None,
                 encode: Callable[[Any], int] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if kind not in _FORMATS:
            raise ValueError(f"register kind must be one of {sorted(_FORMATS)}, got {kind!r}")
        self.register = register
        self.kind = kind
        self.scale = scale
        self.decode = decode
        self.encode = encode
        self.__doc__ = f"{self.__doc__} Register 0x{register:02X} ({kind}, x{scale:g})."

    def _read(self, inst: InterbusInstrument) -> Any:
        raw = inst.read_value(self.register, self.kind)
        if self.decode is not None:
            return self.decode(raw)
        return raw * self.scale if self.scale != 1.0 else raw

    def check_limits(self, inst: InterbusInstrument, value: Any, what: str = "") -> None:
        """LimitError if ``value`` violates a lab limit of this register (no I/O). Here the
        ``limit`` of the declaration; subclasses add limits in other units."""
        self.check_lab_limit(inst, value, what)

    def _write(self, inst: InterbusInstrument, value: Any) -> None:
        if self.encode is not None:
            raw = self.encode(value)
        else:
            self.check_limits(inst, value)  # the request itself (limits of subclasses too)
            unit = f" {self.unit}" if self.unit else ""
            what = (f"{type(inst).__name__}.{self.name} (requested {value!r}{unit}, sent in "
                    f"steps of {self.scale:g}{unit})")
            raw = quantise_inside(value, self.scale,
                                  lambda v, w: self.check_limits(inst, v, w), what)
        inst.write_value(self.register, self.kind, raw)
