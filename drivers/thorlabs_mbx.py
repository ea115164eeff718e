"""Thorlabs MBX modulator bias controller (Mach-Zehnder bias lock), serial ASCII commands.

Command set: Thorlabs "Remote Control User Guide for the MX / MBX / TLX1 / TLX2 Series"
(TTN116413-D04, Rev. E, May 2022), chapter 2 (section 2.4 "Mach-Zehnder Modulator Bias Control
Commands", 2.5 "System Commands"); the MZM command names, the numbering of the bias modes and
the units below agree with the public PyMeasure driver ``thorlabs_mbx``. From the guide:

* Commands are SCPI-like, upper-case letters are the short form (``MZM:HOLD:VOLTAGE?`` =
  ``MZM:HOLD:V?``). Settings are written ``<command>: <value>`` (colon, space, value) and the
  instrument "returns 1 on receipt of command". A command may end in CR, LF, CR LF or LF CR;
  we send CR (115200 8N1 on the USB virtual COM port). Replies end in a newline; we accept CR,
  LF or both.
* ``MZM:MODE?`` / ``MZM:MODE: n``: 0 off, 1 auto peak, 2 auto null, 3 auto quadrature +,
  4 auto quadrature -, 5 hold quadrature +, 6 hold quadrature -, 7 manual, 8 auto power
  ratio +, 9 auto power ratio -.
* ``MZM:HOLD:VOLTAGE``: manual bias voltage in integer mV, -10000..10000.
* ``MZM:HOLD:RATIO``: input/output power ratio set point x100, 250..10000 (2.5..100).
* ``MZM:VOLTAGE?``: bias voltage applied now, V (float). ``MZM:SETPOINT?``: 1 when the bias is
  stable at the set point (locked). ``MZM:CALIBRATING?``: 1 during a calibration.
  ``MZM:RESET``: start a bias calibration (returns 1).
* ``MZM:TAP:MW?`` / ``MZM:TAP:DBM?``: optical power after the modulator (tap detector).
* ``MZM:DITHER:AMPLITUDE``: 20..2000 mVpp, ``MZM:DITHER:FREQUENCY``: 1000..10000 Hz.
* ``SYSTEM:MODEL?``, ``SYSTEM:SERIAL?``, ``SYSTEM:FIRMWARE?``: identification strings.

Assumed (not in the pages we could read): a command that is not accepted (unknown, value out of
range) answers ``0`` instead of ``1``; the driver reports any answer other than ``1`` to a
setting as an error naming command and reply.

One MBX biases one Mach-Zehnder: an IQ modulator needs three bias points (I, Q and the outer
phase), i.e. three MBX instances in the lab config, one per MZM.

Stale replies: replies carry no tag, so after a timeout the link is resynchronised by draining
until quiet and then sending ``SYSTEM:MODEL?`` and reading lines until the model string seen at
open comes back (everything before it is a late reply to the abandoned command).

Safe state: the lab-config limit ``bias_v`` bounds the manual bias voltage (checked before
sending, on the value actually sent: the hold voltage goes out in whole mV and a request
inside the limit whose nearest mV lies beyond it is rounded towards the inside, e.g. 1.0007 V
under a 1.0007 V limit is sent as 1000 mV, not 1001 mV; a limit narrower than 1 mV refuses the
request). Setting ``mode = MANUAL`` applies the hold voltage stored in the controller (possibly
left by an earlier session or the front panel), so the driver first reads it
(``MZM:HOLD:VOLTAGE?``) and refuses with LimitError, mode not sent, when it violates
``bias_v``. :meth:`ThorlabsMbx.bias_session` restores mode and hold voltage when the block fails
or is interrupted. In the auto modes the instrument chooses the bias; the lab limit cannot be
applied beforehand there, but :meth:`ThorlabsMbx.wait_locked` checks the voltage it locked at.
"""

from __future__ import annotations

import contextlib
import enum
import re
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

