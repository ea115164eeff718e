"""Numba kernels of the link simulator (hot loops of the waveform synthesis).

Each public function validates its input, fixes dtypes and memory layout and
calls a private ``@njit`` kernel (options from :mod:`dsp._numba_options`).
Every kernel has a naive numpy twin in ``tests/qkd_hw/test_sim_kernels.py``.

Sample ``n`` of a recording is computed from its absolute index only (plus
the carried laser phase), so a chunk gives the same samples whatever the
chunk borders are.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from dsp._numba_options import NJIT, NJIT_PARALLEL

_TWO_PI = 2.0 * math.pi
_INV_2_53 = 1.0 / 9007199254740992.0


# ------------------------------------------------------------------------- normals
# Ziggurat method, Marsaglia & Tsang (2000) in the ZIGNOR form of Doornik (2005,
# "An improved ziggurat method to generate normal random samples"): 128 strips. One
# 64-bit word per deviate on the fast path (~99 %): its low 7 bits pick the strip, its
# high 53 bits the uniform, disjoint bits of the generator's output.
ZIG_STRIPS = 128
ZIG_R = 3.442619855899
ZIG_V = 9.91256303526217e-3


def _zig_tables() -> tuple[np.ndarray, np.ndarray]:
    x = np.empty(ZIG_STRIPS + 1)
    f = math.exp(-0.5 * ZIG_R * ZIG_R)
    x[0] = ZIG_V / f
    x[1] = ZIG_R
    x[ZIG_STRIPS] = 0.0
    for i in range(2, ZIG_STRIPS):
        x[i] = math.sqrt(-2.0 * math.log(ZIG_V / x[i - 1] + f))
        f = math.exp(-0.5 * x[i] * x[i])
    return x, x[1:] / x[:-1]


ZIG_X, ZIG_RATIO = _zig_tables()


@numba.njit(**NJIT_PARALLEL)
def _zig_blocks(words, n, zx, zr, out, used):  # pragma: no cover - jit
    # one flat loop per row (a helper function returning (value, pos) ran 6x slower)
    for b in numba.prange(words.shape[0]):
        row = words[b]
        end = row.shape[0]
        pos = 0
        k = 0
        while k < n:
            if pos + 3 > end:  # an iteration takes at most 3 words (tail: 2 per retry)
                pos = -1
                break
            w = row[pos]
            pos += 1
            i = int(w & np.uint64(ZIG_STRIPS - 1))
            u = 2.0 * float(w >> np.uint64(11)) * _INV_2_53 - 1.0
            if abs(u) < zr[i]:
                out[b, k] = u * zx[i]
                k += 1
            elif i == 0:  # the tail beyond R (Marsaglia 1964)
                while True:
                    a = (float(row[pos] >> np.uint64(11)) + 1.0) * _INV_2_53
                    c = (float(row[pos + 1] >> np.uint64(11)) + 1.0) * _INV_2_53
                    pos += 2
                    xt = -math.log(a) / ZIG_R
                    yt = -math.log(c)
                    if yt + yt >= xt * xt or pos + 2 > end:
                        break
                if yt + yt < xt * xt:
                    pos = -1
                    break
                out[b, k] = -(ZIG_R + xt) if u < 0.0 else ZIG_R + xt
                k += 1
            else:  # the wedge between strips i and i+1
                x = u * zx[i]
                f0 = math.exp(-0.5 * (zx[i] * zx[i] - x * x))
                f1 = math.exp(-0.5 * (zx[i + 1] * zx[i + 1] - x * x))
                v = float(row[pos] >> np.uint64(11)) * _INV_2_53
                pos += 1
                if f1 + v * (f0 - f1) < 1.0:
                    out[b, k] = x
                    k += 1
        used[b] = pos


def ziggurat_normals(words: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` standard normal deviates from each row of raw 64-bit random words.

    Parameters
    ----------
    words : ndarray of uint64, shape (blocks, w) or (w,)
        Independent streams (one PCG64 block each); each row is consumed from
        its start, about 1.01 words per deviate.
    n : int
        Deviates per row.

    Returns
    -------
    normals : ndarray of float64, shape (blocks, n) (or (n,))
    used : ndarray of int64, shape (blocks,) (or scalar)
        Words consumed per row; -1 where the row ran out (its normals are then
        invalid: call again with a longer row of the same stream, whose prefix
        gives the same deviates).
    """
    w = np.ascontiguousarray(words, dtype=np.uint64)
    one = w.ndim == 1
    if one:
        w = w[None, :]
    if w.ndim != 2:
        raise ValueError(f"words must be 1-D or 2-D, got shape {np.shape(words)}")
    n = int(n)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    out = np.empty((w.shape[0], n))
    used = np.empty(w.shape[0], dtype=np.int64)
    _zig_blocks(w, n, ZIG_X, ZIG_RATIO, out, used)
    return (out[0], used[0]) if one else (out, used)


