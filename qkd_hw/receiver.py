"""Host driver of the DSP receiver: read a recording, stream it through ``dsp.pipeline``,
estimate the parameters and the key rate, hand over the raw key.

``dsp`` does no file I/O; this module does the reading (``TraceReader``), converts the DSP's
lock failures into :class:`qkd_hw.errors.ReceiverLockError` and writes the raw key file.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from dsp.carrier import pilot_leakage_floor
from dsp.clipping import RailCounter
from dsp.errors import DspLockError
from dsp.estimation import Estimates, estimate_parameters
from dsp.pe import PairMoments, disclosed_mask
from dsp.pipeline import (
    Acquisition,
    LinkParameters,
    NoiseMeter,
    NoiseStats,
    ReceiverOptions,
    SignalStream,
    acquire,
    refine_clock_chain,
)
from qkd_hw.errors import ReceiverLockError
from qkd_hw.keyrate import KeyRate, KeyRateInputError, key_rate_from_estimates
from qkd_hw.raw_key import RawKeyWriter
from qkd_hw.sanity import (
    check_clipping,
    check_distinct_captures,
    check_estimates,
    check_modulation_variance,
    check_noise_levels,
    check_symbols,
)
from qkd_hw.trace_io import TraceReader

__all__ = ["ReceiverResult", "process_recording"]

DEFAULT_CHUNK = 1 << 22


@dataclass
class Diagnostics:
    """Small samples for plots (never key material beyond a few disclosed PE symbols)."""

    constellation_x: np.ndarray = field(default_factory=lambda: np.empty(0, np.complex64))
    constellation_y: np.ndarray = field(default_factory=lambda: np.empty(0, np.complex64))
    pilot_phase_t_s: list = field(default_factory=list)
    pilot_phase_rad: list = field(default_factory=list)
    spectrum_f_hz: np.ndarray = field(default_factory=lambda: np.empty(0))
    spectrum_db: np.ndarray = field(default_factory=lambda: np.empty(0))


@dataclass
class ReceiverResult:
    """Everything ``process_recording`` measured (SNU unless named otherwise)."""

    path: str
    estimates: Estimates
    key_rate: KeyRate | None
    key_rate_error: str | None
    asymptotic_key_rate_bits_per_symbol: float | None
    acquisition: Acquisition
    n0_codes2: float
    n0_std_codes2: float
    shot_noise: NoiseStats
    electronic_noise: NoiseStats
    electronic_noise_snu: float
    electronic_noise_std_snu: float
    residual_phase_rad: float
    frequency_offset_hz: float
    pilot_leakage_floor_snu: float
    n_received: int
    n_pe_symbols: int
    n_key_symbols: int
    samples: int
    seconds: float
    timing_log: list
    raw_key_path: str | None
    diagnostics: Diagnostics
    #: seed of the disclosed subset (``dsp.pe.disclosed_mask``)
    pe_seed: int
    #: wall seconds per stage: "acquisition" (head read, lock, clock probe), "noise", "signal"
    #: (the streaming pass; of which "signal_read_wait" waiting for the reader thread,
    #: "signal_pe_sums" the pair sums, "pilot", "phase", "matched_filter", "timing" the DSP),
    #: "estimation" (incl. the raw-key file)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    #: per capture: fraction of samples at the ADC rails as measured here (``dsp.clipping``)
    #: and as the writer recorded it (``clipped_fraction`` attribute, None if absent)
    clipped_fraction: dict[str, float] = field(default_factory=dict)
    clipped_fraction_recorded: dict[str, float | None] = field(default_factory=dict)
    #: per noise capture: its volts_per_code over the signal's (its variance was scaled by
    #: the square to the signal's codes)
    volts_per_code_ratio: dict[str, float] = field(default_factory=dict)

    def calibration_std(self) -> tuple[float | None, float]:
        """sd of xi (SNU; None when t_hat = 0) and of T from the shot-noise calibration alone
        (outside the PE bounds, conventions.md)."""
        return _calibration_std(self.estimates, self.shot_noise, self.n0_codes2,
                                self.n0_std_codes2)

    def summary(self) -> dict[str, Any]:
        """Flat, JSON-ready dict (the ``--json`` output of ``qkd-hw process``)."""
        e, a = self.estimates, self.acquisition
        d: dict[str, Any] = {
            "path": self.path,
            "transmittance": e.transmittance, "transmittance_min": e.transmittance_min,
            "excess_noise_snu": e.excess_noise_snu, "excess_noise_max_snu": e.excess_noise_max_snu,
            "excess_noise_out_snu": e.excess_noise_out_snu,
            "electronic_noise_snu": self.electronic_noise_snu,
            "electronic_noise_std_snu": self.electronic_noise_std_snu,
            # the shot-noise calibration's own uncertainty, outside the PE bounds
            "excess_noise_calibration_std_snu": self.calibration_std()[0],
            "transmittance_calibration_std": self.calibration_std()[1],
            "t_eff": e.t_eff, "t_eff_min": e.t_eff_min, "t_eff_std": e.t_eff_std,
            "snr": e.snr, "sigma2": e.sigma2, "sigma2_max": e.sigma2_max,
            "n_pe": e.n_pe, "eps_pe": e.eps_pe,
            "key_rate_bits_per_symbol": (self.key_rate.key_rate_bits_per_symbol
                                         if self.key_rate else None),
            "key_rate_error": self.key_rate_error,
            "asymptotic_key_rate_bits_per_symbol": self.asymptotic_key_rate_bits_per_symbol,
            "frequency_offset_hz": self.frequency_offset_hz,
            "acquisition_frequency_offset_hz": a.pilot.frequency_offset_hz,
            "coarse_frequency_offset_hz": a.pilot.coarse_offset_hz,
            "linewidth_hz": a.pilot.linewidth_hz,
            "delay_samples": a.tau0,
            "clock_offset_ppm": a.clock_offset_ppm,
            "clock_offset_std_ppm": a.clock_offset_std_ppm,
            "clock_probe_first_samples": [p[0] for p in a.clock_probes],
            "spectral_inversion": a.sync.inverted,
            "residual_phase_rad": self.residual_phase_rad,
            "pilot_leakage_floor_snu": self.pilot_leakage_floor_snu,
            "n0_codes2": self.n0_codes2, "n0_std_codes2": self.n0_std_codes2,
            "lock": a.lock_metrics,
            "pilot_cn0_dbhz": list(a.pilot.pilot_cn0_dbhz),
            "carrier": {"method": a.carrier.method, "decimation": a.carrier.decimation,
                        "window_blocks": a.carrier.window, "bandwidth_hz": a.carrier.bandwidth_hz,
                        "predicted_phase_var_rad2": a.carrier.predicted_phase_var},
            "n_symbols_received": self.n_received, "n_pe_symbols": self.n_pe_symbols,
            "n_key_symbols": self.n_key_symbols,
            "samples": self.samples, "seconds": self.seconds,
            "throughput_msps": self.samples / self.seconds / 1e6 if self.seconds > 0 else None,
            "stage_seconds": dict(self.stage_seconds),
            "raw_key_path": self.raw_key_path,
            "pe_seed": self.pe_seed,
            "clipped_fraction": dict(self.clipped_fraction),
            "clipped_fraction_recorded": dict(self.clipped_fraction_recorded),
            "volts_per_code_ratio": dict(self.volts_per_code_ratio),
        }
        if self.key_rate is not None:
            d["key_rate"] = {k: v for k, v in self.key_rate.as_dict().items()
                             if isinstance(v, int | float | str | None)}
        return d

    def estimates_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self.estimates).items()
                if isinstance(v, int | float) and not isinstance(v, bool)}


def _calibration_std(e: Estimates, sn: NoiseStats, n0: float,
                     n0_std: float) -> tuple[float | None, float]:
    # xi = (sigma2 - V_shot) / t^2 in ADC codes, so the sd of the shot-noise variance moves
    # xi by sd(V_shot)/N0 / t^2 (v_el's cancels), and T = t^2/gain by its relative sd of N0
    xi_std = sn.variance_std / n0 / e.t_eff**2 if e.t_eff else None
    return xi_std, e.transmittance * n0_std / n0


class _SymbolBlocks:
    """Alice's symbols and the disclosure flags in aligned blocks of ``BLOCK`` tx indices,
    read once (the timing loop and the parameter estimation both need them) and ahead of use
    by the reader thread. Thread-safe; blocks below the consumer's position are dropped."""

    BLOCK = 1 << 18

    def __init__(self, reader: TraceReader, n_symbols: int, fraction: float, seed: int) -> None:
        self.reader = reader
        self.n = int(n_symbols)
        self.fraction = float(fraction)
        self.seed = int(seed)
        self._blocks: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()
        self._low = 0   # lowest block still needed
        self._prefetched = -1   # highest block prefetch() loaded

    def _block(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            got = self._blocks.get(b)
        if got is None:
            lo, hi = b * self.BLOCK, min((b + 1) * self.BLOCK, self.n)
            got = (_checked_symbols(self.reader, lo, hi),
                   disclosed_mask(lo, hi, fraction=self.fraction, seed=self.seed))
            with self._lock:
                if b >= self._low:
                    self._blocks[b] = got
        return got

    def _take(self, k0: int, k1: int, which: int) -> np.ndarray:
        if k1 <= k0:
            return np.empty(0, np.complex64 if which == 0 else bool)
        if k0 < 0 or k1 > self.n:
            raise ValueError(f"symbols [{k0}, {k1}) outside [0, {self.n})")
        parts = []
        for b in range(k0 // self.BLOCK, (k1 - 1) // self.BLOCK + 1):
            base = b * self.BLOCK
            parts.append(self._block(b)[which][max(k0 - base, 0):k1 - base])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def symbols(self, k0: int, k1: int) -> np.ndarray:
        """Alice's symbols ``[k0, k1)`` (complex64, SNU); like ``TraceReader.symbols``."""
        return self._take(int(k0), int(k1), 0)

    def mask(self, k0: int, k1: int) -> np.ndarray:
        """``disclosed_mask(k0, k1, ...)`` (the flags do not depend on the blocking)."""
        return self._take(int(k0), int(k1), 1)

    def release_below(self, k: int) -> None:
        """The consumer will not ask for symbols below ``k`` any more (the timing loop may
        still re-read the block it is in)."""
        with self._lock:
            self._low = max(self._low, int(k) // self.BLOCK - 1)
            for b in [b for b in self._blocks if b < self._low]:
                del self._blocks[b]

    def prefetch(self, k: int) -> None:
        """Make sure every block up to the one holding symbol ``k`` (clipped to the
        recording) is loaded: a chunk of samples can span several blocks."""
        k = min(max(int(k), 0), self.n - 1)
        for b in range(max(self._prefetched + 1, self._low), k // self.BLOCK + 1):
            self._block(b)
            self._prefetched = b


def _read_ahead(chunks: Iterator[tuple[np.ndarray, int]],
                after_read: Callable[[int], None] | None = None,
                waited: dict[str, float] | None = None) -> Iterator[tuple[np.ndarray, int]]:
    """Yield the ``(store, start)`` items of ``chunks`` (``_stores``: the chunk is
    ``store[start:]``) while a worker thread already prepares the next one.

    The numba kernels release the GIL (``nogil``), so the read of chunk k+1 overlaps the
    processing of chunk k. ``after_read(n_end)`` runs in the worker after each read (``n_end``:
    samples read so far), e.g. to load the symbols the chunk will need. Errors are re-raised
    here, at the chunk they belong to; leaving the loop early waits for the pending read (the
    file must not be closed under it). The time spent waiting for the reader is added to
    ``waited["signal_read_wait"]``.
    """
    n_end = 0

    def step():
        nonlocal n_end
        item = next(chunks, None)
        if item is not None:
            n_end += item[0].shape[0] - item[1]
            if after_read is not None:
                after_read(n_end)
        return item

    with ThreadPoolExecutor(1, thread_name_prefix="qkd-hw-read") as pool:
        pending = pool.submit(step)
        while True:
            t0 = time.perf_counter()
            item = pending.result()
            if waited is not None:
                waited["signal_read_wait"] = (waited.get("signal_read_wait", 0.0)
                                              + time.perf_counter() - t0)
            if item is None:
                return
            pending = pool.submit(step)
            yield item


def _stores(reader: TraceReader, chunk_samples: int, room: int,
            mapped: bool = True) -> Iterator[tuple[np.ndarray, int]]:
    """The signal capture chunk by chunk as ``(store, start)``, the chunk being
    ``store[start:]`` and ``store[:start]`` room for the samples the stream keeps in front of
    it (``SignalStream.feed_in_place``), so that no chunk is copied again:

    * a range stored in one piece is mapped (``TraceReader.map_samples``) together with the
      ``room`` samples before it: the chunk is neither read nor copied, and the stream's
      kept samples go into the map's private copy-on-write pages in front of it (measured on
      a 2e8-sample recording: 5 % faster than reading, 0.73 vs 0.77 s median of 8);
    * otherwise the chunk is read behind ``room`` free samples of one of three rotating
      buffers, and the stream copies its kept samples in front (it reads buffer k while k+1
      waits and the reader thread fills k+2).
    """
    info = reader.adc["signal"]
    n = int(chunk_samples)
    if n <= 0:
        raise ValueError(f"chunk_samples must be > 0, got {chunk_samples!r}")
    bufs: list[np.ndarray] = []
    for i, pos in enumerate(range(0, info.length, n)):
        m = min(n, info.length - pos)
        first = max(pos - room, 0)
        view = reader.map_samples("signal", first, pos + m) if mapped else None
        if view is not None:
            yield view, pos - first
            continue
        if not bufs:
            bufs = [np.empty(room + min(n, info.length), info.dtype) for _ in range(3)]
        store = bufs[i % 3][:room + m]
        reader.read_into("signal", store[room:], pos)
        yield store, room


def _checked_symbols(reader: TraceReader, start: int, stop: int) -> np.ndarray:
    """``reader.symbols(start, stop)`` through ``sanity.check_symbols``."""
    x = reader.symbols(start, stop)
    check_symbols(reader.path, x, start, reader.tx.modulation_variance_snu)
    return x


def _rails_counted(chunks: Iterator[tuple[np.ndarray, int]],
                   counter: RailCounter) -> Iterator[tuple[np.ndarray, int]]:
    """``chunks`` (``_stores`` items), each chunk fed to ``counter`` first: advanced by
    ``_read_ahead``'s worker, the count overlaps the DSP of the chunk before."""
    for store, start in chunks:
        counter.feed(store[start:])
        yield store, start


def _link(reader: TraceReader) -> LinkParameters:
    tx = reader.tx
    return LinkParameters(
        sample_rate_hz=reader.sample_rate_hz, symbol_rate_hz=tx.symbol_rate_hz,
        rolloff=tx.rolloff, signal_frequency_hz=tx.signal_frequency_hz,
        pilot_frequencies_hz=tuple(tx.pilot_frequencies_hz),
        modulation_variance_snu=tx.modulation_variance_snu, efficiency=tx.efficiency,
        detection=tx.detection, n_symbols=tx.n_symbols)


def process_recording(path: str | os.PathLike[str], *, options: ReceiverOptions | None = None,
                      pe_fraction: float = 0.5, seed: int | None = None,
                      eps_pe: float = 1e-10,
                      beta: float = 0.95, raw_key_out: str | os.PathLike[str] | None = None,
                      chunk_samples: int = DEFAULT_CHUNK,
                      progress: Callable[[int], None] | None = None,
                      diagnostics: bool = False, map_file: bool = True) -> ReceiverResult:
    """Run the receiver over one recording.

    Parameters
    ----------
    path : path of a format-v1 recording.
    options : ReceiverOptions, optional
    pe_fraction, seed : disclosed fraction (``1`` discloses everything) and the seed of the
        disclosed subset. ``None`` (default) draws a fresh random seed: a subset fixed in
        advance would be known to Eve, who could then spare exactly the disclosed symbols
        (Leverrier et al. 2010 assume a random subset). The seed used is ``pe_seed`` in the
        result; pass it to reproduce a run.
    eps_pe, beta : PE failure probability and reconciliation efficiency of the key rate.
    raw_key_out : write the raw key (undisclosed symbols) there, mode 0600.
    chunk_samples : streaming chunk size (any positive number).
    progress : called with the number of samples just processed.
    map_file : map the signal capture where the file stores it in one piece (the default;
        ``_stores``) instead of reading it. False reads it: for a file system where maps are
        slow, or a file that someone may truncate while it is processed (a mapped page past
        the new end would kill the process with SIGBUS; a read fails with an error).

    Raises
    ------
    ReceiverLockError
        Pilot not found or synchronisation failed (``.metrics`` holds the lock metrics).
    RecordingSanityError
        The recording is broken in a way the lock does not see (``qkd_hw.sanity``: clipped
        captures, a noise capture that is the signal, estimates outside physics); raised
        before any key rate or raw key.
    TraceFormatError
        The file does not follow the format.
    """
    if not 0 < float(pe_fraction) <= 1:
        raise ValueError(f"pe_fraction must be in (0, 1], got {pe_fraction!r}")
    if not 0 < float(beta) <= 1:
        raise ValueError(f"beta (reconciliation efficiency) must be in (0, 1], got {beta!r}")
    if not 0 < float(eps_pe) < 1:
        raise ValueError(f"eps_pe must be in (0, 1), got {eps_pe!r}")
    if seed is None:
        seed = secrets.randbits(63)
    elif isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"seed must be an integer or None, got {seed!r}")
    if raw_key_out is not None:
        if not os.fspath(raw_key_out):
            raise ValueError("raw_key_out is an empty file name")
        if os.path.exists(raw_key_out) and os.path.exists(path) and os.path.samefile(
                raw_key_out, path):
            raise ValueError(f"raw_key_out {os.fspath(raw_key_out)!r} is the recording itself")
    # the raw key streams to its file block by block (memory must not grow with the
    # recording); the common residual phase is applied in place at the end. On any error
    # the writer is aborted and nothing appears at raw_key_out.
    with contextlib.ExitStack() as stack:
        key_file = (stack.enter_context(RawKeyWriter(raw_key_out)) if raw_key_out is not None
                    else None)
        return _process(path, options or ReceiverOptions(), pe_fraction=pe_fraction,
                        seed=int(seed),
                        eps_pe=eps_pe, beta=beta, key_file=key_file,
                        chunk_samples=chunk_samples, progress=progress,
                        diagnostics=diagnostics, map_file=map_file)


def _process(path: str | os.PathLike[str], opt: ReceiverOptions, *, pe_fraction: float,
             seed: int, eps_pe: float, beta: float, key_file: RawKeyWriter | None,
             chunk_samples: int, progress: Callable[[int], None] | None,
             diagnostics: bool, map_file: bool) -> ReceiverResult:
    t_start = time.perf_counter()
    stages: dict[str, float] = {}
    tick = progress or (lambda n: None)
    with TraceReader(path) as reader:
        link = _link(reader)
        sig_len = reader.adc["signal"].length
        head_n = min(sig_len, opt.head_samples(link))
        head = reader.read("signal", 0, head_n)
        k_sync = min(opt.sync_symbols, link.n_symbols)
        n_samples = sum(a.length for a in reader.adc.values())
        sync_symbols = reader.symbols(0, k_sync)
        check_symbols(path, sync_symbols, 0, link.modulation_variance_snu)
        check_modulation_variance(path, sync_symbols, link.modulation_variance_snu,
                                  f"first {k_sync} symbols")
        try:
            acq = acquire(head, sync_symbols, link, opt)
            if opt.clock_tracking:
                acq = refine_clock_chain(acq, sig_len,
                                         lambda a, b: reader.read("signal", a, b),
                                         lambda a, b: _checked_symbols(reader, a, b))
        except DspLockError as exc:
            raise ReceiverLockError(f"{path}: receiver not locked: {exc}", exc.metrics) from exc
        # after the lock: a "signal" without pilot is a lock failure whatever else it is
        check_distinct_captures(reader)
        diag = Diagnostics()
        if diagnostics:
            _spectrum(head, link.sample_rate_hz, diag)
        del head
        t_mark = time.perf_counter()
        stages["acquisition"] = t_mark - t_start

        # shot-noise units: both captures through exactly the signal's chain
        noise = {}
        rails = {name: RailCounter() for name in reader.adc}
        recorded = {name: info.clipped_fraction for name, info in reader.adc.items()}
        clipped: dict[str, float] = {}
        vpc_ratio: dict[str, float] = {}
        for name in ("shot_noise", "electronic_noise"):
            meter = NoiseMeter(acq)
            for chunk in reader.iter_chunks(name, chunk_samples):
                meter.feed(chunk)
                rails[name].feed(chunk)
                tick(chunk.shape[0])
            clipped[name] = rails[name].stats.clipped_fraction(reader.adc[name].dtype)
            check_clipping(path, name, clipped[name], recorded[name])
            # a capture taken at another vertical range: its variance in the signal's codes
            # (trace-format.md: bring the captures to one scale with the ratio)
            vpc_ratio[name] = (reader.adc[name].volts_per_code
                               / reader.adc["signal"].volts_per_code)
            noise[name] = _rescaled(meter.result(), vpc_ratio[name])
        sn, el = noise["shot_noise"], noise["electronic_noise"]
        stages["noise"] = time.perf_counter() - t_mark
        t_mark = time.perf_counter()
        check_noise_levels(path, sn.variance, el.variance)
        n0 = sn.variance - el.variance
        n0_std = math.hypot(sn.variance_std, el.variance_std)
        vel = el.variance / n0
        # sd of Var(el)/N0 to first order, written without dividing by Var(el) (0 for a
        # noiseless float capture)
        vel_std = math.hypot(el.variance_std, el.variance * n0_std / n0) / n0
        scale = np.float32(1.0 / math.sqrt(n0))

        tx = _SymbolBlocks(reader, link.n_symbols, pe_fraction, seed)
        stream = SignalStream(acq, alice=tx.symbols)
        moments = PairMoments()
        n_rx = 0

        def consume(blocks):
            nonlocal n_rx
            for k0, y in blocks:
                k1 = k0 + y.shape[0]
                x = tx.symbols(k0, k1)
                m = tx.mask(k0, k1)
                moments.update(x, y, m, float(scale))
                if key_file is not None:
                    keep = ~m
                    key_file.append(y[keep] * scale, np.flatnonzero(keep) + k0,
                                    np.flatnonzero(m) + k0)
                if diagnostics and diag.constellation_y.shape[0] < 4000:
                    y = y * scale
                    take = min(4000 - diag.constellation_y.shape[0], int(m.sum()))
                    diag.constellation_x = np.concatenate([diag.constellation_x, x[m][:take]])
                    diag.constellation_y = np.concatenate([diag.constellation_y, y[m][:take]])
                n_rx += y.shape[0]

        def load_symbols(n_end: int) -> None:   # in the reader thread
            tx.prefetch(int((n_end - acq.tau0) / acq.period))

        t_consume = 0.0
        room = stream.room_samples()
        # closing(): on an error the pending read finishes before the file is closed
        stores = _rails_counted(_stores(reader, chunk_samples, room, map_file),
                                rails["signal"])
        with contextlib.closing(_read_ahead(stores, load_symbols, stages)) as chunks:
            for store, start in chunks:
                chunk = store[start:]
                with _lock_kept(path):
                    blocks = stream.feed_in_place(store, start)
                t0 = time.perf_counter()
                consume(blocks)
                t_consume += time.perf_counter() - t0
                tx.release_below(stream.k_next)
                if diagnostics:
                    _phase_trace(stream, link.sample_rate_hz, diag)
                tick(chunk.shape[0])
        with _lock_kept(path):
            tail = stream.finish()
        consume(tail)
        stages["signal"] = time.perf_counter() - t_mark
        stages["signal_pe_sums"] = t_consume
        clipped = {"signal": rails["signal"].stats.clipped_fraction(reader.adc["signal"].dtype),
                   **clipped}
        check_clipping(path, "signal", clipped["signal"], recorded["signal"])
        stages.update(stream.stage_seconds)
        t_mark = time.perf_counter()

    if moments.count < 2:
        raise ReceiverLockError(f"{path}: only {moments.count} symbols disclosed for parameter "
                                "estimation", acq.lock_metrics)
    theta = moments.phase()
    acc = moments.accumulator(link.detection, theta)
    est = estimate_parameters(acc, modulation_variance_snu=link.modulation_variance_snu,
                              efficiency=link.efficiency, electronic_noise_snu=vel, eps_pe=eps_pe,
                              fitted_phase=True)
    # before the key rate: it would clamp xi_max < 0 to 0 and T > 1 to 1 and certify a key
    xi_cal_std, t_cal_std = _calibration_std(est, sn, n0, n0_std)
    check_estimates(path, est, xi_cal_std=xi_cal_std if xi_cal_std is not None else math.inf,
                    t_cal_std=t_cal_std, vel=vel, vel_std=vel_std, clipped=clipped)
    kr, kr_err = None, None
    n_pe_sym = moments.count
    try:
        kr = key_rate_from_estimates(est, beta=beta, block_size=n_rx,
                                     n_key=n_rx - n_pe_sym if n_rx > n_pe_sym else None)
    except (KeyRateInputError, ValueError) as exc:
        kr_err = str(exc)
    kr_asym = None
    # the asymptotic rate at the point estimates, always useful to an engineer
    with contextlib.suppress(KeyRateInputError, ValueError):
        kr_asym = key_rate_from_estimates(est, beta=beta).key_rate_bits_per_symbol
    rot = np.complex64(np.exp(-1j * theta))
    if diagnostics:
        diag.constellation_y = diag.constellation_y * rot
    raw_path = None
    n_key = n_rx - n_pe_sym
    if key_file is not None:
        if n_key <= 0:
            raise ValueError("no undisclosed symbols left for the raw key "
                             f"(pe_fraction={pe_fraction}): nothing to write")
        est_d = {k: float(v) for k, v in asdict(est).items()
                 if isinstance(v, int | float) and not isinstance(v, bool)}
        est_d["key_rate_bits_per_symbol"] = (kr.key_rate_bits_per_symbol if kr else float("nan"))
        if not math.isfinite(est_d["key_rate_bits_per_symbol"]):
            est_d["key_rate_bits_per_symbol"] = 0.0
        est_d = {k: v for k, v in est_d.items() if math.isfinite(v)}
        key_file.commit(est_d, rotation=complex(rot))
        raw_path = str(key_file.file)
    seconds = time.perf_counter() - t_start
    stages["estimation"] = time.perf_counter() - t_mark
    return ReceiverResult(
        path=str(path), estimates=est, key_rate=kr, key_rate_error=kr_err,
        asymptotic_key_rate_bits_per_symbol=kr_asym, acquisition=acq,
        n0_codes2=n0, n0_std_codes2=n0_std, shot_noise=sn, electronic_noise=el,
        electronic_noise_snu=vel, electronic_noise_std_snu=vel_std, residual_phase_rad=theta,
        frequency_offset_hz=stream.frequency_offset_hz,
        pilot_leakage_floor_snu=pilot_leakage_floor(
            pilot_amplitudes=acq.pilot.pilot_amplitudes,
            pilot_frequencies_hz=[f + acq.pilot.frequency_offset_hz
                                  for f in link.pilot_frequencies_hz],
            linewidth_hz=acq.pilot.linewidth_hz, mixer_hz=acq.mixer_hz,
            symbol_rate_hz=link.symbol_rate_hz, rolloff=link.rolloff,
            fs=link.sample_rate_hz, shot_noise_var=2 * n0, t_eff=abs(est.t_eff))
        if est.t_eff != 0 else math.inf,
        n_received=n_rx, n_pe_symbols=n_pe_sym, n_key_symbols=n_key,
        samples=n_samples, seconds=seconds,
        timing_log=stream.timing_log, raw_key_path=raw_path, diagnostics=diag,
        pe_seed=seed, stage_seconds=stages, clipped_fraction=clipped,
        clipped_fraction_recorded=recorded, volts_per_code_ratio=vpc_ratio)


def _rescaled(stats: NoiseStats, vpc_ratio: float) -> NoiseStats:
    """``stats`` of a capture whose codes are ``vpc_ratio`` times the signal's, in the
    signal's codes."""
    if vpc_ratio == 1.0:
        return stats
    g = vpc_ratio * vpc_ratio
    return replace(stats, variance=stats.variance * g, variance_std=stats.variance_std * g)


@contextlib.contextmanager
def _lock_kept(path: str | os.PathLike[str]) -> Iterator[None]:
    """The stream's DspLockError (pilot or synchronisation lost mid-recording) as the
    receiver's ReceiverLockError, with the lock metrics."""
    try:
        yield
    except DspLockError as exc:
        raise ReceiverLockError(f"{path}: receiver lost lock: {exc}", exc.metrics) from exc


def _spectrum(head: np.ndarray, fs: float, diag: Diagnostics) -> None:
    n = 1 << 14
    m = head.shape[0] // n
    if m < 1:
        return
    seg = head[:m * n].astype(np.float64).reshape(m, n)
    p = np.mean(np.abs(np.fft.rfft((seg - seg.mean()) * np.hanning(n), axis=1)) ** 2, axis=0)
    diag.spectrum_f_hz = np.fft.rfftfreq(n, 1 / fs)
    diag.spectrum_db = 10 * np.log10(p + 1e-30)


def _phase_trace(stream: SignalStream, fs: float, diag: Diagnostics) -> None:
    if stream.ph.shape[0] == 0:
        return
    step = max(1, stream.ph.shape[0] // 200)
    j = np.arange(0, stream.ph.shape[0], step)
    diag.pilot_phase_t_s.extend(((stream.ph_j0 + j) * stream.D / fs).tolist())
    diag.pilot_phase_rad.extend(stream.ph[j].tolist())
