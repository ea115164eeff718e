"""TraceWriter: round trips, streaming appends, atomicity on error and Ctrl-C."""

from __future__ import annotations

import mmap
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qkd_hw.errors import TraceFormatError
from qkd_hw.trace_io import (
    ADC_DATASETS,
    TraceReader,
    TraceWriter,
    Truth,
    TxInfo,
    read_truth,
    read_truth_dataset,
)

TX = TxInfo(symbol_rate_hz=1e8, rolloff=0.2, signal_frequency_hz=1.5e8,
            pilot_frequencies_hz=(2.5e8, 3.2e8), modulation_variance_snu=5.0, efficiency=0.7,
            detection="heterodyne", n_symbols=0)


def _data(seed: int = 0, n: int = 10_000, k: int = 500, dtype: str = "int16"):
    rng = np.random.default_rng(seed)
    adc = {}
    for i, name in enumerate(ADC_DATASETS):
        if dtype == "float32":
            adc[name] = rng.normal(0, 50, n + i).astype(np.float32)
        else:
            lim = np.iinfo(dtype).max
            adc[name] = rng.integers(-lim, lim, n + i).astype(dtype)
    sym = (rng.normal(size=k) + 1j * rng.normal(size=k)).astype(np.complex64)
    return adc, sym


def _write(path: Path, adc, sym, *, pieces=None, **kw) -> None:
    kw.setdefault("tx", TX)
    kw.setdefault("sample_rate_hz", 1e9)
    kw.setdefault("volts_per_code", 0.04)
    with TraceWriter(path, **kw) as w:
        for name, a in adc.items():
            for part in np.split(a, pieces or []):
                w.append(name, part)
        w.write_symbols(sym)


@pytest.mark.parametrize("compression", [None, "gzip", "lzf"])
def test_multi_chunk_append_equals_one_shot(tmp_path, compression):
    adc, sym = _data()
    one, many = tmp_path / "one.h5", tmp_path / "many.h5"
    _write(one, adc, sym, chunk_samples=1024, compression=compression)
    # uneven pieces, crossing HDF5 chunk borders, including an empty append
    _write(many, adc, sym, pieces=[0, 1, 1, 1000, 1025, 4097, 9000], chunk_samples=1024,
           compression=compression)
    with TraceReader(one) as a, TraceReader(many) as b:
        for name in ADC_DATASETS:
            np.testing.assert_array_equal(a.read(name), adc[name])
            np.testing.assert_array_equal(b.read(name), adc[name])
            assert b.adc[name].chunks == (1024,)
            assert b.adc[name].compression == compression
        np.testing.assert_array_equal(b.symbols(), sym)
        assert b.tx == TxInfo(**{**TX.__dict__, "n_symbols": sym.shape[0]})
        assert b.sample_rate_hz == 1e9
    assert sorted(os.listdir(tmp_path)) == ["many.h5", "one.h5"]  # no temp files left


def test_root_attributes_and_raw_layout(tmp_path):
    adc, sym = _data()
    p = tmp_path / "r.h5"
    before = datetime.now(UTC)
    _write(p, adc, sym, description="lab run 7", volts_per_code={"signal": 0.04,
           "shot_noise": 0.05, "electronic_noise": 0.06})
    with h5py.File(p, "r") as f:  # independent check with raw h5py
        assert f.attrs["format"] == "qkd-trace"
        assert f.attrs["format_version"] == 1
        assert f.attrs["description"] == "lab run 7"
        created = datetime.fromisoformat(f.attrs["created_utc"])
        assert created.utcoffset() == timedelta(0)
        assert before - timedelta(seconds=1) <= created <= datetime.now(UTC)
        assert f["adc/shot_noise"].attrs["volts_per_code"] == 0.05
        assert f["adc/signal"].maxshape == (None,)
        assert f["tx/symbols"].dtype == np.complex64
        assert f["tx"].attrs["pilot_frequency_hz"] == 2.5e8
        assert list(f["tx"].attrs["pilot_frequencies_hz"]) == [2.5e8, 3.2e8]
        assert f["tx"].attrs["detection"] == "heterodyne"


