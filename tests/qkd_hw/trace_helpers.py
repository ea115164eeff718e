"""Helpers for the trace-I/O tests: tiny synthetic recordings written with raw h5py.

They are written WITHOUT qkd_hw.trace_io, so reader tests do not depend on
the writer being right.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

TX_ATTRS = {
    "symbol_rate_hz": 1e8,
    "rolloff": 0.2,
    "signal_frequency_hz": 1.5e8,
    "pilot_frequency_hz": 2.5e8,
    "modulation_variance_snu": 5.0,
    "efficiency": 0.7,
    "detection": "heterodyne",
}
FS = 1e9
VPC = 0.04


def write_raw_trace(
    path: Path,
    *,
    n: int = 5000,
    k: int = 400,
    dtype: str = "int16",
    chunks: int | None = None,
    compression: str | None = None,
    seed: int = 0,
    symbol_dtype: str = "complex64",
) -> dict[str, np.ndarray]:
    """A minimal valid recording; returns the arrays written."""
    rng = np.random.default_rng(seed)
    data: dict[str, np.ndarray] = {}
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "qkd-trace"
        f.attrs["format_version"] = 1
        adc = f.create_group("adc")
        for i, name in enumerate(("signal", "shot_noise", "electronic_noise")):
            m = n + 37 * i
            if np.dtype(dtype).kind == "f":
                a = rng.normal(0, 100, m).astype(dtype)
            else:
                lim = np.iinfo(dtype).max
                a = rng.integers(-lim, lim, m).astype(dtype)
            ds = adc.create_dataset(name, data=a, chunks=(chunks,) if chunks else None,
                                    compression=compression)
            ds.attrs["sample_rate_hz"] = FS
            ds.attrs["volts_per_code"] = VPC
            data[name] = a
        tx = f.create_group("tx")
        s = (rng.normal(size=k) + 1j * rng.normal(size=k)).astype(symbol_dtype)
        tx.create_dataset("symbols", data=s)
        data["symbols"] = s
        for key, v in TX_ATTRS.items():
            tx.attrs[key] = v
    return data


def replace_dataset(f: h5py.File, name: str, data: np.ndarray | None = None,
                    *, dtype: str | None = None) -> None:
    """Replace dataset ``name`` keeping its attributes (for dtype/shape corruptions)."""
    old = f[name]
    attrs = dict(old.attrs)
    if data is None:
        data = old[()]
    if dtype is not None:
        data = np.asarray(data).astype(dtype)
    del f[name]
    new = f.create_dataset(name, data=data)
    for k, v in attrs.items():
        new.attrs[k] = v
