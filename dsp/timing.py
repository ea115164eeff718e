"""Data-aided symbol timing: the parabolic timing fit shared by the head's clock-offset
estimate and the streaming timing loop."""

from __future__ import annotations

import math

import numpy as np

from dsp.acquisition import SyncResult
from dsp.core import cdot
from dsp.fits import line_fit
from dsp.matched_filter import matched_filter_at
from dsp.rrc import MatchedFilterBank
from dsp.vocabulary import PARALLEL_MIN_SYMBOLS

__all__ = ["TIMING_GAINS", "TIMING_OFFSETS", "TIMING_STRIDE", "clock_offset", "timing_fit",
           "timing_parabola"]

#: timing loop: every 16th symbol of a block enters the timing fit; loop gains (proportional on
#: the instant, integral on the period) give a residual jitter ~0.4 x the per-block fit error.
TIMING_STRIDE = 16
TIMING_GAINS = (0.3, 0.05)
#: fractional timing offsets (samples) of the timing fits
TIMING_OFFSETS = (-0.25, 0.0, 0.25)


def timing_fit(x: np.ndarray, a: np.ndarray, bank: MatchedFilterBank, tau: float,
               period: float, k0: int, kk: int,
               phase: tuple[float, float, np.ndarray]) -> tuple[float, float, float]:
    """Data-aided fractional timing of symbols k0 .. k0+kk-1 of a segment starting at sample
    0 (``a`` their Alice symbols): parabola through |corr|^2 at tau + ``TIMING_OFFSETS``.

    Returns (delta_tau, |corr|^2 at 0, sum |y|^2 at 0)."""
    ys = [matched_filter_at(x, bank, first_sample=0, tau0=tau + d + k0 * period,
                            period=period, k_start=0, count=kk, phase=phase,
                            parallel=kk >= PARALLEL_MIN_SYMBOLS) for d in TIMING_OFFSETS]
    return timing_parabola(a, *ys)


def timing_parabola(a, y_early, y_mid, y_late) -> tuple[float, float, float]:
    """Vertex of the parabola through ``|sum conj(a) y|^2`` at the ``TIMING_OFFSETS``:
    (delta_tau, |corr|^2 at 0, sum |y_mid|^2)."""
    s = [abs(cdot(a, y)) ** 2 for y in (y_early, y_mid, y_late)]
    e = cdot(y_mid, y_mid).real
    den = s[0] - 2 * s[1] + s[2]
    if den >= 0:
        return 0.0, s[1], e
    return 0.25 * 0.5 * (s[0] - s[2]) / den, s[1], e


def clock_offset(head: np.ndarray, alice: np.ndarray, sync: SyncResult, bank: MatchedFilterBank,
                 period: float,
                 phase: tuple[float, float, np.ndarray]) -> tuple[float, float]:
    """Clock offset (ppm) from the timing of 4 consecutive quarters of the sync symbols."""
    kk = sync.sync_symbols
    q = kk // 4
    if q < 256:
        return 0.0, math.inf
    a = np.asarray(alice[:kk], np.complex128)
    if sync.inverted:
        a = np.conj(a)
    ks, ds = [], []
    for i in range(4):
        d, _, _ = timing_fit(head, a[i * q:(i + 1) * q], bank, sync.tau0, period, i * q, q,
                              phase)
        ks.append((i + 0.5) * q)
        ds.append(d)
    ks, ds = np.array(ks), np.array(ds)
    slope, icpt = line_fit(ks, ds)
    res = ds - (icpt + slope * ks)
    s_res = max(float(np.sqrt(np.sum(res**2) / 2)), sync.timing_std_samples * 2)
    s_slope = s_res / math.sqrt(np.sum((ks - ks.mean()) ** 2))
    # instants drifting later (slope > 0) mean a longer period: ppm < 0 in the convention
    # period = sps / (1 + ppm 1e-6)
    return float(-slope / period * 1e6), float(s_slope / period * 1e6)
