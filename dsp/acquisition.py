"""Acquisition on a head segment of the signal capture: pilot search (coarse/fine frequency
offset), pilot SNR and phase-noise statistics, and the synchronisation to Alice's symbols.

Everything here runs once, on a bounded head segment (numpy + the kernels), before the
streaming pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numba
import numpy as np
import scipy.fft as sfft

from dsp.core import cdot
from dsp.downconvert import fir_decimate, mix_down
from dsp.errors import DspLockError
from dsp.fits import (
    diffusion_slope,
    line_fit,
    radial_phase_noise,
    remove_tone_leakage,
    slope_std,
    slope_std_white,
)
from dsp.matched_filter import matched_filter_at
from dsp.pilot import pilot_decimate
from dsp.rrc import MatchedFilterBank, rrc_frequency_response

__all__ = ["PilotAcquisition", "SyncResult", "acquire_pilot", "check_search_range",
           "pilot_span", "refine_timing", "sync_scores", "synchronise"]

#: pilot presence: windows of this many acquisition blocks (2048 samples at D = 64) ...
PRESENCE_WINDOW_BLOCKS = 32
#: ... where each pilot's mean power lies within this relative distance of its median over the
#: head (a pilot-free preamble or lead leaves a few per cent of it, a strong preamble swamping
#: the pilot's band several times it) ...
PRESENCE_TOLERANCE = 0.2
#: ... or within this many robust standard deviations (MAD) of the median (a weak pilot's
#: window powers scatter more than the tolerance)
PRESENCE_MAD_SIGMAS = 8.0
#: fewest pilot blocks the phase statistics need (a multiple of the structure function's lags)
MIN_SPAN_BLOCKS = 1024
#: blocks of the span whose amplitude scatter gives C/N0 (its variance to ~1.6 %, 0.07 dB)
CN0_BLOCKS = 8192
#: the search on the pilot span replaces the whole head's offset when they differ by more than
#: this fraction of the block rate fs / D (the block phasors lose ~3 % of a pilot at this
#: offset; the fine fit takes less)
COARSE_MOVED_BLOCK_RATES = 0.125


@dataclass(frozen=True)
class PilotAcquisition:
    """Result of the pilot search on the head segment.

    Attributes
    ----------
    frequency_offset_hz : float
        Fine laser frequency offset (pilot phase slope over the head).
    coarse_offset_hz : float
        Spectral-peak estimate.
    pilot_snr_db : tuple[float, ...]
        Per pilot, periodogram peak over the median in the search window (dB); the lock metric.
    pilot_cn0_dbhz : tuple[float, ...]
        Per pilot, carrier-to-noise density (dB-Hz) from the phase statistics.
    phase_noise_var : float
        Pilot phase-noise variance per block of ``decimation`` samples (rad^2), combined pilots.
    linewidth_hz : float
        Combined Lorentzian linewidth estimated from the pilot phase diffusion.
    decimation : int
        Block length of the phase statistics (samples).
    pilot_weights : tuple[complex, ...]
        Combining weights of the pilots: phase alignment and maximum-ratio weighting
        (amplitude over noise variance, both once the other tones' leakage is removed);
        sum of |w| = 1.
    pilot_amplitudes : tuple[float, ...]
        Tone amplitude A of each pilot (ADC codes; ``A cos(2 pi f t + phi)``).
    span_samples : tuple[int, int]
        Head samples ``[start, stop)`` where every pilot is present (``pilot_span``): the
        fine offset, the weights and every phase statistic come from these only.
    linewidth_resolution_hz : float
        Twice the sd of ``linewidth_hz`` at zero linewidth (``slope_std_white`` of the combined
        pilot's per-block phase noise, span length and lags): a smaller estimate cannot be
        told from zero (``linewidth_below_resolution``).
    """

    frequency_offset_hz: float
    coarse_offset_hz: float
    pilot_snr_db: tuple[float, ...]
    pilot_cn0_dbhz: tuple[float, ...]
    phase_noise_var: float
    linewidth_hz: float
    linewidth_std_hz: float
    decimation: int
    pilot_weights: tuple[complex, ...]
    pilot_amplitudes: tuple[float, ...]
    span_samples: tuple[int, int] = (0, 0)
    linewidth_resolution_hz: float = math.nan

    @property
    def linewidth_below_resolution(self) -> bool:
        """Whether ``linewidth_hz`` is below ``linewidth_resolution_hz`` (not told from 0)."""
        return self.linewidth_hz < self.linewidth_resolution_hz


def pilot_span(powers: list[np.ndarray], window: int = PRESENCE_WINDOW_BLOCKS,
               min_blocks: int = MIN_SPAN_BLOCKS) -> tuple[int, int]:
    """Blocks ``[b0, b1)`` of the first run of at least ``min_blocks`` blocks (else the
    longest) where every pilot is present.

    A window of ``window`` blocks holds the pilot when its mean power is near the median of
    all windows (``PRESENCE_TOLERANCE`` relative, or ``PRESENCE_MAD_SIGMAS`` robust standard
    deviations): a pilot-free lead or preamble falls far below, a strong preamble swamping the
    pilot's band far above. The median ignores such spans as long as they are less than half
    the head. A window next to a rejected one is dropped as well (it may hold part of the
    preamble). Every window good: the whole record ``[0, n)``. The first long run, not the
    longest: the data start after the lead and the preamble, and a pilot that vanishes
    later, inside the data, must stay visible to the stream's lock monitor (the blocks
    before the span are filled in, ``dsp.pilot.fill_lead``).

    Parameters
    ----------
    powers : list of ndarray, shape (n,)
        Per pilot, the power ``|z|^2`` of its block phasors.
    window : int
        Blocks per presence window.
    min_blocks : int
        Shortest run that is taken as the data.

    Returns
    -------
    tuple[int, int]
        First and one-past-last block of the run.
    """
    n = powers[0].shape[0]
    nw = n // window
    if nw < 3:
        return 0, n
    good = np.ones(nw, bool)
    for p in powers:
        w = p[:nw * window].reshape(nw, window).mean(axis=1)
        med = float(np.median(w))
        mad = 1.4826 * float(np.median(np.abs(w - med)))
        good &= np.abs(w - med) <= max(PRESENCE_TOLERANCE * med, PRESENCE_MAD_SIGMAS * mad)
    if good.all():
        return 0, n
    # first long (else the longest) run of good windows, shrunk by one window at each side
    # that borders a bad one
    edges = np.flatnonzero(np.diff(np.r_[0, good.astype(np.int8), 0]))
    starts, stops = edges[::2], edges[1::2]
    long = np.flatnonzero(stops - starts >= -(-min_blocks // window) + 2)
    i = int(long[0]) if long.size else int(np.argmax(stops - starts))
    w0, w1 = int(starts[i]), int(stops[i])
    w0 += 1 if w0 > 0 else 0
    w1 -= 1 if w1 < nw else 0
    b1 = n if w1 == nw else w1 * window
    return w0 * window, max(b1, w0 * window)


def check_search_range(fs: float, *, pilot_frequencies_hz, signal_frequency_hz: float,
                       symbol_rate_hz: float, rolloff: float, search_hz: float) -> None:
    """Refuse a pilot search range that could confuse the pilot with an image.

    The window ``[f_p - R, f_p + R]`` of every pilot must lie inside ``(0, fs/2)`` (else the
    pilot's own alias could be picked) and must not overlap the images, mirrored at 0 and at
    fs/2, of the quantum band ``f_s +- Rs (1+beta)/2`` shifted by any offset in ``[-R, R]``.
    The quantum band itself is noise-like and harmless; overlapping windows of several pilots
    are fine because the search is joint (only the true common offset lines up every pilot).
    """
    R = float(search_hz)
    if not R > 0:
        raise ValueError(f"pilot search range must be > 0 Hz, got {search_hz!r}")
    w = symbol_rate_hz * (1 + rolloff) / 2
    lo_q, hi_q = signal_frequency_hz - R - w, signal_frequency_hz + R + w
    images = [(fs - hi_q, fs - lo_q), (-hi_q, -lo_q)]
    fps = [float(f) for f in pilot_frequencies_hz]
    for fp in fps:
        a, b = fp - R, fp + R
        if a <= 0 or b >= fs / 2:
            raise ValueError(f"pilot search window [{a / 1e6:.3f}, {b / 1e6:.3f}] MHz of pilot "
                             f"{fp / 1e6:.3f} MHz leaves (0, fs/2 = {fs / 2e6:.3f} MHz): "
                             "reduce the search range")
        for lo, hi in images:
            if a < hi and lo < b:
                raise ValueError(f"pilot search window [{a / 1e6:.3f}, {b / 1e6:.3f}] MHz "
                                 f"overlaps the quantum-band image [{lo / 1e6:.3f}, "
                                 f"{hi / 1e6:.3f}] MHz: reduce the search range")


def _coarse_offset(x: np.ndarray, fs: float, fps: list[float], *, search_hz: float,
                   snr_min_db: float) -> tuple[float, tuple[float, ...]]:
    """Coarse laser offset (Hz) and each pilot's SNR (dB) from the joint periodogram search
    of ``acquire_pilot``; DspLockError if the weakest pilot is below ``snr_min_db``."""
    n = 1 << math.floor(math.log2(min(x.shape[0], 1 << 21)))
    seg = x[:n].astype(np.float32)
    seg -= seg.mean(dtype=np.float64)
    raw = sfft.rfft(seg)
    df = fs / n
    nb = int(R_bins := math.floor(search_hz / df))
    metric = np.zeros(2 * nb + 1)
    norm_specs = []
    for fp in fps:
        c = round(fp / df)
        # periodogram with the (periodic) Hann window, applied as its 3-bin convolution on
        # the search window only: w = 1/2 - cos/2 -> X_w[k] = X[k]/2 - (X[k-1] + X[k+1])/4
        k = np.clip(np.arange(c - R_bins - 1, c + R_bins + 2), 0, raw.shape[0] - 1)
        xk = raw[k].astype(np.complex128)
        win = np.abs(0.5 * xk[1:-1] - 0.25 * (xk[:-2] + xk[2:])) ** 2
        med = float(np.median(win))
        norm_specs.append((win, med))
        with np.errstate(divide="ignore", invalid="ignore"):   # med = 0: a dead capture
            metric += win / med
    b = int(np.argmax(metric))
    shift = 0.0
    if 0 < b < 2 * nb:
        lm = np.log(metric[b - 1:b + 2])
        den = lm[0] - 2 * lm[1] + lm[2]
        if den < 0:
            shift = 0.5 * (lm[0] - lm[2]) / den
    with np.errstate(divide="ignore", invalid="ignore"):
        snr_db = tuple(float(10 * np.log10(win[max(b - 1, 0):b + 2].max() / med))
                       for win, med in norm_specs)
    coarse = ((b - nb) + shift) * df + (round(fps[0] / df) * df - fps[0])
    # the bins are centred on round(fp/df)*df, not exactly on fp
    metrics = {"pilot_snr_db": min(snr_db), "pilot_snr_min_db": float(snr_min_db),
               "coarse_offset_hz": float(coarse)}
    # "not >=": a dead (constant or all-zero) capture gives a NaN SNR, which must fail too
    if not min(snr_db) >= snr_min_db:
        raise DspLockError("pilot not found: pilot SNR below threshold", metrics)
    return coarse, snr_db


def _span_at(x: np.ndarray, fs: float, fps: list[float], coarse: float,
             D: int) -> tuple[list[np.ndarray], tuple[int, int]]:
    """Every pilot's block phasors over the head at offset ``coarse``, and their
    ``pilot_span`` (only where every pilot is present: a pilot-free preamble's phase is not
    laser phase)."""
    nblk = x.shape[0] // D
    full = [pilot_decimate(x, fs, frequency_hz=fp + coarse, decimation=D, first_sample=0,
                           first_block=0, n_blocks=nblk) for fp in fps]
    return full, pilot_span([np.abs(z) ** 2 for z in full])


def _check_span(b0: int, b1: int, D: int, whole_error: DspLockError | None) -> None:
    """DspLockError when the pilots are present in fewer than ``MIN_SPAN_BLOCKS`` blocks (the
    whole head's lock error, if there was one: nothing in the head holds the pilot). A head
    too short as a whole is the trackers' error to name: they know what they need."""
    if b1 - b0 >= MIN_SPAN_BLOCKS:
        return
    if whole_error is not None:
        raise whole_error
    raise DspLockError("pilot not found: present in too few samples of the head",
                       {"pilot_span_samples": float((b1 - b0) * D),
                        "pilot_span_min_samples": float(MIN_SPAN_BLOCKS * D)})


def acquire_pilot(head: np.ndarray, fs: float, *, pilot_frequencies_hz, search_hz: float,
                  snr_min_db: float, decimation: int = 64, max_lag: int = 48) -> PilotAcquisition:
    """Find the pilot tone(s) in the head segment and estimate offset, SNR and phase noise.

    Coarse: Hann-windowed periodogram; the offset maximises the sum over pilots of the
    periodogram normalised by its median in each window (joint search: with two pilots only
    the common offset makes both peak); parabolic interpolation of log power gives a sub-bin
    value. Fine: least-squares slope of the unwrapped pilot phase (blocks of ``decimation``
    samples). Phase statistics: the structure function ``S(l) = <(phi_{j+l} - phi_j)^2>``
    of the detrended pilot phase is ``2 sigma_n^2 + 2 pi linewidth l D / fs``: its slope gives
    the linewidth; the per-block phase-noise variance sigma_n^2 (pilot SNR) comes from the
    amplitude scatter of the phasors (``radial_phase_noise``). When the pilots are not present
    over the whole head (``pilot_span``), the coarse search and the lock metric are those of
    the span: a pilot-free preamble can neither fail the lock nor move the offset.

    Raises
    ------
    DspLockError
        If the weakest pilot's peak-to-median ratio (on the pilot span) is below
        ``snr_min_db``.
    """
    x = np.asarray(head)
    fps = [float(f) for f in pilot_frequencies_hz]
    # the whole head's search may fail or peak elsewhere because of a pilot-free preamble:
    # its verdict waits for the pilot span (below)
    whole_error = None
    try:
        coarse, snr_db = _coarse_offset(x, fs, fps, search_hz=search_hz, snr_min_db=snr_min_db)
    except DspLockError as exc:
        coarse, whole_error = exc.metrics["coarse_offset_hz"], exc
        if not math.isfinite(coarse):
            raise

    # fine offset and phase statistics from the block phasors of each pilot
    D = int(decimation)
    nblk = x.shape[0] // D
    full, (b0, b1) = _span_at(x, fs, fps, coarse, D)
    if (b0, b1) != (0, nblk):
        # the search again, on the span only: the lock metric, and the offset when a
        # preamble moved the first one (then the phasors and the span again, at that offset)
        _check_span(b0, b1, D, whole_error)
        c2, snr_db = _coarse_offset(x[b0 * D:b1 * D], fs, fps, search_hz=search_hz,
                                    snr_min_db=snr_min_db)
        if abs(c2 - coarse) > COARSE_MOVED_BLOCK_RATES * fs / D:
            coarse = c2
            full, (b0, b1) = _span_at(x, fs, fps, coarse, D)
            if (b0, b1) != (0, nblk):
                _check_span(b0, b1, D, None)
    elif whole_error is not None:
        raise whole_error
    t = np.arange(b0, b1) * D + (D - 1) / 2
    phasors, fine, resid = [], [], []
    for z in full:
        z = z[b0:b1]
        ph = np.unwrap(np.angle(z))
        a1, a0 = line_fit(t, ph)
        fine.append(coarse + a1 * fs / (2 * np.pi))
        phasors.append(z)
        resid.append(ph - (a0 + a1 * t))
    # one offset for all pilots (common laser offset), weighted by pilot power
    pw = np.array([np.mean(np.abs(z) ** 2) for z in phasors])
    offset = float(np.sum(np.array(fine) * pw) / np.sum(pw))
    # per-pilot noise and combination weights (maximum-ratio, phase-aligned)
    sig_n2, amps = _pilot_noise_and_amplitude(phasors, [(fp + coarse) / fs for fp in fps],
                                              D, b0)
    weights = []
    for z, s2n, amp, z0 in zip(phasors, sig_n2, amps, [phasors[0]] * len(phasors), strict=True):
        rel = np.angle(cdot(z0, z))              # constant phase of this pilot vs the first
        weights.append(np.exp(-1j * rel) / (amp * s2n))
    wsum = sum(abs(w) for w in weights)
    weights = [w / wsum for w in weights]
    comb = sum(w * z for w, z in zip(weights, phasors, strict=True))
    comb = comb * np.exp(-2j * np.pi * (offset - coarse) / fs * t)
    comb_phase = np.unwrap(np.angle(comb))
    slope = diffusion_slope(comb_phase, max_lag)
    s2n = radial_phase_noise(comb)
    dt = D / fs
    linewidth = slope / (2 * np.pi * dt)
    resolution = 2 * slope_std_white(s2n, comb.shape[0], max_lag) / (2 * np.pi * dt)
    # std of the slope from the fit residual scatter (rough): see structure_fit
    cn0 = tuple(float(10 * np.log10(1.0 / (2.0 * si * dt))) for si in sig_n2)
    return PilotAcquisition(
        frequency_offset_hz=offset, coarse_offset_hz=float(coarse), pilot_snr_db=snr_db,
        pilot_cn0_dbhz=cn0, phase_noise_var=float(max(s2n, 1e-12)),
        linewidth_hz=float(max(linewidth, 0.0)),
        linewidth_std_hz=float(slope_std(comb_phase, max_lag) / (2 * np.pi * dt)),
        decimation=D, pilot_weights=tuple(complex(w) for w in weights),
        pilot_amplitudes=tuple(float(2 * np.sqrt(p)) for p in pw),
        span_samples=(b0 * D, x.shape[0] if b1 == nblk else b1 * D),
        linewidth_resolution_hz=float(resolution))


def _pilot_noise_and_amplitude(phasors: list[np.ndarray], cycles_per_sample: list[float],
                               D: int, first_block: int) -> tuple[list[float], list[float]]:
    """Per pilot, its per-block phase-noise variance s (rad^2, from the amplitude scatter)
    and its rms block amplitude, from its first ``CN0_BLOCKS`` phasors once the other pilots'
    and the images' leakage is removed (``remove_tone_leakage``, as the stream does before
    combining); without the removal (tones too close) from the phasors as they are.

    The leakage is neither noise nor amplitude at the pilot's frequency: counted in, it set
    C/N0 (``1 / (2 s dt)`` for blocks of ``dt`` seconds) 17-23 dB low on framed.h5 and gave
    the weaker of its two pilots (4:1 power) 0.12 of the maximum-ratio combining weight
    (amplitude over noise variance) instead of 1/3."""
    head = [z[:CN0_BLOCKS] for z in phasors]
    clean = remove_tone_leakage(head, cycles_per_sample, D, first_block)
    clean = head if clean is None else clean
    return ([max(radial_phase_noise(a), 1e-12) for a in clean],
            [float(np.sqrt(np.mean(np.abs(a) ** 2))) for a in clean])


@dataclass(frozen=True)
class SyncResult:
    """Timing of the first data symbol and the correlation lock metrics.

    ``tau0`` is the fractional absolute sample instant of symbol 0 (pulse centre);
    ``pslr`` the correlation peak power over the mean side-lobe power; ``inverted`` whether Bob
    sees the complex conjugate of Alice's symbols (spectral inversion of the IF); ``phase`` the
    common phase of ``sum conj(x) y`` over the sync symbols (rad); ``snr`` the symbol SNR of
    the matched-filter outputs against Alice's symbols there (|g|^2 <|a|^2> / residual).
    """

    tau0: float
    coarse_delay: int
    pslr: float
    pslr_db: float
    inverted: bool
    phase: float
    sync_symbols: int
    timing_std_samples: float
    snr: float = math.nan


def refine_timing(power: Callable, start: float, *, lower: float,
                  batch: bool = False) -> float:
    """Fractional timing that maximises ``power(tau)``: three grids (1/2, 1/32, 1/256 sample)
    around the previous best, each closed by parabolic interpolation of the peak.

    ``power`` is ``|sum conj(x_k) y_k(tau)|^2``; instants below ``lower`` (the matched
    filter's half length) are not evaluated. ``batch``: ``power`` takes the array of a
    grid's instants and returns their powers (one call per grid).
    """
    tau = float(start)
    for step, npts in ((0.5, 6), (1.0 / 32, 4), (1.0 / 256, 3)):
        taus = tau + step * np.arange(-npts, npts + 1)
        taus = taus[taus >= lower]
        p = (np.asarray(power(taus), np.float64) if batch
             else np.array([power(t) for t in taus]))
        i = int(np.argmax(p))
        tau = float(taus[i])
        if 0 < i < p.shape[0] - 1:
            den = p[i - 1] - 2 * p[i] + p[i + 1]
            if den < 0:
                tau += step * 0.5 * (p[i - 1] - p[i + 1]) / den
    return tau


def sync_scores(x: np.ndarray, bank: MatchedFilterBank, taus: np.ndarray, *, period: float,
                phase: tuple[float, float, np.ndarray], alice: np.ndarray) -> np.ndarray:
    """``cdot(alice, matched_filter_at(x, bank, first_sample=0, tau0=tau, period=period,
    k_start=0, count=len(alice), phase=phase))`` for every ``tau`` of ``taus``.

    The instants of a timing grid (7-13 of them, 16384 symbols each) run on the numba thread
    count's worth of Python threads, each instant in the same kernel with one numba thread
    (nogil; fixed task ranges, so the same bits): one 2-thread parallel region per instant
    cost more than its work, and a core taken by another process stalled each of them.

    Returns
    -------
    ndarray, shape (len(taus),), complex128
    """
    def one(tau: float) -> complex:
        y = matched_filter_at(x, bank, first_sample=0, tau0=float(tau), period=period,
                              k_start=0, count=alice.shape[0], phase=phase)
        return cdot(alice, y)

    def one_thread(tau: float) -> complex:
        numba.set_num_threads(1)     # thread-local: this worker's regions only
        return one(tau)

    taus = np.asarray(taus, np.float64)
    workers = min(numba.get_num_threads(), taus.shape[0])
    if workers <= 1:
        return np.array([one(t) for t in taus], np.complex128)
    with ThreadPoolExecutor(workers, thread_name_prefix="qkd-hw-sync") as pool:
        return np.array(list(pool.map(one_thread, taus)), np.complex128)


def _sync_decimation(fs: float, band_half_width_hz: float, *,
                     stop_db: float = 60.0) -> tuple[int, np.ndarray]:
    """Decimation R and anti-alias taps for the coarse synchronisation of a complex baseband
    of half-width w: ``R = floor(fs / 3w)`` (so the band's first alias, from ``fs/R - w``,
    leaves a transition of at least w), Kaiser-windowed sinc cut at ``fs / 2R`` with
    ``stop_db`` of stop band (Kaiser's length formula, odd). The stop band matters beyond
    aliasing noise: the quantum band's mirror image is a spectrally inverted copy of it,
    which would correlate with the inverted hypothesis. ``(1, [1.0])`` when R would be 1."""
    R = int(fs // (3 * band_half_width_hz))
    if R < 2:
        return 1, np.ones(1, np.float32)
    delta = (fs / R - 2 * band_half_width_hz) / fs            # transition, cycles/sample
    # Kaiser's formulas (N - 1 = (A - 8) / (2.285 dw), beta(A)) undershoot A by ~1 dB for
    # short filters: designed for A + 3 dB
    a = stop_db + 3.0
    N = math.ceil((a - 8) / (2.285 * 2 * math.pi * delta)) + 1
    N += 1 - N % 2
    beta = 0.1102 * (a - 8.7)
    i = np.arange(N) - (N - 1) / 2
    h = np.sinc(i / R) * np.kaiser(N, beta)
    return R, (h / h.sum()).astype(np.float32)


def _coarse_correlation(x: np.ndarray, fs: float, *, alice: np.ndarray, R: int,
                        taps: np.ndarray, period: float, symbol_rate_hz: float, rolloff: float,
                        mixer_hz: float, phase: tuple[float, float, np.ndarray]) -> np.ndarray:
    """Cross-correlation of the down-converted, decimated (by R), RRC-filtered head with
    Alice's symbols on the fractional grid: row 0 direct, row 1 spectrally inverted."""
    n = x.shape[0]
    K = int(alice.shape[0])
    w = symbol_rate_hz * (1 + rolloff) / 2
    nd = -(-n // R)
    nfft = sfft.next_fast_len(nd + int(K * period / R) + 2)
    # both forward transforms (head, reference) in one batched call and both inverse ones
    # (direct, spectrally inverted) in another: pocketfft runs the rows of a batch on
    # separate threads, a single 1-D transform on one
    buf = np.zeros((2, nfft), np.complex64)
    if R > 1:
        fir_decimate(mix_down(x, fs, frequency_hz=mixer_hz, phase=phase), taps, R,
                     out=buf[0, :nd])
    else:
        mix_down(x, fs, frequency_hz=mixer_hz, phase=phase, out=buf[0, :n])
    pos = np.arange(K) * (period / R)
    i0 = np.floor(pos).astype(np.int64)
    w1 = pos - i0
    if i0.shape[0] < 2 or np.diff(i0).min() >= 1:
        # distinct indices in each of the two passes (symbols >= 1.5 decimated samples
        # apart, ``_sync_decimation``): a fancy-index add, the same sums as np.add.at's
        # unbuffered loop, ~10x faster
        buf[1, i0] += alice * (1 - w1)
        buf[1, i0 + 1] += alice * w1
    else:
        np.add.at(buf[1], i0, alice * (1 - w1))
        np.add.at(buf[1], i0 + 1, alice * w1)
    spec = sfft.fft(buf, axis=-1, workers=2, overwrite_x=True)
    B, Rf = spec[0], spec[1]
    # matched filter (exact RRC) and correlation on the band's bins only: the rest is 0
    fsd = fs / R
    nb = min(math.ceil(w / fsd * nfft) + 1, nfft // 2)
    band = np.r_[0:nb + 1, nfft - nb:nfft]
    f_band = np.where(band <= nfft // 2, band, band - nfft) * (fsd / nfft)   # fftfreq's bins
    hb = rrc_frequency_response(f_band, symbol_rate_hz, rolloff).astype(np.float32)
    cross = np.zeros((2, nfft), np.complex64)
    bb_band = B[band] * hb
    cross[0, band] = bb_band * np.conj(Rf[band])
    # FFT of conj(ref) at bin k is conj(R[-k mod N]): no second forward transform
    cross[1, band] = bb_band * Rf[(-band) % nfft]
    return sfft.ifft(cross, axis=-1, workers=2, overwrite_x=True)


def _coarse_peak(corr: np.ndarray, *, R: int, period: float,
                 last: int) -> tuple[float, int, bool]:
    """(peak-to-side-lobe ratio, full-rate lag <= last, inverted) of the better row of
    ``corr``."""
    lags = last // R + 1
    best = None
    for inverted in (False, True):
        # float64: the square of a huge complex64 correlation must not overflow
        p = np.abs(corr[int(inverted), :lags]).astype(np.float64) ** 2
        m = int(np.argmax(p))
        guard = math.ceil(2 * period / R)
        side = np.concatenate([p[:max(m - guard, 0)], p[m + guard + 1:]])
        side_mean = float(np.mean(side)) if side.size else 0.0
        # no side lobes at all (an all-zero reference or capture): no peak stands out either
        pslr = float(p[m] / side_mean) if side_mean > 0 else 0.0
        if best is None or pslr > best[0]:
            # back to full-rate samples: parabola through the peak and its neighbours
            d = 0.0
            if 0 < m < lags - 1:
                den = p[m - 1] - 2 * p[m] + p[m + 1]
                if den < 0:
                    d = float(0.5 * (p[m - 1] - p[m + 1]) / den)
            best = (pslr, min(max(round(R * (m + d)), 0), last), inverted)
    return best


def synchronise(head: np.ndarray, fs: float, *, alice: np.ndarray, bank: MatchedFilterBank,
                period: float, symbol_rate_hz: float, rolloff: float, mixer_hz: float,
                phase: tuple[float, float, np.ndarray], max_delay: int,
                pslr_min: float) -> SyncResult:
    """Find the first data symbol: FFT cross-correlation, then fractional refinement.

    Coarse: the head is down-converted (``mixer_hz``), de-rotated by the pilot phase,
    decimated to a rate of ~3 band half-widths (``_sync_decimation``), matched-filtered in the
    frequency domain (exact RRC) and cross-correlated with Alice's first symbols placed on the
    fractional symbol grid (linear split between the two nearest samples); both ``x`` and
    ``conj(x)`` are tried (spectral inversion). Lags are limited to ``[0, max_delay]``; the
    peak lag is interpolated back to full-rate samples. Fine: the symbol-instant matched
    filter is evaluated at ``tau0 + k period`` over a grid of fractional offsets, refined
    twice by parabolic interpolation of ``|sum conj(x_k) y_k|^2``.

    Raises
    ------
    DspLockError
        If the peak-to-side-lobe ratio is below ``pslr_min``.
    """
    x = np.asarray(head)
    K = int(alice.shape[0])
    n = x.shape[0]
    # The coarse search only needs the peak's sample index: it runs in single precision on
    # the band decimated by R (anti-alias FIR, _sync_decimation), with 5-smooth FFT lengths;
    # the peak's lag is interpolated back to the full rate (refine_timing does the rest).
    R, taps = _sync_decimation(fs, symbol_rate_hz * (1 + rolloff) / 2)
    corr = _coarse_correlation(x, fs, alice=alice, R=R, taps=taps, period=period,
                               symbol_rate_hz=symbol_rate_hz, rolloff=rolloff,
                               mixer_hz=mixer_hz, phase=phase)
    pslr, j, inverted = _coarse_peak(corr, R=R, period=period, last=min(int(max_delay), n - 1))
    metrics = {"sync_pslr": pslr, "sync_pslr_db": 10 * math.log10(max(pslr, 1e-30)),
               "sync_pslr_min": float(pslr_min), "coarse_delay_samples": float(j)}
    if not pslr >= pslr_min:
        raise DspLockError("synchronisation failed: correlation peak-to-side-lobe ratio below "
                           "threshold", metrics)
    # the matched filter of the first symbol needs bank.half samples before its instant: a
    # peak closer to the start can be neither refined nor received (refining it against the
    # edge would return the edge, a wrong delay)
    edge = float(bank.half)
    metrics["matched_filter_half_samples"] = edge
    if j + 3 < edge:
        raise DspLockError("synchronisation failed: the first symbol lies closer to the start "
                           "of the capture than the matched filter's half length", metrics)
    a = np.conj(alice) if inverted else alice
    # usable symbols: their matched-filter windows must lie inside the head
    kmax = int((n - bank.half - 2 - (j + 2)) // period)
    kk = max(1, min(K, kmax))
    if kk < min(K, 256):   # a peak at the end of the head: timing on a handful of symbols
        raise DspLockError("synchronisation failed: the correlation peak leaves too few "
                           "symbols in the captured samples",
                           {**metrics, "sync_symbols_usable": float(kk)})
    a = a[:kk]

    a = np.ascontiguousarray(a, np.complex128)

    def powers(taus: np.ndarray) -> list[float]:
        return [abs(complex(c)) ** 2 for c in sync_scores(x, bank, taus, period=period,
                                                            phase=phase, alice=a)]

    tau = refine_timing(powers, float(j), lower=edge, batch=True)
    if tau < edge + 0.5:
        raise DspLockError("synchronisation failed: the first symbol lies closer to the start "
                           "of the capture than the matched filter's half length",
                           {**metrics, "delay_samples": tau})
    y = matched_filter_at(x, bank, first_sample=0, tau0=tau, period=period, k_start=0,
                          count=kk, phase=phase)
    c = cdot(a, y)
    # timing precision (Cramer-Rao-like, for reporting): sigma_tau ~ 1/(2 pi B_rms sqrt(K snr))
    y = y.astype(np.complex128)
    g = c / cdot(a, a)
    resid = np.mean(np.abs(y - g * a) ** 2)
    snr = abs(g) ** 2 * np.mean(np.abs(a) ** 2) / max(resid, 1e-300)
    brms = symbol_rate_hz / fs * math.sqrt(1 / 12 + rolloff**2 * (1 / 4 - 2 / math.pi**2))
    tstd = 1.0 / (2 * math.pi * brms * math.sqrt(max(2 * kk * snr, 1e-300)))
    return SyncResult(tau0=tau, coarse_delay=j, pslr=pslr, pslr_db=metrics["sync_pslr_db"],
                      inverted=bool(inverted), phase=float(np.angle(c)), sync_symbols=kk,
                      timing_std_samples=float(tstd), snr=float(snr))
