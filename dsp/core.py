"""Numeric building blocks shared by the stage kernels: ADC input validation, branch-free
``sincos``/``atan2`` (inlined into the callers' loops), linear-grid look-up and a BLAS-free
complex dot product. Public wrappers validate dtype/layout; ``@njit`` helpers compute.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from dsp._numba_options import NJIT

__all__ = ["ADC_DTYPES", "TWO_PI", "atan2", "atan2_array", "cdot", "check_adc", "grid_segment",
           "sincos"]

ADC_DTYPES = (np.int16, np.int8, np.float32)
TWO_PI = 2.0 * math.pi


def check_adc(x: np.ndarray) -> np.ndarray:
    """ADC codes as a contiguous 1-D int16/int8/float32 array (other floats become float32:
    the kernels convert sample by sample, so no float copy of an integer chunk is made)."""
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"ADC samples must be 1-D, got shape {x.shape}")
    if x.dtype not in ADC_DTYPES:
        if x.dtype.kind == "f":
            x = x.astype(np.float32)
        else:
            raise ValueError(f"ADC dtype must be one of int16, int8, float32, got {x.dtype}")
    return np.ascontiguousarray(x)


# --------------------------------------------------------------------------------------------
# cos and sin of one angle, branch-free (the matched filter needs one pair per symbol, with a
# pseudo-random quadrant: libm's two calls and their mispredicted branches cost ~20% of it)
# --------------------------------------------------------------------------------------------
_HALF_PI = 0.5 * math.pi
_TWO_OVER_PI = 2.0 / math.pi


@njit(inline="always", **NJIT)
def sincos(phi):
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
def atan2(y, x):
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
def atan2_array(y, x, out):
    """``out[i] = atan2(y[i], x[i])`` (the inlined ``atan2`` over arrays, e.g. to test it)."""
    for i in range(y.shape[0]):
        out[i] = atan2(y[i], x[i])


@njit(inline="always", **NJIT)
def grid_segment(u, nph):
    """Segment j and fraction f of a linear interpolation at grid coordinate u on a grid of
    nph >= 2 points, held constant beyond its ends (like ``np.interp``)."""
    jf = min(max(math.floor(u), 0.0), nph - 2.0)
    return int(jf), min(max(u - jf, 0.0), 1.0)


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


@njit(**NJIT)
def _rdot(a, b):
    # _cdot's real part for real inputs (the same sums, bit for bit: tests/dsp/test_core.py)
    sr = 0.0
    for i in range(a.shape[0]):
        sr += np.float64(a[i]) * np.float64(b[i])
    return sr


def cdot(a: np.ndarray, b: np.ndarray) -> complex:
    """``sum(conj(a) * b)`` in float64 (like ``np.vdot`` for 1-D arrays, but never through BLAS
    and without complex128 temporaries: complex64 inputs are widened element by element, and
    two real inputs take a real loop instead of two complex copies)."""
    a = np.ascontiguousarray(a)
    b = np.ascontiguousarray(b)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"cdot needs two 1-D arrays of equal length, got {a.shape}, {b.shape}")
    if a.dtype.kind == "f" and b.dtype.kind == "f":
        # the streaming phase fit's dot per chunk: the copies cost 8x the sum
        return complex(_rdot(a, b), 0.0)
    if a.dtype.kind != "c":
        a = a.astype(np.complex128)
    if b.dtype.kind != "c":
        b = b.astype(np.complex128)
    sr, si = _cdot(a, b)
    return complex(sr, si)

