"""Emulated Thorlabs MBX bias controller (command set of :mod:`drivers.thorlabs_mbx`).

Behaviour: commands end in CR and/or LF, are matched case-insensitively by their short or long
form; settings ``<command>: <value>`` answer ``1`` when accepted and ``0`` when the command is
unknown or the value out of range (our assumption for a rejection, see the driver docstring);
replies end in ``\\n``. ``MZM:RESET`` starts a calibration lasting :attr:`calibration_s`;
after it an auto mode is locked. The modulator is an ideal MZM with half-wave voltage
:attr:`v_pi` and bias offset :attr:`v_offset`: the auto modes lock at the bias of their working
point, the tap power follows ``P_in cos^2(pi (V - V_off) / (2 V_pi))``.

:meth:`ThorlabsMbxEmulator.working_point_v` is the bias of the present mode (what a virtual lab
applies to its modulator).

Physics hook quantities: ``"input_power_mw"`` (optical power into the modulator, default 1 mW),
``"bias_voltage_v"`` (overrides the bias the controller applies), ``"tap_power_mw"``.
"""

from __future__ import annotations

import math
import re
import time
from typing import Any

from drivers.emulators.serial_transport import MeasureHook, PtyEmulator
from drivers.thorlabs_mbx import AUTO_MODES, MzmMode

__all__ = ["ThorlabsMbxEmulator"]


# long form -> short-form length, per node (upper-case letters of the guide's spelling)
_NODES = {"MZM": 3, "MODE": 4, "HOLD": 4, "VOLTAGE": 1, "RATIO": 1, "SETPOINT": 3,
          "CALIBRATING": 3, "RESET": 5, "TAP": 3, "MW": 2, "DBM": 3, "DITHER": 1,
          "AMPLITUDE": 4, "FREQUENCY": 4, "SYSTEM": 3, "MODEL": 5, "SERIAL": 3,
          "FIRMWARE": 4}

_SETTING_RE = re.compile(r"^([A-Z:]+?):\s*([-+0-9.eE]+)$")


def _canonical(command: str) -> str | None:
    """Long form of a command path, or None when a node is not a valid short/long form."""
    out = []
    for node in command.upper().split(":"):
        for long, n in _NODES.items():
            if node == long or (node == long[:n] and len(node) >= n):
                out.append(long)
                break
        else:
            return None
    return ":".join(out)


