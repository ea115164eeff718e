"""Chunks of samples read by a worker thread while the DSP processes the chunk before."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

__all__ = ["read_ahead"]


def read_ahead(chunks: Iterator[tuple],
               after_read: Callable[[int], None] | None = None,
               waited: dict[str, float] | None = None) -> Iterator[tuple]:
    """Yield the ``(store, start, ...)`` items of ``chunks`` (``RecordingSource.signal_stores``:
    the chunk is ``store[start:]``; more fields may follow, computed with the chunk by the
    iterator, which runs in the worker) while a worker thread already prepares the next one.

    The numba kernels release the GIL (``nogil``), so the read of chunk k+1 overlaps the
    processing of chunk k. ``after_read(n_end)`` runs in the worker after each read (``n_end``:
    samples read so far), e.g. to load the symbols the chunk will need. Errors are re-raised
    here, at the chunk they belong to; leaving the loop early waits for the pending read (the
    file must not be closed under it). The time spent waiting for the reader is added to
    ``waited["signal_read_wait"]``.
    """
    n_end = 0

    def step():
        nonlocal n_end
        item = next(chunks, None)
        if item is not None:
            n_end += item[0].shape[0] - item[1]
            if after_read is not None:
                after_read(n_end)
        return item

    with ThreadPoolExecutor(1, thread_name_prefix="qkd-hw-read") as pool:
        pending = pool.submit(step)
        while True:
            t0 = time.perf_counter()
            item = pending.result()
            if waited is not None:
                waited["signal_read_wait"] = (waited.get("signal_read_wait", 0.0)
                                              + time.perf_counter() - t0)
            if item is None:
                return
            pending = pool.submit(step)
            yield item

