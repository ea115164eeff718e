"""Streaming over a simulated recording long enough to exercise the clock-offset probe and the
timing loop: any chunking gives the same result, and the clock offset is measured."""

from __future__ import annotations

import mmap
from dataclasses import replace
from itertools import pairwise

import numba
import numpy as np
import pytest

from dsp.pipeline import (
    PROBE_FLOOR_PPM,
    PROBE_MARGIN_FRACTION,
    ReceiverOptions,
    SignalStream,
    acquire,
    probe_range,
    refine_clock_chain,
)
from qkd_hw.raw_key import read_raw_key
from qkd_hw.receiver import _link, process_recording
from qkd_hw.sim.params import SimParams
from qkd_hw.sim.simulate import simulate_recording
from qkd_hw.trace_io import TraceReader

PARAMS = {"frequency_offset_hz": -21e6, "linewidth_hz": 300.0, "clock_offset_ppm": -1.7,
          "delay_samples": 3333.3}


@pytest.fixture(scope="module")
def long_recording(tmp_path_factory):
    path = tmp_path_factory.mktemp("stream") / "long.h5"
    # 6e5 symbols: > 2 timing-loop blocks of 2^18 symbols, 6e6 samples
    simulate_recording(path, SimParams(**PARAMS), seed=8, n_symbols=600_000, truth_phase=False)
    return path


@pytest.fixture(scope="module")
def keyed_run(long_recording, tmp_path_factory):
    """``keyed_run(chunk)``: (result, raw key) of the seeded run with that chunk size, run once
    per module (the chunking and the mapping tests both need the 777_777-sample one)."""
    keys = tmp_path_factory.mktemp("keys")
    cache: dict[int, tuple] = {}

    def run(chunk: int):
        if chunk not in cache:
            key = keys / f"k{chunk}.h5"
            r = process_recording(long_recording, pe_fraction=0.4, seed=2,
                                  chunk_samples=chunk, raw_key_out=key)
            cache[chunk] = r, read_raw_key(key)
        return cache[chunk]

    return run


@pytest.fixture(scope="module")
def half_pe_run(long_recording):
    # unseeded: what the tests read of it (acquisition, timing loop) does not depend on the
    # disclosed subset
    return process_recording(long_recording, pe_fraction=0.5)


def test_chunking_invariance_with_timing_loop(keyed_run):
    runs = [keyed_run(chunk) for chunk in (1 << 23, 777_777, 1_048_573)]
    r0, k0 = runs[0]
    assert len(r0.timing_log) == 2          # two full 2^18-symbol blocks were fitted
    for r, k in runs[1:]:
        np.testing.assert_allclose(np.array(r.timing_log), np.array(r0.timing_log),
                                   rtol=1e-7, atol=1e-9)
        for name in ("transmittance", "excess_noise_snu", "t_eff", "sigma2"):
            assert getattr(r.estimates, name) == pytest.approx(getattr(r0.estimates, name),
                                                               rel=1e-7, abs=1e-9)
        np.testing.assert_array_equal(k.bob_tx_index, k0.bob_tx_index)
        np.testing.assert_allclose(k.bob_symbols, k0.bob_symbols, rtol=0, atol=1e-5)


def test_clock_offset_and_delay_measured(half_pe_run):
    r = half_pe_run
    a = r.acquisition
    # probe lever arm ~6e6 samples, timing sd ~0.03 sample per fit: sd(ppm) ~ 0.007
    assert a.clock_offset_ppm == pytest.approx(PARAMS["clock_offset_ppm"], abs=0.05)
    assert a.clock_offset_std_ppm < 0.02
    assert abs(a.tau0 - PARAMS["delay_samples"]) < 0.15
    assert r.n_received == 600_000
    # the loop found nothing left to correct: every block fit is a small fraction of a sample
    assert all(abs(d) < 0.1 for _, d in r.timing_log)


def _windows(acq, signal_length, std_ppm=1e-4):
    """probe_range's chain of windows when every probe measures the clock to ``std_ppm``."""
    out = []
    while (rng := probe_range(acq, signal_length)) is not None:
        out.append(rng)
        acq = replace(acq, clock_offset_std_ppm=std_ppm,
                      clock_probes=(*acq.clock_probes, (rng[0], 0.0, std_ppm)))
        assert len(out) < 10
    return out


