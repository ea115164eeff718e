"""The streaming CV-QKD receiver: acquisition on a head segment, then one pass over the chunks.

Chain (all on raw ADC codes, arrays in / arrays out, no file I/O):

1. pilot search on the head: coarse (periodogram peak), fine (phase slope) frequency offset,
   pilot SNR, pilot phase-noise statistics -> carrier filter design (``carrier``);
2. pilot down-conversion + block averaging (``kernels.pilot_decimate``) and the streaming
   phase tracker (boxcar or Kalman/RTS), phase-continuous across chunks;
3. matched filter evaluated only at the fractional symbol instants (polyphase RRC x mixer,
   unit-energy taps), de-rotated by the interpolated pilot phase at the same instant;
4. synchronisation on the head (FFT cross-correlation + fractional refinement), symbol clock
   offset from the timing drift across the head, and a data-aided timing tracker over fixed
   symbol blocks in the streaming pass;
5. shot-/electronic-noise captures through the very same bank (``NoiseMeter``);
6. disclosure of a PE subset and rotation-invariant pair statistics (``pe``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from dsp.acquisition import (
    PilotAcquisition,
    SyncResult,
    _line_fit,
    _structure_fit,
    acquire_pilot,
    check_search_range,
    synchronise,
)
from dsp.carrier import (
    PHASE_METHODS,
    PhaseTracker,
    PilotFilterDesign,
    design_pilot_filter,
    pilot_block_guard,
    rts_lengths,
)
from dsp.errors import DspLockError
from dsp.kernels import cdot, matched_filter_at, pilot_decimate, symbol_sample_range
from dsp.rrc import MatchedFilterBank

__all__ = ["DETECTIONS", "Acquisition", "LinkParameters", "NoiseMeter", "NoiseStats",
           "ReceiverOptions", "SignalStream", "acquire", "probe_range", "refine_clock",
           "refine_clock_chain"]

DETECTIONS = ("heterodyne", "homodyne")
#: timing loop: every 16th symbol of a block enters the timing fit; loop gains (proportional on
#: the instant, integral on the period) give a residual jitter ~0.4 x the per-block fit error.
TIMING_STRIDE = 16
TIMING_GAINS = (0.3, 0.05)


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
    span_symbols, n_phases, taper : matched-filter truncation (symbol periods; None = auto from
        the roll-off, see ``span``), polyphase resolution (phases per sample) and Kaiser taper
        beta (0 = plain truncation).
    phase_method : one of PHASE_METHODS ("fir", "kalman", "kalman-rts"); default "kalman-rts"
        (Kalman filter + RTS smoother, the lowest penalty in benchmarks/dsp_penalty.md).
    pilot_bandwidth_hz : force the pilot filter bandwidth (default: optimum from the data).
    clock_tracking : estimate/track the symbol-clock offset (else nominal rate).
    clock_search_ppm : largest clock offset the late probe searches for.
    first_order_phase : correct the carrier phase to first order inside the matched-filter
        window (``kernels.matched_filter_at(first_order=True)``), for strong phase noise.
    timing_block_symbols : symbols per block of the data-aided timing tracker.
    """

    pilot_search_hz: float = 50e6
    pilot_snr_min_db: float = 20.0
    sync_pslr_min: float = 30.0
    sync_symbols: int = 16384
    sync_max_delay_samples: int = 1 << 20
    span_symbols: int | None = None
    n_phases: int = 256
    taper: float = 5.0
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
        if not self.taper >= 0:
            raise ValueError(f"taper must be >= 0, got {self.taper!r}")

    def span(self, rolloff: float) -> int:
        """Matched-filter span (symbol periods): ``span_symbols`` or, by default,
        ``6.4 / rolloff`` rounded up to even and clipped to [24, 96]. With the Kaiser taper
        (beta 5) this keeps the truncation ISI below ~0.15 mSNU x V_A/5 and the stop band
        (pilot leakage) below -68 dB for roll-offs 0.1-0.5."""
        if self.span_symbols is not None:
            return int(self.span_symbols)
        s = math.ceil(min(6.4 / rolloff, 96))   # min first: no overflow for tiny roll-offs
        return int(min(max(s + (s % 2), 24), 96))

    def head_samples(self, link: LinkParameters) -> int:
        """Samples of the signal capture the acquisition needs."""
        sps = link.samples_per_symbol
        k = min(self.sync_symbols, link.n_symbols)
        return int(self.sync_max_delay_samples + (k + self.span(link.rolloff) + 4) * sps)


@dataclass(frozen=True)
class Acquisition:
    """Everything the acquisition found; the streaming pass starts from it."""

    link: LinkParameters
    options: ReceiverOptions
    pilot: PilotAcquisition
    carrier: PilotFilterDesign
    sync: SyncResult
    mixer_hz: float
    tau0: float                 # instant of tx symbol 0 (absolute samples)
    period: float               # symbol period (samples), incl. clock offset
    clock_offset_ppm: float
    clock_offset_std_ppm: float
    bank: MatchedFilterBank = field(repr=False)
    #: late clock probes so far, ``(first_sample, ppm, ppm_std)`` each (``refine_clock``)
    clock_probes: tuple[tuple[int, float, float], ...] = ()

    @property
    def lock_metrics(self) -> dict[str, float]:
        return {"pilot_snr_db": min(self.pilot.pilot_snr_db),
                "pilot_snr_min_db": self.options.pilot_snr_min_db,
                "sync_pslr": self.sync.pslr, "sync_pslr_db": self.sync.pslr_db,
                "sync_pslr_min": self.options.sync_pslr_min}


