"""Symbol-clock offset from late probes of the recording (``probe_range`` / ``refine_clock``):
the head's synchronisation repeated far into the recording gives the clock with the lever arm
of the whole recording.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from dsp.acquisition import synchronise
from dsp.errors import DspLockError
from dsp.lock import Acquisition, segment_phase

__all__ = ["PROBE_FLOOR_PPM", "PROBE_MARGIN_FRACTION", "probe_range", "refine_clock",
           "refine_clock_chain"]


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
    phase = segment_phase(x, link, acq.pilot, acq.carrier, first_sample)
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
