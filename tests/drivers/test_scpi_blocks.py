"""IEEE 488.2 definite-length blocks and SCPI header matching, at the byte level.

read_block is exercised over a byte-stream Transport (the project's own abstraction, fed from
a buffer) for the edge cases; the emulator's program-message framing over a real socket with
blocks split at arbitrary TCP boundaries.
"""

from __future__ import annotations

import socket
import time

import pytest

from drivers.emulators.scpi_server import HeaderPattern, ScpiEmulator, command
from drivers.scpi import format_block, read_block
from drivers.transport import Transport
from qkd_hw.errors import IncompleteReplyError, InstrumentTimeoutError, ProtocolError
from tests.drivers.scpi_helpers import running


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
