"""The recording-source seam (``qkd_hw.receiver.source``): an in-memory source built from a
recording's arrays gives exactly the estimates, timing and raw key of the HDF5 source on the
same data, leaves the caller's arrays untouched, and feeds the same sanity checks."""

from __future__ import annotations

import numpy as np
import pytest

from qkd_hw.errors import RecordingSanityError
from qkd_hw.raw_key import read_raw_key
from qkd_hw.receiver import (
    ArraySource,
    Hdf5Source,
    RecordingSource,
    process_recording,
    process_source,
)
from qkd_hw.receiver.hdf5_source import link_of
from qkd_hw.trace_io import ADC_DATASETS, TraceReader
from tests.conftest import SHARED_TRACES

TRACE = SHARED_TRACES["basic"]
#: several chunks, none aligned with the symbol blocks
CHUNK = 300_007


def _array_source(**overrides) -> ArraySource:
    with TraceReader(TRACE) as r:
        captures = {k: r.read(k) for k in ADC_DATASETS}
        captures.update(overrides)
        return ArraySource(link_of(r), captures, r.symbols(),
                           volts_per_code={k: a.volts_per_code for k, a in r.adc.items()},
                           clipped_fraction={k: a.clipped_fraction for k, a in r.adc.items()},
                           name=str(TRACE))


def test_both_sources_satisfy_the_protocol():
    with Hdf5Source(TRACE) as h:
        assert isinstance(h, RecordingSource)
    assert isinstance(_array_source(), RecordingSource)


def test_array_source_equals_hdf5_source(tmp_path):
    src = _array_source()
    kept = {k: src.read(k, 0, src.captures[k].length) for k in ADC_DATASETS}
    kw = dict(pe_fraction=0.5, seed=3, chunk_samples=CHUNK)
    a = process_source(src, raw_key_out=tmp_path / "a.h5", **kw)
    b = process_recording(TRACE, raw_key_out=tmp_path / "b.h5", **kw)
    assert a.estimates == b.estimates and a.timing_log == b.timing_log
    sa, sb = a.summary(), b.summary()
    timing = {"seconds", "throughput_msps", "stage_seconds", "raw_key_path"}
    assert {k: v for k, v in sa.items() if k not in timing} == \
        {k: v for k, v in sb.items() if k not in timing}
    ka, kb = read_raw_key(tmp_path / "a.h5"), read_raw_key(tmp_path / "b.h5")
    np.testing.assert_array_equal(ka.bob_symbols, kb.bob_symbols)
    np.testing.assert_array_equal(ka.bob_tx_index, kb.bob_tx_index)
    np.testing.assert_array_equal(ka.pe_tx_index, kb.pe_tx_index)
    assert dict(ka.estimates) == dict(kb.estimates)
    # the stream writes into the room in front of each chunk: never into the caller's arrays
    for k in ADC_DATASETS:
        np.testing.assert_array_equal(src.read(k, 0, src.captures[k].length), kept[k])


def test_array_source_stores_hold_the_signal_behind_the_room():
    src = _array_source()
    sig = src.read("signal", 0, src.captures["signal"].length)
    parts = []
    for store, start in src.signal_stores(CHUNK, 1000):
        assert start == 1000 and store.flags.writeable
        parts.append(store[start:].copy())
    np.testing.assert_array_equal(np.concatenate(parts), sig)


@pytest.mark.parametrize(("same", "why"), [(True, "the same array"),
                                           (False, "identical first 65536 samples")])
def test_array_source_refuses_a_noise_capture_that_is_the_signal(same, why):
    src = _array_source()
    sig = src.read("signal", 0, src.captures["signal"].length)
    bad = ArraySource(src.link, {"signal": sig, "shot_noise": sig if same else sig.copy(),
                                 "electronic_noise": src.read("electronic_noise", 0, 1_000_000)},
                      src.symbols(0, src.link.n_symbols), name="mem")
    with pytest.raises(RecordingSanityError, match=f"mem: /adc/shot_noise is the signal "
                                                   f"capture /adc/signal \\({why}"):
        process_source(bad, pe_fraction=1.0, seed=1)


def test_array_source_checks_its_arrays():
    src = _array_source()
    caps = {k: src.read(k, 0, 10) for k in ADC_DATASETS}
    with pytest.raises(ValueError, match=r"mem: \(5,\) symbols for link.n_symbols 100000"):
        ArraySource(src.link, caps, np.zeros(5, np.complex64), name="mem")
    with pytest.raises(ValueError, match="capture signal must be 1-D int16, int8 or float32"):
        ArraySource(src.link, {**caps, "signal": caps["signal"].astype(np.int64)},
                    src.symbols(0, src.link.n_symbols), name="mem")
    with pytest.raises(ValueError, match="captures must be"):
        ArraySource(src.link, {"signal": caps["signal"]}, src.symbols(0, 1), name="mem")
    with pytest.raises(ValueError, match=r"symbols \[5, 100001\) outside \[0, 100000\)"):
        src.symbols(5, 100_001)
