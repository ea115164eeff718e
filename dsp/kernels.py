"""Numba kernels of the receiver: pilot down-conversion/decimation and the symbol-instant
matched filter. Public wrappers validate and fix dtype/layout, private ``_kernels`` compute.

Inputs are the raw ADC codes (int16, int8 or float32) exactly as stored: the kernels convert
sample by sample, so no float copy of a chunk is ever made.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from dsp._numba_options import NJIT, NJIT_PARALLEL
from dsp.rrc import MatchedFilterBank

__all__ = ["bernoulli_flags", "boxcar_phase", "cdot", "fir_decimate", "kalman_phase_forward",
           "matched_filter_at", "mix_down",
           "pair_moments", "pilot_decimate", "rts_smooth_block",
           "rts_smooth_blocks"]

_ADC_DTYPES = (np.int16, np.int8, np.float32)
_TWO_PI = 2.0 * math.pi


def _check_adc(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"ADC samples must be 1-D, got shape {x.shape}")
    if x.dtype not in _ADC_DTYPES:
        if x.dtype.kind == "f":
            x = x.astype(np.float32)
        else:
            raise ValueError(f"ADC dtype must be one of int16, int8, float32, got {x.dtype}")
    return np.ascontiguousarray(x)


# --------------------------------------------------------------------------------------------
# pilot: NCO mix + integrate-and-dump over blocks of D samples anchored at absolute index 0
# --------------------------------------------------------------------------------------------
_PILOT_TASK = 1024   # blocks per task: the oscillator phases run as one vector loop over it


@njit(**NJIT)
def _pilot_rotate(sum_re, sum_im, m, n_first, D, cyc_per_sample, out):
    # exact oscillator phase of every block from its absolute sample index (a recursive
    # rotation would make the phasor depend on where the call started, i.e. on the
    # chunking). A loop of its own, indexed from 0 with the block's first sample as
    # n_first + i D: written inside the task loop with absolute block indices it stayed
    # scalar (10 ns per block, 40 % of the kernel); this way _sincos runs vectorised
    for i in range(m):
        cyc = cyc_per_sample * (n_first + i * D)
        cyc -= math.floor(cyc)
        c, s = _sincos(-_TWO_PI * cyc)
        ar = np.float64(sum_re[i])
        ai = np.float64(sum_im[i])
        out[i] = complex(ar * c - ai * s, ar * s + ai * c)


@njit(**NJIT_PARALLEL)
def _pilot_dump(x, n0, D, j0, nj, cyc_per_sample, tab_re, tab_im, out):
    n_tasks = (nj + _PILOT_TASK - 1) // _PILOT_TASK
    for task in prange(n_tasks):
        lo = task * _PILOT_TASK
        hi = min(nj, lo + _PILOT_TASK)
        sum_re = np.empty(_PILOT_TASK, np.float32)
        sum_im = np.empty(_PILOT_TASK, np.float32)
        for j in range(lo, hi):
            loc = (j0 + j) * D - n0
            # eight independent float32 partial sums: D is short (~20-60), so the loop
            # vectoriser leaves it scalar; eight lanes are packed by the SLP vectoriser
            # (float32 sums of <= a few hundred products: relative error ~1e-7)
            xs = x[loc:loc + D]
            r0 = r1 = r2 = r3 = r4 = r5 = r6 = r7 = np.float32(0.0)
            m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = np.float32(0.0)
            i = 0
            while i + 8 <= D:
                v0 = np.float32(xs[i])
                v1 = np.float32(xs[i + 1])
                v2 = np.float32(xs[i + 2])
                v3 = np.float32(xs[i + 3])
                v4 = np.float32(xs[i + 4])
                v5 = np.float32(xs[i + 5])
                v6 = np.float32(xs[i + 6])
                v7 = np.float32(xs[i + 7])
                r0 += tab_re[i] * v0
                r1 += tab_re[i + 1] * v1
                r2 += tab_re[i + 2] * v2
                r3 += tab_re[i + 3] * v3
                r4 += tab_re[i + 4] * v4
                r5 += tab_re[i + 5] * v5
                r6 += tab_re[i + 6] * v6
                r7 += tab_re[i + 7] * v7
                m0 += tab_im[i] * v0
                m1 += tab_im[i + 1] * v1
                m2 += tab_im[i + 2] * v2
                m3 += tab_im[i + 3] * v3
                m4 += tab_im[i + 4] * v4
                m5 += tab_im[i + 5] * v5
                m6 += tab_im[i + 6] * v6
                m7 += tab_im[i + 7] * v7
                i += 8
            while i < D:
                v0 = np.float32(xs[i])
                r0 += tab_re[i] * v0
                m0 += tab_im[i] * v0
                i += 1
            sum_re[j - lo] = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
            sum_im[j - lo] = ((m0 + m1) + (m2 + m3)) + ((m4 + m5) + (m6 + m7))
        _pilot_rotate(sum_re, sum_im, hi - lo, (j0 + lo) * D, D, cyc_per_sample, out[lo:hi])


def pilot_decimate(x: np.ndarray, fs: float, *, frequency_hz: float, decimation: int,
                   first_sample: int, first_block: int, n_blocks: int) -> np.ndarray:
    """Down-convert by ``frequency_hz`` and average over blocks of ``decimation`` samples.

    Block j covers absolute samples ``[j D, (j+1) D)`` (centre ``j D + (D-1)/2``) and its value
    is ``mean_n x[n] exp(-2 pi j f n / fs)``: the pilot phasor (amplitude A/2 for a tone
    ``A cos(2 pi f n/fs + phi)``), phase-continuous across calls because the oscillator phase
    is computed from the absolute sample index.

    Parameters
    ----------
    x : ndarray, shape (n,)
        ADC codes (int16/int8/float32); ``x[0]`` is absolute sample ``first_sample``.
    fs : float
        Sample rate, Hz.
    frequency_hz : float
        Oscillator frequency, Hz.
    decimation : int
        D, samples per block.
    first_block, n_blocks : int
        Blocks to compute; they must lie inside ``x``.

    Returns
    -------
    ndarray, shape (n_blocks,), complex128
    """
    x = _check_adc(x)
    D = int(decimation)
    if D < 1:
        raise ValueError(f"decimation must be >= 1, got {decimation!r}")
    j0, nj, n0 = int(first_block), int(n_blocks), int(first_sample)
    if nj < 0 or (nj > 0 and (j0 * D < n0 or (j0 + nj) * D > n0 + x.shape[0])):
        raise ValueError(f"blocks [{j0}, {j0 + nj}) x {D} outside samples "
                         f"[{n0}, {n0 + x.shape[0]})")
    r = float(frequency_hz) / float(fs)
    i = np.arange(D)
    tab = np.exp(-2j * np.pi * r * i) / D
    out = np.empty(nj, np.complex128)
    if nj:
        _pilot_dump(x, n0, D, j0, nj, r, tab.real.astype(np.float32),
                    tab.imag.astype(np.float32), out)
    return out


# --------------------------------------------------------------------------------------------
# cos and sin of one angle, branch-free (the matched filter needs one pair per symbol, with a
# pseudo-random quadrant: libm's two calls and their mispredicted branches cost ~20% of it)
# --------------------------------------------------------------------------------------------
_HALF_PI = 0.5 * math.pi
_TWO_OVER_PI = 2.0 / math.pi


@njit(inline="always", **NJIT)
def _sincos(phi):
    """(cos phi, sin phi) within ``2e-16 + 4e-17 |phi|`` of libm: reduction to |r| <= pi/4 by
    the nearest multiple q of pi/2 (the float64 pi/2 errs by 6e-17, i.e. the result is exact
    for an angle less than 0.4 ulp away from phi), Taylor polynomials (next terms r^17/17!,
    r^18/18! < 1e-17). A Cody-Waite split would not survive fastmath reassociation."""
    q = math.floor(phi * _TWO_OVER_PI + 0.5)
    r = phi - q * _HALF_PI
    r2 = r * r
    sr = r * (1.0 + r2 * (-1.0 / 6 + r2 * (1.0 / 120 + r2 * (-1.0 / 5040 + r2 * (
        1.0 / 362880 + r2 * (-1.0 / 39916800 + r2 * (1.0 / 6227020800
                                                      + r2 * (-1.0 / 1307674368000))))))))
    cr = 1.0 + r2 * (-0.5 + r2 * (1.0 / 24 + r2 * (-1.0 / 720 + r2 * (1.0 / 40320 + r2 * (
        -1.0 / 3628800 + r2 * (1.0 / 479001600 + r2 * (-1.0 / 87178291200
                                                       + r2 * (1.0 / 20922789888000))))))))
    iq = int(q) & 3
    # quadrant iq: (c, s) = (cr, sr), (-sr, cr), (-cr, -sr), (sr, -cr)
    c = sr if iq & 1 else cr
    s = cr if iq & 1 else sr
    c = -c if (iq + 1) & 2 else c
    s = -s if iq & 2 else s
    return c, s


_TAN_PI_8 = math.tan(math.pi / 8)
_QUARTER_PI = 0.25 * math.pi


@njit(inline="always", **NJIT)
def _atan2(y, x):
    """``atan2(y, x)`` within 3e-14 rad, branch-free so that loops over it vectorise (libm's
    atan2 is a scalar call of ~20 ns). Reduction to ``u = (a-1)/(a+1)`` for
    ``a = min/max(|x|, |y|) > tan(pi/8)``, then the odd series of atan to ``u^31``
    (remainder < |u|^33/33 < 3e-14 for |u| <= tan(pi/8)); quadrants by selects. Differs from
    libm only in the sign of zero results (``atan2(-0.0, x)``)."""
    ax = abs(x)
    ay = abs(y)
    mx = max(ax, ay)
    mn = min(ax, ay)
    a = mn / mx if mx > 0.0 else 0.0
    big = a > _TAN_PI_8
    u = (a - 1.0) / (a + 1.0) if big else a
    u2 = u * u
    s = -1.0 / 31
    s = s * u2 + 1.0 / 29
    s = s * u2 - 1.0 / 27
    s = s * u2 + 1.0 / 25
    s = s * u2 - 1.0 / 23
    s = s * u2 + 1.0 / 21
    s = s * u2 - 1.0 / 19
    s = s * u2 + 1.0 / 17
    s = s * u2 - 1.0 / 15
    s = s * u2 + 1.0 / 13
    s = s * u2 - 1.0 / 11
    s = s * u2 + 1.0 / 9
    s = s * u2 - 1.0 / 7
    s = s * u2 + 1.0 / 5
    s = s * u2 - 1.0 / 3
    s = s * u2 + 1.0
    r = u * s + (_QUARTER_PI if big else 0.0)
    r = _HALF_PI - r if ay > ax else r
    r = math.pi - r if x < 0.0 else r
    return -r if y < 0.0 else r


@njit(**NJIT)
def _atan2_array(y, x, out):
    # test hook for _atan2 (vs numpy)
    for i in range(y.shape[0]):
        out[i] = _atan2(y[i], x[i])


# --------------------------------------------------------------------------------------------
# matched filter at symbol instants (polyphase, bandpass taps on the real ADC samples)
# --------------------------------------------------------------------------------------------
_MF_TASK = 2048   # symbols per task: the per-symbol bookkeeping runs as vector loops over it


@njit(inline="always", **NJIT)
def _grid_segment(u, nph):
    """Segment j and fraction f of a linear interpolation at grid coordinate u on a grid of
    nph >= 2 points, held constant beyond its ends (like ``np.interp``)."""
    jf = min(max(math.floor(u), 0.0), nph - 2.0)
    return int(jf), min(max(u - jf, 0.0), 1.0)


@njit(inline="always", **NJIT)
def _mf_prepare(n0, tau0, period, k0, lo, hi, P, half, cyc_per_sample, ph_t0, ph_dt, ph,
                use_phase, locs, phs, rot_c, rot_s, slopes, seg, frac):
    # instants, polyphase index, mixer + carrier phase of symbols [lo, hi), ahead of the
    # multiply-adds, as separate loops so that all but the grid look-up vectorise (one scalar
    # loop with the look-up and _sincos cost as much as the 320-tap multiply-adds). rot_c
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
        rot_c[i] = -_TWO_PI * cyc
        if use_phase:
            # grid segment of the quantised instant
            seg[i], frac[i] = _grid_segment((nc + p / P - ph_t0) / ph_dt, nph)
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
        c, s = _sincos(rot_c[i])
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


# one body, two compilations: parallel for the streaming pass, serial for the many small
# calls (timing fits) where waking the thread pool costs more than the work
_mf_symbols = njit(**NJIT_PARALLEL)(_mf_symbols_py)
_mf_symbols_serial = njit(**NJIT)(_mf_symbols_py)


def _pairs_share_taps(bank: MatchedFilterBank, period: float) -> bool:
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
                      first_order: bool = False, parallel: bool = True) -> np.ndarray:
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

    Returns
    -------
    ndarray, shape (count,), complex64
    """
    x = _check_adc(x)
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
    kernel(x, n0, float(tau0), float(period), k0, nk, bank.n_phases, bank.taps_re,
           bank.taps_im, bank.dtaps_re, bank.dtaps_im, bank.half, bank.mixer_cycles_per_sample,
           ph_t0, ph_dt, ph, use, bool(first_order and use), _pairs_share_taps(bank, period),
           out)
    return out


