"""Agiltron fibre-optic switch (FF 1xN series with the CL-LB switch driver board), binary frames.

Protocol: Agiltron "Command List for CL-LB Switch Driver" (5-20-2020), as implemented in the
public QuTech QMI drivers ``agiltron/ff1x4.py`` and ``_ff_optical_switch.py`` (we had no copy of
the document itself). Serial 9600 bit/s, 8N1, no handshake. Every command and every reply is a
4-byte frame::

    byte 0   header   0x01
    byte 1   command  0x11 = read the active channel, 0x12 = select a channel
    byte 2   0x00
    byte 3   channel  1..N (0x00 in the read request)

* read:   host ``01 11 00 00`` -> switch ``01 11 00 <ch>``
* select: host ``01 12 00 <ch>`` -> switch echoes the frame ``01 12 00 <ch>`` once switched

The frame has **no checksum** (the brief for this driver assumed one; the documented protocol
has none). What the driver can still check, and does: the header, the command byte, the zero
byte, the echo of a selection byte for byte, and that a reported channel is 1..N. A corrupted
channel byte that stays within 1..N cannot be detected from one reply, so reads can be
confirmed (option ``confirm_reads = true``: two reads must agree) and every selection is
verified by reading the channel back. Nor do replies carry a tag: after a timeout the driver
drains the line until it was quiet for a full timeout before it sends again, so a reply later
than about twice the timeout could still be taken for the next one (no protocol-level cure).

Safe state: the lab-config limit ``channel`` (e.g. ``{min = 1, max = 2}`` to keep light away
from a detector on port 3) is checked before anything is sent; :meth:`AgiltronSwitch.routed`
selects a channel for a block and restores the previous one afterwards (also on error and
Ctrl-C).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from drivers.base import Property, Range
from drivers.serial_base import SerialInstrument
from drivers.serial_transport import SerialTransport
from qkd_hw.errors import ConfigError, InstrumentError, LimitError, ProtocolError

__all__ = ["CMD_READ", "CMD_SELECT", "HEADER", "AgiltronSwitch", "decode_reply", "frame"]

HEADER = 0x01
CMD_READ = 0x11
CMD_SELECT = 0x12
FRAME_LEN = 4
BAUDRATE = 9600


def frame(command: int, channel: int = 0) -> bytes:
    """The 4 bytes of a command frame."""
    if command not in (CMD_READ, CMD_SELECT):
        raise ValueError(f"command must be 0x11 or 0x12, got 0x{command:02X}")
    if not 0 <= channel <= 0xFF:
        raise ValueError(f"channel must be a byte, got {channel}")
    return bytes((HEADER, command, 0x00, channel))


def decode_reply(reply: bytes, command: int, n_channels: int) -> int:
    """Channel number carried by a reply to ``command``; ProtocolError when malformed."""
    if len(reply) != FRAME_LEN:
        raise ProtocolError(f"reply of {len(reply)} bytes, expected {FRAME_LEN}", reply=reply)
    if reply[0] != HEADER or reply[1] != command or reply[2] != 0x00:
        raise ProtocolError(f"reply is not a 01 {command:02X} 00 xx frame", reply=reply)
    channel = reply[3]
    if not 1 <= channel <= n_channels:
        raise ProtocolError(f"reported channel {channel} outside 1..{n_channels}", reply=reply)
    return channel


class _Channel(Property[int]):
    def _read(self, inst: AgiltronSwitch) -> int:
        first = inst.read_channel()
        if inst.option("confirm_reads", False):
            second = inst.read_channel()
            if second != first:
                raise ProtocolError(f"two reads disagree: channel {first} then {second}",
                                    instrument=inst.name)
        return first

    def check(self, inst: Any, value: Any) -> Any:
        value = super().check(inst, value)
        if value > inst.n_channels:
            raise LimitError(f"{type(inst).__name__}.{self.name} = {value} outside the "
                             f"switch's channels 1..{inst.n_channels}; nothing was sent",
                             instrument=inst.name)
        return value

    def _write(self, inst: AgiltronSwitch, value: int) -> None:
        inst._select(value)


class AgiltronSwitch(SerialInstrument):
    """Agiltron FF 1xN optical switch. Config: ``resource`` = serial port; options
    ``channels`` (N, default 4), ``baudrate`` (default 9600), ``confirm_reads``."""

    MODEL = "Agiltron FF 1xN optical switch (CL-LB driver)"
    LIMITS: ClassVar[frozenset[str]] = frozenset({"channel"})
    OPTIONS: ClassVar[Mapping[str, type | tuple[type, ...]]] = {
        **SerialInstrument.OPTIONS, "channels": int, "confirm_reads": bool}
    BAUDRATE = BAUDRATE
    # replies carry no tag: after a failure drain until the line was quiet a full timeout
    QUIET_S = None

    channel = _Channel(limit="channel", validator=Range(1, 255, integer=True),
                       doc="Active output channel (1..N). Setting it switches and verifies.")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.n_channels = int(self.option("channels", 4))
        if not 1 <= self.n_channels <= 255:
            raise ConfigError(f"{self.config.source}: instruments.{self.name}.options.channels "
                              f"must be 1..255, got {self.n_channels}")

    def _on_open(self) -> None:
        self.log.info("%s: channel %d of %d", self.name, self.read_channel(), self.n_channels)

    def _frame_exchange(self, request: bytes, command: int) -> int:
        def read(t: SerialTransport, deadline: float) -> int:
            reply = t.read_exact(FRAME_LEN)
            self._log_rx(reply)
            channel = decode_reply(reply, command, self.n_channels)
            if command == CMD_SELECT and reply != request:
                raise ProtocolError("selection not echoed", reply=reply)
            return channel

        return self.serial_exchange(request.hex(" "), request, read, idempotent=True)

    def read_channel(self) -> int:
        """Active channel as reported by the switch (one read)."""
        return self._frame_exchange(frame(CMD_READ), CMD_READ)

    def select_channel(self, channel: int) -> None:
        """Switch to ``channel`` (1..N; lab limit ``channel``) and read it back."""
        self.channel = channel

    def _select(self, channel: int) -> None:
        with self.transaction():
            self._frame_exchange(frame(CMD_SELECT, channel), CMD_SELECT)
            actual = self.read_channel()
            if actual != channel:
                raise InstrumentError(f"switch reports channel {actual} after selecting "
                                      f"{channel}", instrument=self.name)

    @contextlib.contextmanager
    def routed(self, channel: int) -> Iterator[AgiltronSwitch]:
        """Select ``channel`` for the block; the previous channel is restored afterwards."""
        previous = self.channel
        self.channel = channel
        try:
            yield self
        finally:
            try:
                self.channel = previous
            except InstrumentError as exc:
                self.log.error("%s: could not restore channel %d: %s", self.name, previous, exc)
                raise
