"""Carrier-phase recovery from the pilot: filter design and the streaming phase trackers.

The pilot phasors are block averages over D samples (``dsp.pilot.pilot_decimate``); the phase
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

The trackers themselves (boxcar ``"fir"``, Kalman ``"kalman"``, Kalman + RTS smoother
``"kalman-rts"``) live in ``dsp.trackers``, one module each behind one protocol; this module
computes what all their designs share and dispatches to the registered tracker.
"""

from __future__ import annotations

import math

import numpy as np

from dsp.trackers import PHASE_METHODS, DesignInputs, PilotFilterDesign, make_tracker, tracker_kind
from dsp.trackers.kalman import KalmanDesign, rts_lengths

__all__ = ["PHASE_METHODS", "KalmanDesign", "PilotFilterDesign", "design_pilot_filter",
           "make_tracker", "pilot_block_guard", "pilot_leakage_floor", "rts_lengths"]


def pilot_block_guard(fs: float, *, pilot_frequencies_hz, signal_frequency_hz: float,
                      symbol_rate_hz: float, rolloff: float) -> int:
    """Shortest pilot block (samples) that keeps the quantum band out of the Kalman tracker's
    pilot phasors: ``ceil(fs / gap)``, gap = the smallest distance from a pilot to the band
    (for pilot and band inside (0, fs/2) the band's images at ``-f_sig`` and ``fs - f_sig``
    are never nearer).

    A block average of D samples is a sinc filter with its first null at ``fs / D``; with
    ``D >= fs / gap`` the whole band lies beyond it, in the side lobes. Shorter blocks let the
    band into every pilot phase measurement, as a phase error correlated with the quantum
    signal that the de-rotation then writes back into it as excess noise (figures in
    benchmarks/README.md). Applied by the Kalman trackers only; the boxcar keeps its
    8-blocks-per-window design (its window averages M blocks).
    """
    edge = (1 + rolloff) * symbol_rate_hz / 2
    gaps = [abs(fp - signal_frequency_hz) - edge for fp in pilot_frequencies_hz]
    gap = max(min(gaps), fs / 4096)
    return math.ceil(fs / gap)


def design_pilot_filter(fs: float, *, phase_noise_var: float, acq_decimation: int,
                        linewidth_hz: float, method: str = "fir",
                        bandwidth_hz: float | None = None, linewidth_floor_hz: float = 1.0,
                        max_window_s: float = 20e-6, min_window_s: float = 16e-9,
                        blocks_per_window: int = 8,
                        min_block_samples: int = 1,
                        pilot_cycles: tuple[float, ...] = ()) -> PilotFilterDesign:
    """The design of tracker ``method`` from the pilot statistics: the filter duration tau
    (optimum above, or ``1 / bandwidth_hz``) and the boxcar block length here, the rest by the
    tracker's own ``design`` (``dsp.trackers``).

    Parameters
    ----------
    fs : float
        Sample rate, Hz.
    phase_noise_var : float
        Pilot phase-noise variance per ``acq_decimation``-sample block, rad^2.
    linewidth_hz : float
        Estimated combined laser linewidth, Hz (floored at ``linewidth_floor_hz``).
    method : str
        One of ``PHASE_METHODS``.
    bandwidth_hz : float, optional
        Force the boxcar bandwidth 1/tau instead of the optimum.
    min_block_samples : int
        Shortest pilot block D (``pilot_block_guard``) for the trackers that apply it.
    pilot_cycles : tuple of float
        The pilots' frequencies over fs (the Kalman-RTS overlap keeps its hop long enough to
        tell them apart).

    Returns
    -------
    PilotFilterDesign
        The tracker's design dataclass (e.g. ``KalmanDesign``).
    """
    kind = tracker_kind(method)
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
    inputs = DesignInputs(fs=fs, phase_noise_var=phase_noise_var, acq_decimation=acq_decimation,
                          linewidth_hz=lw, dphi=dphi, c_n=c_n, tau=tau,
                          decimation=max(8, int(tau * fs / blocks_per_window)),
                          min_block_samples=int(min_block_samples),
                          pilot_cycles=tuple(float(c) for c in pilot_cycles))
    return kind.design(method, inputs)


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
