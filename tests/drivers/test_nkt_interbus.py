"""Interbus codec at byte level: CRC, escaping, framing, against independent references."""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.base import quantise_inside
from drivers.nkt_interbus import (
    FrameSplitter,
    MessageType,
    Telegram,
    crc16_ccitt,
    decode,
    escape,
    pack_value,
    unescape,
    unpack_value,
)
from qkd_hw.errors import LimitError, ProtocolError
from qkd_hw.labconfig import Interval


def crc_bitwise(data: bytes) -> int:
    """Naive reference: long division by x^16 + x^12 + x^5 + 1, MSB first, register 0."""
    reg = 0
    for byte in data:
        for bit in range(7, -1, -1):
            top = (reg >> 15) & 1
            reg = ((reg << 1) & 0xFFFF) | ((byte >> bit) & 1)
            if top:
                reg ^= 0x1021
    # augment with 16 zero bits (the "pure" polynomial division form)
    for _ in range(16):
        top = (reg >> 15) & 1
        reg = (reg << 1) & 0xFFFF
        if top:
            reg ^= 0x1021
    return reg


def frame_reference(dest: int, src: int, mtype: int, reg: int, data: bytes) -> bytes:
    """Independent encoder: message, CRC big-endian, escape 0x0A 0x0D 0x5E, SOT/EOT."""
    msg = bytes([dest, src, mtype, reg]) + data
    msg += crc_bitwise(msg).to_bytes(2, "big")
    body = b"".join(bytes([0x5E, b + 0x40]) if b in (0x0A, 0x0D, 0x5E) else bytes([b])
                    for b in msg)
    return b"\x0d" + body + b"\x0a"


def test_crc_check_value():
    # CRC-16/XMODEM catalogue check value (poly 0x1021, init 0, no reflection, no xorout)
    assert crc16_ccitt(b"123456789") == 0x31C3
    assert crc_bitwise(b"123456789") == 0x31C3


@given(st.binary(max_size=300))
def test_crc_matches_bitwise_reference(data):
    assert crc16_ccitt(data) == crc_bitwise(data)
    # appending the CRC big-endian gives remainder 0 (the receiver's check)
    assert crc16_ccitt(data + crc16_ccitt(data).to_bytes(2, "big")) == 0


# Request/response pairs of QMI's NKT tests (tests/instruments/nkt_photonics/test_adjustik.py)
QMI_EXAMPLES = [
    # read register 0x32 of module 1 from host 0xA1
    (Telegram(0x01, 0xA1, MessageType.READ, 0x32), "0d 01 a1 04 32 26 cd 0a"),
    # datagram: register 0x32 = uint32 10644000
    (Telegram(0xA1, 0x01, MessageType.DATAGRAM, 0x32, (10644000).to_bytes(4, "little")),
     "0d a1 01 08 32 20 6a a2 00 2c 8c 0a"),
    # write register 0x2A = int16 840
    (Telegram(0x01, 0xA1, MessageType.WRITE, 0x2A, (840).to_bytes(2, "little")),
     "0d 01 a1 05 2a 48 03 8c d1 0a"),
    (Telegram(0xA1, 0x01, MessageType.ACK, 0x2A), "0d a1 01 03 2a 7b 89 0a"),
    (Telegram(0xA1, 0x01, MessageType.NACK, 0x32), "0d a1 01 00 32 bd e3 0a"),
    (Telegram(0x01, 0xA2, MessageType.READ, 0x2A), "0d 01 a2 04 2a ec a4 0a"),
    (Telegram(0xA2, 0x01, MessageType.DATAGRAM, 0x2A, (740).to_bytes(2, "little")),
     "0d a2 01 08 2a e4 02 f8 c9 0a"),
]


@pytest.mark.parametrize(("telegram", "wire"), QMI_EXAMPLES)
def test_published_examples(telegram, wire):
    raw = bytes.fromhex(wire)
    assert telegram.encode() == raw
    assert decode(raw) == telegram


def test_escaping_worked_example():
    # Module address 0x0A (= EOT) and data 0x0D 0x5E: all three special bytes escaped.
    t = Telegram(0x0A, 0xA2, MessageType.WRITE, 0x30, b"\x0d\x5e\x01")
    wire = t.encode()
    assert wire[:3] == b"\x0d\x5e\x4a"  # SOT, escaped 0x0A
    assert wire[3:9] == b"\xa2\x05\x30\x5e\x4d\x5e"  # ..., escaped 0x0D, SOE of 0x5E
    assert wire[9:11] == b"\x9e\x01"  # 0x5E + 0x40, then 0x01
    assert wire == frame_reference(0x0A, 0xA2, 5, 0x30, b"\x0d\x5e\x01")
    assert decode(wire) == t