class ThorlabsMbxEmulator(PtyEmulator):
    MODEL = "MBX"

    def __init__(self, *, measure: MeasureHook | None = None, v_pi: float = 5.0,
                 v_offset: float = 0.7, calibration_s: float = 0.2,
                 name: str | None = None) -> None:
        super().__init__(measure=measure, name=name)
        self.v_pi = v_pi
        self.v_offset = v_offset
        self.calibration_s = calibration_s
        self.mode = MzmMode.OFF
        self.hold_mv = 0
        self.ratio = 1000
        self.dither_mv = 200
        self.dither_hz = 2000
        self.cal_until = 0.0
        self.serial = "M00999999"
        self.firmware = "1.9.4"
        self._buf = bytearray()
        self.commands: list[str] = []

    # -- model --------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {"mode": self.mode.name, "hold_voltage_v": self.hold_mv / 1000,
                "v_pi": self.v_pi, "v_offset": self.v_offset}

    def working_point_v(self) -> float:
        """Bias the controller applies in the current mode."""
        m, vpi, off = self.mode, self.v_pi, self.v_offset
        if m == MzmMode.OFF:
            return 0.0
        if m == MzmMode.MANUAL:
            return self.hold_mv / 1000
        if m == MzmMode.AUTO_PEAK:
            return off
        if m == MzmMode.AUTO_NULL:
            return off + vpi
        if m in (MzmMode.AUTO_QUAD_POS, MzmMode.HOLD_QUAD_POS):
            return off + vpi / 2
        if m in (MzmMode.AUTO_QUAD_NEG, MzmMode.HOLD_QUAD_NEG):
            return off - vpi / 2
        # power-ratio modes: transmission 1/ratio on the rising (+) or falling (-) slope
        t = min(1.0, 1.0 / (self.ratio / 100))
        phase = math.acos(math.sqrt(t)) * 2 * vpi / math.pi
        return off + phase if m == MzmMode.AUTO_POWER_POS else off - phase

    def bias_v(self) -> float:
        return self.measured("bias_voltage_v", self.working_point_v())

    def tap_mw(self) -> float:
        p_in = self.measured("input_power_mw", 1.0)
        v = self.bias_v()
        default = p_in * math.cos(math.pi * (v - self.v_offset) / (2 * self.v_pi)) ** 2
        return self.measured("tap_power_mw", default)

    def calibrating(self) -> bool:
        return time.monotonic() < self.cal_until

    def locked(self) -> bool:
        if self.calibrating():
            return False
        return self.mode in AUTO_MODES or self.mode in (MzmMode.HOLD_QUAD_POS,
                                                        MzmMode.HOLD_QUAD_NEG, MzmMode.MANUAL)

    # -- protocol -----------------------------------------------------------------------------

    def parse(self, data: bytes) -> list[Any]:
        self._buf += data
        out = []
        while True:
            idx = [i for i in (self._buf.find(b"\r"), self._buf.find(b"\n")) if i >= 0]
            if not idx:
                break
            i = min(idx)
            line = bytes(self._buf[:i]).strip()
            del self._buf[: i + 1]
            if line:
                out.append(line.decode("ascii", "replace"))
        return out

    def _on_hangup(self) -> None:
        self._buf.clear()

    def nack_reply(self, request: Any) -> bytes | None:
        return b"0\n"

    def handle(self, request: Any) -> bytes | None:
        text: str = request
        self.commands.append(text)
        if text.endswith("?"):
            path = _canonical(text[:-1])
            value = self._query(path) if path else None
            return b"0\n" if value is None else f"{value}\n".encode("ascii")
        m = _SETTING_RE.match(text.upper())
        if m:
            path = _canonical(m.group(1))
            ok = path is not None and self._set(path, m.group(2))
            return b"1\n" if ok else b"0\n"
        path = _canonical(text)
        if path == "MZM:RESET":
            self.cal_until = time.monotonic() + self.calibration_s
            return b"1\n"
        return b"0\n"

    def _query(self, path: str) -> str | None:
        q = {
            "MZM:MODE": lambda: str(int(self.mode)),
            "MZM:HOLD:VOLTAGE": lambda: str(self.hold_mv),
            "MZM:HOLD:RATIO": lambda: str(self.ratio),
            "MZM:VOLTAGE": lambda: f"{self.bias_v():.3f}",
            "MZM:SETPOINT": lambda: "1" if self.locked() else "0",
            "MZM:CALIBRATING": lambda: "1" if self.calibrating() else "0",
            "MZM:TAP:MW": lambda: f"{self.tap_mw():.4f}",
            "MZM:TAP:DBM": lambda: (f"{10 * math.log10(self.tap_mw()):.2f}"
                                    if self.tap_mw() > 0 else "-99.00"),
            "MZM:DITHER:AMPLITUDE": lambda: str(self.dither_mv),
            "MZM:DITHER:FREQUENCY": lambda: str(self.dither_hz),
            "SYSTEM:MODEL": lambda: self.MODEL,
            "SYSTEM:SERIAL": lambda: self.serial,
            "SYSTEM:FIRMWARE": lambda: self.firmware,
        }
        fn = q.get(path)
        return None if fn is None else fn()

    def _set(self, path: str, arg: str) -> bool:
        try:
            value = float(arg)
        except ValueError:
            return False
        ints = {"MZM:MODE": (0, 9), "MZM:HOLD:VOLTAGE": (-10000, 10000),
                "MZM:HOLD:RATIO": (250, 10000), "MZM:DITHER:AMPLITUDE": (20, 2000),
                "MZM:DITHER:FREQUENCY": (1000, 10000)}
        if path not in ints or not value.is_integer():
            return False
        lo, hi = ints[path]
        v = int(value)
        if not lo <= v <= hi:
            return False
        if path == "MZM:MODE":
            self.mode = MzmMode(v)
            if self.mode in AUTO_MODES:
                self.cal_until = time.monotonic() + self.calibration_s
        elif path == "MZM:HOLD:VOLTAGE":
            self.hold_mv = v
        elif path == "MZM:HOLD:RATIO":
            self.ratio = v
        elif path == "MZM:DITHER:AMPLITUDE":
            self.dither_mv = v
        else:
            self.dither_hz = v
        return True
