"""Privacy amplification: Toeplitz hashing computed by FFT, and the length of the final key.

The Toeplitz matrix of an ``m x n`` hash is ``M[i, j] = seed[(i - j) mod (n + m - 1)]`` for a
seed of ``n + m - 1`` bits (the convention of the ``randextract`` package's default seed mode,
against which the tests check bit for bit). ``M @ key mod 2`` is an integer correlation of 0/1
sequences followed by a parity, so it is computed exactly with a float64 FFT: the exact
values are integers of at most ``n`` (< 2^52), and every output is checked to lie within 0.25
of an integer before it is rounded (:class:`ToeplitzRoundingError` otherwise, never a silently
wrong bit). The seed's diagonals and the key share one complex buffer (``v + i x``, 16 bytes
per point: 3.2 GB for a 1e8 -> 1e8-bit hash); its FFT is four-step, batches of ~sqrt(N)-point
transforms in place on every core (scipy's single 1e8-point transforms run on one core and
hold plan and scratch arrays as large as the data: 5 GB peak for 1e8 -> 5e7 bits). A hash
longer than ``max_fft_len`` is cut into Toeplitz blocks whose parities are XOR-ed, which
bounds the memory for any key length.

Final key length (reverse reconciliation, Leverrier, Grosshans, Grangier, PRA 81, 062343
(2010), see :mod:`qkd_hw.keyrate`)::

    l = H(K) - leak_EC - leak_verification - n (chi_BE(T_min, xi_max) + Delta(n))

with ``H(K)`` the reconciled bits (uniform: Bob's key bits of reverse reconciliation), ``n``
the symbols behind them and ``Delta(n)`` of :func:`qkd_hw.keyrate.finite_size_delta` (its
``2 log2(1/eps_PA)`` term is the leftover hash lemma's price of the hash). The key is
``eps``-secure with ``eps = 2 eps_bar + eps_PE + eps_PA + eps_cor`` (Leverrier 2010's
``2 eps_bar + eps_EC + eps_PE + eps_PA``, the correctness term ``eps_EC`` being the
verification's collision bound ``eps_cor``): ``SecrecyParameters.eps_total``.
"""

from __future__ import annotations

import math
import os
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from types import SimpleNamespace

import numba
import numpy as np
import scipy.fft

from dsp.vocabulary import DEFAULT_EPS_BAR, DEFAULT_EPS_PA
from qkd_hw.errors import QkdHwError
from qkd_hw.keyrate import KeyRateInputError, key_rate_from_estimates

__all__ = [
    "MAX_FFT_LEN",
    "SecrecyParameters",
    "ToeplitzRoundingError",
    "integer_correlation",
    "random_bits",
    "secret_key_length",
    "toeplitz_hash",
    "toeplitz_seed_length",
]

#: longest transform of one Toeplitz block: one complex128 buffer, 16 bytes per point (3.5 GB
#: here), so that a 1e8 -> 1e8-bit hash stays in one block
MAX_FFT_LEN = 220_000_000
#: exact integers of float64
_EXACT = 2.0**52
#: an output farther than this from an integer means the FFT's rounding error was too large
_ROUND_TOL = 0.25
#: elements per step of the elementwise passes (bounds their temporaries)
_STEP = 1 << 22

#: estimates (raw-key file ``/estimates``) that the finite-size key length needs
KEY_LENGTH_ESTIMATES = ("transmittance", "transmittance_min", "excess_noise_snu",
                        "excess_noise_max_snu", "electronic_noise_snu", "efficiency",
                        "modulation_variance_snu", "n_pe", "eps_pe")


class ToeplitzRoundingError(QkdHwError):
    """The FFT correlation was not exact (an output not within 0.25 of an integer)."""


class KeyLengthError(QkdHwError):
    """The parameters needed for the final key length are missing or out of range."""


def toeplitz_seed_length(n_in: int, n_out: int) -> int:
    """Seed bits of an ``n_out x n_in`` Toeplitz hash: ``n_in + n_out - 1``."""
    return int(n_in) + int(n_out) - 1


