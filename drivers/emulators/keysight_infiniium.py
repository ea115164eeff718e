"""Emulator of a Keysight Infiniium scope used as digitizer (commands: see
drivers/keysight_infiniium.py).

Physics hook: ``adc_source(emu, channel, n) -> int16 array`` supplies the samples of one
acquisition (the virtual lab replaces it); the default is a pseudo-random pattern of prime
period (:func:`default_pattern`) so that any misplaced chunk is visible. ``:SINGle`` acquires
the channels in ``acquire_channels`` in a background thread, as the instrument acquires while
it keeps answering (a capture the virtual lab computes for seconds on a loaded host must not
hold the reply to the next query past a driver's deadline); it completes
``acquisition_delay_s`` after the samples exist. ``:ADER?`` reports
completion once (clear on read), ``:ASTate?`` reports ``ARM``/``ADONE`` without clearing.
``:WAV:DATA? <start>,<size>`` answers a definite block sent zero-copy from the stored record
(size clipped to the available points, as the manual says). Until the acquisition is complete
there is no record: ``:WAV:POIN?`` answers 0 and ``:WAV:DATA?`` is refused (-221), as for a
channel that was not acquired.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

import numpy as np

from drivers.emulators.scpi_server import BlockReply, ScpiEmulator, ScpiError, command

__all__ = ["InfiniiumEmulator", "default_pattern"]

PATTERN_PERIOD = 65521  # prime: chunk boundaries never line up with the period
_PATTERN = np.random.default_rng(20261127).integers(-32768, 32768, PATTERN_PERIOD,
                                                     dtype=np.int16)


def default_pattern(channel: int, start: int, n: int) -> np.ndarray:
    """Samples ``start .. start+n`` of the default record of ``channel``."""
    shift = (start + 1000 * (channel - 1)) % PATTERN_PERIOD
    return np.resize(np.roll(_PATTERN, -shift), n)


class InfiniiumEmulator(ScpiEmulator):
    IDN = "Keysight Technologies,UXR0104A,MY59990001,11.10.00101"
    N_CHANNELS = 4

    def __init__(self, **kw: object) -> None:
        self.adc_source: Callable[[InfiniiumEmulator, int, int], np.ndarray] = (
            lambda emu, ch, n: default_pattern(ch, 0, n))
        self.acquire_channels: tuple[int, ...] = (1,)
        self.acquisition_delay_s = 0.0
        super().__init__(**kw)  # type: ignore[arg-type]

    def reset(self) -> None:
        n = range(1, self.N_CHANNELS + 1)
        self.header = True
        self.acq_mode = "RTIM"
        self.sample_rate = 1e9
        self.points = 1_000_000
        self.range_v = dict.fromkeys(n, 0.8)
        self.offset_v = dict.fromkeys(n, 0.0)
        self.sweep = "TRIG"
        self.trig_source = "CHAN1"
        self.trig_level: dict[str, float] = {}
        self.wav_source = 1
        self.wav_format = "WORD"
        self.byteorder = "MSBF"  # instrument default: the driver must switch to LSBFirst
        self.streaming = True
        self.records: dict[int, np.ndarray] = {}
        self.acq_srate = self.sample_rate
        self.done_at: float | None = None
        self.ader_reported = True
        self._acq_generation = getattr(self, "_acq_generation", 0) + 1  # orphans a pending one

    # -- helpers -----------------------------------------------------------------------

    def _ch(self, suffix: str) -> int:
        ch = int(suffix) if suffix else 1
        if not 1 <= ch <= self.N_CHANNELS:
            raise ScpiError(-113, f"channel {ch}")
        return ch

    def _word(self, args: bytes, allowed: dict[str, str]) -> str:
        v = args.decode("ascii", "replace").strip().upper()
        if v not in allowed:
            raise ScpiError(-224, v[:20])
        return allowed[v]

    # -- system / acquire ----------------------------------------------------------------

    @command(":SYSTem:HEADer")
    def _head(self, args: bytes) -> None:
        self.header = self.boolean(args)

    @command(":SYSTem:HEADer?")
    def _head_q(self, args: bytes) -> str:
        return "1" if self.header else "0"

    @command(":ACQuire:MODE")
    def _acq_mode(self, args: bytes) -> None:
        self.acq_mode = self._word(args, {"RTIME": "RTIM", "RTIM": "RTIM", "ETIME": "ETIM",
                                          "ETIM": "ETIM", "SEGMENTED": "SEGM", "SEGM": "SEGM"})

    @command(":ACQuire:SRATe[:ANALog]")
    def _srat(self, args: bytes) -> None:
        self.sample_rate = self.number(args, lo=1.0, hi=256e9, units={"HZ": 1, "GHZ": 1e9})

    @command(":ACQuire:SRATe[:ANALog]?")
    def _srat_q(self, args: bytes) -> str:
        return f"{self.sample_rate:.10E}"

    @command(":ACQuire:POINts[:ANALog]")
    def _poin(self, args: bytes) -> None:
        v = self.number(args, lo=16, hi=2_000_000_000)
        if v != int(v):
            raise ScpiError(-224, "integer expected")
        self.points = int(v)

    @command(":ACQuire:POINts[:ANALog]?")
    def _poin_q(self, args: bytes) -> str:
        return str(self.points)

    @command(":CHANnel<n>:RANGe")
    def _rang(self, args: bytes, n: str) -> None:
        self.range_v[self._ch(n)] = self.number(args, lo=1e-3, hi=40.0, units={"V": 1,
                                                                                "MV": 1e-3})

    @command(":CHANnel<n>:RANGe?")
    def _rang_q(self, args: bytes, n: str) -> str:
        return f"{self.range_v[self._ch(n)]:.6E}"

    @command(":CHANnel<n>:OFFSet")
    def _offs(self, args: bytes, n: str) -> None:
        self.offset_v[self._ch(n)] = self.number(args, lo=-20, hi=20, units={"V": 1,
                                                                             "MV": 1e-3})

    @command(":CHANnel<n>:OFFSet?")
    def _offs_q(self, args: bytes, n: str) -> str:
        return f"{self.offset_v[self._ch(n)]:.6E}"

    @command(":TRIGger:SWEep")
    def _swe(self, args: bytes) -> None:
        self.sweep = self._word(args, {"TRIGGERED": "TRIG", "TRIG": "TRIG", "AUTO": "AUTO",
                                       "SINGLE": "SING", "SING": "SING"})

    @command(":TRIGger:SWEep?")
    def _swe_q(self, args: bytes) -> str:
        return self.sweep

    @command(":TRIGger:EDGE:SOURce")
    def _tsrc(self, args: bytes) -> None:
        allowed = {f"CHANNEL{i}": f"CHAN{i}" for i in range(1, 5)}
        allowed |= {f"CHAN{i}": f"CHAN{i}" for i in range(1, 5)} | {"AUX": "AUX"}
        self.trig_source = self._word(args, allowed)

    @command(":TRIGger:EDGE:SOURce?")
    def _tsrc_q(self, args: bytes) -> str:
        return self.trig_source

    @command(":TRIGger:LEVel")
    def _tlev(self, args: bytes) -> None:
        src, _, lev = args.partition(b",")
        allowed = {f"CHAN{i}": f"CHAN{i}" for i in range(1, 5)} | {"AUX": "AUX"}
        allowed |= {f"CHANNEL{i}": f"CHAN{i}" for i in range(1, 5)}
        self.trig_level[self._word(src, allowed)] = self.number(lev, lo=-20, hi=20)

    @command(":SINGle")
    def _single(self, args: bytes) -> None:
        self.records = {}
        self.acq_srate = self.sample_rate
        self.done_at = math.inf  # acquiring until the thread below has the samples
        self.ader_reported = False
        self._acq_generation += 1
        threading.Thread(target=self._acquire, name="InfiniiumEmulator-acquire", daemon=True,
                         args=(self._acq_generation, self.acquire_channels, self.points)).start()

    def _acquire(self, generation: int, channels: tuple[int, ...], points: int) -> None:
        records: dict[int, np.ndarray] = {}
        error = None
        try:
            for ch in channels:
                rec = np.ascontiguousarray(self.adc_source(self, ch, points), dtype=np.int16)
                if rec.shape != (points,):
                    raise ScpiError(-200, "adc_source returned a wrong length")
                records[ch] = rec
        except ScpiError as exc:
            error = str(exc)
        except Exception as exc:  # the physics hook failed: the instrument reports, not dies
            error = str(ScpiError(-200, f"acquisition failed: {type(exc).__name__}"))
        with self.state_lock:
            if generation != self._acq_generation:
                return  # a later :SINGle or *RST superseded this acquisition
            if error is not None:
                self.push_error(error)
                self.done_at = None  # never completes: :ADER? stays 0
                return
            self.records = records
            self.done_at = time.monotonic() + self.acquisition_delay_s

    @command(":ADER?")
    def _ader(self, args: bytes) -> str:
        if self.done_at is not None and not self.ader_reported and \
                time.monotonic() >= self.done_at:
            self.ader_reported = True
            return "1"
        return "0"

    @command(":ASTate?")
    def _astate(self, args: bytes) -> str:
        # acquisition state, not clearing: ARM while waiting for the trigger, ADONE once the
        # acquisition is complete (also when nothing is pending)
        if self.done_at is not None and time.monotonic() < self.done_at:
            return "ARM"
        return "ADONE"

    # -- waveform ------------------------------------------------------------------------

    @command(":WAVeform:SOURce")
    def _wsrc(self, args: bytes) -> None:
        v = args.decode("ascii", "replace").strip().upper()
        for prefix in ("CHANNEL", "CHAN"):
            if v.startswith(prefix) and v[len(prefix):].isdigit():
                self.wav_source = self._ch(v[len(prefix):])
                return
        raise ScpiError(-224, v[:20])

    @command(":WAVeform:SOURce?")
    def _wsrc_q(self, args: bytes) -> str:
        return f"CHAN{self.wav_source}"

    @command(":WAVeform:FORMat")
    def _wfmt(self, args: bytes) -> None:
        self.wav_format = self._word(args, {"WORD": "WORD", "BYTE": "BYTE", "ASCII": "ASC",
                                            "ASC": "ASC"})

    @command(":WAVeform:FORMat?")
    def _wfmt_q(self, args: bytes) -> str:
        return self.wav_format

    @command(":WAVeform:BYTeorder")
    def _bord(self, args: bytes) -> None:
        self.byteorder = self._word(args, {"LSBFIRST": "LSBF", "LSBF": "LSBF",
                                           "MSBFIRST": "MSBF", "MSBF": "MSBF"})

    @command(":WAVeform:BYTeorder?")
    def _bord_q(self, args: bytes) -> str:
        return self.byteorder

    @command(":WAVeform:STReaming")
    def _strm(self, args: bytes) -> None:
        self.streaming = self.boolean(args)

    @command(":WAVeform:STReaming?")
    def _strm_q(self, args: bytes) -> str:
        return "1" if self.streaming else "0"

    def _acquiring(self) -> bool:
        return self.done_at is not None and time.monotonic() < self.done_at

    def _record(self) -> np.ndarray:
        rec = None if self._acquiring() else self.records.get(self.wav_source)
        if rec is None:
            raise ScpiError(-221, f"no data for CHAN{self.wav_source}")
        return rec

    @command(":WAVeform:POINts?")
    def _wpoin(self, args: bytes) -> str:
        # no record until the acquisition completes (:SINGle cleared the previous one)
        rec = None if self._acquiring() else self.records.get(self.wav_source)
        return str(0 if rec is None else rec.size)

    @command(":WAVeform:XINCrement?")
    def _xinc(self, args: bytes) -> str:
        return f"{1.0 / self.acq_srate:.10E}"

    @command(":WAVeform:YINCrement?")
    def _yinc(self, args: bytes) -> str:
        return f"{self.range_v[self.wav_source] / 65536:.10E}"

    @command(":WAVeform:YORigin?")
    def _yor(self, args: bytes) -> str:
        return f"{self.offset_v[self.wav_source]:.10E}"

    @command(":WAVeform:DATA?")
    def _wdata(self, args: bytes) -> BlockReply:
        rec = self._record()
        parts = [p.strip() for p in args.decode("ascii", "replace").split(",") if p.strip()]
        try:
            start = int(parts[0]) if parts else 0
            size = int(parts[1]) if len(parts) > 1 else rec.size - start
        except ValueError:
            raise ScpiError(-224, ",".join(parts)[:30]) from None
        if self.wav_format != "WORD":
            raise ScpiError(-221, "emulator supports WORD only")
        if self.streaming:
            raise ScpiError(-221, "emulator sends definite blocks only (streaming off)")
        if start < 0 or start > rec.size or size < 0:
            raise ScpiError(-222)
        size = min(size, rec.size - start)  # manual: size adjusted to the available data
        if size > 499_999_999:
            raise ScpiError(-223)
        part = rec[start: start + size]
        if self.byteorder == "MSBF":
            part = part.byteswap()
        return BlockReply(memoryview(part).cast("B"))
