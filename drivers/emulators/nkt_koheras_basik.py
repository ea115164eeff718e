"""Emulated Koheras BasiK K1x2 laser module (register map of :mod:`drivers.nkt_koheras_basik`).

Behaviour: emission follows register 0x30 only while the interlock is closed
(:attr:`KoherasBasikEmulator.interlock_closed`); the power set point is kept in 0.01 mW
(register 0x22) and mirrored in dBm (0xA0); set points outside the module's range
(:attr:`max_power_mw`, :attr:`offset_range_pm`) are NACKed, as are writes to read-only
registers, writes of the wrong length and unknown registers.

Measured values come from the physics hook when one is given (quantities
``"output_power_mw"``, ``"wavelength_offset_pm"``, ``"module_temperature_c"``), otherwise:
output power = set point while emitting, else 0; offset readout = set point; 25.0 degC.
"""

from __future__ import annotations

import math
import struct
from typing import Any

from drivers.emulators.nkt_interbus import InterbusModuleEmulator
from drivers.emulators.serial_transport import MeasureHook
from drivers.nkt_interbus import MessageType
from drivers.nkt_koheras_basik import MODULE_TYPE_K1X2, BasikStatus, Reg

__all__ = ["KoherasBasikEmulator"]


class KoherasBasikEmulator(InterbusModuleEmulator):
    MODEL = "Koheras BasiK K1x2 (emulated)"

    def __init__(self, *, address: int = 1, measure: MeasureHook | None = None,
                 standard_wavelength_nm: float = 1550.12, max_power_mw: float = 40.0,
                 offset_range_pm: tuple[float, float] = (-300.0, 300.0),
                 serial_number: str = "EMU12345", name: str | None = None) -> None:
        super().__init__(address=address, measure=measure, name=name)
        self.standard_raw = round(standard_wavelength_nm * 1e4)  # 0.1 pm units
        self.max_power_raw = round(max_power_mw * 100)
        self.offset_range_raw = (round(offset_range_pm[0] * 10), round(offset_range_pm[1] * 10))
        self.serial_number = serial_number
        self.emission = 0
        self.setup = 0
        self.power_raw = 1000  # 10.00 mW
        self.offset_raw = 0
        self.interlock_closed = True
        self.error_code = 0
        self.supply_mv = 12000
        self.writes: list[tuple[int, bytes]] = []

    def state(self) -> dict[str, Any]:
        return {"emission": bool(self.emission and self.interlock_closed),
                "power_setpoint_mw": self.power_raw / 100,
                "wavelength_offset_setpoint_pm": self.offset_raw / 10,
                "standard_wavelength_nm": self.standard_raw * 1e-4,
                "interlock_closed": self.interlock_closed}

    @property
    def emitting(self) -> bool:
        return bool(self.emission) and self.interlock_closed

    def output_power_mw(self) -> float:
        """Optical output power (mW) the module emits now: the physics hook's
        ``output_power_mw`` if given, else the set point while emitting, else 0."""
        default = self.power_raw / 100 if self.emitting else 0.0
        return max(0.0, self.measured("output_power_mw", default))

    def _status(self) -> int:
        bits = BasikStatus(0)
        if self.emitting:
            bits |= BasikStatus.EMISSION | BasikStatus.WAVELENGTH_STABILIZED
        if not self.interlock_closed:
            bits |= BasikStatus.INTERLOCK_OFF
        if self.error_code:
            bits |= BasikStatus.ERROR_CODE_PRESENT
        return int(bits)

    def read_reg(self, register: int) -> bytes | None:
        readout = register in (Reg.OUTPUT_POWER_MW, Reg.OUTPUT_POWER_DBM)
        mw = self.output_power_mw() if readout else 0
        table = {
            Reg.EMISSION: lambda: struct.pack("<B", self.emission),
            Reg.SETUP: lambda: struct.pack("<H", self.setup),
            Reg.POWER_SETPOINT_MW: lambda: struct.pack("<H", self.power_raw),
            Reg.POWER_SETPOINT_DBM: lambda: struct.pack(
                "<h", round(100 * 10 * math.log10(self.power_raw / 100)) if self.power_raw
                else -32768),
            Reg.WAVELENGTH_OFFSET_SETPOINT: lambda: struct.pack("<h", self.offset_raw),
            Reg.OUTPUT_POWER_MW: lambda: struct.pack("<H", min(0xFFFF, round(mw * 100))),
            Reg.OUTPUT_POWER_DBM: lambda: struct.pack(
                "<h", round(1000 * math.log10(mw)) if mw > 0 else -32768),
            Reg.STANDARD_WAVELENGTH: lambda: struct.pack("<I", self.standard_raw),
            Reg.WAVELENGTH_OFFSET: lambda: struct.pack(
                "<i", round(10 * self.measured("wavelength_offset_pm", self.offset_raw / 10))),
            Reg.MODULE_TEMPERATURE: lambda: struct.pack(
                "<h", round(10 * self.measured("module_temperature_c", 25.0))),
            Reg.SUPPLY_VOLTAGE: lambda: struct.pack("<H", self.supply_mv),
            Reg.STATUS: lambda: struct.pack("<H", self._status()),
            Reg.ERROR_CODE: lambda: struct.pack("<B", self.error_code),
            Reg.MODULE_TYPE: lambda: struct.pack("<B", MODULE_TYPE_K1X2),
            Reg.FIRMWARE: lambda: struct.pack("<H", 117) + b"1.17-emulated\x00",
            Reg.SERIAL_NUMBER: lambda: self.serial_number.encode("ascii")[:8].ljust(8, b"\x00"),
        }
        fn = table.get(register)  # type: ignore[call-overload]
        return None if fn is None else fn()

    def write_reg(self, register: int, data: bytes, mtype: MessageType) -> bool:
        self.writes.append((register, bytes(data)))
        if register == Reg.EMISSION and mtype == MessageType.WRITE and len(data) == 1:
            if data[0] not in (0, 1):
                return False
            self.emission = data[0]
            return True
        if register == Reg.SETUP and len(data) == 2:
            value = struct.unpack("<H", data)[0]
            if mtype == MessageType.WRITE:
                self.setup = value
            elif mtype == MessageType.WRITE_SET:
                self.setup |= value
            elif mtype == MessageType.WRITE_CLEAR:
                self.setup &= ~value & 0xFFFF
            else:
                self.setup ^= value
            return True
        if mtype != MessageType.WRITE:
            return False
        if register == Reg.POWER_SETPOINT_MW and len(data) == 2:
            raw = struct.unpack("<H", data)[0]
            if raw > self.max_power_raw:
                return False
            self.power_raw = raw
            return True
        if register == Reg.POWER_SETPOINT_DBM and len(data) == 2:
            dbm = struct.unpack("<h", data)[0] / 100
            raw = round(100 * 10 ** (dbm / 10))
            if raw > self.max_power_raw:
                return False
            self.power_raw = raw
            return True
        if register == Reg.WAVELENGTH_OFFSET_SETPOINT and len(data) == 2:
            raw = struct.unpack("<h", data)[0]
            lo, hi = self.offset_range_raw
            if not lo <= raw <= hi:
                return False
            self.offset_raw = raw
            return True
        return False  # read-only, unknown, or wrong length: NACK
