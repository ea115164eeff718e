"""Disclosure of the parameter-estimation subset and rotation-invariant pair statistics.

The residual common phase between the pilot and the quantum signal is only known once all
disclosed pairs are in, so the streaming pass accumulates the full second-moment matrix of
``(Re x, Im x, Re y, Im y)``; the rotation ``y -> y exp(-j theta)`` is applied to the sums at
the end (exact), and the rotated sums fill a ``dsp.estimation.PeAccumulator``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from dsp._numba_options import NJIT, NJIT_PARALLEL
from dsp.estimation import PeAccumulator
from dsp.vocabulary import HETERODYNE, PARALLEL_MIN_SYMBOLS

__all__ = ["PairMoments", "bernoulli_flags", "disclosed_mask", "pair_moments"]


# --------------------------------------------------------------------------------------------
# counter-based Bernoulli flags (disclosure of the parameter-estimation subset)
# --------------------------------------------------------------------------------------------
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@njit(inline="always", **NJIT)
def _splitmix64(z):
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@njit(**NJIT)
def _bernoulli_flags(key, start, threshold, out):
    for i in range(out.shape[0]):
        z = _splitmix64(key + np.uint64(start + i + 1) * _GOLDEN)
        out[i] = (z >> np.uint64(11)) < threshold


def bernoulli_flags(start: int, stop: int, *, probability: float, seed: int) -> np.ndarray:
    """Flags of indices ``[start, stop)``, each True with ``probability``, as a pure function of
    ``(seed, index)``: ``u = splitmix64(key(seed) + (index + 1) * golden) >> 11`` (53 random
    bits, Steele et al., OOPSLA 2014) and ``flag = u < floor(probability * 2^53)``. Any split
    of the range gives the same flags.

    Returns
    -------
    ndarray, shape (stop - start,), bool
    """
    start, stop = int(start), int(stop)
    if not 0 <= start <= stop:
        raise ValueError(f"need 0 <= start <= stop, got {start}, {stop}")
    f = float(probability)
    if not 0.0 <= f <= 1.0:
        raise ValueError(f"probability must be in [0, 1], got {probability!r}")
    out = np.empty(stop - start, np.bool_)
    # the seed goes through the mixer too: neighbouring seeds give unrelated streams
    # (np.uint64 explicitly: a key typed int64 would make numba do the sums in float64)
    key = np.uint64(_splitmix64(np.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF)
                                ^ np.uint64(0x5DEECE66D)))
    _bernoulli_flags(key, start, np.uint64(math.floor(f * 2.0**53)), out)
    return out


_PM_TASKS = 8   # per-thread partial sums, merged after (fixed count: same order every call)


@njit(**NJIT)
def _pair_moments_range(x, y, mask, use_mask, scale, r):
    # r = (4 first moments, 10 upper-triangle second moments) of x, y, mask (one task's
    # slices: a loop indexed from 0 in a function of its own vectorises; the same loop over
    # [t per, (t+1) per) inside the prange body ran 1.4x (with mask) to 4x (without) slower)
    a0 = a1 = a2 = a3 = 0.0
    s00 = s01 = s02 = s03 = s11 = s12 = s13 = s22 = s23 = s33 = 0.0
    for k in range(x.shape[0]):
        v0 = np.float64(x[k].real)
        v1 = np.float64(x[k].imag)
        v2 = np.float64(y[k].real) * scale
        v3 = np.float64(y[k].imag) * scale
        if use_mask and not mask[k]:   # a select, not a branch: no mispredictions
            v0 = 0.0
            v1 = 0.0
            v2 = 0.0
            v3 = 0.0
        a0 += v0
        a1 += v1
        a2 += v2
        a3 += v3
        s00 += v0 * v0
        s01 += v0 * v1
        s02 += v0 * v2
        s03 += v0 * v3
        s11 += v1 * v1
        s12 += v1 * v2
        s13 += v1 * v3
        s22 += v2 * v2
        s23 += v2 * v3
        s33 += v3 * v3
    r[0] = a0
    r[1] = a1
    r[2] = a2
    r[3] = a3
    r[4] = s00
    r[5] = s01
    r[6] = s02
    r[7] = s03
    r[8] = s11
    r[9] = s12
    r[10] = s13
    r[11] = s22
    r[12] = s23
    r[13] = s33


@njit(**NJIT_PARALLEL)
def _pair_moments(x, y, mask, use_mask, scale, part):
    # part[t]: the moments of task t's range (merged by the caller)
    n = x.shape[0]
    per = (n + _PM_TASKS - 1) // _PM_TASKS
    for t in prange(_PM_TASKS):
        lo = min(n, t * per)
        hi = min(n, (t + 1) * per)
        _pair_moments_range(x[lo:hi], y[lo:hi], mask[lo:hi], use_mask, scale, part[t])


@njit(**NJIT)
def _pair_moments_serial(x, y, mask, use_mask, scale, part):
    # the same task ranges one after the other (bit-identical sums): a parallel region costs
    # more than a short block's sums, and far more when the other core is busy
    n = x.shape[0]
    per = (n + _PM_TASKS - 1) // _PM_TASKS
    for t in range(_PM_TASKS):
        lo = min(n, t * per)
        hi = min(n, (t + 1) * per)
        _pair_moments_range(x[lo:hi], y[lo:hi], mask[lo:hi], use_mask, scale, part[t])


def pair_moments(x: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None,
                 scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Sums of ``v v^T`` and ``v`` over pairs, ``v = (Re x, Im x, s Re y, s Im y)`` (float64).

    Parameters
    ----------
    x, y : ndarray, shape (k,), complex
    mask : ndarray of bool, shape (k,), optional
        Only pairs with ``mask[k]`` are summed.
    scale : float
        ``s``, applied to y (e.g. 1/sqrt(N0)).
    Returns
    -------
    (outer (4, 4), first (4,))
    """
    x = np.ascontiguousarray(x)
    y = np.ascontiguousarray(y)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D of equal length, got {x.shape} and {y.shape}")
    if x.dtype.kind != "c" or y.dtype.kind != "c":
        raise ValueError(f"x and y must be complex, got {x.dtype} and {y.dtype}")
    use = mask is not None
    m = np.ascontiguousarray(mask, np.bool_) if use else np.zeros(1, np.bool_)
    if use and m.shape != x.shape:
        raise ValueError(f"mask shape {m.shape} differs from {x.shape}")
    part = np.zeros((_PM_TASKS, 14))
    if x.shape[0] >= PARALLEL_MIN_SYMBOLS:
        _pair_moments(x, y, m, use, float(scale), part)
    elif x.shape[0]:
        _pair_moments_serial(x, y, m, use, float(scale), part)
    tot = part.sum(axis=0)
    first = tot[:4].copy()
    outer = np.zeros((4, 4))
    outer[np.triu_indices(4)] = tot[4:]
    iu = np.triu_indices(4, 1)
    outer[(iu[1], iu[0])] = outer[iu]
    return outer, first


