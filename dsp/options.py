"""What the receiver knows about the link (``LinkParameters``) and its settings
(``ReceiverOptions``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from dsp.trackers import PHASE_METHODS
from dsp.vocabulary import DEFAULT_PILOT_SEARCH_HZ, DETECTIONS

__all__ = ["DEFAULT_SPANS", "LinkParameters", "ReceiverOptions"]

#: default matched-filter span (symbol periods) of the least-squares taps, from the roll-off
#: up: (roll-off, span) breakpoints, a roll-off takes the span of the breakpoint at or below
#: it. Each is the shortest span whose taps leave V_A ISI < 0.01 mSNU (V_A 5), a mismatch loss
#: < 5e-4 and a stop band < -80 dB from 0.15 Rs beyond the band edge (benchmarks/mf_span.py;
#: the Kaiser-tapered RRC it replaced needed ~2x the span for 0.02-0.12 mSNU of ISI).
DEFAULT_SPANS = ((0.1, 28), (0.2, 16), (0.35, 14), (0.5, 12))


@dataclass(frozen=True)
class LinkParameters:
    """What the receiver knows about the link (from ``/tx`` and the ADC attributes)."""

    sample_rate_hz: float
    symbol_rate_hz: float
    rolloff: float
    signal_frequency_hz: float
    pilot_frequencies_hz: tuple[float, ...]
    modulation_variance_snu: float
    efficiency: float
    detection: str
    n_symbols: int

    def __post_init__(self) -> None:
        if self.detection not in DETECTIONS:
            raise ValueError(f"detection must be one of {DETECTIONS}, got {self.detection!r}")
        if not self.sample_rate_hz / self.symbol_rate_hz >= 2:
            raise ValueError("need >= 2 samples per symbol, got "
                             f"{self.sample_rate_hz / self.symbol_rate_hz:.3g}")
        if not 0 < self.rolloff <= 1:
            raise ValueError(f"rolloff must be in (0, 1], got {self.rolloff!r}")
        if len(self.pilot_frequencies_hz) < 1:
            raise ValueError("at least one pilot frequency is needed")

    @property
    def samples_per_symbol(self) -> float:
        return self.sample_rate_hz / self.symbol_rate_hz


@dataclass(frozen=True)
class ReceiverOptions:
    """Receiver settings (defaults are what ``qkd-hw process`` uses).

    pilot_search_hz : half-width of the laser-offset search (Hz).
    pilot_snr_min_db : lock threshold on the pilot periodogram peak-to-median ratio (dB).
    sync_pslr_min : lock threshold on the correlation peak-to-mean-side-lobe power ratio; for
        pure noise the largest of N lags is ~ln N (~14 for 1e6 lags), so 30 leaves a margin.
    sync_symbols : Alice symbols used for the synchronisation (head).
    sync_max_delay_samples : largest start of the first symbol searched (samples).
    span_symbols, n_phases, taper : matched-filter length (symbol periods; None = auto from
        the roll-off, see ``span``), polyphase resolution (phases per sample) and taps: None =
        the least-squares design (``dsp.rrc.ls_matched_taps``), a number = the truncated RRC
        under a Kaiser window of that beta (0 = plain truncation).
    phase_method : one of PHASE_METHODS (the registered trackers, ``dsp.trackers``); default
        "kalman-rts" (Kalman filter + RTS smoother, the lowest penalty in
        benchmarks/dsp_penalty.md).
    pilot_bandwidth_hz : force the pilot filter bandwidth (default: optimum from the data).
    linewidth_floor_hz : smallest linewidth the filter design assumes (Hz).
    max_pilot_window_s : longest pilot filter duration (s), used when no phase noise shows.
    clock_tracking : estimate/track the symbol-clock offset (else nominal rate).
    clock_search_ppm : largest clock offset the late probe searches for.
    first_order_phase : correct the carrier phase to first order inside the matched-filter
        window (``matched_filter.matched_filter_at(first_order=True)``), for strong phase noise.
    """

    pilot_search_hz: float = DEFAULT_PILOT_SEARCH_HZ
    pilot_snr_min_db: float = 20.0
    sync_pslr_min: float = 30.0
    sync_symbols: int = 16384
    sync_max_delay_samples: int = 1 << 20
    span_symbols: int | None = None
    n_phases: int = 256
    taper: float | None = None
    phase_method: str = "kalman-rts"
    pilot_bandwidth_hz: float | None = None
    linewidth_floor_hz: float = 1.0
    max_pilot_window_s: float = 20e-6
    clock_tracking: bool = True
    clock_search_ppm: float = 100.0
    first_order_phase: bool = False

    def __post_init__(self) -> None:
        if self.phase_method not in PHASE_METHODS:
            raise ValueError(f"phase_method must be one of {PHASE_METHODS}, "
                             f"got {self.phase_method!r}")
        for name in ("sync_symbols", "sync_max_delay_samples", "n_phases"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not self.pilot_search_hz > 0:
            raise ValueError(f"pilot_search_hz must be > 0, got {self.pilot_search_hz!r}")

        if self.span_symbols is not None and int(self.span_symbols) < 2:
            raise ValueError(f"span_symbols must be >= 2 or None (auto), got "
                             f"{self.span_symbols!r}")
        if self.taper is not None and not self.taper >= 0:
            raise ValueError(f"taper must be >= 0, got {self.taper!r}")

    def span(self, rolloff: float) -> int:
        """Matched-filter span (symbol periods): ``span_symbols`` or, by default, the span of
        the ``DEFAULT_SPANS`` breakpoint at or below the roll-off (below the first one,
        ``2.8 / rolloff`` rounded up to even, at most 96)."""
        if self.span_symbols is not None:
            return int(self.span_symbols)
        if rolloff < DEFAULT_SPANS[0][0]:
            s = math.ceil(min(2.8 / rolloff, 96))   # min first: no overflow for tiny roll-offs
            return int(min(s + (s % 2), 96))
        return next(span for b, span in reversed(DEFAULT_SPANS) if rolloff >= b)

    def head_samples(self, link: LinkParameters) -> int:
        """Samples of the signal capture the acquisition needs."""
        sps = link.samples_per_symbol
        k = min(self.sync_symbols, link.n_symbols)
        return int(self.sync_max_delay_samples + (k + self.span(link.rolloff) + 4) * sps)
