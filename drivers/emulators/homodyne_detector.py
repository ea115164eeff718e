"""Emulated balanced homodyne detector speaking BHD-CTRL v1 (see :mod:`drivers.homodyne_detector`).

Behaviour: requests with a bad checksum get ``ERR,4``; unknown commands ``ERR,1``; bad or
out-of-range arguments ``ERR,2``; the DC monitor while disabled ``ERR,3``. Faults: NACK answers
``ERR,2``, BUSY answers ``BUSY``, BAD_CHECKSUM corrupts the reply checksum.

Physics hook quantities (default without a hook): ``"pd1_current_ua"`` (500.0 while enabled),
``"pd2_current_ua"`` (490.0 while enabled), ``"temperature_c"`` (31.5). The state passed to the
hook has ``enabled`` and ``gain_v_per_a``.
"""

from __future__ import annotations

from typing import Any

from drivers.emulators.serial_transport import MeasureHook, PtyEmulator
from drivers.homodyne_detector import GAIN_V_PER_A, checksum, encode

__all__ = ["HomodyneDetectorEmulator"]


class HomodyneDetectorEmulator(PtyEmulator):
    MODEL = "BHD-1"

    def __init__(self, *, measure: MeasureHook | None = None, serial: str = "SN0042",
                 name: str | None = None) -> None:
        super().__init__(measure=measure, name=name)
        self.serial = serial
        self.gain = 1
        self.enabled = False
        self._buf = bytearray()

    def state(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "gain_step": self.gain,
                "gain_v_per_a": GAIN_V_PER_A[self.gain]}

    def parse(self, data: bytes) -> list[Any]:
        self._buf += data
        out = []
        while True:
            i = self._buf.find(b"\n")
            if i < 0:
                if len(self._buf) > 256:  # no terminator in sight: noise
                    self._buf.clear()
                break
            line = bytes(self._buf[:i]).strip(b"\r")
            del self._buf[: i + 1]
            start = line.rfind(b"$")  # noise before the start character is dropped
            if start >= 0:
                out.append(line[start:])
        return out

    def _on_hangup(self) -> None:
        self._buf.clear()

    @staticmethod
    def _body(request: bytes) -> tuple[str, bool]:
        """(body, checksum ok) of ``$BODY*CS``."""
        if len(request) < 4 or request[-3:-2] != b"*":
            return "", False
        body = request[1:-3]
        try:
            ok = int(request[-2:], 16) == checksum(body)
        except ValueError:
            ok = False
        return body.decode("ascii", "replace"), ok

    def handle(self, request: Any) -> bytes | None:
        body, ok = self._body(request)
        fields = body.split(",")
        cmd = fields[0]
        if not ok:
            return encode(f"ERR,4,{cmd}", b"!")
        args = fields[1:]

        def err(code: int) -> bytes:
            return encode(f"ERR,{code},{cmd}", b"!")

        if cmd == "IDN" and not args:
            return encode(f"IDN,QKD-HW,{self.MODEL},{self.serial},1.0.3", b"!")
        if cmd == "GAIN":
            if not args:
                return encode(f"GAIN,{self.gain}", b"!")
            if len(args) == 1 and args[0].isdigit() and int(args[0]) < len(GAIN_V_PER_A):
                self.gain = int(args[0])
                return encode(f"GAIN,{self.gain}", b"!")
            return err(2)
        if cmd == "EN":
            if not args:
                return encode(f"EN,{int(self.enabled)}", b"!")
            if args in (["0"], ["1"]):
                self.enabled = args[0] == "1"
                return encode(f"EN,{int(self.enabled)}", b"!")
            return err(2)
        if cmd == "DC":
            if args not in (["1"], ["2"]):
                return err(2)
            if not self.enabled:
                return err(3)
            default = 500.0 if args[0] == "1" else 490.0
            ua = self.measured(f"pd{args[0]}_current_ua", default)
            return encode(f"DC,{args[0]},{ua:.3f}", b"!")
        if cmd == "TEMP" and not args:
            return encode(f"TEMP,{self.measured('temperature_c', 31.5):.2f}", b"!")
        return err(1)

    def nack_reply(self, request: Any) -> bytes | None:
        body, _ = self._body(request)
        return encode(f"ERR,2,{body.split(',')[0]}", b"!")

    def busy_reply(self, request: Any) -> bytes | None:
        body, _ = self._body(request)
        return encode(f"BUSY,{body.split(',')[0]}", b"!")

    def corrupt_checksum(self, reply: bytes) -> bytes:
        cs = int(reply[-4:-2], 16) ^ 0x5A
        return reply[:-4] + f"{cs:02X}".encode("ascii") + b"\r\n"
