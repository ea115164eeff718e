"""Pilot stage: down-conversion of the pilots and block averaging (kernel), their combination,
and the streaming ``PilotStage`` (pilot phasors -> carrier tracker, with the lock monitor).

Inputs are the raw ADC codes (int16, int8 or float32) exactly as stored: the kernel converts
sample by sample, so no float copy of a chunk is ever made.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from dsp._numba_options import NJIT, NJIT_PARALLEL
from dsp.clipping import RailStats, merged_parts, rail_stats, segment_rails
from dsp.core import TWO_PI, cdot, check_adc, sincos
from dsp.errors import DspLockError
from dsp.threads import WorkShare
from dsp.trackers import make_tracker

if TYPE_CHECKING:
    from dsp.acquisition import PilotAcquisition
    from dsp.lock import Acquisition
    from dsp.options import LinkParameters

__all__ = ["PILOT_LOSS_FRACTION", "PILOT_MONITOR_BLOCKS", "PILOT_MONITOR_SAMPLES", "PilotStage",
           "block_leakage", "cancel_pilot_leakage", "cancel_pilot_leakage_numpy",
           "combined_pilot", "data_end_sample", "fill_lead", "fill_tail", "joint_pilot",
           "joint_pilot_numpy", "joint_pilot_phase_var", "monitor_window_blocks",
           "pilot_decimate", "pilot_decimate_rails", "pilot_model"]


# --------------------------------------------------------------------------------------------
# pilot: NCO mix + integrate-and-dump over blocks of D samples anchored at absolute index 0
# --------------------------------------------------------------------------------------------
_PILOT_TASK = 1024   # blocks per task: the oscillator phases run as one vector loop over it
_PILOT_PIECE = 16 * _PILOT_TASK   # blocks per piece shared with a helper thread (~1 ms)
#: from this many 8-sample steps per block (D >= 64; D >= 32 for float32 codes) LLVM vectorises
#: the numba 8-lane loop by itself; below, the lanes are one vector in _block_sums
_LANE_STEPS_VECTOR = 8
_LANE_STEPS_VECTOR_F32 = 4


# LLVM flags of the float ops in _block_sums. numba's fastmath pass adds the project's flags
# (reassoc among them) to every float op that has none: each op here carries its own
_CONTRACT = ("contract",)   # a * b + c may fuse into one FMA, as the compiler does elsewhere
_ORDERED = ("nsz",)         # no reassoc: the sum is computed in the order written


@intrinsic
def _block_sums(typingctx, x, start, D, tab_re, tab_im):
    """(sum_i tab_re[i] x[start + i], sum_i tab_im[i] x[start + i]) over i < D, float32, in a
    fixed order: eight lane sums (lane k: i = k, k + 8, ...; the last D mod 8 terms to lane
    0), then l0 + (((l1 + l2) + (l3 + l4)) + ((l5 + l6) + l7)), the order LLVM gave the
    scalar numba loop this replaces at D < 64 (D < 32 for float32 codes), so the phasors are
    bit-identical to it.

    Written in LLVM IR because numba runs LLVM without its SLP vectoriser
    (``NUMBA_SLP_VECTORIZE=0``): eight scalar partial sums in numba code stayed eight scalar
    FMAs with a scalar int -> float conversion each; here they are one
    <8 x float> accumulator fed by an 8-code load, ``vpmovsxwd`` + ``vcvtdq2ps``. The sums
    carry no ``reassoc`` flag, so the order above is the one computed whatever LLVM does.
    ``tests/dsp/test_pilot.py`` checks the order bit for bit against a numpy twin.
    """
    if not (isinstance(x, types.Array) and x.ndim == 1 and x.layout == "C"
            and isinstance(tab_re, types.Array) and tab_re.dtype == types.float32
            and tab_re.ndim == 1 and tab_re.layout == "C" and tab_im == tab_re
            and isinstance(start, types.Integer) and isinstance(D, types.Integer)):
        return None
    sig = types.UniTuple(types.float32, 2)(x, start, D, tab_re, tab_im)

    def codegen(context, builder, signature, args):
        xa = context.make_array(signature.args[0])(context, builder, args[0])
        ta = context.make_array(signature.args[3])(context, builder, args[3])
        tb = context.make_array(signature.args[4])(context, builder, args[4])
        n0 = context.cast(builder, args[1], signature.args[1], types.intp)
        n = context.cast(builder, args[2], signature.args[2], types.intp)
        f32 = ir.FloatType()
        vf = ir.VectorType(f32, 8)
        xel = context.get_value_type(signature.args[0].dtype)
        x0 = builder.gep(xa.data, [n0])
        eight = ir.Constant(n.type, 8)
        full = builder.mul(builder.sdiv(n, eight), eight)

        def fma(a, b, c):
            return builder.fadd(builder.fmul(a, b, flags=_CONTRACT), c, flags=_CONTRACT)

        def code(v, to):    # int codes -> float32 (exact); float32 codes as they are
            return builder.sitofp(v, to) if isinstance(xel, ir.IntType) else v

        acc_r = cgutils.alloca_once_value(builder, ir.Constant(vf, [0.0] * 8))
        acc_i = cgutils.alloca_once_value(builder, ir.Constant(vf, [0.0] * 8))
        with cgutils.for_range(builder, builder.sdiv(n, eight)) as loop:
            off = builder.mul(loop.index, eight)
            px = builder.bitcast(builder.gep(x0, [off]), ir.VectorType(xel, 8).as_pointer())
            v = code(builder.load(px, align=context.get_abi_alignment(xel)), vf)
            tr = builder.load(builder.bitcast(builder.gep(ta.data, [off]), vf.as_pointer()),
                              align=4)
            ti = builder.load(builder.bitcast(builder.gep(tb.data, [off]), vf.as_pointer()),
                              align=4)
            builder.store(fma(tr, v, builder.load(acc_r)), acc_r)
            builder.store(fma(ti, v, builder.load(acc_i)), acc_i)
        lanes = [[builder.extract_element(builder.load(a), ir.Constant(ir.IntType(32), k))
                  for k in range(8)] for a in (acc_r, acc_i)]
        r0 = cgutils.alloca_once_value(builder, lanes[0][0])
        i0 = cgutils.alloca_once_value(builder, lanes[1][0])
        with cgutils.for_range(builder, n, start=full) as loop:
            v = code(builder.load(builder.gep(x0, [loop.index])), f32)
            builder.store(fma(builder.load(builder.gep(ta.data, [loop.index])), v,
                              builder.load(r0)), r0)
            builder.store(fma(builder.load(builder.gep(tb.data, [loop.index])), v,
                              builder.load(i0)), i0)
        lanes[0][0], lanes[1][0] = builder.load(r0), builder.load(i0)

        def add(a, b):
            return builder.fadd(a, b, flags=_ORDERED)

        sums = [add(v[0], add(add(add(v[1], v[2]), add(v[3], v[4])), add(add(v[5], v[6]), v[7])))
                for v in lanes]
        return context.make_tuple(builder, signature.return_type, sums)

    return sig, codegen


def _transpose8(builder, rows):
    """The 8 x 8 transpose of eight <8 x float> rows (out[k][b] = rows[b][k]): three stages
    of two-source shuffles, each swapping the off-diagonal s x s blocks (s = 4, 2, 1)."""
    rows = list(rows)
    i32 = ir.IntType(32)
    for s in (4, 2, 1):
        new = list(rows)
        for i in range(8):
            if i & s:
                continue
            lo = [lane if not lane & s else 8 + lane - s for lane in range(8)]
            hi = [lane + s if not lane & s else 8 + lane for lane in range(8)]
            a, b = rows[i], rows[i + s]
            new[i] = builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(i32, 8), lo))
            new[i + s] = builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(i32, 8), hi))
        rows = new
    return rows


@intrinsic
def _block_sums8(typingctx, x, start, D, tab_re, tab_im, out_re, out_im, o):
    """``_block_sums`` of the eight blocks starting at ``start + b D`` (b < 8), written to
    ``out_re[o + b]``, ``out_im[o + b]``: the same operations in the same order for each
    block, but the final sums of the eight lanes as vector adds across the eight blocks
    (after an 8 x 8 transpose of their accumulators) instead of 14 scalar adds and 16 lane
    extractions per block, which cost as much as the multiply-adds at D = 25."""
    if not (isinstance(x, types.Array) and x.ndim == 1 and x.layout == "C"
            and isinstance(tab_re, types.Array) and tab_re.dtype == types.float32
            and tab_re.ndim == 1 and tab_re.layout == "C" and tab_im == tab_re
            and out_re == tab_re and out_im == tab_re
            and isinstance(start, types.Integer) and isinstance(D, types.Integer)
            and isinstance(o, types.Integer)):
        return None
    sig = types.void(x, start, D, tab_re, tab_im, out_re, out_im, o)

    def codegen(context, builder, signature, args):
        xa = context.make_array(signature.args[0])(context, builder, args[0])
        ta = context.make_array(signature.args[3])(context, builder, args[3])
        tb = context.make_array(signature.args[4])(context, builder, args[4])
        oa = context.make_array(signature.args[5])(context, builder, args[5])
        ob = context.make_array(signature.args[6])(context, builder, args[6])
        n0 = context.cast(builder, args[1], signature.args[1], types.intp)
        n = context.cast(builder, args[2], signature.args[2], types.intp)
        o0 = context.cast(builder, args[7], signature.args[7], types.intp)
        f32 = ir.FloatType()
        vf = ir.VectorType(f32, 8)
        xel = context.get_value_type(signature.args[0].dtype)
        eight = ir.Constant(n.type, 8)
        full = builder.mul(builder.sdiv(n, eight), eight)
        zero = ir.Constant(ir.IntType(32), 0)

        def fma(a, b, c):
            return builder.fadd(builder.fmul(a, b, flags=_CONTRACT), c, flags=_CONTRACT)

        def code(v, to):
            return builder.sitofp(v, to) if isinstance(xel, ir.IntType) else v

        rows_r, rows_i = [], []
        for blk in range(8):          # each block exactly as in _block_sums
            x0 = builder.gep(xa.data, [builder.add(n0, builder.mul(n, ir.Constant(n.type,
                                                                                    blk)))])
            acc_r = cgutils.alloca_once_value(builder, ir.Constant(vf, [0.0] * 8))
            acc_i = cgutils.alloca_once_value(builder, ir.Constant(vf, [0.0] * 8))
            with cgutils.for_range(builder, builder.sdiv(n, eight)) as loop:
                off = builder.mul(loop.index, eight)
                px = builder.bitcast(builder.gep(x0, [off]),
                                     ir.VectorType(xel, 8).as_pointer())
                v = code(builder.load(px, align=context.get_abi_alignment(xel)), vf)
                tr = builder.load(builder.bitcast(builder.gep(ta.data, [off]),
                                                  vf.as_pointer()), align=4)
                ti = builder.load(builder.bitcast(builder.gep(tb.data, [off]),
                                                  vf.as_pointer()), align=4)
                builder.store(fma(tr, v, builder.load(acc_r)), acc_r)
                builder.store(fma(ti, v, builder.load(acc_i)), acc_i)
            r0 = cgutils.alloca_once_value(builder, builder.extract_element(
                builder.load(acc_r), zero))
            i0 = cgutils.alloca_once_value(builder, builder.extract_element(
                builder.load(acc_i), zero))
            with cgutils.for_range(builder, n, start=full) as loop:
                v = code(builder.load(builder.gep(x0, [loop.index])), f32)
                builder.store(fma(builder.load(builder.gep(ta.data, [loop.index])), v,
                                  builder.load(r0)), r0)
                builder.store(fma(builder.load(builder.gep(tb.data, [loop.index])), v,
                                  builder.load(i0)), i0)
            rows_r.append(builder.insert_element(builder.load(acc_r), builder.load(r0), zero))
            rows_i.append(builder.insert_element(builder.load(acc_i), builder.load(i0), zero))

        def add(a, b):
            return builder.fadd(a, b, flags=_ORDERED)

        for rows, dst in ((rows_r, oa), (rows_i, ob)):
            t = _transpose8(builder, rows)    # t[k]: lane k of the eight blocks
            s = add(t[0], add(add(add(t[1], t[2]), add(t[3], t[4])), add(add(t[5], t[6]), t[7])))
            builder.store(s, builder.bitcast(builder.gep(dst.data, [o0]), vf.as_pointer()),
                          align=4)
        return context.get_dummy_value()

    return sig, codegen


@njit(**NJIT)
def _pilot_rotate(sum_re, sum_im, m, n_first, D, cyc_per_sample, out):
    # exact oscillator phase of every block from its absolute sample index (a recursive
    # rotation would make the phasor depend on where the call started, i.e. on the
    # chunking). A loop of its own, indexed from 0 with the block's first sample as
    # n_first + i D: written inside the task loop with absolute block indices it stayed
    # scalar (10 ns per block, 40 % of the kernel); this way sincos runs vectorised
    for i in range(m):
        cyc = cyc_per_sample * (n_first + i * D)
        cyc -= math.floor(cyc)
        c, s = sincos(-TWO_PI * cyc)
        ar = np.float64(sum_re[i])
        ai = np.float64(sum_im[i])
        out[i] = complex(ar * c - ai * s, ar * s + ai * c)


@njit(**NJIT_PARALLEL)
def _pilot_dump(x, n0, D, j0, nj, cyc_per_sample, tab_re, tab_im, out, rail_ext, rail_cnt):
    # rail_ext/rail_cnt: one row per task for the ADC rail statistics of the task's samples
    # (dsp.clipping), counted right after the mix-down while they are in cache (~0.1 ns per
    # sample; a sweep of its own in the reader thread cost the 2-thread receiver ~25 %, per-
    # block extremes inside the 8-lane loop 0.3-0.4 ns per sample); no rows: no count
    n_tasks = (nj + _PILOT_TASK - 1) // _PILOT_TASK
    for task in prange(n_tasks):
        lo = task * _PILOT_TASK
        hi = min(nj, lo + _PILOT_TASK)
        sum_re = np.empty(_PILOT_TASK, np.float32)
        sum_im = np.empty(_PILOT_TASK, np.float32)
        vec_steps = _LANE_STEPS_VECTOR_F32 if x.itemsize == 4 else _LANE_STEPS_VECTOR
        if vec_steps > D // 8:   # few 8-sample steps: the loop below would stay scalar
            j8 = lo
            while j8 + 8 <= hi:   # eight blocks at a time, the rest one by one
                _block_sums8(x, (j0 + j8) * D - n0, D, tab_re, tab_im, sum_re, sum_im, j8 - lo)
                j8 += 8
            for j in range(j8, hi):
                sum_re[j - lo], sum_im[j - lo] = _block_sums(x, (j0 + j) * D - n0, D, tab_re,
                                                             tab_im)
        else:
            for j in range(lo, hi):
                loc = (j0 + j) * D - n0
                # eight float32 partial sums (relative error ~1e-7); here LLVM's loop
                # vectoriser runs the 8-step loop several steps at a time (its own summation
                # order, kept: the phasors stay what they were)
                xs = x[loc:loc + D]
                r0 = r1 = r2 = r3 = r4 = r5 = r6 = r7 = np.float32(0.0)
                m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = np.float32(0.0)
                i = 0
                while i + 8 <= D:
                    v0 = np.float32(xs[i])
                    v1 = np.float32(xs[i + 1])
                    v2 = np.float32(xs[i + 2])
                    v3 = np.float32(xs[i + 3])
                    v4 = np.float32(xs[i + 4])
                    v5 = np.float32(xs[i + 5])
                    v6 = np.float32(xs[i + 6])
                    v7 = np.float32(xs[i + 7])
                    r0 += tab_re[i] * v0
                    r1 += tab_re[i + 1] * v1
                    r2 += tab_re[i + 2] * v2
                    r3 += tab_re[i + 3] * v3
                    r4 += tab_re[i + 4] * v4
                    r5 += tab_re[i + 5] * v5
                    r6 += tab_re[i + 6] * v6
                    r7 += tab_re[i + 7] * v7
                    m0 += tab_im[i] * v0
                    m1 += tab_im[i + 1] * v1
                    m2 += tab_im[i + 2] * v2
                    m3 += tab_im[i + 3] * v3
                    m4 += tab_im[i + 4] * v4
                    m5 += tab_im[i + 5] * v5
                    m6 += tab_im[i + 6] * v6
                    m7 += tab_im[i + 7] * v7
                    i += 8
                while i < D:
                    v0 = np.float32(xs[i])
                    r0 += tab_re[i] * v0
                    m0 += tab_im[i] * v0
                    i += 1
                sum_re[j - lo] = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
                sum_im[j - lo] = ((m0 + m1) + (m2 + m3)) + ((m4 + m5) + (m6 + m7))
        _pilot_rotate(sum_re, sum_im, hi - lo, (j0 + lo) * D, D, cyc_per_sample, out[lo:hi])
        if rail_ext.shape[0]:
            first = (j0 + lo) * D - n0
            segment_rails(x[first:first + (hi - lo) * D], rail_ext[task], rail_cnt[task])


def pilot_decimate(x: np.ndarray, fs: float, *, frequency_hz: float, decimation: int,
                   first_sample: int, first_block: int, n_blocks: int) -> np.ndarray:
    """Down-convert by ``frequency_hz`` and average over blocks of ``decimation`` samples.

    Block j covers absolute samples ``[j D, (j+1) D)`` (centre ``j D + (D-1)/2``) and its value
    is ``mean_n x[n] exp(-2 pi j f n / fs)``: the pilot phasor (amplitude A/2 for a tone
    ``A cos(2 pi f n/fs + phi)``), phase-continuous across calls because the oscillator phase
    is computed from the absolute sample index.

    Parameters
    ----------
    x : ndarray, shape (n,)
        ADC codes (int16/int8/float32); ``x[0]`` is absolute sample ``first_sample``.
    fs : float
        Sample rate, Hz.
    frequency_hz : float
        Oscillator frequency, Hz.
    decimation : int
        D, samples per block.
    first_block, n_blocks : int
        Blocks to compute; they must lie inside ``x``.

    Returns
    -------
    ndarray, shape (n_blocks,), complex128
    """
    return _decimate(x, fs, frequency_hz, decimation, first_sample, first_block, n_blocks,
                     rails=False)[0]


def pilot_decimate_rails(x: np.ndarray, fs: float, *, frequency_hz: float, decimation: int,
                         first_sample: int, first_block: int,
                         n_blocks: int) -> tuple[np.ndarray, RailStats]:
    """:func:`pilot_decimate` and, from the same pass, ``dsp.clipping.rail_stats`` of the
    samples its blocks cover (``x[j0 D - n0 : (j0 + nj) D - n0]``; same numbers).

    Returns
    -------
    z : ndarray, shape (n_blocks,), complex128
    rails : RailStats
    """
    return _decimate(x, fs, frequency_hz, decimation, first_sample, first_block, n_blocks,
                     rails=True)


def _decimate(x: np.ndarray, fs: float, frequency_hz: float, decimation: int,
              first_sample: int, first_block: int, n_blocks: int,
              rails: bool, share: WorkShare | None = None) -> tuple[np.ndarray, RailStats | None]:
    x = check_adc(x)
    D = int(decimation)
    if D < 1:
        raise ValueError(f"decimation must be >= 1, got {decimation!r}")
    j0, nj, n0 = int(first_block), int(n_blocks), int(first_sample)
    if nj < 0 or (nj > 0 and (j0 * D < n0 or (j0 + nj) * D > n0 + x.shape[0])):
        raise ValueError(f"blocks [{j0}, {j0 + nj}) x {D} outside samples "
                         f"[{n0}, {n0 + x.shape[0]})")
    r = float(frequency_hz) / float(fs)
    i = np.arange(D)
    tab = np.exp(-2j * np.pi * r * i) / D
    out = np.empty(nj, np.complex128)
    n_rows = (nj + _PILOT_TASK - 1) // _PILOT_TASK if rails else 0
    ext = np.empty((n_rows, 2), np.float64)
    cnt = np.empty((n_rows, 5), np.int64)
    tre, tim = tab.real.astype(np.float32), tab.imag.astype(np.float32)
    if nj and share is None:
        _pilot_dump(x, n0, D, j0, nj, r, tre, tim, out, ext, cnt)
    elif nj:
        # pieces of whole tasks (the task borders, hence rail rows and sums, of one call)
        def piece(i: int) -> None:
            lo, hi = i * _PILOT_PIECE, min(nj, (i + 1) * _PILOT_PIECE)
            rows = slice(lo // _PILOT_TASK, -(-hi // _PILOT_TASK)) if rails else slice(0, 0)
            _pilot_dump(x, n0, D, j0 + lo, hi - lo, r, tre, tim, out[lo:hi], ext[rows],
                        cnt[rows])

        share.run(-(-nj // _PILOT_PIECE), piece)
    return out, (merged_parts(ext, cnt) if rails else None)


#: tone leakage |H| of the block average below which the cancellation skips a term (a
#: phasor error of 1e-4 of the pilot: 1e-8 rad^2, far below any pilot noise)
LEAK_SKIP = 1e-4


def block_leakage(cycles_per_sample: float, D: int, j0: int, nj: int) -> np.ndarray:
    """Block averages of a unit tone: ``G_b = mean_{n in [bD, (b+1)D)} exp(2 pi j nu n)`` for
    blocks b = j0 .. j0+nj-1 (nu in cycles per sample), i.e. ``H(nu) exp(2 pi j nu b D)``
    with ``H`` the boxcar's response. The per-block rotation is an outer product of two
    short tables (one complex multiply per block instead of an exp)."""
    nu = float(cycles_per_sample)
    h = np.mean(np.exp(2j * np.pi * ((nu * np.arange(D)) % 1.0)))
    K = 1024
    m = -(-nj // K)
    c = nu * D                                     # cycles per block
    lo = np.exp(2j * np.pi * ((c * np.arange(K)) % 1.0))
    hi = np.exp(2j * np.pi * ((c * (j0 + K * np.arange(m, dtype=np.float64))) % 1.0))
    return (h * np.multiply.outer(hi, lo)).ravel()[:nj]


def _leak_terms(cycles: list[float], D: int) -> list[tuple[int, int, bool, float, complex]]:
    """(k, j, conjugate, nu, H(nu)) of every tone leaked into pilot k's block average with
    ``|H| >= LEAK_SKIP``: pilot j at ``nu_j - nu_k`` and its image at ``-(nu_j + nu_k)``
    (aliased into [-1/2, 1/2) cycles per sample)."""
    terms = []
    for k, nk in enumerate(cycles):
        for j, nu in enumerate(cycles):
            for conj, rel in ((False, nu - nk), (True, -(nu + nk))):
                if j == k and not conj:
                    continue
                rel -= math.floor(rel + 0.5)
                h = complex(np.mean(np.exp(2j * np.pi * ((rel * np.arange(D)) % 1.0))))
                if abs(h) >= LEAK_SKIP:
                    terms.append((k, j, conj, rel, h))
    return terms


def _leak_passes(terms) -> int:
    # a pilot's own image left after one pass is p |G|^2: an amplitude, not a phase, so with
    # only images of weight one pass is exact in phase (the overlapping tracker's short hops:
    # |G| = 1/9 at fs/4); terms between pilots converge by ~|G| per pass
    cross = max((abs(t[4]) for t in terms if not (t[0] == t[1] and t[2])), default=0.0)
    if cross < 0.05:
        return 1
    big = max(abs(t[4]) for t in terms)
    return min(40, math.ceil(math.log(1e-6) / math.log(big)))


_LEAK_TASK = 4096   # blocks per task; each task's tone phases start exact


@njit(**NJIT)
def _leak_term(src, dst, conj, g, step):
    # dst[b] -= src[b] (or its conjugate) * G_b, G_{b+1} = G_b step: one term over a task
    if conj:
        for b in range(src.shape[0]):
            dst[b] -= src[b].conjugate() * g
            g *= step
    else:
        for b in range(src.shape[0]):
            dst[b] -= src[b] * g
            g *= step


@njit(**NJIT_PARALLEL)
def _cancel_leakage(z, kk, jj, cj, start, step, passes, out):
    # z, out: (pilots, blocks); per term t: leaked into pilot kk[t] from pilot jj[t]
    # (conjugated if cj[t]), its G at the first block of task c is start[c, t] (H included),
    # times step[t] per block; fixed-point passes over the task's blocks
    nj = z.shape[1]
    n_tasks = (nj + _LEAK_TASK - 1) // _LEAK_TASK
    for c in prange(n_tasks):
        lo = c * _LEAK_TASK
        hi = min(nj, lo + _LEAK_TASK)
        p = z[:, lo:hi]
        for _ in range(passes):
            nxt = z[:, lo:hi].copy()
            for t in range(kk.shape[0]):
                _leak_term(p[jj[t]], nxt[kk[t]], cj[t], start[c, t], step[t])
            p = nxt
        out[:, lo:hi] = p


def cancel_pilot_leakage(zs: list[np.ndarray], cycles: list[float], D: int,
                         j0: int, *, overwrite: bool = False) -> list[np.ndarray]:
    """Remove from each pilot's block phasors the other tones the block average lets through.

    The ADC signal is real: mixed down by pilot k (``nu_k`` cycles/sample), a pilot j of
    phasor ``p_j`` leaves ``p_j exp(2 pi j (nu_j - nu_k) n)`` (the other pilots) and
    ``conj(p_j) exp(-2 pi j (nu_j + nu_k) n)`` (every pilot's image, its own included), which
    the boxcar of D samples passes with ``block_leakage``: ``z_k = p_k + sum_j!=k p_j
    G(nu_j - nu_k) + sum_j conj(p_j) G(-(nu_j + nu_k))`` (phasors constant over a block).
    The pilot's own image alone is ~3 % of the phasor at D = 25 (phase variance ~1.5x the
    white noise's at 22 dB): a tone the tracker's noise fit took for noise. Solved for p per
    block by fixed-point iteration (to ~1e-6 of the phasor); terms with ``|H| < LEAK_SKIP``
    are skipped. Kernel; ``cancel_pilot_leakage_numpy`` is its twin.

    Parameters
    ----------
    zs : list of ndarray, complex
        Block phasors of each pilot (``pilot_decimate``), blocks j0 .. of D samples.
    cycles : list of float
        Each pilot's mixing frequency, cycles per sample.

    overwrite : bool
        The result may be written into ``zs``' arrays (a single complex128 pilot's is
        then returned): saves the copy of the phasors.

    Returns
    -------
    list of ndarray
        The phasors with the leaked tones removed (``zs`` itself when nothing leaks).
    """
    terms = _leak_terms(cycles, D)
    nj = zs[0].shape[0] if zs else 0
    if not terms or nj == 0:
        return list(zs)
    n_tasks = -(-nj // _LEAK_TASK)
    rel = np.array([t[3] for t in terms])
    h = np.array([t[4] for t in terms])
    first = (j0 + _LEAK_TASK * np.arange(n_tasks, dtype=np.float64))[:, None] * D
    start = h * np.exp(2j * np.pi * ((rel * first) % 1.0))
    step = np.exp(2j * np.pi * ((rel * D) % 1.0))
    if overwrite and len(zs) == 1:
        z = np.ascontiguousarray(zs[0], np.complex128)[None, :]   # a view where it can be
    else:
        z = np.ascontiguousarray(np.stack(zs), np.complex128)
    # in place: each task reads only its own blocks of z, all of them before it writes them
    _cancel_leakage(z, np.array([t[0] for t in terms]), np.array([t[1] for t in terms]),
                    np.array([t[2] for t in terms]), start, step, _leak_passes(terms), z)
    return list(z)


def cancel_pilot_leakage_numpy(zs: list[np.ndarray], cycles: list[float], D: int,
                               j0: int) -> list[np.ndarray]:
    """numpy twin of ``cancel_pilot_leakage`` (same terms, same passes, whole arrays)."""
    nj = zs[0].shape[0] if zs else 0
    terms = [(k, j, conj, block_leakage(rel, D, j0, nj))
             for k, j, conj, rel, _ in _leak_terms(cycles, D)]
    if not terms or nj == 0:
        return list(zs)
    passes = _leak_passes(_leak_terms(cycles, D))
    p = list(zs)
    for _ in range(passes):
        nxt = [z.copy() for z in zs]
        for k, j, conj, g in terms:
            nxt[k] -= (np.conj(p[j]) if conj else p[j]) * g
        p = nxt
    return p


# --------------------------------------------------------------------------------------------
# two or more pilots: their common phase estimated jointly (one complex unknown per block)
# --------------------------------------------------------------------------------------------
def _joint_terms(cycles: list[float], amps: list[complex],
                 D: int) -> tuple[list[tuple[float, complex]], list[tuple[float, complex]]]:
    """Terms ``(nu, coefficient * H_D(nu))`` of the block means of ``|s|^2`` (beyond the
    constant ``sum |b_k|^2``; only their real part counts) and of ``conj(s)^2`` for the two-
    tone model ``s[n] = sum_k b_k exp(2 pi j nu_k n)``: the pilots' cross terms at
    ``nu_k - nu_j`` and every pair's image at ``-(nu_k + nu_j)``, each skipped below
    ``LEAK_SKIP`` relative to the pilots' power."""
    def h(rel: float) -> tuple[float, complex]:
        rel -= math.floor(rel + 0.5)
        return rel, complex(np.mean(np.exp(2j * np.pi * ((rel * np.arange(D)) % 1.0))))

    power = sum(abs(b) ** 2 for b in amps)
    e_terms, f_terms = [], []
    for k, (nk, bk) in enumerate(zip(cycles, amps, strict=True)):
        for j, (nj, bj) in enumerate(zip(cycles, amps, strict=True)):
            if j < k:
                continue
            if j > k:
                rel, g = h(nk - nj)
                if abs(2 * bk * np.conj(bj) * g) >= LEAK_SKIP * power:
                    e_terms.append((rel, 2 * bk * np.conj(bj) * g))
            rel, g = h(-(nk + nj))
            coef = (1 if j == k else 2) * np.conj(bk * bj)
            if abs(coef * g) >= LEAK_SKIP * power:
                f_terms.append((rel, coef * g))
    return e_terms, f_terms