# ------------------------------------------------------------------------- phase
@numba.njit(**NJIT)
def _laser_phase_kernel(increments: np.ndarray, phi_before: float,
                        out: np.ndarray) -> float:  # pragma: no cover - jit
    phi = phi_before
    for i in range(increments.shape[0]):
        phi += increments[i]
        out[i] = phi
    return phi


def laser_phase(increments: np.ndarray, phi_before: float) -> tuple[np.ndarray, float]:
    """Wiener phase: running sum of the increments after the carried phase.

    Parameters
    ----------
    increments : ndarray of float64, shape (n,)
        Phase increments (rad) of samples ``n0 .. n0 + n - 1``.
    phi_before : float
        Phase (rad) at sample ``n0 - 1``, carried from the previous chunk.

    Returns
    -------
    phase : ndarray of float64, shape (n,)
    phi_last : float
        Phase at the last sample (the carry for the next chunk).

    Notes
    -----
    Strictly sequential float64 addition, so the result does not depend on
    where the chunk borders are.
    """
    inc = np.ascontiguousarray(increments, dtype=np.float64)
    if inc.ndim != 1:
        raise ValueError(f"increments must be 1-D, got shape {inc.shape}")
    out = np.empty_like(inc)
    last = _laser_phase_kernel(inc, float(phi_before), out)
    return out, float(last)


# ------------------------------------------------------------------------- synthesis
#: carriers are computed exactly (cos/sin) at every multiple of this absolute sample index
#: and rotated sample by sample in between (relative error < 1e-13): 3 fewer
#: trigonometric calls per sample, and the same values whatever the chunk borders
CARRIER_ANCHOR = 64


@numba.njit(**NJIT_PARALLEL)
def _synth_kernel(n0, delay, sps, k_base, sym_re, sym_im, table, car_cyc, car_amp, car_ph,
                  phi, phi_const, noise, noise_std, lo, hi, rounding, out):  # pragma: no cover
    count = out.shape[0]
    phases = table.shape[0] - 1
    taps = table.shape[1]
    half = taps // 2
    n_car = car_cyc.shape[0]
    grp = CARRIER_ANCHOR
    g0 = n0 // grp
    n_groups = (n0 + count - 1) // grp - g0 + 1 if count > 0 else 0
    rot_re = np.empty(n_car)
    rot_im = np.empty(n_car)
    for q in range(n_car):
        rot_re[q] = math.cos(_TWO_PI * car_cyc[q])
        rot_im[q] = math.sin(_TWO_PI * car_cyc[q])
    p_re0 = math.cos(phi[0]) if count > 0 else 1.0
    p_im0 = math.sin(phi[0]) if count > 0 else 0.0
    n_clip = 0
    for gi in numba.prange(n_groups):
        n_a = (g0 + gi) * grp
        first = max(n0, n_a)
        last = min(n0 + count, n_a + grp)
        c_re = np.empty(n_car)
        c_im = np.empty(n_car)
        for q in range(n_car):
            x = car_cyc[q] * float(n_a)
            ang = _TWO_PI * (x - math.floor(x)) + car_ph[q]
            c_re[q] = math.cos(ang)
            c_im[q] = math.sin(ang)
        clipped = 0
        for n in range(n_a, last):
            if n >= first:
                i = n - n0
                u = (float(n) - delay) / sps
                k0 = math.floor(u)
                m = int((u - k0) * phases + 0.5)
                base = int(k0) - half + 1 - k_base
                # 1-D slices: the tap loop vectorises (2-D indexing inside it does not)
                h = table[m]
                a = sym_re[base:base + taps]
                b = sym_im[base:base + taps]
                acc_re = 0.0
                acc_im = 0.0
                for j in range(taps):
                    acc_re += h[j] * a[j]
                    acc_im += h[j] * b[j]
                if phi_const:
                    p_re = p_re0
                    p_im = p_im0
                else:
                    p_re = math.cos(phi[i])
                    p_im = math.sin(phi[i])
                # carrier 0: the quantum signal, Re{A s e^{j(psi)}}; others: pilots
                z_re = c_re[0] * p_re - c_im[0] * p_im
                z_im = c_re[0] * p_im + c_im[0] * p_re
                v = car_amp[0] * (acc_re * z_re - acc_im * z_im)
                for q in range(1, n_car):
                    v += car_amp[q] * (c_re[q] * p_re - c_im[q] * p_im)
                v += noise_std * noise[i]
                if rounding:
                    v = math.floor(v + 0.5)
                if v < lo:
                    v = lo
                    clipped += 1
                elif v > hi:
                    v = hi
                    clipped += 1
                out[i] = v
            for q in range(n_car):
                t = c_re[q] * rot_re[q] - c_im[q] * rot_im[q]
                c_im[q] = c_re[q] * rot_im[q] + c_im[q] * rot_re[q]
                c_re[q] = t
        n_clip += clipped
    return n_clip