def _combined_pilot(x, link, pilot: PilotAcquisition, offset: float, D: int, n0: int, j0: int,
                    nj: int) -> np.ndarray:
    fs = link.sample_rate_hz
    z = None
    for fp, w in zip(link.pilot_frequencies_hz, pilot.pilot_weights, strict=True):
        zp = pilot_decimate(x, fs, frequency_hz=fp + offset, decimation=D, first_sample=n0,
                            first_block=j0, n_blocks=nj)
        if w != 1:
            zp *= w
        if z is None:
            z = zp
        else:
            z += zp
    return z


def _kalman_noise(x, link, pilot, carrier: PilotFilterDesign) -> PilotFilterDesign:
    """Observation noise r of the Kalman tracker measured at its own block length D: short
    blocks let part of the quantum band through, which the acquisition's long blocks hide."""
    D = carrier.decimation
    nj = x.shape[0] // D
    max_lag = 16
    if nj < 4 * max_lag:
        raise DspLockError("recording too short: the Kalman tracker's noise fit needs "
                           f"{4 * max_lag} pilot blocks of {D} samples in the head, it has {nj}",
                           {"head_samples": float(x.shape[0]), "pilot_blocks": float(nj)})
    z = _combined_pilot(x, link, pilot, pilot.frequency_offset_hz, D, 0, 0, nj)
    ph = np.unwrap(np.angle(z))
    r, _ = _structure_fit(ph, max_lag=max_lag)
    r = r if r > 1e-12 else 1e-12   # the fit's intercept can come out <= 0 at large linewidths
    block, lookahead = rts_lengths(carrier.q, r)
    return replace(carrier, r=r, rts_block=block, rts_lookahead=lookahead)