def test_probe_windows_bounded_for_any_length(half_pe_run):
    acq = half_pe_run.acquisition
    acq = replace(acq, clock_probes=())
    link, opt = acq.link, acq.options
    sps = link.samples_per_symbol
    need = int((opt.sync_symbols + opt.span(link.rolloff) + 8) * sps)
    # at 100 ppm the first probe may reach ~0.25 need / 1e-4 = 4e8 samples
    reach = PROBE_MARGIN_FRACTION * need / (opt.clock_search_ppm * 1e-6)
    for n_sym in (10**6, 10**7, 10**8, 10**9, 10**11):
        length = int(n_sym * sps)
        a = replace(acq, link=replace(link, n_symbols=n_sym))
        wins = _windows(a, length)
        assert wins, n_sym
        # the window (memory of a probe) does not grow with the recording
        assert all(b - s <= need * (1 + 2 * PROBE_MARGIN_FRACTION) + 1 for s, b in wins), wins
        # the last probe ends the recording, or (beyond ~4e10 samples, where the 1 ppm floor
        # of the clock's wander caps it too) reaches that far; one probe up to the first reach
        floor_reach = PROBE_MARGIN_FRACTION * need / (PROBE_FLOOR_PPM * 1e-6)
        assert wins[-1][1] == length or wins[-1][1] > 0.9 * floor_reach, (n_sym, wins)
        assert len(wins) == (1 if length < 0.9 * reach else 2), (n_sym, wins)
        # each further probe at least doubles the lever arm
        assert all(w[0] >= 2 * v[0] for v, w in pairwise(wins))


def test_probe_chain_on_recording(long_recording):
    """A search range so wide that the first probe cannot reach the end: two probes, the
    second searching only around the first one's estimate, and the clock still measured."""
    opt = ReceiverOptions(clock_search_ppm=20000.0)
    with TraceReader(long_recording) as r:
        link = _link(r)
        length = r.adc["signal"].length
        acq = acquire(r.read("signal", 0, opt.head_samples(link)), r.symbols(0, 16384), link,
                      opt)
        reads = []

        def read(a, b):
            reads.append((a, b))
            return r.read("signal", a, b)

        acq = refine_clock_chain(acq, length, read, r.symbols)
    assert len(acq.clock_probes) == len(reads) == 2
    (f1, ppm1, sd1), (f2, ppm2, sd2) = acq.clock_probes
    # the second probe holds the last symbol of the recording
    assert reads[1][1] >= acq.tau0 + (link.n_symbols - 1) * acq.period and f2 >= 2 * f1
    # the first probe's margin is capped: it stops well before the end
    assert reads[0][1] < length / 2
    assert sd2 < sd1
    for ppm, sd in ((ppm1, sd1), (ppm2, sd2)):
        assert abs(ppm - PARAMS["clock_offset_ppm"]) < max(5 * sd, 0.02)
    # the second window is only the symbols plus ~1 ppm of margin either side
    assert reads[1][1] - reads[1][0] < reads[0][1] - reads[0][0]


def _no_maps(*args, **kwargs):
    raise AssertionError("mapped with map_file=False")


def test_mapped_recording_equals_read_recording(long_recording, keyed_run, tmp_path,
                                                monkeypatch):
    """The simulator stores captures contiguously, so the receiver maps the signal instead of
    reading it (every window a map, the stream copying only what it keeps); reading it
    (``map_file=False``, ``qkd-hw process --no-map``) gives bit-identical estimates and raw
    key."""
    from qkd_hw import receiver

    with TraceReader(long_recording) as r:
        starts, pos = [], 0
        for (a, sa), (b, sb) in zip(receiver._stores(r, 777_777, 100_000),
                                    receiver._stores(r, 777_777, 100_000, mapped=False),
                                    strict=True):
            assert isinstance(a.base.obj, mmap.mmap) and isinstance(b.base, np.ndarray)
            m = a.shape[0] - sa
            # the mapped window holds the samples before the chunk too
            np.testing.assert_array_equal(a, r.read("signal", pos - sa, pos + m))
            np.testing.assert_array_equal(a[sa:], b[sb:])
            starts.append(sa)
            pos += m
        assert starts[:3] == [0, 100_000, 100_000] and len(starts) == 8
    r1, k1 = keyed_run(777_777)     # mapped (the default), shared with the chunking test
    monkeypatch.setattr(TraceReader, "map_samples", _no_maps)   # from here on a map fails
    key = tmp_path / "read.h5"
    r2 = process_recording(long_recording, pe_fraction=0.4, seed=2, chunk_samples=777_777,
                           raw_key_out=key, map_file=False)
    k2 = read_raw_key(key)
    assert r1.estimates == r2.estimates and r1.timing_log == r2.timing_log
    np.testing.assert_array_equal(k1.bob_symbols, k2.bob_symbols)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 numba threads")
def test_pipelined_receiver_equals_one_thread(long_recording, keyed_run, tmp_path):
    """With 2 numba threads the stream is a pipeline (pilot stage in the reader thread, pieces
    of the kernels on a helper thread); with one it runs in order on this thread. Same bits:
    estimates, timing loop, rail count, raw key."""
    r2, k2 = keyed_run(777_777)     # the default: all numba threads
    prev = numba.get_num_threads()
    assert prev >= 2
    key = tmp_path / "one.h5"
    numba.set_num_threads(1)
    try:
        r1 = process_recording(long_recording, pe_fraction=0.4, seed=2, chunk_samples=777_777,
                               raw_key_out=key)
    finally:
        numba.set_num_threads(prev)
    k1 = read_raw_key(key)
    assert r1.estimates == r2.estimates and r1.timing_log == r2.timing_log
    assert r1.clipped_fraction == r2.clipped_fraction
    assert r1.frequency_offset_hz == r2.frequency_offset_hz
    np.testing.assert_array_equal(k1.bob_symbols, k2.bob_symbols)