def synthesize(n0: int, count: int, *, delay: float, sps: float, k_base: int,
               symbols: np.ndarray, table: np.ndarray, amplitude: float,
               signal_cycles_per_sample: float, phase: np.ndarray,
               pilot_cycles_per_sample: np.ndarray, pilot_amplitudes: np.ndarray,
               pilot_phases: np.ndarray, noise: np.ndarray, noise_std: float,
               dtype: str | np.dtype = "float64", lo: float = -math.inf,
               hi: float = math.inf) -> tuple[np.ndarray, int]:
    """ADC samples ``n0 .. n0 + count - 1`` of the signal capture.

    ``x[n] = A Re{s[n] e^{j psi_n}} + sum_p A_p cos(2 pi f_p n + phi_n + phase_p) + sigma w[n]``
    with ``psi_n = 2 pi f_s n + phi_n``, ``s[n] = sum_k a_k p((n - delay)/sps - k)``
    (``p`` tabulated in ``table`` at ``table.shape[0] - 1`` fractional phases,
    nearest phase used), frequencies in cycles per sample; then the ADC:
    ``clip(floor(x + 0.5), lo, hi)`` for integer ``dtype``, no rounding for floats.

    Parameters
    ----------
    n0, count : int
        Absolute index of the first sample and number of samples.
    delay, sps : float
        Centre of symbol 0 (samples) and samples per symbol.
    k_base : int
        Symbol index of ``symbols[0]``; ``symbols`` must cover every symbol
        within half a span of the chunk (zeros outside the data).
    symbols : ndarray of complex128, shape (k,)
        Transmitted field per symbol (data + excess noise), SNU.
    table : ndarray of float64, shape (phases + 1, 2 L)
        :func:`qkd_hw.sim.pulse.polyphase_table` divided by ``sqrt(sps)``.
    amplitude : float
        Carrier amplitude per unit symbol, codes.
    signal_cycles_per_sample : float
        ``(f_s + df) / fs`` (the frequency offset is in the carrier frequencies).
    phase : ndarray of float64, shape (count,)
        Laser phase phi_n (rad), without the frequency-offset ramp.
    pilot_cycles_per_sample, pilot_amplitudes, pilot_phases : ndarray, shape (P,)
    noise : ndarray of float64, shape (count,)
        Standard normal deviates; ``noise_std`` scales them (codes).
    dtype : {"float64", "float32", "int16", "int8"}
    lo, hi : float
        Clip range (codes).

    Returns
    -------
    samples : ndarray of ``dtype``, shape (count,)
    n_clipped : int
    """
    count = int(count)
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float64), np.dtype(np.float32), np.dtype(np.int16),
                  np.dtype(np.int8)):
        raise ValueError(f"dtype must be one of ['float64', 'float32', 'int16', 'int8'], "
                         f"got {dt}")
    if dt.kind == "i" and (lo < np.iinfo(dt).min or hi > np.iinfo(dt).max):
        raise ValueError(f"clip range [{lo}, {hi}] exceeds {dt}")
    table = np.ascontiguousarray(table, dtype=np.float64)
    if table.ndim != 2 or table.shape[1] % 2 or table.shape[0] < 2:
        raise ValueError(f"table must be (phases + 1, 2 L), got shape {table.shape}")
    sym = np.asarray(symbols)
    sym_re = np.ascontiguousarray(sym.real, dtype=np.float64)
    sym_im = np.ascontiguousarray(sym.imag if np.iscomplexobj(sym) else np.zeros(sym.shape),
                                  dtype=np.float64)
    phase = np.ascontiguousarray(phase, dtype=np.float64)
    noise = np.ascontiguousarray(noise, dtype=np.float64)
    if phase.shape != (count,) or noise.shape != (count,):
        raise ValueError(f"phase and noise must have shape ({count},), got {phase.shape}, "
                         f"{noise.shape}")
    half = table.shape[1] // 2
    if count:
        k_first = math.floor((n0 - delay) / sps) - half + 1
        k_last = math.floor((n0 + count - 1 - delay) / sps) + half + 1
        if k_first < k_base or k_last >= k_base + sym_re.shape[0]:
            raise ValueError(f"symbols cover [{k_base}, {k_base + sym_re.shape[0]}) but the "
                             f"chunk needs [{k_first}, {k_last}]")
    pc = np.ascontiguousarray(pilot_cycles_per_sample, dtype=np.float64).reshape(-1)
    pa = np.ascontiguousarray(pilot_amplitudes, dtype=np.float64).reshape(-1)
    pp = np.ascontiguousarray(pilot_phases, dtype=np.float64).reshape(-1)
    if not pc.shape == pa.shape == pp.shape:
        raise ValueError("pilot arrays must have the same length")
    car_cyc = np.concatenate([[float(signal_cycles_per_sample)], pc])
    car_amp = np.concatenate([[float(amplitude)], pa])
    car_ph = np.concatenate([[0.0], pp])
    phi_const = bool(count == 0 or np.all(phase == phase[0]))
    out = np.empty(count, dtype=dt)
    n_clip = _synth_kernel(int(n0), float(delay), float(sps), int(k_base), sym_re, sym_im,
                           table, car_cyc, car_amp, car_ph, phase, phi_const, noise,
                           float(noise_std), float(lo), float(hi), dt.kind == "i", out)
    return out, int(n_clip)


