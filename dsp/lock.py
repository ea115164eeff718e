"""Lock on the head of the signal capture: pilot acquisition, carrier filter design (refined
by the tracker on the head), matched-filter bank, synchronisation and the head's clock offset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from dsp.acquisition import (
    PilotAcquisition,
    SyncResult,
    acquire_pilot,
    check_search_range,
    synchronise,
)
from dsp.carrier import design_pilot_filter, pilot_block_guard
from dsp.errors import DspLockError
from dsp.options import LinkParameters, ReceiverOptions
from dsp.pilot import combined_pilot, fill_lead
from dsp.rrc import MatchedFilterBank
from dsp.timing import clock_offset
from dsp.trackers import HeadPilot, PilotFilterDesign, make_tracker, tracker_kind

__all__ = ["Acquisition", "acquire", "segment_phase"]


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
    #: combined pilot phasor at the pilot's first head sample (``pilot.span_samples``), which
    #: stands in for the blocks before it (``dsp.pilot.fill_lead``)
    lead_phasor: complex = 0j
    #: late clock probes so far, ``(first_sample, ppm, ppm_std)`` each (``refine_clock``)
    clock_probes: tuple[tuple[int, float, float], ...] = ()

    @property
    def lock_metrics(self) -> dict[str, float]:
        return {"pilot_snr_db": min(self.pilot.pilot_snr_db),
                "pilot_snr_min_db": self.options.pilot_snr_min_db,
                "sync_pslr": self.sync.pslr, "sync_pslr_db": self.sync.pslr_db,
                "sync_pslr_min": self.options.sync_pslr_min}


def segment_phase(x: np.ndarray, link: LinkParameters, pilot: PilotAcquisition,
                  carrier: PilotFilterDesign,
                  first_sample: int = 0,
                  lead_phasor: complex = 0j) -> tuple[float, float, np.ndarray]:
    """Carrier phase over a segment whose ``x[0]`` is absolute sample ``first_sample``, on a
    grid relative to ``x[0]`` (the matched filter is then called with ``first_sample=0``);
    blocks before the pilot's span get ``lead_phasor`` (``fill_lead``).
    The pilot oscillators run on absolute time: with several pilots the combining weights
    (relative pilot phases measured on the head) only hold on that time base."""
    D = carrier.decimation
    n0 = int(first_sample)
    j0 = -(-n0 // D)
    nj = (n0 + x.shape[0]) // D - j0
    z = combined_pilot(x, link, pilot, D, n0, j0, nj)
    if pilot.span_samples[0] > 0:
        fill_lead(z, j0, D, pilot.span_samples[0], lead_phasor)
    tr = make_tracker(carrier)
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
                                  pilot_cycles=tuple(f / fs for f in link.pilot_frequencies_hz),
                                  min_block_samples=pilot_block_guard(
                                      fs, pilot_frequencies_hz=link.pilot_frequencies_hz,
                                      signal_frequency_hz=link.signal_frequency_hz,
                                      symbol_rate_hz=link.symbol_rate_hz, rolloff=link.rolloff))
    s0, s1 = pilot.span_samples
    carrier = tracker_kind(carrier.method).refine(carrier, HeadPilot(
        samples=s1 - s0, phasors=lambda D: _span_phasors(head, link, pilot, D)))
    lead = _lead_phasor(head, link, pilot, carrier.decimation)
    mixer = link.signal_frequency_hz + pilot.frequency_offset_hz
    bank = MatchedFilterBank(samples_per_symbol=link.samples_per_symbol, rolloff=link.rolloff,
                             span_symbols=opt.span(link.rolloff), n_phases=opt.n_phases,
                             mixer_cycles_per_sample=mixer / fs, taper=opt.taper)
    phase = segment_phase(head, link, pilot, carrier, lead_phasor=lead)
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
        ppm, ppm_std = clock_offset(head, alice, sync, bank, period, phase)
        if abs(ppm) < 3 * ppm_std:   # not significant: keep the nominal clock
            ppm = 0.0
    period_eff = period / (1 + ppm * 1e-6)
    # the sync fit assumed the nominal period: it lands (K-1)/2 * dP late (see refine_clock)
    tau0 = sync.tau0 - (sync.sync_symbols - 1) / 2 * (period_eff - period)
    return Acquisition(link=link, options=opt, pilot=pilot, carrier=carrier, sync=sync,
                       mixer_hz=mixer, tau0=tau0, period=period_eff,
                       clock_offset_ppm=ppm, clock_offset_std_ppm=ppm_std, bank=bank,
                       lead_phasor=lead)


def _span_phasors(head: np.ndarray, link: LinkParameters, pilot: PilotAcquisition,
                  D: int) -> np.ndarray:
    """Combined pilot phasors of the whole D-sample blocks inside ``pilot.span_samples``."""
    s0, s1 = pilot.span_samples
    j0 = -(-s0 // D)
    return combined_pilot(head[s0:s1], link, pilot, D, s0, j0, max(s1 // D - j0, 0))


#: blocks averaged for the lead phasor (``fill_lead``)
LEAD_BLOCKS = 16


def _lead_phasor(head: np.ndarray, link: LinkParameters, pilot: PilotAcquisition,
                 D: int) -> complex:
    """The combined pilot phasor at the start of its span (mean of its first blocks); 0 when
    the pilot is there from the first sample (nothing to fill)."""
    s0, s1 = pilot.span_samples
    if s0 == 0:
        return 0j
    j0 = -(-s0 // D)
    nj = min(LEAD_BLOCKS, s1 // D - j0)
    return complex(np.mean(combined_pilot(head[j0 * D:(j0 + nj) * D], link, pilot, D,
                                          j0 * D, j0, nj)))
