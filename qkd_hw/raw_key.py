"""Raw-key hand-off file (DSP output, post-processing input); spec "Raw key hand-off".

Layout: root attrs ``format = "qkd-raw-key"``, ``format_version = 1``;
``/estimates`` attributes (parameter estimates, numbers); datasets
``/bob/symbols`` complex64 [n], ``/bob/tx_index`` int64 [n], ``/pe/tx_index``
int64 [m]; optionally ``/alice/symbols`` complex64 [n] (Alice's symbols at
``/bob/tx_index``, when one host holds both parties' data).

The file holds key material: it is created with mode 0600 from its first
instant (never chmod'ed afterwards), written under a temporary name and
renamed when complete (:mod:`qkd_hw.atomic`). Symbol values never appear in
a log line or an error message (only indices and counts do).

Checks (writer and reader alike):

* ``/estimates`` holds at least :data:`REQUIRED_ESTIMATES` (the spec's list),
  each a finite real number (a NaN estimate must not reach post-processing:
  the DSP fails instead of handing it over). The writer requires every value
  it is given to be a finite real number; the reader accepts the extra
  optional attributes the spec allows: real scalars are returned as floats
  as read (NaN included), any other attribute (text, arrays) is skipped, as
  :attr:`RawKey.estimates` maps names to floats;
* ``/bob/symbols`` complex64 (complex128 accepted on read and converted),
  1-D, non-empty, finite; ``/bob/tx_index`` int64, same length;
* ``/pe/tx_index`` int64, 1-D, may be empty;
* indices are >= 0, unique within each dataset, and the two sets are
  disjoint (the key symbols are the ones NOT disclosed).

Datasets are chunked, uncompressed, :data:`CHUNK` elements per chunk. HDF5 allocates
chunks whole, so the chunk sets the smallest file: 1.5 MiB for a streamed key however
short, 2 MiB with ``/alice/symbols`` (it was 25 MB with 1<<20), while 1<<16 writes a
1e7-symbol key as fast as 1<<20 did; :func:`write_raw_key` knows its sizes and uses no
chunk longer than its data.
"""

from __future__ import annotations

import cmath
import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from qkd_hw._h5check import (
    attr_number,
    attr_str,
    attr_where,
    check_1d,
    check_range,
    fail,
    get_dataset,
    get_group,
    open_h5,
    storage_bytes,
    wrap_h5,
)
from qkd_hw.atomic import AtomicFile, DiskFullError
from qkd_hw.errors import TraceFormatError

__all__ = ["RAW_KEY_FORMAT", "RAW_KEY_VERSION", "REQUIRED_ESTIMATES", "RawKey", "RawKeyWriter",
           "read_raw_key",
           "write_raw_key"]

RAW_KEY_FORMAT = "qkd-raw-key"
RAW_KEY_VERSION = 1
KEY_FILE_MODE = 0o600
REQUIRED_ESTIMATES: tuple[str, ...] = (
    "transmittance",
    "excess_noise_snu",
    "electronic_noise_snu",
    "t_eff",
    "snr",
    "key_rate_bits_per_symbol",
)
#: elements per HDF5 chunk (and per block of the rotation pass)
CHUNK = 1 << 16
#: allowed ``abs(abs(rotation) - 1)`` in :meth:`RawKeyWriter.commit` (a complex64 phasor is
#: within 1e-7 of the unit circle)
ROTATION_TOL = 1e-6


@dataclass(frozen=True, repr=False)
class RawKey:
    """Bob's raw key and the parameter estimates that go with it."""

    estimates: Mapping[str, float]
    bob_symbols: np.ndarray  # complex64 [n]
    bob_tx_index: np.ndarray  # int64 [n]
    pe_tx_index: np.ndarray  # int64 [m]

    def __repr__(self) -> str:  # never print key material
        return (f"RawKey(n={self.bob_symbols.shape[0]}, m={self.pe_tx_index.shape[0]}, "
                f"estimates={dict(self.estimates)!r})")


