"""Emulated Agiltron FF 1xN switch with the CL-LB driver (frames of :mod:`drivers.agiltron_switch`).

Behaviour: 4-byte frames; a partial frame is discarded after an inter-byte gap of
:attr:`frame_gap_s` (how the board regains frame sync), and bytes that cannot start a frame
(not 0x01) are skipped. A read answers ``01 11 00 <ch>``; a valid selection switches after
:attr:`switch_time_s` and echoes the frame. An unknown command or a channel outside 1..N gets
no answer (assumed: the command list documents no error reply).

Physics hook: none needed; :attr:`channel` is the state the virtual lab routes light by.
"""

from __future__ import annotations

import time
from typing import Any

from drivers.agiltron_switch import CMD_READ, CMD_SELECT, FRAME_LEN, HEADER
from drivers.emulators.serial_transport import MeasureHook, PtyEmulator

__all__ = ["AgiltronSwitchEmulator"]


class AgiltronSwitchEmulator(PtyEmulator):
    MODEL = "Agiltron FF 1xN (emulated)"

    def __init__(self, *, channels: int = 4, measure: MeasureHook | None = None,
                 switch_time_s: float = 0.005, frame_gap_s: float = 0.05,
                 name: str | None = None) -> None:
        super().__init__(measure=measure, name=name)
        self.n_channels = channels
        self.channel = 1
        self.switch_time_s = switch_time_s
        self.frame_gap_s = frame_gap_s
        self.switch_count = 0
        self._buf = bytearray()
        self._last = 0.0

    def state(self) -> dict[str, Any]:
        return {"channel": self.channel}

    def parse(self, data: bytes) -> list[Any]:
        now = time.monotonic()
        if self._buf and now - self._last > self.frame_gap_s:
            self._buf.clear()
        self._last = now
        self._buf += data
        frames = []
        while self._buf:
            if self._buf[0] != HEADER:
                del self._buf[0]
                continue
            if len(self._buf) < FRAME_LEN:
                break
            frames.append(bytes(self._buf[:FRAME_LEN]))
            del self._buf[:FRAME_LEN]
        return frames

    def _on_hangup(self) -> None:
        self._buf.clear()

    def handle(self, request: Any) -> bytes | None:
        req: bytes = request
        if req[2] != 0x00:
            return None
        if req[1] == CMD_READ and req[3] == 0x00:
            return bytes((HEADER, CMD_READ, 0x00, self.channel))
        if req[1] == CMD_SELECT and 1 <= req[3] <= self.n_channels:
            if self.switch_time_s:
                time.sleep(self.switch_time_s)
            if req[3] != self.channel:
                self.switch_count += 1
            self.channel = req[3]
            return req
        return None
