"""TraceReader: the sample recordings, and every way a file can be broken.

Header values are compared with what raw h5py reads from the same file (not
with numbers typed into the test). Corruptions are applied to COPIES of the
sample recordings in tmp_path; /work/shared is read-only.
"""

from __future__ import annotations

import mmap
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from qkd_hw.errors import ResourceError, TraceFormatError
from qkd_hw.trace_io import (
    ADC_DATASETS,
    TraceReader,
    read_truth,
    read_truth_dataset,
)
from tests.qkd_hw.trace_helpers import TX_ATTRS, replace_dataset, write_raw_trace

TX_KEYS = ("symbol_rate_hz", "rolloff", "signal_frequency_hz", "modulation_variance_snu",
           "efficiency")


# ----------------------------------------------------------------------------- sample files
@pytest.mark.parametrize("name", ["pristine", "basic", "metro"])
def test_sample_recordings_read_and_match_raw_h5py(shared_traces, name):
    path = shared_traces[name]
    with h5py.File(path, "r") as f:
        raw_tx = dict(f["tx"].attrs)
        raw = {k: f["adc"][k][()] for k in ADC_DATASETS}
        raw_attrs = {k: dict(f["adc"][k].attrs) for k in ADC_DATASETS}
        raw_sym = f["tx/symbols"][()]
        raw_desc = f.attrs.get("description")
    with TraceReader(path) as r:
        assert r.path == Path(path)
        assert r.description == raw_desc
        for k in TX_KEYS:
            assert getattr(r.tx, k) == float(raw_tx[k]), k
        assert r.tx.pilot_frequencies_hz == (float(raw_tx["pilot_frequency_hz"]),)
        assert r.tx.detection == raw_tx["detection"]
        assert r.tx.n_symbols == raw_sym.shape[0]
        for k in ADC_DATASETS:
            info = r.adc[k]
            assert info.name == k
            assert info.length == raw[k].shape[0]
            assert info.dtype == raw[k].dtype
            assert info.sample_rate_hz == float(raw_attrs[k]["sample_rate_hz"])
            assert info.volts_per_code == float(raw_attrs[k]["volts_per_code"])
            np.testing.assert_array_equal(r.read(k), raw[k])
        assert r.sample_rate_hz == float(raw_attrs["signal"]["sample_rate_hz"])
        sym = r.symbols()
        assert sym.dtype == np.complex64
        np.testing.assert_array_equal(sym, raw_sym)
        np.testing.assert_array_equal(r.symbols(10, 20), raw_sym[10:20])
        assert r.has_truth()
    assert r.closed


@pytest.mark.parametrize("name", ["pristine", "metro"])
def test_sample_truth_matches_raw_h5py(shared_traces, name):
    path = shared_traces[name]
    truth = read_truth(path)
    with h5py.File(path, "r") as f:
        attrs = dict(f["truth"].attrs)
    assert truth is not None
    for k, v in attrs.items():
        assert getattr(truth, k) == float(v)
    assert truth.extra == {}
    assert read_truth_dataset(path, "phase") is None


@pytest.mark.parametrize("chunk", [1, 999, 65536, 300001])
def test_iter_chunks_equals_full_read_on_sample(shared_traces, chunk):
    with TraceReader(shared_traces["basic"]) as r:
        full = r.read("signal")
        start, stop = 3, full.shape[0] - 5 if chunk > 1 else 2003
        parts = list(r.iter_chunks("signal", chunk, start=start, stop=stop))
    sizes = [p.shape[0] for p in parts]
    assert all(s == chunk for s in sizes[:-1]) and 0 < sizes[-1] <= chunk
    assert all(p.flags.c_contiguous and p.dtype == np.int16 for p in parts)
    np.testing.assert_array_equal(np.concatenate(parts), full[start:stop])


