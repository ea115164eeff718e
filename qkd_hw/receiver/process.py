"""The receiver's orchestrator: acquire -> calibrate -> stream -> estimate -> key rate -> raw key.

Each stage is one function below; the samples and Alice's symbols come from a
:class:`qkd_hw.receiver.source.RecordingSource`, the DSP from ``dsp``, the physical sanity
checks from ``qkd_hw.sanity``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numba
import numpy as np

from dsp.clipping import RailCounter
from dsp.errors import DspLockError
from dsp.lock import Acquisition
from dsp.noise import NoiseMeter, NoiseStats
from dsp.options import ReceiverOptions
from dsp.pe import PairMoments
from dsp.pipeline import SignalStream, acquire, refine_clock_chain
from dsp.snu import calibrate_snu, rescaled
from dsp.threads import ThreadCount, WorkShare
from dsp.vocabulary import DEFAULT_BETA, DEFAULT_EPS_PE
from qkd_hw.errors import ReceiverLockError
from qkd_hw.malloc_arenas import limit_malloc_arenas
from qkd_hw.raw_key import RawKeyWriter
from qkd_hw.receiver.diagnostics import Diagnostics
from qkd_hw.receiver.estimate import Estimation, estimate, raw_key_estimates
from qkd_hw.receiver.hdf5_source import Hdf5Source
from qkd_hw.receiver.readahead import read_ahead
from qkd_hw.receiver.result import ReceiverResult
from qkd_hw.receiver.source import RecordingSource
from qkd_hw.receiver.symbols import SymbolBlocks
from qkd_hw.sanity import (
    check_clipping,
    check_distinct_captures,
    check_modulation_variance,
    check_noise_levels,
    check_symbols,
)

__all__ = ["DEFAULT_CHUNK", "process_recording", "process_source"]

#: samples per streaming chunk (``qkd_hw.sizes`` budgets memory for it)
DEFAULT_CHUNK = 1 << 22
NOISE_CAPTURES = ("shot_noise", "electronic_noise")


@dataclass
class _Run:
    """Settings and bookkeeping of one run."""

    source: RecordingSource
    opt: ReceiverOptions
    pe_fraction: float
    seed: int
    eps_pe: float
    beta: float
    key_file: RawKeyWriter | None
    chunk_samples: int
    tick: Callable[[int], None]
    diag: Diagnostics | None
    stages: dict[str, float] = field(default_factory=dict)
    rails: dict[str, RailCounter] = field(default_factory=dict)
    clipped: dict[str, float] = field(default_factory=dict)

    def checked_symbols(self, start: int, stop: int) -> np.ndarray:
        """Alice's symbols ``[start, stop)`` through ``sanity.check_symbols``."""
        x = self.source.symbols(start, stop)
        check_symbols(self.source.name, x, start, self.source.link.modulation_variance_snu)
        return x


@dataclass
class _SymbolSink:
    """Consumer of Bob's symbol blocks: the disclosed pairs' sums, the raw key, the plot."""

    tx: SymbolBlocks
    scale: np.float32
    key_file: RawKeyWriter | None
    diag: Diagnostics | None
    moments: PairMoments = field(default_factory=PairMoments)
    n_received: int = 0

    def consume(self, blocks: Iterable[tuple[int, np.ndarray]]) -> None:
        for k0, y in blocks:
            k1 = k0 + y.shape[0]
            x = self.tx.symbols(k0, k1)
            m = self.tx.mask(k0, k1)
            self.moments.update(x, y, m, float(self.scale))
            if self.key_file is not None:
                keep = ~m
                self.key_file.append(y[keep] * self.scale, np.flatnonzero(keep) + k0,
                                     np.flatnonzero(m) + k0, alice_symbols=x[keep])
            if self.diag is not None and not self.diag.constellation_full:
                self.diag.add_constellation(x, y * self.scale, m)
            self.n_received += y.shape[0]


def _check_arguments(pe_fraction: float, seed: int | None, eps_pe: float,
                     beta: float) -> int:
    """Validate the run's arguments; returns the seed (a fresh random one for None)."""
    if not 0 < float(pe_fraction) <= 1:
        raise ValueError(f"pe_fraction must be in (0, 1], got {pe_fraction!r}")
    if not 0 < float(beta) <= 1:
        raise ValueError(f"beta (reconciliation efficiency) must be in (0, 1], got {beta!r}")
    if not 0 < float(eps_pe) < 1:
        raise ValueError(f"eps_pe must be in (0, 1), got {eps_pe!r}")
    if seed is None:
        return secrets.randbits(63)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"seed must be an integer or None, got {seed!r}")
    return int(seed)