def _check_estimates(file: Path, est: Mapping[str, float]) -> dict[str, float]:
    missing = [k for k in REQUIRED_ESTIMATES if k not in est]
    if missing:
        raise fail(file, "/estimates", f"missing required estimates {missing}")
    out: dict[str, float] = {}
    for k, v in est.items():
        where = attr_where("/estimates", k)
        if isinstance(v, bool | np.bool_) or not isinstance(v, int | float | np.integer |
                                                            np.floating):
            raise fail(file, where, f"expected a real number, got {type(v).__name__}")
        out[k] = check_range(file, where, float(v))
    return out


def _read_extra_estimate(file: Path, g: h5py.Group, name: str) -> float | None:
    """An optional /estimates attribute as a float, ``None`` if it is not a real scalar."""
    with wrap_h5(file, attr_where("/estimates", name)):
        value = g.attrs[name]
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(-1)[0]
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.integer |
                                                             np.floating):
        return None
    return float(value)


def _check_rotation(file: Path, rotation: complex) -> np.complex64:
    try:
        rot = complex(rotation)
    except (TypeError, ValueError):
        rot = complex("nan")  # not a number: refused below, naming the value
    if not (cmath.isfinite(rot) and abs(abs(rot) - 1) <= ROTATION_TOL):
        raise ValueError(f"{file}: rotation {rotation!r} is not a finite complex number of "
                         f"modulus 1 (|rotation| - 1 must be within {ROTATION_TOL:g})")
    return np.complex64(rot)


def _check_indices(file: Path, bob: np.ndarray, pe: np.ndarray) -> None:
    for where, idx in (("/bob/tx_index", bob), ("/pe/tx_index", pe)):
        if idx.size and int(idx.min()) < 0:
            raise fail(file, where, f"negative index {int(idx.min())}")
        srt = idx if idx.size < 2 or bool((np.diff(idx) > 0).all()) else np.sort(idx)
        if srt is not idx:
            dup = np.flatnonzero(srt[1:] == srt[:-1])
            if dup.size:
                raise fail(file, where, f"index {int(srt[dup[0]])} appears more than once")
        if where == "/pe/tx_index":
            pe_sorted = srt
    if pe.size and bob.size:
        lo = min(int(bob.min()), int(pe_sorted[0]))
        span = max(int(bob.max()), int(pe_sorted[-1])) - lo + 1
        if span <= 4 * (bob.size + pe.size):
            # the indices of a streamed block are dense: one pass over a mark array instead
            # of a binary search per key index (0.2 s per 1e7 symbols)
            seen = np.zeros(span, np.bool_)
            seen[pe_sorted - lo] = True
            both = seen[bob - lo]
        else:
            pos = np.clip(np.searchsorted(pe_sorted, bob), 0, pe_sorted.size - 1)
            both = pe_sorted[pos] == bob
        if both.any():
            raise fail(file, "/bob/tx_index", f"{int(both.sum())} indices also in /pe/tx_index "
                       f"(first {int(bob[np.argmax(both)])}); key symbols must not be disclosed")


