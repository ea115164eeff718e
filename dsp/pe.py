"""Disclosure of the parameter-estimation subset and rotation-invariant pair statistics.

The residual common phase between the pilot and the quantum signal is only known once all
disclosed pairs are in, so the streaming pass accumulates the full second-moment matrix of
``(Re x, Im x, Re y, Im y)``; the rotation ``y -> y exp(-j theta)`` is applied to the sums at
the end (exact), and the rotated sums fill a ``dsp.estimation.PeAccumulator``.
"""

from __future__ import annotations

import math

import numpy as np

from dsp.estimation import _STATS, PeAccumulator
from dsp.kernels import bernoulli_flags, pair_moments

__all__ = ["PairMoments", "disclosed_mask"]


def disclosed_mask(start: int, stop: int, *, fraction: float, seed: int) -> np.ndarray:
    """Bernoulli(fraction) disclosure flags of tx indices ``[start, stop)``.

    The flags are a deterministic function of ``(seed, index)`` (``kernels.bernoulli_flags``,
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
        het = detection == "heterodyne"
        if not het:
            for k in ("xi_xi", "yi_yi", "xi_yi", "xr_yi", "xi_yr", "xi", "yi"):
                val[k] = 0.0
        acc = PeAccumulator(detection)
        acc._add(np.array([val[k] for k in _STATS], dtype=np.float64))
        acc.n_symbols = self.count
        acc.n = 2 * self.count if het else self.count
        return acc