def test_escaping_of_crc_bytes():
    # find data whose CRC holds special bytes (reference CRC, not the code under test)
    rng = random.Random(1)
    found = set()
    while len(found) < 3:
        data = bytes(rng.randrange(256) for _ in range(3))
        crc = crc_bitwise(bytes([1, 0xA1, 5, 0x22]) + data).to_bytes(2, "big")
        special = {b for b in crc if b in (0x0A, 0x0D, 0x5E)}
        if not special or special <= found:
            continue
        found |= special
        t = Telegram(1, 0xA1, MessageType.WRITE, 0x22, data)
        assert t.encode() == frame_reference(1, 0xA1, 5, 0x22, data)
        assert decode(t.encode()) == t


@given(dest=st.integers(1, 160), src=st.integers(161, 255), mtype=st.sampled_from(MessageType),
       reg=st.integers(0, 255), data=st.binary(max_size=240))
def test_roundtrip_and_no_special_bytes_inside(dest, src, mtype, reg, data):
    t = Telegram(dest, src, mtype, reg, data)
    wire = t.encode()
    assert wire == frame_reference(dest, src, int(mtype), reg, data)
    assert 0x0D not in wire[1:-1] and 0x0A not in wire[1:-1]
    assert decode(wire) == t


def test_decode_rejects_bad_crc_with_raw_reply():
    wire = bytearray(QMI_EXAMPLES[1][0].encode())
    wire[6] ^= 0x01
    with pytest.raises(ProtocolError, match="CRC") as info:
        decode(bytes(wire))
    assert info.value.reply == bytes(wire)


@pytest.mark.parametrize("wire", [b"", b"\x0d\x0a", b"\x01\xa1\x04\x32\x26\xcd\x0a",
                                  b"\x0d\x01\xa1\x04\x32\x26\xcd", b"\x0d\x01\x5e\x0a",
                                  b"\x0d\x01\x5e\x41\xa1\x04\x32\x26\xcd\x0a"])
def test_decode_rejects_malformed(wire):
    with pytest.raises(ProtocolError):
        decode(wire)


def test_unescape_inverse_of_escape():
    data = bytes(range(256))
    assert unescape(escape(data)) == data


def test_frame_splitter_drops_noise_and_joins_chunks():
    a = QMI_EXAMPLES[0][0].encode()
    b = QMI_EXAMPLES[1][0].encode()
    stream = b"\xff\x00" + a[:3] + b"\x0d" + a[1:] + b"junk" + b
    splitter = FrameSplitter()
    frames = []
    for i in range(0, len(stream), 3):
        frames += splitter.feed(stream[i:i + 3])
    assert frames == [a, b]
    assert splitter.dropped == 2 + 3 + 4


def test_telegram_validation():
    with pytest.raises(ValueError):
        Telegram(256, 0xA1, MessageType.READ, 0)
    with pytest.raises(ValueError):
        Telegram(1, 0xA1, MessageType.WRITE, 0, bytes(241))


def test_pack_unpack_little_endian():
    assert pack_value("u16", 1234) == b"\xd2\x04"
    assert pack_value("i16", -1) == b"\xff\xff"
    assert unpack_value("i32", b"\xfe\xff\xff\xff") == -2
    with pytest.raises(ValueError):
        pack_value("u8", 256)
    with pytest.raises(ProtocolError, match="needs 2"):
        unpack_value("u16", b"\x01", register=0x22)


@given(st.binary(max_size=64))
def test_decode_of_random_bytes_raises_only_protocol_error(junk):
    for frame in [*FrameSplitter().feed(junk), junk, b"\x0d" + junk + b"\x0a"]:
        with contextlib.suppress(ProtocolError):
            decode(frame)


def _limit_check(interval: Interval):
    def check(value: float, what: str) -> None:
        if value not in interval:
            raise LimitError(f"{what} = {value!r} outside {interval}")
    return check


@pytest.mark.parametrize(("value", "scale", "interval", "count"), [
    (10.006, 0.01, Interval(None, 10.006), 1000),  # nearest 1001 beyond the limit: inward
    (-10.006, 0.01, Interval(-10.006, None), -1000),
    (10.004, 0.01, Interval(None, 10.006), 1000),  # nearest inside: kept
    (10.006, 0.01, Interval(None, 10.016), 1001),
    (10.006, 0.01, Interval(None, None), 1001),
    (0.3, 0.1, Interval(None, 0.3), 3),  # 3 x 0.1 is not above 0.3: no spurious step down
    (0.7, 0.1, Interval(0.7, None), 7),
    (1.0007, 0.001, Interval(None, 1.0007), 1000),
    (1550.1201, 1.0, Interval(None, 1550.1201), 1550),
])
def test_quantise_inside_sends_a_step_inside_the_limit(value, scale, interval, count):
    assert quantise_inside(value, scale, _limit_check(interval), "x") == count


def test_quantise_inside_refuses_a_limit_between_two_steps():
    with pytest.raises(LimitError, match=r"x = 10\.01? outside"):
        quantise_inside(10.005, 0.01, _limit_check(Interval(10.002, 10.008)), "x")