@pytest.mark.parametrize(("hchunk", "compression"), [(1000, None), (1024, "gzip"), (333, "lzf")])
def test_iter_chunks_on_chunked_dataset_many_times_larger(tmp_path, hchunk, compression):
    p = tmp_path / "c.h5"
    data = write_raw_trace(p, n=50_000, chunks=hchunk, compression=compression)
    with TraceReader(p) as r:
        assert r.adc["signal"].chunks == (hchunk,)
        for chunk in (777, hchunk, 4 * hchunk + 1):
            parts = list(r.iter_chunks("signal", chunk, start=11))
            np.testing.assert_array_equal(np.concatenate(parts), data["signal"][11:])
            assert len(parts) == -(-(50_000 - 11) // chunk)


def test_iter_chunks_reuse_buffer_shares_memory(tmp_path):
    p = tmp_path / "c.h5"
    data = write_raw_trace(p, n=10_000)
    with TraceReader(p) as r:
        it = r.iter_chunks("shot_noise", 3000, reuse_buffer=True)
        first = next(it)
        copy0 = first.copy()
        second = next(it)
        assert np.shares_memory(first, second)
        rest = [copy0, second.copy(), *(c.copy() for c in it)]
    np.testing.assert_array_equal(np.concatenate(rest), data["shot_noise"])


def test_iter_chunks_rotating_buffers_keep_the_previous_chunk(tmp_path):
    """reuse_buffer=2 (one read-ahead): a chunk stays intact while the next one is read."""
    p = tmp_path / "c.h5"
    data = write_raw_trace(p, n=10_000)
    with TraceReader(p) as r:
        it = r.iter_chunks("shot_noise", 3000, reuse_buffer=2)
        chunks = [next(it), next(it)]
        assert not np.shares_memory(chunks[0], chunks[1])
        np.testing.assert_array_equal(chunks[0], data["shot_noise"][:3000])
        third = next(it)
        assert np.shares_memory(third, chunks[0])
        np.testing.assert_array_equal(chunks[1], data["shot_noise"][3000:6000])
        np.testing.assert_array_equal(third, data["shot_noise"][6000:9000])
        with pytest.raises(ValueError, match="reuse_buffer"):
            r.iter_chunks("shot_noise", 3000, reuse_buffer=-1)


def test_read_into_a_slice_of_a_reused_buffer(tmp_path):
    p = tmp_path / "c.h5"
    data = write_raw_trace(p, n=10_000)
    with TraceReader(p) as r:
        buf = np.full(5000, -7, data["signal"].dtype)
        got = r.read_into("signal", buf[1000:4000], 2500)
        assert np.shares_memory(got, buf)
        np.testing.assert_array_equal(buf[1000:4000], data["signal"][2500:5500])
        assert np.all(buf[:1000] == -7) and np.all(buf[4000:] == -7)   # nothing else written
        with pytest.raises(ValueError, match="range"):
            r.read_into("signal", buf[:3000], 9000)
        for bad in (buf.astype(np.float32), buf[::2], buf.reshape(50, 100), [0, 1]):
            with pytest.raises(ValueError, match="1-D C-contiguous writeable"):
                r.read_into("signal", bad)
        ro = buf.copy()
        ro.flags.writeable = False
        with pytest.raises(ValueError, match="writeable"):
            r.read_into("signal", ro)


def test_read_ranges_are_strict(shared_traces):
    with TraceReader(shared_traces["pristine"]) as r:
        n = r.adc["signal"].length
        assert r.read("signal", n, n).shape == (0,)
        for start, stop in ((-1, 10), (5, 4), (0, n + 1)):
            with pytest.raises(ValueError, match="range"):
                r.read("signal", start, stop)
        with pytest.raises(ValueError, match="range"):
            r.symbols(0, r.tx.n_symbols + 1)
        with pytest.raises(ValueError, match="shot_noise"):  # lists the allowed names
            r.read("sginal")
        with pytest.raises(ValueError, match="chunk_samples"):
            r.iter_chunks("signal", 0)
    with pytest.raises(ValueError, match="closed"):
        r.read("signal", 0, 10)


def test_int8_float32_bigendian_and_complex128(tmp_path):
    p8 = tmp_path / "i8.h5"
    d8 = write_raw_trace(p8, dtype="int8")
    with TraceReader(p8) as r:
        assert r.adc["signal"].dtype == np.int8
        np.testing.assert_array_equal(r.read("signal"), d8["signal"])
    pf = tmp_path / "f32.h5"
    df = write_raw_trace(pf, dtype="float32", symbol_dtype="complex128")
    with TraceReader(pf) as r:
        assert r.adc["electronic_noise"].dtype == np.float32
        np.testing.assert_array_equal(r.read("electronic_noise"), df["electronic_noise"])
        s = r.symbols()
        assert s.dtype == np.complex64
        np.testing.assert_allclose(s, df["symbols"], rtol=1e-6)
    pb = tmp_path / "be.h5"
    db = write_raw_trace(pb)
    with h5py.File(pb, "r+") as f:
        replace_dataset(f, "adc/signal", dtype=">i2")
    with TraceReader(pb) as r:
        out = r.read("signal")
        assert out.dtype == np.dtype("int16") and out.dtype.isnative
        np.testing.assert_array_equal(out, db["signal"])


def test_non_finite_samples_and_symbols_raise_with_index_not_value(tmp_path):
    p = tmp_path / "nan.h5"
    data = write_raw_trace(p, n=4000, dtype="float32")
    sig = data["signal"].copy()
    sig[2500] = np.nan
    sym = data["symbols"].copy()
    sym[7] = complex(np.inf, 0)
    with h5py.File(p, "r+") as f:
        f["adc/signal"][...] = sig
        f["tx/symbols"][...] = sym
    with TraceReader(p) as r:  # opening does not scan the data
        assert r.read("signal", 0, 2500).shape == (2500,)
        with pytest.raises(TraceFormatError, match=r"nan\.h5.*/adc/signal.*2500"):
            r.read("signal")
        with pytest.raises(TraceFormatError, match="2500"):
            list(r.iter_chunks("signal", 1000))
        with pytest.raises(TraceFormatError, match=r"/tx/symbols.*index 7"):
            r.symbols()
        with pytest.raises(TraceFormatError, match="2500"):
            r.verify(chunk_samples=512)
        np.testing.assert_array_equal(r.symbols(8), data["symbols"][8:])


def test_map_samples_refuses_non_finite_like_read(tmp_path):
    """A mapped float32 range gets the same check as a read (the receiver maps the signal
    capture: a NaN must not reach the DSP); index in absolute sample numbers."""
    p = tmp_path / "nan.h5"
    data = write_raw_trace(p, n=4000, dtype="float32")
    sig = data["signal"].copy()
    sig[2500] = np.nan
    sig[3100] = -np.inf
    with h5py.File(p, "r+") as f:
        f["adc/signal"][...] = sig
        assert f["adc/signal"].chunks is None          # contiguous: map_samples maps it
    with TraceReader(p) as r:
        m = r.map_samples("signal", 100, 2500)
        assert isinstance(m.base.obj, mmap.mmap)
        np.testing.assert_array_equal(m, sig[100:2500])
        np.testing.assert_array_equal(r.map_samples("signal", 2501, 3100), sig[2501:3100])
        for a, b, first in ((2000, 3000, 2500), (2500, 2501, 2500), (3000, 4000, 3100),
                            (0, 4000, 2500)):
            with pytest.raises(TraceFormatError) as mapped:
                r.map_samples("signal", a, b)
            with pytest.raises(TraceFormatError) as read:
                r.read("signal", a, b)
            assert str(mapped.value) == str(read.value)
            assert re.fullmatch(rf"{re.escape(str(p))}: /adc/signal: \d non-finite samples in "
                                rf"\[{a}, {b}\), first at index {first}", str(mapped.value))
        assert "2 non-finite samples" in str(mapped.value)
        np.testing.assert_array_equal(r.map_samples("shot_noise", 0, 4037),
                                      data["shot_noise"])


def test_fully_written_chunked_and_compressed_storage_accepted(tmp_path):
    """The allocation check counts chunks, not bytes: compressed chunks are smaller than
    h * itemsize, a partial last chunk is a whole chunk."""
    for compression in (None, "gzip", "lzf"):
        p = tmp_path / f"c-{compression}.h5"
        data = write_raw_trace(p, n=5000, chunks=1000, compression=compression)
        with TraceReader(p) as r:
            for k in ADC_DATASETS:
                np.testing.assert_array_equal(r.read(k), data[k])


def test_truth_absent_and_truth_dataset(tmp_path):
    p = tmp_path / "t.h5"
    write_raw_trace(p)
    assert read_truth(p) is None
    assert read_truth_dataset(p, "phase") is None
    with TraceReader(p) as r:
        assert not r.has_truth()
    with h5py.File(p, "r+") as f:
        g = f.create_group("truth")
        g.create_dataset("phase", data=np.arange(5.0))
        g.attrs["transmittance"] = 0.5
    np.testing.assert_array_equal(read_truth_dataset(p, "phase"), np.arange(5.0))
    with pytest.raises(TraceFormatError, match=r"t\.h5.*'excess_noise_snu' of /truth"):
        read_truth(p)


# ----------------------------------------------------------------------------- corruptions
def _set_attr(obj: str, key: str, value):
    def mutate(f: h5py.File) -> None:
        f[obj].attrs[key] = value
    return mutate


def _del_attr(obj: str, key: str):
    def mutate(f: h5py.File) -> None:
        del f[obj].attrs[key]
    return mutate


def _del(name: str):
    def mutate(f: h5py.File) -> None:
        del f[name]
    return mutate


def _dtype(name: str, dtype: str):
    return lambda f: replace_dataset(f, name, dtype=dtype)


def _data(name: str, make: Callable[[np.ndarray], np.ndarray]):
    return lambda f: replace_dataset(f, name, make(f[name][()]))


def _as_group(name: str):
    def mutate(f: h5py.File) -> None:
        del f[name]
        f.create_group(name)
    return mutate


def _unwritten(name: str, chunks: int | None = None, skip: tuple[int, ...] = (),
               compression: str | None = None):
    """``name`` re-created with the HDF5 chunks ``skip`` never written (``chunks=None``:
    contiguous and never written at all); libhdf5 reads such storage as the fill value."""
    def mutate(f: h5py.File) -> None:
        old = f[name]
        data, attrs = old[()], dict(old.attrs)
        del f[name]
        new = f.create_dataset(name, shape=data.shape, dtype=data.dtype,
                               chunks=(chunks,) if chunks else None, compression=compression)
        for c in range(0, data.shape[0], chunks or data.shape[0]):
            if chunks and c // chunks not in skip:
                new[c:c + chunks] = data[c:c + chunks]
        new.attrs.update(attrs)
    return mutate


# (id, mutation, regex the message must match after the file name)
CORRUPTIONS: list[tuple[str, Callable[[h5py.File], None], str]] = [
    *[(f"del-{d}", _del(f"adc/{d}"), f"/adc/{d}: missing required dataset") for d in ADC_DATASETS],
    ("del-symbols", _del("tx/symbols"), "/tx/symbols: missing required dataset"),
    ("del-adc", _del("adc"), "/adc: missing required group"),
    ("del-tx", _del("tx"), "/tx: missing required group"),
    ("signal-is-group", _as_group("adc/signal"), "/adc/signal: expected a dataset"),
    *[(f"del-{d}-{a}", _del_attr(f"adc/{d}", a), f"'{a}' of /adc/{d}: missing required")
      for d in ADC_DATASETS for a in ("sample_rate_hz", "volts_per_code")],
    *[(f"del-tx-{a}", _del_attr("tx", a), f"'{a}' of /tx: missing required") for a in TX_ATTRS],
    ("del-format", _del_attr("/", "format"), "'format' of /: missing required"),
    ("del-version", _del_attr("/", "format_version"), "'format_version' of /: missing required"),
    ("format-name", _set_attr("/", "format", "qkd-traces"), "'format' of /.*'qkd-traces'"),
    ("format-bytes-wrong", _set_attr("/", "format", np.bytes_(b"hdf-trace")), "'hdf-trace'"),
    ("version-2", _set_attr("/", "format_version", 2), "'format_version' of /.*version 2"),
    ("version-str", _set_attr("/", "format_version", "1"), "'format_version' of /.*number"),
    ("version-1.5", _set_attr("/", "format_version", 1.5), "'format_version' of /.*1.5"),
    ("signal-int32", _dtype("adc/signal", "int32"), "/adc/signal: dtype.*int32"),
    ("signal-uint16", _dtype("adc/signal", "uint16"), "/adc/signal: dtype.*uint16"),
    ("shot-float64", _dtype("adc/shot_noise", "float64"), "/adc/shot_noise: dtype.*float64"),
    ("symbols-float32", _data("tx/symbols", lambda a: a.real.astype(np.float32)),
     "/tx/symbols: dtype.*float32"),
    ("signal-2d", _data("adc/signal", lambda a: a[:1000].reshape(10, 100)),
     r"/adc/signal: must be a 1-D dataset.*\(10, 100\)"),
    ("signal-scalar", _data("adc/signal", lambda a: a[0]), r"/adc/signal: must be a 1-D.*\(\)"),
    ("signal-empty", _data("adc/signal", lambda a: a[:0]), "/adc/signal: is empty"),
    ("enoise-empty", _data("adc/electronic_noise", lambda a: a[:0]),
     "/adc/electronic_noise: is empty"),
    ("symbols-empty", _data("tx/symbols", lambda a: a[:0]), "/tx/symbols: is empty"),
    ("symbols-2d", _data("tx/symbols", lambda a: a[:100].reshape(50, 2)), "/tx/symbols: must be"),
    *[(f"fs-{v}", _set_attr("adc/signal", "sample_rate_hz", v),
       f"'sample_rate_hz' of /adc/signal: must be finite and > 0, got {r}")
      for v, r in ((np.nan, "nan"), (np.inf, "inf"), (-1e9, "-1000000000.0"), (0.0, "0.0"))],
    ("fs-str", _set_attr("adc/signal", "sample_rate_hz", "1e9"),
     "'sample_rate_hz' of /adc/signal: expected a number, got str '1e9'"),
    ("fs-bool", _set_attr("adc/shot_noise", "sample_rate_hz", True),
     "'sample_rate_hz' of /adc/shot_noise: expected a number"),
    ("fs-array", _set_attr("adc/signal", "sample_rate_hz", [1e9, 1e9]),
     r"'sample_rate_hz' of /adc/signal: expected a scalar.*\(2,\)"),
    ("fs-mismatch", _set_attr("adc/shot_noise", "sample_rate_hz", 5e8),
     "'sample_rate_hz' of /adc/shot_noise: 500000000.0 differs"),
    ("vpc-zero", _set_attr("adc/electronic_noise", "volts_per_code", 0.0),
     "'volts_per_code' of /adc/electronic_noise: must be finite and > 0, got 0.0"),
    ("vpc-nan", _set_attr("adc/signal", "volts_per_code", np.nan), "'volts_per_code'.*nan"),
    ("detection-foo", _set_attr("tx", "detection", "foo"),
     r"'detection' of /tx: must be one of \['heterodyne', 'homodyne'\], got 'foo'"),
    ("detection-number", _set_attr("tx", "detection", 1), "'detection' of /tx: expected a string"),
    ("symbol-rate-nyquist", _set_attr("tx", "symbol_rate_hz", 1e9),
     "'symbol_rate_hz' of /tx: must be finite and > 0 and < 1e.09"),
    ("symbol-rate-neg", _set_attr("tx", "symbol_rate_hz", -1.0), "'symbol_rate_hz' of /tx"),
    ("rolloff-1.5", _set_attr("tx", "rolloff", 1.5), r"'rolloff' of /tx: .*\[?<= 1.*1\.5"),
    ("rolloff-neg", _set_attr("tx", "rolloff", -0.1), "'rolloff' of /tx.*-0.1"),
    ("efficiency-0", _set_attr("tx", "efficiency", 0.0), "'efficiency' of /tx.*0.0"),
    ("efficiency-1.1", _set_attr("tx", "efficiency", 1.1), "'efficiency' of /tx.*1.1"),
    ("va-0", _set_attr("tx", "modulation_variance_snu", 0.0), "'modulation_variance_snu' of /tx"),
    ("va-nan", _set_attr("tx", "modulation_variance_snu", np.nan), "modulation_variance_snu.*nan"),
    ("signal-f-nyquist", _set_attr("tx", "signal_frequency_hz", 6e8),
     "'signal_frequency_hz' of /tx.*Nyquist.*600000000.0"),
    ("pilot-f-neg", _set_attr("tx", "pilot_frequency_hz", -2.5e8), "'pilot_frequency_hz' of /tx"),
    ("pilot-f-inf", _set_attr("tx", "pilot_frequency_hz", np.inf), "'pilot_frequency_hz'.*inf"),
    ("pilots-inconsistent", _set_attr("tx", "pilot_frequencies_hz", [2.4e8, 3e8]),
     "'pilot_frequencies_hz' of /tx: first entry 240000000.0 differs"),
    ("pilots-beyond-nyquist", _set_attr("tx", "pilot_frequencies_hz", [2.5e8, 7e8]),
     r"'pilot_frequencies_hz\[1\]' of /tx.*700000000.0"),
    ("pilots-repeat", _set_attr("tx", "pilot_frequencies_hz", [2.5e8, 2.5e8]),
     "'pilot_frequencies_hz' of /tx: pilot frequencies repeat"),
    ("pilots-str", _set_attr("tx", "pilot_frequencies_hz", "250e6"), "'pilot_frequencies_hz'"),
    ("pilots-2d", _set_attr("tx", "pilot_frequencies_hz", np.full((2, 2), 2.5e8)),
     r"'pilot_frequencies_hz' of /tx: expected a non-empty 1-D.*\(2, 2\)"),
    ("created-bad", _set_attr("/", "created_utc", "last tuesday"),
     "'created_utc' of /: not an ISO 8601.*last tuesday"),
    ("description-number", _set_attr("/", "description", 3), "'description' of /: expected a str"),
    # storage never written (an interrupted capture): it would read as zeros, without an error
    ("signal-chunk-unwritten", _unwritten("adc/signal", 65536, skip=(8,)),
     r"/adc/signal: 1 of 16 HDF5 chunks never written"),
    ("shot-gzip-chunks-unwritten", _unwritten("adc/shot_noise", 65536, (0, 15), "gzip"),
     r"/adc/shot_noise: 2 of 16 HDF5 chunks never written"),
    ("enoise-never-written", _unwritten("adc/electronic_noise"),
     r"/adc/electronic_noise: 2000000 of 2000000 bytes of storage never written"),
    ("symbols-chunk-unwritten", _unwritten("tx/symbols", 4096, skip=(24,)),
     r"/tx/symbols: 1 of 25 HDF5 chunks never written"),
]


@pytest.mark.parametrize(("mutate", "pattern"), [c[1:] for c in CORRUPTIONS],
                         ids=[c[0] for c in CORRUPTIONS])
def test_corruption_is_one_clear_error(tmp_path, shared_traces, mutate, pattern):
    p = tmp_path / "corrupt-copy.h5"
    shutil.copyfile(shared_traces["pristine"], p)
    with h5py.File(p, "r+") as f:
        mutate(f)
    with pytest.raises(TraceFormatError) as ei:
        TraceReader(p)
    msg = str(ei.value)
    assert msg.startswith(f"{p}: "), msg
    assert re.search(pattern, msg), f"{pattern!r} not in {msg!r}"
    assert "\n" not in msg


def test_valid_variants_accepted(tmp_path, shared_traces):
    p = tmp_path / "variants.h5"
    shutil.copyfile(shared_traces["metro"], p)
    with h5py.File(p, "r+") as f:
        f.attrs["format"] = np.bytes_(b"qkd-trace")  # fixed-length string attr
        f.attrs["format_version"] = np.array([1], dtype=np.int32)
        f.attrs["created_utc"] = "2026-01-02T03:04:05Z"
        f["tx"].attrs["pilot_frequencies_hz"] = np.array([2.5e8, 3.1e8], np.float32)
        f["tx"].attrs["detection"] = np.bytes_(b"homodyne")
        f["tx"].attrs["efficiency"] = 1
        f["adc/shot_noise"].attrs["volts_per_code"] = 0.5  # per-capture factor is allowed
        f["extra_group"] = np.arange(3)  # extensions are ignored
    with TraceReader(p) as r:
        assert r.tx.pilot_frequencies_hz == (2.5e8, float(np.float32(3.1e8)))
        assert r.tx.detection == "homodyne"
        assert r.tx.efficiency == 1.0
        assert r.created_utc == "2026-01-02T03:04:05Z"
        assert r.adc["shot_noise"].volts_per_code == 0.5


@pytest.mark.parametrize("keep", [0, 7, 100, 2048, 4096, 1_000_000, -1])
def test_truncated_file(tmp_path, shared_traces, keep):
    src = shared_traces["pristine"]
    p = tmp_path / "truncated.h5"
    blob = src.read_bytes()
    p.write_bytes(blob[:keep] if keep >= 0 else blob[:-5000])
    with pytest.raises(TraceFormatError, match=r"^" + str(p).replace(".", r"\.") + ": "):
        TraceReader(p)


def test_not_hdf5_directory_missing(tmp_path):
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(np.random.default_rng(0).bytes(10_000))
    with pytest.raises(TraceFormatError, match=r"garbage\.h5: not an HDF5 file"):
        TraceReader(garbage)
    d = tmp_path / "dir.h5"
    d.mkdir()
    with pytest.raises(TraceFormatError, match=r"dir\.h5: is a directory"):
        TraceReader(d)
    with pytest.raises(TraceFormatError, match=r"missing\.h5: no such file"):
        TraceReader(tmp_path / "missing.h5")
    for fn in (read_truth, lambda q: read_truth_dataset(q, "x")):
        with pytest.raises(TraceFormatError, match="garbage"):
            fn(garbage)


def test_damaged_chunk_fails_on_read_not_open(tmp_path):
    """A file whose metadata is intact but a compressed chunk is garbage opens fine and
    raises TraceFormatError (not an h5py/OSError) when that chunk is read."""
    p = tmp_path / "damaged.h5"
    data = write_raw_trace(p, n=40_000, chunks=4096, compression="gzip")
    with h5py.File(p, "r") as f:
        info = f["adc/signal"].id.get_chunk_info(3)
    with open(p, "r+b") as fh:
        fh.seek(info.byte_offset + 10)
        fh.write(b"\xff" * 200)
    with TraceReader(p) as r:
        np.testing.assert_array_equal(r.read("signal", 0, 3 * 4096), data["signal"][: 3 * 4096])
        it = r.iter_chunks("signal", 4096)
        for _ in range(3):
            next(it)
        with pytest.raises(TraceFormatError, match=r"damaged\.h5: /adc/signal\[12288:16384\]"):
            next(it)
        with pytest.raises(TraceFormatError, match="damaged"):
            r.verify()


# ----------------------------------------------------------------------------- property test
_FIXTURE_OK = [HealthCheck.function_scoped_fixture]  # tmp_path is reused, each example overwrites
# independent oracle: the documented valid ranges for the template (fs 1e9, symbol rate 1e8,
# roll-off 0.2, signal 150 MHz, pilot 250 MHz, 200 signal samples, 20 symbols): >= 2 samples
# per symbol, quantum band f_s +- (1 + beta) Rs / 2 inside [0, fs/2] and clear of the pilot,
# and the receiver's memory within this machine's (~100 B x 256 phases x 32 x fs / Rs taps:
# fits below 1e3 samples per symbol, never above 1e7; in between it depends on the machine)
_ATTR_RULES = {
    "symbol_rate_hz": lambda v: v > 0 and 1e9 / v >= 2 and 0.6 * v <= 1e8 and 1e9 / v < 1e3,
    "rolloff": lambda v: 0 < v <= 1,
    "efficiency": lambda v: 0 < v <= 1,
    "modulation_variance_snu": lambda v: v > 0,
    "signal_frequency_hz": lambda v: 6e7 <= v <= 4.4e8 and abs(v - 2.5e8) >= 6e7,
    "pilot_frequency_hz": lambda v: 0 <= v <= 5e8 and not 9e7 < v < 2.1e8,
}


@pytest.fixture(scope="module")
def small_template(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("tpl") / "template.h5"
    write_raw_trace(p, n=200, k=20)
    return p


@settings(max_examples=60, deadline=None, suppress_health_check=_FIXTURE_OK)
@given(key=st.sampled_from(sorted(_ATTR_RULES)),
       value=st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64),
                       st.integers(-10, 10**10),
                       st.floats(-2, 2), st.floats(0, 1e9)))
