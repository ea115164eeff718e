"""Streaming link simulator: SimParams + seed -> a format-v1 recording with ``/truth``.

Physical model (per sample ``n`` of the ADC, times ``t = n / fs``; codes):

* Alice: i.i.d. complex Gaussian symbols ``a_k``, per-quadrature variance V_A,
  stored as complex64 in ``/tx/symbols`` and used *as stored*. The channel's
  excess noise (referred to its input) is a per-symbol complex Gaussian
  ``sqrt(xi) n_k`` added before pulse shaping, so the field sent is
  ``u_k = a_k + sqrt(xi) n_k``.
* Heterodyne (one balanced detector, RF heterodyne): the quantum band is the
  real IF signal ``S Re{s(t) e^{j(2 pi f_s t + theta(t))}}`` with
  ``s(t) = sum_k u_k g(t - t_k)``, unit-energy RRC ``g``, ``S = sqrt(2) t sigma_shot``
  (``sigma_shot = adc_shot_noise_rms_codes``).
  The shot noise is white over 0..fs/2 with per-sample variance
  ``sigma_shot^2``: after down-conversion and the unit-energy matched filter
  each quadrature carries ``sigma_shot^2 / 2 = N0`` of it (vacuum of the
  signal band and of its image band at the LO's other side, which is the 3 dB
  of a single-detector heterodyne), and the symbol comes out as
  ``S/2 u = t sqrt(N0) u``: ``y = t (x + sqrt(xi) n) + z`` in SNU with
  ``t^2 = eta T / 2``.
* Homodyne: emulates the measured quadrature of a phase-locked homodyne
  detector on the same RF chain. Only ``Re(u_k)`` is transmitted (a real
  baseband on the IF carrier, ``S = sqrt(2) t sigma_shot`` with
  ``t^2 = eta T``), with the same offset, phase noise and pilots as
  heterodyne; after down-conversion, phase correction and the matched filter
  the real part is ``t (Re a + sqrt(xi) Re n) + z`` with Var(z) = 1 + v_el
  and the imaginary part is noise only. ``/tx/symbols`` still holds complex
  symbols; the receiver pairs Re(y) with Re(x).
* Electronic noise: white, per-sample variance ``v_el sigma_shot^2`` including
  the ADC's quantisation noise (1/12 code^2), in all three captures.
* ``theta(t) = 2 pi df t + phi(t)``: laser frequency offset and Wiener phase
  (increment variance ``2 pi linewidth / fs`` per sample, uniform random
  start), common to signal and pilots. Pilot ``p``:
  ``A_p cos(2 pi f_p t + theta(t) + pilot_phase_p)``.
* Symbol ``k`` is centred at sample ``delay + k fs / (Rs (1 + ppm 1e-6))``.
* ADC: round half up, clip to ``adc_bits``; float32 recordings are not quantised.

Reproducibility: every random number comes from a block of a PCG64 stream
seeded by ``SeedSequence(seed, spawn_key=(stream, block))`` (normal deviates by the
ziggurat method, :func:`qkd_hw.sim.waveform.ziggurat_normals`); sample blocks
are 2**16 samples, symbol blocks 2**14 symbols, fixed, independent of the
processing chunk, and the laser phase is a strictly sequential float64 sum.
So the file is bit-identical for any ``chunk_samples``, and the first k
symbols / samples do not depend on the recording's length.
"""

from __future__ import annotations

import itertools
import math
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.random import PCG64, SeedSequence

from qkd_hw import __version__
from qkd_hw.errors import ConfigError, ResourceError
from qkd_hw.sim.params import SimParams
from qkd_hw.sim.pulse import polyphase_table
from qkd_hw.sim.waveform import laser_phase, quantize, synthesize, ziggurat_normals
from qkd_hw.sizes import available_memory_bytes, gib
from qkd_hw.trace_io import TRUTH_FIELDS, TraceWriter, Truth, TxInfo

