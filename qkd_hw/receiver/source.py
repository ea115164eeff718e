"""Recording sources: where the receiver's samples and Alice's symbols come from.

The receiver reads everything through :class:`RecordingSource`: an HDF5 recording today
(:class:`qkd_hw.receiver.hdf5_source.Hdf5Source`), arrays in memory (:class:`ArraySource`,
e.g. a capture just taken by a digitizer), a live digitizer tomorrow.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from dsp.options import LinkParameters
from qkd_hw.sanity import PREFIX_SAMPLES, identical_prefix
from qkd_hw.trace_io import ADC_DATASETS

__all__ = ["ArraySource", "CaptureInfo", "RecordingSource", "rotating_stores"]

@dataclass(frozen=True)
class CaptureInfo:
    """What the receiver needs to know of one ADC capture besides its samples.

    length : samples in the capture.
    dtype : sample dtype (int16, int8 or float32); its rails define clipping.
    volts_per_code : scale of the codes; the noise captures are brought to the signal's.
    clipped_fraction : fraction of samples at the rails as the writer recorded it, None if
        not recorded (the receiver measures its own too).
    """

    length: int
    dtype: np.dtype
    volts_per_code: float
    clipped_fraction: float | None = None


@runtime_checkable
class RecordingSource(Protocol):
    """Samples and Alice's symbols of one recording, as the receiver consumes them.

    ``captures`` holds the three captures of ``trace_io.ADC_DATASETS`` ("signal",
    "shot_noise", "electronic_noise").
    """

    #: names the recording in messages (a file's path)
    name: str
    link: LinkParameters
    captures: Mapping[str, CaptureInfo]

    def read(self, capture: str, start: int, stop: int) -> np.ndarray:
        """Samples ``[start, stop)`` of a capture (a new array: the head, the clock probes)."""
        ...

    def chunks(self, capture: str, chunk_samples: int) -> Iterator[np.ndarray]:
        """The whole capture in chunks of ``chunk_samples`` (the last may be shorter)."""
        ...

    def signal_stores(self, chunk_samples: int, room: int) -> Iterator[tuple[np.ndarray, int]]:
        """The signal capture in chunks as ``(store, start)``: the chunk is ``store[start:]``
        and ``store[:start]`` (``room`` samples, fewer at the beginning) is writeable room in
        front of it for the samples the stream keeps (``SignalStream.feed_in_place``). A
        store stays intact while the two after it are produced (one is being read ahead)."""
        ...

    def symbols(self, start: int, stop: int) -> np.ndarray:
        """Alice's symbols ``[start, stop)`` (complex64, SNU)."""
        ...

    def same_capture(self, a: str, b: str) -> str | None:
        """Why captures ``a`` and ``b`` are one and the same (for ``sanity``), None if not."""
        ...


def rotating_stores(read_into: Callable[[np.ndarray, int], object], length: int,
                    dtype: np.dtype, chunk_samples: int,
                    room: int) -> Iterator[tuple[np.ndarray, int]]:
    """``RecordingSource.signal_stores`` for a source that copies its samples: each chunk is
    read by ``read_into(out, start)`` behind ``room`` free samples of one of three rotating
    buffers (the stream reads buffer k while k+1 waits and the reader thread fills k+2)."""
    n = int(chunk_samples)
    if n <= 0:
        raise ValueError(f"chunk_samples must be > 0, got {chunk_samples!r}")
    bufs: list[np.ndarray] = []
    for i, pos in enumerate(range(0, length, n)):
        m = min(n, length - pos)
        if not bufs:
            bufs = [np.empty(room + min(n, length), dtype) for _ in range(3)]
        store = bufs[i % 3][:room + m]
        read_into(store[room:], pos)
        yield store, room


class ArraySource:
    """A recording held in memory: the three captures and Alice's symbols as arrays.

    Parameters
    ----------
    link : LinkParameters
        The link (``n_symbols`` must be ``len(symbols)``).
    captures : mapping of "signal", "shot_noise", "electronic_noise" to 1-D arrays
        ADC codes (int16, int8 or float32); never written to.
    symbols : complex array
        Alice's symbols (SNU), held as complex64.
    volts_per_code : mapping of capture name to its scale, optional
        Default 1.0 for every capture.
    clipped_fraction : mapping of capture name to the recorded fraction at the rails, optional
    name : str
        Names the recording in messages.
    """

    def __init__(self, link: LinkParameters, captures: Mapping[str, np.ndarray],
                 symbols: np.ndarray, *, volts_per_code: Mapping[str, float] | None = None,
                 clipped_fraction: Mapping[str, float | None] | None = None,
                 name: str = "<memory>") -> None:
        if set(captures) != set(ADC_DATASETS):
            raise ValueError(f"{name}: captures must be {ADC_DATASETS}, got {tuple(captures)}")
        self._data = {k: np.ascontiguousarray(captures[k]) for k in ADC_DATASETS}
        for k, a in self._data.items():
            if a.ndim != 1 or a.dtype not in (np.int16, np.int8, np.float32):
                raise ValueError(f"{name}: capture {k} must be 1-D int16, int8 or float32, "
                                 f"got {a.dtype} shape {a.shape}")
        self._symbols = np.asarray(symbols, np.complex64)
        if self._symbols.ndim != 1 or self._symbols.shape[0] != link.n_symbols:
            raise ValueError(f"{name}: {self._symbols.shape} symbols for link.n_symbols "
                             f"{link.n_symbols}")
        vpc = volts_per_code or {}
        clip = clipped_fraction or {}
        self.name = name
        self.link = link
        self.captures = {k: CaptureInfo(length=a.shape[0], dtype=a.dtype,
                                        volts_per_code=float(vpc.get(k, 1.0)),
                                        clipped_fraction=clip.get(k))
                         for k, a in self._data.items()}

    def _range(self, what: str, length: int, start: int, stop: int) -> tuple[int, int]:
        start, stop = int(start), int(stop)
        if not 0 <= start <= stop <= length:
            raise ValueError(f"{self.name}: {what} [{start}, {stop}) outside [0, {length})")
        return start, stop

    def read(self, capture: str, start: int, stop: int) -> np.ndarray:
        data = self._data[capture]
        start, stop = self._range(capture, data.shape[0], start, stop)
        return data[start:stop].copy()

    def chunks(self, capture: str, chunk_samples: int) -> Iterator[np.ndarray]:
        data, n = self._data[capture], int(chunk_samples)
        if n <= 0:
            raise ValueError(f"chunk_samples must be > 0, got {chunk_samples!r}")
        return (data[pos:pos + n] for pos in range(0, data.shape[0], n))

    def signal_stores(self, chunk_samples: int, room: int) -> Iterator[tuple[np.ndarray, int]]:
        # copied: the stream writes into the room in front of a chunk
        data = self._data["signal"]

        def read_into(out: np.ndarray, pos: int) -> None:
            out[:] = data[pos:pos + out.shape[0]]

        return rotating_stores(read_into, data.shape[0], data.dtype, chunk_samples, room)

    def symbols(self, start: int, stop: int) -> np.ndarray:
        start, stop = self._range("symbols", self._symbols.shape[0], start, stop)
        return self._symbols[start:stop].copy()

    def same_capture(self, a: str, b: str) -> str | None:
        xa, xb = self._data[a], self._data[b]
        if np.shares_memory(xa, xb):
            return "the same array"
        n = min(xa.shape[0], xb.shape[0], PREFIX_SAMPLES)
        return identical_prefix(xa[:n], xb[:n])
