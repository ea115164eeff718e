"""NKT Photonics Koheras BasiK K1x2 fibre laser module (module type 0x33) over Interbus.

Register map: NKT Photonics SDK Instruction Manual, section "Koheras BASIK Module (K1x2)"
(6.6 in SDK 2.1.3, 6.7 in SDK 2.1.16), as quoted in the public drivers of QuTech QMI
(``adjustik.py``) and UC Berkeley ``amodevices`` (``nkt_koheras_adjustik.py``); values are
little-endian:

========  ======  ==========  ===============================================================
register  type    scale       meaning
========  ======  ==========  ===============================================================
0x30      U8      -           emission: 0 off, 1 on (on only while the interlock is closed)
0x31      U16     bits        setup bits (bit 8: pump constant current, ...)
0x22      U16     0.01 mW     output power set point
0xA0      I16     0.01 dBm    output power set point in dBm (same set point)
0x2A      I16     0.1 pm      wavelength offset set point (wavelength = standard + offset)
0x17      U16     0.01 mW     output power readout
0x90      I16     0.01 dBm    output power readout in dBm
0x32      U32     0.1 pm      standard wavelength (wavelength at offset 0)
0x72      I32     0.1 pm      wavelength offset readout
0x1C      I16     0.1 degC    module temperature
0x1E      U16     mV          module supply voltage
0x66      U16     bits        status: 0 emission, 1 interlock off, 4 module disabled, 5 supply
                              low, 6 temperature out of range, 11 waiting for temperature to
                              drop, 13 fibre-laser temperature settling, 14 wavelength
                              stabilised, 15 error code present
0x67      U8      -           error code
0x61      U8/U16  -           module type (general register; 0x33 for the K1x2)
0x64      bytes   -           firmware version (general register)
0x65      ASCII   -           serial number (general register)
========  ======  ==========  ===============================================================

Default module address 1 (settable in the module; option ``address``).

Safe state
----------
"Safe" for the laser means: no emission that the running procedure did not intend, and never
more power or another wavelength than the lab config allows.

* Limits: ``power_mw`` / ``power_dbm`` (both checked whichever unit is set) and
  ``wavelength_nm`` (standard wavelength + offset) are enforced before any byte is written.
  Turning emission on first reads the stored power set point and (when a ``wavelength_nm``
  limit is set) the stored wavelength-offset set point, and refuses (LimitError, emission
  register not written) if either violates the lab limit, since the module keeps its set
  points across sessions and applies them on emission.
* Set points are sent in register steps (0.01 mW, 0.01 dBm, 0.1 pm) and the limits are
  checked on the value actually sent: a request inside the limit whose nearest step lies
  beyond it is rounded towards the inside (e.g. 10.006 mW under a 10.006 mW limit is sent as
  10.00 mW, not 10.01 mW); a limit narrower than one step refuses the request
  (:func:`drivers.base.quantise_inside`).
* :meth:`KoherasBasik.emission_session` turns emission on for a block and, on any exception or
  Ctrl-C, turns it off again if it was off before; on normal exit it restores the entry state
  unless ``keep_on=True``.
* :meth:`KoherasBasik.settings_session` restores power and wavelength set points changed in the
  block when the block fails.
* ``close()`` leaves emission as it is (a local oscillator is often meant to stay on), unless
  option ``emission_off_on_close = true``.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from drivers.base import Boolean, Range, mw_to_dbm
from drivers.nkt_interbus import InterbusInstrument, RegisterProperty, unpack_value
from qkd_hw.errors import InstrumentError, ProtocolError

__all__ = ["BasikStatus", "KoherasBasik"]


class Reg(enum.IntEnum):
    EMISSION = 0x30
    SETUP = 0x31
    POWER_SETPOINT_MW = 0x22
    POWER_SETPOINT_DBM = 0xA0
    WAVELENGTH_OFFSET_SETPOINT = 0x2A
    OUTPUT_POWER_MW = 0x17
    OUTPUT_POWER_DBM = 0x90
    STANDARD_WAVELENGTH = 0x32
    WAVELENGTH_OFFSET = 0x72
    MODULE_TEMPERATURE = 0x1C
    SUPPLY_VOLTAGE = 0x1E
    STATUS = 0x66
    ERROR_CODE = 0x67
    MODULE_TYPE = 0x61
    FIRMWARE = 0x64
    SERIAL_NUMBER = 0x65


class BasikStatus(enum.IntFlag):
    """Status bits of register 0x66."""

    EMISSION = 1 << 0
    INTERLOCK_OFF = 1 << 1
    MODULE_DISABLED = 1 << 4
    SUPPLY_VOLTAGE_LOW = 1 << 5
    TEMPERATURE_OUT_OF_RANGE = 1 << 6
    WAITING_FOR_TEMPERATURE_DROP = 1 << 11
    FIBER_LASER_TEMPERATURE_SETTLING = 1 << 13
    WAVELENGTH_STABILIZED = 1 << 14
    ERROR_CODE_PRESENT = 1 << 15


MODULE_TYPE_K1X2 = 0x33

#: status bits that mean the laser cannot deliver what it was told
PROBLEM_BITS = (BasikStatus.INTERLOCK_OFF | BasikStatus.MODULE_DISABLED
                | BasikStatus.SUPPLY_VOLTAGE_LOW | BasikStatus.TEMPERATURE_OUT_OF_RANGE
                | BasikStatus.ERROR_CODE_PRESENT)


class _PowerMw(RegisterProperty):
    """Power set point in mW; also checks a ``power_dbm`` lab limit."""

    def check_limits(self, inst: KoherasBasik, value: Any, what: str = "") -> None:
        super().check_limits(inst, value, what)
        inst.check_limit("power_dbm", mw_to_dbm(value),
                         what=what or f"{type(inst).__name__}.{self.name}", unit="dBm")


class _PowerDbm(RegisterProperty):
    """Power set point in dBm; also checks a ``power_mw`` lab limit."""

    def check_limits(self, inst: KoherasBasik, value: Any, what: str = "") -> None:
        super().check_limits(inst, value, what)
        inst.check_limit("power_mw", 10 ** (value / 10),
                         what=what or f"{type(inst).__name__}.{self.name}", unit="mW")


class _WavelengthOffset(RegisterProperty):
    """Offset set point in pm; checks the resulting wavelength against ``wavelength_nm``."""

    def check_limits(self, inst: KoherasBasik, value: Any, what: str = "") -> None:
        super().check_limits(inst, value, what)
        nm = inst.standard_wavelength_nm + value * 1e-3
        # the limit is on the absolute wavelength: name the pm request and what it amounts to
        what = what or f"{type(inst).__name__}.{self.name}"
        inst.check_limit("wavelength_nm", nm, unit="nm",
                         what=f"{what} ({value!r} pm) as wavelength (standard "
                              f"{inst.standard_wavelength_nm:.5f} nm + offset)")


class _Emission(RegisterProperty):
    """Emission on/off; refuses to turn on with a stored set point beyond the lab limit."""

    def _write(self, inst: KoherasBasik, value: Any) -> None:
        with inst.transaction():  # no other thread may change the set points in between
            if value:
                # the module keeps its set points across sessions and applies them on emission
                what = f"{type(inst).__name__}.{self.name} (stored power set point)"
                setpoint = inst.power_setpoint_mw
                inst.check_limit("power_mw", setpoint, what=what, unit="mW")
                inst.check_limit("power_dbm", mw_to_dbm(setpoint), what=what, unit="dBm")
                if inst.config.limits.get("wavelength_nm") is not None:
                    what = f"{type(inst).__name__}.{self.name} (stored wavelength set point)"
                    inst.check_limit("wavelength_nm", inst.wavelength_setpoint_nm, what=what,
                                     unit="nm")
            super()._write(inst, value)


class KoherasBasik(InterbusInstrument):
    """Koheras BasiK K1x2 laser module. ``__init__`` does not touch the port; ``open()`` checks
    the module type and reads the standard wavelength."""

    MODEL = "NKT Photonics Koheras BasiK K1x2"
    LIMITS: ClassVar[frozenset[str]] = frozenset({"power_mw", "power_dbm", "wavelength_nm"})
    OPTIONS: ClassVar[Mapping[str, type | tuple[type, ...]]] = {
        **InterbusInstrument.OPTIONS, "emission_off_on_close": bool}
    DEFAULT_ADDRESS = 1

    emission = _Emission(Reg.EMISSION, "u8", decode=bool, encode=int, validator=Boolean(),
                         doc="Laser emission on/off.")
    setup_bits = RegisterProperty(Reg.SETUP, "u16", validator=Range(0, 0xFFFF, integer=True),
                                  doc="Setup bits (bit 8: pump constant current).")
    power_setpoint_mw = _PowerMw(Reg.POWER_SETPOINT_MW, "u16", scale=0.01, unit="mW",
                                 limit="power_mw", validator=Range(0.0, 655.35),
                                 doc="Output power set point.")
    power_setpoint_dbm = _PowerDbm(Reg.POWER_SETPOINT_DBM, "i16", scale=0.01, unit="dBm",
                                   limit="power_dbm", validator=Range(-327.68, 327.67),
                                   doc="Output power set point in dBm.")
    wavelength_offset_setpoint_pm = _WavelengthOffset(
        Reg.WAVELENGTH_OFFSET_SETPOINT, "i16", scale=0.1, unit="pm",
        validator=Range(-3276.8, 3276.7),
        doc="Wavelength offset set point (thermal tuning) from the standard wavelength.")
    output_power_mw = RegisterProperty(Reg.OUTPUT_POWER_MW, "u16", scale=0.01, unit="mW",
                                       readonly=True, doc="Output power readout.")
    output_power_dbm = RegisterProperty(Reg.OUTPUT_POWER_DBM, "i16", scale=0.01, unit="dBm",
                                        readonly=True, doc="Output power readout in dBm.")
    wavelength_offset_pm = RegisterProperty(Reg.WAVELENGTH_OFFSET, "i32", scale=0.1, unit="pm",
                                            readonly=True, doc="Wavelength offset readout.")
    module_temperature_c = RegisterProperty(Reg.MODULE_TEMPERATURE, "i16", scale=0.1,
                                            unit="degC", readonly=True,
                                            doc="Module temperature.")
    supply_voltage_v = RegisterProperty(Reg.SUPPLY_VOLTAGE, "u16", scale=0.001, unit="V",
                                        readonly=True, doc="Module supply voltage.")
    status = RegisterProperty(Reg.STATUS, "u16", decode=BasikStatus, readonly=True,
                              doc="Status bits (BasikStatus flags).")
    error_code = RegisterProperty(Reg.ERROR_CODE, "u8", readonly=True, doc="Error code.")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._standard_pm: float | None = None
        self.serial_number = ""

    # -- life cycle ---------------------------------------------------------------------------

    def _on_open(self) -> None:
        module_type = self.module_type
        if module_type != MODULE_TYPE_K1X2:
            raise InstrumentError(f"module at address {self.address} has type 0x{module_type:02X},"
                                  f" expected 0x{MODULE_TYPE_K1X2:02X} (Koheras BasiK K1x2)",
                                  instrument=self.name)
        self._standard_pm = float(self.read_value(Reg.STANDARD_WAVELENGTH, "u32")) * 0.1
        raw = self.read_register(Reg.SERIAL_NUMBER)
        self.serial_number = raw.split(b"\x00", 1)[0].decode("ascii", "replace").strip()
        self.log.info("%s: BasiK serial %s, standard wavelength %.4f nm", self.name,
                      self.serial_number, self._standard_pm * 1e-3)

    def _on_close(self) -> None:
        if self.option("emission_off_on_close", False):
            self.emission = False

    # -- readouts -----------------------------------------------------------------------------

    @property
    def module_type(self) -> int:
        """Module type number (one byte in older firmware, two little-endian bytes in newer)."""
        data = self.read_register(Reg.MODULE_TYPE)
        if not data:
            raise ProtocolError("empty module type register", instrument=self.name)
        return int(unpack_value("u16", data)) if len(data) >= 2 else data[0]

    @property
    def standard_wavelength_nm(self) -> float:
        """Wavelength at offset 0 (read once at open)."""
        if self._standard_pm is None:
            self._standard_pm = float(self.read_value(Reg.STANDARD_WAVELENGTH, "u32")) * 0.1
        return self._standard_pm * 1e-3

    @property
    def wavelength_nm(self) -> float:
        """Actual wavelength: standard wavelength + offset readout."""
        return self.standard_wavelength_nm + self.wavelength_offset_pm * 1e-3

    @property
    def wavelength_setpoint_nm(self) -> float:
        """Wavelength set point: standard wavelength + offset set point (setting it writes the
        offset; the lab ``wavelength_nm`` limit applies)."""
        return self.standard_wavelength_nm + self.wavelength_offset_setpoint_pm * 1e-3

    @wavelength_setpoint_nm.setter
    def wavelength_setpoint_nm(self, nm: float) -> None:
        self.wavelength_offset_setpoint_pm = (float(nm) - self.standard_wavelength_nm) * 1e3

    def problems(self) -> list[str]:
        """Names of the status bits that say the laser cannot deliver (empty when fine)."""
        status = self.status
        return [flag.name or str(flag) for flag in BasikStatus
                if flag in PROBLEM_BITS and flag in status]

    # -- safe procedures ----------------------------------------------------------------------

    @contextlib.contextmanager
    def emission_session(self, *, keep_on: bool = False) -> Iterator[KoherasBasik]:
        """Emission on for the block; off again on error/Ctrl-C if it was off before."""
        was_on = self.emission
        if not was_on:
            self.emission = True
        ok = False
        try:
            yield self
            ok = True
        finally:
            if not was_on and not (ok and keep_on):
                try:
                    self.emission = False
                except InstrumentError as exc:
                    self.log.error("%s: could not turn emission off again: %s", self.name, exc)
                    if ok:
                        raise

    @contextlib.contextmanager
    def settings_session(self) -> Iterator[KoherasBasik]:
        """Restore power and wavelength-offset set points if the block fails."""
        saved = (self.power_setpoint_mw, self.wavelength_offset_setpoint_pm)
        try:
            yield self
        except BaseException:
            try:
                self.power_setpoint_mw, self.wavelength_offset_setpoint_pm = saved
            except InstrumentError as exc:
                self.log.error("%s: could not restore set points %r: %s", self.name, saved, exc)
            raise
