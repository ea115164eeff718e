"""Plain numpy/scipy implementation of the receiver's steps (the speed baseline of the DSP).

The same algorithm as ``dsp.pipeline`` + ``qkd_hw.receiver.process_recording``, written the way a
careful numpy programmer would (vectorised, BLAS for the dot products, FFTs from ``scipy.fft``,
chunked with state carried across chunks), with no numba:

1. acquisition on the head: Hann periodogram peak + parabolic interpolation (coarse offset),
   pilot down-conversion and block averaging over D=64 samples (a ``(blocks, D) @ table``
   matrix-vector product), least-squares phase slope (fine offset), structure-function fit
   (pilot phase noise, linewidth), maximum-ratio pilot combining;
2. pilot filter design (``dsp.carrier.design_pilot_filter``: formulas, reused), pilot
   down-conversion + block averaging over D samples, one pilot's image removed (several
   pilots: their common phasor fitted jointly, cross terms and images exact), then the
   carrier tracker on the block
   phasors: boxcar (cumulative sums, angle, unwrap) or, the pipeline's default, Kalman filter +
   RTS smoother (observation noise measured at D on the head; variance recursion step by step
   until the gain is constant, then both passes as first-order IIR filters, ``lfilter``):
   the carrier phase on the grid of block centres;
3. RRC matched filter (mixer folded into the taps, polyphase table ``dsp.rrc.MatchedFilterBank``:
   design, reused) evaluated at the fractional symbol instants: the windows of the symbols
   sharing a polyphase index are gathered (``sliding_window_view``) and multiplied by the
   (taps, derivative taps) matrix in one float32 GEMM; carrier phase linearly interpolated from
   the grid with the first-order in-window correction ``Y0 + j psi' Y1``;
4. synchronisation: FFT cross-correlation of the RRC-filtered, de-rotated head with Alice's
   first symbols on the fractional grid (both spectral orientations), peak-to-side-lobe lock
   metric, three parabolic refinements of ``|sum conj(a) y|^2``; symbol-clock offset from four
   quarters; data-aided timing loop (PI on instant and period) once per block of 2^18 symbols;
5. shot-/electronic-noise captures through the same matched filter (no carrier phase):
   ``N0 = Var(shot) - Var(el)``, ``v_el = Var(el) / N0``;
6. disclosure of the PE subset (``dsp.pe.disclosed_mask``: the protocol's definition, reused),
   4x4 second-moment matrix of (Re x, Im x, Re y, Im y), common phase removed, and the
   conventions.md estimators (t, T, xi, sigma2, snr).

Reused from ``dsp`` are only pure-python/numpy *definitions* (filter design formulas, the
polyphase tap table, the disclosure mask, the default options); every per-sample and
per-symbol computation is re-implemented here. The numbers agree with the numba pipeline to
float32 rounding (tests/benchmarks/test_numpy_reference.py), which shows the two do the same
steps, so their speed ratio measures the implementation, not the algorithm.

``max_signal_samples`` processes only a prefix of ``/adc/signal`` (the symbols whose matched
filter fits in it), for per-sample throughput comparisons on very long recordings.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import scipy.fft as sfft
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import lfilter

from dsp.acquisition import refine_timing
from dsp.carrier import PilotFilterDesign, design_pilot_filter, pilot_block_guard
from dsp.pe import disclosed_mask
from dsp.pipeline import TIMING_GAINS, TIMING_STRIDE, ReceiverOptions
from dsp.rrc import MatchedFilterBank, rrc_frequency_response
from dsp.trackers import HeadPilot, tracker_kind
from dsp.vocabulary import HETERODYNE, TIMING_BLOCK_SYMBOLS, TIMING_CORR_MIN_N
from qkd_hw.trace_io import TraceReader

__all__ = ["process_recording_numpy"]

#: symbols per GEMM sub-block of the matched filter (bounds the gathered windows: 8192 x taps x 4 B)
MF_SUB_BLOCK = 8192


# ------------------------------------------------------------------------------------------
# kernels (numpy)
# ------------------------------------------------------------------------------------------
def pilot_decimate(x: np.ndarray, fs: float, f_hz: float, D: int, n0: int, j0: int,
                   nj: int) -> np.ndarray:
    """mean over block j of ``x[n] exp(-2 pi j f n / fs)``, blocks ``[jD, (j+1)D)``, x[0] = n0."""
    if nj <= 0:
        return np.empty(0, np.complex128)
    r = f_hz / fs
    seg = x[j0 * D - n0:(j0 + nj) * D - n0].reshape(nj, D).astype(np.float64)
    tab = np.exp(-2j * np.pi * r * np.arange(D)) / D
    acc = seg @ tab.real + 1j * (seg @ tab.imag)
    cyc = r * ((j0 + np.arange(nj, dtype=np.float64)) * D)
    cyc -= np.floor(cyc)
    return acc * np.exp(-2j * np.pi * cyc)


class Taps:
    """The bank's float32 tables stacked as ``(P, taps, 4)``: taps re/im, derivative re/im."""

    def __init__(self, bank: MatchedFilterBank) -> None:
        self.bank = bank
        self.P, self.half, self.ntap = bank.n_phases, bank.half, bank.n_taps
        self.cyc = bank.mixer_cycles_per_sample
        self.T4 = np.ascontiguousarray(np.stack([bank.taps_re, bank.taps_im, bank.dtaps_re,
                                                 bank.dtaps_im], axis=-1), np.float32)
        self.T2 = np.ascontiguousarray(self.T4[..., :2])


def sample_range(tp: Taps, tau0: float, period: float, k: int) -> tuple[int, int]:
    t = tau0 + k * period
    nc = math.floor(t)
    if int((t - nc) * tp.P + 0.5) >= tp.P:
        nc += 1
    return int(nc) - tp.half + 1, int(nc) + tp.half + 1


