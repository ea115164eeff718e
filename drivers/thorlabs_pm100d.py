"""Thorlabs PM100D optical power meter console (USB-TMC / VISA, SCPI).

Protocol: Thorlabs "PM100D Operation Manual", chapter "Computer Interface" / "SCPI Commands"
(the PM100A/PM100D/PM100USB/PM400 share the command set, see the PM400 manual §5.5), IEEE 488.2
common commands (``*IDN?`` -> ``Thorlabs,PM100D,<serial>,<firmware>``). Commands used here:

==============================================  =============================================
``SENSe:CORRection:WAVelength <nm>`` / ``?``      operating wavelength, nm (``? MIN|MAX``:
                                                  sensor's calibrated range)
``SENSe:POWer:DC:RANGe:AUTO ON|OFF`` / ``?``      auto ranging (``1``/``0`` reply)
``SENSe:POWer:DC:RANGe:UPPer <W>`` / ``?``        manual range (its upper end), W
``SENSe:AVERage:COUNt <n>`` / ``?``               samples averaged per reading (~0.3 ms each)
``SENSe:POWer:DC:UNIT W|DBM`` / ``?``             unit of readings; the driver forces W
``MEASure:POWer?``                                configure + measure, NR3 reply in W
``SENSe:CORRection:COLLect:ZERO[:INITiate]``      dark-zero adjustment (light blocked!)
``SENSe:CORRection:COLLect:ZERO:STATe?``          1 while zeroing
``SYSTem:SENSor:IDN?``                            sensor name, serial, cal message, type, ...
``SYSTem:ERRor?``                                 error queue, ``0,"No error"`` when empty
==============================================  =============================================

The console is a USB-TMC device (``USB0::0x1313::0x8078::<serial>::INSTR``; pyvisa-py needs
pyusb for it); the emulator serves the same commands on a raw socket.

A reading of 9.9E37 (SCPI "not a number") means over-range/no valid reading and is raised as
:class:`InstrumentReportedError`, never returned as a number.

Lab-config limits (checked before anything is sent): ``wavelength_nm`` on
:attr:`ThorlabsPM100D.wavelength_nm`, ``power_dbm`` on :attr:`ThorlabsPM100D.range_w` (the
range is set in W on the wire and converted to dBm, ``10 log10(P / 1 mW)``, for the check).
"""

from __future__ import annotations

import math
import time
from typing import ClassVar

from drivers.base import DynamicRange, Range, mw_to_dbm
from drivers.scpi import ScpiInstrument, ScpiProperty, parse_float
from qkd_hw.errors import InstrumentReportedError, InstrumentTimeoutError, ProtocolError

__all__ = ["ThorlabsPM100D"]

SAMPLE_TIME_S = 3e-4  # per averaged sample (manual: about 0.3 ms per sample)


def watts_to_dbm(watts: float) -> float:
    """Power in W -> dBm; the range validator keeps ``watts > 0``."""
    return mw_to_dbm(watts * 1e3)


class ThorlabsPM100D(ScpiInstrument):
    """Thorlabs PM100D with a photodiode sensor (e.g. S144C / S155C)."""

    MODEL = "Thorlabs PM100D"
    LIMITS: ClassVar[frozenset[str]] = frozenset({"wavelength_nm", "power_dbm"})
    IDN_PATTERN: ClassVar[str] = r"^\s*Thorlabs\s*,\s*PM100D\s*,"

    #: calibrated wavelength range of the connected sensor (nm), read on open
    wavelength_range_nm: tuple[float, float] | None = None

    wavelength_nm = ScpiProperty(
        "SENS:CORR:WAV", float, unit="nm", limit="wavelength_nm",
        validator=DynamicRange("wavelength_range_nm", 100.0, 20000.0),
        doc="Operating wavelength used for the responsivity correction.")
    auto_range = ScpiProperty("SENS:POW:RANG:AUTO", bool, doc="Automatic power ranging.")
    range_w = ScpiProperty(
        "SENS:POW:RANG:UPP", float, unit="W", validator=Range(1e-12, 100.0),
        limit="power_dbm", to_limit_unit=watts_to_dbm,
        doc="Manual measurement range (upper end), set in W. Setting it switches auto ranging "
            "off. The lab-config limit ``power_dbm`` is in dBm: the requested range is "
            "converted with 10 log10(P / 1 mW) before the check (the console may then pick "
            "its next larger range).")
    averaging = ScpiProperty(
        "SENS:AVER:COUN", int, validator=Range(1, 100_000, integer=True),
        doc="Number of samples averaged per reading (about 0.3 ms each).")
    power_unit = ScpiProperty("SENS:POW:UNIT", {"W": "W", "DBM": "DBM"}, readonly=True,
                              doc="Unit of readings (the driver sets W on open).")

    def _setup(self) -> None:
        self.write("SENS:POW:UNIT W", idempotent=True)
        # the sensor's range bounds every wavelength setting (parse_float refuses nan/inf/9.9E37)
        lo = self.query_value("SENS:CORR:WAV? MIN", parse_float)
        hi = self.query_value("SENS:CORR:WAV? MAX", parse_float)
        if not 0 < lo <= hi:
            raise ProtocolError(f"sensor wavelength range {lo:g}..{hi:g} nm is not a range",
                                instrument=self.name, command="SENS:CORR:WAV? MIN/MAX")
        self.wavelength_range_nm = (lo, hi)

    def sensor_info(self) -> dict[str, str]:
        """``SYST:SENS:IDN?``: name, serial, calibration message, type, subtype, flags."""
        reply = self.query("SYST:SENS:IDN?")
        fields = [f.strip().strip('"') for f in reply.split(",")]
        keys = ("name", "serial", "calibration", "type", "subtype", "flags")
        return dict(zip(keys, fields, strict=False))

    def measure_power_w(self) -> float:
        """One reading (``MEAS:POW?``), W. Waits for the averaging time on top of the timeout."""
        n = self.averaging
        extra = n * SAMPLE_TIME_S * 1.5
        value = self.query_value("MEAS:POW?", parse_float,
                                 timeout_s=self.config.timeout_s + extra)
        if not math.isfinite(value) or abs(value) >= 9.9e37:
            raise InstrumentReportedError("no valid reading (over range or no sensor)",
                                          instrument=self.name, command="MEAS:POW?",
                                          reply=repr(value))
        return value

    def measure_power_dbm(self) -> float:
        p = self.measure_power_w()
        if p <= 0:
            raise InstrumentReportedError(f"reading {p!r} W has no dBm value",
                                          instrument=self.name, command="MEAS:POW?")
        return watts_to_dbm(p)

    def zero(self, timeout_s: float = 10.0) -> None:
        """Dark-zero adjustment. The light path must be blocked by the caller."""
        self.write("SENS:CORR:COLL:ZERO:INIT")
        deadline = time.monotonic() + timeout_s
        while self.query_value("SENS:CORR:COLL:ZERO:STAT?", lambda s: int(s.strip())) != 0:
            if time.monotonic() > deadline:
                raise InstrumentTimeoutError(f"zeroing not finished after {timeout_s:g} s",
                                             instrument=self.name,
                                             command="SENS:CORR:COLL:ZERO:STAT?")
            time.sleep(0.02)
