"""Emulator of a Keysight N7764A 4-channel VOA (commands: see drivers/keysight_n77xx.py).

State per channel: attenuation (dB), offset, wavelength (m), shutter. A virtual lab reads
:meth:`N77xxEmulator.transmission` (linear power transmission incl. shutter and insertion
loss). Setting the attenuation starts a filter move of ``settle_s``; ``*OPC?`` answers after it.
"""

from __future__ import annotations

import time

from drivers.emulators.scpi_server import ScpiEmulator, ScpiError, command

__all__ = ["N77xxEmulator"]


class N77xxEmulator(ScpiEmulator):
    IDN = "Keysight Technologies,N7764A,DE00012345,V1.42"
    N_CHANNELS = 4
    ATT_RANGE_DB = (0.0, 45.0)
    WAV_RANGE_M = (1260e-9, 1640e-9)
    INSERTION_LOSS_DB = 1.2

    def __init__(self, *, settle_s: float = 0.01, **kw: object) -> None:
        self.settle_s = settle_s
        super().__init__(**kw)  # type: ignore[arg-type]

    def reset(self) -> None:
        n = self.N_CHANNELS
        self.attenuation_db = dict.fromkeys(range(1, n + 1), 0.0)
        self.offset_db = dict.fromkeys(range(1, n + 1), 0.0)
        self.wavelength_m = dict.fromkeys(range(1, n + 1), 1550e-9)
        self.output = dict.fromkeys(range(1, n + 1), False)
        self.busy_until = 0.0

    def transmission(self, ch: int) -> float:
        """Linear power transmission of channel ``ch`` (0 with the shutter closed)."""
        if not self.output[ch]:
            return 0.0
        filt = self.attenuation_db[ch] - self.offset_db[ch]
        return 10 ** (-(filt + self.INSERTION_LOSS_DB) / 10)

    def _ch(self, suffix: str) -> int:
        ch = int(suffix) if suffix else 1
        if not 1 <= ch <= self.N_CHANNELS:
            raise ScpiError(-113, f"channel {ch}")
        return ch

    @command("INPut<n>[:CHANnel<n>]:ATTenuation")
    def _att(self, args: bytes, n: str, m: str) -> None:
        ch = self._ch(n)
        lo, hi = self.ATT_RANGE_DB
        self.attenuation_db[ch] = self.number(args, lo=lo, hi=hi, units={"DB": 1.0},
                                              special={"MINIMUM": lo, "MAXIMUM": hi,
                                                       "DEFAULT": lo})
        self.busy_until = time.monotonic() + self.settle_s

    @command("INPut<n>[:CHANnel<n>]:ATTenuation?")
    def _att_q(self, args: bytes, n: str, m: str) -> str:
        ch = self._ch(n)
        a = args.decode().strip().upper()
        if a in ("MIN", "MINIMUM", "DEF", "DEFAULT"):
            return f"{self.ATT_RANGE_DB[0]:+.8E}"
        if a in ("MAX", "MAXIMUM"):
            return f"{self.ATT_RANGE_DB[1]:+.8E}"
        return f"{self.attenuation_db[ch]:+.8E}"

    @command("INPut<n>[:CHANnel<n>]:OFFSet")
    def _offs(self, args: bytes, n: str, m: str) -> None:
        self.offset_db[self._ch(n)] = self.number(args, lo=-200, hi=200, units={"DB": 1.0})

    @command("INPut<n>[:CHANnel<n>]:OFFSet?")
    def _offs_q(self, args: bytes, n: str, m: str) -> str:
        return f"{self.offset_db[self._ch(n)]:+.8E}"

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
