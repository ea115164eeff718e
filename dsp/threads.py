"""Thread count of the parallel kernels chosen from the measured cost of each chunk.

On a shared host a core may be taken by another process at any time: a parallel region then
waits for its descheduled thread and the receiver can fall well below its single-thread speed.
Every kernel sums over fixed task ranges, so the thread count changes no number and can be
chosen per chunk: ``ThreadCount`` runs each chunk with the count of lowest recent cost
(seconds per sample). A load that slows the chosen count shows in its very next chunk; the
other count is tried now and then (every ``probe_every`` chunks, the interval doubling up to
``max_interval`` while the probes confirm the choice: each probe costs a chunk at the worse
count), so the choice also follows a load that goes away.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numba

__all__ = ["ThreadCount", "WorkShare"]


class ThreadCount:
    """Per-chunk choice between 1 and ``max_threads`` numba threads (of the calling thread:
    ``numba.set_num_threads`` is thread-local).

    Parameters
    ----------
    max_threads : int, optional
        The parallel count (default: ``numba.config.NUMBA_NUM_THREADS``).
    probe_every, max_interval : int
        Chunks between two runs with the count not chosen (a probe): ``probe_every`` at
        first and after a probe changed the choice, doubling up to ``max_interval`` after one
        that did not.
    clock : callable
        Seconds (``time.perf_counter``).
    """

    def __init__(self, max_threads: int | None = None, *, probe_every: int = 8,
                 max_interval: int = 64, clock: Callable[[], float] = time.perf_counter) -> None:
        top = int(max_threads or numba.config.NUMBA_NUM_THREADS)
        self.counts = (1, top) if top > 1 else (1,)
        self.probe_every = max(int(probe_every), 2)
        self.max_interval = max(int(max_interval), self.probe_every)
        self.interval = self.probe_every
        self.clock = clock
        #: recent cost (seconds per sample, exponential average) of each count
        self.cost: dict[int, float] = {}
        #: chunks run with each count
        self.chunks: dict[int, int] = dict.fromkeys(self.counts, 0)
        self._since = 0   # chunks since the last probe

    def best(self) -> int:
        """The count of lowest recent cost (the parallel one until both are measured)."""
        if len(self.cost) < len(self.counts):
            return self.counts[-1]
        return min(self.counts, key=lambda n: self.cost[n])

    def next_count(self) -> int:
        """The count of the next chunk: the best, or the other one on a probe."""
        best = self.best()
        others = [n for n in self.counts if n != best]
        if not others:
            return best
        if others[0] not in self.cost:
            return others[0]
        self._since += 1
        if self._since >= self.interval:
            self._since = 0
            return others[0]
        return best

    def record(self, n: int, seconds: float, samples: int, *, probe: bool = False) -> None:
        """Merge one chunk's cost into the count's average (half weight: load changes); after
        a probe, reset or double the probe interval."""
        if samples <= 0:
            return
        before = self.best()
        c = seconds / samples
        self.cost[n] = c if n not in self.cost else 0.5 * (self.cost[n] + c)
        self.chunks[n] += 1
        if probe:
            self.interval = (self.probe_every if self.best() != before
                             else min(2 * self.interval, self.max_interval))

    @contextlib.contextmanager
    def chunk(self, samples: int) -> Iterator[int]:
        """Run the block with the chosen count (yielded) and record its cost."""
        best = self.best()
        n = self.next_count()
        prev = numba.get_num_threads()
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
        t0 = self.clock()
        try:
            yield n
        finally:
            dt = self.clock() - t0
            numba.set_num_threads(prev)
        self.record(n, dt, samples, probe=n != best and len(self.cost) == len(self.counts))


class WorkShare:
    """A helper thread that shares a job's pieces with the calling thread (serial ``nogil``
    kernels on two Python threads instead of an OpenMP region).

    ``run(n, piece)`` calls ``piece(0) .. piece(n-1)`` once each, claimed in order from a
    shared counter by the caller and the helper. A helper that is descheduled (a core taken
    by another process) or busy elsewhere delays the job by at most the one piece it holds:
    the caller takes the rest. An OpenMP region waits for its descheduled thread's whole
    share. Close it (or use it as a context manager) to stop the thread.
    """

    def __init__(self) -> None:
        # the helper's own kernels run on one numba thread (the count is thread-local)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="dsp-share",
                                        initializer=numba.set_num_threads, initargs=(1,))

    def run(self, n: int, piece: Callable[[int], None]) -> None:
        """Run ``piece(i)`` for i in ``range(n)`` on both threads; returns when all are done
        (re-raises the first error of either thread)."""
        if n <= 1:
            for i in range(n):
                piece(i)
            return
        claim = itertools.count()   # next() on it is atomic under the GIL
        failed: list[BaseException] = []

        def work() -> None:
            while not failed:
                i = next(claim)
                if i >= n:
                    return
                try:
                    piece(i)
                except BaseException as exc:
                    failed.append(exc)
                    return

        helper = self._pool.submit(work)
        work()
        if not helper.cancel():   # not started yet: nothing to wait for
            helper.result()
        if failed:
            raise failed[0]

    def close(self) -> None:
        """Stop the helper thread."""
        self._pool.shutdown(wait=True)

    def __enter__(self) -> WorkShare:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