def matched_filter_at(xf: np.ndarray, tp: Taps, n0: int, tau0: float, period: float, k0: int,
                      nk: int, phase: tuple[float, float, np.ndarray] | None,
                      first_order: bool = False) -> np.ndarray:
    """Matched-filter outputs of symbols ``k0 .. k0+nk-1`` at ``tau0 + k period`` (complex64).

    ``xf``: float32 samples, ``xf[0]`` is absolute sample ``n0``; carrier phase interpolated
    at the symbol instant, with ``first_order`` also its slope inside the window."""
    if nk <= 0:
        return np.empty(0, np.complex64)
    k = np.arange(k0, k0 + nk, dtype=np.float64)
    t = tau0 + k * period
    nc = np.floor(t)
    p = np.floor((t - nc) * tp.P + 0.5).astype(np.int64)
    wrap = p >= tp.P
    p[wrap] -= tp.P
    nc[wrap] += 1
    loc = nc.astype(np.int64) - n0 - tp.half + 1
    if loc[0] < 0 or loc[-1] + tp.ntap > xf.shape[0]:
        raise ValueError("matched filter outside the buffer")
    win = sliding_window_view(xf, tp.ntap)
    use1 = first_order and phase is not None
    T = tp.T4 if use1 else tp.T2
    r4 = np.empty((nk, T.shape[2]), np.float32)
    for s in range(0, nk, MF_SUB_BLOCK):
        ps, ls = p[s:s + MF_SUB_BLOCK], loc[s:s + MF_SUB_BLOCK]
        if ps[0] == ps[-1] and np.all(ps == ps[0]):
            r4[s:s + ps.shape[0]] = win[ls] @ T[ps[0]]
            continue
        order = np.argsort(ps, kind="stable")
        cuts = np.flatnonzero(np.diff(ps[order])) + 1
        for g in np.split(order, cuts):
            r4[s + g] = win[ls[g]] @ T[ps[g[0]]]
    y0 = r4[:, 0] + 1j * r4[:, 1].astype(np.float64)
    cyc = tp.cyc * nc
    cyc -= np.floor(cyc)
    cyc += tp.cyc * p / tp.P
    phi = -2 * np.pi * cyc
    if phase is not None:
        t0, dt, ph = phase
        u = (nc + p / tp.P - t0) / dt
        j = np.floor(u).astype(np.int64)
        f = u - j
        lo, hi = j < 0, j >= ph.shape[0] - 1
        j[lo], f[lo] = 0, 0.0
        j[hi], f[hi] = ph.shape[0] - 2, 1.0
        dph = ph[j + 1] - ph[j]
        phi -= ph[j] + f * dph
        if use1:
            y0 = y0 + 1j * (dph / dt) * (r4[:, 2] + 1j * r4[:, 3].astype(np.float64))
    return (y0 * np.exp(1j * phi)).astype(np.complex64)


def boxcar_phase(z: np.ndarray, z0: int, n_in: int, j0: int, j1: int, h: int,
                 last: float | None) -> np.ndarray:
    """Unwrapped ``arg sum z[max(j-h,0) : min(j+h+1, n_in)]`` for j in [j0, j1); z[0] = block z0."""
    if j1 <= j0:
        return np.empty(0)
    c = np.concatenate([[0], np.cumsum(z)])
    j = np.arange(j0, j1)
    s = c[np.minimum(j + h + 1, n_in) - z0] - c[np.maximum(j - h, 0) - z0]
    a = np.angle(s)
    ref = a[0] if last is None else last
    return np.unwrap(np.concatenate([[ref], a]))[1:]


class BoxcarRef:
    """``dsp.trackers.boxcar.BoxcarTracker`` in numpy (cumulative sums): ``push(z)`` /
    ``flush()`` return ``(j0, phases)`` like the pipeline's trackers."""

    def __init__(self, carrier: PilotFilterDesign) -> None:
        self.h = (carrier.window - 1) // 2
        self.z = np.empty(0, np.complex128)   # phasor history, z[0] = block z0
        self.z0 = 0
        self.n_in = 0
        self.n_out = 0
        self.last: float | None = None

    def push(self, z: np.ndarray) -> tuple[int, np.ndarray]:
        self.z = np.concatenate([self.z, z])
        self.n_in += z.shape[0]
        return self._emit(final=False)

    def flush(self) -> tuple[int, np.ndarray]:
        return self._emit(final=True)

    def _emit(self, final: bool) -> tuple[int, np.ndarray]:
        j0 = self.n_out
        j1 = self.n_in if final else max(self.n_in - self.h, j0)
        ph = boxcar_phase(self.z, self.z0, self.n_in, j0, j1, self.h, self.last)
        if ph.shape[0]:
            self.last = float(ph[-1])
        self.n_out = j1 if ph.shape[0] else j0
        keep = max(self.n_out - self.h, 0)
        self.z = self.z[keep - self.z0:]
        self.z0 = keep
        return j0, ph


