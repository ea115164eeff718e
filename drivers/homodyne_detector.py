"""Balanced homodyne detector with a serial control interface ("BHD-CTRL" protocol, v1).

No balanced detector with a public control protocol turned up (Thorlabs PDB4xx, Koheron and
Femto units are set by switches or pins, and lab-built BHDs speak whatever their firmware
author chose), so this module defines the protocol our detector board implements. It is
modelled on NMEA 0183 framing, so every message is self-delimiting, tagged and checksummed.

Line: 115200 bit/s, 8N1, no handshake, ASCII.

Request  ``$<BODY>*<CS>\\r\\n``   reply  ``!<BODY>*<CS>\\r\\n``

``<BODY>`` is ``<CMD>[,<arg>]...``; ``<CS>`` is the XOR of all bytes of ``<BODY>`` as two
upper-case hex digits: ``$GAIN,2*1F`` since 0x47 ^ 0x41 ^ 0x49 ^ 0x4E ^ 0x2C ^ 0x32 = 0x1F.
Every reply names the command it answers, so a late reply to an earlier request is recognised
and dropped.

=====================  =========================  =========================================
request                 reply                      meaning
=====================  =========================  =========================================
``IDN``                 ``IDN,<vendor>,<model>,``  identification
                        ``<serial>,<firmware>``
``GAIN``                ``GAIN,<k>``               transimpedance gain step k (0..3)
``GAIN,<k>``            ``GAIN,<k>``               select gain step k
``EN``                  ``EN,<0|1>``               photodiode bias + amplifier enabled
``EN,<0|1>``            ``EN,<0|1>``               enable / disable
``DC,<1|2>``            ``DC,<n>,<uA>``            DC photocurrent of photodiode n, uA
``TEMP``                ``TEMP,<degC>``            board temperature
=====================  =========================  =========================================

Gain steps k = 0..3 are transimpedances of 1e3, 1e4, 1e5, 1e6 V/A (60, 80, 100, 120 dBOhm).
Refusals: ``ERR,<code>,<CMD>`` with code 1 unknown command, 2 bad or out-of-range argument,
3 not possible now (DC monitor while disabled), 4 checksum error in the request (the host
resends). ``BUSY,<CMD>``: try again shortly.

Safe state: a lab-config ``gain_db`` limit (transimpedance in dBOhm) is checked before a gain
is sent. :meth:`HomodyneDetector.settings_session` restores gain and enable state when the
block fails or is interrupted. ``close()`` changes nothing.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from drivers.base import Boolean, Property, Range
from drivers.serial_base import SerialInstrument, remaining_s
from drivers.serial_transport import SerialTransport
from qkd_hw.errors import CommunicationError, InstrumentError, ProtocolError

__all__ = ["GAIN_V_PER_A", "Balance", "HomodyneDetector", "checksum", "encode", "parse_reply"]

GAIN_V_PER_A = (1e3, 1e4, 1e5, 1e6)
ERROR_CODES = {1: "unknown command", 2: "bad or out-of-range argument",
               3: "not possible in the present state", 4: "checksum error in the request"}
BUSY_DELAY_S = 0.02


def checksum(body: bytes) -> int:
    """XOR of the body bytes (NMEA 0183 style)."""
    cs = 0
    for byte in body:
        cs ^= byte
    return cs


def encode(body: str, start: bytes = b"$") -> bytes:
    """A framed message: ``$BODY*CS\\r\\n`` (``start=b"!"`` for replies)."""
    raw = body.encode("ascii")
    if any(c in raw for c in b"$!*\r\n"):
        raise ValueError(f"message body may not contain $ ! * CR LF: {body!r}")
    return start + raw + b"*" + f"{checksum(raw):02X}".encode("ascii") + b"\r\n"


def parse_reply(line: bytes) -> list[str]:
    """Fields of a reply line (terminator stripped); ProtocolError when malformed."""
    line = line.strip(b"\r\n")
    if len(line) < 4 or line[:1] != b"!" or line[-3:-2] != b"*":
        raise ProtocolError("reply not framed as !BODY*CS", reply=line)
    body, cs_text = line[1:-3], line[-2:]
    try:
        cs = int(cs_text, 16)
    except ValueError:
        raise ProtocolError("reply checksum is not hex", reply=line) from None
    if cs != checksum(body):
        raise ProtocolError(f"reply checksum {cs:02X} != computed {checksum(body):02X}",
                            reply=line)
    try:
        return body.decode("ascii").split(",")
    except UnicodeDecodeError:
        raise ProtocolError("reply is not ASCII", reply=line) from None


@dataclass(frozen=True)
class Balance:
    """DC photocurrents of the two photodiodes and their imbalance (I1 - I2) / (I1 + I2)."""

    pd1_ua: float
    pd2_ua: float

    @property
    def imbalance(self) -> float:
        total = self.pd1_ua + self.pd2_ua
        return (self.pd1_ua - self.pd2_ua) / total if total > 0 else math.nan


class _Field(Property[Any]):
    """A query ``CMD`` answered ``CMD,<value>``, set by ``CMD,<value>``."""

    def __init__(self, cmd: str, parse: Any, *, encode_value: Any = str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cmd = cmd
        self.parse = parse
        self.encode_value = encode_value

    def _read(self, inst: HomodyneDetector) -> Any:
        fields = inst.request(self.cmd)
        return inst._value(fields, 1, self.parse, self.cmd)

    def _write(self, inst: HomodyneDetector, value: Any) -> None:
        arg = self.encode_value(value)
        fields = inst.request(f"{self.cmd},{arg}")
        if fields[1:2] != [str(arg)]:
            raise ProtocolError(f"{self.cmd} set to {arg} but reply says {fields[1:]}",
                                instrument=inst.name, reply=",".join(fields))


def _parse_bool(text: str) -> bool:
    if text not in ("0", "1"):
        raise ValueError(f"not 0/1: {text!r}")
    return text == "1"


def _gain_db(step: int) -> float:
    return 20 * math.log10(GAIN_V_PER_A[step])


class HomodyneDetector(SerialInstrument):
    """Balanced homodyne detector on a serial port (``resource``; option ``baudrate``)."""

    MODEL = "balanced homodyne detector (BHD-CTRL v1)"
    LIMITS: ClassVar[frozenset[str]] = frozenset({"gain_db"})
    OPTIONS: ClassVar[Mapping[str, type | tuple[type, ...]]] = SerialInstrument.OPTIONS
    READ_TERMINATIONS = b"\n"
    QUIET_S = 0.05  # replies are tagged: a short drain is enough

    gain_step = _Field("GAIN", int, encode_value=int, limit="gain_db", to_limit_unit=_gain_db,
                       validator=Range(0, len(GAIN_V_PER_A) - 1, integer=True),
                       doc="Transimpedance gain step (see GAIN_V_PER_A).")
    enabled = _Field("EN", _parse_bool, encode_value=int, validator=Boolean(),
                     doc="Photodiode bias and amplifier on.")
    temperature_c = _Field("TEMP", float, unit="degC", readonly=True,
                           doc="Board temperature.")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.identity: tuple[str, ...] = ()

    def _on_open(self) -> None:
        self.identity = tuple(self.request("IDN")[1:])
        self.log.info("%s: %s", self.name, ",".join(self.identity))

    # -- exchanges ----------------------------------------------------------------------------

    def _value(self, fields: list[str], index: int, parse: Any, cmd: str) -> Any:
        try:
            return parse(fields[index])
        except (IndexError, ValueError) as exc:
            raise ProtocolError(f"bad value in reply to {cmd}: {exc}", instrument=self.name,
                                command=cmd, reply=",".join(fields)) from exc

    def request(self, body: str) -> list[str]:
        """Send ``$body*CS`` and return the fields of the reply that answers it.

        Replies to other commands (late replies) are dropped; garbled replies (bad checksum)
        and BUSY are retried; ``ERR`` raises InstrumentError (ProtocolError for code 4).
        """
        wire = encode(body)
        cmd = body.split(",", 1)[0]

        def read(t: SerialTransport, deadline: float) -> list[str]:
            while True:
                line = t.read_until(b"\n", timeout_s=remaining_s(deadline))
                self._log_rx(line)
                fields = parse_reply(line)
                if fields[0] == cmd:
                    return fields
                if fields[0] == "BUSY" and fields[1:2] == [cmd]:
                    time.sleep(BUSY_DELAY_S)
                    raise CommunicationError("detector busy", reply=line)
                if fields[0] == "ERR" and fields[2:3] == [cmd]:
                    code = int(fields[1]) if fields[1].isdigit() else -1
                    text = ERROR_CODES.get(code, "unknown error code")
                    cls = ProtocolError if code == 4 else InstrumentError
                    raise cls(f"detector refused: error {code} ({text})", reply=line)
                self.log.debug("dropped reply to another command: %r", line)

        return self.serial_exchange(body, wire, read, idempotent=True)

    # -- readings -----------------------------------------------------------------------------

    @property
    def gain_v_per_a(self) -> float:
        """Transimpedance of the selected gain step, V/A."""
        return GAIN_V_PER_A[self.gain_step]

    def dc_current_ua(self, photodiode: int) -> float:
        """DC photocurrent of photodiode 1 or 2 (uA); InstrumentError while disabled."""
        if photodiode not in (1, 2):
            raise ValueError(f"photodiode must be 1 or 2, got {photodiode!r}")
        fields = self.request(f"DC,{photodiode}")
        if fields[1:2] != [str(photodiode)]:
            raise ProtocolError(f"DC reply for photodiode {fields[1:2]}, asked {photodiode}",
                                instrument=self.name, reply=",".join(fields))
        return self._value(fields, 2, float, "DC")

    def balance(self) -> Balance:
        """Both DC photocurrents, read in one transaction."""
        with self.transaction():
            return Balance(self.dc_current_ua(1), self.dc_current_ua(2))

    @contextlib.contextmanager
    def settings_session(self) -> Iterator[HomodyneDetector]:
        """Restore gain and enable state if the block fails (or Ctrl-C)."""
        saved = (self.gain_step, self.enabled)
        try:
            yield self
        except BaseException:
            try:
                self.gain_step, self.enabled = saved
            except InstrumentError as exc:
                self.log.error("%s: could not restore %r: %s", self.name, saved, exc)
            raise