# --------------------------------------------------------------------------------------------
# down-conversion of a segment by the mixer and an interpolated carrier phase (synchronisation)
# --------------------------------------------------------------------------------------------
_MIX_TASK = 4096   # samples per task: the angle and the rotation run as vector loops over it


@njit(**NJIT)
def _mix_down_range(x, n_first, cyc_per_sample, ph_t0, ph_dt, ph, phi, frac, seg, out):
    # one task: x and out are slices from absolute sample n_first, indexed from 0 in a
    # function of their own so that the loops vectorise (inside the prange body, with
    # out[lo + k], the whole kernel was 3.7x slower). Mixer angle and grid segment
    # (vectorised), then the interpolated carrier phase (gathers), then cos/sin and the product
    nph = ph.shape[0]
    m = x.shape[0]
    for k in range(m):
        i = n_first + k
        cyc = cyc_per_sample * i
        cyc -= math.floor(cyc)
        phi[k] = _TWO_PI * cyc
        seg[k], frac[k] = _grid_segment((i - ph_t0) / ph_dt, nph)
    for k in range(m):
        j = seg[k]
        phi[k] += ph[j] + frac[k] * (ph[j + 1] - ph[j])
    for k in range(m):
        c, s = _sincos(-phi[k])
        v = np.float64(x[k])
        out[k] = complex(v * c, v * s)


