"""Carrier-phase trackers behind one protocol (``dsp.trackers.base.PhaseTracker``).

A tracker is one module here (design dataclass, ``design``/``refine`` functions, streaming
class, its kernels) and one entry of ``TRACKERS``; ``PHASE_METHODS`` (the CLI's
``--phase-method`` choices) is the registry's keys.
"""

from __future__ import annotations

from dsp.trackers.base import (
    DesignInputs,
    HeadPilot,
    PhaseTracker,
    PilotFilterDesign,
    TrackerKind,
    keep_design,
)
from dsp.trackers.boxcar import BoxcarTracker, design_boxcar
from dsp.trackers.kalman import KalmanRtsTracker, KalmanTracker, design_kalman, refine_kalman

__all__ = ["PHASE_METHODS", "TRACKERS", "DesignInputs", "HeadPilot", "PhaseTracker",
           "PilotFilterDesign", "TrackerKind", "make_tracker", "tracker_kind"]

TRACKERS: dict[str, TrackerKind] = {
    "fir": TrackerKind(design=design_boxcar, refine=keep_design, tracker=BoxcarTracker),
    "kalman": TrackerKind(design=design_kalman, refine=refine_kalman, tracker=KalmanTracker),
    "kalman-rts": TrackerKind(design=design_kalman, refine=refine_kalman,
                              tracker=KalmanRtsTracker),
}
PHASE_METHODS: tuple[str, ...] = tuple(TRACKERS)


def tracker_kind(method: str) -> TrackerKind:
    """The registered tracker ``method`` (ValueError naming the choices otherwise)."""
    try:
        return TRACKERS[method]
    except KeyError:
        raise ValueError(f"phase method must be one of {PHASE_METHODS}, got {method!r}") from None


def make_tracker(design: PilotFilterDesign) -> PhaseTracker:
    """A fresh streaming tracker for ``design`` (of the tracker named ``design.method``)."""
    return tracker_kind(design.method).tracker(design)
