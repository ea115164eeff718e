"""Layered belief-propagation syndrome decoder for binary LDPC codes.

Syndrome decoding for reverse reconciliation: Alice knows Bob's syndrome ``s = H b`` and the
log-likelihood ratios ``LLR_v = log P(b_v = 0 | x) / P(b_v = 1 | x)`` from her data; a check
with ``s_c = 1`` flips the sign of its messages (``tanh(r/2) = (-1)^s_c prod tanh(q/2)``).

Schedule: row-layered (each check, in order, reads the current posteriors, replaces its
messages and writes the posteriors back), which converges in about half the iterations of the
flooding schedule. Early stop as soon as the hard decisions satisfy the syndrome. Frames are
decoded concurrently (``prange`` over frames, or over lock-step groups). Check-node rules
(``rule``):

``"box-plus"`` (default)
    Sum-product computed without tanh/atanh: forward-backward pairwise box-plus
    ``a [+] b = sgn(a) sgn(b) min(|a|, |b|) + g(|a + b|) - g(|a - b|)`` with the exact
    Jacobian-logarithm correction ``g(x) = log(1 + exp(-x))`` read from a table (step 1/16,
    linear interpolation, error < 1e-3 per operation), float32 messages. Each thread
    decodes up to ``LANES`` = 8 frames in lock-step, messages stored ``[edge][lane]``, so
    that the check update is one 8-wide vector operation (the table lookups are gathers);
    a lane whose frame converges takes the next frame. Each lane computes exactly what the
    one-frame decoder computes. CPU time per edge update and frame: ~5 ns in the check
    sweep, ~7 ns in all (syndrome checks, idle lanes of the last frames), against ~20 ns
    one frame at a time and ~48 ns for the tanh rule (benchmarks/decoder.md): give
    :func:`decode` 8 frames per core.
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
from numba import get_num_threads, njit, prange

from dsp._numba_options import NJIT, NJIT_PARALLEL
from qkd_hw.postprocessing.codes import LdpcCode

__all__ = ["LANES", "RULES", "DecodeResult", "decode"]

#: check-node rules of :func:`decode`
RULES = ("box-plus", "sum-product", "min-sum")

# tanh(q/2) is clipped to +-(1 - 2^-40) so that atanh stays finite (|r| <= ~28.4)
_T_MAX = 1.0 - 2.0 ** -40
# box-plus correction g(x) = log(1 + exp(-x)) at x = k / _G_SCALE; beyond the table g < 3.4e-4
_G_SCALE = 16.0
_G_TABLE = np.log1p(np.exp(-np.arange(0.0, 8.0 + 2.0 / _G_SCALE, 1.0 / _G_SCALE))
                    ).astype(np.float32)
# the same table as value and slope per step, zero from the last entry on, so that a lookup
# needs no branch: g(x) = _G_BASE[i] + (x - i) _G_SLOPE[i] with i = min(x, last); globals
# are compile-time constants to numba, which lets the lane loops vectorise
_G_LAST = _G_TABLE.size - 1
_G_BASE = np.append(_G_TABLE[:-1], np.float32(0.0))
_G_SLOPE = np.append(np.diff(_G_TABLE), np.float32(0.0))
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
def _decode_one_minsum(ptr, cvar, llr, synd, max_iter, early, scale, offset, L, R, q):
    """Layered min-sum (``scale`` and ``offset`` its correction) on one frame, float32;
    iterations, negative if not converged."""
    for v in range(L.size):
        L[v] = llr[v]
    R[:] = 0.0
    if early and _syndrome_ok(ptr, cvar, synd, L):
        return 0
    for it in range(1, max_iter + 1):
        for c in range(synd.size):
            deg = ptr[c + 1] - ptr[c]
            if deg > 0:
                _check_minsum(ptr[c], deg, np.float32(-1.0) if synd[c] else np.float32(1.0),
                              cvar, L, R, q, scale, offset)
        if early and _syndrome_ok(ptr, cvar, synd, L):
            return it
    return max_iter if _syndrome_ok(ptr, cvar, synd, L) else -max_iter


# Lock-step decoding: up to LANES frames per thread, messages laid out [edge][lane] so that
# every lane loop below is one AVX2 vector operation (the table lookups become gathers).
# Lanes never mix, and these kernels are compiled without reassociation or FMA contraction,
# so the vector and the scalar code of a lane loop round identically: a frame's decisions do
# not depend on its lane, on the other frames or on how many there are.
#: frames one thread decodes in lock-step (give :func:`decode` LANES frames per core)
LANES = 8
_NJIT_EXACT = {**NJIT, "fastmath": False}


@njit(**_NJIT_EXACT)
def _boxplus(a, b, scale):
    """``a [+] b`` = ``2 atanh(tanh(a/2) tanh(b/2))`` by the Jacobian logarithm (float32),
    the correction read from the table without a branch."""
    aa = abs(a)
    ab = abs(b)
    x1 = min((aa + ab) * scale, np.float32(_G_LAST))
    x2 = min(abs(aa - ab) * scale, np.float32(_G_LAST))
    i1 = np.int32(x1)
    i2 = np.int32(x2)
    g1 = _G_BASE[i1] + (x1 - np.float32(i1)) * _G_SLOPE[i1]
    g2 = _G_BASE[i2] + (x2 - np.float32(i2)) * _G_SLOPE[i2]
    mag = max(min(aa, ab) + g1 - g2, np.float32(0.0))
    return mag if (a < 0) == (b < 0) else -mag


@njit(**_NJIT_EXACT)
def _check_boxplus_lanes(start, deg, c, cvar, L, R, S, q, f, acc, scale):
    """One layered check update (``deg >= 2``) on every lane: forward-backward box-plus,
    ``f[k]`` the box-plus of ``q[:k]`` times the syndrome sign ``S[c]``."""
    # a run-time lane count: a constant one is unrolled before LLVM's loop vectoriser runs
    nl = L.shape[1]
    v = cvar[start]
    for lane in range(nl):
        qk = L[v, lane] - R[start, lane]
        q[0, lane] = qk
        acc[lane] = S[c, lane] * qk
    for k in range(1, deg):
        e = start + k
        v = cvar[e]
        for lane in range(nl):
            qk = L[v, lane] - R[e, lane]
            q[k, lane] = qk
            f[k, lane] = acc[lane]
        if k < deg - 1:
            for lane in range(nl):
                acc[lane] = _boxplus(acc[lane], q[k, lane], scale)
    e = start + deg - 1
    v = cvar[e]
    for lane in range(nl):
        r = f[deg - 1, lane]
        R[e, lane] = r
        L[v, lane] = q[deg - 1, lane] + r
        acc[lane] = q[deg - 1, lane]
    for k in range(deg - 2, 0, -1):
        e = start + k
        v = cvar[e]
        for lane in range(nl):
            r = _boxplus(f[k, lane], acc[lane], scale)
            acc[lane] = _boxplus(acc[lane], q[k, lane], scale)
            R[e, lane] = r
            L[v, lane] = q[k, lane] + r
    v = cvar[start]
    for lane in range(nl):
        r = acc[lane] * S[c, lane]
        R[start, lane] = r
        L[v, lane] = q[0, lane] + r


@njit(**_NJIT_EXACT)
def _check4_lanes(start, c, cvar, L, R, S, scale):
    """:func:`_check_boxplus_lanes` for degree 4 (most checks of the MET codes) in one lane
    loop: the 6 box-plus operations stay in registers, one vector pass per check."""
    nl = L.shape[1]
    v0 = cvar[start]
    v1 = cvar[start + 1]
    v2 = cvar[start + 2]
    v3 = cvar[start + 3]
    for lane in range(nl):
        s = S[c, lane]
        q0 = L[v0, lane] - R[start, lane]
        q1 = L[v1, lane] - R[start + 1, lane]
        q2 = L[v2, lane] - R[start + 2, lane]
        q3 = L[v3, lane] - R[start + 3, lane]
        f1 = s * q0
        f2 = _boxplus(f1, q1, scale)
        f3 = _boxplus(f2, q2, scale)
        b2 = q3
        r2 = _boxplus(f2, b2, scale)
        b1 = _boxplus(b2, q2, scale)
        r1 = _boxplus(f1, b1, scale)
        r0 = _boxplus(b1, q1, scale) * s
        R[start, lane] = r0
        R[start + 1, lane] = r1
        R[start + 2, lane] = r2
        R[start + 3, lane] = f3
        L[v0, lane] = q0 + r0
        L[v1, lane] = q1 + r1
        L[v2, lane] = q2 + r2
        L[v3, lane] = q3 + f3


@njit(**_NJIT_EXACT)
def _sweep_lanes(ptr, cvar, L, R, S, q, f, acc, scale):
    """One layered iteration over every check, all lanes at once."""
    known = np.float32(_R_KNOWN)
    nl = L.shape[1]
    for c in range(ptr.size - 1):
        start = ptr[c]
        deg = ptr[c + 1] - start
        if deg == 4:
            _check4_lanes(start, c, cvar, L, R, S, scale)
        elif deg > 1:
            _check_boxplus_lanes(start, deg, c, cvar, L, R, S, q, f, acc, scale)
        elif deg == 1:
            v = cvar[start]
            for lane in range(nl):
                r = S[c, lane] * known
                L[v, lane] += r - R[start, lane]
                R[start, lane] = r


@njit(**NJIT)
def _lane_syndrome_ok(ptr, cvar, synd, L, lane):
    """:func:`_syndrome_ok` of one lane."""
    for c in range(synd.size):
        parity = 0
        for e in range(ptr[c], ptr[c + 1]):
            if L[cvar[e], lane] < 0.0:
                parity ^= 1
        if parity != synd[c]:
            return False
    return True


@njit(**NJIT)
def _lane_load(lane, fr, llr, synd, L, R, S):
    """Start frame ``fr`` in ``lane`` (``fr < 0``: an idle lane of zeros)."""
    for v in range(L.shape[0]):
        L[v, lane] = llr[fr, v] if fr >= 0 else np.float32(0.0)
    for e in range(R.shape[0]):
        R[e, lane] = 0.0
    for c in range(S.shape[0]):
        S[c, lane] = np.float32(-1.0) if fr >= 0 and synd[fr, c] else np.float32(1.0)


@njit(**NJIT)
def _lane_store(lane, fr, L, bits, post):
    for v in range(L.shape[0]):
        x = L[v, lane]
        post[fr, v] = x
        bits[fr, v] = 1 if x < 0.0 else 0


@njit(**NJIT)
def _lane_start(lane, mine, nxt, ptr, cvar, llr, synd, early, L, R, S, bits, iters, post):
    """Load the worker's frames ``mine[nxt:]`` into ``lane`` until one needs iterations (a
    frame whose channel decisions already satisfy the syndrome is done at iteration 0);
    returns the next index into ``mine`` and the lane's frame (-1: none left, lane idle)."""
    while nxt < mine.size:
        fr = mine[nxt]
        nxt += 1
        _lane_load(lane, fr, llr, synd, L, R, S)
        if early and _lane_syndrome_ok(ptr, cvar, synd[fr], L, lane):
            iters[fr] = 0
            _lane_store(lane, fr, L, bits, post)
            continue
        return nxt, fr
    _lane_load(lane, -1, llr, synd, L, R, S)
    return nxt, -1


