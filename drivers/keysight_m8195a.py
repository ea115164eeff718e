"""Keysight M8195A 65 GSa/s arbitrary waveform generator (DAC) -- SCPI over VISA (socket 5025).

Protocol: "Keysight M8195A Arbitrary Waveform Generator Revision 2 -- User's Guide"
(M8195-91040), chapter 6 "General Programming". Commands used here (``n`` = channel 1..4):

===============================================  ============================================
``:FREQuency:RASTer <Sa/s>`` / ``?``               DAC sample rate, 53.76e9 .. 65e9
``:INSTrument:DACMode SINGle|DUAL|FOUR|...``       channel configuration
``:FUNCtion:MODE ARBitrary|STSequence|STSCenario`` play one segment / sequences
``[:SOURce]:VOLTage<n>[:AMPLitude] <V>`` / ``?``   single-ended amplitude, 0.075 .. 1.0 V
``[:SOURce]:VOLTage<n>:OFFSet <V>`` / ``?``        offset, -1.0 .. 1.0 V (used range)
``:OUTPut<n>[:STATe] ON|OFF`` / ``?``              output relay
``:TRACe<n>:DELete:ALL``                           delete all segments (program mode only)
``:TRACe<n>:DELete <id>``                          delete one segment (program mode only)
``:TRACe<n>:DEFine <id>,<length>[,<init>]``        create a segment of ``length`` samples
``:TRACe<n>[:DATA] <id>,<offset>,<block>``         load samples at ``offset`` (IEEE 488.2
                                                   definite block, one signed byte per sample,
                                                   DB7..DB0, -128..127, §6.21.1); the offset
                                                   allows splitting transfers > 999 999 999 B
``:TRACe<n>[:DATA]? <id>,<offset>,<length>``       read back (definite block)
``:TRACe<n>:SELect <id>``                          segment played in ARBitrary mode
``:TRACe<n>:CATalog?``                             ``<id>,<length>[,<id>,<length>...]``
``:INITiate:IMMediate`` / ``:ABORt``               start / stop signal generation
``*OPC?``, ``:SYSTem:ERRor?``                      completion, error queue
===============================================  ============================================

Segment lengths: multiple of the waveform granularity (256 samples) and at least 1280 samples
(manual, "Waveform memory"); checked before anything is sent.

Retry policy: samples written at an explicit offset are idempotent (a resent chunk overwrites
the same memory), so chunk uploads are retried; ``:TRAC:DEF`` and ``:INIT`` are not resent.
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar

import numpy as np

from drivers.base import Range, no_read_abort
from drivers.scpi import ScpiChannel, ScpiInstrument, ScpiProperty, parse_int
from qkd_hw.errors import (
    InstrumentError,
    InstrumentReportedError,
    InstrumentStateError,
    LimitError,
    ProtocolError,
)

__all__ = ["KeysightM8195A", "M8195AChannel"]

GRANULARITY = 256
MIN_SEGMENT = 1280
MAX_SEGMENT = 16 * 1024**3  # 16 GSa extended memory


def to_dac_codes(samples: np.ndarray, *, what: str, instrument: str) -> np.ndarray:
    """int8 codes unchanged; floats in [-1, 1] scaled by 127 and rounded. LimitError else."""
    a = np.asarray(samples)
    if a.ndim != 1:
        raise LimitError(f"{what}: waveform must be 1-D, got shape {a.shape}",
                         instrument=instrument)
    if a.dtype == np.int8:
        return np.ascontiguousarray(a)
    if np.issubdtype(a.dtype, np.integer):
        if a.size and (a.min() < -128 or a.max() > 127):
            raise LimitError(f"{what}: integer samples outside the 8-bit DAC range -128..127",
                             instrument=instrument)
        return a.astype(np.int8)
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)):
            raise LimitError(f"{what}: waveform contains NaN/inf", instrument=instrument)
        if a.size and (a.min() < -1.0 or a.max() > 1.0):
            raise LimitError(f"{what}: float samples must lie in [-1, 1] (full scale), got "
                             f"[{a.min():.3g}, {a.max():.3g}]", instrument=instrument)
        return np.rint(a * 127.0).astype(np.int8)
    raise LimitError(f"{what}: unsupported sample dtype {a.dtype}", instrument=instrument)


def parse_catalog(text: str) -> dict[int, int]:
    """``<id>,<length>[,<id>,<length>...]`` (``0,0``: no segment) -> ``{id: length}``.
    ValueError (``query_value`` makes it a ProtocolError with the raw reply) unless every
    field is a non-negative SCPI integer and they come in pairs."""
    fields = text.split(",")
    if len(fields) % 2:
        raise ValueError(f"odd number of fields in the segment catalog: {text!r}")
    try:
        nums = [parse_int(f) for f in fields]
    except ValueError as exc:
        raise ValueError(f"bad field in the segment catalog ({exc})") from None
    if any(n < 0 for n in nums):
        raise ValueError(f"negative id or length in the segment catalog: {text!r}")
    return {i: n for i, n in zip(nums[::2], nums[1::2], strict=True) if i != 0}


class M8195AChannel(ScpiChannel):
    """One DAC output."""

    parent: KeysightM8195A

    amplitude_v = ScpiProperty(":VOLT{ch}:AMPL", float, unit="V", limit="amplitude_v",
                               validator=Range(0.075, 1.0), doc="Single-ended amplitude.")
    offset_v = ScpiProperty(":VOLT{ch}:OFFS", float, unit="V", limit="offset_v",
                            validator=Range(-1.0, 1.0), doc="Output offset.")
    output_enabled = ScpiProperty(":OUTP{ch}", bool, doc="Output relay on.")

    def upload(self, samples: np.ndarray, *, segment: int = 1, chunk_samples: int = 1 << 24,
               verify: bool = False) -> None:
        """Replace all segments of this channel by ``samples`` (int8 codes or floats in
        [-1, 1]) as segment ``segment`` and select it. Stops signal generation first.

        Ctrl-C stops the upload between chunks and raises KeyboardInterrupt from here (also
        inside a caller's transaction). An upload that does not complete (Ctrl-C, link or
        instrument error, failed ``verify``) deletes its partial segment (``:TRAC:DEL``), so
        nothing of it can be played; if that fails too, the channel stays marked and
        :meth:`KeysightM8195A.start` refuses to start until an upload completes.
        """
        what = f"{type(self).__name__}.upload"
        codes = to_dac_codes(samples, what=what, instrument=self.parent.name)
        n = codes.size
        if n < MIN_SEGMENT or n % GRANULARITY or n > MAX_SEGMENT:
            raise LimitError(f"{what}: segment length {n} must be a multiple of {GRANULARITY}"
                             f" and >= {MIN_SEGMENT}", instrument=self.parent.name)
        if not 1 <= segment <= 16_777_216:
            raise LimitError(f"{what}: segment id {segment} out of range",
                             instrument=self.parent.name)
        chunk = max(GRANULARITY, chunk_samples - chunk_samples % GRANULARITY)
        p = self.parent
        with p.transaction() as deferral:
            p.stop()
            p.write(f":TRAC{self.ch}:DEL:ALL", idempotent=True)
            # from here until the upload completes, a partial segment may exist
            p.incomplete_uploads[self.ch] = segment
            try:
                self._define_and_load(deferral, codes, segment, chunk, verify)
            except BaseException:
                self._discard_partial(segment)
                raise
            del p.incomplete_uploads[self.ch]

    def _define_and_load(self, deferral: Any, codes: np.ndarray, segment: int, chunk: int,
                         verify: bool) -> None:
        p = self.parent
        n = codes.size
        p.write(f":TRAC{self.ch}:DEF {segment},{n}")
        view = memoryview(codes.view(np.uint8))
        for off in range(0, n, chunk):
            # Ctrl-C: KeyboardInterrupt now (between chunks, each with its error-queue
            # answer read), also inside a caller's transaction -- never a silent return
            deferral.deliver_pending()
            p.write_block(f":TRAC{self.ch}:DATA {segment},{off},", view[off: off + chunk],
                          idempotent=True)
        # the instrument may take a while to digest a long segment
        p.opc(timeout_s=p.config.timeout_s + n * 1e-8)
        p.write(f":TRAC{self.ch}:SEL {segment}", idempotent=True)
        if verify:
            back = self.read_segment(segment, 0, n, chunk_samples=chunk)
            if not np.array_equal(back, codes):
                bad = int(np.flatnonzero(back != codes)[0])
                raise ProtocolError(f"read-back differs from upload at sample {bad}",
                                    instrument=p.name, command=f":TRAC{self.ch}:DATA?")

    def _discard_partial(self, segment: int) -> None:
        """Delete the segment of an upload that did not complete; clear the channel's mark
        only once the catalog shows it gone. Never raises: the upload's own error goes on."""
        p = self.parent
        try:
            with no_read_abort():  # a second Ctrl-C must not cut the clean-up short
                # "undefined segment" (DEF never executed) is fine: the catalog decides
                with contextlib.suppress(InstrumentReportedError):
                    p.write(f":TRAC{self.ch}:DEL {segment}", idempotent=True)
                listed = segment in self.catalog()
            if not listed:
                p.incomplete_uploads.pop(self.ch, None)
                return
            problem = "still listed in the catalog"
        except InstrumentError as exc:
            problem = f"could not be deleted ({exc.message})"
        p.log.warning("%s: partial segment %d of channel %d %s; start() is refused until an "
                      "upload completes", p.name, segment, self.ch, problem)

    def read_segment(self, segment: int, offset: int, length: int, *,
                     chunk_samples: int = 1 << 24) -> np.ndarray:
        """Samples ``offset .. offset+length`` of a segment as int8 codes."""
        out = np.empty(length, dtype=np.int8)
        for off in range(0, length, chunk_samples):
            cnt = min(chunk_samples, length - off)
            data = self.parent.query_block(
                f":TRAC{self.ch}:DATA? {segment},{offset + off},{cnt}", max_bytes=cnt)
            if len(data) != cnt:
                raise ProtocolError(f"asked for {cnt} samples, got {len(data)}",
                                    instrument=self.parent.name,
                                    command=f":TRAC{self.ch}:DATA?", reply=data[:32])
            out[off: off + cnt] = np.frombuffer(data, dtype=np.int8)
        return out

    def catalog(self) -> dict[int, int]:
        """Defined segments: ``{id: length}``. A malformed reply is a ProtocolError with the
        raw reply (retried like any query)."""
        return self.query_value(":TRAC{ch}:CAT?", parse_catalog)


