"""Keysight M8195A AWG: bytes against the manual (segment define + definite-block upload +
*OPC?), round trips, chunked uploads with '\\n' bytes inside blocks, limits before any byte."""

from __future__ import annotations

import os
import signal
import threading

import numpy as np
import pytest

from drivers.emulators.keysight_m8195a import M8195AEmulator
from drivers.keysight_m8195a import KeysightM8195A
from qkd_hw.errors import (
    InstrumentReportedError,
    InstrumentStateError,
    LimitError,
    ProtocolError,
    QkdHwError,
)
from qkd_hw.labconfig import Limits
from tests.drivers.scpi_helpers import config, running, sent

ERR = b"SYST:ERR?"


@pytest.fixture
def pair():
    with running(M8195AEmulator()) as emu:
        awg = KeysightM8195A(config("awg", "keysight_m8195a", emu.resource, timeout_s=2.0,
                                    limits=Limits.of(amplitude_v=(None, 0.5),
                                                     offset_v=(-0.1, 0.1))))
        with awg:
            emu.clear_received()
            yield awg, emu


@pytest.mark.parametrize(
    ("target", "prop", "value", "set_bytes", "query_bytes", "check"),
    [
        ("awg", "sample_rate_hz", 60e9, b":FREQ:RAST 60000000000", b":FREQ:RAST?",
         lambda e: e.sample_rate == 60e9),
        ("awg", "dac_mode", "dual", b":INST:DACM DUAL", b":INST:DACM?",
         lambda e: e.dac_mode == "DUAL"),
        ("awg", "function_mode", "sequence", b":FUNC:MODE STS", b":FUNC:MODE?",
         lambda e: e.function_mode == "STS"),
        ("ch2", "amplitude_v", 0.35, b":VOLT2:AMPL 0.35", b":VOLT2:AMPL?",
         lambda e: e.amplitude[2] == 0.35),
        ("ch3", "offset_v", -0.05, b":VOLT3:OFFS -0.05", b":VOLT3:OFFS?",
         lambda e: e.offset[3] == -0.05),
        ("ch1", "output_enabled", True, b":OUTP1 1", b":OUTP1?", lambda e: e.output[1]),
    ],
)
def test_property_bytes_and_round_trip(pair, target, prop, value, set_bytes, query_bytes, check):
    awg, emu = pair
    obj = awg if target == "awg" else awg.channel(int(target[2:]))
    setattr(obj, prop, value)
    assert sent(emu) == [set_bytes, ERR]
    assert check(emu)
    emu.clear_received()
    got = getattr(obj, prop)
    assert got == pytest.approx(value) if isinstance(value, float) else got == value
    assert sent(emu) == [query_bytes]


def test_upload_bytes_follow_the_manual(pair):
    awg, emu = pair
    n = 1280
    # codes chosen to contain 0x0A ('\n') and '#' inside the blocks
    codes = (np.arange(n) % 256 - 128).astype(np.int8)
    awg.channel(1).upload(codes, segment=3, chunk_samples=512)
    raw = codes.view(np.uint8).tobytes()
    assert sent(emu) == [
        b":ABOR", ERR,
        b":TRAC1:DEL:ALL", ERR,
        b":TRAC1:DEF 3,1280", ERR,
        b":TRAC1:DATA 3,0,#3512" + raw[:512], ERR,
        b":TRAC1:DATA 3,512,#3512" + raw[512:1024], ERR,
        b":TRAC1:DATA 3,1024,#3256" + raw[1024:], ERR,
        b"*OPC?",
        b":TRAC1:SEL 3", ERR,
    ]
    assert bytes(emu.segments[1][3]) == raw
    assert emu.selected[1] == 3


def test_float_waveform_scaled_and_read_back(pair):
    awg, emu = pair
    x = np.sin(2 * np.pi * np.arange(256 * 40) / 37.0)
    ch = awg.channel(2)
    ch.upload(x, chunk_samples=4096, verify=True)
    want = np.rint(x * 127).astype(np.int8)
    assert np.array_equal(np.frombuffer(bytes(emu.segments[2][1]), np.int8), want)
    emu.clear_received()
    back = ch.read_segment(1, 256, 1024, chunk_samples=600)
    assert np.array_equal(back, want[256:1280])
    assert sent(emu) == [b":TRAC2:DATA? 1,256,600", b":TRAC2:DATA? 1,856,424"]
    assert ch.catalog() == {1: x.size}