def _head_phase(x, link, pilot, carrier,
                first_sample: int = 0) -> tuple[float, float, np.ndarray]:
    """Carrier phase over a segment whose ``x[0]`` is absolute sample ``first_sample``, on a
    grid relative to ``x[0]`` (the matched filter is then called with ``first_sample=0``).
    The pilot oscillators run on absolute time: with several pilots the combining weights
    (relative pilot phases measured on the head) only hold on that time base."""
    D = carrier.decimation
    n0 = int(first_sample)
    j0 = -(-n0 // D)
    nj = (n0 + x.shape[0]) // D - j0
    z = _combined_pilot(x, link, pilot, pilot.frequency_offset_hz, D, n0, j0, nj)
    tr = PhaseTracker(carrier)
    parts = [tr.push(z)[1], tr.flush()[1]]
    return j0 * D + (D - 1) / 2 - n0, float(D), np.concatenate(parts)


def acquire(head: np.ndarray, alice: np.ndarray, link: LinkParameters,
            options: ReceiverOptions | None = None) -> Acquisition:
    """Lock on the head of the signal capture.

    Parameters
    ----------
    head : ndarray, shape (n,)
        First samples of the signal capture (ADC codes), ``options.head_samples(link)`` or all.
    alice : ndarray, shape (k,)
        Alice's first symbols (complex, SNU), k >= 1.

    Raises
    ------
    DspLockError
        Pilot not found / synchronisation failed (with the lock metrics).
    """
    opt = options or ReceiverOptions()
    fs = link.sample_rate_hz
    check_search_range(fs, pilot_frequencies_hz=link.pilot_frequencies_hz,
                       signal_frequency_hz=link.signal_frequency_hz,
                       symbol_rate_hz=link.symbol_rate_hz, rolloff=link.rolloff,
                       search_hz=opt.pilot_search_hz)
    pilot = acquire_pilot(head, fs, pilot_frequencies_hz=link.pilot_frequencies_hz,
                          search_hz=opt.pilot_search_hz, snr_min_db=opt.pilot_snr_min_db)
    carrier = design_pilot_filter(fs, phase_noise_var=pilot.phase_noise_var,
                                  acq_decimation=pilot.decimation, linewidth_hz=pilot.linewidth_hz,
                                  method=opt.phase_method, bandwidth_hz=opt.pilot_bandwidth_hz,
                                  linewidth_floor_hz=opt.linewidth_floor_hz,
                                  max_window_s=opt.max_pilot_window_s,
                                  min_block_samples=pilot_block_guard(
                                      fs, pilot_frequencies_hz=link.pilot_frequencies_hz,
                                      signal_frequency_hz=link.signal_frequency_hz,
                                      symbol_rate_hz=link.symbol_rate_hz, rolloff=link.rolloff))
    if carrier.method != "fir":
        carrier = _kalman_noise(head, link, pilot, carrier)
    mixer = link.signal_frequency_hz + pilot.frequency_offset_hz
    bank = MatchedFilterBank(samples_per_symbol=link.samples_per_symbol, rolloff=link.rolloff,
                             span_symbols=opt.span(link.rolloff), n_phases=opt.n_phases,
                             mixer_cycles_per_sample=mixer / fs, taper=opt.taper)
    phase = _head_phase(head, link, pilot, carrier)
    k = min(opt.sync_symbols, link.n_symbols, alice.shape[0])
    try:
        sync = synchronise(head, fs, alice=np.asarray(alice[:k], np.complex128), bank=bank,
                           period=link.samples_per_symbol, symbol_rate_hz=link.symbol_rate_hz,
                           rolloff=link.rolloff, mixer_hz=mixer, phase=phase,
                           max_delay=opt.sync_max_delay_samples, pslr_min=opt.sync_pslr_min)
    except DspLockError as exc:   # report the (good) pilot metrics along with the sync ones
        metrics = {"pilot_snr_db": min(pilot.pilot_snr_db),
                   "pilot_snr_min_db": opt.pilot_snr_min_db,
                   "frequency_offset_hz": pilot.frequency_offset_hz, **exc.metrics}
        raise DspLockError(exc.reason, metrics) from exc
    period = link.samples_per_symbol
    ppm, ppm_std = 0.0, math.inf
    if opt.clock_tracking:
        ppm, ppm_std = _clock_offset(head, alice, sync, bank, period, phase)
        if abs(ppm) < 3 * ppm_std:   # not significant: keep the nominal clock
            ppm = 0.0
    period_eff = period / (1 + ppm * 1e-6)
    # the sync fit assumed the nominal period: it lands (K-1)/2 * dP late (see refine_clock)
    tau0 = sync.tau0 - (sync.sync_symbols - 1) / 2 * (period_eff - period)
    return Acquisition(link=link, options=opt, pilot=pilot, carrier=carrier, sync=sync,
                       mixer_hz=mixer, tau0=tau0, period=period_eff,
                       clock_offset_ppm=ppm, clock_offset_std_ppm=ppm_std, bank=bank)


#: a probe's search margin is at most this fraction of its sync window (so its memory does not
#: grow with the recording); a farther probe waits for a narrower clock estimate
PROBE_MARGIN_FRACTION = 0.25
#: a later probe searches 10 sd of the previous clock estimate around it, but at least this
#: (a real clock wanders; the estimate's statistics alone would allow a few samples)
PROBE_FLOOR_PPM = 1.0


def _probe_search_ppm(acq: Acquisition) -> float:
    """Clock offset (ppm) the next probe must allow for around ``acq.period``: the whole
    ``clock_search_ppm`` until a probe measured the clock, then 10 sd of that measurement."""
    opt = acq.options
    if not acq.clock_probes:
        return float(opt.clock_search_ppm)
    return min(float(opt.clock_search_ppm),
               max(10.0 * acq.clock_offset_std_ppm, PROBE_FLOOR_PPM))


def _probe_margin(acq: Acquisition, position: float) -> int:
    """Search margin (samples) either side of the predicted instant of a probe reaching to
    absolute sample ``position``."""
    return (int(_probe_search_ppm(acq) * 1e-6 * position) + 4 * int(acq.link.samples_per_symbol)
            + acq.bank.half)


def probe_range(acq: Acquisition, signal_length: int) -> tuple[int, int] | None:
    """Samples ``[start, stop)`` of the signal capture to read for the next ``refine_clock``:
    Alice's sync symbols as late in the recording as the search margin allows, or None when
    no probe would add to what the acquisition knows.

    The margin is the clock uncertainty times the position (``clock_search_ppm`` before any
    probe, 10 sd of the last measurement after), capped at ``PROBE_MARGIN_FRACTION`` of the
    window: so the window, and the memory of the probe, stay bounded for any recording
    length. A long recording gets a chain of probes, each reaching at least twice as far as
    the previous one (at 100 ppm, 10 samples per symbol and 16384 sync symbols the first stops
    near 4e8 samples; with its estimate, ~1e-4 ppm but floored at ``PROBE_FLOOR_PPM``, the
    second reaches 4e10 samples, 40 s at 1 GSa/s, where the chain ends: the lever arm then
    measures the clock to ~1e-6 ppm, and the timing loop follows any wander)."""
    opt, link = acq.options, acq.link
    sps = link.samples_per_symbol
    period = acq.period
    k = min(opt.sync_symbols, link.n_symbols)
    need = int((k + opt.span(link.rolloff) + 8) * sps)
    cap = int(PROBE_MARGIN_FRACTION * need)
    fixed = 4 * int(sps) + acq.bank.half
    u = _probe_search_ppm(acq) * 1e-6
    # latest first probe symbol: the recording's end, or where the margin reaches the cap
    last_k = link.n_symbols - k
    if u > 0:
        last_k = min(last_k, int(((cap - fixed) / u - acq.tau0 - need) / period))
    t_first = acq.tau0 + last_k * period      # predicted instant of the first probe symbol
    stop = min(signal_length, int(t_first + need))
    margin = _probe_margin(acq, stop)
    start = max(0, int(t_first) - margin)
    start = min(start, max(0, stop - need - 2 * margin))
    reached = max((p for p, _, _ in acq.clock_probes), default=0)
    if start < max(need, 2 * reached):   # no useful lever arm beyond what is known
        return None
    return start, stop


def refine_clock(acq: Acquisition, probe: np.ndarray, first_sample: int,
                 alice: Callable[[int, int], np.ndarray]) -> Acquisition:
    """Measure the symbol-clock offset from the timing of a late probe segment.

    The first probe symbol's instant is found by the same FFT correlation + fractional
    refinement as the head synchronisation; against the prediction ``tau0 + k sps`` it gives
    the clock offset with the lever arm of the whole recording (timing sd ~0.03 sample over
    1e7 samples -> ~0.003 ppm). Convention: ``clock_offset_ppm`` is what the simulator calls
    it, Bob's symbol period is ``sps / (1 + ppm 1e-6)`` samples. The search is centred on the
    instant ``acq`` predicts (its period may come from an earlier probe, see ``probe_range``);
    the measurement itself is always against the head synchronisation.

    Raises
    ------
    DspLockError
        If the probe cannot be synchronised (signal lost, or drift beyond the search range).
    """
    opt, link = acq.options, acq.link
    sps = link.samples_per_symbol
    fs = link.sample_rate_hz
    x = np.asarray(probe)
    margin = _probe_margin(acq, first_sample + x.shape[0])
    k0 = max(0, math.ceil((first_sample + margin - acq.tau0) / acq.period))
    k = min(opt.sync_symbols, link.n_symbols - k0,
            int((x.shape[0] - 2 * margin - acq.bank.half) / sps) - 2)
    if k < 256:
        return acq
    a = np.asarray(alice(k0, k0 + k), np.complex128)
    phase = _head_phase(x, link, acq.pilot, acq.carrier, first_sample)
    # Both timing fits assume the nominal period sps over their K symbols; a fit of symbols
    # 0..K-1 with a wrong period dP lands at the instant of symbol (K-1)/2 minus (K-1)/2 dP:
    # tau_meas(first) = tau_true(first) + (K-1)/2 dP. So the measured drift between the two
    # first symbols is (k0 + (K_p - K_h)/2) dP.
    kh = acq.sync.sync_symbols
    lever = k0 + (k - kh) / 2
    pred = acq.sync.tau0 + k0 * sps - first_sample   # where a nominal clock puts the fit
    expect = pred + lever * (acq.period - sps)        # where the current estimate puts it
    try:
        s = synchronise(x, fs, alice=a, bank=acq.bank, period=sps,
                        symbol_rate_hz=link.symbol_rate_hz, rolloff=link.rolloff,
                        mixer_hz=acq.mixer_hz, phase=phase,
                        max_delay=int(max(expect, 0) + margin), pslr_min=opt.sync_pslr_min)
    except DspLockError as exc:
        raise DspLockError("clock-offset probe failed: no correlation late in the recording",
                           {**acq.lock_metrics, "probe_first_sample": float(first_sample),
                            **exc.metrics}) from exc
    d_period = (s.tau0 - pred) / lever
    period = sps + d_period
    tau0 = acq.sync.tau0 - (kh - 1) / 2 * d_period
    ppm = (sps / period - 1) * 1e6
    std = math.hypot(s.timing_std_samples, acq.sync.timing_std_samples) / (lever * sps) * 1e6
    return replace(acq, period=period, tau0=tau0, clock_offset_ppm=ppm,
                   clock_offset_std_ppm=std,
                   clock_probes=(*acq.clock_probes, (int(first_sample), ppm, std)))


def refine_clock_chain(acq: Acquisition, signal_length: int,
                       read: Callable[[int, int], np.ndarray],
                       alice: Callable[[int, int], np.ndarray]) -> Acquisition:
    """``probe_range`` / ``refine_clock`` until no probe adds lever arm; ``read(start, stop)``
    returns those samples of the signal capture. One probe up to ~4e8 samples (see
    ``probe_range``), rarely more than two."""
    while (rng := probe_range(acq, signal_length)) is not None:
        n_probes = len(acq.clock_probes)
        acq = refine_clock(acq, read(*rng), rng[0], alice)
        if len(acq.clock_probes) == n_probes:    # too short a probe: nothing measured
            break
    return acq


def _timing_fit(x, a, bank, tau, period, k0, kk, phase, first_sample=0, stride=1):
    """Data-aided fractional timing of symbols k0, k0+stride, ... (kk of them, ``a`` their
    Alice symbols): parabola through |corr|^2 at tau + {-1/4, 0, +1/4} sample.

    Returns (delta_tau, |corr|^2 at 0, sum |y|^2 at 0)."""
    ys = [matched_filter_at(x, bank, first_sample=first_sample, tau0=tau + d + k0 * period,
                            period=period * stride, k_start=0, count=kk, phase=phase,
                            parallel=kk >= 1 << 13) for d in TIMING_OFFSETS]
    return _timing_parabola(a, *ys)


#: fractional timing offsets (samples) of the timing fits
TIMING_OFFSETS = (-0.25, 0.0, 0.25)


def _timing_parabola(a, y_early, y_mid, y_late) -> tuple[float, float, float]:
    """Vertex of the parabola through ``|sum conj(a) y|^2`` at the ``TIMING_OFFSETS``:
    (delta_tau, |corr|^2 at 0, sum |y_mid|^2)."""
    s = [abs(cdot(a, y)) ** 2 for y in (y_early, y_mid, y_late)]
    e = cdot(y_mid, y_mid).real
    den = s[0] - 2 * s[1] + s[2]
    if den >= 0:
        return 0.0, s[1], e
    return 0.25 * 0.5 * (s[0] - s[2]) / den, s[1], e


def _clock_offset(head, alice, sync: SyncResult, bank, period, phase) -> tuple[float, float]:
    """Clock offset (ppm) from the timing of 4 consecutive quarters of the sync symbols."""
    kk = sync.sync_symbols
    q = kk // 4
    if q < 256:
        return 0.0, math.inf
    a = np.asarray(alice[:kk], np.complex128)
    if sync.inverted:
        a = np.conj(a)
    ks, ds = [], []
    for i in range(4):
        d, _, _ = _timing_fit(head, a[i * q:(i + 1) * q], bank, sync.tau0, period, i * q, q,
                              phase)
        ks.append((i + 0.5) * q)
        ds.append(d)
    ks, ds = np.array(ks), np.array(ds)
    slope, icpt = _line_fit(ks, ds)
    res = ds - (icpt + slope * ks)
    s_res = max(float(np.sqrt(np.sum(res**2) / 2)), sync.timing_std_samples * 2)
    s_slope = s_res / math.sqrt(np.sum((ks - ks.mean()) ** 2))
    # instants drifting later (slope > 0) mean a longer period: ppm < 0 in the convention
    # period = sps / (1 + ppm 1e-6)
    return float(-slope / period * 1e6), float(s_slope / period * 1e6)


class _SampleBuffer:
    """Tail of the stream kept across chunks (overlap-save): samples [n0, n0 + len).

    ``append`` copies the chunk behind the kept tail in one reused backing array (no fresh
    allocation per chunk: its page faults cost as much as the copy), so the caller may reuse
    the chunk's memory afterwards. ``data`` is a view, valid until the next ``append``."""

    def __init__(self) -> None:
        self._store: np.ndarray | None = None
        self.data: np.ndarray | None = None
        self.n0 = 0
        self.n_end = 0

    def append(self, chunk: np.ndarray) -> None:
        chunk = np.asarray(chunk)
        if chunk.ndim != 1:
            raise ValueError(f"chunks must be 1-D, got shape {chunk.shape}")
        tail = self.data if self.data is not None else chunk[:0]
        if self.data is not None and chunk.dtype != self.data.dtype:
            raise ValueError(f"chunk dtype {chunk.dtype} differs from {self.data.dtype}")
        if tail.shape[0] == 0:
            self.n0 = self.n_end
        need = tail.shape[0] + chunk.shape[0]
        st = self._store
        if st is None or st.dtype != chunk.dtype or st.shape[0] < need:
            st = np.empty(max(need, 2 * chunk.shape[0]), chunk.dtype)
            st[:tail.shape[0]] = tail
            self._store = st
        elif tail.shape[0] and not np.shares_memory(tail, st[:1]):
            # the tail is a view into the store: move it to the front (numpy copies
            # overlapping ranges correctly)
            st[:tail.shape[0]] = tail
        st[tail.shape[0]:need] = chunk
        self.data = st[:need]
        self.n_end += chunk.shape[0]

    def adopt(self, store: np.ndarray, start: int) -> None:
        """Like ``append(store[start:])`` without copying the chunk: the kept tail is copied
        into ``store[:start]`` in front of it, and ``data`` becomes a view of ``store``, which
        the buffer then owns until the next ``append``/``adopt``. When the tail does not fit
        in ``store[:start]`` this falls back to ``append`` (a copy)."""
        store = np.asarray(store)
        start = int(start)
        if store.ndim != 1 or not 0 <= start <= store.shape[0]:
            raise ValueError(f"adopt needs a 1-D store and 0 <= start <= {store.shape[0]}, "
                             f"got shape {store.shape}, start {start}")
        if not store.flags.c_contiguous or not store.flags.writeable:
            raise ValueError("adopt needs a C-contiguous, writeable store")
        tail = self.data if self.data is not None else store[:0]
        if self.data is not None and store.dtype != self.data.dtype:
            raise ValueError(f"chunk dtype {store.dtype} differs from {self.data.dtype}")
        if tail.shape[0] > start:
            self.append(store[start:])
            return
        if tail.shape[0] == 0:
            self.n0 = self.n_end
        lo = start - tail.shape[0]
        store[lo:start] = tail      # (numpy copies correctly should the tail overlap it)
        self.data = store[lo:]
        self.n_end += store.shape[0] - start

    def trim(self, keep_from: int) -> None:
        if self.data is None:
            return
        cut = min(max(keep_from - self.n0, 0), self.data.shape[0])
        if cut:
            self.data = self.data[cut:]
            self.n0 += cut


@dataclass(frozen=True)
class NoiseStats:
    """Per-quadrature variance of a noise capture through the receiver chain (ADC codes^2)."""

    variance: float
    variance_std: float
    n_symbols: int


class NoiseMeter:
    """Shot-/electronic-noise capture through exactly the signal's matched filter bank
    (same mixer, taps, symbol period and fractional sampling phase; no carrier phase)."""

    def __init__(self, acq: Acquisition) -> None:
        self.acq = acq
        self.buf = _SampleBuffer()
        b = acq.bank
        # same fractional phase as the signal symbols, first instant with a full window
        self.tau = (acq.tau0 % 1.0) + b.half + 1
        self.k = 0
        self.sum2 = 0.0
        self.sum4 = 0.0
        self.count = 0

    def feed(self, chunk: np.ndarray) -> None:
        self.buf.append(chunk)
        a, b = self.acq, self.acq.bank
        khi = math.floor((self.buf.n_end - b.half - 2 - self.tau) / a.period) + 1
        if khi > self.k:
            y = matched_filter_at(self.buf.data, b, first_sample=self.buf.n0, tau0=self.tau,
                                  period=a.period, k_start=self.k, count=khi - self.k)
            p = (y.real.astype(np.float64) ** 2 + y.imag.astype(np.float64) ** 2) / 2
            self.sum2 += float(p.sum())
            self.sum4 += float((p * p).sum())
            self.count += p.shape[0]
            self.k = khi
        lo, _ = symbol_sample_range(b, self.tau, a.period, self.k)
        self.buf.trim(lo)

    def result(self) -> NoiseStats:
        if self.count < 2:
            raise ValueError(f"noise capture too short: {self.count} symbol instants")
        m = self.sum2 / self.count
        var_p = max(self.sum4 / self.count - m * m, 0.0)
        return NoiseStats(variance=m, variance_std=math.sqrt(var_p / self.count),
                          n_symbols=self.count)


#: pilot lock monitor: windows of this many pilot blocks (~1e5 samples at D = 25) ...
PILOT_MONITOR_BLOCKS = 4096
#: ... whose mean power below this fraction of the first window's (-10 dB) means the pilot
#: is lost (a fade the tracker rides through, e.g. polarisation, stays well above it)
PILOT_LOSS_FRACTION = 0.1


class PilotStage:
    """Pilot down-conversion and carrier tracker over the signal stream, apart from the
    matched filter: ``push(chunk)`` returns the tracker's ``(j0, phases)`` for the blocks that
    became final, ``flush()`` the rest. Keeps only the samples of the last incomplete pilot
    block (copied: the caller may reuse the chunk's memory), so the sample buffer of the
    matched filter need not hold samples for it. (Running it one chunk ahead in the reader
    thread was measured: no gain on 2 cores, where every kernel already uses both.)"""

    def __init__(self, acq: Acquisition) -> None:
        self.acq = acq
        self.link = acq.link
        self.D = acq.carrier.decimation
        self.tracker = PhaseTracker(acq.carrier)
        self.n_end = 0
        self.j_next = 0
        self._tail: np.ndarray | None = None   # samples [j_next D, n_end)
        #: wall seconds in "pilot" (down-conversion) and "phase" (tracker)
        self.seconds = {"pilot": 0.0, "phase": 0.0}
        # lock monitor: mean pilot power per window of PILOT_MONITOR_BLOCKS blocks (fixed
        # windows of absolute block index, so the verdict does not depend on the chunking)
        self._win_sum = 0.0
        self._win_count = 0
        self._win_index = 0
        self.reference_power: float | None = None   # the first window's (the head's)

    def _monitor(self, z: np.ndarray) -> None:
        """Raise DspLockError when a window's mean pilot power falls below
        PILOT_LOSS_FRACTION of the first window's: past that the tracker follows noise and
        every number after it would come from an unlocked receiver."""
        W, i = PILOT_MONITOR_BLOCKS, 0
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
        return _combined_pilot(x, self.link, self.acq.pilot, self.acq.pilot.frequency_offset_hz,
                               self.D, n0, j0, nj)

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
        self._monitor(z)
        t1 = time.perf_counter()
        out = self.tracker.push(z)
        self.seconds["pilot"] += t1 - t0
        self.seconds["phase"] += time.perf_counter() - t1
        return out

    def flush(self) -> tuple[int, np.ndarray]:
        t0 = time.perf_counter()
        out = self.tracker.flush()
        self.seconds["phase"] += time.perf_counter() - t0
        return out


class SignalStream:
    """Streaming pass over the signal capture: ``feed(chunk)`` returns ``(k0, y)`` with Bob's
    pilot-corrected matched-filter outputs of tx symbols ``k0 .. k0+len(y)-1`` (ADC-code units,
    conjugated back if the IF is spectrally inverted); ``finish()`` returns the rest.

    With ``clock_tracking`` the symbol instants follow a data-aided timing loop updated once per
    fixed block of ``timing_block`` symbols (so the result does not depend on the chunking).

    The carrier phase comes from ``self.pilot`` (a ``PilotStage``): ``feed`` pushes the chunk
    through it; a caller that ran ``pilot.push(chunk)`` itself, e.g. ahead in another thread,
    passes its result to ``feed_prepared(chunk, result)`` instead (same numbers).
    """

    def __init__(self, acq: Acquisition, alice: Callable[[int, int], np.ndarray] | None = None,
                 *, timing_block: int = 1 << 18) -> None:
        self.acq = acq
        self.link = acq.link
        self.buf = _SampleBuffer()
        self.pilot = PilotStage(acq)
        self.D = acq.carrier.decimation
        self.ph = np.empty(0)
        self.ph_j0 = 0
        self.k_next = 0
        self.tau = acq.tau0
        self.period = acq.period
        self.alice = alice
        self.timing_block = int(timing_block)
        self.timing_log: list[tuple[int, float]] = []
        #: strided outputs of the current timing block at TIMING_OFFSETS (lists of parts)
        self._timing_parts: tuple[list, list, list] = ([], [], [])
        self._fit_n = 0
        self._fit = (0.0, 0.0, 0.0, 0.0)
        self.samples = 0
        self._seconds = {"matched_filter": 0.0, "timing": 0.0}

    def _phase_grid(self):
        D = self.D
        return (self.ph_j0 * D + (D - 1) / 2, float(D), self.ph)

    @property
    def stage_seconds(self) -> dict[str, float]:
        """Wall seconds in "pilot" (down-conversion), "phase" (tracker), "matched_filter" and
        "timing" (timing-loop fits), for profiling (the first two may have run in another
        thread, overlapping the others)."""
        return {**self.pilot.seconds, **self._seconds}

    def feed(self, chunk: np.ndarray) -> list[tuple[int, np.ndarray]]:
        return self.feed_prepared(chunk, self.pilot.push(chunk))

    def room_samples(self) -> int:
        """Samples the stream keeps from one chunk to the next at most (carrier-tracker delay,
        pilot block, matched-filter window): room to leave in front of a chunk passed to
        ``feed_in_place``. The bound without margin was measured to hold with 1-50 % to
        spare (RTS: a block of 1024 pilot blocks waits for the next one), hence 25 % more."""
        b = self.acq.bank
        blocks = self.pilot.tracker.latency_blocks() + 4
        return int(1.25 * (blocks * self.D + 2 * b.half + 8 * math.ceil(self.period)))

    def feed_in_place(self, store: np.ndarray, start: int) -> list[tuple[int, np.ndarray]]:
        """``feed(store[start:])`` without copying the chunk into the stream's buffer: the
        samples kept from earlier chunks are copied into ``store[:start]`` instead (make
        ``start >= room_samples()``; if they do not fit, the chunk is copied as ``feed``
        does). The stream then reads ``store`` until the next ``feed``/``feed_in_place``/
        ``finish`` call returns: do not overwrite it before."""
        chunk = store[start:]
        phase = self.pilot.push(chunk)
        self.buf.adopt(store, start)
        return self._buffered(chunk.shape[0], phase)

    def feed_prepared(self, chunk: np.ndarray,
                      phase: tuple[int, np.ndarray]) -> list[tuple[int, np.ndarray]]:
        """``feed`` with ``phase = self.pilot.push(chunk)`` already computed (in order)."""
        self.buf.append(chunk)
        return self._buffered(np.asarray(chunk).shape[0], phase)

    def _buffered(self, n: int, phase: tuple[int, np.ndarray]) -> list[tuple[int, np.ndarray]]:
        # the chunk's n samples are in the buffer and its pilot phases computed: emit
        self.samples += n
        self._append_phase(*phase)
        return self._emit(final=False)

    def finish(self) -> list[tuple[int, np.ndarray]]:
        self._append_phase(*self.pilot.flush())
        return self._emit(final=True)

    def _append_phase(self, j0: int, ph: np.ndarray) -> None:
        if ph.shape[0] == 0:
            return
        self._fit_phase(j0, ph)
        if self.ph.shape[0] == 0:
            self.ph_j0 = j0
            self.ph = ph
        else:
            assert j0 == self.ph_j0 + self.ph.shape[0]
            self.ph = np.concatenate([self.ph, ph])

    def _fit_phase(self, j0: int, ph: np.ndarray) -> None:
        """Merge the batch into the running least-squares line phase(t) (Chan's update)."""
        # block centres t_j = (j D + (D-1)/2) / fs: an arithmetic sequence, so its mean and
        # sum of squares are closed-form; only the cross term needs a pass over the phases
        n_b = ph.shape[0]
        step = self.D / self.link.sample_rate_hz
        mt = ((j0 + (n_b - 1) / 2) * self.D + (self.D - 1) / 2) / self.link.sample_rate_hz
        mp = float(ph.mean())
        ctt = step * step * n_b * (n_b * n_b - 1) / 12
        ctp = step * cdot(np.arange(n_b) - (n_b - 1) / 2, ph).real
        n, (m_t, m_p, c_tt, c_tp) = self._fit_n, self._fit
        tot = n + n_b
        dt_, dp_ = mt - m_t, mp - m_p
        self._fit = (m_t + dt_ * n_b / tot, m_p + dp_ * n_b / tot,
                     c_tt + ctt + dt_ * dt_ * n * n_b / tot, c_tp + ctp + dt_ * dp_ * n * n_b / tot)
        self._fit_n = tot

    @property
    def frequency_offset_hz(self) -> float:
        """Mean laser offset over the data seen so far: acquisition offset + the slope of the
        tracked pilot phase (least squares over the whole recording), Hz."""
        c_tt, c_tp = self._fit[2], self._fit[3]
        slope = c_tp / c_tt if c_tt > 0 else 0.0
        return self.acq.pilot.frequency_offset_hz + slope / (2 * math.pi)

    def _k_limit(self, final: bool) -> int:
        b = self.acq.bank
        kmax = math.floor((self.buf.n_end - b.half - 2 - self.tau) / self.period) + 1
        if not final:
            if self.ph.shape[0] < 2:
                return self.k_next
            t_last = (self.ph_j0 + self.ph.shape[0] - 1) * self.D + (self.D - 1) / 2
            kmax = min(kmax, math.floor((t_last - 1 - self.tau) / self.period) + 1)
        return max(min(kmax, self.link.n_symbols), self.k_next)

    def _emit(self, final: bool) -> list[tuple[int, np.ndarray]]:
        out = []
        khi = self._k_limit(final)
        track = self.acq.options.clock_tracking and self.alice is not None
        while self.k_next < khi and self.ph.shape[0] >= 2:
            khi = self._k_limit(final)   # the timing loop may have moved the instants
            if khi <= self.k_next:
                break
            k0 = self.k_next
            k1 = khi
            if track:   # stop at the next timing-block border
                k1 = min(khi, (k0 // self.timing_block + 1) * self.timing_block)
            t0 = time.perf_counter()
            y = matched_filter_at(self.buf.data, self.acq.bank, first_sample=self.buf.n0,
                                  tau0=self.tau, period=self.period, k_start=k0, count=k1 - k0,
                                  phase=self._phase_grid(),
                                  first_order=self.acq.options.first_order_phase)
            self._seconds["matched_filter"] += time.perf_counter() - t0
            if track:
                t0 = time.perf_counter()
                self._collect_timing(k0, k1, y)
                self._seconds["timing"] += time.perf_counter() - t0
            if self.acq.sync.inverted:
                y = np.conj(y)
            out.append((k0, y))
            self.k_next = k1
            if track and k1 % self.timing_block == 0 and k1 < self.link.n_symbols:
                t0 = time.perf_counter()
                self._update_timing(k1)
                self._seconds["timing"] += time.perf_counter() - t0
        if self.k_next < self.link.n_symbols:
            lo, _ = symbol_sample_range(self.acq.bank, self.tau - 0.5, self.period, self.k_next)
            self.buf.trim(lo)
            jk = int((lo - (self.D - 1) / 2) // self.D) - 2
            cut = min(max(jk - self.ph_j0, 0), max(self.ph.shape[0] - 2, 0))
            if cut:
                self.ph = self.ph[cut:]
                self.ph_j0 += cut
        else:   # every symbol is out: samples after the last one are not needed
            self.buf.trim(self.buf.n_end)
            cut = max(self.ph.shape[0] - 2, 0)
            self.ph = self.ph[cut:]
            self.ph_j0 += cut
        return out

    def _collect_timing(self, k0: int, k1: int, y: np.ndarray) -> None:
        """Keep the outputs the timing fit of the current block needs, as the main pass goes:
        every ``TIMING_STRIDE``-th symbol of the block (from the block start) at the instant
        (the main outputs) and 1/4 sample early and late (evaluated here, on the samples in
        the buffer now), so the block's samples need not stay buffered until its end. The
        instants are computed from the block start whatever the chunking: the fit sees the
        same numbers for any chunk size."""
        L, st = self.timing_block, TIMING_STRIDE
        b0 = (k0 // L) * L
        i0 = -(-(k0 - b0) // st)            # first strided index >= k0
        i1 = -(-(k1 - b0) // st)
        if i1 <= i0:
            return
        parts = self._timing_parts
        parts[1].append(y[b0 + i0 * st - k0::st][:i1 - i0])
        for slot, d in ((0, TIMING_OFFSETS[0]), (2, TIMING_OFFSETS[2])):
            parts[slot].append(matched_filter_at(
                self.buf.data, self.acq.bank, first_sample=self.buf.n0,
                tau0=self.tau + d + b0 * self.period, period=self.period * st, k_start=i0,
                count=i1 - i0, phase=self._phase_grid(), parallel=i1 - i0 >= 1 << 13))

    def _update_timing(self, k1: int) -> None:
        """Data-aided timing update after a full block: fit the fractional timing of the last
        block (every ``TIMING_STRIDE``-th symbol, collected by ``_collect_timing``) and steer
        the instants of the following symbols with a proportional-integral loop on
        (tau, period)."""
        L = self.timing_block
        k0 = k1 - L
        st = TIMING_STRIDE
        ys = [np.concatenate(p) if p else np.empty(0, np.complex64) for p in self._timing_parts]
        self._timing_parts = ([], [], [])
        a = np.ascontiguousarray(np.asarray(self.alice(k0, k1))[::st], np.complex128)
        if self.acq.sync.inverted:
            a = np.conj(a)
        n = a.shape[0]
        if any(y.shape[0] != n for y in ys):   # block not seen whole (cannot happen in order)
            return
        d, c2, e = _timing_parabola(a, *ys)
        # only a significant correlation steers the loop: |rho|^2 ~ 1/n without signal
        rho2 = c2 / (cdot(a, a).real * e + 1e-300)
        if rho2 * n < 36.0:
            # where the head promised a clear correlation (|rho|^2 = snr/(1+snr)), none here
            # means the symbols are lost (modulation stopped, a slip): not a weak link
            snr = self.acq.sync.snr
            if snr / (1 + snr) * n >= 10 * 36.0:
                raise DspLockError(
                    f"synchronisation lost in symbols [{k0}, {k1}): no correlation with "
                    "Alice's symbols there",
                    {**self.acq.lock_metrics, "timing_block_corr_n": float(rho2 * n),
                     "head_corr_n": float(snr / (1 + snr) * n), "timing_corr_min_n": 36.0,
                     "lost_from_symbol": float(k0)})
            self.timing_log.append((k0 + L // 2, float("nan")))
            return
        d = float(np.clip(d, -0.25, 0.25))
        self.timing_log.append((k0 + L // 2, d))
        kc = k0 + L / 2
        g1, g2 = TIMING_GAINS
        self.tau += g1 * d - g2 * d / L * kc
        self.period += g2 * d / L
