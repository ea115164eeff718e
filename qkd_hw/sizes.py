"""What a recording asks of the receiver, checked before anything is allocated.

:class:`~qkd_hw.trace_io.TraceReader` calls :func:`check_processable` when it opens a
recording, so ``qkd-hw info`` (with or without ``--verify``) and ``qkd-hw process`` refuse
the same files with the same one-line error (``info --verify`` also asks
:func:`check_capture_holds_sync`):

* samples per symbol ``fs / symbol_rate_hz`` of at least 2 (the matched-filter bank,
  ``dsp.rrc.MatchedFilterBank``, and ``dsp.pipeline.LinkParameters`` need it), and a
  roll-off > 0 (the automatic span ``ReceiverOptions.span`` divides by it);
* the quantum band ``signal_frequency_hz +- (1 + rolloff) symbol_rate_hz / 2`` inside
  ``[0, fs/2]`` and no pilot inside it;
* the receiver's working memory (:func:`receiver_memory_bytes`) within the memory this
  process may use (:func:`available_memory_bytes`).

The memory figures are upper estimates calibrated on measured peaks (maximum RSS of
``process_recording`` and tracemalloc of the bank) at 10-800 samples per symbol; they
overestimate by 1.4-2x there, so a refusal is never a close call.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsp.rrc import LS_DESIGN_NODES, LS_MAX_TAPS
from qkd_hw._h5check import attr_where, fail
from qkd_hw.errors import ResourceError

#: samples per symbol the receiver needs at least (MatchedFilterBank, LinkParameters)
MIN_SAMPLES_PER_SYMBOL = 2.0
#: interpreter, numpy, numba and h5py (~175 MB RSS) and the first run's JIT compilation
#: (basic.h5, 1M samples, empty numba cache: 325 MB peak RSS)
BASE_BYTES = 400 << 20
#: peak bytes per entry of the matched-filter bank while it is built (measured 100.0:
#: float64 tau and pulse, complex128 taps and first-order taps, their float32 copies)
BANK_BYTES_PER_ENTRY = 100
#: the least-squares taps (``dsp.rrc.ls_matched_taps``, default) and their bank: bytes per
#: table entry, per tap^2, per designed offset x tap x pulse, and fixed (fitted to tracemalloc
#: peaks: 1.01-1.65x of them at 6.7-100 samples per symbol, spans 12-32)
LS_BYTES_PER_ENTRY, LS_BYTES_PER_TAP2, LS_BYTES_PER_PULSE_TAP, LS_BYTES_FIXED = 100, 13, 10, 1e6
#: acquisition working memory per head sample (measured 5-80 B incl. numba allocations)
HEAD_BYTES_PER_SAMPLE = 40
#: streaming working memory per chunk sample (measured ~36 B at 4M-sample chunks)
STREAM_BYTES_PER_SAMPLE = 40
#: the receiver's streaming chunk (qkd_hw.receiver.DEFAULT_CHUNK; a test keeps them equal)
STREAM_CHUNK_SAMPLES = 1 << 22


@dataclass(frozen=True)
class MemoryNeed:
    """Working memory of a receiver run, bytes, by part."""

    bank: float
    head: float
    stream: float

    @property
    def total(self) -> float:
        # the bank lives through both phases; head and stream buffers do not overlap
        return BASE_BYTES + self.bank + max(self.head, self.stream)


def gib(n: float) -> str:
    """``n`` bytes as a short GiB figure for messages."""
    return f"{n / 2**30:.3g} GiB"


def receiver_memory_bytes(*, samples_per_symbol: float, rolloff: float, n_symbols: int,
                          signal_length: int, options: Any = None,
                          chunk_samples: int = STREAM_CHUNK_SAMPLES) -> MemoryNeed:
    """Working memory of ``process_recording`` for these parameters (upper estimate).

    Parameters
    ----------
    samples_per_symbol : float
        ``fs / symbol_rate_hz``.
    rolloff : float
        RRC roll-off (> 0), sets the default matched-filter span.
    n_symbols, signal_length : int
        ``/tx/symbols`` count and ``/adc/signal`` length.
    options : dsp.pipeline.ReceiverOptions, optional
        Defaults as in ``qkd-hw process``.
    chunk_samples : int
        Streaming chunk.

    Returns
    -------
    MemoryNeed
    """
    from dsp.pipeline import ReceiverOptions

    opt = options or ReceiverOptions()
    sps = float(samples_per_symbol)
    span = opt.span(rolloff)
    taps = span * sps + 2.0   # 2 ceil(span sps / 2), in float: no overflow for absurd rates
    bank = float(BANK_BYTES_PER_ENTRY * int(opt.n_phases)) * taps
    if opt.taper is None and taps <= LS_MAX_TAPS + 2:
        nodes = min(LS_DESIGN_NODES, int(opt.n_phases)) // 2 + 2
        design = (LS_BYTES_PER_ENTRY * int(opt.n_phases) * taps + LS_BYTES_PER_TAP2 * taps * taps
                  + LS_BYTES_PER_PULSE_TAP * nodes * taps * (taps / sps + 35) + LS_BYTES_FIXED)
        bank = max(bank, design)
    k = min(int(opt.sync_symbols), int(n_symbols))
    head_n = min(float(signal_length), opt.sync_max_delay_samples + (k + span + 4) * sps)
    room = 2 * taps + 8 * (sps + 1)   # matched-filter window kept between chunks
    stream = STREAM_BYTES_PER_SAMPLE * (min(chunk_samples, signal_length) + room)
    return MemoryNeed(bank=bank, head=HEAD_BYTES_PER_SAMPLE * head_n, stream=stream)


def available_memory_bytes() -> tuple[int, str]:
    """Memory this process may use and where the limit comes from.

    The least of the physical memory, the cgroup (v2) limit and ``RLIMIT_AS``.
    """
    best = (os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "physical memory")
    try:
        text = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if text.isdigit() and int(text) < best[0]:
            best = (int(text), "cgroup memory.max")
    except OSError:
        pass
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY and soft < best[0]:
        best = (int(soft), "RLIMIT_AS (ulimit -v)")
    return best


def check_processable(file: Path, tx: Any, sample_rate_hz: float, signal_length: int) -> None:
    """Refuse a recording the receiver cannot process (see the module docstring).

    Raises
    ------
    TraceFormatError
        The /tx parameters contradict each other or the capture (names attribute and value).
    ResourceError
        The run would need more memory than this process may use.
    """
    from dsp.pipeline import ReceiverOptions

    fs, rs, beta = float(sample_rate_hz), float(tx.symbol_rate_hz), float(tx.rolloff)
    sps = fs / rs
    if not sps >= MIN_SAMPLES_PER_SYMBOL:
        raise fail(file, attr_where("/tx", "symbol_rate_hz"),
                   f"{rs:g} Hz is {sps:.3g} samples per symbol at the sample rate {fs:g} Hz; "
                   f"the receiver needs >= {MIN_SAMPLES_PER_SYMBOL:g}")
    if not beta > 0:
        raise fail(file, attr_where("/tx", "rolloff"),
                   f"{beta!r}: the receiver's RRC matched filter needs a roll-off in (0, 1]")
    half_band = (1 + beta) * rs / 2
    f_s = float(tx.signal_frequency_hz)
    lo, hi = f_s - half_band, f_s + half_band
    # every attribute that sets the band is named: any of them may be the wrong one
    band = (f"quantum band [{lo:g}, {hi:g}] Hz = 'signal_frequency_hz' of /tx {f_s:g} +- "
            f"(1 + 'rolloff' of /tx {beta:g}) x 'symbol_rate_hz' of /tx {rs:g} / 2")
    if lo < 0 or hi > fs / 2:
        raise fail(file, "/tx", f"{band} leaves [0, {fs / 2:g}] Hz (DC to Nyquist)")
    for i, fp in enumerate(tx.pilot_frequencies_hz):
        if lo < fp < hi:
            name = f"pilot_frequencies_hz[{i}]" if i else "pilot_frequency_hz"
            raise fail(file, "/tx", f"'{name}' of /tx {fp:g} Hz lies inside the {band}")
    opt = ReceiverOptions()
    mem = receiver_memory_bytes(samples_per_symbol=sps, rolloff=beta, n_symbols=tx.n_symbols,
                                signal_length=signal_length, options=opt)
    avail, what = available_memory_bytes()
    if mem.total > avail:
        raise ResourceError(
            f"{file}: {attr_where('/tx', 'symbol_rate_hz')}: {rs:g} Hz is {sps:.6g} samples "
            f"per symbol; processing would need ~{gib(mem.total)} of memory (matched-filter "
            f"bank {gib(mem.bank)}, head {gib(mem.head)}, stream {gib(mem.stream)}), "
            f"{what} is {gib(avail)}")


def check_capture_holds_sync(file: Path, tx: Any, sample_rate_hz: float,
                             signal_length: int) -> None:
    """Refuse a signal capture too short for the symbols the receiver synchronises on.

    Not part of opening a recording (a short capture is well-formed, and the receiver reports
    it as a lock error); ``qkd-hw info --verify`` asks it, to say up front that ``process``
    cannot lock on the file.

    Raises
    ------
    TraceFormatError
        Names the symbol rate (the likely wrong value), the samples needed and held.
    """
    from dsp.pipeline import ReceiverOptions

    rs = float(tx.symbol_rate_hz)
    sps = float(sample_rate_hz) / rs
    k = min(ReceiverOptions().sync_symbols, tx.n_symbols)
    need = k * sps   # float: sps may be inf for a denormal symbol rate
    if signal_length < need:
        raise fail(file, attr_where("/tx", "symbol_rate_hz"),
                   f"{rs:g} Hz is {sps:.6g} samples per symbol: /adc/signal's {signal_length} "
                   f"samples hold {signal_length / sps:.3g} symbols, the receiver synchronises "
                   f"on the first {k} of the {tx.n_symbols} in /tx/symbols ({need:.6g} samples)")
