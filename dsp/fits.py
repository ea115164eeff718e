"""Small least-squares fits of pilot phase records (numpy and one numba loop, no LAPACK)."""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["diffusion_slope", "line_fit", "radial_phase_noise", "remove_tone_leakage",
           "slope_std", "slope_std_white", "structure_fit"]

#: most Jacobi sweeps of ``remove_tone_leakage``; fewer when the largest coupling |g| to the
#: power of the sweeps is already below ``LEAKAGE_TOLERANCE`` (the error shrinks by |g| per
#: sweep)
LEAKAGE_SWEEPS = 8
LEAKAGE_TOLERANCE = 1e-4
#: largest boxcar coupling |g| between two tones for which the leakage is removed
MAX_LEAKAGE_COUPLING = 0.5

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


def _boxcar_gain(nu: float, D: int) -> complex:
    """``(1/D) sum_{i<D} exp(2 pi j nu i)``: a block mean's response to a tone of ``nu``
    cycles per sample."""
    return complex(np.mean(np.exp(2j * np.pi * nu * np.arange(D))))


def remove_tone_leakage(phasors: list[np.ndarray], cycles_per_sample: list[float], D: int,
                        first_block: int) -> list[np.ndarray] | None:
    """Each tone's block phasors without the other tones' leakage, or None when two tones
    are too close to separate.

    Block ``j`` of tone k is ``z_k(j) = mean_{n in block j} x[n] exp(-2 pi j nu_k n)``
    (``dsp.pilot.pilot_decimate``). A real signal of tones
    ``x = sum_m a_m e^{2 pi j nu_m n} + conj(a_m) e^{-2 pi j nu_m n}`` (``a_m`` constant over a
    block) gives ``z_k = a_k + sum_{m != k} a_m G(nu_m - nu_k) + sum_m conj(a_m) G(-nu_m - nu_k)``
    with ``G(nu, j) = e^{2 pi j nu j D} g(nu)`` and g the block mean's response
    (``_boxcar_gain``): the other pilots and every tone's negative-frequency image leak into
    the block mean as rotating phasors, which the amplitude scatter would count as noise.
    The system is solved for the ``a_k`` by Jacobi sweeps (each shrinks the error by about
    the squared coupling; only couplings below ``MAX_LEAKAGE_COUPLING`` are accepted).

    Parameters
    ----------
    phasors : list of ndarray, shape (n,)
        Per tone, its block phasors (complex).
    cycles_per_sample : list of float
        Per tone, its mixing frequency over the sample rate.
    D : int
        Samples per block.
    first_block : int
        Absolute index of block 0 (block j starts at sample ``(first_block + j) D``).

    Returns
    -------
    list of ndarray or None
        The tones' complex amplitudes per block.
    """
    nus = [float(v) for v in cycles_per_sample]
    n = phasors[0].shape[0]
    start = (first_block + np.arange(n)) * float(D)

    def coupling(nu: float) -> tuple[complex, np.ndarray]:
        g = _boxcar_gain(nu, D)
        return g, g * np.exp(2j * np.pi * ((nu * start) % 1.0))

    direct, image = {}, {}
    gmax = 1e-300
    for k, nk in enumerate(nus):
        for m, nm in enumerate(nus):
            if m != k:
                g, direct[k, m] = coupling(nm - nk)
                if abs(g) > MAX_LEAKAGE_COUPLING:
                    return None
                gmax = max(gmax, abs(g))
            g, image[k, m] = coupling(-nm - nk)
            gmax = max(gmax, abs(g))
    sweeps = LEAKAGE_SWEEPS if gmax >= 1 else \
        min(LEAKAGE_SWEEPS, max(1, math.ceil(math.log(LEAKAGE_TOLERANCE) / math.log(gmax))))
    a = [np.asarray(z, np.complex128) for z in phasors]
    for _ in range(sweeps):
        a = [phasors[k] - sum(direct[k, m] * a[m] for m in range(len(nus)) if m != k)
             - sum(image[k, m] * np.conj(a[m]) for m in range(len(nus)))
             for k in range(len(nus))]
    return a


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


def slope_std_white(sigma2: float, n: int, max_lag: int) -> float:
    """Standard deviation of the ``structure_fit`` slope (rad^2 per block) of ``n`` blocks of
    white phase noise of variance ``sigma2`` per block and no diffusion (zero linewidth).

    Parameters
    ----------
    sigma2 : float
        Phase-noise variance per block (rad^2).
    n : int
        Blocks in the record.
    max_lag : int
        Largest lag L of the fit (lags 1..L).

    Returns
    -------
    float
        ``2 sigma2 / sqrt(n L (L^2 - 1) / 12)``.

    Notes
    -----
    With ``d_j(l) = n_{j+l} - n_j`` Gaussian, ``Cov(S(l), S(m)) = sigma2^2 (8 + 4 [l = m]) / n``
    (four coinciding index pairs, six at l = m); the least-squares slope weights sum to zero,
    so the common part drops and ``Var = 4 sigma2^2 / (n sum (l - mean l)^2)``. End effects
    (``n - l`` terms) and the detrending are neglected (L << n).
    """
    if n <= 0 or max_lag < 2:
        return float("inf")
    return float(2.0 * sigma2 / np.sqrt(n * max_lag * (max_lag**2 - 1) / 12.0))


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