from drivers.base import OneOf, Property, Range, quantise_inside
from drivers.serial_base import SerialInstrument
from drivers.serial_transport import SerialTransport
from qkd_hw.errors import (
    CommunicationError,
    InstrumentError,
    InstrumentTimeoutError,
    LimitError,
    ProtocolError,
)

__all__ = ["AUTO_MODES", "MzmMode", "ThorlabsMbx"]

WRITE_TERMINATION = b"\r"
READ_TERMINATIONS = (b"\r", b"\n")
ACCEPTED = "1"

_FLOAT_RE = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_INT_RE = re.compile(r"[+-]?\d+")


class MzmMode(enum.IntEnum):
    OFF = 0
    AUTO_PEAK = 1
    AUTO_NULL = 2
    AUTO_QUAD_POS = 3
    AUTO_QUAD_NEG = 4
    HOLD_QUAD_POS = 5
    HOLD_QUAD_NEG = 6
    MANUAL = 7
    AUTO_POWER_POS = 8
    AUTO_POWER_NEG = 9


AUTO_MODES = frozenset({MzmMode.AUTO_PEAK, MzmMode.AUTO_NULL, MzmMode.AUTO_QUAD_POS,
                        MzmMode.AUTO_QUAD_NEG, MzmMode.AUTO_POWER_POS, MzmMode.AUTO_POWER_NEG})


def parse_float(text: str) -> float:
    if not _FLOAT_RE.fullmatch(text):
        raise ValueError(f"not a number: {text!r}")
    return float(text)


def parse_int(text: str) -> int:
    if not _INT_RE.fullmatch(text):
        raise ValueError(f"not an integer: {text!r}")
    return int(text)


def parse_bool(text: str) -> bool:
    if text not in ("0", "1"):
        raise ValueError(f"not 0/1: {text!r}")
    return text == "1"


def format_setting(command: str, value: Any) -> bytes:
    """Bytes of a setting without termination: ``b"MZM:HOLD:VOLTAGE: -1250"``."""
    return f"{command}: {value}".encode("ascii")


class MbxTransport(SerialTransport):
    """Serial transport whose resync also proves the line is in step (see module docstring)."""

    sync_query = b"SYSTEM:MODEL?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sync_reply: bytes | None = None

    def resync(self) -> None:
        super().resync()
        if self.sync_reply is None:
            return
        self.write(self.sync_query)
        deadline = time.monotonic() + self.timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._error("resync: no model string in reply to SYSTEM:MODEL?",
                                  timeout=True)
            line = self.read_until(self.read_terminations, timeout_s=remaining).strip()
            if line == self.sync_reply:
                return


