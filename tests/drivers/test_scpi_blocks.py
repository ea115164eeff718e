"""IEEE 488.2 definite-length blocks and SCPI header matching, at the byte level.

read_block is exercised over a byte-stream Transport (the project's own abstraction, fed from
a buffer) for the edge cases; the emulator's program-message framing over a real socket with
blocks split at arbitrary TCP boundaries.
"""

from __future__ import annotations

import re
import socket
import time

import pytest

from drivers.emulators.scpi_server import HeaderPattern, ScpiEmulator, command
from drivers.scpi import ScpiInstrument, format_block, read_block
from drivers.transport import Transport
from qkd_hw.errors import (
    IncompleteReplyError,
    InstrumentReportedError,
    InstrumentTimeoutError,
    ProtocolError,
)
from tests.drivers.scpi_helpers import config, running


class BufferTransport(Transport):
    """Serves bytes from a buffer; running dry is a timeout (as a stalled link would be)."""

    def __init__(self, data: bytes) -> None:
        super().__init__(timeout_s=0.1)
        self.data = bytearray(data)

    description = "buffer"  # type: ignore[assignment]
    is_open = True  # type: ignore[assignment]

    def open(self) -> None: ...
    def close(self) -> None: ...
    def write(self, data: bytes) -> None: ...

    def read_line(self) -> bytes:
        raise NotImplementedError

    def read_exact(self, n: int) -> bytes:
        if len(self.data) < n:
            got = bytes(self.data)
            self.data.clear()
            raise self._error(f"timeout with {len(got)} of {n} bytes", timeout=True, reply=got)
        out = bytes(self.data[:n])
        del self.data[:n]
        return out


@pytest.mark.parametrize(
    ("payload", "header"),
    [(b"", b"#10"), (b"x", b"#11"), (b"\n" * 9, b"#19"), (b"a" * 10, b"#210"),
     (bytes(range(256)) * 4, b"#41024")],
)
def test_format_and_parse_round_trip(payload, header):
    assert format_block(payload) == header
    t = BufferTransport(header + payload + b"\n")
    assert read_block(t) == payload
    assert t.data == b""  # terminator consumed, nothing more


def test_crlf_terminator_accepted_and_no_terminator_mode():
    assert read_block(BufferTransport(b"#13abc\r\n")) == b"abc"
    t = BufferTransport(b"#13abcNEXT")
    assert read_block(t, expect_terminator=False) == b"abc"
    assert t.data == b"NEXT"


@pytest.mark.parametrize(
    ("raw", "match", "reply"),
    [
        (b"+1.0E+00\n", "not an IEEE 488.2 binary block", b"+1"),
        (b"#A12\n", "not an IEEE 488.2 binary block", b"#A"),
        (b"#0abc\n", "indefinite-length", b"#0"),
        (b"#3a00xyz\n", "bad length field", b"#3a00"),
        (b"#15abcdeX", "extra bytes after a 5-byte binary block", b"Xabcde"),
    ],
)
def test_bad_blocks_are_protocol_errors_with_raw_bytes(raw, match, reply):
    with pytest.raises(ProtocolError, match=match) as ei:
        read_block(BufferTransport(raw))
    assert ei.value.reply == reply


def test_short_block_is_a_protocol_error_with_header_and_received_bytes():
    with pytest.raises(IncompleteReplyError, match="short binary block: expected 10") as ei:
        read_block(BufferTransport(b"#210abc"))
    assert isinstance(ei.value, ProtocolError) and isinstance(ei.value, InstrumentTimeoutError)
    assert ei.value.reply == b"#210abc"


def test_missing_terminator_is_incomplete_reply():
    with pytest.raises(IncompleteReplyError, match="no message terminator after the 3-byte"):
        read_block(BufferTransport(b"#13abc"))


def test_max_bytes_checked_from_the_header():
    with pytest.raises(ProtocolError, match="exceeds the expected 8"):
        read_block(BufferTransport(b"#9000000009"), max_bytes=8)