@njit(**NJIT)
def _decode_lanes(ptr, cvar, llr, synd, mine, max_iter, early, scale, max_deg, bits, iters,
                  post):
    """Box-plus decoding of the frames ``mine`` in up to LANES lock-step lanes; a lane whose
    frame converges (or reaches ``max_iter``) is refilled with the next frame at once."""
    n = llr.shape[1]
    # the vector loop needs all LANES (fewer run as scalar code, ~3x the time per lane): from
    # 3 frames on, idle lanes of zeros are cheaper than scalar lanes
    nl = LANES if mine.size > 2 else mine.size
    L = np.empty((n, nl), np.float32)
    R = np.empty((cvar.size, nl), np.float32)
    S = np.empty((synd.shape[1], nl), np.float32)
    q = np.empty((max_deg, nl), np.float32)
    f = np.empty((max_deg, nl), np.float32)
    acc = np.empty(nl, np.float32)
    frame = np.full(nl, -1, np.int64)
    it = np.zeros(nl, np.int64)
    nxt = 0
    for lane in range(nl):
        nxt, frame[lane] = _lane_start(lane, mine, nxt, ptr, cvar, llr, synd, early, L, R, S,
                                       bits, iters, post)
    while np.any(frame >= 0):
        _sweep_lanes(ptr, cvar, L, R, S, q, f, acc, scale)
        for lane in range(nl):
            fr = frame[lane]
            if fr < 0:
                continue
            it[lane] += 1
            done = early and _lane_syndrome_ok(ptr, cvar, synd[fr], L, lane)
            if not done and it[lane] < max_iter:
                continue
            ok = done or _lane_syndrome_ok(ptr, cvar, synd[fr], L, lane)
            iters[fr] = it[lane] if ok else -it[lane]
            _lane_store(lane, fr, L, bits, post)
            it[lane] = 0
            nxt, frame[lane] = _lane_start(lane, mine, nxt, ptr, cvar, llr, synd, early, L, R,
                                           S, bits, iters, post)


