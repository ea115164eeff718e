"""Small least-squares fits of pilot phase records (numpy and one numba loop, no LAPACK)."""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["diffusion_slope", "line_fit", "radial_phase_noise", "slope_std", "structure_fit"]

#: the robust slope replaces the mean one when they differ by more than this many sds
ROBUST_SWITCH_SIGMAS = 4.0


def line_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares line ``y ~ slope x + intercept`` from centred sums (``np.polyfit`` goes
    through LAPACK, whose OpenBLAS threads fight numba's for the cores)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    dx = x - x.mean()
    my = float(y.mean())
    slope = float(np.sum(dx * (y - my)) / np.sum(dx * dx))
    return slope, my - slope * float(x.mean())


def radial_phase_noise(z: np.ndarray) -> float:
    """Phase-noise variance (rad^2) of phasors ``z = a e^{j phi} + n`` from their AMPLITUDE
    scatter: circular additive noise puts the same variance on the radial and the tangential
    component, and the laser phase noise moves only the tangential one, so
    ``Var(phi_noise) = Var|z| / mean|z|^2``. Unlike the intercept of the structure function,
    this does not vanish under the diffusion term when the linewidth is large or the pilot
    strong (the intercept fit returned 0 at 10 kHz)."""
    r = np.abs(z)
    m = float(np.mean(r))
    return float(np.var(r) / (m * m)) if m > 0 else float("inf")


def structure_fit(ph: np.ndarray, max_lag: int, *,
                  robust: bool = False) -> tuple[float, float]:
    """Fit ``S(l) = 2 s2 + slope * l`` for l = 1..max_lag; returns (s2, slope per block).

    ``robust``: ``S(l)`` from the increments wrapped to [-pi, pi) about the circular mean
    slope (the same for increments well inside +-pi). A corrupted block then moves only the
    ~2 increments per lag that touch it, by at most pi^2 each: about the same at every lag,
    so the intercept takes it, not the slope; in the unwrapped record it can leave a cycle
    slip, which adds ``l (2 pi)^2 / n`` to ``S(l)``, all slope. (Not a median: the pilot
    phase also holds periodic interference, whose squares are not chi-square.)"""
    lags = np.arange(1, max_lag + 1)
    if robust:
        b1 = float(np.angle(np.mean(np.exp(1j * np.diff(ph)))))
        ph = np.ascontiguousarray(ph, np.float64)
        buf = np.empty(ph.shape[0])
        S = np.array([np.mean(_wrapped_squares(ph, int(lag), b1, buf)) for lag in lags])
        slope, icpt = line_fit(lags, S)
        return float(icpt / 2), float(slope)
    k = np.arange(ph.shape[0])
    b1, b0 = line_fit(k, ph)
    ph = ph - (b0 + b1 * k)
    S = np.array([np.mean((ph[lag:] - ph[:-lag]) ** 2) for lag in lags])
    slope, icpt = line_fit(lags, S)
    return float(icpt / 2), float(slope)


def _wrap(d: np.ndarray) -> np.ndarray:
    """Angles wrapped to [-pi, pi)."""
    return (d + np.pi) % (2 * np.pi) - np.pi


_TWO_PI = 2 * math.pi


# Not fastmath: every element must round exactly as the numpy expression
# ``_wrap(ph[lag:] - ph[:-lag] - lag * b1) ** 2`` (numba's float ``%`` is numpy's remainder:
# fmod with the sign fixed to the divisor's), only without its
# four temporaries and the divmod.
@njit(cache=True, nogil=True, error_model="numpy")
def _wrapped_squares_kernel(ph, lag, b1, out):
    shift = lag * b1
    rest = 0
    for i in range(out.shape[0]):
        y = (ph[i + lag] - ph[i] - shift) + math.pi
        # fmod(y, 2 pi) is y itself for |y| < 2 pi (exact); beyond, the slow fmod below (in a
        # loop of its own: LLVM would otherwise evaluate it for every element)
        inside = -_TWO_PI < y < _TWO_PI
        m = y + _TWO_PI if y < 0.0 else y
        w = m - math.pi
        out[i] = w * w
        rest += 0 if inside else 1
    if rest:
        for i in range(out.shape[0]):
            y = (ph[i + lag] - ph[i] - shift) + math.pi
            if not -_TWO_PI < y < _TWO_PI:
                w = y % _TWO_PI - math.pi
                out[i] = w * w


def _wrapped_squares(ph: np.ndarray, lag: int, b1: float, buf: np.ndarray) -> np.ndarray:
    """``_wrap(ph[lag:] - ph[:-lag] - lag * b1) ** 2``, bit for bit, in ``buf``'s front."""
    out = buf[:ph.shape[0] - lag]
    _wrapped_squares_kernel(ph, lag, float(b1), out)
    return out


def slope_std(ph: np.ndarray, max_lag: int, *, robust: bool = False) -> float:
    """Rough standard error of the diffusion slope: spread of the slope over quarters
    (``robust``: of the robust slope, ``structure_fit``)."""
    q = ph.shape[0] // 4
    if q < 4 * max_lag:
        return float("inf")
    slopes = [structure_fit(ph[i * q:(i + 1) * q], max_lag, robust=robust)[1]
              for i in range(4)]
    return float(np.std(slopes, ddof=1) / 2)


def diffusion_slope(ph: np.ndarray, max_lag: int) -> float:
    """Diffusion slope of the structure function (rad^2 per block) that a few bad blocks cannot
    move: the mean fit (``structure_fit``), unless the robust fit differs from it by more than
    ``ROBUST_SWITCH_SIGMAS`` of the robust fit's spread (``slope_std``; the mean fit's own
    spread grows with the outliers): then outliers drive it and the robust one is returned.
    On a clean record both agree and the mean fit, the more precise, is kept."""
    slope = structure_fit(ph, max_lag)[1]
    robust = structure_fit(ph, max_lag, robust=True)[1]
    sd = slope_std(ph, max_lag, robust=True)
    if abs(slope - robust) > ROBUST_SWITCH_SIGMAS * sd:   # sd = inf: too short to tell
        return robust
    return slope