def _term_tables(terms: list[tuple[float, complex]], D: int, j0: int,
                 n_tasks: int) -> tuple[np.ndarray, np.ndarray]:
    """Each term's value at the first block of every task of ``_LEAK_TASK`` blocks (exact
    phase from the absolute sample index) and its rotation per block."""
    rel = np.array([t[0] for t in terms], np.float64)
    g = np.array([t[1] for t in terms], np.complex128)
    first = (j0 + _LEAK_TASK * np.arange(n_tasks, dtype=np.float64))[:, None] * D
    start = g * np.exp(2j * np.pi * ((rel * first) % 1.0))
    return (np.ascontiguousarray(start.reshape(n_tasks, len(terms))),
            np.exp(2j * np.pi * ((rel * D) % 1.0)))


@njit(**NJIT_PARALLEL)
def _joint_blocks(z, conj_b, e0, e_start, e_step, f_start, f_step, scale, out):
    # z: (pilots, blocks) block means; per block: y = sum_k conj(b_k) z_k, e = mean |s|^2,
    # f = mean conj(s)^2 (term tables rotated block by block within a task), then
    # out = scale (y - (f / e) conj(y))
    nj = z.shape[1]
    n_tasks = (nj + _LEAK_TASK - 1) // _LEAK_TASK
    for c in prange(n_tasks):
        lo = c * _LEAK_TASK
        hi = min(nj, lo + _LEAK_TASK)
        ge = e_start[c].copy()
        gf = f_start[c].copy()
        for b in range(lo, hi):
            y = 0j
            for k in range(z.shape[0]):
                y += conj_b[k] * z[k, b]
            e = e0
            for t in range(ge.shape[0]):
                e += ge[t].real
                ge[t] *= e_step[t]
            f = 0j
            for t in range(gf.shape[0]):
                f += gf[t]
                gf[t] *= f_step[t]
            kap = f / e if e > 0 else 0j
            out[b] = scale * (y - kap * y.conjugate())