@njit(**NJIT_PARALLEL)
def _mix_down(x, cyc_per_sample, ph_t0, ph_dt, ph, out):
    n = x.shape[0]
    n_tasks = (n + _MIX_TASK - 1) // _MIX_TASK
    for task in prange(n_tasks):
        lo = task * _MIX_TASK
        hi = min(n, lo + _MIX_TASK)
        phi = np.empty(_MIX_TASK)
        frac = np.empty(_MIX_TASK)
        seg = np.empty(_MIX_TASK, np.int64)
        _mix_down_range(x[lo:hi], lo, cyc_per_sample, ph_t0, ph_dt, ph, phi, frac, seg,
                        out[lo:hi])


def mix_down(x: np.ndarray, fs: float, *, frequency_hz: float,
             phase: tuple[float, float, np.ndarray],
             out: np.ndarray | None = None) -> np.ndarray:
    """``x[n] exp(-j (2 pi f n / fs + psi(n)))`` for n = 0 .. len(x)-1, complex64.

    Parameters
    ----------
    x : ndarray, shape (n,)
        ADC codes (int16/int8/float32).
    fs, frequency_hz : float
        Sample rate and mixer frequency, Hz.
    phase : (t0, dt, values)
        Carrier phase (rad) on the grid ``t0 + i dt`` (samples of ``x``), linearly interpolated
        and held constant beyond its ends (like ``np.interp``); at least 2 points.
    out : ndarray, shape (n,), complex64, optional
        Where to write the result (e.g. a row of an FFT buffer); a new array by default.
    """
    x = _check_adc(x)
    t0, dt, ph = float(phase[0]), float(phase[1]), np.ascontiguousarray(phase[2], np.float64)
    if ph.shape[0] < 2 or not dt > 0:
        raise ValueError(f"phase grid needs >= 2 points and dt > 0, got {ph.shape[0]}, {dt!r}")
    if out is None:
        out = np.empty(x.shape[0], np.complex64)
    elif (out.shape != x.shape or out.dtype != np.complex64
          or not out.flags.c_contiguous or not out.flags.writeable):
        raise ValueError(f"out must be a writeable contiguous complex64 array of shape "
                         f"{x.shape}, got {out.dtype} {out.shape}")
    if x.shape[0]:
        _mix_down(x, float(frequency_hz) / float(fs), t0, dt, ph, out)
    return out


