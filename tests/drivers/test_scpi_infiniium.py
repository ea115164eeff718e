"""Keysight Infiniium digitizer: setup bytes, chunked :WAV:DATA? fetches of int16 little-endian
definite blocks, faults during binary transfers."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

from drivers.emulators.keysight_infiniium import InfiniiumEmulator, default_pattern
from drivers.keysight_infiniium import KeysightInfiniium
from qkd_hw.errors import (
    CommunicationError,
    IncompleteReplyError,
    InstrumentReportedError,
    InstrumentTimeoutError,
    LimitError,
    ProtocolError,
)
from qkd_hw.labconfig import Limits
from tests.drivers.scpi_helpers import config, running, sent

ERR = b"SYST:ERR?"
TIMEOUT = 0.5


def make(emu, **kw):
    kw.setdefault("timeout_s", TIMEOUT)
    return KeysightInfiniium(config("scope", "keysight_infiniium", emu.resource, **kw))


@pytest.fixture
def pair():
    with running(InfiniiumEmulator()) as emu, \
            make(emu, limits=Limits.of(sample_rate_hz=(None, 20e9))) as sc:
        emu.clear_received()
        yield sc, emu


def test_setup_bytes_select_headers_off_word_lsb_definite_blocks():
    with running(InfiniiumEmulator()) as emu:
        with make(emu):
            pass
        assert sent(emu) == [b"*IDN?", ERR, b":SYST:HEAD OFF", ERR, b":ACQ:MODE RTIM", ERR,
                             b":WAV:FORM WORD", ERR, b":WAV:BYT LSBF", ERR, b":WAV:STR OFF",
                             ERR]
        assert (emu.header, emu.wav_format, emu.byteorder, emu.streaming) == (
            False, "WORD", "LSBF", False)


@pytest.mark.parametrize(
    ("target", "prop", "value", "set_bytes", "query_bytes"),
    [
        ("sc", "sample_rate_hz", 2e9, b":ACQ:SRAT 2000000000", b":ACQ:SRAT?"),
        ("sc", "record_length", 123456, b":ACQ:POIN 123456", b":ACQ:POIN?"),
        ("sc", "trigger_sweep", "single", b":TRIG:SWE SING", b":TRIG:SWE?"),
        ("sc", "trigger_source", 3, b":TRIG:EDGE:SOUR CHAN3", b":TRIG:EDGE:SOUR?"),
        ("sc", "trigger_source", "aux", b":TRIG:EDGE:SOUR AUX", b":TRIG:EDGE:SOUR?"),
        ("ch2", "range_v", 0.4, b":CHAN2:RANG 0.4", b":CHAN2:RANG?"),
        ("ch1", "offset_v", -0.01, b":CHAN1:OFFS -0.01", b":CHAN1:OFFS?"),
    ],
)
def test_property_bytes_and_round_trip(pair, target, prop, value, set_bytes, query_bytes):
    sc, emu = pair
    obj = sc if target == "sc" else sc.channel(int(target[2:]))
    setattr(obj, prop, value)
    assert sent(emu) == [set_bytes, ERR]
    emu.clear_received()
    got = getattr(obj, prop)
    assert got == pytest.approx(value) if isinstance(value, float) else got == value
    assert sent(emu) == [query_bytes]


def test_trigger_level_and_sample_rate_limit(pair):
    sc, emu = pair
    sc.set_trigger_level(1, 0.05)
    assert sent(emu) == [b":TRIG:LEV CHAN1,0.05", ERR]
    assert emu.trig_level == {"CHAN1": 0.05}
    emu.clear_received()
    with pytest.raises(LimitError, match="sample_rate_hz"):
        sc.sample_rate_hz = 40e9
    assert emu.rx_bytes == 0


def test_multi_chunk_fetch_bytes_and_data(pair):
    sc, emu = pair
    n = 100_003
    sc.record_length = n
    sc.arm()
    sc.wait_acquired(timeout_s=2)
    emu.clear_received()
    seen = []
    x = sc.fetch(1, chunk_points=40_000, progress=seen.append)
    assert x.dtype == np.int16 and x.shape == (n,)
    assert np.array_equal(x, default_pattern(1, 0, n))
    assert sent(emu) == [b":WAV:SOUR CHAN1", ERR, b":WAV:POIN?", b":WAV:DATA? 0,40000",
                         b":WAV:DATA? 40000,40000", b":WAV:DATA? 80000,20003"]
    assert seen == [40000, 40000, 20003]


def test_fetch_part_into_preallocated_buffer_and_preamble(pair):
    sc, emu = pair
    emu.acquire_channels = (1, 2)
    sc.record_length = 50_000
    sc.sample_rate_hz = 4e9
    sc.channel(2).range_v = 0.5
    sc.channel(2).offset_v = 0.01
    sc.arm()
    sc.wait_acquired(timeout_s=2)
    out = np.zeros(1000, np.int16)
    got = sc.fetch(2, start=12_345, count=1000, out=out)
    assert got is out
    assert np.array_equal(out, default_pattern(2, 0, 50_000)[12_345:13_345])
    pre = sc.preamble(2)
    assert pre.points == 50_000 and pre.sample_rate_hz == pytest.approx(4e9)
    assert pre.y_increment_v == pytest.approx(0.5 / 65536)
    assert pre.volts(np.array([0, 100], np.int16)) == pytest.approx(
        [0.01, 0.01 + 100 * 0.5 / 65536])
    with pytest.raises(ValueError, match="outside the record"):
        sc.fetch(2, start=49_999, count=2)
    with pytest.raises(ValueError, match="int16"):
        sc.fetch(2, count=10, out=np.zeros(10, np.int32))


def test_acquire_helper_and_adc_hook(pair):
    sc, emu = pair
    ramp = (np.arange(4096) - 2048).astype(np.int16)
    emu.adc_source = lambda e, ch, n: np.resize(ramp, n)
    sc.record_length = 4096
    x = sc.acquire(1, timeout_s=2)
    assert np.array_equal(x, ramp)


def test_instrument_answers_while_a_slow_capture_is_computed(pair):
    # the virtual lab computes a capture for seconds on a loaded host: the emulator must keep
    # answering like the instrument does while it acquires (it once held every reply, and a
    # driver's deadline, until the samples existed)
    sc, emu = pair
    release = threading.Event()
    ramp = (np.arange(1000) - 500).astype(np.int16)

    def slow(e, ch, n):
        assert release.wait(30)
        return np.resize(ramp, n)

    emu.adc_source = slow
    sc.record_length = 1000
    sc.arm()
    assert sc.query(":ASTate?") == "ARM"   # within TIMEOUT while the capture is pending
    assert sc.query(":WAV:POIN?") == "0"
    release.set()
    sc.wait_acquired(timeout_s=5)
    assert np.array_equal(sc.fetch(1), ramp)


def test_failed_capture_is_reported_not_a_hang(pair):
    sc, emu = pair
    emu.adc_source = lambda e, ch, n: np.zeros(n - 1, np.int16)
    sc.record_length = 100
    # the driver's error check after :SING or during the wait finds the instrument's error
    with pytest.raises(InstrumentReportedError, match=r"-200.*wrong length"):
        sc.arm()
        sc.wait_acquired(timeout_s=2)


def test_wait_acquired_times_out_in_time(pair):
    sc, emu = pair
    emu.acquisition_delay_s = 10.0
    sc.arm()
    t0 = time.perf_counter()
    with pytest.raises(InstrumentTimeoutError, match="no trigger"):
        sc.wait_acquired(timeout_s=0.3)
    assert 0.28 < time.perf_counter() - t0 < 1.0


def test_disconnect_in_the_middle_of_a_block_is_retried(pair):
    sc, emu = pair
    n = 400_000
    sc.record_length = n
    sc.arm()
    sc.wait_acquired(timeout_s=2)
    f = emu.inject("cut_block", match=r":WAV:DATA\? 200000,", fraction=0.4)
    t0 = time.perf_counter()
    x = sc.fetch(1, chunk_points=100_000)
    dt = time.perf_counter() - t0
    assert f.hits == 1
    assert np.array_equal(x, default_pattern(1, 0, n))
    assert dt < TIMEOUT + 1.5  # one stalled read at most, then a reconnect


def test_disconnect_mid_block_without_retries_is_a_communication_error(pair):
    sc, emu = pair
    sc.config = sc.config.__class__(**{**sc.config.__dict__, "retries": 0})
    sc.record_length = 100_000
    sc.arm()
    sc.wait_acquired(timeout_s=2)
    emu.inject("cut_block", match=r":WAV:DATA\?", fraction=0.5)
    t0 = time.perf_counter()
    with pytest.raises(IncompleteReplyError, match="short binary block: expected 200000") as ei:
        sc.fetch(1)
    assert time.perf_counter() - t0 < TIMEOUT + 0.5
    assert ei.value.command == ":WAV:DATA? 0,100000"
    assert isinstance(ei.value, CommunicationError)  # also a link-level failure
    assert ei.value.reply.startswith(b"#6200000")


@pytest.mark.parametrize(
    ("payload", "exc", "match"),
    [
        (b"1.0E+00", ProtocolError, "not an IEEE 488.2 binary block"),
        (b"#0abcd", ProtocolError, "indefinite-length"),
        (b"#2x9abc", ProtocolError, "bad length field"),
        (b"#14abcdJUNK", ProtocolError, "extra bytes"),
        (b"#13z", IncompleteReplyError, "short binary block: expected 3"),
        (b"#14zzz", IncompleteReplyError, "no message terminator after the 4-byte block"),
        (b"#12ab", ProtocolError, r"asked for 2 points \(4 bytes\), got 2"),
        (b"#19abcdefghi", ProtocolError, "block of 9 bytes exceeds the expected 4"),
    ],
)
def test_malformed_blocks(pair, payload, exc, match):
    sc, emu = pair
    sc.config = sc.config.__class__(**{**sc.config.__dict__, "retries": 0})
    sc.record_length = 16
    sc.arm()
    sc.wait_acquired(timeout_s=2)
    emu.inject("garble", match=r":WAV:DATA\?", payload=payload)
    with pytest.raises(exc, match=match) as ei:
        sc.fetch(1, count=2)
    assert ei.value.instrument == "scope" and ei.value.command == ":WAV:DATA? 0,2"
    # the link is resynchronised: the next fetch is right
    assert np.array_equal(sc.fetch(1, count=16), default_pattern(1, 0, 16))


def test_too_long_block_refused_before_reading_it(pair):
    sc, emu = pair
    sc.record_length = 64
    sc.arm()
    sc.wait_acquired(timeout_s=2)
    emu.clear_received()
    data = sc.query_block(":WAV:DATA? 0,64", max_bytes=128)
    assert len(data) == 128
    with pytest.raises(ProtocolError, match="exceeds the expected 100") as ei:
        sc.query_block(":WAV:DATA? 0,64", max_bytes=100)
    assert ei.value.reply == b"#3128"


def _slow_acquired_record(pair):
    """A 50000-point record acquired, then every reply ~0.05..0.1 s late (10 chunks ~1 s)."""
    sc, emu = pair
    sc.record_length = 50_000
    sc.arm()
    sc.wait_acquired(timeout_s=2)
    emu.reply_jitter_s = 0.1
    emu.clear_received()
    return sc, emu


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="signals are delivered to the main thread only")
def test_ctrl_c_stops_a_long_fetch_between_chunks(pair):
    sc, emu = _slow_acquired_record(pair)
    timer = threading.Timer(0.25, os.kill, args=(os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        sc.fetch(1, chunk_points=5_000)
    timer.join()
    n_chunks = sum(m.startswith(b":WAV:DATA?") for m in emu.received)
    assert 1 <= n_chunks < 10
    emu.reply_jitter_s = 0.0
    # nothing left in flight: the next exchange gets its own reply without a resync
    conns = emu.connections
    assert np.array_equal(sc.fetch(1, count=100), default_pattern(1, 0, 100))
    assert emu.connections == conns


def test_block_read_in_pieces_keeps_what_arrived_before_a_cut(pair):
    sc, emu = pair
    sc.config = sc.config.__class__(**{**sc.config.__dict__, "retries": 0})
    sc.transport.chunk_size = 16_384  # force the piecewise path of VisaTransport.read_exact
    sc.record_length = 100_000
    sc.arm()
    sc.wait_acquired(timeout_s=2)
    assert np.array_equal(sc.fetch(1), default_pattern(1, 0, 100_000))
    emu.inject("cut_block", match=r":WAV:DATA\?", fraction=0.5)
    # the socket read counts every byte that arrived before the instrument hung up
    with pytest.raises(IncompleteReplyError, match=r"closed by the instrument during a "
                       r"200000-byte binary read \(100000 bytes received\)") as ei:
        sc.fetch(1)
    # header, then an excerpt (head ... tail) of the bytes that did arrive
    head = b"#6200000" + default_pattern(1, 0, 100_000).tobytes()[:32]
    assert ei.value.reply.startswith(head + b"...")


# ----------------------------------------------------------------------------- :ADER? clears


def test_astate_query_of_the_emulator(pair):
    sc, emu = pair
    assert sc.query(":AST?") == "ADONE"  # nothing pending
    emu.acquisition_delay_s = 10.0
    sc.arm()
    assert sc.query(":ASTATE?") == "ARM"
    assert emu.ader_reported is False  # :AST? does not touch the event register


def test_late_ader_reply_is_confirmed_with_astate_not_lost(pair):
    """The one-time '1' of :ADER? comes late: it is not re-asked (the event would read 0
    forever); the non-clearing :AST? confirms the acquisition."""
    sc, emu = pair
    sc.record_length = 1000
    sc.arm()
    emu.clear_received()
    f = emu.inject("delay", match=r":ADER\?", seconds=TIMEOUT * 1.5)
    sc.wait_acquired(timeout_s=3.0)
    assert f.hits == 1 and emu.ader_reported
    assert sent(emu) == [b":ADER?", b":AST?"]
    assert np.array_equal(sc.fetch(1), default_pattern(1, 0, 1000))


def test_lost_ader_reply_before_the_acquisition_is_done_keeps_polling(pair):
    sc, emu = pair
    sc.record_length = 1000
    emu.acquisition_delay_s = 1.0
    sc.arm()
    emu.clear_received()
    emu.inject("drop", match=r":ADER\?")
    sc.wait_acquired(timeout_s=3.0)
    msgs = sent(emu)
    assert msgs[:2] == [b":ADER?", b":AST?"] and msgs.count(b":AST?") == 1
    assert msgs[-1] == b":ADER?" and emu.ader_reported


def test_garbled_ader_reply_is_not_resent_either(pair):
    sc, emu = pair
    sc.record_length = 1000
    sc.arm()
    emu.clear_received()
    emu.inject("garble", match=r":ADER\?", payload=b"1\xff")
    sc.wait_acquired(timeout_s=3.0)
    assert sent(emu) == [b":ADER?", b":AST?"]


# ----------------------------------------------------------------------------- preamble values


@pytest.mark.parametrize(
    ("match", "payload", "exc", "message"),
    [
        (r":WAV:XINC\?", b"0", ProtocolError, "x increment"),
        (r":WAV:XINC\?", b"-1.0E-10", ProtocolError, "x increment"),
        (r":WAV:YINC\?", b"0.0", ProtocolError, "y increment"),
        (r":WAV:POIN\?", b"-5", ProtocolError, "points"),
        (r":WAV:XINC\?", b"nan", ProtocolError, "not a SCPI number"),
        (r":WAV:YOR\?", b"inf", ProtocolError, "not a SCPI number"),
        (r":WAV:XINC\?", b"9.91E+37", InstrumentReportedError, "special value"),
    ],
)
def test_invalid_preamble_fields_are_clear_errors_with_the_raw_reply(pair, match, payload, exc,
                                                                    message):
    sc, emu = pair
    sc.config = sc.config.__class__(**{**sc.config.__dict__, "retries": 0})
    sc.record_length = 1000
    sc.arm()
    sc.wait_acquired(timeout_s=2)
    emu.inject("garble", match=match, payload=payload)
    with pytest.raises(exc, match=message) as ei:
        sc.preamble(1)
    assert ei.value.command == match.replace("\\", "")
    assert ei.value.reply in (payload, payload.decode())
    assert sc.preamble(1).points == 1000  # link in step


def test_preamble_without_acquired_data_is_a_clear_error(pair):
    sc, _emu = pair
    with pytest.raises(ProtocolError, match="no waveform data") as ei:
        sc.preamble(1)
    assert ei.value.command == ":WAV:POIN?" and ei.value.reply == "0"


# ----------------------------------------------------------------------------- Ctrl-C, nested


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="signals are delivered to the main thread only")
def test_ctrl_c_inside_an_outer_transaction_raises_from_fetch_never_returns_partial_data(pair):
    sc, emu = _slow_acquired_record(pair)
    returned = []
    timer = threading.Timer(0.25, os.kill, args=(os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt) as ei, sc.transaction():
        returned.append(sc.fetch(1, chunk_points=5_000))
    timer.join()
    assert returned == []  # fetch raised; the caller never saw a partly filled buffer
    assert ei.value.__context__ is None  # delivered once, not again at the outer exit
    n_chunks = sum(m.startswith(b":WAV:DATA?") for m in emu.received)
    assert 1 <= n_chunks < 10
    emu.reply_jitter_s = 0.0
    conns = emu.connections
    assert np.array_equal(sc.fetch(1, count=100), default_pattern(1, 0, 100))
    assert emu.connections == conns  # the interrupted chunk's reply was read in full


def test_fetch_before_arming_is_an_error_not_an_empty_record(pair):
    sc, _emu = pair
    with pytest.raises(ProtocolError, match=r"no waveform data .* for CHAN1") as ei:
        sc.fetch(1)
    assert ei.value.command == ":WAV:POIN?"


def test_fetch_of_a_channel_not_acquired_is_an_error(pair):
    sc, emu = pair
    emu.acquire_channels = (1,)
    sc.record_length = 1000
    sc.arm()
    sc.wait_acquired(timeout_s=2)
    assert sc.fetch(1).size == 1000
    with pytest.raises(ProtocolError, match=r"no waveform data .* for CHAN3"):
        sc.fetch(3)


def test_fetch_while_the_acquisition_is_pending_is_an_error(pair):
    sc, emu = pair
    emu.acquisition_delay_s = 0.5
    sc.record_length = 1000
    sc.arm()
    with pytest.raises(ProtocolError, match=r"no waveform data .* for CHAN1"):
        sc.fetch(1)
    sc.wait_acquired(timeout_s=3)
    assert np.array_equal(sc.fetch(1), default_pattern(1, 0, 1000))
