"""Validation helpers shared by the HDF5 readers (recorded traces, raw keys).

Every failure becomes one :class:`~qkd_hw.errors.TraceFormatError` whose
message starts with the file name and names the object at fault
(``/tx/symbols``, ``attribute 'rolloff' of /tx``) and the offending value.
h5py errors are wrapped with ``raise ... from`` so they never escape.
Values of datasets are never put into messages (they may be key material);
attribute values are (they are parameters, not keys).
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from qkd_hw.errors import TraceFormatError
from qkd_hw.filekind import non_regular_kind

# what h5py / libhdf5 raise on damaged files and failed reads
H5_ERRORS: tuple[type[BaseException], ...] = (
    OSError, KeyError, ValueError, TypeError, RuntimeError
)


def fail(file: Path, where: str, what: str) -> TraceFormatError:
    return TraceFormatError(f"{file}: {where}: {what}")


def attr_where(obj_name: str, attr: str) -> str:
    return f"attribute {attr!r} of {obj_name}"


def short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextlib.contextmanager
def wrap_h5(file: Path, where: str) -> Iterator[None]:
    """Turn any h5py/libhdf5 error inside the block into a TraceFormatError."""
    try:
        yield
    except TraceFormatError:
        raise
    except H5_ERRORS as exc:
        raise fail(file, where, f"HDF5 error ({type(exc).__name__}: {exc})") from exc


def check_regular_file(path: Path, kind: str) -> None:
    """Refuse anything but an existing regular file (symbolic links followed) before it is
    opened: opening a FIFO blocks until a writer appears, a device reads forever."""
    try:
        what = non_regular_kind(path)
    except FileNotFoundError:
        raise TraceFormatError(f"{path}: no such file ({kind} expected)") from None
    except OSError as exc:
        raise TraceFormatError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if what is not None:
        raise TraceFormatError(f"{path}: is {what}, not a {kind} file")


def _open_nonblocking(name: str, flags: int) -> int:
    """Open without blocking (a FIFO swapped in after the check), then insist on a regular
    file by the descriptor itself."""
    fd = os.open(name, flags | getattr(os, "O_NONBLOCK", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file (replaced after the check?)")
    return fd


def open_h5(path: str | os.PathLike[str], *, kind: str, **kwargs: Any) -> tuple[Path, h5py.File]:
    """Open ``path`` read-only with a clear error for every way this can fail."""
    p = Path(path)
    check_regular_file(p, kind)
    try:
        with open(p, "rb", opener=_open_nonblocking) as fh:
            head = fh.read(8)
    except OSError as exc:
        raise TraceFormatError(f"{p}: cannot read: {exc.strerror or exc}") from exc
    try:
        f = h5py.File(p, "r", **kwargs)
    except H5_ERRORS as exc:
        if head != b"\x89HDF\r\n\x1a\n" and not h5py.is_hdf5(p):
            raise TraceFormatError(
                f"{p}: not an HDF5 file (first bytes {head!r}); a {kind} file is HDF5"
            ) from exc
        raise TraceFormatError(
            f"{p}: cannot open HDF5 file (damaged or truncated?): {exc}"
        ) from exc
    return p, f


def _get_member(file: Path, parent: h5py.Group, name: str, cls: type, kind: str) -> Any:
    full = f"{parent.name.rstrip('/')}/{name}"
    with wrap_h5(file, full):
        if name not in parent:
            raise fail(file, full, f"missing required {kind}")
        obj = parent.get(name)
        if not isinstance(obj, cls):
            raise fail(file, full, f"expected a {kind}, found {type(obj).__name__}")
    return obj


def get_group(file: Path, parent: h5py.Group, name: str) -> h5py.Group:
    return _get_member(file, parent, name, h5py.Group, "group")


def get_dataset(file: Path, parent: h5py.Group, name: str) -> h5py.Dataset:
    return _get_member(file, parent, name, h5py.Dataset, "dataset")


def check_1d(file: Path, ds: h5py.Dataset, *, allow_empty: bool = False) -> int:
    with wrap_h5(file, ds.name):
        shape = ds.shape
    if shape is None or len(shape) != 1:
        raise fail(file, ds.name, f"must be a 1-D dataset, has shape {shape}")
    if shape[0] == 0 and not allow_empty:
        raise fail(file, ds.name, "is empty (0 elements)")
    return int(shape[0])


def check_allocated(file: Path, ds: h5py.Dataset, n: int) -> None:
    """Refuse a 1-D dataset of ``n`` elements whose storage was not all written (a capture
    cut short, a writer that skipped a block): libhdf5 reads unallocated storage as the fill
    value, without an error. Metadata only (the chunk index), no data is read. Chunks are
    counted, not bytes: a compressed chunk is smaller than its elements."""
    if n == 0:
        return
    with wrap_h5(file, ds.name):
        chunks = ds.chunks
        if chunks is None:   # contiguous (compact/external: their size as declared)
            need, have = n * ds.dtype.itemsize, int(ds.id.get_storage_size())
            unit = "bytes of storage"
        else:
            need, have = -(-n // int(chunks[0])), int(ds.id.get_num_chunks())
            unit = "HDF5 chunks"
    if have < need:
        raise fail(file, ds.name, f"{need - have} of {need} {unit} never written "
                                  "(incomplete capture; they would read as the fill value)")


#: file space of the chunk index per chunk (v1 B-tree; measured 38-45 bytes per chunk)
CHUNK_INDEX_BYTES = 64


def storage_bytes(ds: h5py.Dataset, n: int) -> int:
    """Bytes of file space a 1-D dataset takes once ``n`` elements are written to it.

    Chunks are allocated whole (uncompressed size: an upper bound with compression), plus
    :data:`CHUNK_INDEX_BYTES` each for the chunk index; a contiguous dataset takes its full
    declared size at its first write.
    """
    if n <= 0:
        return 0
    item = ds.dtype.itemsize
    if ds.chunks is None:
        return int(ds.shape[0]) * item
    c = int(ds.chunks[0])
    n_chunks = -(-n // c)
    return n_chunks * (c * item + CHUNK_INDEX_BYTES)


def _raw_attr(file: Path, obj: h5py.HLObject, obj_name: str, name: str, required: bool) -> Any:
    where = attr_where(obj_name, name)
    with wrap_h5(file, where):
        if name not in obj.attrs:
            if required:
                raise fail(file, where, "missing required attribute")
            return None
        value = obj.attrs[name]
    if isinstance(value, h5py.Empty):
        raise fail(file, where, "attribute has no value (empty dataspace)")
    return value


def _unwrap_scalar(file: Path, where: str, value: Any) -> Any:
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise fail(file, where, f"expected a scalar, got an array of shape {value.shape}")
        value = value.reshape(-1)[0]
    return value


def attr_number(
    file: Path,
    obj: h5py.HLObject,
    name: str,
    *,
    obj_name: str | None = None,
    required: bool = True,
    integer: bool = False,
) -> float | int | None:
    """A real scalar attribute (ints and floats accepted; bool, str, complex refused)."""
    obj_name = obj_name or obj.name
    where = attr_where(obj_name, name)
    value = _raw_attr(file, obj, obj_name, name, required)
    if value is None:
        return None
    value = _unwrap_scalar(file, where, value)
    if isinstance(value, bool | np.bool_) or not isinstance(
        value, int | float | np.integer | np.floating
    ):
        got = f"{type(value).__name__} {short_repr(value)}"
        raise fail(file, where, f"expected a number, got {got}")
    if integer:
        if isinstance(value, int | np.integer):
            return int(value)
        fv = float(value)
        if not (math.isfinite(fv) and fv.is_integer()):
            raise fail(file, where, f"expected an integer, got {short_repr(value)}")
        return int(fv)
    return float(value)


def attr_str(
    file: Path, obj: h5py.HLObject, name: str, *, obj_name: str | None = None, required: bool = True
) -> str | None:
    obj_name = obj_name or obj.name
    where = attr_where(obj_name, name)
    value = _raw_attr(file, obj, obj_name, name, required)
    if value is None:
        return None
    value = _unwrap_scalar(file, where, value)
    if isinstance(value, bytes):  # fixed-length strings (np.bytes_) come back as bytes
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise fail(file, where, f"not UTF-8 text: {short_repr(value)}") from exc
    if not isinstance(value, str):
        got = f"{type(value).__name__} {short_repr(value)}"
        raise fail(file, where, f"expected a string, got {got}")
    return value


def check_range(
    file: Path,
    where: str,
    value: float,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    what: str = "",
) -> float:
    """Finite and within the given bounds, else a TraceFormatError naming the bounds."""
    ok = math.isfinite(value)
    ok = ok and (gt is None or value > gt) and (ge is None or value >= ge)
    ok = ok and (lt is None or value < lt) and (le is None or value <= le)
    if not ok:
        lo = f"> {gt:g}" if gt is not None else (f">= {ge:g}" if ge is not None else "")
        hi = f"< {lt:g}" if lt is not None else (f"<= {le:g}" if le is not None else "")
        bounds = " and ".join(b for b in (lo, hi) if b)
        rule = f"must be finite{' and ' + bounds if bounds else ''}"
        raise fail(file, where, f"{rule}{(' ' + what) if what else ''}, got {value!r}")
    return value


def attr_to_python(value: Any) -> Any:
    """Attribute value -> plain Python (numbers, str, lists of those stay arrays)."""
    if isinstance(value, h5py.Empty):
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    return value
