"""Gaussian-state numerics: covariance matrices, symplectic eigenvalues, entropies.

Conventions: quadrature ordering (x1, p1, x2, p2, ...), shot-noise units (vacuum
covariance = identity), symplectic form ``Omega = direct sum of [[0, 1], [-1, 0]]``.
A physical covariance matrix ``gamma`` has symplectic eigenvalues ``nu_k >= 1``,
the absolute values of the eigenvalues of ``i Omega gamma``; the von Neumann entropy
of the state is ``sum_k g((nu_k - 1)/2)`` bits with ``g(x) = (x+1) log2(x+1) - x log2 x``.

These are the generic tools behind the closed forms of :mod:`qkd_hw.keyrate`; the test
suite uses them to rebuild the purified state of the trusted-noise model mode by mode
and check the closed forms numerically.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "beam_splitter",
    "condition_on_heterodyne",
    "condition_on_homodyne",
    "direct_sum",
    "entropy_g",
    "omega",
    "symplectic_eigenvalues",
    "two_mode_squeezed",
    "von_neumann_entropy",
]

_LN2 = math.log(2.0)


def entropy_g(x: np.ndarray | float) -> np.ndarray | float:
    """``g(x) = (x+1) log2(x+1) - x log2(x)`` in bits, ``g(0) = 0``; x = mean photon number.

    Written as ``log2(1+x) + x log2(1+1/x)`` (both terms positive, no cancellation for
    large x). Inputs slightly below 0 from rounding (``nu = 1 - 1e-15``) are clipped to 0.
    """
    xa = np.maximum(np.asarray(x, dtype=np.float64), 0.0)
    safe = np.where(xa > 0, xa, 1.0)
    out = np.where(xa > 0, (np.log1p(xa) + xa * np.log1p(1.0 / safe)) / _LN2, 0.0)
    return float(out) if np.ndim(x) == 0 else out


def omega(n_modes: int) -> np.ndarray:
    """Symplectic form of ``n_modes`` modes, shape (2n, 2n)."""
    return np.kron(np.eye(n_modes), np.array([[0.0, 1.0], [-1.0, 0.0]]))


def symplectic_eigenvalues(gamma: np.ndarray) -> np.ndarray:
    """The n symplectic eigenvalues of a 2n x 2n covariance matrix, ascending.

    Computed as the moduli of the eigenvalues of ``i Omega gamma`` (which come in
    pairs ``+-nu``); each pair is reported once.
    """
    g = np.asarray(gamma, dtype=np.float64)
    if g.ndim != 2 or g.shape[0] != g.shape[1] or g.shape[0] % 2:
        raise ValueError(f"covariance matrix must be 2n x 2n, got shape {g.shape}")
    if not np.allclose(g, g.T, rtol=1e-10, atol=1e-12):
        raise ValueError("covariance matrix must be symmetric")
    n = g.shape[0] // 2
    ev = np.linalg.eigvals(1j * omega(n) @ g)
    nu = np.sort(np.abs(ev.real))
    return nu[::2]  # each value appears twice (+nu and -nu)


def von_neumann_entropy(gamma: np.ndarray) -> float:
    """Entropy in bits of the Gaussian state with covariance ``gamma``."""
    nu = symplectic_eigenvalues(gamma)
    return float(np.sum(entropy_g((nu - 1.0) / 2.0)))


def direct_sum(*blocks: np.ndarray) -> np.ndarray:
    """Block-diagonal covariance of independent subsystems."""
    size = sum(b.shape[0] for b in blocks)
    out = np.zeros((size, size))
    k = 0
    for b in blocks:
        out[k:k + b.shape[0], k:k + b.shape[0]] = b
        k += b.shape[0]
    return out


def two_mode_squeezed(v: float) -> np.ndarray:
    """EPR (two-mode squeezed vacuum) state with local variance ``v >= 1``, 4x4."""
    if v < 1:
        raise ValueError(f"EPR variance must be >= 1, got {v!r}")
    c = math.sqrt(v * v - 1.0)
    z = np.diag([1.0, -1.0])
    return np.block([[v * np.eye(2), c * z], [c * z, v * np.eye(2)]])


def beam_splitter(transmittance: float, n_modes: int, i: int, j: int) -> np.ndarray:
    """Symplectic matrix of a beam splitter (amplitude transmission sqrt(T)) on modes i, j.

    ``a_i -> sqrt(T) a_i + sqrt(1-T) a_j``, ``a_j -> -sqrt(1-T) a_i + sqrt(T) a_j``.
    """
    if not 0 <= transmittance <= 1:
        raise ValueError(f"beam-splitter transmittance must be in [0, 1], got {transmittance!r}")
    s = np.eye(2 * n_modes)
    t, r = math.sqrt(transmittance), math.sqrt(1.0 - transmittance)
    ii, jj = slice(2 * i, 2 * i + 2), slice(2 * j, 2 * j + 2)
    s[ii, ii] = t * np.eye(2)
    s[ii, jj] = r * np.eye(2)
    s[jj, ii] = -r * np.eye(2)
    s[jj, jj] = t * np.eye(2)
    return s


def _split(gamma: np.ndarray, mode: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = gamma.shape[0] // 2
    if not 0 <= mode < n:
        raise ValueError(f"mode must be in [0, {n}), got {mode}")
    keep = [k for k in range(2 * n) if k // 2 != mode]
    meas = [2 * mode, 2 * mode + 1]
    return gamma[np.ix_(keep, keep)], gamma[np.ix_(meas, meas)], gamma[np.ix_(keep, meas)]


def condition_on_homodyne(gamma: np.ndarray, mode: int, quadrature: str = "x") -> np.ndarray:
    """Covariance of the other modes after an ideal homodyne measurement of ``mode``.

    ``gamma_A - sigma (Pi gamma_B Pi)^MP sigma^T``, ``Pi = diag(1, 0)`` (x) or
    ``diag(0, 1)`` (p), ``^MP`` the Moore-Penrose pseudo-inverse.
    """
    ga, gb, s = _split(np.asarray(gamma, dtype=np.float64), mode)
    if quadrature not in ("x", "p"):
        raise ValueError(f"quadrature must be 'x' or 'p', got {quadrature!r}")
    pi = np.diag([1.0, 0.0] if quadrature == "x" else [0.0, 1.0])
    return ga - s @ np.linalg.pinv(pi @ gb @ pi) @ s.T


def condition_on_heterodyne(gamma: np.ndarray, mode: int) -> np.ndarray:
    """Covariance of the other modes after an ideal heterodyne measurement of ``mode``.

    ``gamma_A - sigma (gamma_B + I)^-1 sigma^T``.
    """
    ga, gb, s = _split(np.asarray(gamma, dtype=np.float64), mode)
    return ga - s @ np.linalg.solve(gb + np.eye(2), s.T)