def test_attribute_values_property(tmp_path, small_template, key, value):
    p = tmp_path / "prop.h5"
    shutil.copyfile(small_template, p)
    with h5py.File(p, "r+") as f:
        f["tx"].attrs[key] = value
    valid = bool(np.isfinite(float(value))) and _ATTR_RULES[key](float(value))
    if key == "symbol_rate_hz" and float(value) > 0:   # the machine's memory decides there
        assume(not 1e2 <= 1e9 / float(value) <= 1e7)
    if valid:
        with TraceReader(p) as r:
            tx = r.tx
        got = tx.pilot_frequencies_hz[0] if key == "pilot_frequency_hz" else getattr(tx, key)
        assert got == float(value)
    else:
        with pytest.raises((TraceFormatError, ResourceError), match=f"'{key}' of /tx"):
            TraceReader(p)


@settings(max_examples=25, deadline=None, suppress_health_check=_FIXTURE_OK)
@given(cut=st.integers(0, 10**6))
def test_truncation_property(tmp_path, small_template, cut):
    """Whatever the cut, the only failure is a TraceFormatError (never an h5py error)."""
    blob = small_template.read_bytes()
    p = tmp_path / "cut.h5"
    p.write_bytes(blob[: cut % len(blob)])
    with pytest.raises(TraceFormatError, match=r"cut\.h5"), TraceReader(p) as r:
        r.verify()