def test_start_stop_and_output_for_the_virtual_lab(pair):
    awg, emu = pair
    ch = awg.channel(1)
    ch.upload(np.full(1280, 64, np.int8))
    ch.amplitude_v = 0.4
    assert emu.output_volts(1) is None  # stopped, relay open
    ch.output_enabled = True
    awg.start()
    assert emu.running
    assert np.allclose(emu.output_volts(1), 64 / 127 * 0.2)
    emu.clear_received()
    awg.outputs_off()
    assert not emu.running and not any(emu.output.values())
    assert sent(emu, skip_error_queries=True) == [b":ABOR", b":OUTP1 0", b":OUTP2 0",
                                                  b":OUTP3 0", b":OUTP4 0"]


@pytest.mark.parametrize(
    ("samples", "match"),
    [
        (np.zeros(1000, np.int8), "multiple of 256"),
        (np.zeros(1300, np.int8), "multiple of 256"),
        (np.full(1280, 1.5), r"\[-1, 1\]"),
        (np.full(1280, np.nan), "NaN"),
        (np.full(1280, 300, np.int16), "-128..127"),
        (np.zeros((2, 1280), np.int8), "1-D"),
    ],
)
def test_bad_waveforms_rejected_before_any_byte(pair, samples, match):
    awg, emu = pair
    with pytest.raises(LimitError, match=match):
        awg.channel(1).upload(samples)
    assert emu.rx_bytes == 0


@pytest.mark.parametrize(("prop", "value"), [("amplitude_v", 0.6), ("offset_v", 0.2),
                                             ("amplitude_v", 0.05)])
def test_lab_limits_before_any_byte(pair, prop, value):
    awg, emu = pair
    with pytest.raises(LimitError):
        setattr(awg.channel(1), prop, value)
    assert emu.rx_bytes == 0


def test_chunk_upload_survives_a_dropped_connection(pair):
    awg, emu = pair
    x = (np.arange(256 * 20) % 200 - 100).astype(np.int8)
    f = emu.inject("disconnect", match=r"^:TRAC1:DATA 1,1024,")
    awg.channel(1).upload(x, chunk_samples=1024)
    assert f.hits == 1
    assert np.array_equal(np.frombuffer(bytes(emu.segments[1][1]), np.int8), x)
    assert sum(m.startswith(b":TRAC1:DATA 1,1024,") for m in emu.received) == 2


def test_instrument_errors_surface(pair):
    awg, _emu = pair
    awg.start()
    # segment definitions are program-mode only: the instrument refuses while running
    with pytest.raises(InstrumentReportedError, match="-221"):
        awg.write(":TRAC1:DEF 1,1280")


# ----------------------------------------------------------------------------- catalog parsing


@pytest.mark.parametrize(
    ("payload", "match"),
    [(b"1,12#8", "segment catalog"), (b"1,1280,2", "odd number"), (b"1,nan", "segment catalog"),
     (b"1,-1280", "segment catalog"), (b"", "segment catalog"), (b"1,1_280", "segment catalog")],
)
def test_garbled_catalog_is_a_protocol_error_with_the_raw_reply(pair, payload, match):
    awg, emu = pair
    awg.config = awg.config.__class__(**{**awg.config.__dict__, "retries": 0})
    emu.inject("garble", match=r":TRAC1:CAT\?", payload=payload)
    with pytest.raises(ProtocolError, match=match) as ei:
        awg.channel(1).catalog()
    assert isinstance(ei.value, QkdHwError)
    assert ei.value.reply == payload and ei.value.command == ":TRAC1:CAT?"
    assert awg.channel(1).catalog() == {}  # "0,0": no segment; link in step


def test_garbled_catalog_is_retried(pair):
    awg, emu = pair
    awg.channel(1).upload(np.zeros(1280, np.int8), segment=2)
    f = emu.inject("garble", match=r":TRAC1:CAT\?", payload=b"2,12#8")
    assert awg.channel(1).catalog() == {2: 1280}
    assert f.hits == 1