SAMPLE_BLOCK = 1 << 16
SYMBOL_BLOCK = 1 << 14
#: fractional phases of the synthesis pulse table (nearest phase: timing error
#: <= 1/2048 symbol; its excess noise is below 1e-6 of the symbol power, see
#: tests/qkd_hw/test_sim_pulse.py)
TABLE_PHASES = 1024
#: ``truth_phase=None`` writes /truth/phase_rad up to this many signal samples (8 B each)
TRUTH_PHASE_AUTO_MAX = 1 << 25
RNG_SCHEME = "pcg64-seedsequence-blocks-zignor-v1"
#: HDF5 chunk of the ADC datasets (512 KiB of int16), whatever the processing chunk
HDF5_CHUNK = 1 << 18
#: HDF5 metadata and attributes of a recording, bytes (generous)
FILE_OVERHEAD_BYTES = 1 << 20
#: interpreter, numpy, numba, h5py (measured ~260 MB RSS at a 1M-sample chunk)
SIM_BASE_BYTES = 300 << 20
#: working memory per chunk sample (measured ~37 B: 298 / 408 MB peak RSS at 1M / 4M)
SIM_BYTES_PER_CHUNK_SAMPLE = 70
#: /truth/phase_rad in memory per signal sample (float64 array + the int64/float64 ramp
#: added to it; measured ~23 B: +462 MB for 2e7 samples)
TRUTH_PHASE_BYTES_PER_SAMPLE = 24


class Stream:
    """RNG stream ids (the first word of the SeedSequence spawn key)."""

    SYMBOLS = 0
    EXCESS = 1
    PHASE = 2
    SIGNAL_NOISE = 3
    SHOT_NOISE = 4
    ELECTRONIC_NOISE = 5
    INITIAL_PHASE = 6


def _raw_block(seed: int, stream: int, block: int, n_words: int) -> np.ndarray:
    return PCG64(SeedSequence(seed, spawn_key=(stream, block))).random_raw(n_words)


_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)),
                                   thread_name_prefix="qkd-sim-rng")
    return _POOL


def _words_for(n: int) -> int:
    """Raw words drawn per block of ``n`` deviates: the ziggurat uses ~1.01 n."""
    return n + n // 16 + 64


def normals_blocks(seed: int, keys: list[tuple[int, int]], n: int) -> np.ndarray:
    """``n`` standard normals for each (stream, block) key, one row each (float64)."""
    if not keys:
        return np.empty((0, n))
    n_words = _words_for(n)
    words = np.empty((len(keys), n_words), dtype=np.uint64)

    def fill(j: int) -> None:
        words[j] = _raw_block(seed, *keys[j], n_words)

    if len(keys) > 1:  # PCG64.random_raw releases the GIL: rows in parallel
        list(_pool().map(fill, range(len(keys))))
    else:
        fill(0)
    out, used = ziggurat_normals(words, n)
    # a row too short for its n deviates (~1.03 n words are used: > 100 sd away) is
    # redrawn longer from the same stream, whose prefix gives the same deviates
    for j in np.flatnonzero(used < 0):
        more = n_words
        while True:
            more *= 4
            row, u = ziggurat_normals(_raw_block(seed, *keys[j], more), n)
            if u >= 0:
                out[j] = row
                break
    return out


def block_normals(seed: int, stream: int, start: int, stop: int,
                  block: int = SAMPLE_BLOCK) -> np.ndarray:
    """Standard normals ``[start, stop)`` of a sample-indexed stream (float64)."""
    return multi_block_normals(seed, [stream], start, stop, block)[0]


def multi_block_normals(seed: int, streams: list[int], start: int, stop: int,
                        block: int = SAMPLE_BLOCK) -> list[np.ndarray]:
    """:func:`block_normals` of several streams over the same range, in one kernel call."""
    if stop <= start:
        return [np.empty(0) for _ in streams]
    b0, b1 = start // block, (stop - 1) // block
    nb = b1 - b0 + 1
    z = normals_blocks(seed, [(s, b) for s in streams for b in range(b0, b1 + 1)], block)
    off = start - b0 * block
    return [z[i * nb:(i + 1) * nb].reshape(-1)[off: off + stop - start]
            for i in range(len(streams))]


def initial_phase(seed: int) -> float:
    """Uniform laser phase at sample 0 (rad)."""
    raw = _raw_block(seed, Stream.INITIAL_PHASE, 0, 1)
    return float(raw[0] >> np.uint64(11)) * 2.0 ** -53 * 2.0 * math.pi


