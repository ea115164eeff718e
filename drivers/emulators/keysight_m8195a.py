"""Emulator of the Keysight M8195A AWG (commands: see drivers/keysight_m8195a.py).

State: sample rate, DAC/function mode, per channel amplitude/offset/output relay, segments
(int8 codes) and the selected segment, running flag. A virtual lab calls
:meth:`M8195AEmulator.output_volts` (or :meth:`M8195AEmulator.output_codes`, cheaper for long
segments; ``memory_version`` counts changes of segment memory) to get what a channel emits
(None when stopped or the relay is open). Segment handling follows the manual: definitions
only while stopped (-221), data beyond the defined length is -223, lengths must respect the
granularity (-224).
"""

from __future__ import annotations

import numpy as np

from drivers.emulators.scpi_server import BlockReply, ScpiEmulator, ScpiError, command

__all__ = ["M8195AEmulator"]

GRANULARITY = 256
MIN_SEGMENT = 1280


class M8195AEmulator(ScpiEmulator):
    IDN = "Keysight Technologies,M8195A,MY55000123,4.0.0.0"
    N_CHANNELS = 4

    def reset(self) -> None:
        n = range(1, self.N_CHANNELS + 1)
        self.sample_rate = 64e9
        self.dac_mode = "SING"
        self.function_mode = "ARB"
        self.amplitude = dict.fromkeys(n, 0.5)
        self.offset = dict.fromkeys(n, 0.0)
        self.output = dict.fromkeys(n, False)
        self.segments: dict[int, dict[int, bytearray]] = {c: {} for c in n}
        self.selected = dict.fromkeys(n, 1)
        self.running = False
        self.memory_version = 0  # bumped by every change of segment memory

    def output_codes(self, ch: int) -> tuple[np.ndarray, float, float] | None:
        """What channel ``ch`` emits as ``(int8 codes of the playing segment (a copy),
        volts per code, offset volts)``, or None (stopped / relay open / no data). Cheaper
        than :meth:`output_volts` for long segments; ``memory_version`` changes whenever
        segment memory does, so a caller can cache what it derives from the codes."""
        if not (self.running and self.output[ch]):
            return None
        seg = self.segments[ch].get(self.selected[ch])
        if seg is None:
            return None
        codes = np.frombuffer(bytes(seg), dtype=np.int8)
        return codes, self.amplitude[ch] / 2 / 127.0, self.offset[ch]

    def output_volts(self, ch: int) -> np.ndarray | None:
        """Voltage samples channel ``ch`` emits, or None (stopped / relay open / no data)."""
        out = self.output_codes(ch)
        if out is None:
            return None
        codes, volts_per_code, offset = out
        return codes.astype(np.float64) * volts_per_code + offset

    def _ch(self, suffix: str) -> int:
        ch = int(suffix) if suffix else 1
        if not 1 <= ch <= self.N_CHANNELS:
            raise ScpiError(-113, f"channel {ch}")
        return ch

    @staticmethod
    def _ints(text: bytes, n: int) -> list[int]:
        parts = [p.strip() for p in text.decode("ascii", "replace").split(",") if p.strip()]
        if len(parts) != n:
            raise ScpiError(-109 if len(parts) < n else -108)
        try:
            return [int(p) for p in parts]
        except ValueError:
            raise ScpiError(-224, ",".join(parts)[:30]) from None

    @command(":FREQuency:RASTer")
    def _rast(self, args: bytes) -> None:
        self.sample_rate = self.number(args, lo=53.76e9, hi=65e9,
                                       units={"HZ": 1, "MHZ": 1e6, "GHZ": 1e9})

    @command(":FREQuency:RASTer?")
    def _rast_q(self, args: bytes) -> str:
        return f"{self.sample_rate:.10E}"

    @command(":INSTrument:DACMode")
    def _dacm(self, args: bytes) -> None:
        v = args.decode().strip().upper()
        allowed = {"SINGLE": "SING", "SING": "SING", "DUAL": "DUAL", "FOUR": "FOUR",
                   "MARKER": "MARK", "MARK": "MARK", "DCDUPLICATE": "DCD", "DCD": "DCD",
                   "DCMARKER": "DCM", "DCM": "DCM"}
        if v not in allowed:
            raise ScpiError(-224, v)
        self.dac_mode = allowed[v]

    @command(":INSTrument:DACMode?")
    def _dacm_q(self, args: bytes) -> str:
        return self.dac_mode

    @command(":FUNCtion:MODE")
    def _func(self, args: bytes) -> None:
        v = args.decode().strip().upper()
        allowed = {"ARBITRARY": "ARB", "ARB": "ARB", "STSEQUENCE": "STS", "STS": "STS",
                   "STSCENARIO": "STSC", "STSC": "STSC"}
        if v not in allowed:
            raise ScpiError(-224, v)
        if self.running:
            raise ScpiError(-221, "running")
        self.function_mode = allowed[v]

    @command(":FUNCtion:MODE?")
    def _func_q(self, args: bytes) -> str:
        return self.function_mode

    @command("[:SOURce]:VOLTage<n>[:LEVel][:IMMediate][:AMPLitude]")
    def _ampl(self, args: bytes, n: str) -> None:
        self.amplitude[self._ch(n)] = self.number(args, lo=0.075, hi=1.0,
                                                  units={"V": 1, "MV": 1e-3})

    @command("[:SOURce]:VOLTage<n>[:LEVel][:IMMediate][:AMPLitude]?")
    def _ampl_q(self, args: bytes, n: str) -> str:
        return f"{self.amplitude[self._ch(n)]:.6E}"

    @command("[:SOURce]:VOLTage<n>[:LEVel][:IMMediate]:OFFSet")
    def _offs(self, args: bytes, n: str) -> None:
        self.offset[self._ch(n)] = self.number(args, lo=-1.0, hi=1.0, units={"V": 1, "MV": 1e-3})

    @command("[:SOURce]:VOLTage<n>[:LEVel][:IMMediate]:OFFSet?")
    def _offs_q(self, args: bytes, n: str) -> str:
        return f"{self.offset[self._ch(n)]:.6E}"

    @command(":OUTPut<n>[:STATe]")
    def _outp(self, args: bytes, n: str) -> None:
        self.output[self._ch(n)] = self.boolean(args)

    @command(":OUTPut<n>[:STATe]?")
    def _outp_q(self, args: bytes, n: str) -> str:
        return "1" if self.output[self._ch(n)] else "0"

    @command(":TRACe<n>:DELete:ALL")
    def _del_all(self, args: bytes, n: str) -> None:
        if self.running:
            raise ScpiError(-221, "program mode only")
        self.segments[self._ch(n)].clear()
        self.memory_version += 1

    @command(":TRACe<n>:DELete")
    def _del(self, args: bytes, n: str) -> None:
        ch = self._ch(n)
        seg = self._ints(args, 1)[0]
        if self.running:
            raise ScpiError(-221, "program mode only")
        if seg not in self.segments[ch]:
            raise ScpiError(-224, f"segment {seg} undefined")
        del self.segments[ch][seg]
        self.memory_version += 1

    @command(":TRACe<n>:DEFine")
    def _def(self, args: bytes, n: str) -> None:
        ch = self._ch(n)
        parts = [p for p in args.split(b",") if p.strip()]
        if len(parts) not in (2, 3):
            raise ScpiError(-109)
        seg, length = self._ints(b",".join(parts[:2]), 2)
        init = self._ints(parts[2], 1)[0] if len(parts) == 3 else 0
        if self.running:
            raise ScpiError(-221, "program mode only")
        if length < MIN_SEGMENT or length % GRANULARITY:
            raise ScpiError(-224, f"length {length}")
        if not -128 <= init <= 127:
            raise ScpiError(-222, "init value")
        if seg in self.segments[ch]:
            raise ScpiError(-221, f"segment {seg} exists")
        self.segments[ch][seg] = bytearray(np.full(length, init, np.int8).tobytes())
        self.memory_version += 1

    @command(":TRACe<n>[:DATA]")
    def _data(self, args: bytes, n: str) -> None:
        ch = self._ch(n)
        head, data = self.block(args)
        seg, off = self._ints(head.rstrip(b", "), 2)
        mem = self.segments[ch].get(seg)
        if mem is None:
            raise ScpiError(-224, f"segment {seg} undefined")
        if off < 0 or off + len(data) > len(mem):
            raise ScpiError(-223)
        mem[off: off + len(data)] = data
        self.memory_version += 1

    @command(":TRACe<n>[:DATA]?")
    def _data_q(self, args: bytes, n: str) -> BlockReply:
        ch = self._ch(n)
        seg, off, length = self._ints(args, 3)
        mem = self.segments[ch].get(seg)
        if mem is None:
            raise ScpiError(-224, f"segment {seg} undefined")
        if off < 0 or length < 0 or off + length > len(mem):
            raise ScpiError(-222)
        return BlockReply(memoryview(bytes(mem[off: off + length])))

    @command(":TRACe<n>:SELect")
    def _sel(self, args: bytes, n: str) -> None:
        ch = self._ch(n)
        seg = self._ints(args, 1)[0]
        if seg not in self.segments[ch]:
            raise ScpiError(-224, f"segment {seg} undefined")
        self.selected[ch] = seg

    @command(":TRACe<n>:SELect?")
    def _sel_q(self, args: bytes, n: str) -> str:
        return str(self.selected[self._ch(n)])

    @command(":TRACe<n>:CATalog?")
    def _cat(self, args: bytes, n: str) -> str:
        segs = self.segments[self._ch(n)]
        if not segs:
            return "0,0"
        return ",".join(f"{k},{len(v)}" for k, v in sorted(segs.items()))

    @command(":INITiate[:IMMediate]")
    def _init(self, args: bytes) -> None:
        self.running = True

    @command(":ABORt")
    def _abort(self, args: bytes) -> None:
        self.running = False