@njit(**NJIT_PARALLEL)
def _fir_decimate(x, h, R, out):
    n = x.shape[0]
    N = h.shape[0]
    c = (N - 1) // 2
    nout = out.shape[0]
    n_tasks = (nout + _MIX_TASK - 1) // _MIX_TASK
    for task in prange(n_tasks):
        for m in range(task * _MIX_TASK, min(nout, (task + 1) * _MIX_TASK)):
            base = R * m - c
            lo = max(0, -base)
            hi = min(N, n - base)
            ar = np.float32(0.0)
            ai = np.float32(0.0)
            for i in range(lo, hi):
                v = x[base + i]
                ar += h[i] * v.real
                ai += h[i] * v.imag
            out[m] = complex(ar, ai)


def fir_decimate(x: np.ndarray, taps: np.ndarray, factor: int,
                 out: np.ndarray | None = None) -> np.ndarray:
    """Low-pass FIR and keep every ``factor``-th output, centred: ``out[m] = sum_i taps[i]
    x[factor m + i - (N-1)/2]`` (x = 0 outside), so output m sits at input sample
    ``factor m`` (N = len(taps), odd).

    Parameters
    ----------
    x : ndarray, shape (n,), complex64
    taps : ndarray, shape (N,), real, N odd
    factor : int
        Decimation R >= 1.
    out : ndarray, shape (ceil(n / R),), complex64, optional

    Returns
    -------
    ndarray, shape (ceil(n / R),), complex64
    """
    x = np.ascontiguousarray(x, np.complex64)
    h = np.ascontiguousarray(taps, np.float32)
    R = int(factor)
    if x.ndim != 1 or h.ndim != 1 or h.shape[0] % 2 == 0:
        raise ValueError(f"need 1-D x and an odd number of 1-D taps, got {x.shape}, {h.shape}")
    if R < 1:
        raise ValueError(f"factor must be >= 1, got {factor!r}")
    nout = -(-x.shape[0] // R)
    if out is None:
        out = np.empty(nout, np.complex64)
    elif out.shape != (nout,) or out.dtype != np.complex64 or not out.flags.c_contiguous:
        raise ValueError(f"out must be contiguous complex64 of shape ({nout},), got "
                         f"{out.dtype} {out.shape}")
    if nout:
        _fir_decimate(x, h, R, out)
    return out


# --------------------------------------------------------------------------------------------
# boxcar carrier phase: windowed phasor sum, angle, unwrap (one serial pass)
# --------------------------------------------------------------------------------------------
_BOXCAR_RUN = 4096   # outputs per independent sliding-sum run (exact restart, one per task)


@njit(**NJIT_PARALLEL)
def _boxcar_phase(z_re, z_im, z0, n_in, j0, j1, h, last, out):
    # window of output j: blocks [max(j-h, 0), min(j+h+1, n_in)); z[i] is block z0 + i.
    # Parallel part: runs of _BOXCAR_RUN outputs, each restarting its sliding sum exactly,
    # write the wrapped angle (atan2 dominates the cost).
    n_out = j1 - j0
    n_runs = (n_out + _BOXCAR_RUN - 1) // _BOXCAR_RUN
    for r in prange(n_runs):
        ja = j0 + r * _BOXCAR_RUN
        jb = min(ja + _BOXCAR_RUN, j1)
        lo = max(ja - h, 0)
        hi = min(ja + h + 1, n_in)
        sr = 0.0
        si = 0.0
        for i in range(lo, hi):
            sr += z_re[i - z0]
            si += z_im[i - z0]
        for j in range(ja, jb):
            if j > ja:
                nlo = max(j - h, 0)
                nhi = min(j + h + 1, n_in)
                if nhi > hi:
                    sr += z_re[hi - z0]
                    si += z_im[hi - z0]
                if nlo > lo:
                    sr -= z_re[lo - z0]
                    si -= z_im[lo - z0]
                lo = nlo
                hi = nhi
            out[j - j0] = _atan2(si, sr)
    # serial part (cheap): unwrap against the previous output
    prev = last
    for k in range(n_out):
        a = out[k]
        a += _TWO_PI * math.floor((prev - a) / _TWO_PI + 0.5)
        out[k] = a
        prev = a


def boxcar_phase(z: np.ndarray, *, first_block: int, n_blocks_in: int, out_first: int,
                 out_stop: int, half_window: int, last_phase: float) -> np.ndarray:
    """Unwrapped phase of the boxcar-filtered pilot phasors.

    Output j (``out_first <= j < out_stop``) is ``arg sum z[i]`` over blocks
    ``max(j-h, 0) <= i < min(j+h+1, n_blocks_in)``, unwrapped so that consecutive outputs (and
    the first one vs ``last_phase``) differ by less than pi. ``z[0]`` is block ``first_block``.
    """
    z = np.ascontiguousarray(z, np.complex128)
    j0, j1, h = int(out_first), int(out_stop), int(half_window)
    if j1 < j0 or h < 0:
        raise ValueError(f"bad output range [{j0}, {j1}) or half window {h}")
    if j1 > j0 and (max(j0 - h, 0) < first_block
                    or min(j1 + h, n_blocks_in) > first_block + z.shape[0]):
        raise ValueError("phasor history does not cover the requested windows")
    out = np.empty(j1 - j0)
    if j1 > j0:
        _boxcar_phase(np.ascontiguousarray(z.real), np.ascontiguousarray(z.imag),
                      int(first_block), int(n_blocks_in), j0, j1, h, float(last_phase), out)
    return out


# --------------------------------------------------------------------------------------------
# Kalman phase tracker (random-walk phase, pilot-phasor observation) and RTS smoother
# --------------------------------------------------------------------------------------------
@njit(**NJIT)
def _angles_range(z, out):
    # over slices indexed from 0, in a function of its own, the loop vectorises (inside the
    # prange body over [t per, (t+1) per) it did not: 2.3x slower)
    for j in range(z.shape[0]):
        out[j] = _atan2(z[j].imag, z[j].real)


@njit(**NJIT_PARALLEL)
def _angles(z, out):
    # the observations' atan2 does not depend on the filter state: computed in parallel,
    # out of the serial recursion
    n = z.shape[0]
    nthreads = 16
    per = (n + nthreads - 1) // nthreads
    for t in prange(nthreads):
        lo = min(n, t * per)
        hi = min(n, (t + 1) * per)
        _angles_range(z[lo:hi], out[lo:hi])


_KF_RUN = 64   # steps per speculative run of the steady-state Kalman filter


@njit(**NJIT)
def _kalman_forward(meas, phi0, p0, q, r, phi_f, p_f):
    phi = phi0
    p = p0
    n = meas.shape[0]
    j = 0
    # variance recursion until it reaches its fixed point (to 1e-15): the division chain then
    # leaves the loop
    while j < n:
        pp = p + q
        g = pp / (pp + r)
        p_new = (1.0 - g) * pp
        innov = meas[j] - phi
        innov -= _TWO_PI * math.floor(innov / _TWO_PI + 0.5)
        phi = phi + g * innov
        phi_f[j] = phi
        j += 1
        if abs(p_new - p) <= 1e-15 * p:
            # converged: p stays at the value this step's gain came from, so a later call
            # started from p_f[-1] continues exactly as one long call would
            p_f[j - 1] = p
            break
        p_f[j - 1] = p_new
        p = p_new
    if j >= n:
        return phi, p
    pp = p + q
    g = pp / (pp + r)
    p_f[j:] = p
    # steady state. The measurements are wrapped angles and phi is unwrapped: the innovation
    # is (meas + off) - phi with off the multiple of 2 pi that brings meas next to phi.
    # Runs of _KF_RUN steps go without the wrap (a multiply-add chain only) and are redone
    # step by step with it, and off re-derived, when an innovation left [-pi, pi): only when
    # the phase crosses a multiple of 2 pi.
    off = _TWO_PI * math.floor((phi - meas[j]) / _TWO_PI + 0.5)
    while j < n:
        e = min(n, j + _KF_RUN)
        phi_start = phi
        bad = False
        for i in range(j, e):
            innov = (meas[i] + off) - phi
            bad |= (innov >= math.pi) | (innov < -math.pi)
            phi = phi + g * innov
            phi_f[i] = phi
        if bad:
            phi = phi_start
            for i in range(j, e):
                innov = (meas[i] + off) - phi
                if innov >= math.pi or innov < -math.pi:
                    off = _TWO_PI * math.floor((phi - meas[i]) / _TWO_PI + 0.5)
                    innov = (meas[i] + off) - phi
                phi = phi + g * innov
                phi_f[i] = phi
        j = e
    return phi, p


def kalman_phase_forward(z: np.ndarray, *, phi0: float, p0: float, q: float,
                         r: float) -> tuple[np.ndarray, np.ndarray]:
    """Forward Kalman filter of a random-walk phase observed through pilot phasors.

    State ``phi_j = phi_{j-1} + w_j``, ``Var(w) = q`` (rad^2 per step, ``2 pi linewidth dt``);
    observation ``arg z_j = phi_j + v_j`` (mod 2 pi), ``Var(v) = r``. The innovation is wrapped
    to (-pi, pi] so the output is an unwrapped, continuous phase (Chin et al., npj Quantum Inf.
    7, 20 (2021), linearised around the prediction).

    Returns ``(phi_filtered, p_filtered)``, float64 arrays shaped like ``z``.
    """
    z = np.ascontiguousarray(z, np.complex128)
    if z.ndim != 1:
        raise ValueError(f"z must be 1-D, got shape {z.shape}")
    if not (q >= 0 and r > 0):
        raise ValueError(f"need q >= 0 and r > 0, got q={q!r}, r={r!r}")
    n = z.shape[0]
    phi_f = np.empty(n)
    p_f = np.empty(n)
    if n:
        meas = np.empty(n)
        _angles(z, meas)
        _kalman_forward(meas, float(phi0), float(p0), float(q), float(r), phi_f, p_f)
    return phi_f, p_f


@njit(inline="always", **NJIT)
def _rts_run(phi_f, p_f, q, lo, hi, phi_end, out, keep_hi):
    # backward over forward estimates [lo, hi); phi_s starts as the smoothed state after
    # hi - 1; the smoothed values of j < keep_hi go to out[j] (same indexing as phi_f)
    phi_s = phi_end
    p_last = -1.0
    c = 0.0
    for j in range(hi - 1, lo - 1, -1):
        # prediction of j+1 from j: (phi_f[j], p_f[j] + q); the gain does not depend on the
        # smoothed state, so the loop-carried chain is one multiply-add; it is recomputed
        # only when p_f changes (after the filter's start-up it is constant)
        pj = p_f[j]
        if pj != p_last:
            c = pj / (pj + q)
            p_last = pj
        phi_s = phi_f[j] + c * (phi_s - phi_f[j])
        if j < keep_hi:
            out[j] = phi_s


@njit(**NJIT)
def _rts(phi_f, p_f, q, phi_end, out):
    n = phi_f.shape[0]
    _rts_run(phi_f, p_f, q, 0, n, phi_end, out, n)


@njit(**NJIT_PARALLEL)
def _rts_blocks(phi_f, p_f, q, L, H, nb, out):
    # block b: backward from H estimates after its end (the forward value there as the
    # start), keep block b; independent blocks -> one task each
    for b in prange(nb):
        lo = b * L
        hi = lo + L + H
        _rts_run(phi_f, p_f, q, lo, hi, phi_f[hi - 1], out, lo + L)


def rts_smooth_block(phi_f: np.ndarray, p_f: np.ndarray, q: float, phi_next: float,
                     p_next: float) -> np.ndarray:
    """Rauch-Tung-Striebel backward pass over a block of forward estimates.

    ``phi_next`` is the (approximately) smoothed state after the block (``p_next``, its
    variance, does not enter the smoothed mean); the random-walk prediction is
    ``phi_{j+1|j} = phi_f[j]`` with variance ``p_f[j] + q``.
    """
    phi_f = np.ascontiguousarray(phi_f, np.float64)
    p_f = np.ascontiguousarray(p_f, np.float64)
    if phi_f.shape != p_f.shape or phi_f.ndim != 1:
        raise ValueError(f"phi_f and p_f must be 1-D of equal length, got {phi_f.shape} and "
                         f"{p_f.shape}")
    out = np.empty_like(phi_f)
    if phi_f.shape[0]:
        _rts(phi_f, p_f, float(q), float(phi_next), out)
    return out


def rts_smooth_blocks(phi_f: np.ndarray, p_f: np.ndarray, q: float, block: int,
                      n_blocks: int, *, lookahead: int | None = None) -> np.ndarray:
    """Fixed-lag RTS over consecutive blocks: block b (``[b L, (b+1) L)``) is smoothed by a
    backward pass that starts H = ``lookahead`` estimates after its end (default: L) from the
    forward estimate there, i.e. ``rts_smooth_block(phi_f[bL:(b+1)L+H], ...,
    phi_f[(b+1)L+H-1], ...)[:L]`` for every b, in one parallel call (``carrier.rts_lengths``
    gives L and H). Needs ``1 <= H <= L`` and ``len(phi_f) >= n_blocks L + H``.

    Returns
    -------
    ndarray, shape (n_blocks * L,), float64
    """
    phi_f = np.ascontiguousarray(phi_f, np.float64)
    p_f = np.ascontiguousarray(p_f, np.float64)
    L, nb = int(block), int(n_blocks)
    H = L if lookahead is None else int(lookahead)
    if L < 1 or nb < 0:
        raise ValueError(f"need block >= 1 and n_blocks >= 0, got {block!r}, {n_blocks!r}")
    if not 1 <= H <= L:
        raise ValueError(f"lookahead must be in [1, block = {L}], got {lookahead!r}")
    if phi_f.shape != p_f.shape or phi_f.shape[0] < nb * L + H:
        raise ValueError(f"{nb} blocks of {L} with look-ahead {H} need {nb * L + H} forward "
                         f"estimates, got {phi_f.shape[0]} (p_f: {p_f.shape[0]})")
    out = np.empty(nb * L)
    if nb:
        _rts_blocks(phi_f, p_f, float(q), L, H, nb, out)
    return out


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
    of the range gives the same flags (measured: 6 ms for 2e7 flags in 2^18 blocks; the
    PCG64 streams per block used before took 50-60 ms).

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


# --------------------------------------------------------------------------------------------
# small reductions without BLAS (OpenBLAS threads would fight numba's for the 2 cores)
# --------------------------------------------------------------------------------------------
@njit(**NJIT)
def _cdot(a, b):
    sr = 0.0
    si = 0.0
    for i in range(a.shape[0]):
        ar = np.float64(a[i].real)
        ai = np.float64(a[i].imag)
        br = np.float64(b[i].real)
        bi = np.float64(b[i].imag)
        sr += ar * br + ai * bi
        si += ar * bi - ai * br
    return sr, si


def cdot(a: np.ndarray, b: np.ndarray) -> complex:
    """``sum(conj(a) * b)`` in float64 (like ``np.vdot`` for 1-D arrays, but never through BLAS
    and without complex128 temporaries: complex64 inputs are widened element by element)."""
    a = np.ascontiguousarray(a)
    b = np.ascontiguousarray(b)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"cdot needs two 1-D arrays of equal length, got {a.shape}, {b.shape}")
    if a.dtype.kind != "c":
        a = a.astype(np.complex128)
    if b.dtype.kind != "c":
        b = b.astype(np.complex128)
    sr, si = _cdot(a, b)
    return complex(sr, si)


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
    if x.shape[0]:
        _pair_moments(x, y, m, use, float(scale), part)
    tot = part.sum(axis=0)
    first = tot[:4].copy()
    outer = np.zeros((4, 4))
    outer[np.triu_indices(4)] = tot[4:]
    iu = np.triu_indices(4, 1)
    outer[(iu[1], iu[0])] = outer[iu]
    return outer, first
