"""Streaming pass over the signal capture: pilot stage, matched filter at the symbol
instants and the data-aided timing loop (``SignalStream``)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from dsp.buffer import SampleBuffer
from dsp.core import cdot
from dsp.errors import DspLockError
from dsp.lock import Acquisition
from dsp.matched_filter import matched_filter_at, symbol_sample_range
from dsp.pilot import PilotStage
from dsp.threads import WorkShare
from dsp.timing import TIMING_GAINS, TIMING_OFFSETS, TIMING_STRIDE, timing_parabola
from dsp.vocabulary import PARALLEL_MIN_SYMBOLS, TIMING_BLOCK_SYMBOLS, TIMING_CORR_MIN_N

__all__ = ["SignalStream"]


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
                 *, timing_block: int = TIMING_BLOCK_SYMBOLS) -> None:
        self.acq = acq
        self.link = acq.link
        self.buf = SampleBuffer()
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
        self._ramps: dict[int, np.ndarray] = {}
        self.samples = 0
        self._seconds = {"matched_filter": 0.0, "timing": 0.0}
        #: a ``dsp.threads.WorkShare`` whose helper thread takes pieces of the matched filter
        self.share: WorkShare | None = None

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
        ``feed_in_place``: the trackers' ``latency_blocks`` (RTS: a block of
        ``rts_block`` pilot blocks waits for the next one) plus the window, 25 % more."""
        b = self.acq.bank
        blocks = self.pilot.tracker.latency_blocks() + 4
        return int(1.25 * (blocks * self.D + 2 * b.half + 8 * math.ceil(self.period)))

    def feed_in_place(self, store: np.ndarray, start: int,
                      phase: tuple[int, np.ndarray] | None = None) -> list[tuple[int, np.ndarray]]:
        """``feed(store[start:])`` without copying the chunk into the stream's buffer: the
        samples kept from earlier chunks are copied into ``store[:start]`` instead (make
        ``start >= room_samples()``; if they do not fit, the chunk is copied as ``feed``
        does). The stream then reads ``store`` until the next ``feed``/``feed_in_place``/
        ``finish`` call returns: do not overwrite it before. ``phase``: the chunk's
        ``self.pilot.push(store[start:])`` if the caller already ran it (``feed_prepared``)."""
        chunk = store[start:]
        if phase is None:
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
        ctp = step * cdot(self._centred_ramp(n_b), ph).real
        n, (m_t, m_p, c_tt, c_tp) = self._fit_n, self._fit
        tot = n + n_b
        dt_, dp_ = mt - m_t, mp - m_p
        self._fit = (m_t + dt_ * n_b / tot, m_p + dp_ * n_b / tot,
                     c_tt + ctt + dt_ * dt_ * n * n_b / tot, c_tp + ctp + dt_ * dp_ * n * n_b / tot)
        self._fit_n = tot

    def _centred_ramp(self, n: int) -> np.ndarray:
        """``arange(n) - (n - 1) / 2``, kept for the few batch lengths a run sees (a chunk
        gives one of two): built anew it cost two 8-byte-per-block arrays per chunk."""
        ramp = self._ramps.get(n)
        if ramp is None:
            if len(self._ramps) >= 4:
                self._ramps.clear()
            ramp = self._ramps[n] = np.arange(n) - (n - 1) / 2
        return ramp

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
                                  first_order=self.acq.options.first_order_phase,
                                  share=self.share)
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
        early_late = ((0, TIMING_OFFSETS[0]), (2, TIMING_OFFSETS[2]))
        found: list = [None, None]

        def offset(i: int) -> None:
            found[i] = matched_filter_at(
                self.buf.data, self.acq.bank, first_sample=self.buf.n0,
                tau0=self.tau + early_late[i][1] + b0 * self.period, period=self.period * st,
                k_start=i0, count=i1 - i0, phase=self._phase_grid(),
                parallel=i1 - i0 >= PARALLEL_MIN_SYMBOLS)

        if self.share is not None:   # early on this thread, late on the helper's
            self.share.run(2, offset)
        else:
            offset(0)
            offset(1)
        for (slot, _), yo in zip(early_late, found, strict=True):
            parts[slot].append(yo)

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
        d, c2, e = timing_parabola(a, *ys)
        # only a significant correlation steers the loop: |rho|^2 ~ 1/n without signal
        rho2 = c2 / (cdot(a, a).real * e + 1e-300)
        if rho2 * n < TIMING_CORR_MIN_N:
            # where the head promised a clear correlation (|rho|^2 = snr/(1+snr)), none here
            # means the symbols are lost (modulation stopped, a slip): not a weak link
            snr = self.acq.sync.snr
            if snr / (1 + snr) * n >= 10 * TIMING_CORR_MIN_N:
                raise DspLockError(
                    f"synchronisation lost in symbols [{k0}, {k1}): no correlation with "
                    "Alice's symbols there",
                    {**self.acq.lock_metrics, "timing_block_corr_n": float(rho2 * n),
                     "head_corr_n": float(snr / (1 + snr) * n),
                     "timing_corr_min_n": TIMING_CORR_MIN_N,
                     "lost_from_symbol": float(k0)})
            self.timing_log.append((k0 + L // 2, float("nan")))
            return
        d = float(np.clip(d, -0.25, 0.25))
        self.timing_log.append((k0 + L // 2, d))
        kc = k0 + L / 2
        g1, g2 = TIMING_GAINS
        self.tau += g1 * d - g2 * d / L * kc
        self.period += g2 * d / L