class KalmanRts:
    """``dsp.trackers.PhaseTracker`` with method "kalman"/"kalman-rts" in numpy/scipy: the
    Kalman filter's variance recursion runs step by step until its gain is constant (a few
    dozen steps), after which filter and RTS smoother are first-order IIR filters
    (``scipy.signal.lfilter``) on the unwrapped pilot phase; RTS over the same fixed blocks
    of ``rts_block`` with ``rts_lookahead`` blocks of look-ahead. ``push(z)`` / ``flush()`` return
    ``(j0, phases)`` like the pipeline's tracker."""

    def __init__(self, carrier: PilotFilterDesign) -> None:
        self.q, self.r, self.L = carrier.q, carrier.r, carrier.rts_block
        self.H = carrier.rts_lookahead
        self.smooth = carrier.method == "kalman-rts"
        self.overlap = int(getattr(carrier, "overlap", 1))
        self.hist: np.ndarray | None = None    # the last overlap - 1 hops
        self.state: tuple[float, float] | None = None
        self.steady = False
        self.phi_f = np.empty(0)
        self.p_f = np.empty(0)
        self.n_in = 0
        self.n_out = 0

    def _forward(self, z: np.ndarray) -> None:
        meas = np.angle(z)
        n = meas.shape[0]
        q, r = self.q, self.r
        if self.state is None:
            self.state = (float(meas[0]), max(r - q, 0.0))
        phi, p = self.state
        phi_f = np.empty(n)
        p_f = np.empty(n)
        j = 0
        while j < n and not self.steady:
            pp = p + q
            g = pp / (pp + r)
            p_new = (1.0 - g) * pp
            innov = meas[j] - phi
            innov -= 2 * np.pi * math.floor(innov / (2 * np.pi) + 0.5)
            phi += g * innov
            phi_f[j] = phi
            j += 1
            if abs(p_new - p) <= 1e-15 * p:
                self.steady = True
                p_f[j - 1] = p
            else:
                p_f[j - 1] = p_new
                p = p_new
        if j < n:
            pp = p + q
            g = pp / (pp + r)
            m = np.unwrap(meas[j:])
            m += 2 * np.pi * np.round((phi - m[0]) / (2 * np.pi))
            phi_f[j:], _ = lfilter([g], [1.0, g - 1.0], m, zi=[(1.0 - g) * phi])
            p_f[j:] = p
            phi = float(phi_f[-1])
        self.state = (phi, p)
        self.phi_f = np.concatenate([self.phi_f, phi_f])
        self.p_f = np.concatenate([self.p_f, p_f])
        self.n_in += n

    def _rts(self, lo: int, hi: int, phi_end: float) -> np.ndarray:
        """Backward pass over phi_f[lo:hi] from the smoothed state phi_end after it."""
        f, pf = self.phi_f[lo:hi], self.p_f[lo:hi]
        varying = np.flatnonzero(pf != pf[-1])    # the filter's start-up (p not yet constant)
        s = int(varying[-1]) + 1 if varying.size else 0
        out = np.empty(hi - lo)
        c = pf[-1] / (pf[-1] + self.q)
        out[s:] = lfilter([1.0 - c], [1.0, -c], f[s:][::-1], zi=[c * phi_end])[0][::-1]
        ps = out[s] if s < len(out) else phi_end
        for j in range(s - 1, -1, -1):
            cj = pf[j] / (pf[j] + self.q)
            ps = f[j] + cj * (ps - f[j])
            out[j] = ps
        return out

    def _windows(self, z: np.ndarray, final: bool) -> np.ndarray:
        """With overlap h: the sums of h hops centred on each hop (ends repeated)."""
        h = self.overlap
        if h == 1:
            return z
        m = (h - 1) // 2
        if self.hist is None:
            if not z.shape[0]:
                return z
            self.hist = np.full(m, z[0])
        buf = np.concatenate([self.hist, z] + ([np.full(m, self.hist[-1] if not z.shape[0]
                                                        else z[-1])] if final else []))
        if buf.shape[0] < h:
            self.hist = buf
            return np.empty(0, np.complex128)
        self.hist = buf[buf.shape[0] - (h - 1):]
        return np.lib.stride_tricks.sliding_window_view(buf, h).sum(axis=1)

    def push(self, z: np.ndarray) -> tuple[int, np.ndarray]:
        z = self._windows(np.asarray(z, np.complex128), final=False)
        if z.shape[0]:
            self._forward(z)
        return self._emit(final=False)

    def flush(self) -> tuple[int, np.ndarray]:
        z = self._windows(np.empty(0, np.complex128), final=True)
        if z.shape[0]:
            self._forward(z)
        return self._emit(final=True)

    def _emit(self, final: bool) -> tuple[int, np.ndarray]:
        j0 = self.n_out
        if not self.smooth or (final and self.phi_f.shape[0]):
            out = (self._rts(0, self.phi_f.shape[0], self.phi_f[-1]) if self.smooth
                   else self.phi_f)
        else:
            L = self.L
            nb = (self.n_in // L) - 1 - (j0 // L)
            if nb <= 0:
                return j0, np.empty(0)
            H = self.H
            out = np.concatenate([self._rts(i * L, (i + 1) * L + H,
                                            self.phi_f[(i + 1) * L + H - 1])[:L]
                                  for i in range(nb)])
        self.n_out = j0 + out.shape[0]
        self.phi_f = self.phi_f[out.shape[0]:]
        self.p_f = self.p_f[out.shape[0]:]
        return j0, out


#: the reference tracker of each of the pipeline's methods (``dsp.trackers.TRACKERS``)
REFERENCE_TRACKERS: dict[str, Callable[[PilotFilterDesign], Any]] = {
    "fir": BoxcarRef, "kalman": KalmanRts, "kalman-rts": KalmanRts}


def track_all(carrier: PilotFilterDesign, z: np.ndarray) -> np.ndarray:
    """The carrier phase of every block of ``z`` (one push + flush) with the design's method."""
    tr = REFERENCE_TRACKERS[carrier.method](carrier)
    return np.concatenate([tr.push(z)[1], tr.flush()[1]])


# ------------------------------------------------------------------------------------------
# acquisition
# ------------------------------------------------------------------------------------------
@dataclass
class Link:
    fs: float
    rs: float
    rolloff: float
    f_sig: float
    pilots: tuple[float, ...]
    va: float
    eta: float
    detection: str
    n_symbols: int

    @property
    def sps(self) -> float:
        return self.fs / self.rs


def _structure_fit(ph: np.ndarray, max_lag: int) -> tuple[float, float]:
    n = np.arange(ph.shape[0])
    ph = ph - np.polyval(np.polyfit(n, ph, 1), n)
    lags = np.arange(1, max_lag + 1)
    S = np.array([np.mean((ph[lag:] - ph[:-lag]) ** 2) for lag in lags])
    slope, icpt = np.polyfit(lags, S, 1)
    return float(icpt / 2), float(slope)


def _radial_phase_noise(z: np.ndarray) -> float:
    """Phase-noise variance of pilot phasors from their amplitude scatter, Var|z| / mean|z|^2
    (additive circular noise is as large radially as tangentially; laser phase noise is not)."""
    r = np.abs(z)
    m = float(np.mean(r))
    return float(np.var(r) / (m * m)) if m > 0 else float("inf")


def acquire_pilot(x: np.ndarray, link: Link, search_hz: float, snr_min_db: float,
                  D: int = 64, max_lag: int = 48) -> dict[str, Any]:
    fs = link.fs
    n = 1 << math.floor(math.log2(min(x.shape[0], 1 << 21)))
    seg = x[:n].astype(np.float64)
    spec = np.abs(sfft.rfft((seg - seg.mean()) * np.hanning(n))) ** 2
    df = fs / n
    nb = math.floor(search_hz / df)
    metric = np.zeros(2 * nb + 1)
    wins = []
    for fp in link.pilots:
        c = round(fp / df)
        win = spec[c - nb:c + nb + 1]
        med = float(np.median(win))
        wins.append((win, med))
        metric += win / med
    b = int(np.argmax(metric))
    shift = 0.0
    if 0 < b < 2 * nb:
        lm = np.log(metric[b - 1:b + 2])
        den = lm[0] - 2 * lm[1] + lm[2]
        if den < 0:
            shift = 0.5 * (lm[0] - lm[2]) / den
    snr_db = [float(10 * np.log10(w[max(b - 1, 0):b + 2].max() / m)) for w, m in wins]
    if min(snr_db) < snr_min_db:
        raise RuntimeError(f"numpy reference: pilot not found (SNR {min(snr_db):.1f} dB)")
    coarse = ((b - nb) + shift) * df + (round(link.pilots[0] / df) * df - link.pilots[0])
    nblk = x.shape[0] // D
    t = np.arange(nblk) * D + (D - 1) / 2
    phasors, fine = [], []
    for fp in link.pilots:
        z = pilot_decimate(x, fs, fp + coarse, D, 0, 0, nblk)
        a1, _ = np.polyfit(t, np.unwrap(np.angle(z)), 1)
        fine.append(coarse + a1 * fs / (2 * np.pi))
        phasors.append(z)
    pw = np.array([np.mean(np.abs(z) ** 2) for z in phasors])
    offset = float(np.sum(np.array(fine) * pw) / np.sum(pw))
    rot = np.exp(-2j * np.pi * (offset - coarse) / fs * t)
    # per-pilot noise and amplitude once the other tones' leakage is removed
    clean = cancel_leakage([z[:8192] for z in phasors],
                           [(fp + coarse) / fs for fp in link.pilots], D, 0)
    weights = []
    for z, c in zip(phasors, clean, strict=True):
        rel = np.angle(np.vdot(phasors[0], z))
        s2n = max(_radial_phase_noise(c), 1e-12)
        weights.append(np.exp(-1j * rel) / (np.sqrt(np.mean(np.abs(c) ** 2)) * s2n))
    wsum = sum(abs(w) for w in weights)
    weights = [w / wsum for w in weights]
    comb = sum(w * z for w, z in zip(weights, phasors, strict=True)) * rot
    _, slope = _structure_fit(np.unwrap(np.angle(comb)), max_lag)
    s2n = _radial_phase_noise(comb)
    return {"offset": offset, "coarse": float(coarse), "snr_db": snr_db,
            "phase_noise_var": float(max(s2n, 1e-12)),
            "linewidth": float(max(slope / (2 * np.pi * D / fs), 0.0)), "decimation": D,
            "weights": weights, "amplitudes": [2 * np.sqrt(p) for p in pw]}


def joint_phasor(zs: list, nus: list, amps: list, weights: list, D: int, j0: int) -> np.ndarray:
    """The pilots' common phasor c per block: least squares of ``Re(c s[n])``, ``s[n] = sum_k
    b_k exp(2 pi j nu_k n)`` (``b_k``: amplitude, phase of the weight's conjugate), from
    ``y = sum_k conj(b_k) z_k``, ``e = mean |s|^2``, ``f = mean conj(s)^2`` per block; returned
    as ``(y - f / e conj(y)) sum_k w_k b_k / sum |b_k|^2`` (weighted by the block's
    information, so that window sums stay the joint estimate)."""
    nj = zs[0].shape[0]
    b = [a * np.exp(-1j * np.angle(w)) for a, w in zip(amps, weights, strict=True)]
    first = (j0 + np.arange(nj, dtype=np.float64)) * D
    n = np.arange(D)

    def g(rel: float) -> np.ndarray:            # block means of exp(2 pi j rel n)
        rel -= np.floor(rel + 0.5)
        return np.mean(np.exp(2j * np.pi * rel * n)) * np.exp(2j * np.pi * ((rel * first) % 1.0))

    e0 = sum(abs(v) ** 2 for v in b)
    e = np.full(nj, e0)
    f = np.zeros(nj, np.complex128)
    for k, (nk, bk) in enumerate(zip(nus, b, strict=True)):
        for j, (nu, bj) in enumerate(zip(nus, b, strict=True)):
            if j != k:
                e += (bk * np.conj(bj) * g(nk - nu)).real
            f += np.conj(bk * bj) * g(-(nk + nu))
    y = sum(np.conj(v) * z for v, z in zip(b, zs, strict=True))
    scale = sum(w * v for w, v in zip(weights, b, strict=True)) / e0
    return scale * (y - f / e * np.conj(y))


def cancel_leakage(zs: list, nus: list, D: int, j0: int) -> list:
    """Each pilot's block phasors without the other pilots and every pilot's image (the
    boxcar's response times the tone's phase at each block start; fixed-point passes)."""
    nj = zs[0].shape[0]
    b = (j0 + np.arange(nj, dtype=np.float64)) * D
    terms = []
    for k, nk in enumerate(nus):
        for j, nu in enumerate(nus):
            for conj, rel in ((False, nu - nk), (True, -(nu + nk))):
                if j == k and not conj:
                    continue
                rel -= np.floor(rel + 0.5)
                h = np.mean(np.exp(2j * np.pi * rel * np.arange(D)))
                if abs(h) >= 1e-4:
                    terms.append((k, j, conj, h * np.exp(2j * np.pi * ((rel * b) % 1.0))))
    if not terms or nj == 0:
        return zs
    big = max(abs(g[0]) for *_, g in terms)
    passes = 1 if big < 0.05 else min(40, int(np.ceil(np.log(1e-6) / np.log(big))))
    p = list(zs)
    for _ in range(passes):
        nxt = [z.copy() for z in zs]
        for k, j, conj, g in terms:
            nxt[k] -= (np.conj(p[j]) if conj else p[j]) * g
        p = nxt
    return p


def combined_pilot(x, link: Link, pil: dict, D: int, n0: int, j0: int, nj: int) -> np.ndarray:
    z = np.zeros(max(nj, 0), np.complex128)
    freqs = [fp + pil["offset"] for fp in link.pilots]
    zs = [pilot_decimate(x, link.fs, f, D, n0, j0, nj) for f in freqs]
    if len(zs) > 1 and nj > 0:
        return joint_phasor(zs, [f / link.fs for f in freqs], pil["amplitudes"],
                            pil["weights"], D, j0)
    zs = cancel_leakage(zs, [f / link.fs for f in freqs], D, j0) if nj > 0 else zs
    for zp, w in zip(zs, pil["weights"], strict=True):
        z += w * zp
    return z


def timing_fit(xf, a, tp, tau, period, k0, kk, phase, n0=0, stride=1):
    s, e = [], 0.0
    for d in (-0.25, 0.0, 0.25):
        y = matched_filter_at(xf, tp, n0, tau + d + k0 * period, period * stride, 0, kk,
                              phase).astype(np.complex128)
        s.append(abs(np.vdot(a, y)) ** 2)
        if d == 0.0:
            e = float(np.vdot(y, y).real)
    den = s[0] - 2 * s[1] + s[2]
    if den >= 0:
        return 0.0, s[1], e
    return 0.25 * 0.5 * (s[0] - s[2]) / den, s[1], e


def synchronise(x, xf, link: Link, alice, tp: Taps, mixer_hz, phase, max_delay, pslr_min):
    fs, period = link.fs, link.sps
    K, n = alice.shape[0], x.shape[0]
    nfft = 1 << math.ceil(math.log2(n + int(K * period) + 2))
    nn = np.arange(n)
    t0, dt, ph = phase
    bb = x.astype(np.float64) * np.exp(-1j * (2 * np.pi * mixer_hz / fs * nn
                                              + np.interp(nn, t0 + dt * np.arange(len(ph)), ph)))
    B = sfft.fft(bb, nfft) * rrc_frequency_response(sfft.fftfreq(nfft, 1 / fs), link.rs,
                                                    link.rolloff)
    pos = np.arange(K) * period
    i0 = np.floor(pos).astype(np.int64)
    w1 = pos - i0
    best = None
    for inverted in (False, True):
        a = np.conj(alice) if inverted else alice
        ref = np.zeros(nfft, np.complex128)
        np.add.at(ref, i0, a * (1 - w1))
        np.add.at(ref, i0 + 1, a * w1)
        c = sfft.ifft(B * np.conj(sfft.fft(ref)))
        lags = min(int(max_delay), n - 1) + 1
        p = np.abs(c[:lags]) ** 2
        j = int(np.argmax(p))
        g = math.ceil(2 * period)
        side = np.concatenate([p[:max(j - g, 0)], p[j + g + 1:]])
        pslr = float(p[j] / np.mean(side)) if side.size else 0.0
        if best is None or pslr > best[0]:
            best = (pslr, j, inverted)
    pslr, j, inverted = best
    if pslr < pslr_min:
        raise RuntimeError(f"numpy reference: sync failed (PSLR {pslr:.3g})")
    a = np.conj(alice) if inverted else alice
    kk = max(1, min(K, int((n - tp.half - 2 - (j + 2)) // period)))
    a = a[:kk]

    def score(tau):
        y = matched_filter_at(xf, tp, 0, tau, period, 0, kk, phase)
        return complex(np.vdot(a, y.astype(np.complex128)))

    tau = refine_timing(lambda t: abs(score(t)) ** 2, float(j), lower=tp.half)
    c = score(tau)
    y = matched_filter_at(xf, tp, 0, tau, period, 0, kk, phase).astype(np.complex128)
    gain = c / np.vdot(a, a)
    snr = abs(gain) ** 2 * np.mean(np.abs(a) ** 2) / max(np.mean(np.abs(y - gain * a) ** 2),
                                                         1e-300)
    brms = link.rs / fs * math.sqrt(1 / 12 + link.rolloff**2 * (1 / 4 - 2 / math.pi**2))
    tstd = 1.0 / (2 * math.pi * brms * math.sqrt(max(2 * kk * snr, 1e-300)))
    return {"tau0": tau, "pslr": pslr, "inverted": bool(inverted), "kk": kk, "tstd": tstd}


def clock_offset(xf, alice, sync, tp, period, phase) -> tuple[float, float]:
    kk = sync["kk"]
    q = kk // 4
    if q < 256:
        return 0.0, math.inf
    a = np.asarray(alice[:kk], np.complex128)
    if sync["inverted"]:
        a = np.conj(a)
    ks = np.array([(i + 0.5) * q for i in range(4)])
    ds = np.array([timing_fit(xf, a[i * q:(i + 1) * q], tp, sync["tau0"], period, i * q, q,
                              phase)[0] for i in range(4)])
    slope, icpt = np.polyfit(ks, ds, 1)
    res = ds - (icpt + slope * ks)
    s_res = max(float(np.sqrt(np.sum(res**2) / 2)), sync["tstd"] * 2)
    s_slope = s_res / math.sqrt(np.sum((ks - ks.mean()) ** 2))
    # later instants (slope > 0) mean a longer period: ppm < 0 (period = sps / (1 + ppm 1e-6))
    return float(-slope / period * 1e6), float(s_slope / period * 1e6)


PROBE_MARGIN_FRACTION = 0.25     # as dsp.pipeline: bounded probe windows
PROBE_FLOOR_PPM = 1.0


def probe_search_ppm(opt: ReceiverOptions, probes: list) -> float:
    """Clock uncertainty (ppm) of the next probe: the whole search range, then 10 sd."""
    if not probes:
        return float(opt.clock_search_ppm)
    return min(float(opt.clock_search_ppm), max(10.0 * probes[-1][2], PROBE_FLOOR_PPM))


def probe_range(opt: ReceiverOptions, link: Link, tp: Taps, tau0: float, period: float,
                signal_length: int, probes: list) -> tuple[int, int] | None:
    """Next late segment of the signal for the clock (Alice's sync symbols as late as the
    capped search margin allows), None when it would add no lever arm."""
    sps = link.sps
    k = min(opt.sync_symbols, link.n_symbols)
    need = int((k + opt.span(link.rolloff) + 8) * sps)
    cap = int(PROBE_MARGIN_FRACTION * need)
    u = probe_search_ppm(opt, probes) * 1e-6
    last_k = link.n_symbols - k
    if u > 0:
        last_k = min(last_k, int(((cap - 4 * int(sps) - tp.half) / u - tau0 - need) / period))
    stop = min(signal_length, int(tau0 + last_k * period + need))
    margin = int(u * stop) + 4 * int(sps) + tp.half
    start = max(0, int(tau0 + last_k * period) - margin)
    start = min(start, max(0, stop - need - 2 * margin))
    if start < max(need, 2 * max((p[0] for p in probes), default=0)):
        return None
    return start, stop


def refine_clock(opt, link: Link, pil, carrier, tp: Taps, sync, tau0, period, probe, first,
                 alice, probes: list):
    """Clock offset from the timing of a late probe vs the head: (tau0, period, ppm); the
    probe ``(first, ppm, sd)`` is appended to ``probes``."""
    sps = link.sps
    x = np.asarray(probe)
    margin = int(probe_search_ppm(opt, probes) * 1e-6 * (first + x.shape[0])) \
        + 4 * int(sps) + tp.half
    k0 = max(0, math.ceil((first + margin - tau0) / period))
    k = min(opt.sync_symbols, link.n_symbols - k0, int((x.shape[0] - 2 * margin - tp.half)
                                                       / sps) - 2)
    if k < 256:
        return tau0, period, (sps / period - 1) * 1e6
    a = np.asarray(alice(k0, k0 + k), np.complex128)
    # pilot oscillators on absolute time (multi-pilot combining weights hold on it only)
    D = carrier.decimation
    j0 = -(-first // D)
    nj = (first + x.shape[0]) // D - j0
    ph = (j0 * D + (D - 1) / 2 - first, float(D),
          track_all(carrier, combined_pilot(x, link, pil, D, first, j0, nj)))
    kh = sync["kk"]
    lever = k0 + (k - kh) / 2
    pred = sync["tau0"] + k0 * sps - first    # both syncs fit the nominal period
    expect = pred + lever * (period - sps)     # centred on the current estimate
    s = synchronise(x, x.astype(np.float32), link, a, tp, link.f_sig + pil["offset"], ph,
                    int(max(expect, 0) + margin), opt.sync_pslr_min)
    d_period = (s["tau0"] - pred) / lever
    period = sps + d_period
    ppm = (sps / period - 1) * 1e6
    probes.append((first, ppm, math.hypot(s["tstd"], sync["tstd"]) / (lever * sps) * 1e6))
    return sync["tau0"] - (kh - 1) / 2 * d_period, period, ppm


# ------------------------------------------------------------------------------------------
# streaming
# ------------------------------------------------------------------------------------------
class Buffer:
    """float32 samples ``[n0, n_end)`` kept across chunks (overlap-save)."""

    def __init__(self) -> None:
        self.data = np.empty(0, np.float32)
        self.n0 = 0
        self.n_end = 0

    def append(self, chunk: np.ndarray) -> None:
        self.data = np.concatenate([self.data, chunk.astype(np.float32)])
        self.n_end += chunk.shape[0]

    def trim(self, keep_from: int) -> None:
        cut = min(max(keep_from - self.n0, 0), self.data.shape[0])
        if cut:
            self.data = self.data[cut:].copy()
            self.n0 += cut


class NoiseMeter:
    def __init__(self, tp: Taps, tau0: float, period: float) -> None:
        self.tp, self.period = tp, period
        # the signal's symbol lattice tau0 + k period, first instant with a full window
        self.tau = tau0 + math.ceil((tp.half + 1 - tau0) / period) * period
        self.buf = Buffer()
        self.k = 0
        self.sum2 = 0.0
        self.count = 0

    def feed(self, chunk: np.ndarray) -> None:
        self.buf.append(chunk)
        khi = math.floor((self.buf.n_end - self.tp.half - 2 - self.tau) / self.period) + 1
        if khi > self.k:
            y = matched_filter_at(self.buf.data, self.tp, self.buf.n0, self.tau, self.period,
                                  self.k, khi - self.k, None)
            self.sum2 += float(np.sum(y.real.astype(np.float64) ** 2
                                      + y.imag.astype(np.float64) ** 2) / 2)
            self.count += y.shape[0]
            self.k = khi
        self.buf.trim(sample_range(self.tp, self.tau, self.period, self.k)[0])


class SignalStream:
    """Pilot phase + matched filter + timing loop over the signal capture, in chunks."""

    def __init__(self, link: Link, pil: dict, carrier: PilotFilterDesign, tp: Taps, sync: dict,
                 tau0: float, period: float, alice: Callable[[int, int], np.ndarray],
                 clock_tracking: bool, n_symbols: int) -> None:
        self.link, self.pil, self.tp, self.sync = link, pil, tp, sync
        self.D = carrier.decimation
        self.buf = Buffer()
        self.tracker = REFERENCE_TRACKERS[carrier.method](carrier)
        self.n_in = 0          # pilot blocks computed
        self.ph = np.empty(0)  # phase grid, ph[0] = block ph_j0
        self.ph_j0 = 0
        self.tau, self.period = tau0, period
        self.k_next = 0
        self.n_symbols = n_symbols
        self.alice = alice
        self.track = clock_tracking
        self.first_order = False

    def _grid(self):
        D = self.D
        return (self.ph_j0 * D + (D - 1) / 2, float(D), self.ph)

    def _append(self, j0: int, ph: np.ndarray) -> None:
        if ph.shape[0]:
            if self.ph.shape[0] == 0:
                self.ph_j0 = j0
            self.ph = np.concatenate([self.ph, ph])

    def feed(self, chunk: np.ndarray) -> list[tuple[int, np.ndarray]]:
        self.buf.append(chunk)
        j_av = self.buf.n_end // self.D
        if j_av > self.n_in:
            z = combined_pilot(self.buf.data, self.link, self.pil, self.D, self.buf.n0,
                               self.n_in, j_av - self.n_in)
            self.n_in = j_av
            self._append(*self.tracker.push(z))
        return self._emit(final=False)

    def finish(self) -> list[tuple[int, np.ndarray]]:
        self._append(*self.tracker.flush())
        return self._emit(final=True)

    def _k_limit(self, final: bool) -> int:
        kmax = math.floor((self.buf.n_end - self.tp.half - 2 - self.tau) / self.period) + 1
        if not final:
            if self.ph.shape[0] < 2:
                return self.k_next
            t_last = (self.ph_j0 + self.ph.shape[0] - 1) * self.D + (self.D - 1) / 2
            kmax = min(kmax, math.floor((t_last - 1 - self.tau) / self.period) + 1)
        return max(min(kmax, self.n_symbols), self.k_next)

    def _emit(self, final: bool) -> list[tuple[int, np.ndarray]]:
        out = []
        L = TIMING_BLOCK_SYMBOLS
        khi = self._k_limit(final)
        while self.k_next < khi and self.ph.shape[0] >= 2:
            khi = self._k_limit(final)
            if khi <= self.k_next:
                break
            k0 = self.k_next
            k1 = min(khi, (k0 // L + 1) * L) if self.track else khi
            y = matched_filter_at(self.buf.data, self.tp, self.buf.n0, self.tau, self.period,
                                  k0, k1 - k0, self._grid(), first_order=self.first_order)
            out.append((k0, np.conj(y) if self.sync["inverted"] else y))
            self.k_next = k1
            if self.track and k1 % L == 0 and k1 < self.n_symbols:
                self._timing(k1)
        if self.k_next < self.n_symbols:
            k_keep = (self.k_next // L) * L if self.track else self.k_next
            lo, _ = sample_range(self.tp, self.tau - 0.5, self.period, k_keep)
            self.buf.trim(min(lo, self.n_in * self.D))
            jk = int((lo - (self.D - 1) / 2) // self.D) - 2
            cut = min(max(jk - self.ph_j0, 0), max(self.ph.shape[0] - 2, 0))
            if cut:
                self.ph = self.ph[cut:]
                self.ph_j0 += cut
        return out

    def _timing(self, k1: int) -> None:
        L, st = TIMING_BLOCK_SYMBOLS, TIMING_STRIDE
        k0 = k1 - L
        lo, _ = sample_range(self.tp, self.tau - 0.3, self.period, k0)
        if lo < self.buf.n0:
            return
        a = np.asarray(self.alice(k0, k1), np.complex128)[::st]
        if self.sync["inverted"]:
            a = np.conj(a)
        n = a.shape[0]
        d, c2, e = timing_fit(self.buf.data, a, self.tp, self.tau, self.period, k0, n,
                              self._grid(), n0=self.buf.n0, stride=st)
        if c2 / (np.vdot(a, a).real * e + 1e-300) * n < TIMING_CORR_MIN_N:
            return
        d = float(np.clip(d, -0.25, 0.25))
        g1, g2 = TIMING_GAINS
        self.tau += g1 * d - g2 * d / L * (k0 + L / 2)
        self.period += g2 * d / L


def _head_pilot(head: np.ndarray, link: Link, pil: dict) -> HeadPilot:
    """The head's combined pilot phasors, for a tracker's refinement on the head."""
    n = head.shape[0]
    return HeadPilot(samples=n, phasors=lambda D: combined_pilot(head, link, pil, D, 0, 0, n // D))


# ------------------------------------------------------------------------------------------
# the whole receiver
# ------------------------------------------------------------------------------------------
@dataclass
class _Acquired:
    """What the numpy receiver's acquisition found (head, clock probes)."""

    pil: dict[str, Any]
    carrier: PilotFilterDesign
    tp: Taps
    sync: dict[str, Any]
    tau0: float
    period: float
    ppm: float
    n_sym: int


def _acquire(r: TraceReader, link: Link, opt: ReceiverOptions, sig_len: int) -> _Acquired:
    """Pilot, carrier filter design, bank, synchronisation and clock offset from the head and
    the late probes of the first ``sig_len`` signal samples."""
    sps = link.sps
    span = opt.span(link.rolloff)
    head_n = min(sig_len, int(opt.sync_max_delay_samples
                              + (min(opt.sync_symbols, link.n_symbols) + span + 4) * sps))
    head = r.read("signal", 0, head_n)
    headf = head.astype(np.float32)
    k_sync = min(opt.sync_symbols, link.n_symbols)
    alice0 = r.symbols(0, k_sync)
    pil = acquire_pilot(head, link, opt.pilot_search_hz, opt.pilot_snr_min_db)
    carrier = design_pilot_filter(link.fs, phase_noise_var=pil["phase_noise_var"],
                                  acq_decimation=pil["decimation"],
                                  linewidth_hz=pil["linewidth"],
                                  method=opt.phase_method,
                                  bandwidth_hz=opt.pilot_bandwidth_hz,
                                  linewidth_floor_hz=opt.linewidth_floor_hz,
                                  max_window_s=opt.max_pilot_window_s,
                                  min_block_samples=pilot_block_guard(
                                      link.fs, pilot_frequencies_hz=link.pilots,
                                      signal_frequency_hz=link.f_sig, symbol_rate_hz=link.rs,
                                      rolloff=link.rolloff))
    # the tracker's own refinement on the head (the Kalman trackers measure their
    # observation noise at their block length), fed with this module's pilot phasors
    carrier = tracker_kind(carrier.method).refine(carrier, _head_pilot(head, link, pil))
    mixer = link.f_sig + pil["offset"]
    tp = Taps(MatchedFilterBank(samples_per_symbol=sps, rolloff=link.rolloff,
                                span_symbols=span, n_phases=opt.n_phases,
                                mixer_cycles_per_sample=mixer / link.fs, taper=opt.taper))
    D = carrier.decimation
    nj = head.shape[0] // D
    zh = combined_pilot(head, link, pil, D, 0, 0, nj)
    head_phase = ((D - 1) / 2, float(D), track_all(carrier, zh))
    sync = synchronise(head, headf, link, np.asarray(alice0, np.complex128), tp, mixer,
                       head_phase, opt.sync_max_delay_samples, opt.sync_pslr_min)
    ppm, ppm_std = 0.0, math.inf
    if opt.clock_tracking:
        ppm, ppm_std = clock_offset(headf, alice0, sync, tp, sps, head_phase)
        if abs(ppm) < 3 * ppm_std:
            ppm = 0.0
    period = sps / (1 + ppm * 1e-6)
    # the head fit assumed the nominal period: its instant is that of the middle symbol
    tau0 = sync["tau0"] - (sync["kk"] - 1) / 2 * (period - sps)
    del head, headf
    n_sym = link.n_symbols
    if sig_len < r.adc["signal"].length:   # prefix: the symbols whose window fits in it
        n_sym = min(n_sym, max(0, math.floor((sig_len - tp.half - 2 - tau0) / period) + 1))
    if opt.clock_tracking:
        plink = replace(link, n_symbols=n_sym)
        probes: list = []
        while (rng := probe_range(opt, plink, tp, tau0, period, sig_len, probes)):
            n_probes = len(probes)
            tau0, period, ppm = refine_clock(opt, plink, pil, carrier, tp, sync, tau0,
                                             period, r.read("signal", *rng), rng[0],
                                             r.symbols, probes)
            if len(probes) == n_probes:
                break
    return _Acquired(pil, carrier, tp, sync, tau0, period, ppm, n_sym)


def _noise_snu(r: TraceReader, acq: _Acquired, chunk_samples: int) -> tuple[float, float]:
    """``N0`` (codes^2) and ``v_el`` (SNU) from the noise captures through the signal's bank."""
    var = {}
    for name in ("shot_noise", "electronic_noise"):
        m = NoiseMeter(acq.tp, acq.tau0, acq.period)
        for chunk in r.iter_chunks(name, chunk_samples):
            m.feed(chunk)
        var[name] = m.sum2 / m.count
    n0 = var["shot_noise"] - var["electronic_noise"]
    return n0, var["electronic_noise"] / n0


def _pair_moments(r: TraceReader, link: Link, acq: _Acquired, opt: ReceiverOptions,
                  n0: float, sig_len: int, chunk_samples: int, pe_fraction: float,
                  seed: int) -> tuple[np.ndarray, int, int]:
    """Second moments of the disclosed (x_r, x_i, y_r, y_i) in SNU, their count, and the
    symbols received."""
    scale = np.float32(1.0 / math.sqrt(n0))
    stream = SignalStream(link, acq.pil, acq.carrier, acq.tp, acq.sync, acq.tau0, acq.period,
                          r.symbols, opt.clock_tracking, acq.n_sym)
    stream.first_order = bool(getattr(opt, "first_order_phase", False))
    M = np.zeros((4, 4))
    count = 0

    def consume(blocks):
        nonlocal M, count
        for k0, y in blocks:
            k1 = k0 + y.shape[0]
            y = y * scale
            x = r.symbols(k0, k1)
            msk = disclosed_mask(k0, k1, fraction=pe_fraction, seed=seed)
            v = np.stack([x.real[msk], x.imag[msk], y.real[msk], y.imag[msk]]
                         ).astype(np.float64)
            M += v @ v.T
            count += v.shape[1]

    for chunk in r.iter_chunks("signal", chunk_samples, stop=sig_len):
        consume(stream.feed(chunk))
    consume(stream.finish())
    return M, count, stream.k_next


def _estimates(M: np.ndarray, count: int, link: Link, vel: float) -> dict[str, float]:
    """Estimates of conventions.md from the pair moments, common phase removed."""
    theta = math.atan2(M[0, 3] - M[1, 2], M[0, 2] + M[1, 3])
    c, s = math.cos(theta), math.sin(theta)
    R = np.eye(4)
    R[2:, 2:] = [[c, s], [-s, c]]
    o = R @ M @ R.T
    if link.detection == HETERODYNE:
        sxx, sxy, syy, m = o[0, 0] + o[1, 1], o[0, 2] + o[1, 3], o[2, 2] + o[3, 3], 2 * count
        gain = link.eta / 2
    else:
        sxx, sxy, syy, m = o[0, 0], o[0, 2], o[2, 2], count
        gain = link.eta
    t_hat = sxy / sxx
    sigma2 = (syy - t_hat * sxy) / m
    return {
        "t_eff": t_hat, "transmittance": t_hat**2 / gain,
        "excess_noise_snu": (sigma2 - 1 - vel) / t_hat**2, "electronic_noise_snu": vel,
        "sigma2": sigma2, "snr": t_hat**2 * link.va / sigma2, "n_pe": m,
        "residual_phase_rad": theta,
    }


def process_recording_numpy(path: str | os.PathLike[str], *, pe_fraction: float = 0.5,
                            seed: int = 0, chunk_samples: int = 1 << 22,
                            options: ReceiverOptions | None = None,
                            max_signal_samples: int | None = None) -> dict[str, Any]:
    """Run the numpy receiver over a recording; returns estimates and timings (JSON-ready).

    ``max_signal_samples`` limits the signal capture to a prefix (all symbols whose matched
    filter fits in it); the noise captures are always processed whole.
    """
    opt = options or ReceiverOptions()
    t_start = time.perf_counter()
    with TraceReader(path) as r:
        tx = r.tx
        link = Link(fs=r.sample_rate_hz, rs=tx.symbol_rate_hz, rolloff=tx.rolloff,
                    f_sig=tx.signal_frequency_hz, pilots=tuple(tx.pilot_frequencies_hz),
                    va=tx.modulation_variance_snu, eta=tx.efficiency, detection=tx.detection,
                    n_symbols=tx.n_symbols)
        sig_len = r.adc["signal"].length
        if max_signal_samples is not None:
            sig_len = min(sig_len, int(max_signal_samples))
        acq = _acquire(r, link, opt, sig_len)
        t_acq = time.perf_counter() - t_start
        n0, vel = _noise_snu(r, acq, chunk_samples)
        M, count, n_received = _pair_moments(r, link, acq, opt, n0, sig_len, chunk_samples,
                                             pe_fraction, seed)
    est = _estimates(M, count, link, vel)
    seconds = time.perf_counter() - t_start
    with TraceReader(path) as r:
        samples = sig_len + r.adc["shot_noise"].length + r.adc["electronic_noise"].length
    return {
        **est, "n0_codes2": n0,
        "acquisition_frequency_offset_hz": acq.pil["offset"], "delay_samples": acq.tau0,
        "clock_offset_ppm": acq.ppm, "spectral_inversion": acq.sync["inverted"],
        "n_symbols_received": n_received, "pilot_decimation": acq.carrier.decimation,
        "samples": samples, "signal_samples": sig_len, "seconds": seconds,
        "acquisition_seconds": t_acq,
    }


def main() -> int:
    import argparse
    import json

    ap = argparse.ArgumentParser(description="numpy/scipy reference receiver (speed baseline)")
    ap.add_argument("trace")
    ap.add_argument("--max-signal-samples", type=float, default=None)
    ap.add_argument("--pe-fraction", type=float, default=0.5)
    ap.add_argument("--chunk-samples", type=int, default=1 << 22)
    args = ap.parse_args()
    out = process_recording_numpy(args.trace, pe_fraction=args.pe_fraction,
                                  options=ReceiverOptions(),
                                  chunk_samples=args.chunk_samples,
                                  max_signal_samples=None if args.max_signal_samples is None
                                  else int(args.max_signal_samples))
    print(json.dumps(out, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
