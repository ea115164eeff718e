"""Recorded-trace I/O: the HDF5 format of ``shared/spec/trace-format.md``, version 1.

:class:`TraceReader` opens a recording, validates every required part of it
once (format name and version, datasets, dtypes, shapes, attributes with
their types and ranges) and then streams the ADC captures in chunks.
:class:`TraceWriter` writes a recording in a streaming way to a temporary
name and renames it when complete. Every problem with a file is one
:class:`~qkd_hw.errors.TraceFormatError` that names the file, the
dataset/attribute and the offending value; h5py errors never escape, also not
those that only show up while reading chunks of a damaged file.

Decisions (the spec leaves them open):

* ``/tx/symbols``: complex64 as the spec says; complex128 is accepted too
  (numpy's default complex type, what a generator writes when it forgets to
  cast) and returned as complex64. Symbols are O(1..10) SNU, float32's 1e-7
  relative precision is far below any noise in the link.
* Non-finite values never leave the reader: :meth:`TraceReader.symbols` and,
  for float32 captures, :meth:`TraceReader.read` / :meth:`TraceReader.read_into` /
  :meth:`TraceReader.iter_chunks` / :meth:`TraceReader.map_samples` check every
  array they return (one sum, memory-bandwidth cheap: ~0.6 ms per 4M float32
  samples) and raise TraceFormatError with the first bad index (never the
  values). Opening does not scan the data (a recording may be 20 GB);
  :meth:`TraceReader.verify` does, for ``qkd-hw info --verify``. So the DSP
  never needs a NaN check of its own on recorded data.
* Storage that was never written (unallocated HDF5 chunks, a contiguous
  dataset without storage) reads as the fill value, without an error: opening
  refuses it for the ADC captures and ``/tx/symbols`` (chunk index and storage
  size only, no data read).
* Frequencies (signal, pilots) must lie in ``[0, sample_rate_hz/2]``, the
  symbol rate in ``(0, sample_rate_hz)``, ``pilot_frequencies_hz[0]`` must
  equal ``pilot_frequency_hz`` to 1e-6 relative (float32 storage), pilots are
  distinct. ``volts_per_code`` may differ between the three captures (it is
  per dataset); the sample rate may not (1e-9 relative). On top, the reader refuses
  what the receiver cannot process (:func:`qkd_hw.sizes.check_processable`: >= 2
  samples per symbol, roll-off > 0, quantum band inside Nyquist and clear of the pilots,
  working memory within the machine's); the writer checks only the per-value ranges.
* ``start``/``stop`` of the read methods are strict: ``0 <= start <= stop <= length``
  (no clamping, no negative indices); a request beyond the end is a bug and is
  reported as ``ValueError``, not silently shortened.
* ADC arrays are returned in native byte order with the stored kind and size
  (a big-endian int16 file reads as native int16).
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import shutil
import threading
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from dsp.vocabulary import DETECTIONS, Detection
from qkd_hw import __version__
from qkd_hw._h5check import (
    attr_number,
    attr_str,
    attr_to_python,
    attr_where,
    check_1d,
    check_allocated,
    check_range,
    fail,
    get_dataset,
    get_group,
    open_h5,
    short_repr,
    storage_bytes,
    wrap_h5,
)
from qkd_hw.atomic import AtomicFile, DiskFullError
from qkd_hw.errors import ResourceError, TraceFormatError
from qkd_hw.h5_extents import Extents, dataset_extents
from qkd_hw.raw_key import RawKey, read_raw_key, write_raw_key
from qkd_hw.sizes import check_processable

__all__ = [
    "ADC_DATASETS",
    "ADC_DTYPES",
    "DETECTIONS",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "AdcInfo",
    "Detection",
    "RawKey",
    "TraceReader",
    "TraceWriter",
    "Truth",
    "TxInfo",
    "read_raw_key",
    "read_truth",
    "read_truth_dataset",
    "write_raw_key",
]

FORMAT_NAME = "qkd-trace"
FORMAT_VERSION = 1
ADC_DATASETS: tuple[str, ...] = ("signal", "shot_noise", "electronic_noise")
ADC_DTYPES: tuple[np.dtype, ...] = (np.dtype("int16"), np.dtype("int8"), np.dtype("float32"))
SYMBOL_DTYPES: tuple[np.dtype, ...] = (np.dtype("complex64"), np.dtype("complex128"))
TRUTH_FIELDS = (
    "transmittance",
    "excess_noise_snu",
    "electronic_noise_snu",
    "frequency_offset_hz",
    "linewidth_hz",
    "delay_samples",
    "t_eff",
)
_REL_TOL_RATE = 1e-9   # sample rates of the three captures must agree to this
_REL_TOL_PILOT = 1e-6  # pilot_frequencies_hz[0] vs pilot_frequency_hz (float32 storage)
# libhdf5 chunk cache per dataset: a chunk straddling two of our reads stays cached, so a
# compressed chunk is decompressed once (raised per dataset to 2 chunks when chunks are larger)
_CHUNK_CACHE_BYTES = 16 << 20
_CHUNK_CACHE_SLOTS = 10007  # prime, >> chunks that fit


@dataclass(frozen=True)
class TxInfo:
    """What Alice sent (``/tx``), known to Bob after the classical exchange."""

    symbol_rate_hz: float
    rolloff: float
    signal_frequency_hz: float
    pilot_frequencies_hz: tuple[float, ...]  # >= 1 entry; [0] is pilot_frequency_hz
    modulation_variance_snu: float
    efficiency: float
    detection: Detection
    n_symbols: int  # len(/tx/symbols); TraceWriter: 0 = not checked

    @property
    def pilot_frequency_hz(self) -> float:
        return self.pilot_frequencies_hz[0]


@dataclass(frozen=True)
class AdcInfo:
    """One ADC capture (``/adc/<name>``)."""

    name: str  # "signal" | "shot_noise" | "electronic_noise"
    length: int
    dtype: np.dtype  # int16 | int8 | float32 (native byte order)
    sample_rate_hz: float
    volts_per_code: float
    chunks: tuple[int, ...] | None = None  # HDF5 chunk shape, None if contiguous
    compression: str | None = None
    #: the writer's optional ``clipped_fraction`` attribute (None: absent); information only,
    #: the receiver measures its own
    clipped_fraction: float | None = None
    #: target of a soft link at ``/adc/<name>`` (None: a plain dataset)
    soft_link: str | None = None

    @property
    def duration_s(self) -> float:
        return self.length / self.sample_rate_hz


@dataclass(frozen=True)
class Truth:
    """Ground truth of a simulated recording (``/truth``); tests and benchmarks only."""

    transmittance: float
    excess_noise_snu: float
    electronic_noise_snu: float
    frequency_offset_hz: float
    linewidth_hz: float
    delay_samples: float
    t_eff: float
    extra: Mapping[str, Any] = field(default_factory=dict)  # any other /truth attrs


# ----------------------------------------------------------------------------- validation
def _check_tx_values(
    file: Path, tx: Mapping[str, Any], sample_rate_hz: float, *, where: str = "/tx"
) -> None:
    """Range checks of the /tx parameters; shared by reader and writer."""
    nyq = sample_rate_hz / 2.0

    def w(name: str) -> str:
        return attr_where(where, name)

    check_range(file, w("symbol_rate_hz"), tx["symbol_rate_hz"], gt=0.0, lt=sample_rate_hz,
                what=f"(sample rate {sample_rate_hz:g} Hz)")
    check_range(file, w("rolloff"), tx["rolloff"], ge=0.0, le=1.0)
    check_range(file, w("modulation_variance_snu"), tx["modulation_variance_snu"], gt=0.0)
    check_range(file, w("efficiency"), tx["efficiency"], gt=0.0, le=1.0)
    check_range(file, w("signal_frequency_hz"), tx["signal_frequency_hz"], ge=0.0, le=nyq,
                what=f"(Nyquist {nyq:g} Hz)")
    pilots = tx["pilot_frequencies_hz"]
    if len(pilots) == 0:
        raise fail(file, w("pilot_frequencies_hz"), "must hold at least one frequency")
    for i, f in enumerate(pilots):
        check_range(file, w(f"pilot_frequencies_hz[{i}]" if i else "pilot_frequency_hz"), f,
                    ge=0.0, le=nyq, what=f"(Nyquist {nyq:g} Hz)")
    if len(set(pilots)) != len(pilots):
        raise fail(file, w("pilot_frequencies_hz"), f"pilot frequencies repeat: {list(pilots)}")
    det = tx["detection"]
    if det not in DETECTIONS:
        raise fail(file, w("detection"),
                   f"must be one of {list(DETECTIONS)}, got {short_repr(det)}")


def _check_room(file: Path, size: int) -> None:
    """Refuse declared captures of ``size`` bytes the file cannot grow to.

    Their storage is allocated in one piece at the first write: past the file-size limit
    (``ulimit -f``, the file system's largest file) HDF5 could then neither write nor close
    the file, and its ids printed "Exception ignored" tracebacks when collected.
    """
    limits = []
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if soft != resource.RLIM_INFINITY:
        limits.append((soft, "the file-size limit (ulimit -f)"))
    folder = file.absolute().parent
    with contextlib.suppress(OSError, ValueError):   # no such folder: creating the file says so
        bits = os.pathconf(folder, "PC_FILESIZEBITS")
        if bits > 0:
            limits.append((2 ** (bits - 1) - 1, f"the largest file on {folder}'s file system"))
        limits.append((shutil.disk_usage(folder).free, f"the free disk space at {folder}"))
    for limit, what in limits:
        if size > limit:
            raise ResourceError(f"{file}: cannot create recording: the declared captures take "
                                f"{size / 1e9:.4g} GB, {what} is {limit / 1e9:.4g} GB")


def _one_line(exc: BaseException) -> str:
    """An h5py error as one line: the OS reason when there is one (libhdf5's own text spans
    lines and repeats the temporary file name)."""
    if isinstance(exc, OSError) and exc.errno:
        return f"{os.strerror(exc.errno)} (errno {exc.errno})"
    return " ".join(str(exc).split())


def _check_adc_dtype(file: Path, where: str, dtype: np.dtype) -> np.dtype:
    native = dtype.newbyteorder("=") if dtype.byteorder not in ("=", "|") else dtype
    for allowed in ADC_DTYPES:
        if native.kind == allowed.kind and native.itemsize == allowed.itemsize:
            return allowed
    raise fail(file, where, f"dtype must be one of {[str(d) for d in ADC_DTYPES]}, got {dtype}")


def _check_symbol_dtype(file: Path, where: str, dtype: np.dtype) -> np.dtype:
    for allowed in SYMBOL_DTYPES:
        if dtype.kind == allowed.kind and dtype.itemsize == allowed.itemsize:
            return allowed
    raise fail(file, where, f"dtype must be complex64 (or complex128), got {dtype}")


def _check_created_utc(file: Path, value: str) -> None:
    try:
        datetime.fromisoformat(value)
    except ValueError as exc:
        raise fail(file, attr_where("/", "created_utc"),
                   f"not an ISO 8601 timestamp: {short_repr(value)}") from exc


def _check_format(file: Path, root: h5py.Group, name: str, version: int) -> None:
    fmt = attr_str(file, root, "format", obj_name="/")
    if fmt != name:
        raise fail(file, attr_where("/", "format"), f"expected {name!r}, got {short_repr(fmt)}")
    ver = attr_number(file, root, "format_version", obj_name="/", integer=True)
    if ver != version:
        raise fail(file, attr_where("/", "format_version"),
                   f"unsupported version {ver!r}; this reader handles {name} version {version}")


# ----------------------------------------------------------------------------- reader
class TraceReader:
    """Open and validate a recording; read the ADC captures whole or in chunks.

    Everything except ``/truth`` is validated when the reader is created
    (metadata only, the data are not scanned: see :meth:`verify`).

    Parameters
    ----------
    path : path
        The HDF5 recording.
    chunk_cache_bytes : int, optional
        libhdf5 chunk cache per dataset (default 64 MiB), large enough that an
        HDF5 chunk straddling two of our reads is decompressed once.
    allow_incomplete : bool, optional
        Open a recording whose root attribute ``complete`` is false (an interrupted
        acquisition; refused by default, as the spec says).

    Attributes
    ----------
    path : Path
    description, created_utc : str or None
        Optional root attributes.
    complete : bool
        The optional root attribute ``complete`` (True when absent).
    tx : TxInfo
    adc : dict[str, AdcInfo]
        Keyed by ``"signal"``, ``"shot_noise"``, ``"electronic_noise"``.
    sample_rate_hz : float
        Common to the three captures.
    """

    def __init__(self, path: str | os.PathLike[str], *,
                 chunk_cache_bytes: int = _CHUNK_CACHE_BYTES,
                 allow_incomplete: bool = False) -> None:
        self._cache_bytes = int(chunk_cache_bytes)
        self._allow_incomplete = bool(allow_incomplete)
        # locking="best-effort": files on NFS/read-only mounts without flock still open;
        # writers never expose a file before it is complete, so readers need no lock
        self.path, self._f = open_h5(path, kind=FORMAT_NAME, rdcc_nbytes=self._cache_bytes,
                                     rdcc_nslots=_CHUNK_CACHE_SLOTS, locking="best-effort")
        # raw descriptor and per-dataset extent tables of the GIL-free reads (h5_extents);
        # the tables are built on first use, possibly from the read-ahead thread: the lock
        self._fd: int | None = None
        self._raw: dict[str, Extents | None] = {}
        self._raw_lock = threading.Lock()
        try:
            self._validate()
            with contextlib.suppress(OSError):   # no raw reads then: h5py reads everything
                self._fd = os.open(self.path, os.O_RDONLY)
                # closed by close(), or when the reader is collected unclosed (like h5py's file)
                self._fd_close = weakref.finalize(self, os.close, self._fd)
        except BaseException:
            self._f.close()
            raise

    # -- validation ---------------------------------------------------------------------
    def _validate(self) -> None:
        file, root = self.path, self._f
        _check_format(file, root, FORMAT_NAME, FORMAT_VERSION)
        self.description = attr_str(file, root, "description", obj_name="/", required=False)
        self.created_utc = attr_str(file, root, "created_utc", obj_name="/", required=False)
        if self.created_utc is not None:
            _check_created_utc(file, self.created_utc)
        self.complete = self._complete(root)

        adc = get_group(file, root, "adc")
        self._ds: dict[str, h5py.Dataset] = {}
        self.adc: dict[str, AdcInfo] = {}
        for name in ADC_DATASETS:
            ds = get_dataset(file, adc, name)
            where = ds.name
            with wrap_h5(file, where):
                dtype, chunks, compression = ds.dtype, ds.chunks, ds.compression
                if ds.is_virtual:  # a missing source file would read as fill values, silently
                    raise fail(file, where, "virtual datasets are not supported")
            native = _check_adc_dtype(file, where, dtype)
            with wrap_h5(file, where):
                link = adc.get(name, getlink=True)
            soft = link.path if isinstance(link, h5py.SoftLink) else None
            length = check_1d(file, ds)
            check_allocated(file, ds, length)
            fs = attr_number(file, ds, "sample_rate_hz")
            check_range(file, attr_where(where, "sample_rate_hz"), fs, gt=0.0)
            vpc = attr_number(file, ds, "volts_per_code")
            check_range(file, attr_where(where, "volts_per_code"), vpc, gt=0.0)
            clip = attr_number(file, ds, "clipped_fraction", required=False)
            if clip is not None:
                check_range(file, attr_where(where, "clipped_fraction"), clip, ge=0.0, le=1.0)
            del ds  # must be closed for a re-open with another chunk cache to take effect
            self._ds[name] = self._with_cache(adc, name, chunks, native.itemsize)
            self.adc[name] = AdcInfo(name, length, native, fs, vpc, chunks, compression,
                                     clip, soft)
        fs0 = self.adc["signal"].sample_rate_hz
        for name in ADC_DATASETS[1:]:
            fs = self.adc[name].sample_rate_hz
            if abs(fs - fs0) > _REL_TOL_RATE * fs0:
                raise fail(file, attr_where(f"/adc/{name}", "sample_rate_hz"),
                           f"{fs!r} differs from /adc/signal's {fs0!r}; "
                           "the three captures must share the sample rate")
        self.sample_rate_hz = fs0

        txg = get_group(file, root, "tx")
        sym = get_dataset(file, txg, "symbols")
        with wrap_h5(file, sym.name):
            sym_dtype = sym.dtype
        _check_symbol_dtype(file, sym.name, sym_dtype)
        n_symbols = check_1d(file, sym)
        check_allocated(file, sym, n_symbols)
        self._symbols = sym

        vals: dict[str, Any] = {
            k: attr_number(file, txg, k)
            for k in ("symbol_rate_hz", "rolloff", "signal_frequency_hz", "pilot_frequency_hz",
                      "modulation_variance_snu", "efficiency")
        }
        vals["detection"] = attr_str(file, txg, "detection")
        vals["pilot_frequencies_hz"] = self._pilots(txg, vals["pilot_frequency_hz"])
        _check_tx_values(file, vals, fs0)
        self.tx = TxInfo(
            symbol_rate_hz=vals["symbol_rate_hz"],
            rolloff=vals["rolloff"],
            signal_frequency_hz=vals["signal_frequency_hz"],
            pilot_frequencies_hz=vals["pilot_frequencies_hz"],
            modulation_variance_snu=vals["modulation_variance_snu"],
            efficiency=vals["efficiency"],
            detection=vals["detection"],
            n_symbols=n_symbols,
        )
        check_processable(file, self.tx, fs0, self.adc["signal"].length)

    def _complete(self, root: h5py.Group) -> bool:
        """The optional root attribute ``complete`` (absent: True); False is refused unless
        ``allow_incomplete`` (an interrupted acquisition reads as if it were whole)."""
        where = attr_where("/", "complete")
        with wrap_h5(self.path, where):
            raw = root.attrs.get("complete")
        if raw is None:
            return True
        value = raw.reshape(-1)[0] if isinstance(raw, np.ndarray) and raw.size == 1 else raw
        if not isinstance(value, bool | np.bool_):
            raise fail(self.path, where, f"expected a bool, got {short_repr(raw)}")
        if not value and not self._allow_incomplete:
            raise fail(self.path, where, "false: the acquisition was interrupted before every "
                                         "capture was written in full")
        return bool(value)

    def _with_cache(self, group: h5py.Group, name: str, chunks: tuple[int, ...] | None,
                    itemsize: int) -> h5py.Dataset:
        """Open ``group/name`` with a chunk cache of >= 2 chunks if its chunks are large."""
        need = 2 * int(np.prod(chunks)) * itemsize if chunks else 0
        with wrap_h5(self.path, f"{group.name}/{name}"):
            if need <= self._cache_bytes:
                return group[name]
            dapl = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
            dapl.set_chunk_cache(_CHUNK_CACHE_SLOTS, need, 0.75)
            return h5py.Dataset(h5py.h5d.open(group.id, name.encode(), dapl))

    def _pilots(self, txg: h5py.Group, first: float) -> tuple[float, ...]:
        file, where = self.path, attr_where("/tx", "pilot_frequencies_hz")
        with wrap_h5(file, where):
            raw = txg.attrs.get("pilot_frequencies_hz")
        if raw is None:
            return (first,)
        arr = np.asarray(raw)
        if arr.dtype.kind not in "iuf":
            raise fail(file, where, f"expected numbers, got dtype {arr.dtype}: {short_repr(raw)}")
        if arr.ndim > 1 or arr.size == 0:
            raise fail(file, where, f"expected a non-empty 1-D array, got shape {arr.shape}")
        pilots = tuple(float(v) for v in arr.reshape(-1))
        for i, f in enumerate(pilots):
            check_range(file, f"{where}[{i}]", f)
        if not math.isclose(pilots[0], first, rel_tol=_REL_TOL_PILOT, abs_tol=1e-3):
            raise fail(file, where, f"first entry {pilots[0]!r} differs from pilot_frequency_hz "
                                    f"{first!r} (the spec requires them equal)")
        return (first, *pilots[1:])

    def same_object(self, a: str, b: str) -> bool:
        """Whether ``/adc/<a>`` and ``/adc/<b>`` are one HDF5 object (hard or soft links to
        the same dataset); metadata only."""
        ds_a, _ = self._dataset(a)
        ds_b, _ = self._dataset(b)
        with wrap_h5(self.path, f"/adc/{a}, /adc/{b}"):
            return ds_a.id == ds_b.id

    # -- reading ------------------------------------------------------------------------
    def _check_open(self) -> None:
        if not self._f.id.valid:
            raise ValueError(f"{self.path}: reader is closed")

    def _range(self, what: str, length: int, start: int, stop: int | None) -> tuple[int, int]:
        stop = length if stop is None else stop
        start, stop = int(start), int(stop)
        if not 0 <= start <= stop <= length:
            raise ValueError(f"{self.path}: {what}: range [{start}, {stop}) outside [0, {length}]")
        return start, stop

    def _dataset(self, dataset: str) -> tuple[h5py.Dataset, AdcInfo]:
        self._check_open()
        if dataset not in self._ds:
            raise ValueError(f"dataset must be one of {list(ADC_DATASETS)}, got {dataset!r}")
        return self._ds[dataset], self.adc[dataset]

    def _extents(self, ds: h5py.Dataset) -> Extents | None:
        """GIL-free read plan of ``ds`` (``h5_extents``), built on first use; None: h5py."""
        name = ds.name
        with self._raw_lock:
            if name not in self._raw:
                ext = None
                if self._fd is not None:
                    try:
                        with wrap_h5(self.path, name):
                            ext = dataset_extents(ds, self._fd)
                    except (OSError, TraceFormatError):
                        ext = None     # h5py's read then reports whatever is wrong
                self._raw[name] = ext
            return self._raw[name]

    def _read_into(self, ds: h5py.Dataset, out: np.ndarray, start: int, what: str) -> np.ndarray:
        stop = start + out.shape[0]
        if out.shape[0]:
            where = f"{ds.name}[{start}:{stop}] (read failed: damaged file?)"
            ext = self._extents(ds) if out.dtype == ds.dtype else None
            if ext is not None:
                try:
                    ext.read_into(self._fd, start, out)
                except OSError as exc:
                    raise fail(self.path, where, f"{exc}") from exc
            else:
                with wrap_h5(self.path, where):
                    ds.read_direct(out, np.s_[start:stop], np.s_[0:out.shape[0]])
        return self._check_finite(ds, out, start, what)

    def _check_finite(self, ds: h5py.Dataset, out: np.ndarray, start: int,
                      what: str) -> np.ndarray:
        """``out`` (elements ``[start, start + len(out))`` of ``ds``) unless a float holds a
        NaN/inf: TraceFormatError with the first bad index, never the value."""
        # one sum first (a NaN or inf makes it non-finite; so can an overflow of huge finite
        # values, which the exact check below then clears): ~2.5x cheaper than isfinite
        if out.dtype.kind in "fc" and not np.isfinite(out.view(out.real.dtype).sum()):
            bad = ~np.isfinite(out)
            if bad.any():
                first = start + int(np.argmax(bad))
                raise fail(self.path, ds.name,
                           f"{int(bad.sum())} non-finite {what} in "
                           f"[{start}, {start + out.shape[0]}), first at index {first}")
        return out

    def read_into(self, dataset: str, out: np.ndarray, start: int = 0) -> np.ndarray:
        """Samples ``[start, start + len(out))`` of ``/adc/<dataset>`` into ``out`` (1-D,
        C-contiguous, writeable, the stored dtype), e.g. a slice of a reused buffer."""
        ds, info = self._dataset(dataset)
        if not isinstance(out, np.ndarray) or out.ndim != 1 or out.dtype != info.dtype \
                or not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError(f"{self.path}: {ds.name}: out must be a 1-D C-contiguous writeable "
                             f"{info.dtype} array, got {getattr(out, 'dtype', type(out))} "
                             f"shape {getattr(out, 'shape', None)}")
        start = int(start)
        self._range(ds.name, info.length, start, start + out.shape[0])
        return self._read_into(ds, out, start, "samples")

    def map_samples(self, dataset: str, start: int, stop: int) -> np.ndarray | None:
        """Samples ``[start, stop)`` of ``/adc/<dataset>`` as a view of the file's pages in
        memory (``h5_extents.Extents.map``: no copy; copy-on-write, so writes to it stay
        private), or None when the range is not stored as one plain extent (compressed, chunks
        apart, another dtype) or the file system cannot map: read it then.

        Float samples are checked like :meth:`read`, all of ``[start, stop)``: the room
        the receiver maps in front of a chunk was checked with the chunk before, but it is
        ~5 % of a chunk (+0.03 ms per 4M samples), not worth trusting the caller for.
        """
        ds, info = self._dataset(dataset)
        start, stop = self._range(ds.name, info.length, int(start), int(stop))
        ext = self._extents(ds)
        if ext is None or stop <= start:
            return None
        try:
            view = ext.map(self._fd, start, stop)
        except OSError as exc:
            raise fail(self.path, f"{ds.name}[{start}:{stop}]", f"{exc}") from exc
        return None if view is None else self._check_finite(ds, view, start, "samples")

    def read(self, dataset: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Samples ``[start, stop)`` of ``/adc/<dataset>`` in the stored dtype (a new array)."""
        ds, info = self._dataset(dataset)
        start, stop = self._range(ds.name, info.length, start, stop)
        return self._read_into(ds, np.empty(stop - start, info.dtype), start, "samples")

    def iter_chunks(
        self,
        dataset: str,
        chunk_samples: int,
        *,
        start: int = 0,
        stop: int | None = None,
        reuse_buffer: bool | int = False,
    ) -> Iterator[np.ndarray]:
        """Yield ``[start, stop)`` of ``/adc/<dataset>`` as contiguous chunks.

        Every chunk has ``chunk_samples`` samples except the last, which may
        be shorter; memory is bounded by one chunk. Each chunk is a fresh
        C-contiguous array in the stored dtype, unless ``reuse_buffer=True``:
        then every chunk is (a view of) ONE preallocated buffer overwritten by
        the next iteration, which saves the page faults of a fresh allocation
        (copy what you keep across iterations); ``reuse_buffer=n`` (an int > 1)
        rotates n such buffers, so a chunk stays intact while the next n - 1 are
        read (e.g. 2 for one read-ahead). Argument errors raise at the call,
        read errors (damaged file) as TraceFormatError at the chunk.
        """
        ds, info = self._dataset(dataset)
        start, stop = self._range(ds.name, info.length, start, stop)
        n = int(chunk_samples)
        if n <= 0:
            raise ValueError(f"chunk_samples must be > 0, got {chunk_samples!r}")
        n_buf = int(reuse_buffer)
        if n_buf < 0:
            raise ValueError(f"reuse_buffer must be a bool or an int >= 0, got {reuse_buffer!r}")
        return self._iter(ds, info, n, start, stop, n_buf)

    def _iter(self, ds: h5py.Dataset, info: AdcInfo, n: int, start: int, stop: int,
              n_buf: int) -> Iterator[np.ndarray]:
        bufs = [np.empty(min(n, stop - start), info.dtype) for _ in range(n_buf)]
        pos = start
        i = 0
        while pos < stop:
            m = min(n, stop - pos)
            out = bufs[i % n_buf][:m] if bufs else np.empty(m, info.dtype)
            i += 1
            self._check_open()
            yield self._read_into(ds, out, pos, "samples")
            pos += m

    def aligned_chunk_samples(self, dataset: str, approx: int) -> int:
        """A chunk length near ``approx`` that is a multiple of the HDF5 chunk length.

        Reading in such chunks (from ``start=0``) touches every HDF5 chunk once,
        which matters for compressed recordings; contiguous datasets return
        ``approx`` unchanged.
        """
        _, info = self._dataset(dataset)
        approx = int(approx)
        if approx <= 0:
            raise ValueError(f"approx must be > 0, got {approx}")
        if not info.chunks:
            return approx
        h = int(info.chunks[0])
        return max(1, round(approx / h)) * h

    def symbols(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Alice's symbols ``[start, stop)`` of ``/tx/symbols`` as complex64 (SNU)."""
        self._check_open()
        start, stop = self._range(self._symbols.name, self.tx.n_symbols, start, stop)
        with wrap_h5(self.path, self._symbols.name):
            stored = self._symbols.dtype
        out = np.empty(stop - start, np.complex64 if stored.itemsize == 8 else np.complex128)
        self._read_into(self._symbols, out, start, "symbols")
        return out if out.dtype == np.complex64 else self._narrow(out, start)

    def _narrow(self, wide: np.ndarray, start: int) -> np.ndarray:
        out = wide.astype(np.complex64)
        bad = ~np.isfinite(out)
        if bad.any():  # beyond float32 range
            raise fail(self.path, self._symbols.name,
                       f"symbol at index {start + int(np.argmax(bad))} overflows complex64")
        return out

    def verify(self, *, chunk_samples: int = 1 << 22, progress: Any = None) -> None:
        """Read every sample and symbol once: damaged chunks and non-finite values raise.

        ``progress``, if given, is called with the number of elements read
        after each chunk (e.g. ``tqdm.update``).
        """
        for name in ADC_DATASETS:
            for chunk in self.iter_chunks(name, chunk_samples, reuse_buffer=True):
                if progress is not None:
                    progress(chunk.shape[0])
        for pos in range(0, self.tx.n_symbols, chunk_samples):
            stop = min(pos + chunk_samples, self.tx.n_symbols)
            self.symbols(pos, stop)
            if progress is not None:
                progress(stop - pos)

    def has_truth(self) -> bool:
        """Whether the file holds ``/truth`` (the reader itself never reads it)."""
        self._check_open()
        with wrap_h5(self.path, "/truth"):
            return isinstance(self._f.get("truth"), h5py.Group)

    def close(self) -> None:
        if self._fd is not None:
            self._fd = None
            self._fd_close()
        if self._f.id.valid:
            self._f.close()

    @property
    def closed(self) -> bool:
        return not self._f.id.valid

    def __enter__(self) -> TraceReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.tx.n_symbols} symbols"
        return f"TraceReader({str(self.path)!r}, {state})"


# ----------------------------------------------------------------------------- truth
def _open_for_truth(path: str | os.PathLike[str]) -> tuple[Path, h5py.File]:
    file, f = open_h5(path, kind=FORMAT_NAME)
    try:
        _check_format(file, f, FORMAT_NAME, FORMAT_VERSION)
    except BaseException:
        f.close()
        raise
    return file, f


def read_truth(path: str | os.PathLike[str]) -> Truth | None:
    """Ground truth attributes of ``/truth``; None if the file has none.

    For tests and benchmarks only: a receiver never reads this.
    """
    file, f = _open_for_truth(path)
    with f:
        with wrap_h5(file, "/truth"):
            if "truth" not in f:
                return None
        g = get_group(file, f, "truth")
        vals = {k: attr_number(file, g, k) for k in TRUTH_FIELDS}
        with wrap_h5(file, "/truth attributes"):
            extra = {k: attr_to_python(g.attrs[k]) for k in g.attrs if k not in TRUTH_FIELDS}
    return Truth(**vals, extra=extra)


def read_truth_dataset(path: str | os.PathLike[str], name: str) -> np.ndarray | None:
    """The optional dataset ``/truth/<name>`` (e.g. a per-sample phase); None if absent."""
    file, f = _open_for_truth(path)
    with f:
        where = f"/truth/{name}"
        with wrap_h5(file, where):
            g = f.get("truth")
            if not isinstance(g, h5py.Group) or name not in g:
                return None
            obj = g.get(name)
            if not isinstance(obj, h5py.Dataset):
                raise fail(file, where, f"expected a dataset, found {type(obj).__name__}")
            return obj[()]


# ----------------------------------------------------------------------------- writer
def _writer_settings(file: Path, tx: TxInfo, sample_rate_hz: float,
                     volts_per_code: float | Mapping[str, float], adc_dtype: str | np.dtype,
                     chunk_samples: int, compression: str | None,
                     lengths: Mapping[str, int] | None,
                     created_utc: str | None) -> tuple[float, dict[str, float], np.dtype, int,
                                                       dict[str, int], str]:
    """``TraceWriter``'s arguments checked before a byte is written: the sample rate, volts
    per code of each capture, ADC dtype, chunk length, declared capture lengths (empty when
    not declared) and the creation time."""
    if not isinstance(tx, TxInfo):
        raise TypeError(f"tx must be a TxInfo, got {type(tx).__name__}")
    fs = float(sample_rate_hz)
    check_range(file, "sample_rate_hz", fs, gt=0.0)
    _check_tx_values(file, {f.name: getattr(tx, f.name) for f in fields(tx)}, fs, where="tx")
    if isinstance(volts_per_code, Mapping):
        unknown = set(volts_per_code) - set(ADC_DATASETS)
        if unknown or len(volts_per_code) != len(ADC_DATASETS):
            raise ValueError(f"volts_per_code mapping needs exactly the keys "
                             f"{list(ADC_DATASETS)}, got {sorted(volts_per_code)}")
        vpc = {k: float(volts_per_code[k]) for k in ADC_DATASETS}
    else:
        vpc = dict.fromkeys(ADC_DATASETS, float(volts_per_code))
    for k, v in vpc.items():
        check_range(file, f"volts_per_code[{k}]", v, gt=0.0)
    try:
        dtype = np.dtype(adc_dtype)
    except TypeError as exc:
        raise ValueError(f"adc_dtype must be one of {[str(d) for d in ADC_DTYPES]}") from exc
    if dtype not in ADC_DTYPES:
        raise ValueError(f"adc_dtype must be one of {[str(d) for d in ADC_DTYPES]}, "
                         f"got {dtype}")
    chunk_samples = int(chunk_samples)
    if not 1 <= chunk_samples * dtype.itemsize < (1 << 32):
        raise ValueError(f"chunk_samples must be >= 1 and the chunk < 4 GiB, "
                         f"got {chunk_samples}")
    if compression not in (None, "gzip", "lzf"):
        raise ValueError(f"compression must be one of [None, 'gzip', 'lzf'], "
                         f"got {compression!r}")
    fixed: dict[str, int] = {}
    if lengths is not None:
        if set(lengths) != set(ADC_DATASETS):
            raise ValueError(f"lengths needs exactly the keys {list(ADC_DATASETS)}, "
                             f"got {sorted(lengths)}")
        for k in ADC_DATASETS:
            n = lengths[k]
            if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
                raise ValueError(f"lengths[{k!r}] must be an int >= 1, got {n!r}")
            fixed[k] = int(n)
    if fixed and compression is None:   # contiguous captures, allocated whole
        _check_room(file, sum(fixed.values()) * dtype.itemsize)
    if created_utc is None:
        created_utc = datetime.now(UTC).isoformat(timespec="milliseconds")
    _check_created_utc(file, created_utc)
    return fs, vpc, dtype, chunk_samples, fixed, created_utc


class TraceWriter:
    """Write a recording in a streaming way; it appears under ``path`` only when complete.

    Use as a context manager. The file is written to ``<path>.tmp-<pid>``
    (see :mod:`qkd_hw.atomic`); on clean exit the writer checks that the
    three ADC captures and the symbols were written, re-opens the temporary
    file with :class:`TraceReader` (so it never produces a file the reader
    refuses) and renames it to ``path``. On an exception (KeyboardInterrupt
    included) the temporary file is removed and a file already at ``path``
    is untouched.

    The ADC datasets are chunked (``chunk_samples`` samples per HDF5 chunk)
    and resizable; :meth:`append` grows them, so memory stays bounded by
    what the caller passes per call.

    Parameters
    ----------
    path : path
    tx : TxInfo
        ``n_symbols`` is checked against the symbols written (0: not checked).
    sample_rate_hz : float
    volts_per_code : float or mapping of dataset name to float
    adc_dtype : {"int16", "int8", "float32"}
    description : str, optional
    chunk_samples : int
        HDF5 chunk length of the ADC datasets (default 2**20 samples).
    compression : {None, "gzip", "lzf"}
        With compression the byte-shuffle filter is enabled too.
    overwrite : bool
        Replace an existing file at ``path`` on success (default True);
        False refuses at construction and at the final rename.
    lengths : mapping of dataset name to int, optional
        The final length of each ADC capture, when known in advance (a
        simulation, a digitizer's fixed acquisition). Without compression the
        captures are then stored contiguously, in one piece each, as digitizer
        dumps usually are: a reader can map a range of such a file instead of
        copying it (``TraceReader.map_samples``); compressed ones stay
        chunked. Appending past a declared length, or closing short of it, is
        an error.
    incomplete_path : path, optional
        For acquisitions that may be interrupted: the root attribute ``complete`` is written
        ``false`` at creation and set ``true`` by :meth:`close` once everything is in; on an
        exception (or :meth:`abort`) the partial file is kept, still marked ``complete =
        false``, and moved to ``incomplete_path`` (a visible side name, so that a complete
        recording already at ``path`` is never replaced by a partial one). Readers refuse it
        unless ``allow_incomplete``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        tx: TxInfo,
        sample_rate_hz: float,
        volts_per_code: float | Mapping[str, float],
        adc_dtype: str | np.dtype = "int16",
        description: str | None = None,
        chunk_samples: int = 1 << 20,
        compression: str | None = None,
        compression_opts: Any = None,
        overwrite: bool = True,
        created_utc: str | None = None,
        lengths: Mapping[str, int] | None = None,
        incomplete_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.path = Path(path)
        self.incomplete_path = None if incomplete_path is None else Path(incomplete_path)
        fs, vpc, dtype, chunk_samples, fixed, created_utc = _writer_settings(
            self.path, tx, sample_rate_hz, volts_per_code, adc_dtype, chunk_samples,
            compression, lengths, created_utc)

        self.tx = tx
        self.sample_rate_hz = fs
        self.adc_dtype = dtype
        self.chunk_samples = chunk_samples
        self._lengths = dict.fromkeys(ADC_DATASETS, 0)
        #: declared final lengths (``lengths``): contiguous captures without compression
        self._declared = fixed
        self._n_symbols = 0
        self._symbols_mode: str | None = None  # "write" | "append"
        self._truth_written = False
        self._closed = False
        self._data_bytes = 0  # file space of the data written so far (for reserve)

        try:
            self._atomic = AtomicFile(self.path, overwrite=overwrite)
        except OSError as exc:
            raise TraceFormatError(f"{self.path}: cannot create recording: "
                                   f"{exc.strerror or exc}") from exc
        try:
            self._create_layout(vpc=vpc, fixed=fixed, description=description,
                                created_utc=created_utc, compression=compression,
                                compression_opts=compression_opts)
        except BaseException as exc:
            self._abort()
            if isinstance(exc, OSError | ValueError | RuntimeError | TypeError):
                why = exc.strerror if isinstance(exc, DiskFullError) else _one_line(exc)
                raise TraceFormatError(f"{self.path}: cannot create recording: {why}") from exc
            raise

    def _create_layout(self, *, vpc: Mapping[str, float], fixed: Mapping[str, int],
                       description: str | None, created_utc: str, compression: str | None,
                       compression_opts: Any) -> None:
        """Open the temporary file and write the root attributes, ``/adc`` and ``/tx``."""
        tx, fs, dtype = self.tx, self.sample_rate_hz, self.adc_dtype
        chunk_samples = self.chunk_samples
        chunk_bytes = chunk_samples * dtype.itemsize
        # a partly written chunk of each dataset stays in cache between appends
        self._f = h5py.File(self._atomic.tmp_path, "w",
                            rdcc_nbytes=max(16 << 20, 2 * chunk_bytes), rdcc_nslots=10007)
        self._f.attrs["format"] = FORMAT_NAME
        self._f.attrs["format_version"] = np.int64(FORMAT_VERSION)
        if description is not None:
            self._f.attrs["description"] = str(description)
        self._f.attrs["created_utc"] = created_utc
        self._f.attrs["software"] = f"qkd-hw {__version__}"
        if self.incomplete_path is not None:  # true only once close() found it whole
            self._f.attrs["complete"] = np.False_
            self._f.flush()
            self._marked_incomplete = True
        comp = {"compression": compression, "compression_opts": compression_opts,
                "shuffle": compression is not None}
        adc = self._f.create_group("adc")
        self._ds: dict[str, h5py.Dataset] = {}
        for name in ADC_DATASETS:
            n = fixed.get(name)
            if n is not None and compression is None:   # one piece, allocated when written
                ds = adc.create_dataset(name, shape=(n,), dtype=dtype)
            else:
                h = chunk_samples if n is None else min(chunk_samples, n)
                ds = adc.create_dataset(name, shape=(0,), maxshape=(n,), dtype=dtype,
                                        chunks=(h,), **comp)
            ds.attrs["sample_rate_hz"] = fs
            ds.attrs["volts_per_code"] = vpc[name]
            self._ds[name] = ds
        g = self._f.create_group("tx")
        g.attrs["symbol_rate_hz"] = float(tx.symbol_rate_hz)
        g.attrs["rolloff"] = float(tx.rolloff)
        g.attrs["signal_frequency_hz"] = float(tx.signal_frequency_hz)
        g.attrs["pilot_frequency_hz"] = float(tx.pilot_frequencies_hz[0])
        g.attrs["pilot_frequencies_hz"] = np.asarray(tx.pilot_frequencies_hz, np.float64)
        g.attrs["modulation_variance_snu"] = float(tx.modulation_variance_snu)
        g.attrs["efficiency"] = float(tx.efficiency)
        g.attrs["detection"] = str(tx.detection)
        if fixed:  # sizes known: a full disk is refused before anything is computed
            self._atomic.reserve(sum(fixed.values()) * dtype.itemsize
                                 + 8 * max(tx.n_symbols, 0))
        sym_chunk = max(1, min(chunk_samples, 1 << 18))
        self._sym = g.create_dataset("symbols", shape=(0,), maxshape=(None,),
                                     dtype=np.complex64, chunks=(sym_chunk,), **comp)

    # -- writing ------------------------------------------------------------------------
    def _check_writable(self) -> None:
        if self._closed:
            raise ValueError(f"{self.path}: writer is closed")

    def _grow(self, ds: h5py.Dataset, old: int, data: np.ndarray) -> int:
        new = old + data.shape[0]
        if data.shape[0]:
            limit = ds.maxshape[0]
            if limit is not None and new > limit:
                raise ValueError(f"{self.path}: {ds.name} was declared {limit} samples "
                                 f"long (lengths=...); appending {data.shape[0]} to {old} "
                                 "would pass its end")
            try:
                # disk space first: libhdf5 meeting ENOSPC leaves a file it cannot close
                self._data_bytes += storage_bytes(ds, new) - storage_bytes(ds, old)
                self._atomic.reserve(self._data_bytes)
                if ds.shape[0] < new:       # (a contiguous capture is created full length)
                    ds.resize((new,))
                ds.write_direct(data, None, np.s_[old:new])
            except (OSError, ValueError, RuntimeError, TypeError) as exc:
                why = exc.strerror if isinstance(exc, DiskFullError) else _one_line(exc)
                raise TraceFormatError(f"{self.path}: writing {ds.name}[{old}:{new}] "
                                       f"failed: {why}") from exc
        return new

    def append(self, dataset: str, codes: np.ndarray) -> None:
        """Append samples to ``/adc/<dataset>``.

        ``codes`` is 1-D; integers of another width are accepted when every
        value fits the ADC dtype, floats only for a float32 recording (and
        must be finite): nothing is ever rounded or clipped silently.
        """
        self._check_writable()
        if dataset not in self._ds:
            raise ValueError(f"dataset must be one of {list(ADC_DATASETS)}, got {dataset!r}")
        data = self._as_adc(dataset, np.asarray(codes))
        self._lengths[dataset] = self._grow(self._ds[dataset], self._lengths[dataset], data)

    def set_clipped_fraction(self, dataset: str, fraction: float) -> None:
        """Record the optional ``clipped_fraction`` attribute of ``/adc/<dataset>``: the
        fraction of its samples at either rail of the ADC, as the writer knows it (the
        digitizer's overload count, the simulator's clip count)."""
        self._check_writable()
        if dataset not in self._ds:
            raise ValueError(f"dataset must be one of {list(ADC_DATASETS)}, got {dataset!r}")
        value = float(fraction)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"clipped_fraction of /adc/{dataset} must be in [0, 1], "
                             f"got {fraction!r}")
        self._ds[dataset].attrs["clipped_fraction"] = value

    def _as_adc(self, dataset: str, a: np.ndarray) -> np.ndarray:
        dt = self.adc_dtype
        if a.ndim != 1:
            raise ValueError(f"append({dataset!r}): codes must be 1-D, got shape {a.shape}")
        if a.dtype == dt:
            out = a
        elif dt.kind == "f":
            if a.dtype.kind not in "iuf":
                raise ValueError(f"append({dataset!r}): expected real numbers, got {a.dtype}")
            out = a.astype(dt)
        else:
            if a.dtype.kind not in "iu":
                raise ValueError(f"append({dataset!r}): the recording stores {dt} codes, got "
                                 f"{a.dtype} (convert and round explicitly)")
            if not np.can_cast(a.dtype, dt) and a.size:
                info = np.iinfo(dt)
                lo, hi = int(a.min()), int(a.max())
                if lo < info.min or hi > info.max:
                    raise ValueError(f"append({dataset!r}): codes span [{lo}, {hi}], outside "
                                     f"the {dt} range [{info.min}, {info.max}]")
            out = a.astype(dt)
        if dt.kind == "f" and out.size and not np.isfinite(out).all():
            raise ValueError(f"append({dataset!r}): non-finite samples")
        return np.ascontiguousarray(out)

    def _as_symbols(self, symbols: np.ndarray) -> np.ndarray:
        s = np.asarray(symbols)
        if s.ndim != 1:
            raise ValueError(f"symbols must be 1-D, got shape {s.shape}")
        if s.dtype.kind != "c":
            raise ValueError(f"symbols must be complex (complex64), got {s.dtype}")
        s = np.ascontiguousarray(s, dtype=np.complex64)
        if not np.isfinite(s).all():
            raise ValueError("symbols contain non-finite values (or overflow complex64)")
        return s

    def write_symbols(self, symbols: np.ndarray) -> None:
        """Write all of ``/tx/symbols`` at once (complex64 [k]); call once."""
        self._check_writable()
        if self._symbols_mode is not None:
            raise ValueError(f"{self.path}: /tx/symbols already written "
                             "(use append_symbols to stream)")
        s = self._as_symbols(symbols)
        if s.size == 0:
            raise ValueError("symbols must not be empty")
        self._n_symbols = self._grow(self._sym, 0, s)
        self._symbols_mode = "write"

    def append_symbols(self, symbols: np.ndarray) -> None:
        """Append to ``/tx/symbols`` (streaming alternative to :meth:`write_symbols`)."""
        self._check_writable()
        if self._symbols_mode == "write":
            raise ValueError(f"{self.path}: /tx/symbols already written by write_symbols")
        self._symbols_mode = "append"
        self._n_symbols = self._grow(self._sym, self._n_symbols, self._as_symbols(symbols))

    def write_truth(self, truth: Truth) -> None:
        """Write ``/truth`` attributes (the seven fields, plus ``truth.extra``)."""
        self._check_writable()
        if self._truth_written:
            raise ValueError(f"{self.path}: /truth already written")
        clash = set(truth.extra) & set(TRUTH_FIELDS)
        if clash:
            raise ValueError(f"Truth.extra repeats field names {sorted(clash)}")
        g = self._truth_group()
        for k in TRUTH_FIELDS:
            g.attrs[k] = float(getattr(truth, k))
        for k, v in truth.extra.items():
            if v is None:
                raise ValueError(f"Truth.extra[{k!r}] is None (HDF5 attributes need a value)")
            try:
                g.attrs[k] = v
            except (TypeError, ValueError) as exc:
                raise ValueError(f"Truth.extra[{k!r}] = {short_repr(v)} cannot be stored as "
                                 f"an HDF5 attribute: {exc}") from exc
        self._truth_written = True

    def write_truth_dataset(self, name: str, data: np.ndarray) -> None:
        """Write ``/truth/<name>`` (e.g. the per-sample laser phase), chunked."""
        self._check_writable()
        if not name or "/" in name:
            raise ValueError(f"truth dataset name must be a plain name, got {name!r}")
        a = np.asarray(data)
        g = self._truth_group()
        if name in g:
            raise ValueError(f"{self.path}: /truth/{name} already written")
        chunks = (max(1, min(a.shape[0], self.chunk_samples)), *a.shape[1:]) if a.ndim else None
        if a.ndim and a.size:
            rows = -(-a.shape[0] // chunks[0]) * chunks[0]
            self._data_bytes += a.nbytes // a.shape[0] * rows
        try:
            self._atomic.reserve(self._data_bytes)
        except DiskFullError as exc:
            raise TraceFormatError(f"{self.path}: writing /truth/{name} failed: "
                                   f"{exc.strerror}") from exc
        g.create_dataset(name, data=a, chunks=chunks if a.size else None)

    def write_meta(self, name: str, text: str) -> None:
        """Write ``/meta/<name>`` as one UTF-8 string dataset (``snapshot``: the instruments'
        JSON snapshot, ``lab_config``: the lab config's TOML; spec "Optional additions")."""
        self._check_writable()
        if not name or "/" in name:
            raise ValueError(f"meta dataset name must be a plain name, got {name!r}")
        g = self._f.require_group("meta")
        if name in g:
            raise ValueError(f"{self.path}: /meta/{name} already written")
        g.create_dataset(name, data=str(text), dtype=h5py.string_dtype("utf-8"))
        self._f.flush()  # what the acquisition started from survives an interruption

    def _truth_group(self) -> h5py.Group:
        return self._f.require_group("truth")

    # -- finishing ----------------------------------------------------------------------
    def close(self) -> None:
        """Check completeness, validate and move the file to ``path``."""
        if self._closed:
            return
        try:
            short = [f"/adc/{k} {self._lengths[k]} of {n}" for k, n in self._declared.items()
                     if self._lengths[k] not in (0, n)]
            if short:
                raise TraceFormatError(f"{self.path}: recording incomplete, fewer samples than "
                                       f"declared: {', '.join(short)}; file discarded")
            missing = [f"/adc/{k}" for k, n in self._lengths.items() if n == 0]
            if self._n_symbols == 0:
                missing.append("/tx/symbols")
            if missing:
                raise TraceFormatError(f"{self.path}: recording incomplete, nothing written to "
                                       f"{', '.join(missing)}; file discarded")
            if self.tx.n_symbols not in (0, self._n_symbols):
                raise TraceFormatError(f"{self.path}: tx.n_symbols={self.tx.n_symbols} but "
                                       f"{self._n_symbols} symbols were written; file discarded")
            if self.incomplete_path is not None:
                self._f.attrs["complete"] = np.True_
                self._marked_incomplete = False  # from here a failure discards the file
            self._f.close()
            try:
                with TraceReader(self._atomic.tmp_path):
                    pass  # the writer never produces what the reader refuses
            except ResourceError:
                pass  # well-formed; only processing it needs more memory than this machine's
            try:
                self._atomic.commit()
            except OSError as exc:
                raise TraceFormatError(f"{self.path}: cannot move the finished recording "
                                       f"into place: {exc.strerror or exc}") from exc
        except BaseException:
            self._abort()
            raise
        self._closed = True

    def abort(self) -> None:
        """Discard the recording: remove the temporary file, leave ``path`` as it was."""
        self._abort()

    def _abort(self) -> None:
        self._closed = True
        f = getattr(self, "_f", None)
        if f is not None:
            try:
                if f.id.valid:
                    f.close()
            except Exception:  # discarding the file anyway; the original error matters
                pass
        atomic = getattr(self, "_atomic", None)
        if atomic is not None and not atomic.done and self._keep_partial(atomic):
            return
        if atomic is not None:
            atomic.abort()

    def _keep_partial(self, atomic: AtomicFile) -> bool:
        """Move the closed temporary file (marked ``complete = false`` since its creation) to
        ``incomplete_path``; False when there is none or the move failed (then discarded)."""
        side = getattr(self, "incomplete_path", None)
        if side is None or not getattr(self, "_marked_incomplete", False):
            return False
        try:
            os.replace(atomic.tmp_path, side)
        except OSError:
            return False
        atomic.done = True
        return True

    @property
    def lengths(self) -> dict[str, int]:
        """Samples written so far per ADC dataset."""
        return dict(self._lengths)

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self._abort()
