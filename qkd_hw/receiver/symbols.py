"""Alice's symbols and the disclosure flags, read once in blocks ahead of their use."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from dsp.pe import disclosed_mask
from dsp.vocabulary import TIMING_BLOCK_SYMBOLS

__all__ = ["SymbolBlocks"]


class SymbolBlocks:
    """Alice's symbols and the disclosure flags in aligned blocks of ``BLOCK`` tx indices,
    read once (the timing loop and the parameter estimation both need them) and ahead of use
    by the reader thread. Thread-safe; blocks below the consumer's position are dropped.

    Parameters
    ----------
    read : ``read(start, stop)`` returns Alice's symbols ``[start, stop)`` (complex64, SNU),
        checked by the caller's sanity layer.
    n_symbols : symbols in the recording.
    fraction, seed : of the disclosed subset (``dsp.pe.disclosed_mask``).
    """

    #: the timing loop's blocks, so that one of its reads takes one cached block
    BLOCK = TIMING_BLOCK_SYMBOLS

    def __init__(self, read: Callable[[int, int], np.ndarray], n_symbols: int,
                 fraction: float, seed: int) -> None:
        self.read = read
        self.n = int(n_symbols)
        self.fraction = float(fraction)
        self.seed = int(seed)
        self._blocks: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()
        self._low = 0   # lowest block still needed
        self._prefetched = -1   # highest block prefetch() loaded

    def _block(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            got = self._blocks.get(b)
        if got is None:
            lo, hi = b * self.BLOCK, min((b + 1) * self.BLOCK, self.n)
            got = (self.read(lo, hi),
                   disclosed_mask(lo, hi, fraction=self.fraction, seed=self.seed))
            with self._lock:
                if b >= self._low:
                    self._blocks[b] = got
        return got

    def _take(self, k0: int, k1: int, which: int) -> np.ndarray:
        if k1 <= k0:
            return np.empty(0, np.complex64 if which == 0 else bool)
        if k0 < 0 or k1 > self.n:
            raise ValueError(f"symbols [{k0}, {k1}) outside [0, {self.n})")
        parts = []
        for b in range(k0 // self.BLOCK, (k1 - 1) // self.BLOCK + 1):
            base = b * self.BLOCK
            parts.append(self._block(b)[which][max(k0 - base, 0):k1 - base])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def symbols(self, k0: int, k1: int) -> np.ndarray:
        """Alice's symbols ``[k0, k1)`` (complex64, SNU)."""
        return self._take(int(k0), int(k1), 0)

    def mask(self, k0: int, k1: int) -> np.ndarray:
        """``disclosed_mask(k0, k1, ...)`` (the flags do not depend on the blocking)."""
        return self._take(int(k0), int(k1), 1)

    def release_below(self, k: int) -> None:
        """The consumer will not ask for symbols below ``k`` any more (the timing loop may
        still re-read the block it is in)."""
        with self._lock:
            self._low = max(self._low, int(k) // self.BLOCK - 1)
            for b in [b for b in self._blocks if b < self._low]:
                del self._blocks[b]

    def prefetch(self, k: int) -> None:
        """Make sure every block up to the one holding symbol ``k`` (clipped to the
        recording) is loaded: a chunk of samples can span several blocks."""
        k = min(max(int(k), 0), self.n - 1)
        for b in range(max(self._prefetched + 1, self._low), k // self.BLOCK + 1):
            self._block(b)
            self._prefetched = b
