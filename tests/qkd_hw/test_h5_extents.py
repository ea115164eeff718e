"""GIL-free raw reads of uncompressed HDF5 datasets against h5py's own reads."""

from __future__ import annotations

import mmap
import os

import h5py
import numpy as np
import pytest

from qkd_hw.h5_extents import dataset_extents

RNG = np.random.default_rng(7)


def _ranges(n: int) -> list[tuple[int, int]]:
    cuts = sorted(RNG.integers(0, n, 20).tolist())
    return [(0, n), (0, 1), (n - 1, n), (5, 5), *zip(cuts[::2], cuts[1::2], strict=True)]


@pytest.mark.parametrize("layout", [
    {"chunks": None, "dtype": np.int16, "n": 10_007},
    {"chunks": (1000,), "dtype": np.int16, "n": 10_007},       # partial last chunk
    {"chunks": (333,), "dtype": np.int8, "n": 3330},
    {"chunks": (256,), "dtype": np.complex64, "n": 5000},      # HDF5 compound (r, i)
    {"chunks": None, "dtype": np.float32, "n": 4097},
])
def test_raw_reads_equal_h5py_reads(tmp_path, layout):
    n, dt = layout["n"], np.dtype(layout["dtype"])
    data = (RNG.normal(size=n) * 1000).astype(dt) if dt.kind != "c" else \
        (RNG.normal(size=n) + 1j * RNG.normal(size=n)).astype(dt)
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        f.attrs["pad"] = np.zeros(3000)          # the data does not start at a round offset
        f.create_dataset("x", data=data, chunks=layout["chunks"])
    fd = os.open(path, os.O_RDONLY)
    try:
        with h5py.File(path, "r") as f:
            ext = dataset_extents(f["x"], fd)
            assert ext is not None
            for a, b in _ranges(n):
                out = np.empty(b - a, dt)
                ext.read_into(fd, a, out)
                np.testing.assert_array_equal(out, data[a:b])
    finally:
        os.close(fd)


@pytest.mark.parametrize("case", ["gzip", "shuffle", "big-endian", "unwritten chunk", "2-D",
                                  "empty"])
def test_layouts_the_raw_path_cannot_read_fall_back_to_h5py(tmp_path, case):
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        if case == "gzip":
            f.create_dataset("x", data=np.arange(5000, dtype=np.int16), chunks=(500,),
                             compression="gzip")
        elif case == "shuffle":
            f.create_dataset("x", data=np.arange(5000, dtype=np.int16), chunks=(500,),
                             shuffle=True)
        elif case == "big-endian":
            f.create_dataset("x", data=np.arange(5000, dtype=">i2"))
        elif case == "unwritten chunk":
            d = f.create_dataset("x", shape=(5000,), dtype=np.int16, chunks=(500,))
            d[:1000] = 1
            d[2000:] = 2
        elif case == "2-D":
            f.create_dataset("x", data=np.zeros((10, 10), np.int16))
        else:
            f.create_dataset("x", shape=(0,), dtype=np.int16)
    fd = os.open(path, os.O_RDONLY)
    try:
        with h5py.File(path, "r") as f:
            assert dataset_extents(f["x"], fd) is None
    finally:
        os.close(fd)


def test_truncated_file_reads_fail_instead_of_returning_short_data(tmp_path):
    """Reads fail; so do maps, which must not be made at all (touching mapped bytes past the
    end of a file kills the process with SIGBUS): the map checks the file's length first."""
    path = tmp_path / "d.h5"
    data = np.arange(20_000, dtype=np.int16)
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=data)
    fd = os.open(path, os.O_RDONLY)
    try:
        with h5py.File(path, "r") as f:
            ext = dataset_extents(f["x"], fd)
        assert ext is not None
        np.testing.assert_array_equal(ext.map(fd, 10_000, 20_000), data[10_000:])
        size = os.path.getsize(path)
        cut = int(ext.offsets[0]) + 2 * 15_000            # the file now ends at element 15000
        with open(path, "r+b") as fh:
            fh.truncate(min(cut, size))
        with pytest.raises(OSError, match="truncated"):
            ext.read_into(fd, 14_000, np.empty(2000, np.int16))
        np.testing.assert_array_equal(ext.map(fd, 0, 15_000), data[:15_000])
        with pytest.raises(OSError, match="truncated"):
            ext.map(fd, 14_000, 16_000)
    finally:
        os.close(fd)


def test_back_to_back_chunks_are_one_extent_and_gaps_are_kept(tmp_path):
    """Chunks HDF5 wrote next to each other in the file become one extent (one ``preadv``,
    one map); a chunk written elsewhere starts a new one, and reads across it stay exact."""
    path = tmp_path / "d.h5"
    data = (RNG.normal(size=8000) * 1000).astype(np.int16)
    with h5py.File(path, "w") as f:
        x = f.create_dataset("x", shape=(8000,), dtype=np.int16, chunks=(1000,))
        x[:4000] = data[:4000]                  # chunks 0-3 back to back
        f.flush()                               # (chunks get file space when flushed)
        f.create_dataset("other", data=np.arange(3000, dtype=np.int64))   # a gap
        f.flush()
        x[4000:] = data[4000:]
    fd = os.open(path, os.O_RDONLY)
    try:
        with h5py.File(path, "r") as f:
            ext = dataset_extents(f["x"], fd)
        assert ext is not None
        assert 2 <= ext.starts.shape[0] < 8                  # merged, but not across the gap
        np.testing.assert_array_equal(ext.starts[:2], [0, 4000])
        assert int(ext.counts.sum()) == 8000
        out = np.empty(6000, np.int16)
        ext.read_into(fd, 1000, out)
        np.testing.assert_array_equal(out, data[1000:7000])
        # a map: only inside one extent, the file's bytes, no copy; writes stay private
        m = ext.map(fd, 500, 3900)
        assert isinstance(m.base.obj, mmap.mmap)
        np.testing.assert_array_equal(m, data[500:3900])
        m[:10] = 0
        ext.read_into(fd, 500, out[:10])
        np.testing.assert_array_equal(out[:10], data[500:510])
        assert ext.map(fd, 3900, 4100) is None               # across the gap
        assert ext.map(fd, 0, 0) is None
    finally:
        os.close(fd)


def test_a_file_system_that_cannot_map_gives_none_so_the_caller_reads(tmp_path, monkeypatch):
    import errno

    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.arange(5000, dtype=np.int16))
    fd = os.open(path, os.O_RDONLY)
    try:
        with h5py.File(path, "r") as f:
            ext = dataset_extents(f["x"], fd)

        def refuse(*args, **kwargs):
            raise OSError(errno.ENODEV, "No such device")

        monkeypatch.setattr(mmap, "mmap", refuse)
        assert ext.map(fd, 0, 100) is None
    finally:
        os.close(fd)
