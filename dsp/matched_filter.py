"""Matched-filter stage: the RRC matched filter evaluated only at the fractional symbol
instants (polyphase bank x mixer, unit-energy taps), de-rotated by the interpolated carrier
phase at the same instant. Public wrappers validate; private ``@njit`` kernels compute.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from dsp._numba_options import NJIT, NJIT_PARALLEL
from dsp.core import TWO_PI, check_adc, grid_segment, sincos
from dsp.rrc import MatchedFilterBank
from dsp.threads import WorkShare

__all__ = ["matched_filter_at", "pairs_share_taps", "symbol_sample_range"]


# --------------------------------------------------------------------------------------------
# matched filter at symbol instants (polyphase, bandpass taps on the real ADC samples)
# --------------------------------------------------------------------------------------------
_MF_TASK = 2048   # symbols per task: the per-symbol bookkeeping runs as vector loops over it
#: symbols per piece of a call shared with a helper thread (``share``): a multiple of
#: _MF_TASK (the task borders stay those of one call), ~1 ms of work against ~20 us of call
_MF_PIECE = 16 * _MF_TASK


@njit(inline="always", **NJIT)
def _mf_prepare(n0, tau0, period, k0, lo, hi, P, half, cyc_per_sample, ph_t0, ph_dt, ph,
                use_phase, locs, phs, rot_c, rot_s, slopes, seg, frac):
    # instants, polyphase index, mixer + carrier phase of symbols [lo, hi), ahead of the
    # multiply-adds, as separate loops so that all but the grid look-up vectorise (one scalar
    # loop with the look-up and sincos cost as much as the 320-tap multiply-adds). rot_c
    # holds the angle until the last loop turns it into (cos, sin).
    nph = ph.shape[0]
    m = hi - lo
    for i in range(m):
        t = tau0 + (k0 + lo + i) * period
        nc = math.floor(t)
        p = math.floor((t - nc) * P + 0.5)
        wrap = p >= P
        p = p - P if wrap else p
        nc = nc + 1.0 if wrap else nc
        locs[i] = int(nc) - n0 - half + 1
        phs[i] = int(p)
        cyc = cyc_per_sample * nc
        cyc -= math.floor(cyc)
        cyc += cyc_per_sample * p / P
        rot_c[i] = -TWO_PI * cyc
        if use_phase:
            # grid segment of the quantised instant
            seg[i], frac[i] = grid_segment((nc + p / P - ph_t0) / ph_dt, nph)
    if use_phase:
        for i in range(m):      # the gathers
            j = seg[i]
            a = ph[j]
            b = ph[j + 1]
            rot_c[i] -= a + frac[i] * (b - a)
            slopes[i] = (b - a) / ph_dt          # rad per sample
    else:
        slopes[:m] = 0.0
    for i in range(m):
        c, s = sincos(rot_c[i])
        rot_c[i] = c
        rot_s[i] = s


@njit(inline="always", **NJIT)
def _mac_pair(xa, xb, trp, tip, ntap):
    # two windows through the same taps: each tap vector is loaded once for both (the
    # single-window loop is bound by the tap loads). A symbol without a partner passes its
    # own window twice, so every symbol goes through this very loop: the same rounding
    # whether or not it was paired (and so for any chunking).
    ar = np.float32(0.0)
    ai = np.float32(0.0)
    br = np.float32(0.0)
    bi = np.float32(0.0)
    for m in range(ntap):
        va = np.float32(xa[m])
        vb = np.float32(xb[m])
        t1 = trp[m]
        t2 = tip[m]
        ar += t1 * va
        ai += t2 * va
        br += t1 * vb
        bi += t2 * vb
    return ar, ai, br, bi


@njit(**NJIT)
def _mf_rotate(yre, yim, rot_c, rot_s, m, out):
    # the mixer + carrier rotation of the task's outputs; in a function of its own, over a
    # slice indexed from 0 (written into out[lo + i] inside the task loop, it was 6 % slower)
    for i in range(m):
        yr = yre[i]
        yi = yim[i]
        c = rot_c[i]
        s = rot_s[i]
        out[i] = complex(yr * c - yi * s, yr * s + yi * c)


def _mf_symbols_py(x, n0, tau0, period, k0, nk, P, tre, tim, dre, dim, half, cyc_per_sample,
                   ph_t0, ph_dt, ph, use_phase, use_slope, pair, out):
    ntap = 2 * half
    n_tasks = (nk + _MF_TASK - 1) // _MF_TASK
    for task in prange(n_tasks):
        lo = task * _MF_TASK
        hi = min(nk, lo + _MF_TASK)
        m = hi - lo
        locs = np.empty(_MF_TASK, np.int64)
        phs = np.empty(_MF_TASK, np.int64)
        rot_c = np.empty(_MF_TASK)
        rot_s = np.empty(_MF_TASK)
        slopes = np.empty(_MF_TASK)
        seg = np.empty(_MF_TASK, np.int64)
        frac = np.empty(_MF_TASK)
        yre = np.empty(_MF_TASK, np.float32)
        yim = np.empty(_MF_TASK, np.float32)
        _mf_prepare(n0, tau0, period, k0, lo, hi, P, half, cyc_per_sample, ph_t0, ph_dt, ph,
                    use_phase, locs, phs, rot_c, rot_s, slopes, seg, frac)
        if use_slope:
            for i in range(m):
                p = phs[i]
                xs = x[locs[i]:locs[i] + ntap]
                trp = tre[p]
                tip = tim[p]
                drp = dre[p]
                dip = dim[p]
                ar = np.float32(0.0)
                ai = np.float32(0.0)
                br = np.float32(0.0)
                bi = np.float32(0.0)
                for j in range(ntap):
                    v = np.float32(xs[j])
                    ar += trp[j] * v
                    ai += tip[j] * v
                    br += drp[j] * v
                    bi += dip[j] * v
                # Y0 + j slope Y1 (first-order phase correction inside the window)
                yre[i] = ar - slopes[i] * bi
                yim[i] = ai + slopes[i] * br
        elif pair:
            i = 0
            while i < m:
                p = phs[i]
                # partners: absolute symbol index even with the next one, same polyphase
                # index (the pairing then does not depend on where a call or task starts);
                # one call site, so the compiler cannot specialise the self-paired case
                j = i + 1 if ((k0 + lo + i) % 2 == 0 and i + 1 < m and phs[i + 1] == p) else i
                ar, ai, br, bi = _mac_pair(x[locs[i]:locs[i] + ntap],
                                           x[locs[j]:locs[j] + ntap], tre[p], tim[p], ntap)
                yre[j] = br
                yim[j] = bi
                yre[i] = ar     # after j: a self-paired symbol keeps its "a" sums
                yim[i] = ai
                i = j + 1
        else:
            for i in range(m):
                p = phs[i]
                xs = x[locs[i]:locs[i] + ntap]
                trp = tre[p]
                tip = tim[p]
                ar = np.float32(0.0)
                ai = np.float32(0.0)
                for j in range(ntap):
                    v = np.float32(xs[j])
                    ar += trp[j] * v
                    ai += tip[j] * v
                yre[i] = ar
                yim[i] = ai
        _mf_rotate(yre, yim, rot_c, rot_s, m, out[lo:hi])


# One compilation. A serial dispatcher of the same Python function shares its numba cache
# entry: the variant compiled first in a fresh cache was loaded for both, so after a serial
# compile the streaming pass ran on one thread, and the two compilations round differently
# (results depended on the cache's history). The small calls (parallel=False) run it too,
# as they did whenever the parallel variant had been compiled first (the receiver's order).
_mf_symbols = njit(**NJIT_PARALLEL)(_mf_symbols_py)
_mf_symbols_serial = _mf_symbols


def pairs_share_taps(bank: MatchedFilterBank, period: float) -> bool:
    """Whether consecutive symbols mostly use the same polyphase row (the period is within
    1/(8 n_phases) sample of an integer: the row then changes every >= 8 symbols), so that the
    matched filter runs them in pairs. A property of the link, not of the chunking."""
    frac = abs(period - round(period))
    return frac * bank.n_phases * 8 <= 1.0


def symbol_sample_range(bank: MatchedFilterBank, tau0: float, period: float, k: int) -> tuple:
    """Absolute sample range ``[lo, hi)`` that the matched filter of symbol k reads."""
    t = tau0 + k * period
    nc = math.floor(t)
    if int((t - nc) * bank.n_phases + 0.5) >= bank.n_phases:
        nc += 1
    return int(nc) - bank.half + 1, int(nc) + bank.half + 1


def matched_filter_at(x: np.ndarray, bank: MatchedFilterBank, *, first_sample: int, tau0: float,
                      period: float, k_start: int, count: int,
                      phase: tuple[float, float, np.ndarray] | None = None,
                      first_order: bool = False, parallel: bool = True,
                      share: WorkShare | None = None) -> np.ndarray:
    """Matched-filter outputs of symbols ``k_start .. k_start+count-1``.

    Symbol k sits at the fractional absolute sample instant ``tau0 + k * period``; its output is
    ``sum_n h(t_k - n) x[n] exp(-2 pi j f_mix n / fs) exp(-j psi_n)`` with the polyphase bank
    (unit-energy taps, timing rounded to 1/n_phases sample) and, if ``phase`` is given,
    the carrier phase psi linearly interpolated from a uniform grid at t_k; with
    ``first_order`` applied to first order around t_k inside the window,
    ``psi_n ~ psi(t_k) + psi'(t_k) (n - t_k)`` (psi' = slope of the grid segment). The
    first-order term only pays when the phase grid is much smoother than the symbol (a noisy
    slope adds error), so the pipeline does not use it by default.

    Parameters
    ----------
    x : ndarray, shape (n,)
        ADC codes; ``x[0]`` is absolute sample ``first_sample``.
    bank : MatchedFilterBank
    tau0, period : float
        Instant of symbol 0 and symbol period, in samples.
    k_start, count : int
    phase : (t0, dt, values) or None
        Carrier phase (rad) at absolute sample instants ``t0 + i dt``; must cover the symbols.
    share : WorkShare, optional
        Run the symbols in pieces on the calling thread and ``share``'s helper (each piece
        with the calling thread's numba thread count; the same numbers as one call).

    Returns
    -------
    ndarray, shape (count,), complex64
    """
    x = check_adc(x)
    n0, k0, nk = int(first_sample), int(k_start), int(count)
    if nk < 0:
        raise ValueError(f"count must be >= 0, got {count!r}")
    out = np.empty(nk, np.complex64)
    if nk == 0:
        return out
    lo, _ = symbol_sample_range(bank, tau0, period, k0)
    _, hi = symbol_sample_range(bank, tau0, period, k0 + nk - 1)
    if lo < n0 or hi > n0 + x.shape[0]:
        raise ValueError(f"symbols {k0}..{k0 + nk - 1} need samples [{lo}, {hi}), "
                         f"have [{n0}, {n0 + x.shape[0]})")
    if phase is None:
        ph_t0, ph_dt, ph, use = 0.0, 1.0, np.zeros(2), False
    else:
        ph_t0, ph_dt, ph = float(phase[0]), float(phase[1]), np.ascontiguousarray(phase[2],
                                                                                  np.float64)
        if ph.shape[0] < 2:
            raise ValueError("phase grid needs >= 2 points")
        use = True
    kernel = _mf_symbols if parallel else _mf_symbols_serial
    args = (bank.n_phases, bank.taps_re, bank.taps_im, bank.dtaps_re, bank.dtaps_im, bank.half,
            bank.mixer_cycles_per_sample, ph_t0, ph_dt, ph, use, bool(first_order and use),
            pairs_share_taps(bank, period))

    def piece(i: int) -> None:
        lo = i * _MF_PIECE
        hi = min(nk, lo + _MF_PIECE)
        kernel(x, n0, float(tau0), float(period), k0 + lo, hi - lo, *args, out[lo:hi])

    if share is None:
        kernel(x, n0, float(tau0), float(period), k0, nk, *args, out)
    else:
        share.run(-(-nk // _MF_PIECE), piece)
    return out
