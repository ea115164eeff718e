"""Emulator side of NKT Interbus: a register-file module answering on a pseudo-terminal.

:class:`InterbusModuleEmulator` decodes request telegrams, answers those addressed to its module
address (others are ignored, as on a shared bus), replies CRC-error to a request with a bad CRC,
NACK to unknown registers, writes to read-only registers and values out of range, and serves
the Interbus-specific faults (NACK, BUSY, bad CRC) of :class:`~.serial_transport.Fault`.
Concrete modules (e.g. :mod:`drivers.emulators.nkt_koheras_basik`) define the registers.
"""

from __future__ import annotations

from typing import Any

from drivers.emulators.serial_transport import MeasureHook, PtyEmulator
from drivers.nkt_interbus import (
    SOT,
    FrameSplitter,
    MessageType,
    Telegram,
    crc16_ccitt,
    decode,
    escape,
    unescape,
)
from qkd_hw.errors import ProtocolError

__all__ = ["InterbusModuleEmulator"]


class InterbusModuleEmulator(PtyEmulator):
    """An Interbus module; subclasses implement ``read_reg`` / ``write_reg``."""

    def __init__(self, *, address: int = 1, measure: MeasureHook | None = None,
                 name: str | None = None) -> None:
        super().__init__(measure=measure, name=name)
        self.address = address
        self._splitter = FrameSplitter()
        self.crc_errors = 0

    # registers: return bytes (read) / True when accepted (write); None -> NACK
    def read_reg(self, register: int) -> bytes | None:
        raise NotImplementedError

    def write_reg(self, register: int, data: bytes, mtype: MessageType) -> bool:
        raise NotImplementedError

    def parse(self, data: bytes) -> list[Any]:
        return self._splitter.feed(data)

    def _on_hangup(self) -> None:
        self._splitter = FrameSplitter()

    def handle(self, request: Any) -> bytes | None:
        frame: bytes = request
        try:
            req = decode(frame)
        except ProtocolError:
            # bad CRC: answer CRC error if the header is readable and addressed to us
            try:
                msg = unescape(frame[1:-1])
            except ProtocolError:
                return None
            if len(msg) >= 4 and msg[0] == self.address:
                self.crc_errors += 1
                return Telegram(msg[1], self.address, MessageType.CRC_ERROR, msg[3]).encode()
            return None
        if req.destination != self.address:
            return None
        reply_to = req.source
        if req.type == MessageType.READ:
            data = self.read_reg(req.register)
            if data is None:
                return Telegram(reply_to, self.address, MessageType.NACK, req.register).encode()
            return Telegram(reply_to, self.address, MessageType.DATAGRAM, req.register,
                            data).encode()
        if req.type in (MessageType.WRITE, MessageType.WRITE_SET, MessageType.WRITE_CLEAR,
                        MessageType.WRITE_TOGGLE):
            ok = self.write_reg(req.register, req.data, MessageType(req.type))
            mtype = MessageType.ACK if ok else MessageType.NACK
            return Telegram(reply_to, self.address, mtype, req.register).encode()
        return Telegram(reply_to, self.address, MessageType.NACK, req.register).encode()

    def _reply_type(self, request: Any, mtype: MessageType) -> bytes | None:
        try:
            req = decode(request)
        except ProtocolError:
            return None
        return Telegram(req.source, self.address, mtype, req.register).encode()

    def nack_reply(self, request: Any) -> bytes | None:
        return self._reply_type(request, MessageType.NACK)

    def busy_reply(self, request: Any) -> bytes | None:
        return self._reply_type(request, MessageType.BUSY)

    def corrupt_checksum(self, reply: bytes) -> bytes:
        msg = unescape(reply[1:-1])[:-2]
        bad = (crc16_ccitt(msg) ^ 0x0101).to_bytes(2, "big")
        return bytes((SOT,)) + escape(msg + bad) + reply[-1:]