@pytest.mark.parametrize("dtype", ["int8", "float32"])
def test_other_adc_dtypes_round_trip(tmp_path, dtype):
    adc, sym = _data(dtype=dtype)
    p = tmp_path / f"{dtype}.h5"
    _write(p, adc, sym, adc_dtype=dtype, chunk_samples=999)
    with TraceReader(p) as r:
        for name in ADC_DATASETS:
            assert r.adc[name].dtype == np.dtype(dtype)
            np.testing.assert_array_equal(r.read(name), adc[name])


def test_streaming_symbols_and_truth(tmp_path):
    adc, sym = _data()
    p = tmp_path / "t.h5"
    truth = Truth(0.5, 0.02, 0.1, 3e6, 100.0, 1234.5, 0.41,
                  extra={"seed": 7, "laser": "RIO", "taps": np.arange(3.0)})
    phase = np.linspace(0, 1, 777)
    with TraceWriter(p, tx=TxInfo(**{**TX.__dict__, "n_symbols": 500}), sample_rate_hz=1e9,
                     volts_per_code=0.04) as w:
        for name, a in adc.items():
            w.append(name, a)
        for lo in range(0, 500, 128):
            w.append_symbols(sym[lo:lo + 128])
        w.write_truth(truth)
        w.write_truth_dataset("phase", phase)
    with TraceReader(p) as r:
        np.testing.assert_array_equal(r.symbols(), sym)
        assert r.has_truth()
    got = read_truth(p)
    for k in ("transmittance", "excess_noise_snu", "electronic_noise_snu", "frequency_offset_hz",
              "linewidth_hz", "delay_samples", "t_eff"):
        assert getattr(got, k) == getattr(truth, k)
    assert got.extra["seed"] == 7 and got.extra["laser"] == "RIO"
    np.testing.assert_array_equal(got.extra["taps"], np.arange(3.0))
    np.testing.assert_array_equal(read_truth_dataset(p, "phase"), phase)


class _BoomError(Exception):
    pass


@pytest.mark.parametrize("exc", [_BoomError, KeyboardInterrupt])
@pytest.mark.parametrize("existing", [False, True])
def test_interrupted_writer_leaves_nothing_and_keeps_existing(tmp_path, exc, existing):
    adc, sym = _data()
    target = tmp_path / "rec.h5"
    if existing:
        _write(target, adc, sym, description="the good old one")
        old_bytes = target.read_bytes()
    with pytest.raises(exc), TraceWriter(target, tx=TX, sample_rate_hz=1e9,
                                         volts_per_code=0.04) as w:
        for name, a in adc.items():
            w.append(name, a)
        w.write_symbols(sym)
        assert any(".tmp-" in n for n in os.listdir(tmp_path))  # being written elsewhere
        raise exc()
    if existing:
        assert target.read_bytes() == old_bytes
        assert os.listdir(tmp_path) == ["rec.h5"]
    else:
        assert os.listdir(tmp_path) == []


def test_incomplete_recording_is_discarded(tmp_path):
    adc, sym = _data()
    target = tmp_path / "rec.h5"
    kw = {"tx": TX, "sample_rate_hz": 1e9, "volts_per_code": 0.04}
    with pytest.raises(TraceFormatError, match=r"rec\.h5: recording incomplete.*/adc/electronic"):
        _write(target, {k: adc[k] for k in ("signal", "shot_noise")}, sym, **kw)
    assert os.listdir(tmp_path) == []
    w = TraceWriter(target, **kw)
    for name, a in adc.items():
        w.append(name, a)
    with pytest.raises(TraceFormatError, match="nothing written to /tx/symbols"):
        w.close()
    assert os.listdir(tmp_path) == []
    with pytest.raises(TraceFormatError, match="n_symbols=9"):
        _write(target, adc, sym, **{**kw, "tx": TxInfo(**{**TX.__dict__, "n_symbols": 9})})
    assert os.listdir(tmp_path) == []