def test_format_block_refuses_more_than_nine_digits():
    class Huge:
        def __len__(self) -> int:
            return 1_000_000_000

    with pytest.raises(ValueError, match="9-digit"):
        format_block(Huge())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("spec", "header", "expected"),
    [
        ("[SENSe]:CORRection:WAVelength?", "SENS:CORR:WAV?", ()),
        ("[SENSe]:CORRection:WAVelength?", ":sense:correction:wavelength?", ()),
        ("[SENSe]:CORRection:WAVelength?", "CORR:WAV?", ()),
        ("[SENSe]:CORRection:WAVelength?", "SENS:CORR:WAV", None),  # not a query
        ("[SENSe]:CORRection:WAVelength?", "SENS:CORRE:WAV?", None),  # neither form
        ("[:SOURce]:VOLTage<n>[:LEVel][:IMMediate][:AMPLitude]", ":VOLT2", ("2",)),
        ("[:SOURce]:VOLTage<n>[:LEVel][:IMMediate][:AMPLitude]", "SOUR:VOLT:AMPL", ("",)),
        ("INPut<n>[:CHANnel<n>]:ATTenuation?", "INP3:CHAN2:ATT?", ("3", "2")),
        ("*IDN?", "*idn?", ()),
    ],
)
def test_header_patterns(spec, header, expected):
    assert HeaderPattern(spec).match(header) == expected


class EchoEmulator(ScpiEmulator):
    IDN = "Test,Echo,1,1"

    def reset(self) -> None:
        self.blocks: list[bytes] = []

    @command("DATA")
    def _data(self, args: bytes) -> None:
        self.blocks.append(self.block(args)[1])


def test_emulator_framing_with_newlines_inside_blocks_and_split_writes():
    """Blocks full of b'\\n' and b'#', sent in 1..7-byte pieces, arrive intact."""
    payloads = [b"\n\n#3\n", bytes(range(256)), b"", b"#1\n" * 50]
    stream = b"".join(b"DATA " + format_block(p) + p + b"\n" for p in payloads) + b"*IDN?\n"
    with running(EchoEmulator()) as emu:
        with socket.create_connection(("127.0.0.1", emu.port), timeout=2) as s:
            i, step = 0, 1
            while i < len(stream):
                s.sendall(stream[i: i + step])
                i += step
                step = step % 7 + 1
            assert s.recv(100) == b"Test,Echo,1,1\n"
        deadline = time.monotonic() + 2
        while len(emu.blocks) < len(payloads) and time.monotonic() < deadline:
            time.sleep(0.01)
    assert emu.blocks == payloads


def test_emulator_stop_releases_port_and_threads_with_a_client_connected():
    emu = EchoEmulator()
    with running(emu):
        port = emu.port
        client = socket.create_connection(("127.0.0.1", port), timeout=2)
        client.sendall(b"*IDN?\n")
        assert client.recv(100) == b"Test,Echo,1,1\n"
    # stopped with the client still connected: its connection was closed ...
    client.settimeout(2)
    assert client.recv(10) == b""
    client.close()
    # ... and nobody listens on the port any more
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2)


# ----------------------------------------------------------------------------- SCPI numbers


@pytest.mark.parametrize(
    ("text", "value"),
    [("+1.55000000E-006", 1.55e-6), ("12", 12.0), ("3.5", 3.5), ("-.5", -0.5), ("1.", 1.0),
     (" +1.0E+01\r", 10.0), ("-0", 0.0), ("1e3", 1000.0)],
)
def test_parse_float_accepts_nr1_nr2_nr3(text, value):
    from drivers.scpi import parse_float

    assert parse_float(text) == value


@pytest.mark.parametrize(
    "text",
    ["nan", "NaN", "inf", "-Infinity", "1_5", "0x10", "1e999", "", " ", "1.0E", "1,5", "+-1",
     "1.5.5", "1 5", "\u0661", "e5", ".", "1e+"],
)
def test_parse_float_rejects_what_no_scpi_instrument_sends(text):
    from drivers.scpi import parse_float

    with pytest.raises(ValueError, match=re.escape(repr(text))):
        parse_float(text)


@pytest.mark.parametrize(
    ("text", "name"),
    [("9.91E37", "NaN"), ("+9.91000000E+037", "NaN"), ("9.9E37", "+INF"), ("-9.9E+37", "-INF"),
     ("9.99999E+37", "invalid")],
)
def test_scpi_special_values_are_invalid_unless_allowed(text, name):
    import math

    from drivers.scpi import ScpiSpecialValueError, parse_float, parse_int

    with pytest.raises(ScpiSpecialValueError, match=re.escape(name)):
        parse_float(text)
    with pytest.raises(ValueError):
        parse_int(text)
    allowed = parse_float(text, allow_special=True)
    expected = {"NaN": math.nan, "+INF": math.inf, "-INF": -math.inf, "invalid": math.nan}[name]
    assert (math.isnan(allowed) and math.isnan(expected)) or allowed == expected