class MbxProperty(Property[Any]):
    """A query ``<command>?`` and, unless read-only, a setting ``<command>: <value>``.

    ``per_unit``: the wire carries an integer of ``per_unit`` counts per unit of the property
    (``MZM:HOLD:VOLTAGE`` in mV: 1000 per V); the lab limit is then checked again on the value
    actually sent, rounding the request towards the inside of the limit when its nearest
    count lies beyond it (:func:`quantise_inside`).
    """

    def __init__(self, command: str, parse: Callable[[str], Any], *,
                 encode: Callable[[Any], Any] = str, decode: Callable[[Any], Any] | None = None,
                 per_unit: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.command = command
        self.parse = parse
        self.encode = encode
        self.decode = decode
        self.per_unit = per_unit
        if per_unit is not None and decode is None:
            self.decode = lambda count: count / per_unit
        self.__doc__ = f"{self.__doc__} Command ``{command}``."

    def _read(self, inst: ThorlabsMbx) -> Any:
        decode = self.decode
        parse = self.parse if decode is None else (lambda text: decode(self.parse(text)))
        return inst.query(f"{self.command}?", parse)

    def _write(self, inst: ThorlabsMbx, value: Any) -> None:
        if self.per_unit is None:
            inst.set(self.command, self.encode(value))
            return
        unit = f" {self.unit}" if self.unit else ""
        what = (f"{type(inst).__name__}.{self.name} (requested {value!r}{unit}, sent in steps "
                f"of {1 / self.per_unit:g}{unit})")
        inst.set(self.command, quantise_inside(value, 1.0 / self.per_unit,
                                               lambda v, w: self.check_lab_limit(inst, v, w),
                                               what))


class _Mode(MbxProperty):
    """Bias mode; MANUAL applies the hold voltage stored in the controller, so it is read and
    checked against the lab ``bias_v`` limit before the mode is sent."""

    def _write(self, inst: ThorlabsMbx, value: Any) -> None:
        with inst.transaction():  # no other thread may change the hold voltage in between
            if value == MzmMode.MANUAL:
                stored = inst.hold_voltage_v
                inst.check_limit("bias_v", stored, unit="V",
                                 what=f"{type(inst).__name__}.{self.name} = MANUAL: stored hold "
                                      f"voltage (MZM:HOLD:VOLTAGE?)")
            super()._write(inst, value)


class ThorlabsMbx(SerialInstrument):
    """Thorlabs MBX bias controller of one Mach-Zehnder modulator.

    Config: ``resource`` = serial port; option ``baudrate`` (default 115200).
    """

    MODEL = "Thorlabs MBX modulator bias controller"
    LIMITS: ClassVar[frozenset[str]] = frozenset({"bias_v"})
    OPTIONS: ClassVar[Mapping[str, type | tuple[type, ...]]] = SerialInstrument.OPTIONS
    WRITE_TERMINATION = WRITE_TERMINATION
    READ_TERMINATIONS = READ_TERMINATIONS
    # replies carry no tag: drain a full timeout, then prove the line is in step (resync)
    QUIET_S = None
    TRANSPORT = MbxTransport

    mode = _Mode("MZM:MODE", parse_int, decode=MzmMode, encode=int,
                 validator=OneOf(list(MzmMode)),
                 doc="Bias mode (MzmMode); MANUAL is refused while the stored hold voltage "
                     "violates the lab ``bias_v`` limit.")
    hold_voltage_v = MbxProperty("MZM:HOLD:VOLTAGE", parse_int, per_unit=1000, unit="V",
                                 limit="bias_v", validator=Range(-10.0, 10.0),
                                 doc="Bias voltage of the MANUAL mode (sent in whole mV, "
                                     "rounded towards the inside of the lab limit).")
    hold_ratio = MbxProperty("MZM:HOLD:RATIO", parse_int, decode=lambda r: r / 100,
                             encode=lambda r: round(r * 100), validator=Range(2.5, 100.0),
                             doc="Input/output power ratio of the AUTO_POWER modes.")
    dither_amplitude_mv = MbxProperty("MZM:DITHER:AMPLITUDE", parse_int, unit="mVpp",
                                      validator=Range(20, 2000, integer=True),
                                      doc="Dither amplitude.")
    dither_frequency_hz = MbxProperty("MZM:DITHER:FREQUENCY", parse_int, unit="Hz",
                                      validator=Range(1000, 10000, integer=True),
                                      doc="Dither frequency.")
    bias_voltage_v = MbxProperty("MZM:VOLTAGE", parse_float, unit="V", readonly=True,
                                 doc="Bias voltage applied now.")
    locked = MbxProperty("MZM:SETPOINT", parse_bool, readonly=True,
                         doc="True when the bias is stable at its set point.")
    calibrating = MbxProperty("MZM:CALIBRATING", parse_bool, readonly=True,
                              doc="True while a bias calibration runs.")
    tap_power_mw = MbxProperty("MZM:TAP:MW", parse_float, unit="mW", readonly=True,
                               doc="Optical power after the modulator.")
    tap_power_dbm = MbxProperty("MZM:TAP:DBM", parse_float, unit="dBm", readonly=True,
                                doc="Optical power after the modulator in dBm.")
    model = MbxProperty("SYSTEM:MODEL", str, readonly=True, doc="Model string.")
    serial_number = MbxProperty("SYSTEM:SERIAL", str, readonly=True, doc="Serial number.")
    firmware = MbxProperty("SYSTEM:FIRMWARE", str, readonly=True, doc="Firmware version.")

    def _on_open(self) -> None:
        model = self.model
        if not model:
            raise ProtocolError("empty reply to SYSTEM:MODEL?", instrument=self.name)
        assert isinstance(self.transport, MbxTransport)
        self.transport.sync_reply = model.encode("ascii")
        self.log.info("%s: %s", self.name, model)

    # -- exchanges ----------------------------------------------------------------------------

    def _line(self, t: SerialTransport) -> str:
        raw = self.read_line_logged(t)
        try:
            return raw.decode("ascii").strip()
        except UnicodeDecodeError as exc:
            raise ProtocolError("reply is not ASCII", reply=raw) from exc

    def query(self, command: str, parse: Callable[[str], Any], *,
              retries: int | None = None) -> Any:
        """Send ``command`` (a query) and parse its one-line reply (retried when garbled;
        ``retries`` overrides the lab-config count)."""
        cmd = command.encode("ascii")

        def read(t: SerialTransport, deadline: float) -> Any:
            text = self._line(t)
            try:
                return parse(text)
            except ValueError as exc:
                raise ProtocolError(f"unexpected reply: {exc}", reply=text) from exc

        return self.serial_exchange(command, cmd, read, idempotent=True, retries=retries)

    def set(self, command: str, value: Any) -> None:
        """Send a setting and check that it was accepted (reply ``1``)."""
        self._command(format_setting(command, value), idempotent=True)

    def _command(self, cmd: bytes, *, idempotent: bool) -> None:
        def read(t: SerialTransport, deadline: float) -> None:
            text = self._line(t)
            if text == ACCEPTED:
                return
            if text == "0":
                raise InstrumentError("command not accepted (reply 0)", reply=text)
            raise ProtocolError("expected 1 (accepted)", reply=text)

        self.serial_exchange(cmd.decode("ascii"), cmd, read, idempotent=idempotent)

    # -- procedures ---------------------------------------------------------------------------

    def calibrate(self) -> None:
        """Start a bias calibration (``MZM:RESET``; not resent if its reply is lost)."""
        self._command(b"MZM:RESET", idempotent=False)

    def wait_locked(self, timeout_s: float = 30.0, poll_s: float = 0.1) -> float:
        """Wait until calibration is over and the bias is locked; return the bias voltage.

        Raises InstrumentTimeoutError when not locked within ``timeout_s`` and LimitError when
        the instrument locked at a voltage outside the lab ``bias_v`` limit.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            if not self.calibrating and self.locked:
                volts = self.bias_voltage_v
                try:
                    self.check_limit("bias_v", volts, what="locked bias voltage", unit="V")
                except LimitError:
                    self.log.error("%s: locked outside the lab bias limit at %.3f V", self.name,
                                   volts)
                    raise
                return volts
            if time.monotonic() >= deadline:
                raise InstrumentTimeoutError(f"bias not locked within {timeout_s:g} s",
                                             instrument=self.name, command="MZM:SETPOINT?")
            time.sleep(poll_s)

    @contextlib.contextmanager
    def bias_session(self) -> Iterator[ThorlabsMbx]:
        """Restore mode and hold voltage if the block fails (or Ctrl-C)."""
        saved_mode, saved_volts = self.mode, self.hold_voltage_v
        try:
            yield self
        except BaseException:
            try:
                self.hold_voltage_v = saved_volts
                self.mode = saved_mode
            except (InstrumentError, CommunicationError) as exc:
                self.log.error("%s: could not restore bias (mode %s, %.3f V): %s", self.name,
                               saved_mode.name, saved_volts, exc)
            raise