def disclosed_mask(start: int, stop: int, *, fraction: float, seed: int) -> np.ndarray:
    """Bernoulli(fraction) disclosure flags of tx indices ``[start, stop)``.

    The flags are a deterministic function of ``(seed, index)`` (``bernoulli_flags``,
    a counter-based generator), so any chunking of the recording discloses the same symbols.
    ``fraction == 1`` discloses everything, ``0`` nothing.
    """
    f = float(fraction)
    if not 0.0 <= f <= 1.0:
        raise ValueError(f"pe_fraction must be in [0, 1], got {fraction!r}")
    start, stop = int(start), int(stop)
    if f == 1.0:
        return np.ones(stop - start, bool)
    if f == 0.0:
        return np.zeros(stop - start, bool)
    return bernoulli_flags(start, stop, probability=f, seed=seed)


class PairMoments:
    """Sums of the outer products of ``v = (Re x, Im x, Re y, Im y)`` and of ``v`` (float64)."""

    def __init__(self) -> None:
        self.outer = np.zeros((4, 4))
        self.first = np.zeros(4)
        self.count = 0

    def update(self, x: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None,
               scale: float = 1.0) -> None:
        """Add the pairs ``(x[k], scale * y[k])`` (only where ``mask``, if given)."""
        if x.shape != y.shape:
            raise ValueError(f"x and y shapes differ: {x.shape} vs {y.shape}")
        if x.shape[0] == 0:
            return
        outer, first = pair_moments(x, y, mask, scale)
        self.outer += outer
        self.first += first
        self.count += int(x.shape[0] if mask is None else np.count_nonzero(mask))

    def phase(self) -> float:
        """``arg sum conj(x) y`` (rad)."""
        o = self.outer
        return math.atan2(o[0, 3] - o[1, 2], o[0, 2] + o[1, 3])

    def accumulator(self, detection: str, theta: float) -> PeAccumulator:
        """PeAccumulator of the pairs ``(x, y exp(-j theta))``."""
        c, s = math.cos(theta), math.sin(theta)
        # y' = R y with R = [[c, s], [-s, c]] acting on (Re y, Im y)
        R = np.eye(4)
        R[2:, 2:] = [[c, s], [-s, c]]
        o = np.einsum("ij,jk,lk->il", R, self.outer, R)
        f = np.einsum("ij,j->i", R, self.first)
        val = {"xr_xr": o[0, 0], "xi_xi": o[1, 1], "yr_yr": o[2, 2], "yi_yi": o[3, 3],
               "xr_yr": o[0, 2], "xi_yi": o[1, 3], "xr_yi": o[0, 3], "xi_yr": o[1, 2],
               "xr": f[0], "xi": f[1], "yr": f[2], "yi": f[3]}
        if detection != HETERODYNE:    # homodyne: real parts only
            for k in ("xi_xi", "yi_yi", "xi_yi", "xr_yi", "xi_yr", "xi", "yi"):
                val[k] = 0.0
        return PeAccumulator.from_sums(detection, val, self.count)