def test_parse_int_is_strict_too():
    from drivers.scpi import parse_int

    assert parse_int("+12") == 12 and parse_int("+1.0E+01") == 10
    assert parse_int("12345678901234567890") == 12345678901234567890  # NR1: no float rounding
    for bad in ("1_0", "nan", "1.5", "inf", "0x1", "", "1e999"):
        with pytest.raises(ValueError):
            parse_int(bad)


# ----------------------------------------------------------------------------- error queue


class Generic(ScpiInstrument):
    MODEL = "generic SCPI instrument"


def generic(emu, **kw) -> Generic:
    kw.setdefault("timeout_s", 0.3)
    kw.setdefault("retries", 2)
    return Generic(config("gen", "scpi", emu.resource, **kw))


def test_lost_error_queue_reply_is_never_reported_as_no_error():
    """SYST:ERR? pops the queue: a late reply must not be retried into '0,No error'."""
    with running(EchoEmulator()) as emu, generic(emu) as inst:
        emu.clear_received()
        emu.push_error('-222,"Data out of range"')
        emu.inject("delay", match=r"SYST:ERR\?", seconds=0.5)
        with pytest.raises(InstrumentTimeoutError, match="error-queue state unknown") as ei:
            inst.check_errors("after VOLT 5")
        assert "after VOLT 5" in ei.value.message
        assert ei.value.command == "SYST:ERR?" and ei.value.instrument == "gen"
        assert emu.received == [b"SYST:ERR?"]  # sent once, never resent
        assert list(emu.errors) == []  # the entry went out with the lost reply


def test_garbled_error_queue_reply_is_unknown_state_with_the_raw_bytes():
    with running(EchoEmulator()) as emu, generic(emu) as inst:
        emu.clear_received()
        emu.inject("garble", match=r"SYST:ERR\?", payload=b"-2\xff22,\"Da")
        with pytest.raises(ProtocolError, match="error-queue state unknown") as ei:
            inst.read_error_queue()
        assert ei.value.reply == b"-2\xff22,\"Da"
        assert emu.received == [b"SYST:ERR?"]
        # the link recovers: the next read of the (now empty) queue is clean
        assert inst.read_error_queue() == []


class LossyQueueEmulator(EchoEmulator):
    """Drops the reply that carries the entry ``lose`` (after popping it)."""

    lose = "-224"

    @command("SYSTem:ERRor[:NEXT]?")
    def _syst_err(self, args: bytes) -> str:
        entry = self.errors.popleft() if self.errors else '0,"No error"'
        if entry.startswith(self.lose):
            self.inject("drop", match=r"SYST:ERR\?")
        return entry


def test_entries_read_before_a_lost_reply_are_still_reported():
    with running(LossyQueueEmulator()) as emu, generic(emu) as inst:
        emu.clear_received()
        emu.push_error('-100,"Command error"')
        emu.push_error('-224,"Illegal parameter value"')
        with pytest.raises(InstrumentReportedError, match="further entries unknown") as ei:
            inst.check_errors("after X")
        assert ei.value.errors == ('-100,"Command error"',)
        assert isinstance(ei.value.__cause__, InstrumentTimeoutError)
        assert emu.received == [b"SYST:ERR?", b"SYST:ERR?"]


def test_error_queue_reply_lost_while_draining_is_unknown_state_naming_what_was_read():
    with running(LossyQueueEmulator()) as emu, generic(emu) as inst:
        emu.push_error('-100,"Command error"')
        emu.push_error('-224,"Illegal parameter value"')
        with pytest.raises(InstrumentTimeoutError, match="error-queue state unknown") as ei:
            inst.read_error_queue()
        assert '-100,"Command error"' in ei.value.message


def test_special_value_reply_is_reported_not_retried_and_garbage_is_a_protocol_error():
    from drivers.scpi import parse_float

    with running(EchoEmulator()) as emu, generic(emu) as inst:
        emu.clear_received()
        emu.inject("garble", match=r"\*IDN\?", payload=b"9.91E+37")
        with pytest.raises(InstrumentReportedError, match="special value") as ei:
            inst.query_value("*IDN?", parse_float)
        assert ei.value.reply == "9.91E+37" and ei.value.command == "*IDN?"
        assert emu.received == [b"*IDN?"]  # a valid answer: not retried
        emu.inject("garble", match=r"\*IDN\?", payload=b"nan", count=3)
        with pytest.raises(ProtocolError, match="not a SCPI number") as ei2:
            inst.query_value("*IDN?", parse_float)
        assert ei2.value.reply == b"nan"
