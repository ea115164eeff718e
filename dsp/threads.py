"""Thread count of the parallel kernels chosen from the measured cost of each chunk.

On a shared host a core may be taken by another process at any time: a parallel region then
waits for its descheduled thread and the receiver can fall well below its single-thread speed.
Every kernel sums over fixed task ranges, so the thread count changes no number and can be
chosen per chunk: ``ThreadCount`` runs each chunk with the count of lowest recent cost
(seconds per sample) and tries the other count every ``probe_every`` chunks, so it follows the
load as it changes.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import numba

__all__ = ["ThreadCount"]


class ThreadCount:
    """Per-chunk choice between 1 and ``max_threads`` numba threads (of the calling thread:
    ``numba.set_num_threads`` is thread-local).

    Parameters
    ----------
    max_threads : int, optional
        The parallel count (default: ``numba.config.NUMBA_NUM_THREADS``).
    probe_every : int
        Every ``probe_every``-th chunk runs with the count not chosen, to see the load change.
    clock : callable
        Seconds (``time.perf_counter``).
    """

    def __init__(self, max_threads: int | None = None, *, probe_every: int = 8,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        top = int(max_threads or numba.config.NUMBA_NUM_THREADS)
        self.counts = (1, top) if top > 1 else (1,)
        self.probe_every = max(int(probe_every), 2)
        self.clock = clock
        #: recent cost (seconds per sample, exponential average) of each count
        self.cost: dict[int, float] = {}
        #: chunks run with each count
        self.chunks: dict[int, int] = dict.fromkeys(self.counts, 0)
        self._i = 0

    def best(self) -> int:
        """The count of lowest recent cost (the parallel one until both are measured)."""
        if len(self.cost) < len(self.counts):
            return self.counts[-1]
        return min(self.counts, key=lambda n: self.cost[n])

    def next_count(self) -> int:
        """The count of the next chunk: the best, or the other one on a probe."""
        self._i += 1
        best = self.best()
        others = [n for n in self.counts if n != best]
        if others and (others[0] not in self.cost or self._i % self.probe_every == 0):
            return others[0]
        return best

    def record(self, n: int, seconds: float, samples: int) -> None:
        """Merge one chunk's cost into the count's average (half weight: load changes)."""
        if samples <= 0:
            return
        c = seconds / samples
        self.cost[n] = c if n not in self.cost else 0.5 * (self.cost[n] + c)
        self.chunks[n] += 1

    @contextlib.contextmanager
    def chunk(self, samples: int) -> Iterator[int]:
        """Run the block with the chosen count (yielded) and record its cost."""
        n = self.next_count()
        prev = numba.get_num_threads()
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
        t0 = self.clock()
        try:
            yield n
        finally:
            dt = self.clock() - t0
            numba.set_num_threads(prev)
        self.record(n, dt, samples)