def test_dropped_writer_removes_temp(tmp_path):
    w = TraceWriter(tmp_path / "x.h5", tx=TX, sample_rate_hz=1e9, volts_per_code=0.04)
    assert len(os.listdir(tmp_path)) == 1
    w.abort()
    assert os.listdir(tmp_path) == []
    w = TraceWriter(tmp_path / "x.h5", tx=TX, sample_rate_hz=1e9, volts_per_code=0.04)
    del w
    assert os.listdir(tmp_path) == []


def test_overwrite_false(tmp_path):
    adc, sym = _data()
    target = tmp_path / "rec.h5"
    target.write_bytes(b"precious")
    with pytest.raises(TraceFormatError, match=r"rec\.h5: cannot create recording: target exists"):
        TraceWriter(target, tx=TX, sample_rate_hz=1e9, volts_per_code=0.04, overwrite=False)
    w = TraceWriter(tmp_path / "new.h5", tx=TX, sample_rate_hz=1e9, volts_per_code=0.04,
                    overwrite=False)
    for name, a in adc.items():
        w.append(name, a)
    w.write_symbols(sym)
    (tmp_path / "new.h5").write_bytes(b"appeared meanwhile")  # race: another writer won
    with pytest.raises(TraceFormatError, match=r"new\.h5: cannot move.*File exists"):
        w.close()
    assert (tmp_path / "new.h5").read_bytes() == b"appeared meanwhile"
    assert target.read_bytes() == b"precious"
    assert sorted(os.listdir(tmp_path)) == ["new.h5", "rec.h5"]


@pytest.mark.parametrize(("change", "pattern"), [
    ({"rolloff": 2.0}, "'rolloff' of tx"),
    ({"detection": "intradyne"}, r"'detection' of tx: must be one of \['heterodyne', 'homodyne'\]"),
    ({"symbol_rate_hz": 2e9}, "'symbol_rate_hz' of tx"),
    ({"pilot_frequencies_hz": (2.5e8, 2.5e8)}, "repeat"),
    ({"pilot_frequencies_hz": ()}, "at least one"),
    ({"efficiency": float("nan")}, "'efficiency' of tx.*nan"),
])
def test_writer_refuses_invalid_tx_before_creating_anything(tmp_path, change, pattern):
    tx = TxInfo(**{**TX.__dict__, **change})
    with pytest.raises(TraceFormatError, match=pattern):
        TraceWriter(tmp_path / "x.h5", tx=tx, sample_rate_hz=1e9, volts_per_code=0.04)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(("kw", "error", "pattern"), [
    ({"sample_rate_hz": float("inf")}, TraceFormatError, "sample_rate_hz"),
    ({"volts_per_code": -1.0}, TraceFormatError, "volts_per_code"),
    ({"volts_per_code": {"signal": 1.0}}, ValueError, "volts_per_code"),
    ({"adc_dtype": "int32"}, ValueError, "adc_dtype must be one of"),
    ({"compression": "zstd"}, ValueError, "compression"),
    ({"chunk_samples": 0}, ValueError, "chunk_samples"),
    ({"created_utc": "noon"}, TraceFormatError, "created_utc"),
])
def test_writer_refuses_invalid_settings(tmp_path, kw, error, pattern):
    args = {"tx": TX, "sample_rate_hz": 1e9, "volts_per_code": 0.04, **kw}
    with pytest.raises(error, match=pattern):
        TraceWriter(tmp_path / "x.h5", **args)
    assert os.listdir(tmp_path) == []


