"""The phase-tracker protocol and the design fields every tracker shares.

A tracker turns pilot block phasors (``dsp.pilot.pilot_decimate``, blocks of D samples) into
a continuous carrier phase on the grid of block centres ``j D + (D-1)/2``. Each tracker is one
module of ``dsp.trackers`` holding a design dataclass (``PilotFilterDesign`` plus its own
fields), a ``design`` function and the streaming class; ``dsp.trackers.TRACKERS`` registers
it under its ``method`` name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

__all__ = ["DesignInputs", "HeadPilot", "PhaseTracker", "PilotFilterDesign", "TrackerKind",
           "common_fields", "keep_design"]


@dataclass(frozen=True)
class PilotFilterDesign:
    """Design fields of every phase tracker.

    method : registry name of the tracker; decimation : samples per pilot block D;
    window : filter duration in blocks (odd; the boxcar's window); tau_s : filter duration (s);
    bandwidth_hz : 1/tau; predicted_phase_var : expected phase-error variance (rad^2) of a
    boxcar of this duration; linewidth_used_hz : linewidth of the design (floored).
    """

    method: str
    decimation: int
    window: int
    tau_s: float
    bandwidth_hz: float
    predicted_phase_var: float
    linewidth_used_hz: float


@dataclass(frozen=True)
class DesignInputs:
    """What every tracker's design starts from (``dsp.carrier.design_pilot_filter``).

    fs : sample rate (Hz); phase_noise_var : pilot phase-noise variance per ``acq_decimation``
    samples (rad^2); dphi : phase diffusion ``2 pi linewidth`` (rad^2/s); c_n : pilot noise
    ``phase_noise_var acq_decimation / fs`` (rad^2 s); tau : optimal (or forced) filter
    duration, clipped (s); decimation : the boxcar's block length ``tau fs / blocks_per_window``
    (>= 8); min_block_samples : shortest block that keeps the quantum band out of the pilot
    phasors (``dsp.carrier.pilot_block_guard``); pilot_cycles : the pilots' mixing frequencies
    (cycles per sample; a hop of overlapping blocks must keep them apart).
    """

    fs: float
    phase_noise_var: float
    acq_decimation: int
    linewidth_hz: float
    dphi: float
    c_n: float
    tau: float
    decimation: int
    min_block_samples: int
    pilot_cycles: tuple[float, ...] = ()


def common_fields(method: str, inputs: DesignInputs, D: int) -> dict:
    """The ``PilotFilterDesign`` fields for block length D: the window is the odd number of
    blocks nearest to tau, the filter duration and the boxcar's predicted error follow."""
    fs = inputs.fs
    M = max(1, round(inputs.tau * fs / D))
    if M % 2 == 0:
        M += 1
    tau_eff = M * D / fs
    return {"method": method, "decimation": D, "window": M, "tau_s": tau_eff,
            "bandwidth_hz": 1 / tau_eff,
            "predicted_phase_var": inputs.c_n / tau_eff + inputs.dphi * tau_eff / 12,
            "linewidth_used_hz": inputs.linewidth_hz}


@dataclass(frozen=True)
class HeadPilot:
    """The head of the signal capture as a tracker's design may use it: its length and the
    combined pilot phasors of its whole blocks of D samples (``phasors(D)``)."""

    samples: int
    phasors: Callable[[int], np.ndarray]


class PhaseTracker(Protocol):
    """Streaming carrier phase from pilot block phasors (state carried across pushes).

    ``push(z)`` appends the phasors of the next blocks and returns ``(j0, phases)``: the
    unwrapped phase of blocks ``j0 .. j0+len-1`` that are final (need no further input);
    ``flush()`` returns the rest at the end of the data. Outputs must not depend on how the
    phasors are split into pushes.
    """

    design: PilotFilterDesign

    def push(self, z: np.ndarray) -> tuple[int, np.ndarray]: ...

    def flush(self) -> tuple[int, np.ndarray]: ...

    def latency_blocks(self) -> int:
        """Most blocks pushed but not yet returned (before ``flush``)."""
        ...


@dataclass(frozen=True)
class TrackerKind:
    """A registered tracker: ``design`` chooses its parameters from the pilot statistics,
    ``refine`` may re-measure them on the head (at the design's own block length; returns the
    design unchanged when it has nothing to measure), ``tracker`` builds the streaming tracker.
    """

    design: Callable[[str, DesignInputs], PilotFilterDesign]
    refine: Callable[[PilotFilterDesign, HeadPilot], PilotFilterDesign]
    tracker: Callable[[PilotFilterDesign], PhaseTracker]


def keep_design(design: PilotFilterDesign, head: HeadPilot) -> PilotFilterDesign:
    """``TrackerKind.refine`` of a tracker that measures nothing on the head."""
    return design

