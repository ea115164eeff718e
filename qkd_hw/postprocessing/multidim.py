"""Multidimensional reconciliation maps (Leverrier et al., PRA 77, 042325 (2008)).

Bob cuts his real values into blocks of ``d`` = 1, 2, 4 or 8 (reals, complex numbers,
quaternions, octonions, all built by the Cayley-Dickson construction), draws ``d`` uniformly
random key bits per block, i.e. a point ``u`` of the spherical code ``{±1/sqrt(d)}^d``, and
publishes for each block the unit element

    a = u * conj(y / |y|)        (algebra product),

together with the norm ``|y|``. Left multiplication by a unit element ``a`` is an orthogonal
map of R^d (the four algebras are normed division algebras) and ``a * (y/|y|) = u`` because any
two elements generate an associative subalgebra (Artin's theorem for the non-associative
octonions). Alice applies the same map to her block ``x``.

What is disclosed and why it says nothing about the key bits: for Gaussian ``y`` the direction
``y/|y|`` is uniform on the unit sphere and independent of ``|y|``; the bits ``u`` are drawn
independently of ``y``. For a fixed ``u``, ``a = u * conj(ŷ)`` is an orthogonal image of a
uniform ``ŷ``, hence uniform on the sphere whatever ``u`` is: the pair (maps, norms) is
independent of ``u``, so it carries no information on the key bits. (The bits' information
reaches Eve only through the syndrome, counted as leakage.)

The channel Alice sees: with ``x`` and ``y`` normalised to unit variance and correlation
``rho = sqrt(snr / (1 + snr))``, ``x = rho * y + w`` with ``w`` independent of ``y`` and of
variance ``1 - rho^2 = 1/(1 + snr)``. Then ``a * x = rho |y| u + a * w`` and ``a * w`` has the
same isotropic Gaussian law as ``w``: each mapped component is a binary-input AWGN channel
``v_i = rho |y| (±1/sqrt(d)) + noise``, noise variance ``1/(1 + snr)``.
"""

from __future__ import annotations

from functools import cache

import numpy as np

__all__ = [
    "DIMENSIONS",
    "apply_maps",
    "bits_to_points",
    "bob_maps",
    "conjugate",
    "left_matrix",
    "multiply",
]

#: supported block dimensions: reals, complex, quaternions, octonions
DIMENSIONS = (1, 2, 4, 8)


def _cd_product(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Cayley-Dickson product ``(a, b)(c, d) = (ac - conj(d) b, d a + b conj(c))``."""
    n = p.shape[-1]
    if n == 1:
        return p * q
    h = n // 2
    a, b = p[..., :h], p[..., h:]
    c, d = q[..., :h], q[..., h:]
    return np.concatenate(
        [_cd_product(a, c) - _cd_product(conjugate(d), b),
         _cd_product(d, a) + _cd_product(b, conjugate(c))], axis=-1)


@cache
def _structure(d: int) -> np.ndarray:
    """Structure constants ``T`` (``d*d`` by ``d``): ``(p q)_k = sum_ij p_i q_j T[i*d+j, k]``."""
    eye = np.eye(d)
    table = np.empty((d * d, d))
    for i in range(d):
        for j in range(d):
            table[i * d + j] = _cd_product(eye[i], eye[j])
    table.setflags(write=False)
    return table


def _check_dim(d: int) -> None:
    if d not in DIMENSIONS:
        raise ValueError(f"dimension must be one of {DIMENSIONS}, got {d}")


def conjugate(p: np.ndarray) -> np.ndarray:
    """Algebra conjugate: the real part kept, the imaginary parts negated (last axis)."""
    out = -np.asarray(p, dtype=np.float64)
    out[..., 0] *= -1.0
    return out


def multiply(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Product of blocks ``p`` and ``q`` (shape ``(n, d)``) in the ``d``-dimensional algebra.

    Parameters
    ----------
    p, q : numpy.ndarray
        Arrays of shape ``(n, d)``, ``d`` in :data:`DIMENSIONS`.

    Returns
    -------
    numpy.ndarray
        ``(n, d)`` float64, row-wise products ``p[k] * q[k]``.
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    d = p.shape[-1]
    _check_dim(d)
    outer = (p[:, :, None] * q[:, None, :]).reshape(p.shape[0], d * d)
    return outer @ _structure(d)


def left_matrix(a: np.ndarray) -> np.ndarray:
    """Matrix of ``x -> a * x`` for one element ``a`` (shape ``(d,)``), as a ``d x d`` array."""
    a = np.asarray(a, dtype=np.float64)
    d = a.shape[0]
    return multiply(np.repeat(a[None, :], d, axis=0), np.eye(d)).T


def bits_to_points(bits: np.ndarray, d: int) -> np.ndarray:
    """Map bits (length ``n*d``) to spherical-code points: bit 0 -> +1/sqrt(d), 1 -> -1/sqrt(d)."""
    _check_dim(d)
    b = np.asarray(bits, dtype=np.float64).reshape(-1, d)
    return (1.0 - 2.0 * b) / np.sqrt(d)


def bob_maps(y: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bob's public maps ``a = u * conj(y/|y|)`` and norms ``|y|`` for blocks of ``y``.

    Parameters
    ----------
    y : numpy.ndarray
        Bob's values, shape ``(n, d)``; no block may be zero.
    u : numpy.ndarray
        Unit spherical-code points, shape ``(n, d)``.

    Returns
    -------
    maps : numpy.ndarray
        ``(n, d)`` unit elements with ``maps[k] * (y[k]/|y[k]|) = u[k]``.
    norms : numpy.ndarray
        ``(n,)`` block norms ``|y[k]|``.
    """
    y = np.asarray(y, dtype=np.float64)
    norms = np.linalg.norm(y, axis=1)
    if not np.all(norms > 0.0):
        raise ValueError("a block of Bob's values is exactly zero: its direction is undefined")
    return multiply(u, conjugate(y / norms[:, None])), norms


def apply_maps(maps: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Alice's side: ``maps[k] * x[k]`` for blocks ``x`` of shape ``(n, d)``."""
    return multiply(maps, x)