class SymbolSource:
    """Alice's symbols and the transmitted field, generated per fixed block of symbols.

    With ``sink`` set, every block is handed to it (``/tx/symbols``) the first
    time it is generated, in order, so the symbols are generated once and
    memory stays bounded by the blocks one chunk needs.
    """

    def __init__(self, params: SimParams, seed: int, n_symbols: int,
                 sink: Any = None) -> None:
        self.p, self.seed, self.n = params, seed, n_symbols
        self.sink = sink
        self.next_to_sink = 0
        self.n_blocks = (n_symbols + SYMBOL_BLOCK - 1) // SYMBOL_BLOCK
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _block(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        hit = self._cache.get(b)
        while hit is None and self.sink is not None and self.next_to_sink < b:
            self._block(self.next_to_sink)  # keep /tx/symbols in order
        if hit is None:
            z, e = normals_blocks(self.seed, [(Stream.SYMBOLS, b), (Stream.EXCESS, b)],
                                  2 * SYMBOL_BLOCK)
            a = (math.sqrt(self.p.modulation_variance_snu) * (z[0::2] + 1j * z[1::2])
                 ).astype(np.complex64)
            sx = math.sqrt(self.p.excess_noise_snu)
            if self.p.detection == "heterodyne":
                u = a.astype(np.complex128) + sx * (e[0::2] + 1j * e[1::2])
            else:  # homodyne: the measured quadrature only
                u = (a.real.astype(np.float64) + sx * e[0::2]).astype(np.complex128)
            hit = (a, u)
            self._cache[b] = hit
            if self.sink is not None and b == self.next_to_sink:
                self.sink(a[: min(SYMBOL_BLOCK, self.n - b * SYMBOL_BLOCK)])
                self.next_to_sink += 1
        return hit

    def flush(self) -> None:
        """Hand the blocks no chunk needed to the sink (none, for a complete signal)."""
        while self.sink is not None and self.next_to_sink < self.n_blocks:
            self._block(self.next_to_sink)
            self._cache.clear()

    def alice(self, start: int, stop: int) -> np.ndarray:
        """``/tx/symbols[start:stop]`` (complex64)."""
        return self._range(start, stop, 0).astype(np.complex64)

    def field(self, start: int, stop: int) -> np.ndarray:
        """Transmitted field ``u_k`` for ``k in [start, stop)``, zero outside ``[0, n)``."""
        return self._range(start, stop, 1)

    def _range(self, start: int, stop: int, which: int) -> np.ndarray:
        out = np.zeros(max(0, stop - start), dtype=np.complex128)
        lo, hi = max(start, 0), min(stop, self.n)
        if hi <= lo:
            return out
        b_lo = lo // SYMBOL_BLOCK
        for b in [b for b in self._cache if b < b_lo]:  # chunks only move forward
            del self._cache[b]
        for b in range(b_lo, (hi - 1) // SYMBOL_BLOCK + 1):
            arr = self._block(b)[which]
            s, e = max(lo, b * SYMBOL_BLOCK), min(hi, (b + 1) * SYMBOL_BLOCK)
            out[s - start: e - start] = arr[s - b * SYMBOL_BLOCK: e - b * SYMBOL_BLOCK]
        return out


class PhaseTrack:
    """Laser phase phi_n (excluding the frequency-offset ramp), chunk by chunk, in order."""

    def __init__(self, params: SimParams, seed: int) -> None:
        self.seed = seed
        self.sigma = math.sqrt(2.0 * math.pi * params.linewidth_hz / params.sample_rate_hz)
        self.phi0 = initial_phase(seed)
        self.next_n = 0
        self.carry = self.phi0  # phase at sample next_n - 1 (n = -1 -> phi0: increment 0 at 0)

    def take(self, n0: int, count: int, normals: np.ndarray | None = None) -> np.ndarray:
        """Phase of samples ``[n0, n0 + count)``; ``normals``: the PHASE stream's deviates
        of that range if the caller already has them."""
        if n0 != self.next_n:
            raise RuntimeError("PhaseTrack must be advanced contiguously")
        if self.sigma == 0.0:
            out = np.full(count, self.phi0)
        else:
            if normals is None:
                normals = block_normals(self.seed, Stream.PHASE, n0, n0 + count)
            inc = normals * self.sigma
            if n0 == 0 and count:
                inc[0] = 0.0
            out, self.carry = laser_phase(inc, self.carry)
        self.next_n = n0 + count
        return out


def true_phase(params: SimParams, seed: int, stop: int, *, chunk: int = 1 << 20) -> np.ndarray:
    """``theta_n = 2 pi df n / fs + phi_n`` for ``n in [0, stop)`` (float64, rad).

    What ``/truth/phase_rad`` holds, regenerated from the seed (the oracle uses
    it when the recording has no phase dataset).
    """
    track = PhaseTrack(params, seed)
    out = np.empty(stop)
    for n0 in range(0, stop, chunk):
        m = min(chunk, stop - n0)
        out[n0:n0 + m] = track.take(n0, m)
    out += 2.0 * math.pi * params.frequency_offset_hz / params.sample_rate_hz * np.arange(stop)
    return out


@dataclass(frozen=True)
class _Chunked:
    """One ADC capture to be written chunk by chunk."""

    name: str
    length: int


def simulate_recording(
    path: str | os.PathLike[str],
    params: SimParams,
    *,
    seed: int,
    n_symbols: int,
    chunk_samples: int = 1 << 20,
    progress: bool = False,
    truth_phase: bool | None = None,
    description: str | None = None,
    compression: str | None = None,
) -> Truth:
    """Simulate a recording and write it to ``path`` (atomically).

    Parameters
    ----------
    path : path
        Output HDF5 file (written to a temporary name, renamed when complete).
    params : SimParams
    seed : int
        Non-negative; same seed and parameters -> identical file contents.
    n_symbols : int
        Data symbols (>= 1).
    chunk_samples : int
        Processing chunk; memory is O(chunk_samples) (about 70 bytes per
        sample), the output does not depend on it.
    progress : bool
        tqdm progress bar on stderr.
    truth_phase : bool or None
        Write ``/truth/phase_rad`` (float64 per signal sample, kept in memory
        until the end); None: only up to ``TRUTH_PHASE_AUTO_MAX`` samples.
    description, compression :
        Passed to :class:`~qkd_hw.trace_io.TraceWriter`.

    Returns
    -------
    Truth
        What was written to ``/truth`` (extra: every SimParams field plus
        ``seed``, ``n_symbols``, the clipped fractions and derived values).
    """
    if not isinstance(params, SimParams):
        raise TypeError(f"params must be a SimParams, got {type(params).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or \
            not 0 <= seed < 2**63:   # /truth stores it as int64
        raise ConfigError(f"seed must be an integer in [0, 2^63), got {seed!r}")
    if isinstance(n_symbols, bool) or not isinstance(n_symbols, int | np.integer) \
            or not 1 <= n_symbols <= 10 ** 12:
        raise ConfigError(f"n_symbols must be an integer in [1, 1e12], got {n_symbols!r}")
    chunk = int(chunk_samples)
    if chunk < 1:
        raise ConfigError(f"chunk_samples must be >= 1, got {chunk_samples!r}")
    seed, n_symbols = int(seed), int(n_symbols)
    p = params
    n_signal = p.signal_samples(n_symbols)
    if truth_phase is None:
        truth_phase = n_signal <= TRUTH_PHASE_AUTO_MAX
    check_fits(path, p, n_symbols, chunk, truth_phase)   # before a byte is written

    tx = TxInfo(symbol_rate_hz=p.symbol_rate_hz, rolloff=p.rolloff,
                signal_frequency_hz=p.signal_frequency_hz,
                pilot_frequencies_hz=p.pilot_frequencies_hz,
                modulation_variance_snu=p.modulation_variance_snu, efficiency=p.efficiency,
                detection=p.detection, n_symbols=n_symbols)  # type: ignore[arg-type]
    captures = (_Chunked("signal", n_signal), _Chunked("shot_noise", p.shot_noise_samples),
                _Chunked("electronic_noise", p.electronic_noise_samples))
    bar = _progress_bar(sum(c.length for c in captures), progress)
    clipped: dict[str, int] = {}
    try:
        with TraceWriter(path, tx=tx, sample_rate_hz=p.sample_rate_hz,
                         volts_per_code=p.volts_per_code, adc_dtype=p.adc_dtype,
                         description=description or "qkd-hw link simulator",
                         chunk_samples=HDF5_CHUNK, compression=compression,
                         lengths={c.name: c.length for c in captures}) as w:
            source = SymbolSource(p, seed, n_symbols, sink=w.append_symbols)
            phase_out = np.empty(n_signal) if truth_phase else None
            clipped["signal"] = _write_signal(w, p, seed, source, n_signal, chunk, bar,
                                              phase_out)
            source.flush()
            lo, hi = p.code_range
            total_rms = math.hypot(p.adc_shot_noise_rms_codes, p.electronic_rms_analog_codes)
            for cap, stream, rms in ((captures[1], Stream.SHOT_NOISE, total_rms),
                                     (captures[2], Stream.ELECTRONIC_NOISE,
                                      p.electronic_rms_analog_codes)):
                n_clip = 0
                for n0 in range(0, cap.length, chunk):
                    m = min(chunk, cap.length - n0)
                    codes, c = quantize(block_normals(seed, stream, n0, n0 + m), scale=rms,
                                        dtype=p.adc_dtype, lo=lo, hi=hi)
                    n_clip += c
                    w.append(cap.name, codes)
                    bar.update(m)
                clipped[cap.name] = n_clip
            for cap in captures:
                w.set_clipped_fraction(cap.name, clipped[cap.name] / cap.length)
            truth = Truth(
                transmittance=p.transmittance, excess_noise_snu=p.excess_noise_snu,
                electronic_noise_snu=p.electronic_noise_snu,
                frequency_offset_hz=p.frequency_offset_hz, linewidth_hz=p.linewidth_hz,
                delay_samples=p.delay_samples, t_eff=p.t_eff,
                extra=_truth_extra(p, seed, n_symbols, captures, clipped))
            w.write_truth(truth)
            if phase_out is not None:
                phase_out += (2.0 * math.pi * p.frequency_offset_hz / p.sample_rate_hz
                              * np.arange(n_signal))
                w.write_truth_dataset("phase_rad", phase_out)
                del phase_out
    finally:
        bar.close()
    return truth


def output_bytes(p: SimParams, n_symbols: int, truth_phase: bool) -> int:
    """Size of the recording without compression (bytes): the three captures, /tx/symbols
    (complex64) and /truth/phase_rad (float64 per signal sample) when written."""
    n_signal = p.signal_samples(n_symbols)
    adc = (n_signal + p.shot_noise_samples + p.electronic_noise_samples) \
        * np.dtype(p.adc_dtype).itemsize
    return adc + 8 * n_symbols + (8 * n_signal if truth_phase else 0) + FILE_OVERHEAD_BYTES


def peak_memory_bytes(p: SimParams, n_symbols: int, chunk_samples: int,
                      truth_phase: bool) -> int:
    """Peak memory of :func:`simulate_recording` (bytes, upper estimate): the per-chunk
    working set and /truth/phase_rad, kept whole until the end (float64, plus the
    offset ramp added to it)."""
    n_signal = p.signal_samples(n_symbols)
    longest = max(n_signal, p.shot_noise_samples, p.electronic_noise_samples)
    return (SIM_BASE_BYTES + SIM_BYTES_PER_CHUNK_SAMPLE * min(chunk_samples, longest)
            + (TRUTH_PHASE_BYTES_PER_SAMPLE * n_signal if truth_phase else 0))


def check_fits(path: str | os.PathLike[str], p: SimParams, n_symbols: int, chunk_samples: int,
               truth_phase: bool) -> None:
    """Refuse a simulation whose output does not fit the free disk space at ``path`` or whose
    working memory does not fit this process's memory (:class:`ResourceError`, one line)."""
    n_signal = p.signal_samples(n_symbols)
    what = (f"{n_signal:.4g} signal samples: {n_symbols} symbols at "
            f"{p.samples_per_symbol_eff:.6g} samples per symbol, delay_samples "
            f"{p.delay_samples:.6g}, tail_samples {p.tail_samples:.6g}")
    need = output_bytes(p, n_symbols, truth_phase)
    target = Path(path).absolute().parent
    try:
        free = shutil.disk_usage(target).free
    except OSError:   # no such directory: the writer reports it, naming the path
        free = None
    if free is not None and need > free:
        raise ResourceError(f"{path}: the recording would take ~{need / 1e9:.3g} GB ({what}"
                            f"{'; with /truth/phase_rad' if truth_phase else ''}); free disk "
                            f"space at {target} is {free / 1e9:.3g} GB")
    mem = peak_memory_bytes(p, n_symbols, chunk_samples, truth_phase)
    avail, limit = available_memory_bytes()
    if mem > avail:
        phase = f", /truth/phase_rad of {what}" if truth_phase else ""
        raise ResourceError(f"{path}: simulating would need ~{gib(mem)} of memory (chunk of "
                            f"{chunk_samples} samples{phase}); {limit} is {gib(avail)}")


def _write_signal(w: TraceWriter, p: SimParams, seed: int, source: SymbolSource,
                  n_signal: int, chunk: int, bar: Any, phase_out: np.ndarray | None) -> int:
    sps = p.samples_per_symbol_eff
    half = p.half_span
    table = polyphase_table(p.rolloff, half, TABLE_PHASES) / math.sqrt(sps)
    fs, df = p.sample_rate_hz, p.frequency_offset_hz
    sig_cyc = (p.signal_frequency_hz + df) / fs
    pil_cyc = (np.asarray(p.pilot_frequencies_hz) + df) / fs
    pil_amp = np.asarray(p.pilot_amplitudes_codes)
    pil_ph = np.asarray(p.pilot_phases_rad)
    noise_std = math.hypot(p.adc_shot_noise_rms_codes, p.electronic_rms_analog_codes)
    lo, hi = p.code_range
    track = PhaseTrack(p, seed)
    frame = _Frame.of(p, seed, source.n) if p.framed else None
    n_clip = 0
    for n0 in range(0, n_signal, chunk):
        m = min(chunk, n_signal - n0)
        if track.sigma > 0.0:
            noise, inc = multi_block_normals(seed, [Stream.SIGNAL_NOISE, Stream.PHASE],
                                             n0, n0 + m)
        else:
            noise, inc = block_normals(seed, Stream.SIGNAL_NOISE, n0, n0 + m), None
        phi = track.take(n0, m, inc)
        if phase_out is not None:
            phase_out[n0:n0 + m] = phi
        k_lo = math.floor((n0 - p.delay_samples) / sps) - half - 1
        k_hi = math.floor((n0 + m - 1 - p.delay_samples) / sps) + half + 3
        syn = dict(delay=p.delay_samples, sps=sps, k_base=k_lo,
                   symbols=source.field(k_lo, k_hi), table=table,
                   amplitude=p.signal_amplitude_codes, signal_cycles_per_sample=sig_cyc,
                   pilot_cycles_per_sample=pil_cyc, pilot_phases=pil_ph, noise_std=noise_std)
        if frame is None:
            codes, c = synthesize(n0, m, phase=phi, pilot_amplitudes=pil_amp, noise=noise,
                                  dtype=p.adc_dtype, lo=lo, hi=hi, **syn)
        else:
            codes, c = _framed_chunk(frame, n0, m, phi, noise, pil_amp, syn)
        n_clip += c
        w.append("signal", codes)
        bar.update(m)
    return n_clip


#: root of the Zadoff-Chu preamble
ZC_ROOT = 5


def preamble_waveform(kind: str, n: int, rms: float, seed: int) -> np.ndarray:
    """The preamble's ADC waveform (float64 codes, ``n`` samples, mean square ``rms^2``).

    ``"zadoff-chu"``: ``sqrt(2) rms Re{exp(-j pi u k (k + n mod 2) / n)}``, root ``ZC_ROOT``
    (a chirp over the whole band at the sample rate, as baseband synchronisation sequences
    are sent); ``"noise"``: white Gaussian samples of the seed's own generator (not one of
    the streams of the data, so framing leaves them unchanged).
    """
    if kind == "zadoff-chu":
        k = np.arange(n, dtype=np.float64)
        return math.sqrt(2.0) * rms * np.cos(math.pi * ZC_ROOT * k * (k + n % 2) / n)
    if kind == "noise":
        return rms * np.random.Generator(PCG64(SeedSequence([seed, 0x9E37]))).standard_normal(n)
    raise ValueError(f"unknown preamble kind {kind!r}")


@dataclass(frozen=True)
class _Frame:
    """Where the pilots are on and the preamble's samples (absolute sample indices)."""

    pilot_on: int
    pilot_off: int
    preamble_start: int
    preamble: np.ndarray
    dtype: str
    lo: float
    hi: float

    @classmethod
    def of(cls, p: SimParams, seed: int, n_symbols: int) -> _Frame:
        pre = (preamble_waveform(p.preamble_kind, p.preamble_samples,
                                 p.preamble_amplitude_codes, seed)
               if p.preamble_samples else np.zeros(0))
        lo, hi = p.code_range
        return cls(pilot_on=p.pilot_on_sample, pilot_off=p.pilot_off_sample(n_symbols),
                   preamble_start=p.lead_samples, preamble=pre, dtype=p.adc_dtype, lo=lo, hi=hi)


def _framed_chunk(frame: _Frame, n0: int, m: int, phi: np.ndarray, noise: np.ndarray,
                  pil_amp: np.ndarray, syn: dict[str, Any]) -> tuple[np.ndarray, int]:
    """Samples ``n0 .. n0 + m - 1`` of a framed signal capture: synthesised (float64) in
    segments with the pilots on or off, the preamble added, then the ADC."""
    x = np.empty(m)
    cuts = sorted({n0, n0 + m, *(c for c in (frame.pilot_on, frame.pilot_off)
                                 if n0 < c < n0 + m)})
    for a, b in itertools.pairwise(cuts):
        on = frame.pilot_on <= a < frame.pilot_off
        x[a - n0:b - n0] = synthesize(a, b - a, phase=phi[a - n0:b - n0],
                                      pilot_amplitudes=pil_amp if on else 0.0 * pil_amp,
                                      noise=noise[a - n0:b - n0], dtype="float64", **syn)[0]
    s0 = frame.preamble_start
    a, b = max(n0, s0), min(n0 + m, s0 + frame.preamble.shape[0])
    if a < b:
        x[a - n0:b - n0] += frame.preamble[a - s0:b - s0]
    return quantize(x, scale=1.0, dtype=frame.dtype, lo=frame.lo, hi=frame.hi)


def _truth_extra(p: SimParams, seed: int, n_symbols: int, captures: tuple[_Chunked, ...],
                 clipped: dict[str, int]) -> dict[str, Any]:
    extra = {k: v for k, v in p.to_attrs().items() if k not in TRUTH_FIELDS}
    extra.update(
        seed=np.int64(seed), n_symbols=np.int64(n_symbols),
        simulator=f"qkd_hw.sim {__version__}", rng_scheme=RNG_SCHEME,
        initial_phase_rad=initial_phase(seed),
        samples_per_symbol_eff=p.samples_per_symbol_eff,
        signal_amplitude_codes=p.signal_amplitude_codes,
        pilot_amplitudes_codes=np.asarray(p.pilot_amplitudes_codes),
        electronic_rms_analog_codes=p.electronic_rms_analog_codes,
        table_phases=np.int64(TABLE_PHASES),
    )
    if p.preamble_samples:   # trace-format.md's optional framing attributes
        extra.update(preamble_start_sample=np.int64(p.lead_samples),
                     preamble_end_sample=np.int64(p.pilot_on_sample))
    for c in captures:
        extra[f"clipped_fraction_{c.name}"] = clipped[c.name] / c.length
    return extra


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit="S", unit_scale=True, desc="simulate", dynamic_ncols=True)


def describe(path: str | os.PathLike[str], truth: Truth) -> dict[str, Any]:
    """Short JSON-able summary of a simulated recording (for ``--json``)."""
    ex = truth.extra
    return {
        "path": str(Path(path)),
        "bytes": Path(path).stat().st_size,
        "n_symbols": int(ex["n_symbols"]),
        "seed": int(ex["seed"]),
        "t_eff": truth.t_eff,
        "initial_phase_rad": float(ex["initial_phase_rad"]),
        "clipped_fraction": {k: float(ex[f"clipped_fraction_{k}"])
                             for k in ("signal", "shot_noise", "electronic_noise")},
    }
