"""GIL-free raw reads of uncompressed HDF5 datasets against h5py's own reads."""

from __future__ import annotations

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
    path = tmp_path / "d.h5"
    data = np.arange(20_000, dtype=np.int16)
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=data)
    fd = os.open(path, os.O_RDONLY)
    try:
        with h5py.File(path, "r") as f:
            ext = dataset_extents(f["x"], fd)
        assert ext is not None
        size = os.path.getsize(path)
        cut = int(ext.offsets[0]) + 2 * 15_000            # the file now ends at element 15000
        with open(path, "r+b") as fh:
            fh.truncate(min(cut, size))
        with pytest.raises(OSError, match="truncated"):
            ext.read_into(fd, 14_000, np.empty(2000, np.int16))
    finally:
        os.close(fd)