def random_bits(n: int) -> np.ndarray:
    """``n`` uniformly random bits (uint8 0/1) from the operating system's CSPRNG."""
    if n <= 0:
        return np.zeros(0, np.uint8)
    raw = np.frombuffer(secrets.token_bytes((n + 7) // 8), np.uint8)
    return np.unpackbits(raw)[:n]


def _workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _grid(length: int) -> tuple[int, int]:
    """``(n1, n2)``, both FFT-friendly and near ``sqrt(length)``, with ``n1 n2 >= length``."""
    n2 = scipy.fft.next_fast_len(math.isqrt(max(length - 1, 0)) + 1)
    n1 = scipy.fft.next_fast_len(-(-length // n2))
    return n1, n2


@numba.njit(cache=True, nogil=True, parallel=True)
def _twiddle(m: np.ndarray, sign: float) -> None:
    """``m[k1, n2] *= exp(sign 2 pi i k1 n2 / N)`` (the four-step FFT's middle step).

    The phase advances by a recurrence, re-anchored exactly every 32 points (error ~1e-15).
    """
    n1, n2 = m.shape
    n = n1 * n2
    for k1 in numba.prange(n1):
        step = np.exp(sign * 2j * np.pi * k1 / n)
        for s in range(0, n2, 32):
            w = np.exp(sign * 2j * np.pi * ((k1 * s) % n) / n)
            for j in range(s, min(s + 32, n2)):
                m[k1, j] *= w
                w *= step


@numba.njit(cache=True, nogil=True)
def _pair_product(z: complex, zm: complex) -> complex:
    """Spectrum of ``v * x`` at k from ``Z = DFT(v + i x)`` at k (z) and at -k (zm)."""
    v = 0.5 * (z + zm.conjugate())
    x = -0.5j * (z - zm.conjugate())
    return v * x


@numba.njit(cache=True, nogil=True, parallel=True)
def _hermitian_product(m: np.ndarray) -> None:
    """Replace ``Z`` (four-step layout: ``m[k1, k2] = Z[k1 + n1 k2]``) by ``V X``.

    ``Z = DFT(v + i x)`` of two real sequences; each pair (k, -k) is read and written by one
    iteration (``-k`` is ``(n1 - k1, n2 - 1 - k2)``, or ``(0, -k2)`` in row 0), so the rows
    ``k1`` and ``n1 - k1`` go to the same thread.
    """
    n1, n2 = m.shape
    for k1 in numba.prange(n1 // 2 + 1):
        for k2 in range(n2):
            if k1 == 0:
                p1, p2 = 0, (n2 - k2) % n2
            else:
                p1, p2 = n1 - k1, n2 - 1 - k2
            if p1 == k1 and p2 < k2:  # same row: the pair was done from its other end
                continue
            c = _pair_product(m[k1, k2], m[p1, p2])
            m[k1, k2] = c
            m[p1, p2] = c.conjugate()


def _correlate(z: np.ndarray, n1: int, n2: int, n_x: int, n_out: int,
               max_value: float, *, parity: bool = False) -> np.ndarray:
    """Exact ``c[i] = sum_j v[i - j + n_x - 1] x[j]`` (int64 [n_out]) from ``z = v + i x``,
    or its parity (uint8) with ``parity=True``.

    This is the linear convolution ``v * x`` at ``i + n_x - 1``, computed as a circular one
    of length ``N = n1 n2 >= n_out + n_x - 1`` (the wrap-around only reaches indices below
    ``n_x - 1``): ``v`` and ``x`` (zero-padded to N) share one complex FFT, their spectra are
    separated and multiplied pair by pair in place, and one inverse FFT gives the result.
    The FFTs are four-step (batches of ~sqrt(N)-point transforms, in place, on every core),
    so memory is the buffer ``z`` (16 bytes per point) plus small work arrays. ``z`` is
    overwritten. ``max_value`` bounds the exact results (outside ``[0, max_value]`` counts as
    a rounding failure: the inputs of this module are non-negative).
    """
    m = z.reshape(n1, n2)
    with scipy.fft.set_workers(_workers()):
        m = scipy.fft.fft(m, axis=0, overwrite_x=True)
        _twiddle(m, -1.0)
        m = scipy.fft.fft(m, axis=1, overwrite_x=True)
        _hermitian_product(m)
        m = scipy.fft.ifft(m, axis=1, overwrite_x=True)
        _twiddle(m, 1.0)
        m = scipy.fft.ifft(m, axis=0, overwrite_x=True)
    out = np.empty(n_out, np.uint8 if parity else np.int64)
    worst, lo, hi = _round_exact(m.reshape(-1), n_x - 1, out, parity)
    # at 2^52 and above doubles are spaced >= 1 apart: every value "looks" integer, so
    # closeness to an integer proves nothing there
    if worst >= _ROUND_TOL or lo < 0 or hi > max_value or hi >= _EXACT:
        raise ToeplitzRoundingError(
            f"FFT correlation of length {n1 * n2} not exact: an output lies {worst:.3g} from "
            f"the nearest integer or outside [0, {min(max_value, _EXACT):.4g}] (rounded range "
            f"[{lo:.4g}, {hi:.4g}]); the inputs exceed float64 exactness")
    return out


@numba.njit(cache=True, nogil=True, parallel=True)
def _round_exact(c: np.ndarray, offset: int, out: np.ndarray,
                 parity: bool) -> tuple[float, float, float]:
    """``out[i] = round(c[offset + i].real)``, or its parity with ``parity``.

    Returns the largest distance to the rounded value (imaginary parts count: a real result's
    imaginary part is rounding error) and the smallest and largest rounded values.
    """
    n = out.shape[0]
    n_chunks = max(1, min(n, 64))
    worst = np.zeros(n_chunks)
    lo = np.full(n_chunks, np.inf)
    hi = np.full(n_chunks, -np.inf)
    for k in numba.prange(n_chunks):
        for i in range(k * n // n_chunks, (k + 1) * n // n_chunks):
            v = c[offset + i]
            r = np.rint(v.real)
            worst[k] = max(worst[k], abs(v.real - r), abs(v.imag))
            lo[k] = min(lo[k], r)
            hi[k] = max(hi[k], r)
            if parity:
                # parity of a value the check below bounds to [0, 2^52): exact via int64
                out[i] = np.int64(r) & 1 if abs(r) < 2.0**62 else 0
            else:
                out[i] = np.int64(r) if abs(r) < 2.0**62 else 0
    return worst.max(), lo.min(), hi.max()


@numba.njit(cache=True, nogil=True, parallel=True)
def _fill(z: np.ndarray, seed: np.ndarray, start: int, n_v: int, x: np.ndarray) -> None:
    """``z[r] = seed[(start + r) mod len(seed)] + i x[r]``, zero beyond ``n_v`` / ``len(x)``.

    One pass that writes every point (``start`` in ``[0, len(seed))``, ``n_v <= len(seed)``).
    """
    n_s = seed.shape[0]
    n_x = x.shape[0]
    for r in numba.prange(z.shape[0]):
        re = 0.0
        if r < n_v:
            j = start + r
            if j >= n_s:
                j -= n_s
            re = seed[j]
        z[r] = complex(re, x[r] if r < n_x else 0.0)


def _buffer(n_v: int) -> tuple[np.ndarray, int, int]:
    n1, n2 = _grid(n_v)
    return np.empty(n1 * n2, np.complex128), n1, n2


def integer_correlation(v: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Exact ``c[i] = sum_j v[i - j + len(x) - 1] x[j]`` for non-negative integer digits.

    ``len(c) = len(v) - len(x) + 1``. Computed by float64 FFT; refused before any transform
    when the exact values may reach 2^52, and checked after it (each output within 0.25 of
    an integer in ``[0, bound]``).

    Raises
    ------
    ToeplitzRoundingError
        The inputs make exact rounding impossible or the check failed.
    """
    v = np.asarray(v)
    x = np.asarray(x)
    n_x, n_out = x.shape[0], v.shape[0] - x.shape[0] + 1
    if n_x == 0 or n_out <= 0:
        raise ValueError(f"need 1 <= len(x) <= len(v), got {n_x} and {v.shape[0]}")
    bound = float(n_x) * float(np.max(v, initial=0)) * float(np.max(x, initial=0))
    if min(np.min(v, initial=0), np.min(x, initial=0)) < 0:
        raise ValueError("digits must be non-negative")
    if bound >= _EXACT:
        raise ToeplitzRoundingError(f"correlation values may reach {bound:.3g} >= 2^52: "
                                    "float64 cannot hold them exactly")
    z, n1, n2 = _buffer(v.shape[0])
    _fill(z, v.astype(np.float64), 0, v.shape[0], x.astype(np.float64))
    return _correlate(z, n1, n2, n_x, n_out, bound)


def _check_bits(name: str, a: np.ndarray, n: int | None = None) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 1 or (n is not None and a.shape[0] != n):
        want = f"length {n}" if n is not None else "1-D"
        raise ValueError(f"{name}: expected a 1-D bit array of {want}, got shape {a.shape}")
    if a.dtype != np.uint8:
        a = a.astype(np.uint8)
    if a.size and int(a.max()) > 1:
        raise ValueError(f"{name}: values must be 0 or 1")
    return a


def toeplitz_hash(key: np.ndarray, seed: np.ndarray, n_out: int, *,
                  max_fft_len: int = MAX_FFT_LEN) -> np.ndarray:
    """``M @ key mod 2`` with ``M[i, j] = seed[(i - j) mod len(seed)]``, ``M`` of ``n_out x n``.

    Parameters
    ----------
    key : ndarray of uint8 (0/1), shape (n,)
        Input bits (the reconciled, verified key).
    seed : ndarray of uint8 (0/1), shape (n + n_out - 1,)
        The public random seed that selects the hash.
    n_out : int
        Output bits, ``1 <= n_out <= n``.
    max_fft_len : int
        Longest transform: larger hashes are split into Toeplitz blocks (bounds memory).

    Returns
    -------
    ndarray of uint8 (0/1), shape (n_out,)

    Raises
    ------
    ToeplitzRoundingError
        A block's FFT correlation did not round exactly (not expected for 0/1 inputs; the
        check guards the arithmetic).
    """
    key = _check_bits("key", key)
    n = key.shape[0]
    if not 1 <= n_out <= n:
        raise ValueError(f"n_out must be in [1, {n}] (input bits), got {n_out}")
    seed = _check_bits("seed", seed, toeplitz_seed_length(n, n_out))
    if max_fft_len < 2:
        raise ValueError(f"max_fft_len must be >= 2, got {max_fft_len}")
    rows = n_out if n_out + n - 1 <= max_fft_len else min(n_out, max(1, max_fft_len // 2))
    cols = min(n, max_fft_len - rows + 1)
    out = np.zeros(n_out, np.uint8)
    for i0 in range(0, n_out, rows):
        lr = min(rows, n_out - i0)
        for j0 in range(0, n, cols):
            lc = min(cols, n - j0)
            out[i0:i0 + lr] ^= _toeplitz_block(key[j0:j0 + lc], seed, i0 - j0 - lc + 1, lr)
    return out


def _toeplitz_block(x: np.ndarray, seed: np.ndarray, start: int, n_out: int) -> np.ndarray:
    """Parity of ``sum_j' t[i - j'] x[j']`` with the diagonals ``t`` from ``seed[start:]``."""
    n_x = x.shape[0]
    n_v = n_out + n_x - 1
    z, n1, n2 = _buffer(n_v)
    _fill(z, seed, start % seed.shape[0], n_v, x)
    return _correlate(z, n1, n2, n_x, n_out, float(n_x), parity=True)


@dataclass(frozen=True)
class SecrecyParameters:
    """The final key length and every quantity that bounds its secrecy (bits, probabilities)."""

    final_key_bits: int
    reconciled_bits: int            # H(K): uniform reconciled bits entering the hash
    leak_ec_bits: int               # reconciliation messages
    leak_verification_bits: int     # verification tags
    key_symbols: int                # n: symbols behind the reconciled bits
    block_symbols: int              # N: key symbols + symbols disclosed for PE
    chi_be_bits_per_symbol: float   # Holevo bound at (T_min, xi_max)
    delta_n_bits_per_symbol: float  # Leverrier 2010 Delta(n)
    transmittance_min: float
    excess_noise_max_snu: float
    eps_pe: float
    eps_bar: float
    eps_pa: float
    eps_cor: float                  # probability that unequal keys pass verification
    eps_total: float                # 2 eps_bar + eps_pe + eps_pa + eps_cor

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _estimates_view(estimates: Mapping[str, float], detection: str) -> SimpleNamespace:
    missing = [k for k in KEY_LENGTH_ESTIMATES if k not in estimates]
    if missing:
        raise KeyLengthError(f"/estimates: missing {missing}, needed for the finite-size key "
                             "length")
    view = {k: float(estimates[k]) for k in KEY_LENGTH_ESTIMATES}
    bad = [k for k, v in view.items() if not math.isfinite(v)]
    if bad:
        raise KeyLengthError(f"/estimates: {bad} not finite")
    view["n_pe"] = int(view["n_pe"])
    return SimpleNamespace(detection=detection, **view)


def secret_key_length(estimates: Mapping[str, float], *, detection: str, block_symbols: int,
                      key_symbols: int, reconciled_bits: int, leak_ec_bits: int,
                      leak_verification_bits: int, eps_cor: float, eps_pa: float = DEFAULT_EPS_PA,
                      eps_bar: float = DEFAULT_EPS_BAR) -> SecrecyParameters:
    """Final key length from the raw key's PE estimates and what the protocol disclosed.

    Parameters
    ----------
    estimates : mapping
        The raw-key file's ``/estimates`` (needs :data:`KEY_LENGTH_ESTIMATES`).
    detection : {"heterodyne", "homodyne"}
    block_symbols : int
        N, symbols of the block (key and PE).
    key_symbols : int
        n, symbols behind ``reconciled_bits`` (kept frames only).
    reconciled_bits, leak_ec_bits, leak_verification_bits : int
        Bits entering privacy amplification and the bits the transcript revealed about them.
    eps_cor, eps_pa, eps_bar : float
        Verification collision bound, PA and smoothing failure probabilities.
    """
    est = _estimates_view(estimates, detection)
    chi, delta = math.nan, math.nan
    n_final = 0
    if key_symbols > 0:
        try:
            kr = key_rate_from_estimates(est, beta=1.0, block_size=int(block_symbols),
                                         n_key=int(key_symbols), eps_pa=eps_pa, eps_bar=eps_bar)
        except KeyRateInputError as exc:
            raise KeyLengthError(f"finite-size key length: {exc}") from exc
        chi, delta = kr.chi_be, float(kr.delta_n)
        if math.isfinite(chi):  # not finite: PE bounds degenerate, no key certified
            bits = (reconciled_bits - leak_ec_bits - leak_verification_bits
                    - key_symbols * (chi + delta))
            n_final = int(min(max(math.floor(bits), 0), reconciled_bits))
    return SecrecyParameters(
        final_key_bits=n_final, reconciled_bits=int(reconciled_bits),
        leak_ec_bits=int(leak_ec_bits), leak_verification_bits=int(leak_verification_bits),
        key_symbols=int(key_symbols), block_symbols=int(block_symbols),
        chi_be_bits_per_symbol=chi, delta_n_bits_per_symbol=delta,
        transmittance_min=est.transmittance_min, excess_noise_max_snu=est.excess_noise_max_snu,
        eps_pe=est.eps_pe, eps_bar=float(eps_bar), eps_pa=float(eps_pa), eps_cor=float(eps_cor),
        eps_total=2 * eps_bar + est.eps_pe + eps_pa + eps_cor)