def process_recording(path: str | os.PathLike[str], *, options: ReceiverOptions | None = None,
                      pe_fraction: float = 0.5, seed: int | None = None,
                      eps_pe: float = DEFAULT_EPS_PE, beta: float = DEFAULT_BETA,
                      raw_key_out: str | os.PathLike[str] | None = None,
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
        ``hdf5_source.trace_stores``) instead of reading it. False reads it: for a file
        system where maps are slow, or a file that someone may truncate while it is processed
        (a mapped page past the new end would kill the process with SIGBUS; a read fails with
        an error).

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

    Notes
    -----
    With more than one numba thread the receiver sets glibc's malloc arena count to one, for
    the whole process (:mod:`qkd_hw.malloc_arenas`); a program that embeds it and wants its
    own threads' arenas sets ``QKD_HW_KEEP_MALLOC_ARENAS=1`` (or ``MALLOC_ARENA_MAX``).
    """
    seed = _check_arguments(pe_fraction, seed, eps_pe, beta)
    _check_key_name(raw_key_out)
    if raw_key_out is not None and os.path.exists(raw_key_out) and os.path.exists(path) \
            and os.path.samefile(raw_key_out, path):
        raise ValueError(f"raw_key_out {os.fspath(raw_key_out)!r} is the recording itself")
    with Hdf5Source(path, mapped=map_file) as source:
        return process_source(source, options=options, pe_fraction=pe_fraction, seed=seed,
                              eps_pe=eps_pe, beta=beta, raw_key_out=raw_key_out,
                              chunk_samples=chunk_samples, progress=progress,
                              diagnostics=diagnostics)


def _check_key_name(raw_key_out: str | os.PathLike[str] | None) -> None:
    if raw_key_out is not None and not os.fspath(raw_key_out):
        raise ValueError("raw_key_out is an empty file name")


def process_source(source: RecordingSource, *, options: ReceiverOptions | None = None,
                   pe_fraction: float = 0.5, seed: int | None = None,
                   eps_pe: float = DEFAULT_EPS_PE, beta: float = DEFAULT_BETA,
                   raw_key_out: str | os.PathLike[str] | None = None,
                   chunk_samples: int = DEFAULT_CHUNK,
                   progress: Callable[[int], None] | None = None,
                   diagnostics: bool = False) -> ReceiverResult:
    """Run the receiver over any :class:`~qkd_hw.receiver.source.RecordingSource` (an
    in-memory capture, a live digitizer); the arguments, result and errors are those of
    :func:`process_recording`."""
    seed = _check_arguments(pe_fraction, seed, eps_pe, beta)
    _check_key_name(raw_key_out)
    # the raw key streams to its file block by block (memory must not grow with the
    # recording); the common residual phase is applied in place at the end. On any error
    # the writer is aborted and nothing appears at raw_key_out.
    with contextlib.ExitStack() as stack:
        # one host holds both parties' data here: the raw key carries Alice's symbols too
        key_file = (stack.enter_context(RawKeyWriter(raw_key_out, alice=True))
                    if raw_key_out is not None
                    else None)
        run = _Run(source=source, opt=options or ReceiverOptions(), pe_fraction=pe_fraction,
                   seed=seed, eps_pe=eps_pe, beta=beta, key_file=key_file,
                   chunk_samples=chunk_samples, tick=progress or (lambda n: None),
                   diag=Diagnostics() if diagnostics else None)
        return _process(run)


def _process(run: _Run) -> ReceiverResult:
    if numba.get_num_threads() > 1:
        limit_malloc_arenas()   # before any thread of this run allocates
    src = run.source
    t_start = time.perf_counter()
    run.rails = {name: RailCounter() for name in NOISE_CAPTURES}   # the signal's: the pilot's
    acq = _acquire(run)
    t_mark = time.perf_counter()
    run.stages["acquisition"] = t_mark - t_start
    sn, el, vpc_ratio = _measure_noise(run, acq)
    run.stages["noise"] = time.perf_counter() - t_mark
    t_mark = time.perf_counter()
    check_noise_levels(src.name, sn.variance, el.variance)
    cal = calibrate_snu(sn, el)
    sink = _SymbolSink(SymbolBlocks(run.checked_symbols, src.link.n_symbols, run.pe_fraction,
                                    run.seed), cal.scale, run.key_file, run.diag)
    stream = _stream_signal(run, acq, sink)
    run.stages["signal"] = time.perf_counter() - t_mark
    t_mark = time.perf_counter()
    found = estimate(sink.moments, name=src.name, link=src.link, acq=acq, cal=cal, shot=sn,
                     eps_pe=run.eps_pe, beta=run.beta, n_received=sink.n_received,
                     clipped=run.clipped)
    n_key = sink.n_received - sink.moments.count
    raw_path = _commit_raw_key(run, found, n_key)
    seconds = time.perf_counter() - t_start
    run.stages["estimation"] = time.perf_counter() - t_mark
    return ReceiverResult(
        path=src.name, estimates=found.estimates, key_rate=found.key_rate,
        key_rate_error=found.key_rate_error,
        asymptotic_key_rate_bits_per_symbol=found.asymptotic_key_rate_bits_per_symbol,
        acquisition=acq, n0_codes2=cal.n0, n0_std_codes2=cal.n0_std, shot_noise=sn,
        electronic_noise=el, electronic_noise_snu=cal.vel, electronic_noise_std_snu=cal.vel_std,
        excess_noise_calibration_std_snu=found.xi_calibration_std,
        transmittance_calibration_std=found.t_calibration_std,
        residual_phase_rad=found.residual_phase_rad,
        frequency_offset_hz=stream.frequency_offset_hz,
        pilot_leakage_floor_snu=found.pilot_leakage_floor_snu,
        n_received=sink.n_received, n_pe_symbols=sink.moments.count, n_key_symbols=n_key,
        samples=sum(c.length for c in src.captures.values()), seconds=seconds,
        timing_log=stream.timing_log, raw_key_path=raw_path,
        diagnostics=run.diag if run.diag is not None else Diagnostics(),
        pe_seed=run.seed, stage_seconds=run.stages, clipped_fraction=run.clipped,
        clipped_fraction_recorded={k: c.clipped_fraction for k, c in src.captures.items()},
        volts_per_code_ratio=vpc_ratio)


def _acquire(run: _Run) -> Acquisition:
    """Lock on the head of the signal capture (pilot, synchronisation, clock probes), after
    checking the symbols it uses; then refuse captures that are one and the same."""
    src, opt, link = run.source, run.opt, run.source.link
    sig_len = src.captures["signal"].length
    head = src.read("signal", 0, min(sig_len, opt.head_samples(link)))
    k_sync = min(opt.sync_symbols, link.n_symbols)
    sync_symbols = src.symbols(0, k_sync)
    check_symbols(src.name, sync_symbols, 0, link.modulation_variance_snu)
    check_modulation_variance(src.name, sync_symbols, link.modulation_variance_snu,
                              f"first {k_sync} symbols")
    try:
        acq = acquire(head, sync_symbols, link, opt)
        if opt.clock_tracking:
            acq = refine_clock_chain(acq, sig_len, lambda a, b: src.read("signal", a, b),
                                     run.checked_symbols)
    except DspLockError as exc:
        raise ReceiverLockError(f"{src.name}: receiver not locked: {exc}", exc.metrics) from exc
    # after the lock: a "signal" without pilot is a lock failure whatever else it is
    check_distinct_captures(src.name, src.same_capture)
    if run.diag is not None:
        run.diag.add_spectrum(head, link.sample_rate_hz)
    return acq


def _measure_noise(run: _Run, acq: Acquisition) -> tuple[NoiseStats, NoiseStats,
                                                         dict[str, float]]:
    """Both noise captures through exactly the signal's chain, at the signal's scale; their
    clipping checked. Returns the shot- and electronic-noise statistics and the captures'
    volts_per_code over the signal's."""
    src = run.source
    noise, vpc_ratio = {}, {}
    for name in NOISE_CAPTURES:
        meter = NoiseMeter(acq)
        threads = ThreadCount()   # per capture: the cost per sample differs between passes
        for chunk in src.chunks(name, run.chunk_samples):
            with threads.chunk(chunk.shape[0]):
                meter.feed(chunk)
            run.rails[name].feed(chunk)
            run.tick(chunk.shape[0])
        run.clipped[name] = run.rails[name].stats.clipped_fraction(src.captures[name].dtype)
        check_clipping(src.name, name, run.clipped[name], src.captures[name].clipped_fraction)
        # a capture taken at another vertical range: its variance in the signal's codes
        # (trace-format.md: bring the captures to one scale with the ratio)
        vpc_ratio[name] = (src.captures[name].volts_per_code
                           / src.captures["signal"].volts_per_code)
        noise[name] = rescaled(meter.result(), vpc_ratio[name])
    return noise["shot_noise"], noise["electronic_noise"], vpc_ratio