def test_append_never_rounds_or_clips_silently(tmp_path):
    with TraceWriter(tmp_path / "x.h5", tx=TX, sample_rate_hz=1e9, volts_per_code=0.04) as w:
        with pytest.raises(ValueError, match="convert and round explicitly"):
            w.append("signal", np.array([1.0, 2.0]))
        with pytest.raises(ValueError, match=r"codes span \[0, 40000\]"):
            w.append("signal", np.array([0, 40000], dtype=np.int32))
        with pytest.raises(ValueError, match="1-D"):
            w.append("signal", np.zeros((2, 2), np.int16))
        with pytest.raises(ValueError, match="dataset must be one of"):
            w.append("sig", np.zeros(2, np.int16))
        with pytest.raises(ValueError, match="complex"):
            w.write_symbols(np.ones(3))
        with pytest.raises(ValueError, match="non-finite"):
            w.write_symbols(np.array([1 + 1j, np.nan], np.complex64))
        for name in ADC_DATASETS:
            w.append(name, np.array([-32768, 5, 32767], dtype=np.int64))  # fits: accepted
        w.write_symbols(np.array([1 + 2j], np.complex128))
        with pytest.raises(ValueError, match="already written"):
            w.write_symbols(np.array([1 + 2j], np.complex64))
    with TraceReader(tmp_path / "x.h5") as r:
        np.testing.assert_array_equal(r.read("signal"), [-32768, 5, 32767])
    with TraceWriter(tmp_path / "f.h5", tx=TX, sample_rate_hz=1e9, volts_per_code=0.04,
                     adc_dtype="float32") as w:
        with pytest.raises(ValueError, match="non-finite"):
            w.append("signal", np.array([1.0, np.inf]))
        for name in ADC_DATASETS:
            w.append(name, np.array([0.25, -3.5]))  # float64 -> float32 exactly
        w.write_symbols(np.ones(2, np.complex64))
    with TraceReader(tmp_path / "f.h5") as r:
        np.testing.assert_array_equal(r.read("shot_noise"), np.float32([0.25, -3.5]))


def test_writer_after_close_refuses(tmp_path):
    adc, sym = _data()
    w = TraceWriter(tmp_path / "x.h5", tx=TX, sample_rate_hz=1e9, volts_per_code=0.04)
    for name, a in adc.items():
        w.append(name, a)
    w.write_symbols(sym)
    w.close()
    w.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        w.append("signal", adc["signal"])
    assert w.lengths == {k: a.shape[0] for k, a in adc.items()}


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(0, 10_000), max_size=8), chunk=st.integers(1, 5000))
def test_append_split_property(tmp_path, cuts, chunk):
    """Any split of the captures into appends, any HDF5 chunk size: the file reads back equal."""
    adc, sym = _data(n=3000, k=20)
    p = tmp_path / "prop.h5"
    _write(p, adc, sym, pieces=sorted(c % 3001 for c in cuts), chunk_samples=chunk)
    with TraceReader(p) as r:
        for name in ADC_DATASETS:
            np.testing.assert_array_equal(r.read(name), adc[name])


