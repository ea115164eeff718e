"""The streaming CV-QKD receiver: acquisition on a head segment, then one pass over the chunks.

Chain (all on raw ADC codes, arrays in / arrays out, no file I/O), one module per stage:

1. ``lock``: pilot search on the head (``acquisition``: coarse periodogram peak, fine phase
   slope, pilot SNR, phase-noise statistics) -> carrier filter design (``carrier``, refined on
   the head by the chosen tracker of ``trackers``), matched-filter bank, synchronisation
   (FFT cross-correlation + fractional refinement) and the head's clock offset (``timing``);
2. ``clock``: late probes of the recording measure the symbol-clock offset with a long lever;
3. ``stream``: pilot down-conversion + block averaging and the streaming phase tracker
   (``pilot``, ``trackers``), the matched filter at the fractional symbol instants de-rotated
   by the interpolated pilot phase (``matched_filter``), and the data-aided timing loop over
   fixed symbol blocks (``timing``);
4. ``noise``: shot-/electronic-noise captures through the very same bank;
5. ``pe``: disclosure of a PE subset and rotation-invariant pair statistics.

This module re-exports the public names of those stages for ``from dsp.pipeline import X``.
"""

from __future__ import annotations

from dsp.clock import (
    PROBE_FLOOR_PPM,
    PROBE_MARGIN_FRACTION,
    probe_range,
    refine_clock,
    refine_clock_chain,
)
from dsp.lock import Acquisition, acquire
from dsp.noise import NoiseMeter, NoiseStats
from dsp.options import LinkParameters, ReceiverOptions
from dsp.pilot import PILOT_LOSS_FRACTION, PILOT_MONITOR_BLOCKS, PilotStage
from dsp.stream import SignalStream
from dsp.timing import TIMING_GAINS, TIMING_OFFSETS, TIMING_STRIDE
from dsp.vocabulary import DETECTIONS

__all__ = ["DETECTIONS", "PILOT_LOSS_FRACTION", "PILOT_MONITOR_BLOCKS", "PROBE_FLOOR_PPM",
           "PROBE_MARGIN_FRACTION", "TIMING_GAINS", "TIMING_OFFSETS", "TIMING_STRIDE",
           "Acquisition", "LinkParameters", "NoiseMeter", "NoiseStats", "PilotStage",
           "ReceiverOptions", "SignalStream", "acquire", "probe_range", "refine_clock",
           "refine_clock_chain"]
