"""Shared vocabulary and defaults of the link, defined once.

``dsp`` is the leaf package every other one may import, so the names that the receiver, the
key-rate code, the simulator, the CLI and the benchmarks share live here.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["DEFAULT_BETA", "DEFAULT_EPS_BAR", "DEFAULT_EPS_PA", "DEFAULT_EPS_PE",
           "DEFAULT_PILOT_SEARCH_HZ", "DETECTIONS", "HETERODYNE", "HOMODYNE",
           "PARALLEL_MIN_SYMBOLS", "TIMING_BLOCK_SYMBOLS", "TIMING_CORR_MIN_N", "Detection"]

#: detection schemes: heterodyne measures both quadratures, homodyne one
HETERODYNE = "heterodyne"
HOMODYNE = "homodyne"
#: the detection scheme as a type (its values are DETECTIONS)
Detection = Literal["heterodyne", "homodyne"]
DETECTIONS: tuple[str, ...] = get_args(Detection)
#: failure probability of parameter estimation
DEFAULT_EPS_PE = 1e-10
#: failure probability of privacy amplification (finite-size key rate, Leverrier 2010)
DEFAULT_EPS_PA = 1e-10
#: smoothing parameter of the smooth min-entropy (finite-size key rate)
DEFAULT_EPS_BAR = 1e-10
#: reconciliation efficiency
DEFAULT_BETA = 0.95
#: half-width of the laser-offset search of the pilot acquisition (Hz)
DEFAULT_PILOT_SEARCH_HZ = 50e6
#: symbols per block of the streaming data-aided timing loop (one update per block)
TIMING_BLOCK_SYMBOLS = 1 << 18
#: a timing block steers the loop only if ``|rho|^2 n`` (its correlation with Alice's
#: symbols, ~1 without signal) reaches this: 6 sigma of the no-signal value
TIMING_CORR_MIN_N = 36.0
#: matched-filter calls with fewer symbols run serially (waking the thread pool costs more)
PARALLEL_MIN_SYMBOLS = 1 << 13