@pytest.mark.parametrize("chunk", [777_777, 1 << 20])
def test_feed_in_place_equals_feed(long_recording, chunk):
    """The receiver's zero-copy path gives bit-identical outputs, and what the stream keeps
    between chunks always fits the room it asks for (so the copy fallback is not taken)."""
    with TraceReader(long_recording) as r:
        link = _link(r)
        opt = ReceiverOptions()
        acq = acquire(r.read("signal", 0, opt.head_samples(link)), r.symbols(0, 16384), link,
                      opt)
        sig = r.read("signal")
        sym = r.symbols()
    alice = lambda a, b: sym[a:b]   # noqa: E731
    ref, fast = SignalStream(acq, alice=alice), SignalStream(acq, alice=alice)
    room = fast.room_samples()
    out_ref, out_fast = [], []
    stores = [np.empty(room + chunk, sig.dtype) for _ in range(3)]
    kept = []
    for i, pos in enumerate(range(0, sig.shape[0], chunk)):
        part = sig[pos:pos + chunk]
        out_ref += ref.feed(part)
        store = stores[i % 3][:room + part.shape[0]]
        store[room:] = part
        out_fast += fast.feed_in_place(store, room)
        kept.append(fast.buf.data.shape[0])
        assert np.shares_memory(fast.buf.data, store)     # no fallback copy
    out_ref += ref.finish()
    out_fast += fast.finish()
    assert max(kept) <= room
    assert [k for k, _ in out_fast] == [k for k, _ in out_ref]
    for (_, a), (_, b) in zip(out_fast, out_ref, strict=True):
        np.testing.assert_array_equal(a, b)
    assert fast.timing_log == ref.timing_log


@pytest.mark.parametrize("method", ["kalman-rts", "kalman", "fir"])
@pytest.mark.parametrize("name", ["pristine", "basic", "metro"])
def test_room_holds_what_the_stream_keeps(shared_traces, name, method):
    """``room_samples`` bounds the samples kept between chunks for every tracker, also with
    the long pilot blocks (818 samples) of the low-noise recording."""
    opt = ReceiverOptions(phase_method=method)
    with TraceReader(shared_traces[name]) as r:
        link = _link(r)
        n_head = min(r.adc["signal"].length, opt.head_samples(link))
        acq = acquire(r.read("signal", 0, n_head), r.symbols(0, 16384), link, opt)
        sig = r.read("signal")
        sym = r.symbols()
    s = SignalStream(acq, alice=lambda a, b: sym[a:b])
    kept = []
    for pos in range(0, sig.shape[0], 100_000):
        s.feed(sig[pos:pos + 100_000])
        kept.append(s.buf.data.shape[0])
    assert max(kept) <= s.room_samples()
    assert max(kept) > 0.2 * s.room_samples()    # and is not a vacuous bound


def test_symbols_lost_mid_recording_is_a_lock_error(long_recording, tmp_path):
    # Alice's symbols of the timing loop's second block (2^18 .. 2^19) shuffled, as if the
    # modulation had stopped or slipped there: the pilot is fine, and so are the head and the
    # late clock probe, but that block finds no correlation where the head promised a strong
    # one; numbers over it would come from an unlocked receiver
    from qkd_hw.errors import ReceiverLockError
    from qkd_hw.trace_io import TraceWriter

    bad = tmp_path / "slip.h5"
    with TraceReader(long_recording) as r:
        tx, fs, vpc = r.tx, r.sample_rate_hz, r.adc["signal"].volts_per_code
        data = {n: r.read(n) for n in ("signal", "shot_noise", "electronic_noise")}
        sym = r.symbols()
    rng = np.random.default_rng(5)
    lo, hi = 1 << 18, 1 << 19
    sym[lo:hi] = sym[lo:hi][rng.permutation(hi - lo)]
    with TraceWriter(bad, tx=tx, sample_rate_hz=fs, volts_per_code=vpc) as w:
        w.write_symbols(sym)
        for n, a in data.items():
            w.append(n, a)
    with pytest.raises(ReceiverLockError, match="synchronisation lost") as ei:
        process_recording(bad, seed=1, raw_key_out=tmp_path / "raw.h5")
    m = ei.value.metrics
    assert m["lost_from_symbol"] == 1 << 18
    assert m["timing_block_corr_n"] < m["timing_corr_min_n"] < m["head_corr_n"] / 10
    assert not (tmp_path / "raw.h5").exists()
