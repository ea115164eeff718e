"""Reads of uncompressed 1-D HDF5 datasets straight from the file, without the GIL.

h5py holds the GIL for the whole of ``H5Dread``: a reader thread that copies a chunk of a
recording then stops the main thread's Python code (measured: ~1 ms per 8 MB chunk, 0.07-0.08 s
per 2e8-sample recording of a 2-core receiver, one core idle meanwhile). For a dataset whose
bytes are stored as they are in memory (no filters, the caller's dtype and byte order) the
element range ``[a, b)`` is a set of file extents; ``os.preadv`` reads them into the output
and releases the GIL. Anything else (filters, unallocated chunks, another byte order, a layout
this module does not know) gets no extent table and the caller reads through h5py.

Each table is checked against h5py on the dataset's first and last elements before it is
used, so an address the library reports relative to something else (user block, drivers)
cannot pass silently.
"""

from __future__ import annotations

import os

import h5py
import numpy as np

__all__ = ["Extents", "dataset_extents"]

_PROBE = 512   # elements compared with h5py at each end of the dataset


class Extents:
    """File extents of a 1-D dataset: element ``starts[i]`` onward, ``counts[i]`` elements at
    byte ``offsets[i]`` of the file, sorted by element."""

    def __init__(self, starts: np.ndarray, counts: np.ndarray, offsets: np.ndarray,
                 dtype: np.dtype) -> None:
        self.starts = starts
        self.counts = counts
        self.offsets = offsets
        self.dtype = np.dtype(dtype)

    def read_into(self, fd: int, start: int, out: np.ndarray) -> None:
        """Elements ``[start, start + len(out))`` into ``out`` (C-contiguous, ``self.dtype``).

        Raises
        ------
        OSError
            From the read, or ``EIO``-like when the file ends before an extent does (a
            truncated file).
        """
        size = self.dtype.itemsize
        view = memoryview(out.view(np.uint8).reshape(-1))
        pos, stop = int(start), int(start) + out.shape[0]
        i = int(np.searchsorted(self.starts, pos, side="right")) - 1
        while pos < stop:
            a = int(self.starts[i])
            take = min(a + int(self.counts[i]), stop) - pos
            lo = (pos - start) * size
            hi = lo + take * size
            off = int(self.offsets[i]) + (pos - a) * size
            while lo < hi:
                got = os.preadv(fd, [view[lo:hi]], off)
                if got <= 0:
                    raise OSError(f"file ends at byte {off}, inside the data of element "
                                  f"{start + lo // size} (truncated file?)")
                lo += got
                off += got
            pos += take
            i += 1


def dataset_extents(ds: h5py.Dataset, fd: int) -> Extents | None:
    """The extent table of ``ds``, or None when it must be read through h5py (see module)."""
    dtype = ds.dtype
    if (not hasattr(os, "preadv") or ds.ndim != 1 or ds.is_virtual or dtype.hasobject
            or not dtype.isnative or ds.id.get_create_plist().get_nfilters() != 0):
        return None
    n = int(ds.shape[0])
    size = dtype.itemsize
    if n == 0:
        return None
    if ds.chunks is None:
        off = ds.id.get_offset()
        if off is None:
            return None
        ext = Extents(np.array([0]), np.array([n]), np.array([int(off)]), dtype)
    else:
        h = int(ds.chunks[0])
        starts, offsets, odd = [], [], []

        def visit(info) -> None:
            starts.append(int(info.chunk_offset[0]))
            offsets.append(int(info.byte_offset))
            if info.filter_mask != 0 or int(info.size) != h * size:
                odd.append(info)

        try:
            ds.id.chunk_iter(visit)
        except (AttributeError, RuntimeError):   # h5py/HDF5 without chunk iteration
            return None
        if odd:
            return None
        order = np.argsort(starts)
        s = np.asarray(starts, np.int64)[order]
        o = np.asarray(offsets, np.int64)[order]
        # every chunk allocated and in place (an unwritten one would read as fill values)
        if s.shape[0] != -(-n // h) or np.any(s != np.arange(s.shape[0]) * h):
            return None
        ext = Extents(s, np.minimum(h, n - s), o, dtype)
    for a in (0, max(0, n - _PROBE)):
        b = min(n, a + _PROBE)
        raw = np.empty(b - a, dtype)
        try:
            ext.read_into(fd, a, raw)
        except OSError:
            return None
        if raw.tobytes() != ds[a:b].tobytes():
            return None
    return ext
