"""Samples at the rails of the ADC, counted in one streaming pass.

A recording does not say where its ADC's rails are: a 12-bit digitizer stored in int16 clips
at -2048/+2047 (or a scaled equivalent), far inside the dtype's range. The rails are therefore
taken from the capture itself: an extreme value of the capture (its minimum or maximum) is a
rail when samples pile up there, i.e. when

* it is the dtype's own extreme (int8/int16: -128/127, -32768/32767), whatever the count; or
* at least :data:`RAIL_MIN_COUNT` samples sit exactly on it and more than
  :data:`RAIL_PILEUP` times as many as on the value one code inwards.

The second rule holds for clipping of any distribution that is smooth on the scale of a code:
everything beyond the rail lands on it, while an unclipped Gaussian tail gets rarer at every
step outwards (its extreme code holds fewer samples than the next one inwards), and an
unclipped extreme is hit about once. A capture whose rms is about one code cannot be told
from a clipped one this way (its tail falls by more than that per code): such a capture is
reported unclipped unless it sits at the dtype's extremes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from dsp._numba_options import NJIT

__all__ = ["RAIL_MIN_COUNT", "RAIL_PILEUP", "RailCounter", "RailStats", "merged_parts",
           "rail_stats", "segment_rails"]

#: fewest samples on an extreme value for it to count as a rail (an unclipped extreme
#: holds one or two samples)
RAIL_MIN_COUNT = 16
#: an extreme is a rail when it holds more than this many times the samples of the value one
#: code inwards (an unclipped Gaussian tail holds fewer there, not more)
RAIL_PILEUP = 2.0

_DTYPES = (np.dtype(np.int8), np.dtype(np.int16), np.dtype(np.float32), np.dtype(np.float64))


@dataclass(frozen=True)
class RailStats:
    """Extremes of a capture and how many samples sit on them and one code inwards."""

    n: int            # samples seen
    lo: float         # smallest value
    n_lo: int         # samples == lo
    n_lo_in: int      # samples == lo + 1
    hi: float         # largest value
    n_hi: int         # samples == hi
    n_hi_in: int      # samples == hi - 1

    def merge(self, other: RailStats) -> RailStats:
        """The statistics of both sample sets together (exact: same rule as the kernel)."""
        if self.n == 0:
            return other
        if other.n == 0:
            return self
        lo, n_lo, n_lo_in = _merge_side(-self.lo, self.n_lo, self.n_lo_in,
                                        -other.lo, other.n_lo, other.n_lo_in)
        hi, n_hi, n_hi_in = _merge_side(self.hi, self.n_hi, self.n_hi_in,
                                        other.hi, other.n_hi, other.n_hi_in)
        return RailStats(self.n + other.n, -lo, n_lo, n_lo_in, hi, n_hi, n_hi_in)

    def clipped_samples(self, dtype: np.dtype) -> int:
        """Samples on a rail (module docstring), for a capture stored as ``dtype``."""
        if self.n == 0:
            return 0
        dt = np.dtype(dtype)
        lo_lim, hi_lim = ((np.iinfo(dt).min, np.iinfo(dt).max) if dt.kind in "iu"
                          else (-np.inf, np.inf))
        if self.lo == self.hi:   # a constant capture: no tail to pile up against
            return self.n if self.lo in (lo_lim, hi_lim) else 0
        n = 0
        if self.lo == lo_lim or _piles_up(self.n_lo, self.n_lo_in):
            n += self.n_lo
        if self.hi == hi_lim or _piles_up(self.n_hi, self.n_hi_in):
            n += self.n_hi
        return n

    def clipped_fraction(self, dtype: np.dtype) -> float:
        """:meth:`clipped_samples` over all samples (0 for no samples)."""
        return self.clipped_samples(dtype) / self.n if self.n else 0.0


def _piles_up(n_at: int, n_in: int) -> bool:
    return n_at >= RAIL_MIN_COUNT and n_at > RAIL_PILEUP * n_in


def _merge_side(a: float, na: int, na_in: int, b: float, nb: int,
                nb_in: int) -> tuple[float, int, int]:
    """Merge the maxima ``a``/``b`` with their counts and counts one code inwards."""
    if a < b:
        a, na, na_in, b, nb, nb_in = b, nb, nb_in, a, na, na_in
    if a == b:
        return a, na + nb, na_in + nb_in
    return a, na, na_in + (nb if b == a - 1 else 0)


def rail_stats(x: np.ndarray) -> RailStats:
    """Extremes of ``x`` and the samples on them and one code inwards, in one pass.

    Parameters
    ----------
    x : numpy.ndarray
        1-D int8, int16, float32 or float64 samples (float ones finite).

    Returns
    -------
    RailStats
        ``n = 0`` (and NaN extremes) for an empty array.
    """
    if not isinstance(x, np.ndarray) or x.ndim != 1:
        raise ValueError(f"rail_stats needs a 1-D numpy array, got "
                         f"{type(x).__name__} of shape {getattr(x, 'shape', None)}")
    if x.dtype not in _DTYPES:
        raise ValueError(f"rail_stats: dtype must be one of {[str(d) for d in _DTYPES]}, "
                         f"got {x.dtype}")
    if x.shape[0] == 0:
        return RailStats(0, float("nan"), 0, 0, float("nan"), 0, 0)
    # the extremes by numpy's SIMD reductions (0.6 ms per 4M int16), the counts by the kernel
    lo, hi = x.min(), x.max()
    n_lo, n_lo_in, n_hi, n_hi_in = _rail_counts(x, lo, hi)
    return RailStats(int(x.shape[0]), float(lo), int(n_lo), int(n_lo_in), float(hi), int(n_hi),
                     int(n_hi_in))


def merged_parts(ext: np.ndarray, cnt: np.ndarray) -> RailStats:
    """:meth:`RailStats.merge` of many parts at once (the pilot kernel's tasks).

    Parameters
    ----------
    ext : numpy.ndarray, shape (m, 2)
        Each part's smallest and largest value.
    cnt : numpy.ndarray, shape (m, 5), integer
        Each part's samples and its samples on the smallest value, one code above it, on the
        largest value and one code below it (``RailStats.n, n_lo, n_lo_in, n_hi, n_hi_in``).

    Returns
    -------
    RailStats
    """
    if ext.shape[0] == 0:
        return RailStats(0, float("nan"), 0, 0, float("nan"), 0, 0)
    lo_p = ext[:, 0].astype(np.float64)   # float64 as _merge_side: lo + 1 exact
    hi_p = ext[:, 1].astype(np.float64)
    lo, hi = lo_p.min(), hi_p.max()
    at_lo, at_hi = lo_p == lo, hi_p == hi
    # a part's extreme one code inside the whole's: its samples there are the whole's n_*_in
    n_lo_in = int(cnt[at_lo, 2].sum() + cnt[lo_p == lo + 1, 1].sum())
    n_hi_in = int(cnt[at_hi, 4].sum() + cnt[hi_p == hi - 1, 3].sum())
    return RailStats(int(cnt[:, 0].sum()), float(lo), int(cnt[at_lo, 1].sum()), n_lo_in,
                     float(hi), int(cnt[at_hi, 3].sum()), n_hi_in)


class RailCounter:
    """:func:`rail_stats` of a capture fed chunk by chunk."""

    def __init__(self) -> None:
        self.stats = RailStats(0, float("nan"), 0, 0, float("nan"), 0, 0)

    def feed(self, chunk: np.ndarray) -> None:
        """Add the samples of ``chunk`` (see :func:`rail_stats`)."""
        self.stats = self.stats.merge(rail_stats(chunk))


@njit(**NJIT)
def _rail_counts(x, lo, hi):  # pragma: no cover - compiled
    # branch-free, so the loop vectorises: 1.6 ms per 4M int16 samples (a branch taken only
    # near the extremes took 3.3 ms, one pass that also tracks the extremes 36 ms)
    lo_in = lo + 1
    hi_in = hi - 1
    n_lo = 0
    n_lo_in = 0
    n_hi = 0
    n_hi_in = 0
    for i in range(x.shape[0]):
        v = x[i]
        n_lo += v == lo
        n_lo_in += v == lo_in
        n_hi += v == hi
        n_hi_in += v == hi_in
    return n_lo, n_lo_in, n_hi, n_hi_in


#: samples per segment of segment_rails: extremes per segment, recount of few segments
_RAIL_SEGMENT = 512


@njit(**NJIT)
def _min_max(s):  # pragma: no cover - compiled
    mn = s[0]
    mx = s[0]
    for k in range(1, s.shape[0]):
        v = s[k]
        mn = min(mn, v)
        mx = max(mx, v)
    return mn, mx


@njit(**NJIT)
def segment_rails(x, ext, cnt):  # pragma: no cover - compiled
    """:func:`rail_stats` of ``x`` (non-empty) into ``ext = (lo, hi)`` and ``cnt = (n, n_lo,
    n_lo_in, n_hi, n_hi_in)`` (the rows of :func:`merged_parts`), for a kernel that has ``x``
    in cache: the extremes of segments of 512 samples (vectorised), then the counts in the
    few segments whose extreme is within one code of the whole's."""
    n = x.shape[0]
    ns = (n + _RAIL_SEGMENT - 1) // _RAIL_SEGMENT
    s_min = np.empty(ns, np.float64)
    s_max = np.empty(ns, np.float64)
    for q in range(ns):
        a, b = _min_max(x[q * _RAIL_SEGMENT:min(n, (q + 1) * _RAIL_SEGMENT)])
        s_min[q] = a
        s_max[q] = b
    lo = s_min.min()
    hi = s_max.max()
    lo_in = lo + 1.0   # float64, as rail_stats: exact for every float32 code
    hi_in = hi - 1.0
    n_lo = n_lo_in = n_hi = n_hi_in = 0
    for q in range(ns):
        k0, k1 = q * _RAIL_SEGMENT, min(n, (q + 1) * _RAIL_SEGMENT)
        if s_min[q] <= lo_in:
            for k in range(k0, k1):
                v = np.float64(x[k])
                n_lo += v == lo
                n_lo_in += v == lo_in
        if s_max[q] >= hi_in:
            for k in range(k0, k1):
                v = np.float64(x[k])
                n_hi += v == hi
                n_hi_in += v == hi_in
    ext[0] = lo
    ext[1] = hi
    cnt[0] = n
    cnt[1] = n_lo
    cnt[2] = n_lo_in
    cnt[3] = n_hi
    cnt[4] = n_hi_in