# ------------------------------------------------------------------------- ADC
@numba.njit(**NJIT_PARALLEL)
def _quantize_kernel(x, scale, lo, hi, rounding, out):  # pragma: no cover - jit
    n_clip = 0
    for i in numba.prange(x.shape[0]):
        v = x[i] * scale
        if rounding:
            v = math.floor(v + 0.5)
        if v < lo:
            v = lo
            n_clip += 1
        elif v > hi:
            v = hi
            n_clip += 1
        out[i] = v
    return n_clip


def quantize(x: np.ndarray, *, scale: float, dtype: str | np.dtype,
             lo: float, hi: float) -> tuple[np.ndarray, int]:
    """ADC: ``clip(round(x * scale), lo, hi)`` in ``dtype``; float32 is not rounded.

    Rounding is half-up (``floor(v + 0.5)``).

    Returns
    -------
    codes : ndarray of ``dtype``
    n_clipped : int
        Samples that hit ``lo`` or ``hi`` (beyond them before clipping).
    """
    dt = np.dtype(dtype)
    if dt not in (np.dtype("int16"), np.dtype("int8"), np.dtype("float32")):
        raise ValueError(f"dtype must be one of ['int16', 'int8', 'float32'], got {dt}")
    x = np.ascontiguousarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"x must be 1-D, got shape {x.shape}")
    if dt.kind == "i":
        info = np.iinfo(dt)
        if lo < info.min or hi > info.max:
            raise ValueError(f"clip range [{lo}, {hi}] exceeds {dt}")
    out = np.empty(x.shape[0], dtype=dt)
    n = _quantize_kernel(x, float(scale), float(lo), float(hi), dt.kind == "i", out)
    return out, int(n)