def _as_index(file: Path, where: str, a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 1:
        raise fail(file, where, f"must be 1-D, got shape {a.shape}")
    if a.dtype.kind not in "iu" and not (a.size == 0 and a.dtype.kind == "f"):
        raise fail(file, where, f"must be integer (int64), got dtype {a.dtype}")
    if a.dtype.kind == "u" and a.size and int(a.max()) > np.iinfo(np.int64).max:
        raise fail(file, where, "index beyond int64 range")
    return np.ascontiguousarray(a, dtype=np.int64)


def _as_symbols(file: Path, a: np.ndarray, where: str = "/bob/symbols") -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 1:
        raise fail(file, where, f"must be 1-D, got shape {a.shape}")
    if a.dtype.kind != "c":
        raise fail(file, where, f"must be complex64, got dtype {a.dtype}")
    if a.size == 0:
        raise fail(file, where, "is empty (0 symbols)")
    out = np.ascontiguousarray(a, dtype=np.complex64)
    bad = ~np.isfinite(out)
    if bad.any():
        raise fail(file, where, f"{int(bad.sum())} non-finite symbols, first at index "
                                f"{int(np.argmax(bad))}")
    return out


def write_raw_key(path: str | os.PathLike[str], raw: RawKey, *, overwrite: bool = True) -> None:
    """Write ``raw`` to ``path``: validated, mode 0600 from creation, atomic."""
    file = Path(path)
    est = _check_estimates(file, raw.estimates)
    sym = _as_symbols(file, raw.bob_symbols)
    bob = _as_index(file, "/bob/tx_index", raw.bob_tx_index)
    pe = _as_index(file, "/pe/tx_index", raw.pe_tx_index)
    if bob.shape[0] != sym.shape[0]:
        raise fail(file, "/bob/tx_index", f"length {bob.shape[0]} differs from /bob/symbols "
                                          f"length {sym.shape[0]}")
    _check_indices(file, bob, pe)
    # sizes known: no chunk larger than the data (chunks are allocated whole)
    with RawKeyWriter(file, overwrite=overwrite,
                      chunk=min(CHUNK, max(sym.shape[0], pe.shape[0]))) as w:
        w._write(sym, bob, pe)
        w.commit(est)


class RawKeyWriter:
    """Streaming raw-key writer, so the key of a 1e9-symbol block never sits in memory.

    Blocks are appended in transmission order (every index of a block above every index of
    the blocks before it, which makes uniqueness and key/PE disjointness a per-block check);
    :meth:`commit` applies one common phase rotation to all symbols in place, chunk by chunk,
    writes the estimates and renames the file into place. The file is mode 0600 from creation;
    on an exception (or :meth:`abort`) nothing is left at ``path``.

    ``chunk`` is the number of elements per HDF5 chunk and per block of the rotation pass
    (default :data:`CHUNK`). With ``alice`` the file also holds ``/alice/symbols``: every
    :meth:`append` then gives Alice's symbols of its key indices, which :meth:`commit` leaves
    unrotated (the rotation is Bob's residual carrier phase). Invalid arguments (a block
    whose symbol and index counts differ, a rotation off the unit circle) raise
    ``ValueError`` before anything is written; the writer is then still open, to be aborted
    (the ``with`` block does) or used again.
    """

    def __init__(self, path: str | os.PathLike[str], *, overwrite: bool = True,
                 chunk: int = CHUNK, alice: bool = False) -> None:
        self.file = Path(path)
        self._chunk = int(chunk)
        self._last = -1
        self._n = 0
        try:
            self._atomic = AtomicFile(self.file, mode=KEY_FILE_MODE, overwrite=overwrite)
        except OSError as exc:
            raise TraceFormatError(f"{self.file}: cannot create raw-key file: {exc}") from exc
        try:
            self._h5 = h5py.File(self._atomic.tmp_path, "w")
            self._h5.attrs["format"] = RAW_KEY_FORMAT
            self._h5.attrs["format_version"] = np.int64(RAW_KEY_VERSION)
            b = self._h5.create_group("bob")
            opts = {"shape": (0,), "maxshape": (None,), "chunks": (self._chunk,)}
            self._sym = b.create_dataset("symbols", dtype=np.complex64, **opts)
            self._bob = b.create_dataset("tx_index", dtype=np.int64, **opts)
            self._pe = self._h5.create_group("pe").create_dataset("tx_index", dtype=np.int64,
                                                                  **opts)
            self._alice = (self._h5.create_group("alice").create_dataset(
                "symbols", dtype=np.complex64, **opts) if alice else None)
        except BaseException as exc:
            self.abort()
            raise self._wrap(exc) from exc

    def __enter__(self) -> RawKeyWriter:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if exc is not None or self._h5 is not None:  # exception, or never committed
            self.abort()

    def append(self, bob_symbols: np.ndarray, bob_tx_index: np.ndarray,
               pe_tx_index: np.ndarray, alice_symbols: np.ndarray | None = None) -> None:
        """Append one block of key symbols (complex64, SNU) and the disclosed indices; with
        ``/alice/symbols`` (``alice=True``) also Alice's symbols at ``bob_tx_index``."""
        f = self.file
        if (alice_symbols is None) != (self._alice is None):
            raise ValueError(f"{f}: /alice/symbols: " + (
                "this writer was opened without alice=True" if alice_symbols is not None
                else "Alice's symbols missing for this block (writer opened with alice=True)"))
        bob = _as_index(f, "/bob/tx_index", bob_tx_index)
        pe = _as_index(f, "/pe/tx_index", pe_tx_index)
        sym = np.asarray(bob_symbols)
        n_sym = sym.shape[0] if sym.ndim == 1 else sym.size
        if n_sym != bob.shape[0]:  # also for an empty block: symbols must never be dropped
            raise ValueError(f"{f}: /bob/tx_index: block length {bob.shape[0]} differs from "
                             f"its {n_sym} symbols")
        sym = _as_symbols(f, sym) if bob.size else np.empty(0, np.complex64)
        alice = None
        if alice_symbols is not None:
            alice = np.asarray(alice_symbols)
            n_alice = alice.shape[0] if alice.ndim == 1 else alice.size
            if n_alice != n_sym:
                raise ValueError(f"{f}: /alice/symbols: block length {n_alice} differs from "
                                 f"its {n_sym} /bob/symbols")
            alice = (_as_symbols(f, alice, "/alice/symbols") if bob.size
                     else np.empty(0, np.complex64))
        _check_indices(f, bob, pe)
        lo = min(int(bob.min()) if bob.size else self._last + 1,
                 int(pe.min()) if pe.size else self._last + 1)
        if lo <= self._last:
            raise fail(f, "/bob/tx_index", f"block starts at index {lo}, not after the last "
                                           f"appended index {self._last}")
        self._write(sym, bob, pe, alice)

    def _write(self, sym: np.ndarray, bob: np.ndarray, pe: np.ndarray,
               alice: np.ndarray | None = None) -> None:
        try:
            blocks = ((self._sym, sym), (self._bob, bob), (self._pe, pe))
            if alice is not None:
                blocks += ((self._alice, alice),)
            # disk space first: libhdf5 meeting ENOSPC leaves a file it cannot close
            self._atomic.reserve(sum(storage_bytes(ds, ds.shape[0] + d.shape[0])
                                     for ds, d in blocks))
            for ds, data in blocks:
                n0 = ds.shape[0]
                ds.resize((n0 + data.shape[0],))
                ds[n0:] = data
        except BaseException as exc:
            self.abort()
            raise self._wrap(exc) from exc
        self._n += sym.shape[0]
        for idx in (bob, pe):
            if idx.size:
                self._last = max(self._last, int(idx.max()))

    def commit(self, estimates: Mapping[str, float], rotation: complex = 1.0) -> None:
        """Rotate every symbol by ``rotation``, write the estimates, rename.

        Raises
        ------
        ValueError
            ``rotation`` is not a finite complex number with ``abs(rotation)`` within
            :data:`ROTATION_TOL` of 1 (a scaled key would be in the wrong units); checked
            before anything is written, the writer stays open.
        TraceFormatError
            Invalid estimates (the writer stays open), no symbols appended or a failed
            write (the writer is aborted).
        """
        rot = _check_rotation(self.file, rotation)
        est = _check_estimates(self.file, estimates)
        if self._n == 0:
            self.abort()
            raise fail(self.file, "/bob/symbols", "is empty (0 symbols)")
        try:
            if rot != 1:
                for i in range(0, self._n, self._chunk):
                    block = self._sym[i:i + self._chunk]
                    block *= rot
                    self._sym[i:i + self._chunk] = block
            g = self._h5.create_group("estimates")
            for k, v in est.items():
                g.attrs[k] = v
            self._h5.close()
            self._h5 = None
            self._atomic.commit()
        except BaseException as exc:
            self.abort()
            raise self._wrap(exc) from exc

    def abort(self) -> None:
        """Discard everything written; the target path is left as it was."""
        h5, self._h5 = getattr(self, "_h5", None), None
        if h5 is not None:
            with contextlib.suppress(Exception):
                h5.close()
        self._atomic.abort()

    def _wrap(self, exc: BaseException) -> BaseException:
        if isinstance(exc, TraceFormatError) or not isinstance(
                exc, OSError | ValueError | RuntimeError | TypeError):
            return exc
        if isinstance(exc, DiskFullError):  # names the sizes; the path is said already
            return TraceFormatError(f"{self.file}: writing raw key failed: {exc.strerror}")
        return TraceFormatError(f"{self.file}: writing raw key failed: {exc}")


def read_raw_key(path: str | os.PathLike[str]) -> RawKey:
    """Read and validate a raw-key file (format, version, estimates, datasets, indices)."""
    file, f = open_h5(path, kind=RAW_KEY_FORMAT)
    with f:
        fmt = attr_str(file, f, "format", obj_name="/")
        if fmt != RAW_KEY_FORMAT:
            raise fail(file, attr_where("/", "format"), f"expected {RAW_KEY_FORMAT!r}, got {fmt!r}")
        ver = attr_number(file, f, "format_version", obj_name="/", integer=True)
        if ver != RAW_KEY_VERSION:
            raise fail(file, attr_where("/", "format_version"),
                       f"unsupported version {ver!r}; this reader handles {RAW_KEY_FORMAT} "
                       f"version {RAW_KEY_VERSION}")
        g = get_group(file, f, "estimates")
        with wrap_h5(file, "/estimates"):
            names = list(g.attrs)
        missing = [k for k in REQUIRED_ESTIMATES if k not in names]
        if missing:
            raise fail(file, "/estimates", f"missing required estimates {missing}")
        est = {k: check_range(file, attr_where("/estimates", k), attr_number(file, g, k))
               for k in REQUIRED_ESTIMATES}
        # extra attributes are optional (spec): real scalars kept as read, others skipped
        for k in names:
            if k not in est and (v := _read_extra_estimate(file, g, k)) is not None:
                est[k] = v
        bob_g = get_group(file, f, "bob")
        pe_g = get_group(file, f, "pe")
        arrays = {}
        for where, grp, name, kinds in (("/bob/symbols", bob_g, "symbols", "c"),
                                        ("/bob/tx_index", bob_g, "tx_index", "iu"),
                                        ("/pe/tx_index", pe_g, "tx_index", "iu")):
            ds = get_dataset(file, grp, name)
            check_1d(file, ds, allow_empty=where == "/pe/tx_index")
            with wrap_h5(file, where):
                dt = ds.dtype
            if dt.kind not in kinds or (dt.kind == "c" and dt.itemsize not in (8, 16)):
                want = "complex64" if kinds == "c" else "int64"
                raise fail(file, where, f"dtype must be {want}, got {dt}")
            with wrap_h5(file, f"{where} (read failed: damaged file?)"):
                arrays[where] = ds[()]
    sym = _as_symbols(file, arrays["/bob/symbols"])
    bob = _as_index(file, "/bob/tx_index", arrays["/bob/tx_index"])
    pe = _as_index(file, "/pe/tx_index", arrays["/pe/tx_index"])
    if bob.shape[0] != sym.shape[0]:
        raise fail(file, "/bob/tx_index", f"length {bob.shape[0]} differs from /bob/symbols "
                                          f"length {sym.shape[0]}")
    _check_indices(file, bob, pe)
    return RawKey(estimates=est, bob_symbols=sym, bob_tx_index=bob, pe_tx_index=pe)