def _stream_signal(run: _Run, acq: Acquisition, sink: _SymbolSink) -> SignalStream:
    """One pass over the signal capture: the reader thread reads chunk k+1 (and the symbols
    it needs) while the stream processes chunk k into symbol blocks for ``sink``.

    With more than one numba thread (``numba.get_num_threads()`` of the caller) the pass is
    a pipeline of serial kernels: the reader thread also runs the pilot stage
    (down-conversion, tracker) of chunk k+1 while this thread runs the matched filter, timing
    loop and sums of chunk k, with a helper thread taking pieces of either stage's kernels
    (``dsp.threads.WorkShare``: matched filter, early/late timing outputs, pilot
    down-conversion). Long serial runs of work instead of ~12 short parallel
    regions per chunk: no thread waits for a region's share of a descheduled thread, and the
    serial tracker and the Python between the kernels overlap the other stage. Every kernel
    sums over fixed task ranges: the numbers are those of one thread."""
    src, tx = run.source, sink.tx
    stream = SignalStream(acq, alice=tx.symbols)
    pipelined = numba.get_num_threads() > 1

    def load_symbols(n_end: int) -> None:   # in the reader thread
        tx.prefetch(int((n_end - acq.tau0) / acq.period))

    def with_phase(stores: Iterator[tuple[np.ndarray, int]]):   # runs in the reader thread
        numba.set_num_threads(1)   # thread-local: this thread's kernels run serially
        for store, start in stores:
            yield store, start, stream.pilot.push(store[start:])

    t_consume = 0.0
    # the rails are counted by the pilot kernel (stream.pilot.rails): no sweep of their own
    stores = src.signal_stores(run.chunk_samples, stream.room_samples())
    items = (with_phase(stores) if pipelined
             else ((store, start, None) for store, start in stores))
    # closing(): on an error the pending read finishes before the file is closed; the pilot
    # stage's lock error surfaces here, at its chunk, from the reader thread
    with contextlib.ExitStack() as stack:
        if pipelined:
            stream.share = stream.pilot.share = stack.enter_context(WorkShare())
            stack.callback(setattr, stream, "share", None)
            stack.callback(setattr, stream.pilot, "share", None)
        stack.enter_context(_lock_kept(src.name))
        chunks = stack.enter_context(contextlib.closing(read_ahead(items, load_symbols,
                                                                   run.stages)))
        for store, start, phase in chunks:
            # one numba thread: nothing to choose per chunk (``ThreadCount`` is for the noise
            # passes); more: the pipeline's serial kernels
            with _serial() if pipelined else contextlib.nullcontext():
                blocks = stream.feed_in_place(store, start, phase)
                t0 = time.perf_counter()
                sink.consume(blocks)
                t_consume += time.perf_counter() - t0
            tx.release_below(stream.k_next)
            if run.diag is not None:
                run.diag.add_phase(stream, src.link.sample_rate_hz)
            run.tick(store.shape[0] - start)
        with _serial() if pipelined else contextlib.nullcontext():
            tail = stream.finish()
        sink.consume(tail)
    run.stages["signal_pe_sums"] = t_consume
    run.clipped = {"signal": stream.pilot.rails.clipped_fraction(src.captures["signal"].dtype),
                   **run.clipped}
    check_clipping(src.name, "signal", run.clipped["signal"],
                   src.captures["signal"].clipped_fraction)
    run.stages.update(stream.stage_seconds)
    return stream


