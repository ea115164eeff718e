"""Layered belief-propagation syndrome decoder for binary LDPC codes.

Syndrome decoding for reverse reconciliation: Alice knows Bob's syndrome ``s = H b`` and the
log-likelihood ratios ``LLR_v = log P(b_v = 0 | x) / P(b_v = 1 | x)`` from her data; a check
with ``s_c = 1`` flips the sign of its messages (``tanh(r/2) = (-1)^s_c prod tanh(q/2)``).

Schedule: row-layered (each check, in order, reads the current posteriors, replaces its
messages and writes the posteriors back), which converges in about half the iterations of the
flooding schedule. Early stop as soon as the hard decisions satisfy the syndrome. Frames are
decoded concurrently (``prange`` over frames). Check-node rules (``rule``):

``"box-plus"`` (default)
    Sum-product computed without tanh/atanh: forward-backward pairwise box-plus
    ``a [+] b = sgn(a) sgn(b) min(|a|, |b|) + g(|a + b|) - g(|a - b|)`` with the exact
    Jacobian-logarithm correction ``g(x) = log(1 + exp(-x))`` read from a table (step 1/16,
    linear interpolation, error < 1e-3 per operation), float32 messages. About 2.4x faster
    than the tanh rule at the same iterations and frame error rate (benchmarks/decoder.md).
``"sum-product"``
    Exact float64 forward-backward products of ``tanh(q/2)`` (no division, so no trouble with
    messages near zero): the reference.
``"min-sum"``
    Normalised/offset min-sum, ``max(scale min|q| - offset, 0)``, float32. Cheap but far from
    sum-product at the low SNR of CV-QKD: a degree-4 check with inputs of magnitude ~0.3
    gives ~0.3 in min-sum and ~0.01 in sum-product, which no constant scale or offset fixes
    (rate 0.1 at beta 0.88: every frame fails, benchmarks/decoder.md). Kept for high-SNR
    codes and comparisons.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from dsp._numba_options import NJIT, NJIT_PARALLEL
from qkd_hw.postprocessing.codes import LdpcCode

__all__ = ["RULES", "DecodeResult", "decode"]

#: check-node rules of :func:`decode`
RULES = ("box-plus", "sum-product", "min-sum")

# tanh(q/2) is clipped to +-(1 - 2^-40) so that atanh stays finite (|r| <= ~28.4)
_T_MAX = 1.0 - 2.0 ** -40
# box-plus correction g(x) = log(1 + exp(-x)) at x = k / _G_SCALE; beyond the table g < 3.4e-4
_G_SCALE = 16.0
_G_TABLE = np.log1p(np.exp(-np.arange(0.0, 8.0 + 2.0 / _G_SCALE, 1.0 / _G_SCALE))
                    ).astype(np.float32)
# channel LLRs are clipped to this magnitude for the float32 rules
_LLR_MAX = 1e4
# message of a degree-1 check (its bit is known from the syndrome); large but finite
_R_KNOWN = 50.0


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


@njit(**NJIT)
def _boxplus(a, b, table, scale):
    """``a [+] b`` = ``2 atanh(tanh(a/2) tanh(b/2))`` by the Jacobian logarithm (float32)."""
    aa = abs(a)
    ab = abs(b)
    x1 = (aa + ab) * scale
    x2 = abs(aa - ab) * scale
    last = table.size - 1
    # clamped before the int conversion: a huge float does not convert to an index
    i1 = int(min(x1, np.float32(last)))
    i2 = int(min(x2, np.float32(last)))
    g1 = table[i1] + (x1 - np.float32(i1)) * (table[i1 + 1] - table[i1]) if i1 < last \
        else np.float32(0.0)
    g2 = table[i2] + (x2 - np.float32(i2)) * (table[i2 + 1] - table[i2]) if i2 < last \
        else np.float32(0.0)
    mag = max(min(aa, ab) + g1 - g2, np.float32(0.0))
    return mag if (a < 0) == (b < 0) else -mag


@njit(**NJIT)
def _check_boxplus(start, deg, sign, cvar, L, R, q, f, table, scale):
    """One layered check update with the box-plus rule (``deg >= 2``); ``f[k]`` is the
    box-plus of ``q[:k]`` times the syndrome sign."""
    qk = L[cvar[start]] - R[start]
    q[0] = qk
    acc = sign * qk
    for k in range(1, deg):
        e = start + k
        qk = L[cvar[e]] - R[e]
        q[k] = qk
        f[k] = acc
        if k < deg - 1:
            acc = _boxplus(acc, qk, table, scale)
    # backward: acc = box-plus of q[k+1:]; the message to k is f[k] [+] acc
    e = start + deg - 1
    r = f[deg - 1]
    R[e] = r
    L[cvar[e]] = q[deg - 1] + r
    acc = q[deg - 1]
    for k in range(deg - 2, 0, -1):
        e = start + k
        r = _boxplus(f[k], acc, table, scale)
        acc = _boxplus(acc, q[k], table, scale)
        R[e] = r
        L[cvar[e]] = q[k] + r
    r = acc * sign
    R[start] = r
    L[cvar[start]] = q[0] + r


@njit(**NJIT)
def _check_known(start, sign, cvar, L, R):
    """A degree-1 check: its bit is given by the syndrome."""
    r = np.float32(sign * _R_KNOWN)
    L[cvar[start]] += r - R[start]
    R[start] = r


@njit(**NJIT)
def _check_minsum(start, deg, sign, cvar, L, R, q, scale, offset):
    """One layered check update with normalised/offset min-sum."""
    m1 = np.float32(np.inf)
    m2 = np.float32(np.inf)
    at = -1
    neg = 0
    for k in range(deg):
        e = start + k
        qk = L[cvar[e]] - R[e]
        q[k] = qk
        a = abs(qk)
        if a < m1:
            m2 = m1
            m1 = a
            at = k
        elif a < m2:
            m2 = a
        if qk < 0.0:
            neg ^= 1
    big = np.float32(_R_KNOWN)
    m1 = max(min(scale * m1 - offset, big), np.float32(0.0))
    m2 = max(min(scale * m2 - offset, big), np.float32(0.0))
    if sign < 0.0:
        neg ^= 1
    for k in range(deg):
        e = start + k
        qk = q[k]
        mag = m2 if k == at else m1
        r = -mag if (neg ^ (1 if qk < 0.0 else 0)) else mag
        R[e] = r
        L[cvar[e]] = qk + r


@njit(**NJIT)
def _decode_one32(ptr, cvar, llr, synd, max_iter, early, minsum, table, scale, offset, L, R,
                  q, f):
    """Layered box-plus (``minsum`` False: ``scale`` is the table step) or min-sum (``scale``
    and ``offset`` its correction) on one frame, float32; iterations, negative if not
    converged."""
    for v in range(L.size):
        L[v] = llr[v]
    R[:] = 0.0
    if early and _syndrome_ok(ptr, cvar, synd, L):
        return 0
    for it in range(1, max_iter + 1):
        if minsum:
            for c in range(synd.size):
                deg = ptr[c + 1] - ptr[c]
                if deg > 0:
                    _check_minsum(ptr[c], deg, np.float32(-1.0) if synd[c] else
                                  np.float32(1.0), cvar, L, R, q, scale, offset)
        else:
            for c in range(synd.size):
                deg = ptr[c + 1] - ptr[c]
                sign = np.float32(-1.0) if synd[c] else np.float32(1.0)
                if deg > 1:
                    _check_boxplus(ptr[c], deg, sign, cvar, L, R, q, f, table, scale)
                elif deg == 1:
                    _check_known(ptr[c], sign, cvar, L, R)
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


@njit(**NJIT_PARALLEL)
def _decode_frames32(ptr, cvar, llr, synd, max_iter, early, minsum, table, scale, offset,
                     max_deg, bits, iters, post):
    frames, n = llr.shape
    for fr in prange(frames):
        L = np.empty(n, np.float32)
        R = np.empty(cvar.size, np.float32)
        q = np.empty(max_deg, np.float32)
        f = np.empty(max_deg, np.float32)
        iters[fr] = _decode_one32(ptr, cvar, llr[fr], synd[fr], max_iter, early, minsum,
                                  table, scale, offset, L, R, q, f)
        for v in range(n):
            post[fr, v] = L[v]
            bits[fr, v] = 1 if L[v] < 0.0 else 0


def decode(code: LdpcCode, llr: np.ndarray, syndrome: np.ndarray,
           max_iterations: int = 500, *, early_stop: bool = True, rule: str = "box-plus",
           min_sum_scale: float = 1.0, min_sum_offset: float = 0.0) -> DecodeResult:
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
    rule : {"box-plus", "sum-product", "min-sum"}
        Check-node update (module docstring); box-plus and min-sum use float32 messages.
    min_sum_scale, min_sum_offset : float
        Correction of the min-sum rule: ``max(scale min|q| - offset, 0)``.

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
    if rule not in RULES:
        raise ValueError(f"unknown check rule {rule!r}; choose one of {RULES}")
    frames = llr2.shape[0]
    bits = np.empty((frames, code.n), dtype=np.uint8)
    iters = np.empty(frames, dtype=np.int64)
    post = np.empty((frames, code.n))
    max_deg = max(1, int(np.diff(code.check_ptr).max()))
    if rule == "sum-product":
        _decode_frames(code.check_ptr, code.check_var, llr2, syn2, int(max_iterations),
                       bool(early_stop), max_deg, bits, iters, post)
    else:
        minsum = rule == "min-sum"
        scale = min_sum_scale if minsum else _G_SCALE
        # float32 messages: |LLR| beyond _LLR_MAX is certainty anyway, and clipping keeps
        # values like 1e300 finite (inf - inf would be NaN)
        llr32 = np.clip(llr2, -_LLR_MAX, _LLR_MAX).astype(np.float32)
        _decode_frames32(code.check_ptr, code.check_var, llr32, syn2,
                         int(max_iterations), bool(early_stop), minsum, _G_TABLE,
                         np.float32(scale), np.float32(min_sum_offset), max_deg, bits, iters,
                         post)
    return DecodeResult(bits=bits, iterations=np.abs(iters), converged=iters >= 0,
                        posterior=post)
