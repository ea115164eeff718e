"""Files of post-processing: Alice's symbols from the raw key, KEY.h5, the public transcript.

``KEY.h5`` (key material: mode 0600 from creation, written atomically, :mod:`qkd_hw.atomic`):
root attrs ``format = "qkd-final-key"``, ``format_version = 1``; datasets ``/alice/key`` and
``/bob/key``, uint8, the final key bits packed 8 per byte (``numpy.packbits``, first bit in
the most significant bit), each with attr ``n_bits``; ``/parameters`` attributes: the final
key length and every parameter that bounds its secrecy (leakage, epsilons, PE bounds,
reconciliation code, frame counts).

The transcript file (public; ordinary permissions): root attrs ``format = "qkd-transcript"``,
``format_version = 1`` and a summary; one group ``/messages/<seq, 8 digits>`` per message
with attrs ``sender``, ``receiver``, ``kind``, ``frame``, ``leaked_bits`` and one dataset per
payload item. Written as the messages are sent (it is the channel's recorder), renamed into
place when complete.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np

from qkd_hw._h5check import check_1d, fail, get_dataset, get_group, open_h5, wrap_h5
from qkd_hw.atomic import AtomicFile, atomic_write
from qkd_hw.errors import TraceFormatError
from qkd_hw.postprocessing.channel import Message

__all__ = ["KEY_FORMAT", "TRANSCRIPT_FORMAT", "TranscriptFile", "alice_symbols_from_trace",
           "read_alice_symbols", "read_key_file", "write_key_file"]

KEY_FORMAT = "qkd-final-key"
TRANSCRIPT_FORMAT = "qkd-transcript"
FORMAT_VERSION = 1
KEY_FILE_MODE = 0o600


def read_alice_symbols(path: str | os.PathLike[str], n: int) -> np.ndarray:
    """``/alice/symbols`` of a raw-key file (complex64 [n], finite), checked against Bob's n.

    Raises
    ------
    TraceFormatError
        Missing, not 1-D complex, a length other than ``n`` (Bob's), or non-finite values
        (counted, first index named; no value is ever printed).
    """
    file, f = open_h5(path, kind="qkd-raw-key")
    with f:
        with wrap_h5(file, "/alice"):
            present = "alice" in f
        if not present:
            raise fail(file, "/alice/symbols", "missing: this raw key holds Bob's data only "
                                               "(give Alice's symbols with --alice-from)")
        g = get_group(file, f, "alice")
        ds = get_dataset(file, g, "symbols")
        length = check_1d(file, ds)
        with wrap_h5(file, "/alice/symbols"):
            dt = ds.dtype
        if dt.kind != "c" or dt.itemsize not in (8, 16):
            raise fail(file, "/alice/symbols", f"dtype must be complex64, got {dt}")
        if length != n:
            raise fail(file, "/alice/symbols", f"length {length} differs from /bob/symbols "
                                               f"length {n}")
        with wrap_h5(file, "/alice/symbols (read failed: damaged file?)"):
            sym = np.ascontiguousarray(ds[()], dtype=np.complex64)
    bad = ~np.isfinite(sym)
    if bad.any():
        raise fail(file, "/alice/symbols", f"{int(bad.sum())} non-finite symbols, first at "
                                           f"index {int(np.argmax(bad))}")
    return sym


def alice_symbols_from_trace(trace: str | os.PathLike[str], tx_index: np.ndarray
                             ) -> np.ndarray:
    """Alice's symbols for a raw key from the recording it came from: ``/tx/symbols`` at
    the raw key's ``/bob/tx_index`` (complex64, finite).

    For a raw key that holds Bob's data only (``qkd-hw process --out`` writes
    ``/alice/symbols`` itself); valid where one host holds both parties' data (lab, offline
    post-processing, simulation).

    Raises
    ------
    TraceFormatError
        The recording is not a valid trace, or an index lies outside its ``/tx/symbols``
        (the raw key is not from this recording).
    """
    from qkd_hw.trace_io import TraceReader

    with TraceReader(trace) as reader:
        n_tx = reader.tx.n_symbols
        idx = np.asarray(tx_index, dtype=np.int64)
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= n_tx):
            raise fail(Path(trace), "/tx/symbols",
                       f"holds {n_tx} symbols but the raw key's /bob/tx_index reaches "
                       f"{int(idx.max())}: the raw key is not from this recording")
        sym = reader.symbols()[idx]
    bad = ~np.isfinite(sym)
    if bad.any():
        raise fail(Path(trace), "/tx/symbols", f"{int(bad.sum())} non-finite symbols at the "
                                                "raw key's indices")
    return sym


def _attr_value(v: object) -> object:
    if isinstance(v, str | bool | np.bool_):
        return v
    if isinstance(v, int | np.integer):
        return np.int64(v)
    return np.float64(v)  # type: ignore[arg-type]


def write_key_file(path: str | os.PathLike[str], alice_key: np.ndarray, bob_key: np.ndarray,
                   parameters: Mapping[str, object]) -> Path:
    """Write both parties' final keys and the secrecy parameters (0600, atomic)."""
    file = Path(path)
    try:
        with atomic_write(file, mode=KEY_FILE_MODE) as tmp, h5py.File(tmp, "w") as f:
            f.attrs["format"] = KEY_FORMAT
            f.attrs["format_version"] = np.int64(FORMAT_VERSION)
            for party, key in (("alice", alice_key), ("bob", bob_key)):
                bits = np.asarray(key, dtype=np.uint8)
                ds = f.create_group(party).create_dataset("key", data=np.packbits(bits))
                ds.attrs["n_bits"] = np.int64(bits.shape[0])
            g = f.create_group("parameters")
            for k, v in parameters.items():
                g.attrs[k] = _attr_value(v)
    except OSError as exc:
        raise TraceFormatError(f"{file}: cannot write key file: {exc}") from exc
    return file


