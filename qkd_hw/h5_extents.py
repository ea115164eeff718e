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

import mmap
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
        self.dtype = np.dtype(dtype)
        self.starts, self.counts, self.offsets = _merged(
            np.asarray(starts, np.int64), np.asarray(counts, np.int64),
            np.asarray(offsets, np.int64), self.dtype.itemsize)

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

    def map(self, fd: int, start: int, stop: int) -> np.ndarray | None:
        """Elements ``[start, stop)`` as an array over a memory map of the file (no copy: the
        page cache's own pages), or None when the range is not one extent. Writes to the array
        stay private to it. The map lives as long as the array (and its views).

        None too when the file system refuses the map (the caller then reads).

        Raises
        ------
        OSError
            When the file is now shorter than the extent (mapped bytes past the end of a file
            would kill the process with SIGBUS on first touch).
        """
        start, stop = int(start), int(stop)
        if not 0 <= start < stop or not hasattr(mmap, "MAP_PRIVATE"):
            return None
        i = int(np.searchsorted(self.starts, start, side="right")) - 1
        if i < 0 or stop > int(self.starts[i] + self.counts[i]):
            return None
        size = self.dtype.itemsize
        first = int(self.offsets[i]) + (start - int(self.starts[i])) * size
        end = first + (stop - start) * size
        if os.fstat(fd).st_size < end:
            raise OSError(f"file ends before byte {end}, inside the data of elements "
                          f"[{start}, {stop}) (truncated file?)")
        base = first - first % mmap.ALLOCATIONGRANULARITY
        # private and writeable, not populated: numba then sees the same (writeable) array
        # type as for a read, so no kernel is compiled twice; the kernels only read, and the
        # few pages the stream writes its kept samples into are copied (copy-on-write), the
        # file is never written
        try:
            m = mmap.mmap(fd, end - base, flags=mmap.MAP_PRIVATE,
                          prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=base)
        except OSError:     # a file system that cannot map (some network/FUSE ones): read
            return None
        return np.frombuffer(m, self.dtype, stop - start, first - base)


def _merged(starts: np.ndarray, counts: np.ndarray, offsets: np.ndarray,
            size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The extents with neighbours that continue each other in the file joined: HDF5 writes
    the chunks of a recording mostly back to back, and a range inside one joined run can be
    mapped (``Extents.map``) and read by one ``preadv``."""
    if starts.shape[0] < 2:
        return starts, counts, offsets
    joins = ((starts[1:] == starts[:-1] + counts[:-1])
             & (offsets[1:] == offsets[:-1] + counts[:-1] * size))
    first = np.concatenate([[True], ~joins])
    idx = np.flatnonzero(first)
    ends = np.concatenate([idx[1:], [starts.shape[0]]])
    merged = (starts[ends - 1] + counts[ends - 1]) - starts[idx]
    return starts[idx], merged, offsets[idx]


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
