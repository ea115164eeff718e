"""Layered belief-propagation syndrome decoder (sum-product) for binary LDPC codes.

Syndrome decoding for reverse reconciliation: Alice knows Bob's syndrome ``s = H b`` and the
log-likelihood ratios ``LLR_v = log P(b_v = 0 | x) / P(b_v = 1 | x)`` from her data; a check
with ``s_c = 1`` flips the sign of its messages (``tanh(r/2) = (-1)^s_c prod tanh(q/2)``).

Schedule: row-layered (each check, in order, reads the current posteriors, replaces its
messages and writes the posteriors back), which converges in about half the iterations of the
flooding schedule. Exact sum-product check update by forward-backward products of
``tanh(q/2)`` (no division, so no trouble with messages near zero). Early stop as soon as the
hard decisions satisfy the syndrome. Frames are decoded concurrently (``prange`` over frames).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from dsp._numba_options import NJIT, NJIT_PARALLEL
from qkd_hw.postprocessing.codes import LdpcCode

__all__ = ["DecodeResult", "decode"]

# tanh(q/2) is clipped to +-(1 - 2^-40) so that atanh stays finite (|r| <= ~28.4)
_T_MAX = 1.0 - 2.0 ** -40


@dataclass(frozen=True)
class DecodeResult:
    """Outcome of decoding a batch of frames.

    Attributes
    ----------
    bits : numpy.ndarray
        uint8 ``(frames, n)`` hard decisions.
    iterations : numpy.ndarray
        int64 ``(frames,)`` iterations run (``max_iterations`` when not converged).
    converged : numpy.ndarray
        bool ``(frames,)``: the decisions satisfy the syndrome.
    posterior : numpy.ndarray
        float64 ``(frames, n)`` a-posteriori LLRs.
    """

    bits: np.ndarray
    iterations: np.ndarray
    converged: np.ndarray
    posterior: np.ndarray


@njit(**NJIT)
def _syndrome_ok(ptr, cvar, synd, L):
    for c in range(synd.size):
        parity = 0
        for e in range(ptr[c], ptr[c + 1]):
            if L[cvar[e]] < 0.0:
                parity ^= 1
        if parity != synd[c]:
            return False
    return True


@njit(**NJIT)
def _decode_one(ptr, cvar, llr, synd, max_iter, early, L, R, q, t, f):
    """Layered sum-product on one frame; returns the iterations, negative if not converged."""
    L[:] = llr
    R[:] = 0.0
    if early and _syndrome_ok(ptr, cvar, synd, L):
        return 0
    for it in range(1, max_iter + 1):
        for c in range(synd.size):
            start = ptr[c]
            deg = ptr[c + 1] - start
            acc = -1.0 if synd[c] else 1.0
            for k in range(deg):
                e = start + k
                qk = L[cvar[e]] - R[e]
                q[k] = qk
                tk = math.tanh(0.5 * qk)
                t[k] = min(max(tk, -_T_MAX), _T_MAX)
                f[k] = acc          # product of the messages before k (with the syndrome sign)
                acc *= t[k]
            acc = 1.0
            for k in range(deg - 1, -1, -1):
                e = start + k
                r = 2.0 * math.atanh(f[k] * acc)
                acc *= t[k]
                R[e] = r
                L[cvar[e]] = q[k] + r
        if early and _syndrome_ok(ptr, cvar, synd, L):
            return it
    return max_iter if _syndrome_ok(ptr, cvar, synd, L) else -max_iter


@njit(**NJIT_PARALLEL)
def _decode_frames(ptr, cvar, llr, synd, max_iter, early, max_deg, bits, iters, post):
    frames, n = llr.shape
    for fr in prange(frames):
        L = np.empty(n)
        R = np.empty(cvar.size)
        q = np.empty(max_deg)
        t = np.empty(max_deg)
        f = np.empty(max_deg)
        iters[fr] = _decode_one(ptr, cvar, llr[fr], synd[fr], max_iter, early, L, R, q,
                                t, f)
        for v in range(n):
            post[fr, v] = L[v]
            bits[fr, v] = 1 if L[v] < 0.0 else 0


def decode(code: LdpcCode, llr: np.ndarray, syndrome: np.ndarray,
           max_iterations: int = 500, *, early_stop: bool = True) -> DecodeResult:
    """Decode frames given their channel LLRs and syndromes.

    Parameters
    ----------
    code : LdpcCode
        The parity-check matrix.
    llr : numpy.ndarray
        ``(frames, n)`` or ``(n,)`` channel LLRs, ``log P(0)/P(1)``; ``+-inf`` are not allowed
        (use a large finite value for known bits).
    syndrome : numpy.ndarray
        ``(frames, m)`` or ``(m,)`` syndromes (0/1).
    max_iterations : int
        Iteration cap per frame.
    early_stop : bool
        Stop a frame as soon as its hard decisions satisfy the syndrome (otherwise run
        ``max_iterations``, e.g. to let the posteriors settle).

    Returns
    -------
    DecodeResult
    """
    llr2 = np.ascontiguousarray(np.atleast_2d(llr), dtype=np.float64)
    syn2 = np.ascontiguousarray(np.atleast_2d(syndrome), dtype=np.uint8)
    if llr2.ndim != 2 or llr2.shape[1] != code.n:
        raise ValueError(f"{code.name}: llr must have {code.n} columns, got shape {llr2.shape}")
    if syn2.shape != (llr2.shape[0], code.m):
        raise ValueError(f"{code.name}: syndrome must have shape ({llr2.shape[0]}, {code.m}), "
                         f"got {syn2.shape}")
    if not np.all(np.isfinite(llr2)):
        raise ValueError(f"{code.name}: llr holds NaN or infinite values")
    if np.any(syn2 > 1):
        raise ValueError(f"{code.name}: syndrome values must be 0 or 1")
    if max_iterations < 1:
        raise ValueError(f"max_iterations must be >= 1, got {max_iterations}")
    frames = llr2.shape[0]
    bits = np.empty((frames, code.n), dtype=np.uint8)
    iters = np.empty(frames, dtype=np.int64)
    post = np.empty((frames, code.n))
    max_deg = int(np.diff(code.check_ptr).max())
    _decode_frames(code.check_ptr, code.check_var, llr2, syn2, int(max_iterations),
                   bool(early_stop), max_deg, bits, iters, post)
    return DecodeResult(bits=bits, iterations=np.abs(iters), converged=iters >= 0,
                        posterior=post)
