"""Small least-squares fits of pilot phase records (numpy only, no LAPACK)."""

from __future__ import annotations

import numpy as np

__all__ = ["line_fit", "radial_phase_noise", "slope_std", "structure_fit"]


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


def structure_fit(ph: np.ndarray, max_lag: int) -> tuple[float, float]:
    """Fit ``S(l) = 2 s2 + slope * l`` for l = 1..max_lag; returns (s2, slope per block)."""
    k = np.arange(ph.shape[0])
    b1, b0 = line_fit(k, ph)
    ph = ph - (b0 + b1 * k)
    lags = np.arange(1, max_lag + 1)
    S = np.array([np.mean((ph[lag:] - ph[:-lag]) ** 2) for lag in lags])
    slope, icpt = line_fit(lags, S)
    return float(icpt / 2), float(slope)


def slope_std(ph: np.ndarray, max_lag: int) -> float:
    """Rough standard error of the diffusion slope: spread of the slope over quarters."""
    q = ph.shape[0] // 4
    if q < 4 * max_lag:
        return float("inf")
    slopes = [structure_fit(ph[i * q:(i + 1) * q], max_lag)[1] for i in range(4)]
    return float(np.std(slopes, ddof=1) / 2)