def read_key_file(path: str | os.PathLike[str]) -> dict[str, object]:
    """``{"alice": bits, "bob": bits, "parameters": {...}}`` of a KEY.h5 (tests, tools)."""
    file, f = open_h5(path, kind=KEY_FORMAT)
    out: dict[str, object] = {}
    with f:
        if f.attrs.get("format") != KEY_FORMAT:
            raise fail(file, "/", f"not a {KEY_FORMAT} file")
        for party in ("alice", "bob"):
            ds = get_dataset(file, get_group(file, f, party), "key")
            n = int(ds.attrs["n_bits"])
            out[party] = np.unpackbits(ds[()])[:n]
        out["parameters"] = {k: (v.item() if hasattr(v, "item") else v)
                             for k, v in get_group(file, f, "parameters").attrs.items()}
    return out


class TranscriptFile:
    """Channel recorder that writes the public transcript as the messages are sent.

    Use as a context manager; :meth:`commit` renames the complete file into place, an
    exception (or :meth:`abort`) leaves nothing at ``path``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.file = Path(path)
        try:
            self._atomic = AtomicFile(self.file)
            self._h5: h5py.File | None = h5py.File(self._atomic.tmp_path, "w")
            self._h5.attrs["format"] = TRANSCRIPT_FORMAT
            self._h5.attrs["format_version"] = np.int64(FORMAT_VERSION)
            self._msgs = self._h5.create_group("messages")
        except OSError as exc:
            self.abort()
            raise TraceFormatError(f"{self.file}: cannot create transcript: {exc}") from exc

    def record(self, message: Message) -> None:
        """Append one message (called by the channel before delivery)."""
        try:
            g = self._msgs.create_group(f"{message.seq:08d}")
            for k in ("sender", "receiver", "kind"):
                g.attrs[k] = getattr(message, k)
            g.attrs["frame"] = np.int64(message.frame)
            g.attrs["leaked_bits"] = np.int64(message.leaked_bits)
            for name, arr in message.payload.items():
                g.create_dataset(name, data=arr)
        except OSError as exc:
            self.abort()
            raise TraceFormatError(f"{self.file}: writing transcript failed: {exc}") from exc

    def commit(self, summary: Mapping[str, object]) -> Path:
        """Write the summary attributes, close and rename into place."""
        assert self._h5 is not None, "transcript already closed"
        try:
            for k, v in summary.items():
                self._h5.attrs[k] = _attr_value(v)
            self._h5.close()
            self._h5 = None
            return self._atomic.commit()
        except OSError as exc:
            self.abort()
            raise TraceFormatError(f"{self.file}: writing transcript failed: {exc}") from exc

    def abort(self) -> None:
        """Discard the file (idempotent)."""
        h5, self._h5 = getattr(self, "_h5", None), None
        if h5 is not None:
            with contextlib.suppress(Exception):
                h5.close()
        if hasattr(self, "_atomic"):
            self._atomic.abort()

    def __enter__(self) -> TranscriptFile:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if exc is not None or self._h5 is not None:
            self.abort()