@contextlib.contextmanager
def _serial() -> Iterator[None]:
    """The block with one numba thread (of the calling thread)."""
    prev = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(prev)


def _commit_raw_key(run: _Run, found: Estimation, n_key: int) -> str | None:
    """Rotate the raw key by the residual phase and commit it with the estimates (also
    rotate the plot's disclosed symbols); the file's path, None without a key file."""
    rot = np.complex64(np.exp(-1j * found.residual_phase_rad))
    if run.diag is not None:
        run.diag.constellation_y = run.diag.constellation_y * rot
    if run.key_file is None:
        return None
    if n_key <= 0:
        raise ValueError("no undisclosed symbols left for the raw key "
                         f"(pe_fraction={run.pe_fraction}): nothing to write")
    run.key_file.commit(raw_key_estimates(found.estimates, found.key_rate),
                        rotation=complex(rot))
    return str(run.key_file.file)


@contextlib.contextmanager
def _lock_kept(name: str) -> Iterator[None]:
    """The stream's DspLockError (pilot or synchronisation lost mid-recording) as the
    receiver's ReceiverLockError, with the lock metrics."""
    try:
        yield
    except DspLockError as exc:
        raise ReceiverLockError(f"{name}: receiver lost lock: {exc}", exc.metrics) from exc