@njit(**NJIT_PARALLEL)
def _decode_frames_lanes(ptr, cvar, llr, synd, workers, max_iter, early, scale, max_deg,
                         bits, iters, post):
    """Frames dealt round-robin to ``workers`` lock-step decoders, one per thread."""
    frames = llr.shape[0]
    for w in prange(workers):
        mine = np.arange(w, frames, workers)
        _decode_lanes(ptr, cvar, llr, synd, mine, max_iter, early, scale, max_deg, bits,
                      iters, post)


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
def _decode_frames_minsum(ptr, cvar, llr, synd, max_iter, early, scale, offset, max_deg, bits,
                          iters, post):
    frames, n = llr.shape
    for fr in prange(frames):
        L = np.empty(n, np.float32)
        R = np.empty(cvar.size, np.float32)
        q = np.empty(max_deg, np.float32)
        iters[fr] = _decode_one_minsum(ptr, cvar, llr[fr], synd[fr], max_iter, early, scale,
                                       offset, L, R, q)
        for v in range(n):
            post[fr, v] = L[v]
            bits[fr, v] = 1 if L[v] < 0.0 else 0


def _workers(frames: int, threads: int) -> int:
    """Lock-step decoders for ``frames`` on ``threads``: every thread while each gets at
    most two frames (scalar lanes, the fastest wall time), otherwise only as many as fill
    their LANES (a half-empty vector costs the CPU time of a full one)."""
    if frames <= 2 * threads:
        return max(1, min(threads, frames))
    return max(1, min(threads, -(-frames // LANES)))


def _llr32(llr: np.ndarray) -> np.ndarray:
    """Channel LLRs for the float32 rules: |LLR| beyond _LLR_MAX is certainty anyway, and
    clipping keeps values like 1e300 finite (inf - inf would be NaN)."""
    return np.clip(llr, -_LLR_MAX, _LLR_MAX).astype(np.float32)


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
    elif rule == "box-plus":
        _decode_frames_lanes(code.check_ptr, code.check_var, _llr32(llr2), syn2,
                             _workers(frames, get_num_threads()), int(max_iterations),
                             bool(early_stop), np.float32(_G_SCALE), max_deg, bits, iters,
                             post)
    else:
        _decode_frames_minsum(code.check_ptr, code.check_var, _llr32(llr2), syn2,
                              int(max_iterations), bool(early_stop), np.float32(min_sum_scale),
                              np.float32(min_sum_offset), max_deg, bits, iters, post)
    return DecodeResult(bits=bits, iterations=np.abs(iters), converged=iters >= 0,
                        posterior=post)
