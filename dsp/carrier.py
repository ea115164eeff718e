"""Carrier-phase recovery from the pilot: filter design and the streaming phase trackers.

The pilot phasors are block averages over D samples (``kernels.pilot_decimate``); the phase
tracker turns them into a continuous (unwrapped) carrier phase on the grid of block centres
``j D + (D-1)/2``, which the matched filter interpolates at every symbol instant.

Default filter bandwidth (documented choice). With a boxcar of duration tau over the pilot
phasor, the phase error has two terms:

* pilot noise: ``c_n / tau`` with ``c_n = sigma_n^2 D_acq / fs`` (rad^2 s), sigma_n^2 the
  phase-noise variance of one acquisition block of D_acq samples (``= 1/(2 C/N0 tau)``);
* phase-noise tracking: a Wiener phase of diffusion ``D_phi = 2 pi linewidth`` (rad^2/s)
  differs from its centred tau-average by ``D_phi tau / 12``.

The sum is minimal at ``tau_opt = sqrt(12 c_n / D_phi)`` (noise-equivalent bandwidth
``B = 1/tau``), where the error variance is ``sqrt(c_n D_phi / 3)``; both c_n and the
linewidth are estimated from the head of the recording (``acquisition.acquire_pilot``).
With no measurable phase noise tau is capped (``max_window_s``).

The refined method is a Kalman filter (Chin et al., npj Quantum Inf. 7, 20 (2021)):
random-walk phase state with ``q = D_phi D / fs`` per block and the pilot phase as
observation with ``r = sigma_n^2 D_acq / D``; ``"kalman-rts"`` adds the Rauch-Tung-Striebel
smoother (offline processing), run over fixed blocks of the decimated grid with one block of
look-ahead, so the result does not depend on how the recording is chunked. Its pilot blocks
are at least ``pilot_block_guard`` samples long (up to tau): shorter blocks let the quantum
band into the phase measurements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dsp.kernels import boxcar_phase, kalman_phase_forward, rts_smooth_block, rts_smooth_blocks

__all__ = ["PHASE_METHODS", "PhaseTracker", "PilotFilterDesign", "design_pilot_filter",
           "pilot_block_guard", "pilot_leakage_floor", "rts_lengths"]

PHASE_METHODS = ("fir", "kalman", "kalman-rts")
#: the boxcar tracker's sliding sums restart at multiples of this many blocks (chunk invariance)
FIR_RUN = 16384
_TWO_PI = 2.0 * math.pi


@dataclass(frozen=True)
class PilotFilterDesign:
    """Parameters of the pilot phase tracker.

    decimation : samples per pilot block D; window : boxcar length in blocks (odd, ``"fir"``);
    q, r : Kalman process / observation variances per block (rad^2); rts_block : RTS block
    length in blocks; rts_lookahead : blocks of look-ahead of each block's backward pass
    (``rts_lengths``); tau_s : filter duration (s); bandwidth_hz : 1/tau;
    predicted_phase_var : expected phase-error variance (rad^2) of the boxcar at this tau.
    """

    method: str
    decimation: int
    window: int
    q: float
    r: float
    rts_block: int
    rts_lookahead: int
    tau_s: float
    bandwidth_hz: float
    predicted_phase_var: float
    linewidth_used_hz: float


def pilot_block_guard(fs: float, *, pilot_frequencies_hz, signal_frequency_hz: float,
                      symbol_rate_hz: float, rolloff: float) -> int:
    """Shortest pilot block (samples) that keeps the quantum band out of the Kalman tracker's
    pilot phasors: ``ceil(fs / gap)``, gap = the smallest distance from a pilot to the band
    (for pilot and band inside (0, fs/2) the band's images at ``-f_sig`` and ``fs - f_sig``
    are never nearer).

    A block average of D samples is a sinc filter with its first null at ``fs / D``; with
    ``D >= fs / gap`` the whole band lies beyond it, in the side lobes. Shorter blocks let the
    band into every pilot phase measurement, as a phase error correlated with the quantum
    signal that the de-rotation then writes back into it: measured 1.35 mSNU of excess noise
    at 10 kHz linewidth, 2 GSa/s, pilot 40 MHz from the band edge with D = 8, -0.4 (none,
    within the +-0.2 mSNU seed spread) with D = 50, tracking floor unchanged
    (benchmarks/dsp_penalty.py). Applied to the Kalman trackers only; the boxcar keeps its
    8-blocks-per-window design (its window averages M blocks; not evaluated with the guard).
    """
    edge = (1 + rolloff) * symbol_rate_hz / 2
    gaps = [abs(fp - signal_frequency_hz) - edge for fp in pilot_frequencies_hz]
    gap = max(min(gaps), fs / 4096)
    return math.ceil(fs / gap)


def rts_lengths(q: float, r: float) -> tuple[int, int]:
    """RTS block length and look-ahead (blocks) for the Kalman variances q, r.

    With ``tc = sqrt(r / q)`` blocks (the smoother's time constant): blocks of
    ``16 tc`` clipped to [1024, 2^18] (long enough that the per-call overhead vanishes), and a
    look-ahead of ``16 tc`` blocks, at least 64 and at most one block. Each block's backward
    pass starts from the FORWARD estimate that far after it; the smoother forgets that start
    by the factor ``c = p / (p + q) ~ 1 - 1/tc`` per step, i.e. by ``e^-16`` (``~1e-9`` rad for a
    start error of the filter's ~0.03 rad) or less. A whole block of look-ahead, as before,
    doubled the smoother's work when tc is short (strong pilot: tc ~ 2 blocks)."""
    tc = math.sqrt(r / q) if q > 0 else math.inf
    if not math.isfinite(tc):
        return 1 << 18, 1 << 18
    block = int(min(max(1024, 16 * math.ceil(tc)), 1 << 18))
    return block, int(min(block, max(64, 16 * math.ceil(tc))))


def design_pilot_filter(fs: float, *, phase_noise_var: float, acq_decimation: int,
                        linewidth_hz: float, method: str = "fir",
                        bandwidth_hz: float | None = None, linewidth_floor_hz: float = 1.0,
                        max_window_s: float = 20e-6, min_window_s: float = 16e-9,
                        blocks_per_window: int = 8,
                        min_block_samples: int = 1) -> PilotFilterDesign:
    """Choose D, the boxcar window and the Kalman variances from the pilot statistics.

    Parameters
    ----------
    fs : float
        Sample rate, Hz.
    phase_noise_var : float
        Pilot phase-noise variance per ``acq_decimation``-sample block, rad^2.
    linewidth_hz : float
        Estimated combined laser linewidth, Hz (floored at ``linewidth_floor_hz``).
    method : {"fir", "kalman", "kalman-rts"}
    bandwidth_hz : float, optional
        Force the boxcar bandwidth 1/tau instead of the optimum.
    min_block_samples : int
        Kalman methods: shortest pilot block D (``pilot_block_guard``), applied up to the
        filter duration ``tau`` (a block longer than the optimal averaging time would cost
        more tracking error than the band leakage it removes).
    """
    if method not in PHASE_METHODS:
        raise ValueError(f"phase method must be one of {PHASE_METHODS}, got {method!r}")
    if not phase_noise_var > 0:
        raise ValueError(f"phase_noise_var must be > 0, got {phase_noise_var!r}")
    lw = max(float(linewidth_hz), float(linewidth_floor_hz))
    dphi = 2 * math.pi * lw
    c_n = phase_noise_var * acq_decimation / fs
    if bandwidth_hz is not None:
        if not bandwidth_hz > 0:
            raise ValueError(f"pilot bandwidth must be > 0 Hz, got {bandwidth_hz!r}")
        tau = 1.0 / float(bandwidth_hz)
    else:
        tau = math.sqrt(12 * c_n / dphi)
    tau = min(max(tau, min_window_s), max_window_s)
    D = max(8, int(tau * fs / blocks_per_window))
    if method != "fir" and min_block_samples > D:
        D = max(D, min(int(min_block_samples), round(tau * fs)))
    M = max(1, round(tau * fs / D))
    if M % 2 == 0:
        M += 1
    tau_eff = M * D / fs
    q = dphi * D / fs
    r = phase_noise_var * acq_decimation / D
    rts_block, rts_lookahead = rts_lengths(q, r)
    return PilotFilterDesign(method=method, decimation=D, window=M, q=q, r=r,
                             rts_block=rts_block, rts_lookahead=rts_lookahead, tau_s=tau_eff,
                             bandwidth_hz=1 / tau_eff,
                             predicted_phase_var=c_n / tau_eff + dphi * tau_eff / 12,
                             linewidth_used_hz=lw)


class PhaseTracker:
    """Streaming carrier phase from pilot block phasors (state carried across pushes).

    ``push(z)`` appends the phasors of the next blocks and returns ``(j0, phases)``: the
    unwrapped phase of blocks ``j0 .. j0+len-1`` that are final (need no further input);
    ``flush()`` returns the rest at the end of the data (truncated windows / exact RTS).
    """

    def __init__(self, design: PilotFilterDesign) -> None:
        self.design = design
        self.n_in = 0            # blocks received
        self.n_out = 0           # blocks finalised
        self._last = None        # last output phase (continuity)
        # fir
        self._z = np.empty(0, np.complex128)
        self._z0 = 0             # block index of self._z[0]
        # kalman
        self._phi_f = np.empty(0)
        self._p_f = np.empty(0)
        self._f0 = 0
        self._kstate: tuple[float, float] | None = None

    def latency_blocks(self) -> int:
        """Most blocks pushed but not yet returned (before ``flush``): the tracker's delay.
        An RTS smoother finalises whole blocks of ``rts_block`` once the next one is in."""
        d = self.design
        if d.method == "fir":
            return (d.window - 1) // 2 + 1
        if d.method == "kalman":
            return 0
        return 2 * d.rts_block

    def push(self, z: np.ndarray) -> tuple[int, np.ndarray]:
        z = np.asarray(z, np.complex128)
        self.n_in += z.shape[0]
        if self.design.method == "fir":
            self._z = np.concatenate([self._z, z])
            return self._fir(final=False)
        self._forward(z)
        return self._kalman(final=False)

    def flush(self) -> tuple[int, np.ndarray]:
        if self.design.method == "fir":
            return self._fir(final=True)
        return self._kalman(final=True)

    def _emit(self, j0: int, wrapped_or_cont: np.ndarray, unwrap: bool) -> tuple[int, np.ndarray]:
        ph = wrapped_or_cont
        if unwrap and ph.shape[0]:
            ref = ph[0] if self._last is None else self._last
            ph = np.unwrap(np.concatenate([[ref], ph]))[1:]
        if ph.shape[0]:
            self._last = float(ph[-1])
        self.n_out = j0 + ph.shape[0]
        return j0, ph

    # ---- boxcar on the phasors ---------------------------------------------------------
    def _fir(self, final: bool) -> tuple[int, np.ndarray]:
        """Sliding sums restarted at FIXED block indices (multiples of ``FIR_RUN``), whatever
        the pushes: each output is then computed by the same floating-point operations for
        any chunking (a restart at every push changes the last bits of the phase, which the
        float32 matched-filter outputs and the timing loop then make visible). The run
        containing the first new output is recomputed from its start (<= FIR_RUN outputs)."""
        h = (self.design.window - 1) // 2
        j0 = self.n_out
        j1 = self.n_in if final else max(self.n_in - h, j0)
        if j1 <= j0:
            return j0, np.empty(0)
        parts = []
        prev = self._last
        a = (j0 // FIR_RUN) * FIR_RUN
        while a < j1:
            b = min(a + FIR_RUN, j1)
            # the run's angles, continuous inside the run (chained from 0, whatever came before);
            # only the run's phasors go in (the kernel's wrapper copies what it is given into
            # real and imaginary parts: the whole history, per run, cost more than the kernel)
            lo_b = max(a - h, 0)
            hi_b = min(b + h, self.n_in)
            chain = boxcar_phase(self._z[lo_b - self._z0:hi_b - self._z0], first_block=lo_b,
                                 n_blocks_in=self.n_in, out_first=a, out_stop=b,
                                 half_window=h, last_phase=0.0)[max(j0 - a, 0):]
            # one 2 pi shift per run, set by the previous output: the same shift (and the same
            # float operation) whether the run is emitted in one push or several
            if prev is None:
                prev = float(chain[0])
            ph = chain + _TWO_PI * math.floor((prev - chain[0]) / _TWO_PI + 0.5)
            parts.append(ph)
            prev = float(ph[-1])
            a = b
        out = self._emit(j0, np.concatenate(parts), unwrap=False)
        keep = max((self.n_out // FIR_RUN) * FIR_RUN - h, 0)
        self._z = self._z[keep - self._z0:]
        self._z0 = keep
        return out

    # ---- Kalman filter (+ RTS) -----------------------------------------------------------
    def _forward(self, z: np.ndarray) -> None:
        if z.shape[0] == 0:
            return
        d = self.design
        if self._kstate is None:    # first prediction: the first pilot phase, variance r
            self._kstate = (float(np.angle(z[0])), max(d.r - d.q, 0.0))
        phi_f, p_f = kalman_phase_forward(z, phi0=self._kstate[0], p0=self._kstate[1],
                                          q=d.q, r=d.r)
        self._kstate = (float(phi_f[-1]), float(p_f[-1]))
        self._phi_f = np.concatenate([self._phi_f, phi_f])
        self._p_f = np.concatenate([self._p_f, p_f])

    def _kalman(self, final: bool) -> tuple[int, np.ndarray]:
        d = self.design
        j0 = self.n_out
        if d.method == "kalman":
            out = self._phi_f
            self._phi_f = np.empty(0)
            self._p_f = np.empty(0)
            self._f0 = self.n_in
            return self._emit(j0, out, unwrap=False)
        L = d.rts_block
        if final:
            if self._phi_f.shape[0] == 0:
                return j0, np.empty(0)
            out = rts_smooth_block(self._phi_f, self._p_f, d.q, self._phi_f[-1], self._p_f[-1])
            self._phi_f = np.empty(0)
            self._p_f = np.empty(0)
            self._f0 = self.n_in
            return self._emit(j0, out, unwrap=False)
        # finalise whole blocks b with forward data up to the end of block b+1 (the backward
        # pass itself starts rts_lookahead <= L blocks after block b)
        nb = (self.n_in // L) - 1 - (j0 // L)
        if nb <= 0:
            return j0, np.empty(0)
        # blocks of L starting at n_out (== _f0: the forward buffer starts at the first
        # unfinished output)
        assert self._f0 == self.n_out
        out = rts_smooth_blocks(self._phi_f, self._p_f, d.q, L, nb, lookahead=d.rts_lookahead)
        res = self._emit(j0, out, unwrap=False)
        cut = self.n_out - self._f0
        self._phi_f = self._phi_f[cut:]
        self._p_f = self._p_f[cut:]
        self._f0 = self.n_out
        return res


def pilot_leakage_floor(*, pilot_amplitudes: tuple[float, ...], pilot_frequencies_hz,
                        linewidth_hz: float, mixer_hz: float, symbol_rate_hz: float,
                        rolloff: float, fs: float, shot_noise_var: float, t_eff: float) -> float:
    """Excess noise (SNU, referred to the channel input) from the pilots' phase-noise tails.

    A pilot of amplitude A (power A^2/2) carrying the lasers' Wiener phase has a Lorentzian
    line; far from it (|f - f_p| >> linewidth) its one-sided PSD is
    ``(A^2/2) (linewidth / 2 pi) / (f - f_p)^2``. The part inside the quantum band passes the
    matched filter like shot noise does; it cannot be tracked by any pilot filter (it is phase
    noise at tens of MHz, buried in shot noise), so it is a floor of every pilot-aided receiver
    that an oracle subtracting the true pilot does not see:

        xi_tail = fs / (2 Rs sigma_s^2 t^2) * integral S_tail(f) |H_rrc(f - f_mix)|^2 df

    with ``sigma_s^2`` the shot-noise variance per ADC sample (codes^2) and ``t`` the
    per-quadrature gain. Returns 0 for linewidth 0.
    """
    from dsp.rrc import rrc_frequency_response

    if linewidth_hz <= 0:
        return 0.0
    w = symbol_rate_hz * (1 + rolloff) / 2
    f = np.linspace(-w, w, 20001)
    h2 = rrc_frequency_response(f, symbol_rate_hz, rolloff) ** 2
    total = 0.0
    for a, fp in zip(pilot_amplitudes, pilot_frequencies_hz, strict=True):
        off = (mixer_hz - fp) + f           # distance of each in-band frequency from the pilot
        s = (a * a / 2) * (linewidth_hz / (2 * math.pi)) / (off**2 + (linewidth_hz / 2) ** 2)
        total += float(np.sum(s * h2) * (f[1] - f[0]))
    return total * fs / (2 * symbol_rate_hz * shot_noise_var * t_eff**2)