def test_large_chunks_get_a_bigger_cache_and_read_correctly(tmp_path):
    p = tmp_path / "bigchunk.h5"
    data = write_raw_trace(p, n=30_000, chunks=20_000, compression="gzip")
    with TraceReader(p, chunk_cache_bytes=1024) as r:  # chunk (40 kB) > cache: re-opened
        ds = r._ds["signal"]
        assert ds.id.get_access_plist().get_chunk_cache()[1] >= 2 * 20_000 * 2
        parts = list(r.iter_chunks("signal", 7_001, start=5))
        np.testing.assert_array_equal(np.concatenate(parts), data["signal"][5:])


def test_virtual_dataset_rejected(tmp_path):
    src = tmp_path / "src.h5"
    data = write_raw_trace(src)
    p = tmp_path / "vds.h5"
    write_raw_trace(p)
    with h5py.File(p, "r+") as f:
        attrs = dict(f["adc/signal"].attrs)
        del f["adc/signal"]
        layout = h5py.VirtualLayout(shape=data["signal"].shape, dtype=np.int16)
        layout[:] = h5py.VirtualSource(str(src), "adc/signal", shape=data["signal"].shape)
        ds = f["adc"].create_virtual_dataset("signal", layout)
        ds.attrs.update(attrs)
    with pytest.raises(TraceFormatError, match=r"vds\.h5: /adc/signal: virtual datasets"):
        TraceReader(p)


def test_iter_chunks_memory_is_bounded_by_one_chunk(tmp_path):
    """numpy allocations are traced by tracemalloc: iterating a 8 MB capture in 100 kB chunks
    must never hold more than a few chunks (a full read would show ~8 MB)."""
    import tracemalloc

    p = tmp_path / "long.h5"
    write_raw_trace(p, n=4_000_000, k=10, chunks=65536)
    with TraceReader(p) as r:
        total = 0
        tracemalloc.start()
        try:
            for c in r.iter_chunks("signal", 50_000):
                total += int(c.sum(dtype=np.int64) != 0)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert total == 80
    assert peak < 4 * 50_000 * 2, peak


def test_aligned_chunk_samples(tmp_path, shared_traces):
    p = tmp_path / "c.h5"
    write_raw_trace(p, n=5000, chunks=1000)
    with TraceReader(p) as r:
        assert r.aligned_chunk_samples("signal", 4400) == 4000
        assert r.aligned_chunk_samples("signal", 10) == 1000
        with pytest.raises(ValueError, match="approx"):
            r.aligned_chunk_samples("signal", 0)
    with TraceReader(shared_traces["pristine"]) as r:  # contiguous: unchanged
        assert r.aligned_chunk_samples("signal", 4321) == 4321
