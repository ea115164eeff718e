"""Overlap-save sample buffer of the streaming stages."""

from __future__ import annotations

import numpy as np

__all__ = ["SampleBuffer"]


class SampleBuffer:
    """Tail of the stream kept across chunks (overlap-save): samples [n0, n0 + len).

    ``append`` copies the chunk behind the kept tail in one reused backing array (no fresh
    allocation per chunk: its page faults cost as much as the copy), so the caller may reuse
    the chunk's memory afterwards. ``data`` is a view, valid until the next ``append``."""

    def __init__(self) -> None:
        self._store: np.ndarray | None = None
        self.data: np.ndarray | None = None
        self.n0 = 0
        self.n_end = 0

    def append(self, chunk: np.ndarray) -> None:
        chunk = np.asarray(chunk)
        if chunk.ndim != 1:
            raise ValueError(f"chunks must be 1-D, got shape {chunk.shape}")
        tail = self.data if self.data is not None else chunk[:0]
        if self.data is not None and chunk.dtype != self.data.dtype:
            raise ValueError(f"chunk dtype {chunk.dtype} differs from {self.data.dtype}")
        if tail.shape[0] == 0:
            self.n0 = self.n_end
        need = tail.shape[0] + chunk.shape[0]
        st = self._store
        if st is None or st.dtype != chunk.dtype or st.shape[0] < need:
            st = np.empty(max(need, 2 * chunk.shape[0]), chunk.dtype)
            st[:tail.shape[0]] = tail
            self._store = st
        elif tail.shape[0] and not np.shares_memory(tail, st[:1]):
            # the tail is a view into the store: move it to the front (numpy copies
            # overlapping ranges correctly)
            st[:tail.shape[0]] = tail
        st[tail.shape[0]:need] = chunk
        self.data = st[:need]
        self.n_end += chunk.shape[0]

    def adopt(self, store: np.ndarray, start: int) -> None:
        """Like ``append(store[start:])`` without copying the chunk: the kept tail is copied
        into ``store[:start]`` in front of it, and ``data`` becomes a view of ``store``, which
        the buffer then owns until the next ``append``/``adopt``. When the tail does not fit
        in ``store[:start]`` this falls back to ``append`` (a copy)."""
        store = np.asarray(store)
        start = int(start)
        if store.ndim != 1 or not 0 <= start <= store.shape[0]:
            raise ValueError(f"adopt needs a 1-D store and 0 <= start <= {store.shape[0]}, "
                             f"got shape {store.shape}, start {start}")
        if not store.flags.c_contiguous or not store.flags.writeable:
            raise ValueError("adopt needs a C-contiguous, writeable store")
        tail = self.data if self.data is not None else store[:0]
        if self.data is not None and store.dtype != self.data.dtype:
            raise ValueError(f"chunk dtype {store.dtype} differs from {self.data.dtype}")
        if tail.shape[0] > start:
            self.append(store[start:])
            return
        if tail.shape[0] == 0:
            self.n0 = self.n_end
        lo = start - tail.shape[0]
        store[lo:start] = tail      # (numpy copies correctly should the tail overlap it)
        self.data = store[lo:]
        self.n_end += store.shape[0] - start

    def trim(self, keep_from: int) -> None:
        if self.data is None:
            return
        cut = min(max(keep_from - self.n0, 0), self.data.shape[0])
        if cut:
            self.data = self.data[cut:]
            self.n0 += cut