def _joint_model(amps: list[complex], weights: list[complex]) -> tuple[float, complex]:
    """(sum |b_k|^2, output scale): the output is ``c sum_k w_k b_k / 2`` for a noise-free
    common phasor c, what the weighted sum of the pilots' block means (``c b_k / 2`` each)
    gives."""
    e0 = float(sum(abs(b) ** 2 for b in amps))
    return e0, complex(sum(w * b for w, b in zip(weights, amps, strict=True))) / e0


def joint_pilot(zs: list[np.ndarray], cycles: list[float], amps: list[complex],
                weights: list[complex], D: int, j0: int) -> np.ndarray:
    """The pilots' common phasor per block, estimated jointly from their block means.

    The pilots share the laser phase: over a block the real ADC signal holds
    ``Re(c s[n])``, ``s[n] = sum_k b_k exp(2 pi j nu_k n)`` with the pilots' known frequencies
    ``nu_k`` and relative phasors ``b_k`` and one unknown complex c. Its least-squares
    estimate from the block's samples needs only ``y = sum_k conj(b_k) z_k`` (the block means
    ``z_k`` of ``pilot_decimate``), ``e = mean |s|^2`` and ``f = mean conj(s)^2`` (the
    pilots' cross terms and their images, exact): ``c = 2 (y e - conj(y) f) / (e^2 - |f|^2)``.
    Solving for each pilot's phasor on its own (``cancel_pilot_leakage``) has two unknowns
    per block and puts the other pilot's noise into each. Returned per block is
    ``c (e - |f|^2 / e) / sum |b_k|^2`` times ``sum_k w_k b_k / 2``: the phase of c, weighted
    by the block's information, so that sums over consecutive blocks (the tracker's windows,
    the boxcar) are the joint estimate over them; on average it is the phasor the weighted
    combination of the pilots' block means gives. Kernel; ``joint_pilot_numpy`` is its twin.

    Parameters
    ----------
    zs : list of ndarray, complex
        Block means of each pilot (``pilot_decimate``), blocks j0 .. of D samples.
    cycles : list of float
        Each pilot's mixing frequency, cycles per sample.
    amps : list of complex
        ``b_k``: each pilot's tone amplitude A_k (``A_k cos(2 pi nu_k n + phi_k)``) and
        phase relative to the common phasor, ``A_k exp(j phi_k)``.
    weights : list of complex
        The combining weights the output is scaled to (``PilotAcquisition.pilot_weights``).

    Returns
    -------
    ndarray, complex128
    """
    nj = zs[0].shape[0]
    out = np.empty(nj, np.complex128)
    if nj == 0:
        return out
    e0, scale = _joint_model(amps, weights)
    e_terms, f_terms = _joint_terms(cycles, amps, D)
    n_tasks = -(-nj // _LEAK_TASK)
    es, ep = _term_tables(e_terms, D, j0, n_tasks)
    fs_, fp = _term_tables(f_terms, D, j0, n_tasks)
    z = np.ascontiguousarray(np.stack(zs), np.complex128)
    _joint_blocks(z, np.conj(np.array(amps, np.complex128)), e0, es, ep, fs_, fp, scale, out)
    return out


def joint_pilot_numpy(zs: list[np.ndarray], cycles: list[float], amps: list[complex],
                      weights: list[complex], D: int, j0: int) -> np.ndarray:
    """numpy twin of ``joint_pilot`` (same terms, whole arrays)."""
    nj = zs[0].shape[0]
    e0, scale = _joint_model(amps, weights)
    e_terms, f_terms = _joint_terms(cycles, amps, D)
    first = (j0 + np.arange(nj, dtype=np.float64)) * D
    e = np.full(nj, e0)
    for rel, g in e_terms:
        e += (g * np.exp(2j * np.pi * ((rel * first) % 1.0))).real
    f = np.zeros(nj, np.complex128)
    for rel, g in f_terms:
        f += g * np.exp(2j * np.pi * ((rel * first) % 1.0))
    y = sum(np.conj(b) * z for b, z in zip(amps, zs, strict=True))
    return scale * (y - f / e * np.conj(y))


def joint_pilot_phase_var(sigma2: float, s: np.ndarray, c: complex = 1.0) -> float:
    """Variance (rad^2) of the phase of the joint least-squares estimate of c from the
    samples ``x[n] = Re(c s[n]) + w[n]``, white noise w of variance ``sigma2``: the (phase,
    phase) element of the inverse Fisher information of (|c|, arg c). For tones long against
    their spacing (cross terms and images averaged out) it is ``r / L``, ``r = 2 sigma2 /
    sum_k A_k^2`` over L samples (A_k = |b_k| the tones' amplitudes): the maximum-ratio
    combination of the pilots' per-sample phase noise, ``1 / r = sum_k 1 / r_k``.

    Parameters
    ----------
    sigma2 : float
        Noise variance per sample.
    s : ndarray, complex
        The model over the window (``sum_k b_k exp(2 pi j nu_k n)`` at its samples n).
    c : complex
        The common phasor (its phase sets how the images weigh).
    """
    u = c * np.asarray(s) / abs(c)
    g1, g2 = u.real, -u.imag         # d x / d|c| and d x / d arg(c), times |c|
    a, b, d = np.dot(g1, g1), np.dot(g1, g2), np.dot(g2, g2)
    return float(sigma2 / (d - b * b / a) / abs(c) ** 2)


def pilot_model(pilot: PilotAcquisition) -> list[complex]:
    """``b_k`` of ``joint_pilot``: each pilot's amplitude and its phase against the first
    pilot, the conjugate phase of its maximum-ratio weight."""
    return [a * np.exp(-1j * np.angle(w))
            for a, w in zip(pilot.pilot_amplitudes, pilot.pilot_weights, strict=True)]


def combined_pilot(x: np.ndarray, link: LinkParameters, pilot: PilotAcquisition, D: int,
                   n0: int, j0: int, nj: int) -> np.ndarray:
    """The pilots' combined block phasors: ``pilot_decimate`` of every pilot at its frequency
    plus the acquired laser offset; one pilot: its own image removed
    (``cancel_pilot_leakage``), times its weight; several: their common phase estimated
    jointly (``joint_pilot``, scaled as ``pilot.pilot_weights`` combine them); blocks
    ``[j0, j0 + nj)`` of D samples, ``x[0]`` = sample n0."""
    return _combined_pilot_rails(x, link, pilot, D, n0, j0, nj)[0]


def _combined_pilot_rails(x: np.ndarray, link: LinkParameters, pilot: PilotAcquisition,
                          D: int, n0: int, j0: int, nj: int,
                          share: WorkShare | None = None) -> tuple[np.ndarray, RailStats]:
    """:func:`combined_pilot` and the rail statistics of the samples of its blocks (from the
    first pilot's pass); the down-conversion in pieces shared with ``share``'s helper."""
    fs = link.sample_rate_hz
    offset = pilot.frequency_offset_hz
    freqs = [fp + offset for fp in link.pilot_frequencies_hz]
    zs: list[np.ndarray] = []
    rails = None
    for f in freqs:
        zp, rp = _decimate(x, fs, f, D, n0, j0, nj, rails=not zs, share=share)
        if not zs:
            rails = rp
        zs.append(zp)
    cycles = [f / fs for f in freqs]
    if len(zs) > 1:
        return joint_pilot(zs, cycles, pilot_model(pilot), list(pilot.pilot_weights), D,
                           j0), rails
    zs = cancel_pilot_leakage(zs, cycles, D, j0, overwrite=True)
    z = None
    # in place: the phasors are this call's own arrays (same products and sums, no copies)
    for zp, w in zip(zs, pilot.pilot_weights, strict=True):
        if w != 1:
            zp *= w
        if z is None:
            z = zp
        else:
            z += zp
    return z, rails


def fill_lead(z: np.ndarray, j0: int, D: int, start_sample: int, phasor: complex) -> None:
    """Replace, in place, the phasors of blocks ``j0 ..`` (of D samples) that begin before
    ``start_sample`` (the pilot's first sample, ``PilotAcquisition.span_samples``) by
    ``phasor``, the pilot's at its start: the tracker then sees a still carrier up to the data
    instead of a pilot-free preamble's phase, which it would follow and carry into the first
    data blocks."""
    n = min(z.shape[0], -(-int(start_sample) // D) - int(j0))
    if n > 0:
        z[:n] = phasor


def data_end_sample(acq: Acquisition) -> int:
    """First sample after the last symbol's pulse: ``tau0 + (n - 1) period + half``."""
    t = acq.tau0 + (acq.link.n_symbols - 1) * acq.period + acq.bank.half
    return math.ceil(t)


def fill_tail(z: np.ndarray, j0: int, D: int, end_sample: int, last: complex) -> complex:
    """Replace, in place, the phasors of blocks ``j0 ..`` (of D samples) that begin at or
    after ``end_sample`` (``data_end_sample``) by the phasor of the last block before it:
    after the data a gated pilot is gone, and the smoother would carry the tail's noise
    phases back into the last data blocks. ``last``: that phasor if it came in an earlier
    call. Returns the phasor to pass with the next call."""
    first = max(0, -(-int(end_sample) // D) - int(j0))
    if first < z.shape[0]:
        if first > 0:
            last = complex(z[first - 1])
        z[first:] = last
        return last
    return complex(z[-1]) if z.shape[0] else last


#: pilot lock monitor: windows of about this many samples, at most PILOT_MONITOR_BLOCKS
#: blocks (in blocks alone, a window at the long blocks of a narrow-band tracker, D ~ 400,
#: outgrew a 1e6-sample recording and nothing was ever checked) ...
PILOT_MONITOR_SAMPLES = 102_400
PILOT_MONITOR_BLOCKS = 4096
#: ... never fewer blocks than this (each window's mean must average out the pilot noise) ...
PILOT_MONITOR_MIN_BLOCKS = 16
#: ... whose mean power below this fraction of the first window's (-10 dB) means the pilot
#: is lost (a fade the tracker rides through, e.g. polarisation, stays well above it)
PILOT_LOSS_FRACTION = 0.1


def monitor_window_blocks(D: int) -> int:
    """Blocks of D samples per lock-monitor window (``PILOT_MONITOR_SAMPLES``, clipped to
    ``[PILOT_MONITOR_MIN_BLOCKS, PILOT_MONITOR_BLOCKS]``)."""
    return min(PILOT_MONITOR_BLOCKS, max(PILOT_MONITOR_MIN_BLOCKS, PILOT_MONITOR_SAMPLES // D))


class PilotStage:
    """Pilot down-conversion and carrier tracker over the signal stream, apart from the
    matched filter: ``push(chunk)`` returns the tracker's ``(j0, phases)`` for the blocks that
    became final, ``flush()`` the rest. Keeps only the samples of the last incomplete pilot
    block (copied: the caller may reuse the chunk's memory), so the sample buffer of the
    matched filter need not hold samples for it, and it can run a chunk ahead in another
    thread (the receiver's reader thread does so, ``SignalStream.feed_in_place(..., phase)``)."""

    def __init__(self, acq: Acquisition) -> None:
        self.acq = acq
        self.link = acq.link
        self.D = acq.carrier.decimation
        self.tracker = make_tracker(acq.carrier)
        self.n_end = 0
        self.j_next = 0
        self._tail: np.ndarray | None = None   # samples [j_next D, n_end)
        #: wall seconds in "pilot" (down-conversion) and "phase" (tracker)
        self.seconds = {"pilot": 0.0, "phase": 0.0}
        # lock monitor: mean pilot power per window of monitor_window_blocks(D) blocks (fixed
        # windows of absolute block index, so the verdict does not depend on the chunking)
        self._win_sum = 0.0
        self._win_count = 0
        self._win_index = 0
        self.reference_power: float | None = None   # the first window's (the head's)
        self._lead = (acq.pilot.span_samples[0], acq.lead_phasor)
        self._tail_end, self._tail_last = data_end_sample(acq), acq.lead_phasor
        self._window = monitor_window_blocks(self.D)
        #: rail statistics (dsp.clipping) of the samples pushed: counted by the pilot kernel
        #: block by block, the last incomplete block's at ``flush``
        self.rails = RailStats(0, float("nan"), 0, 0, float("nan"), 0, 0)
        #: a ``dsp.threads.WorkShare`` whose helper thread takes pieces of the down-conversion
        self.share: WorkShare | None = None

    def _monitor(self, z: np.ndarray) -> None:
        """Raise DspLockError when a window's mean pilot power falls below
        PILOT_LOSS_FRACTION of the first window's: past that the tracker follows noise and
        every number after it would come from an unlocked receiver."""
        W, i = self._window, 0
        while i < z.shape[0]:
            take = min(z.shape[0] - i, W - self._win_count)
            seg = z[i:i + take]
            self._win_sum += cdot(seg, seg).real   # the numba kernel: no temporaries
            self._win_count += take
            i += take
            if self._win_count < W:
                break
            mean = self._win_sum / W
            if self.reference_power is None:
                self.reference_power = mean
            elif not mean >= PILOT_LOSS_FRACTION * self.reference_power:
                first = self._win_index * W * self.D
                raise DspLockError(
                    f"pilot lost: its power in samples [{first}, {first + W * self.D}) is "
                    f"{10 * math.log10(max(mean, 1e-300) / self.reference_power):.1f} dB "
                    "below the start of the recording",
                    {**self.acq.lock_metrics,
                     "pilot_power_db_vs_start": 10 * math.log10(max(mean, 1e-300)
                                                                / self.reference_power),
                     "pilot_loss_threshold_db": 10 * math.log10(PILOT_LOSS_FRACTION),
                     "lost_from_sample": float(first)})
            self._win_sum, self._win_count = 0.0, 0
            self._win_index += 1

    def _z(self, x: np.ndarray, n0: int, j0: int, nj: int) -> np.ndarray:
        z, rails = _combined_pilot_rails(x, self.link, self.acq.pilot, self.D, n0, j0, nj,
                                         self.share)
        self.rails = self.rails.merge(rails)
        return z

    def push(self, chunk: np.ndarray) -> tuple[int, np.ndarray]:
        chunk = np.asarray(chunk)
        t0 = time.perf_counter()
        D, n0 = self.D, self.n_end
        n1 = n0 + chunk.shape[0]
        if self._tail is None:
            self._tail = chunk[:0].copy()
        j, j_av = self.j_next, n1 // D
        parts = []
        if j < j_av and j * D < n0:      # the block across the chunk border
            parts.append(self._z(np.concatenate([self._tail, chunk[:(j + 1) * D - n0]]),
                                 j * D, j, 1))
            j += 1
        if j < j_av:
            parts.append(self._z(chunk, n0, j, j_av - j))
        start = j_av * D
        self._tail = (chunk[start - n0:].copy() if start >= n0
                      else np.concatenate([self._tail, chunk]))
        self.j_next, self.n_end = j_av, n1
        z = (parts[0] if len(parts) == 1 else
             np.concatenate(parts) if parts else np.empty(0, np.complex128))
        if self._lead[0] > 0:
            fill_lead(z, j_av - z.shape[0], D, *self._lead)
        self._monitor(z)
        self._tail_last = fill_tail(z, j_av - z.shape[0], D, self._tail_end, self._tail_last)
        t1 = time.perf_counter()
        out = self.tracker.push(z)
        self.seconds["pilot"] += t1 - t0
        self.seconds["phase"] += time.perf_counter() - t1
        return out

    def flush(self) -> tuple[int, np.ndarray]:
        t0 = time.perf_counter()
        if self._tail is not None and self._tail.shape[0]:   # in no block: counted here
            self.rails = self.rails.merge(rail_stats(check_adc(self._tail)))
            self._tail = self._tail[:0]
        out = self.tracker.flush()
        self.seconds["phase"] += time.perf_counter() - t0
        return out
