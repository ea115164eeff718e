"""Keysight Infiniium oscilloscopes (90000 / V / Z / S-Series / UXR) used as the receiver's ADC.

Protocol: "Keysight (Agilent) Infiniium 90000 Series Oscilloscopes Programmer's Reference",
chapters "Root Level Commands", "Acquire Commands", "Channel Commands", "Waveform Commands",
"System Commands" (the same commands exist on the S-Series and UXR). Used here:

===========================================  ===================================================
``:SYSTem:HEADer OFF``                         replies without command headers
``:ACQuire:MODE RTIMe``                        real-time sampling
``:ACQuire:SRATe[:ANALog] <Sa/s>`` / ``?``     sample rate
``:ACQuire:POINts[:ANALog] <n>`` / ``?``       record length (samples)
``:CHANnel<N>:RANGe <V>`` / ``?``              full-scale vertical range
``:CHANnel<N>:OFFSet <V>`` / ``?``             vertical offset
``:TRIGger:SWEep TRIGgered|AUTO|SINGle``       trigger sweep mode
``:TRIGger:EDGE:SOURce CHANnel<N>|AUX``        edge trigger source
``:TRIGger:LEVel <source>,<V>``                trigger level
``:SINGle``                                    arm one acquisition
``:ADER?``                                     acquisition done event register: 1 once the
                                               acquisition completed (reading clears it, so
                                               it is never resent after a lost reply)
``:ASTate?``                                   acquisition state ``ARM|TRIG|ATRIG|ADONE``
                                               (not clearing): decides after a lost
                                               ``:ADER?`` reply
``:WAVeform:SOURce CHANnel<N>``                source of the transfer
``:WAVeform:FORMat WORD``                      16-bit signed samples
``:WAVeform:BYTeorder LSBFirst``               little endian
``:WAVeform:STReaming OFF``                    definite-length blocks (``#<n><len>``)
``:WAVeform:POINts?``                          points available
``:WAVeform:XINCrement?`` / ``:YINCrement?``   s per sample / V per code
``:WAVeform:YORigin?``                         V at code 0
``:WAVeform:DATA? <start>,<size>``             ``size`` points from ``start``; with streaming
                                               off one WORD transfer must stay below 5e8
                                               points, so records are fetched in chunks
``:SYSTem:ERRor?``                             error queue (``0`` when empty; headers off)
===========================================  ===================================================

``<start>`` is the index of the first point; the driver counts from ``FETCH_START_BASE`` (0
here; the emulator agrees; a firmware counting from 1 is a one-line change).

Throughput: each chunk is one definite block read with large socket reads
(``drivers.transport.VisaTransport``) into a preallocated int16 array; see
``benchmarks/digitizer_fetch.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from drivers.base import Range
from drivers.scpi import ScpiChannel, ScpiInstrument, ScpiProperty, parse_float, parse_int
from qkd_hw.errors import CommunicationError, InstrumentTimeoutError, LimitError, ProtocolError

__all__ = ["InfiniiumChannel", "KeysightInfiniium", "Preamble"]


@dataclass(frozen=True)
class Preamble:
    points: int
    x_increment_s: float
    y_increment_v: float
    y_origin_v: float

    @property
    def sample_rate_hz(self) -> float:
        return 1.0 / self.x_increment_s

    def volts(self, codes: np.ndarray) -> np.ndarray:
        return codes.astype(np.float64) * self.y_increment_v + self.y_origin_v


class InfiniiumChannel(ScpiChannel):
    range_v = ScpiProperty(":CHAN{ch}:RANG", float, unit="V", validator=Range(1e-3, 40.0),
                           doc="Full-scale vertical range.")
    offset_v = ScpiProperty(":CHAN{ch}:OFFS", float, unit="V", validator=Range(-20.0, 20.0),
                            doc="Vertical offset.")


class KeysightInfiniium(ScpiInstrument):
    """Infiniium as a digitizer: ``arm()``, ``wait_acquired()``, ``fetch(ch)`` -> int16."""

    MODEL = "Keysight Infiniium"
    LIMITS: ClassVar[frozenset[str]] = frozenset({"sample_rate_hz"})
    IDN_PATTERN: ClassVar[str] = (
        r"^\s*(Keysight|Agilent) Technologies\s*,\s*[A-Z]{2,4}\d{3,5}[A-Z]?\s*,")
    N_CHANNELS = 4
    FETCH_START_BASE: ClassVar[int] = 0
    MAX_WORDS_PER_TRANSFER: ClassVar[int] = 499_999_999  # streaming off, WORD format

    sample_rate_hz = ScpiProperty(":ACQ:SRAT", float, unit="Sa/s", limit="sample_rate_hz",
                                  validator=Range(1.0, 256e9), doc="Sample rate.")
    record_length = ScpiProperty(":ACQ:POIN", int, unit="samples",
                                 validator=Range(16, 2_000_000_000, integer=True),
                                 doc="Record length of one acquisition.")
    trigger_sweep = ScpiProperty(":TRIG:SWE", {"triggered": "TRIGgered", "auto": "AUTO",
                                               "single": "SINGle"}, doc="Trigger sweep mode.")
    trigger_source = ScpiProperty(":TRIG:EDGE:SOUR", {1: "CHANnel1", 2: "CHANnel2",
                                                      3: "CHANnel3", 4: "CHANnel4",
                                                      "aux": "AUX"},
                                  doc="Edge trigger source: channel number or 'aux'.")

    def _setup(self) -> None:
        for cmd in (":SYST:HEAD OFF", ":ACQ:MODE RTIM", ":WAV:FORM WORD", ":WAV:BYT LSBF",
                    ":WAV:STR OFF"):
            self.write(cmd, idempotent=True)
        self._channels = {i: InfiniiumChannel(self, i) for i in range(1, self.N_CHANNELS + 1)}

    def channel(self, ch: int) -> InfiniiumChannel:
        if ch not in range(1, self.N_CHANNELS + 1):
            raise ValueError(f"channel must be 1..{self.N_CHANNELS}, got {ch!r}")
        if not hasattr(self, "_channels"):
            self._channels = {i: InfiniiumChannel(self, i)
                              for i in range(1, self.N_CHANNELS + 1)}
        return self._channels[ch]

    def set_trigger_level(self, source: int | str, level_v: float) -> None:
        src = "AUX" if source == "aux" else f"CHAN{int(source)}"
        if not -20.0 <= float(level_v) <= 20.0:
            raise LimitError(f"trigger level {level_v} V outside [-20, 20]", instrument=self.name)
        self.write(f":TRIG:LEV {src},{float(level_v):.6g}", idempotent=True)

    def arm(self) -> None:
        """Arm one acquisition (``:SINGle``); clears a stale done flag first.

        The clearing ``:ADER?`` may be resent after a lost reply: its value is discarded and a
        second read leaves the register cleared just the same."""
        with self.transaction():
            self.query(":ADER?")
            self.write(":SING")

    def wait_acquired(self, timeout_s: float, poll_s: float = 0.005) -> None:
        """Poll ``:ADER?`` until the acquisition is complete.

        ``:ADER?`` clears on read, so it is never resent: if its reply is lost (late, dropped,
        garbled) the one-time "1" may be gone with it, and the non-clearing ``:ASTate?``
        (``ADONE`` once the acquisition is complete) decides instead.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                done = bool(self.query_value(":ADER?", parse_int, idempotent=False) & 1)
            except (CommunicationError, ProtocolError) as exc:
                state = self.query(":AST?").strip().upper()
                self.log.warning("%s: reply to :ADER? lost (%s); :ASTate? says %s", self.name,
                                 exc.message, state)
                done = state == "ADONE"
            if done:
                return
            if time.monotonic() >= deadline:
                raise InstrumentTimeoutError(f"no trigger/acquisition within {timeout_s:g} s",
                                             instrument=self.name, command=":ADER?")
            time.sleep(poll_s)

    def _query_checked(self, command: str, parse: Callable[[str], float],
                       ok: Callable[[float], bool], what: str) -> float:
        """Query a preamble field; ProtocolError naming the field if ``ok(value)`` fails."""
        text, value = self.query_value(command, lambda s: (s.strip(), parse(s)))
        if not ok(value):
            raise ProtocolError(f"invalid waveform preamble: {what}, got {value!r}",
                                instrument=self.name, command=command, reply=text)
        return value

    def _points(self) -> int:
        n = self._query_checked(":WAV:POIN?", parse_int, lambda v: v >= 0,
                                "points must be >= 0")
        return int(n)

    def _acquired_points(self, ch: int) -> int:
        """Points of the selected source's record (``:WAV:SOUR`` already sent); a
        ProtocolError when there is none: before arming, or a channel not acquired, would
        otherwise read as an empty record."""
        points = self._points()
        if points == 0:
            raise ProtocolError(f"invalid waveform preamble: no waveform data (0 points) "
                                f"for CHAN{int(ch)}; arm() and wait_acquired() first",
                                instrument=self.name, command=":WAV:POIN?", reply="0")
        return points

    def preamble(self, ch: int) -> Preamble:
        """Scaling of the record of channel ``ch``; every field checked (points > 0,
        increments > 0), a ProtocolError with the raw reply otherwise."""
        with self.transaction():
            self.write(f":WAV:SOUR CHAN{int(ch)}", idempotent=True)
            points = self._acquired_points(ch)
            return Preamble(
                points=points,
                x_increment_s=self._query_checked(":WAV:XINC?", parse_float,
                                                  lambda v: v > 0,
                                                  "x increment (s per sample) must be > 0"),
                y_increment_v=self._query_checked(":WAV:YINC?", parse_float,
                                                  lambda v: v > 0,
                                                  "y increment (V per code) must be > 0"),
                y_origin_v=self._query_checked(":WAV:YOR?", parse_float, lambda v: True,
                                               "y origin"),
            )

    def fetch(self, ch: int, *, start: int = 0, count: int | None = None,
              chunk_points: int = 8 << 20, out: np.ndarray | None = None,
              progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Fetch ``count`` int16 samples of channel ``ch`` starting at ``start``.

        The record is transferred in chunks of ``chunk_points`` (one ``:WAV:DATA?`` each,
        retried independently on transient faults) straight into ``out`` (allocated if None).
        ``progress(n)`` is called with the number of samples of each finished chunk. Ctrl-C
        stops the transfer after the chunk in flight (the link stays in step) and raises
        KeyboardInterrupt from here, also inside a caller's transaction: a partly filled
        buffer is never returned.
        """
        if chunk_points < 1 or chunk_points > self.MAX_WORDS_PER_TRANSFER:
            raise ValueError(f"chunk_points must be 1..{self.MAX_WORDS_PER_TRANSFER}")
        with self.transaction() as deferral:
            self.write(f":WAV:SOUR CHAN{int(ch)}", idempotent=True)
            available = self._acquired_points(ch)
            if count is None:
                count = available - start
            if start < 0 or count < 0 or start + count > available:
                raise ValueError(f"samples {start}..{start + count} outside the record of "
                                 f"{available} points")
            if out is None:
                out = np.empty(count, dtype=np.int16)
            elif out.dtype != np.int16 or out.shape != (count,) or not out.flags.c_contiguous:
                raise ValueError(f"out must be a contiguous int16 array of shape ({count},)")
            base = self.FETCH_START_BASE
            for off in range(0, count, chunk_points):
                deferral.deliver_pending()  # Ctrl-C: KeyboardInterrupt now, between chunks
                n = min(chunk_points, count - off)
                cmd = f":WAV:DATA? {start + off + base},{n}"
                data = self.query_block(cmd, max_bytes=2 * n)
                if len(data) != 2 * n:
                    raise ProtocolError(f"asked for {n} points ({2 * n} bytes), got {len(data)}"
                                        " bytes", instrument=self.name, command=cmd,
                                        reply=data[:32])
                out[off: off + n] = np.frombuffer(data, dtype="<i2")
                if progress is not None:
                    progress(n)
        return out

    def acquire(self, ch: int, *, timeout_s: float, **fetch_kw: object) -> np.ndarray:
        """arm + wait + fetch of a whole record."""
        t0 = time.monotonic()
        self.arm()
        self.wait_acquired(timeout_s)
        self.log.debug("acquired after %.3f s", time.monotonic() - t0)
        return self.fetch(ch, **fetch_kw)  # type: ignore[arg-type]
