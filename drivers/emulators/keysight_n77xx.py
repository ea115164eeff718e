"""Emulator of a Keysight N7764A 4-channel VOA (commands: see drivers/keysight_n77xx.py).

State per channel: filter attenuation (dB), offset, wavelength (m), shutter. As in the manual
(8163A/B, 8164A/B & 8166A/B Programming Guide, ``:INPut:ATTenuation`` / ``:INPut:OFFSet``):

* the attenuation factor is ``alpha = alpha_filter + alpha_offset``; ``:INP:ATT`` sets it (and
  so moves the filter), ``:INP:ATT?`` answers it;
* ``:INP:ATT? MIN`` (= ``DEF``) is the value where ``alpha_filter = 0 dB``, i.e. the offset;
  ``MAX`` is where the filter is at its greatest (offset + :attr:`FILTER_MAX_DB`); a value
  outside that range is refused with -222 (no negative filter, no optical gain);
* the offset "does not affect the filter attenuation": setting it moves the displayed
  attenuation factor, not the filter; ``:INP:OFFS:DISP`` sets ``offset = -alpha_filter``.

A virtual lab reads :meth:`N77xxEmulator.transmission` (linear power transmission incl. shutter
and insertion loss). Setting the attenuation starts a filter move of ``settle_s``; ``*OPC?``
answers after it.
"""

from __future__ import annotations

import time

from drivers.emulators.scpi_server import ScpiEmulator, ScpiError, command

__all__ = ["N77xxEmulator"]


class N77xxEmulator(ScpiEmulator):
    IDN = "Keysight Technologies,N7764A,DE00012345,V1.42"
    N_CHANNELS = 4
    FILTER_MAX_DB = 45.0  # greatest filter attenuation; the attenuation factor adds the offset
    OFFSET_RANGE_DB = (-200.0, 200.0)
    WAV_RANGE_M = (1260e-9, 1640e-9)
    INSERTION_LOSS_DB = 1.2

    def __init__(self, *, settle_s: float = 0.01, **kw: object) -> None:
        self.settle_s = settle_s
        super().__init__(**kw)  # type: ignore[arg-type]

    def reset(self) -> None:
        n = self.N_CHANNELS
        self.filter_att_db = dict.fromkeys(range(1, n + 1), 0.0)
        self.offset_db = dict.fromkeys(range(1, n + 1), 0.0)
        self.wavelength_m = dict.fromkeys(range(1, n + 1), 1550e-9)
        self.output = dict.fromkeys(range(1, n + 1), False)
        self.busy_until = 0.0

    @property
    def attenuation_db(self) -> dict[int, float]:
        """Attenuation factor (what ``:INP:ATT?`` answers) per channel: filter + offset."""
        return {ch: self.filter_att_db[ch] + self.offset_db[ch] for ch in self.filter_att_db}

    def filter_db(self, ch: int) -> float:
        """The real (filter) attenuation of channel ``ch``, dB (without insertion loss)."""
        return self.filter_att_db[ch]

    def att_range_db(self, ch: int) -> tuple[float, float]:
        """``(ATT? MIN, ATT? MAX)`` of channel ``ch``: the filter range shifted by the offset."""
        return self.offset_db[ch], self.offset_db[ch] + self.FILTER_MAX_DB

    def set_offset(self, ch: int, offset_db: float) -> None:
        """Change the offset as the front panel would (the filter stays where it is)."""
        with self.state_lock:
            self.offset_db[ch] = float(offset_db)

    def transmission(self, ch: int) -> float:
        """Linear power transmission of channel ``ch`` (0 with the shutter closed)."""
        if not self.output[ch]:
            return 0.0
        return 10 ** (-(self.filter_att_db[ch] + self.INSERTION_LOSS_DB) / 10)

    def _ch(self, suffix: str) -> int:
        ch = int(suffix) if suffix else 1
        if not 1 <= ch <= self.N_CHANNELS:
            raise ScpiError(-113, f"channel {ch}")
        return ch

    @command("INPut<n>[:CHANnel<n>]:ATTenuation")
    def _att(self, args: bytes, n: str, m: str) -> None:
        ch = self._ch(n)
        lo, hi = self.att_range_db(ch)
        att = self.number(args, lo=lo, hi=hi, units={"DB": 1.0},
                          special={"MINIMUM": lo, "MAXIMUM": hi, "DEFAULT": lo})
        self.filter_att_db[ch] = att - self.offset_db[ch]
        self.busy_until = time.monotonic() + self.settle_s

    @command("INPut<n>[:CHANnel<n>]:ATTenuation?")
    def _att_q(self, args: bytes, n: str, m: str) -> str:
        ch = self._ch(n)
        lo, hi = self.att_range_db(ch)
        a = args.decode().strip().upper()
        if a in ("MIN", "MINIMUM", "DEF", "DEFAULT"):
            return f"{lo:+.8E}"
        if a in ("MAX", "MAXIMUM"):
            return f"{hi:+.8E}"
        if a:
            raise ScpiError(-224, a[:20])
        return f"{self.filter_att_db[ch] + self.offset_db[ch]:+.8E}"

    @command("INPut<n>[:CHANnel<n>]:OFFSet")
    def _offs(self, args: bytes, n: str, m: str) -> None:
        # "does not affect the filter attenuation": only the attenuation factor moves
        lo, hi = self.OFFSET_RANGE_DB
        self.offset_db[self._ch(n)] = self.number(
            args, lo=lo, hi=hi, units={"DB": 1.0},
            special={"MINIMUM": lo, "MAXIMUM": hi, "DEFAULT": 0.0})

    @command("INPut<n>[:CHANnel<n>]:OFFSet?")
    def _offs_q(self, args: bytes, n: str, m: str) -> str:
        ch = self._ch(n)
        a = args.decode().strip().upper()
        lo, hi = self.OFFSET_RANGE_DB
        special = {"MIN": lo, "MINIMUM": lo, "MAX": hi, "MAXIMUM": hi, "DEF": 0.0,
                   "DEFAULT": 0.0}
        if a and a not in special:
            raise ScpiError(-224, a[:20])
        return f"{special[a] if a else self.offset_db[ch]:+.8E}"

    @command("INPut<n>[:CHANnel<n>]:OFFSet:DISPlay")
    def _offs_disp(self, args: bytes, n: str, m: str) -> None:
        ch = self._ch(n)  # offset such that the attenuation factor is zero
        self.offset_db[ch] = -self.filter_att_db[ch]

    @command("INPut<n>[:CHANnel<n>]:WAVelength")
    def _wav(self, args: bytes, n: str, m: str) -> None:
        lo, hi = self.WAV_RANGE_M
        self.wavelength_m[self._ch(n)] = self.number(
            args, lo=lo, hi=hi, units={"PM": 1e-12, "NM": 1e-9, "UM": 1e-6, "MM": 1e-3, "M": 1})

    @command("INPut<n>[:CHANnel<n>]:WAVelength?")
    def _wav_q(self, args: bytes, n: str, m: str) -> str:
        return f"{self.wavelength_m[self._ch(n)]:+.8E}"

    @command("OUTPut<n>[:CHANnel<n>][:STATe]")
    def _outp(self, args: bytes, n: str, m: str) -> None:
        self.output[self._ch(n)] = self.boolean(args)

    @command("OUTPut<n>[:CHANnel<n>][:STATe]?")
    def _outp_q(self, args: bytes, n: str, m: str) -> str:
        return "1" if self.output[self._ch(n)] else "0"

    @command("*OPC?")
    def _opc(self, args: bytes) -> str:
        wait = self.busy_until - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        return "1"
