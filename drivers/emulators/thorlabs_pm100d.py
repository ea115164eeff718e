"""Emulator of the Thorlabs PM100D power meter (command set: see drivers/thorlabs_pm100d.py).

Physics hook: ``power_source(emu) -> float`` gives the optical power (W) on the sensor; the
virtual lab replaces it. The reading is ``power_source`` scaled by the responsivity ratio
between the true wavelength (``true_wavelength_nm``, settable by the lab) and the set one (a
wrong wavelength setting gives a wrong reading, as on the real meter, using a linear InGaAs
responsivity model), plus over-range (9.9E37) when the manual range is below the power.
``MEAS:POW?`` takes ``averaging * 0.3 ms`` like the instrument.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from drivers.emulators.scpi_server import ScpiEmulator, ScpiError, command

__all__ = ["PM100DEmulator"]

NAN_REPLY = "9.91000000E+37"


def _responsivity_a_per_w(wavelength_nm: float) -> float:
    # rough InGaAs photodiode curve: rising linearly from 0.5 A/W at 900 nm to 1.0 A/W at 1600
    return 0.5 + 0.5 * (min(max(wavelength_nm, 900.0), 1600.0) - 900.0) / 700.0


class PM100DEmulator(ScpiEmulator):
    IDN = "Thorlabs,PM100D,P0012345,2.7.0"
    SENSOR_IDN = "S144C,190523456,22-May-2019,1,18,289"
    WAVELENGTH_RANGE_NM = (800.0, 1700.0)
    RANGES_W = (5e-9, 5e-8, 5e-7, 5e-6, 5e-5, 5e-4, 5e-3, 5e-2, 0.5)
    SAMPLE_TIME_S = 3e-4

    def __init__(self, **kw: object) -> None:
        self.power_source: Callable[[PM100DEmulator], float] = lambda emu: 1.0e-3
        self.true_wavelength_nm = 1550.0
        super().__init__(**kw)  # type: ignore[arg-type]

    def reset(self) -> None:
        self.wavelength_nm = 1550.0
        self.auto_range = True
        self.range_w = 5e-3
        self.averaging = 1
        self.unit = "W"
        self.zeroing_until = 0.0
        self.zero_offset_w = 0.0

    # -- settings ----------------------------------------------------------------------

    @command("[SENSe]:CORRection:WAVelength")
    def _wav(self, args: bytes) -> None:
        lo, hi = self.WAVELENGTH_RANGE_NM
        self.wavelength_nm = self.number(args, lo=lo, hi=hi, units={"NM": 1.0},
                                         special={"MINIMUM": lo, "MAXIMUM": hi})

    @command("[SENSe]:CORRection:WAVelength?")
    def _wav_q(self, args: bytes) -> str:
        a = args.decode().strip().upper()
        if a in ("MIN", "MINIMUM"):
            return f"{self.WAVELENGTH_RANGE_NM[0]:.6E}"
        if a in ("MAX", "MAXIMUM"):
            return f"{self.WAVELENGTH_RANGE_NM[1]:.6E}"
        if a:
            raise ScpiError(-224, a)
        return f"{self.wavelength_nm:.6E}"

    @command("[SENSe]:POWer[:DC]:RANGe:AUTO")
    def _auto(self, args: bytes) -> None:
        self.auto_range = self.boolean(args)

    @command("[SENSe]:POWer[:DC]:RANGe:AUTO?")
    def _auto_q(self, args: bytes) -> str:
        return "1" if self.auto_range else "0"

    @command("[SENSe]:POWer[:DC]:RANGe[:UPPer]")
    def _range(self, args: bytes) -> None:
        want = self.number(args, lo=0.0, units={"W": 1.0, "MW": 1e-3, "UW": 1e-6, "NW": 1e-9})
        # the meter picks the smallest range that contains the requested value
        fits = [r for r in self.RANGES_W if r >= want]
        if not fits:
            raise ScpiError(-222, "above largest range")
        self.range_w = fits[0]
        self.auto_range = False

    @command("[SENSe]:POWer[:DC]:RANGe[:UPPer]?")
    def _range_q(self, args: bytes) -> str:
        return f"{self.range_w:.6E}"

    @command("[SENSe]:AVERage[:COUNt]")
    def _aver(self, args: bytes) -> None:
        v = self.number(args, lo=1, hi=100_000)
        if v != int(v):
            raise ScpiError(-224, "integer expected")
        self.averaging = int(v)

    @command("[SENSe]:AVERage[:COUNt]?")
    def _aver_q(self, args: bytes) -> str:
        return str(self.averaging)

    @command("[SENSe]:POWer[:DC]:UNIT")
    def _unit(self, args: bytes) -> None:
        u = args.decode().strip().upper()
        if u not in ("W", "DBM"):
            raise ScpiError(-224, u)
        self.unit = u

    @command("[SENSe]:POWer[:DC]:UNIT?")
    def _unit_q(self, args: bytes) -> str:
        return self.unit

    @command("SYSTem:SENSor:IDN?")
    def _sens_idn(self, args: bytes) -> str:
        return self.SENSOR_IDN

    @command("[SENSe]:CORRection:COLLect:ZERO[:INITiate]")
    def _zero(self, args: bytes) -> None:
        self.zeroing_until = time.monotonic() + 0.05
        self.zero_offset_w = 0.0

    @command("[SENSe]:CORRection:COLLect:ZERO:STATe?")
    def _zero_q(self, args: bytes) -> str:
        return "1" if time.monotonic() < self.zeroing_until else "0"

    # -- measurement ---------------------------------------------------------------------

    def reading_w(self) -> float:
        true_p = float(self.power_source(self))
        ratio = _responsivity_a_per_w(self.true_wavelength_nm) / _responsivity_a_per_w(
            self.wavelength_nm)
        return true_p * ratio - self.zero_offset_w

    @command("MEASure[:SCALar]:POWer?")
    def _meas(self, args: bytes) -> str:
        # the state lock is held: the instrument is busy while it averages
        time.sleep(self.averaging * self.SAMPLE_TIME_S)
        p = self.reading_w()
        if not self.auto_range and p > self.range_w * 1.1:
            return NAN_REPLY
        if self.unit == "DBM":
            import math

            return f"{10 * math.log10(max(p, 1e-15) / 1e-3):.6E}"
        return f"{p:.6E}"