def test_declared_lengths_give_contiguous_captures_the_reader_can_map(tmp_path):
    """``lengths``: each capture in one piece (what digitizer dumps look like), the same
    samples as a chunked file, and ``map_samples`` serves any range of it without a copy;
    chunked or compressed captures are read instead."""
    adc, sym = _data()
    lengths = {k: a.shape[0] for k, a in adc.items()}
    flat, chunked, packed = tmp_path / "flat.h5", tmp_path / "chunked.h5", tmp_path / "gz.h5"
    _write(flat, adc, sym, pieces=[7, 4000, 4000], lengths=lengths, chunk_samples=1024)
    _write(chunked, adc, sym, chunk_samples=1024)
    _write(packed, adc, sym, lengths=lengths, compression="gzip", chunk_samples=1024)
    with h5py.File(flat) as f:
        assert all(f["adc"][k].chunks is None for k in ADC_DATASETS)
    with h5py.File(packed) as f:       # compression needs chunks: the lengths are limits
        assert all(f["adc"][k].chunks == (1024,) for k in ADC_DATASETS)
        assert all(f["adc"][k].maxshape == (lengths[k],) for k in ADC_DATASETS)
    with TraceReader(flat) as a, TraceReader(chunked) as b, TraceReader(packed) as c:
        for k in ADC_DATASETS:
            np.testing.assert_array_equal(a.read(k), b.read(k))
            m = a.map_samples(k, 123, 9000)
            assert isinstance(m.base.obj, mmap.mmap)
            np.testing.assert_array_equal(m, adc[k][123:9000])
            m[:] = 0                                # private: the file is not written
            np.testing.assert_array_equal(a.read(k, 123, 9000), adc[k][123:9000])
            assert c.map_samples(k, 0, 100) is None
        with pytest.raises(ValueError, match=r"signal: range \[5, 1000000\) outside"):
            a.map_samples("signal", 5, 10**6)
        np.testing.assert_array_equal(a.symbols(), sym)
        # the file cut short under an open reader: an error naming file and range, no SIGBUS
        off = int(a._extents(a._dataset("signal")[0]).offsets[0])
        with open(flat, "r+b") as fh:
            fh.truncate(off + 2 * 5000)
        with pytest.raises(TraceFormatError, match=r"flat\.h5: /adc/signal\[4000:6000\].*"
                                                   r"truncated"):
            a.map_samples("signal", 4000, 6000)


def test_declared_lengths_are_enforced(tmp_path):
    adc, sym = _data()
    lengths = {k: a.shape[0] for k, a in adc.items()}
    with pytest.raises(ValueError, match="lengths needs exactly"):
        _write(tmp_path / "a.h5", adc, sym, lengths={"signal": 5})
    with pytest.raises(ValueError, match=r"lengths\['signal'\] must be an int >= 1"):
        _write(tmp_path / "a.h5", adc, sym, lengths={**lengths, "signal": 0})
    with pytest.raises(ValueError, match="would pass its end"):
        _write(tmp_path / "a.h5", adc, sym, lengths={**lengths, "shot_noise": 100})
    for compression in (None, "gzip"):
        with pytest.raises(ValueError, match="would pass its end"):
            _write(tmp_path / "a.h5", adc, sym, lengths={**lengths, "shot_noise": 100},
                   compression=compression)
        with pytest.raises(TraceFormatError, match=r"fewer samples than declared: /adc/signal "
                                                   r"10000 of 10001"):
            _write(tmp_path / "a.h5", adc, sym, lengths={**lengths, "signal": 10_001},
                   compression=compression)
    assert not list(tmp_path.iterdir())        # nothing left behind by any of them


@pytest.mark.parametrize("kw", [{"lengths": True}, {}, {"compression": "gzip"},
                                {"compression": "lzf", "lengths": True}])
def test_written_storage_is_fully_allocated_for_the_reader_check(tmp_path, kw):
    """The reader refuses storage never written (it would read as fill values): every layout
    the writer makes (contiguous with declared lengths, chunked, compressed, partial last
    chunk) is fully allocated, and the reader opens it."""
    adc, sym = _data(n=10_000)
    if kw.pop("lengths", False):
        kw["lengths"] = {k: a.shape[0] for k, a in adc.items()}
    p = tmp_path / "w.h5"
    _write(p, adc, sym, pieces=[3000, 3001], chunk_samples=1024, **kw)
    with h5py.File(p) as f:
        for k, a in adc.items():
            ds = f["adc"][k]
            if ds.chunks is None:
                assert ds.id.get_storage_size() == a.nbytes
            else:
                assert ds.id.get_num_chunks() == -(-a.shape[0] // 1024)
    with TraceReader(p) as r:
        for k in ADC_DATASETS:
            np.testing.assert_array_equal(r.read(k), adc[k])
        np.testing.assert_array_equal(r.symbols(), sym)