# ----------------------------------------------------------------------------- Ctrl-C, nested


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="signals are delivered to the main thread only")
def test_ctrl_c_inside_an_outer_transaction_raises_from_upload_without_completing_it(pair):
    awg, emu = pair
    x = (np.arange(256 * 40) % 200 - 100).astype(np.int8)
    emu.reply_jitter_s = 0.05  # every SYST:ERR? answer late: 40 chunks take > 1 s
    finished = []
    timer = threading.Timer(0.3, os.kill, args=(os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt) as ei, awg.transaction():
        awg.channel(1).upload(x, segment=5, chunk_samples=256)
        finished.append(True)
    timer.join()
    emu.reply_jitter_s = 0.0
    assert finished == [] and ei.value.__context__ is None
    n_chunks = sum(m.startswith(b":TRAC1:DATA 5,") for m in emu.received)
    assert 1 <= n_chunks < 40
    assert b"*OPC?" not in emu.received and b":TRAC1:SEL 5" not in emu.received
    assert emu.selected[1] == 1 and not emu.running
    # the partial segment was deleted on the instrument; the interrupted chunk's error-queue
    # answer was read: the link is in step
    assert b":TRAC1:DEL 5" in emu.received and 5 not in emu.segments[1]
    conns = emu.connections
    assert awg.channel(1).catalog() == {}
    assert emu.connections == conns


# ----------------------------------------------------------------------------- interrupted upload


def _interrupt_upload(awg, emu, x, *, segment):
    """Ctrl-C 0.3 s into an upload slowed down to > 1 s (late error-queue answers)."""
    emu.reply_jitter_s = 0.05
    timer = threading.Timer(0.3, os.kill, args=(os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            awg.channel(1).upload(x, segment=segment, chunk_samples=256)
    finally:
        timer.join()
        emu.reply_jitter_s = 0.0
    assert 1 <= sum(m.startswith(b":TRAC1:DATA") for m in emu.received) < x.size // 256


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="signals are delivered to the main thread only")
def test_interrupted_upload_leaves_nothing_playable(pair):
    """Segment 1 is the one selected by default: before the fix the partial upload stayed
    defined and start() played it (the rest at the init value) with the relay on."""
    awg, emu = pair
    x = (np.arange(256 * 40) % 200 - 100).astype(np.int8)
    awg.channel(1).output_enabled = True
    _interrupt_upload(awg, emu, x, segment=1)
    assert 1 not in emu.segments[1]  # wire state: deleted on the instrument
    assert awg.incomplete_uploads == {}
    awg.start()
    assert emu.running and emu.output[1]
    assert emu.output_volts(1) is None  # nothing to emit


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="signals are delivered to the main thread only")
def test_start_refused_while_a_partial_segment_could_not_be_deleted(pair):
    awg, emu = pair
    x = (np.arange(256 * 40) % 200 - 100).astype(np.int8)
    f = emu.inject("disconnect", match=r"^:TRAC1:DEL \d", count=100)
    _interrupt_upload(awg, emu, x, segment=1)
    assert f.hits >= 1 and 1 in emu.segments[1]  # the partial segment is still there
    emu.clear_received()
    with pytest.raises(InstrumentStateError, match="segment 1 of channel 1 did not complete"):
        awg.start()
    assert emu.received == [] and not emu.running
    # a completed upload clears the mark
    f.count = 0
    awg.channel(1).upload(x, segment=1)
    awg.start()
    assert emu.running and emu.selected[1] == 1
    assert np.array_equal(np.frombuffer(bytes(emu.segments[1][1]), np.int8), x)


def test_failed_upload_deletes_its_partial_segment(pair):
    """Not only Ctrl-C: an upload that stops on an instrument error deletes what it wrote."""
    awg, emu = pair
    x = (np.arange(256 * 8) % 200 - 100).astype(np.int8)
    emu.inject("error", match=r"^:TRAC1:DATA 1,1024,", code=-223)
    with pytest.raises(InstrumentReportedError, match="-223"):
        awg.channel(1).upload(x, segment=1, chunk_samples=512)
    assert emu.segments[1] == {} and awg.incomplete_uploads == {}
    emu.clear_received()
    awg.start()
    assert emu.received[0] == b":INIT:IMM" and emu.output_volts(1) is None


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="signals are delivered to the main thread only")
def test_ctrl_c_during_outputs_off_waits_until_every_relay_is_open(pair):
    """A read waiting > 0.75 s after Ctrl-C is normally abandoned; the safe-state procedure
    is not: all relays open, then KeyboardInterrupt."""
    awg, emu = pair
    emu.running = True
    emu.output.update(dict.fromkeys(emu.output, True))
    emu.inject("delay", match=r"^SYST:ERR\?$", seconds=1.0)  # the :ABOR check answers late
    timer = threading.Timer(0.1, os.kill, args=(os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        awg.outputs_off()
    timer.join()
    assert not emu.running and not any(emu.output.values())


def test_output_codes_and_memory_version_follow_uploads_for_the_virtual_lab(pair):
    awg, emu = pair
    ch = awg.channel(2)
    v0 = emu.memory_version
    x = (np.arange(2560) % 255 - 127).astype(np.int8)
    ch.upload(x)
    assert emu.memory_version > v0  # the lab's cache of the segment is invalidated
    ch.amplitude_v, ch.offset_v, ch.output_enabled = 0.4, 0.1, True
    awg.start()
    codes, volts_per_code, offset = emu.output_codes(2)
    assert np.array_equal(codes, x)
    assert (volts_per_code, offset) == pytest.approx((0.4 / 2 / 127, 0.1))
    assert np.allclose(emu.output_volts(2), x / 127 * 0.2 + 0.1)
    v1 = emu.memory_version
    awg.stop()
    ch.upload(x[::-1].copy())
    assert emu.memory_version > v1
