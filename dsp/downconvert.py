"""Down-conversion kernels of the synchronisation: a segment mixed down by the mixer and an
interpolated carrier phase (``mix_down``), and a decimating low-pass FIR (``fir_decimate``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from dsp._numba_options import NJIT, NJIT_PARALLEL
from dsp.core import TWO_PI, check_adc, grid_segment, sincos

__all__ = ["fir_decimate", "mix_down"]


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
        phi[k] = TWO_PI * cyc
        seg[k], frac[k] = grid_segment((i - ph_t0) / ph_dt, nph)
    for k in range(m):
        j = seg[k]
        phi[k] += ph[j] + frac[k] * (ph[j + 1] - ph[j])
    for k in range(m):
        c, s = sincos(-phi[k])
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
    x = check_adc(x)
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