class KeysightM8195A(ScpiInstrument):
    """Keysight M8195A. ``awg.channel(1).amplitude_v = 0.5``; ``awg.channel(1).upload(x)``."""

    MODEL = "Keysight M8195A"
    LIMITS: ClassVar[frozenset[str]] = frozenset({"amplitude_v", "offset_v", "sample_rate_hz"})
    IDN_PATTERN: ClassVar[str] = r"^\s*Keysight Technologies\s*,\s*M8195A\s*,"
    N_CHANNELS = 4

    sample_rate_hz = ScpiProperty(":FREQ:RAST", float, unit="Sa/s", limit="sample_rate_hz",
                                  validator=Range(53.76e9, 65e9), doc="DAC sample rate.")
    dac_mode = ScpiProperty(":INST:DACM", {"single": "SINGle", "dual": "DUAL", "four": "FOUR",
                                           "marker": "MARKer", "dcduplicate": "DCDuplicate",
                                           "dcmarker": "DCMarker"},
                            doc="Channel configuration of the DAC.")
    function_mode = ScpiProperty(":FUNC:MODE", {"arbitrary": "ARBitrary",
                                                "sequence": "STSequence",
                                                "scenario": "STSCenario"},
                                 doc="Play one segment, a sequence or a scenario.")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: channel -> segment whose upload did not complete and may still be on the
        #: instrument (kept across close/open: the instrument keeps its memory)
        self.incomplete_uploads: dict[int, int] = {}

    def _setup(self) -> None:
        self._channels = {i: M8195AChannel(self, i) for i in range(1, self.N_CHANNELS + 1)}

    def channel(self, ch: int) -> M8195AChannel:
        if ch not in range(1, self.N_CHANNELS + 1):
            raise ValueError(f"channel must be 1..{self.N_CHANNELS}, got {ch!r}")
        if not hasattr(self, "_channels"):
            self._setup()
        return self._channels[ch]

    def start(self) -> None:
        """Start signal generation (``:INIT:IMM``; not resent on a link failure).

        InstrumentStateError, nothing sent, while a channel holds a segment whose upload did
        not complete (see :meth:`M8195AChannel.upload`).
        """
        if self.incomplete_uploads:
            what = ", ".join(f"segment {seg} of channel {ch}"
                             for ch, seg in sorted(self.incomplete_uploads.items()))
            raise InstrumentStateError(
                f"refusing to start: the upload of {what} did not complete and the partial "
                f"segment may still be on the instrument; upload it again", instrument=self.name,
                command=":INIT:IMM")
        self.write(":INIT:IMM")

    def stop(self) -> None:
        """Stop signal generation (``:ABOR``)."""
        self.write(":ABOR", idempotent=True)

    def outputs_off(self) -> None:
        """Safe state: stop and open every output relay."""
        with self.transaction(), no_read_abort():  # Ctrl-C waits until all are off
            self.stop()
            for ch in range(1, self.N_CHANNELS + 1):
                self.channel(ch).output_enabled = False
