"""Physical sanity checks of a recording and of the receiver's estimates.

The receiver locks on a recording and then measures; a recording can still be broken in ways
the lock does not see (a clipped ADC, a noise capture that is the signal, captures at another
scale), and the estimates then land where physics does not allow them. Each check here raises
:class:`qkd_hw.errors.RecordingSanityError` naming the likely cause; the receiver runs them
before any key rate or raw key is produced.

Thresholds (statistical: a healthy recording must never trip them):

* clipping: more than :data:`CLIP_REFUSE_FRACTION` of a capture's samples at the ADC's rails
  (measured by :mod:`dsp.clipping`, or recorded by the writer in ``clipped_fraction``). At
  1e-4 a Gaussian capture is clipped at 3.9 sigma and loses 2e-4 of its variance, ~1 mSNU of
  excess noise at t^2 = 0.18: well below the statistical uncertainty of any recording;
  above it, clipping shows up in xi first (5 % clipped: xi -0.56 SNU).
* noise levels: the shot-noise capture's variance must be above the electronic noise's
  (else N0 <= 0 and v_el < 0: no shot-noise units at all).
* estimates: more than :data:`SIGMA` standard deviations of the shot-noise calibration
  beyond the physical range (T <= 1 from its PE lower bound, xi <= its PE upper bound,
  v_el >= 0). The PE bounds already hold the estimation statistics with probability
  1 - eps_pe; the calibration's own error is Gaussian, 5 sigma: 3e-7 per recording.
* Alice's symbols: no |x|^2 above :data:`SYMBOL_MAX_VA` times V_A (a Gaussian modulation puts
  one there with probability e^-100 per symbol), and the disclosed symbols' per-quadrature
  variance within :data:`SIGMA` sd (sqrt(2/m) relative for m pairs) plus
  :data:`VA_REL_SLACK` of ``modulation_variance_snu``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from qkd_hw.errors import RecordingSanityError
from qkd_hw.trace_io import ADC_DATASETS, TraceReader

__all__ = [
    "CLIP_REFUSE_FRACTION",
    "SIGMA",
    "SYMBOL_MAX_VA",
    "check_clipping",
    "check_distinct_captures",
    "check_estimates",
    "check_modulation_variance",
    "check_noise_levels",
    "check_symbols",
    "identical_prefix",
    "trace_same_capture",
]

#: refuse a capture with more than this fraction of its samples at the rails
CLIP_REFUSE_FRACTION = 1e-4
#: standard deviations of the calibration beyond the physical range before refusing
SIGMA = 5.0
#: largest |x|^2 of one of Alice's symbols, in units of V_A
SYMBOL_MAX_VA = 200.0
#: relative slack of the empirical modulation variance (a discrete constellation's design
#: variance may be rounded in the attribute)
VA_REL_SLACK = 0.02
#: samples compared to find a capture stored twice (two noise realisations never agree on
#: 65536 samples; reading them costs 0.1 ms)
PREFIX_SAMPLES = 1 << 16


def check_distinct_captures(path: str | Path,
                            same_capture: Callable[[str, str], str | None]) -> None:
    """Refuse a recording whose captures are one and the same.

    Parameters
    ----------
    path : name of the recording in the message.
    same_capture : ``same_capture(a, b)`` says why captures ``a`` and ``b`` are one (an HDF5
        link, the same array, identical leading samples), None when they are distinct: the
        recording source's ``same_capture``.

    Raises
    ------
    RecordingSanityError
        Naming both captures and the link.
    """
    for i, a in enumerate(ADC_DATASETS):
        for b in ADC_DATASETS[i + 1:]:
            why = same_capture(a, b)
            if why:
                raise RecordingSanityError(
                    f"{path}: /adc/{b} is the {_KIND[a]} capture /adc/{a} ({why}): the "
                    f"{_KIND[b]} capture must be recorded on its own ({_INPUT[b]})",
                    {"capture": b, "same_as": a})


_KIND = {"signal": "signal", "shot_noise": "shot-noise", "electronic_noise": "electronic-noise"}
_INPUT = {"signal": "LO on, signal from the channel", "shot_noise": "LO on, signal blocked",
          "electronic_noise": "LO off, signal blocked"}


def trace_same_capture(reader: TraceReader, a: str, b: str) -> str | None:
    """Why ``/adc/a`` and ``/adc/b`` of a recording are one capture (a soft or hard link, or
    identical leading samples), None if they are distinct."""
    ia, ib = reader.adc[a], reader.adc[b]
    for name, info in ((b, ib), (a, ia)):
        target = info.soft_link
        other = a if name == b else b
        if target is not None and target.rstrip("/") in (f"/adc/{other}", f"adc/{other}"):
            return f"soft link /adc/{name} -> {target}"
    if reader.same_object(a, b):
        link = (f"soft link /adc/{b} -> {ib.soft_link}" if ib.soft_link
                else f"soft link /adc/{a} -> {ia.soft_link}" if ia.soft_link
                else "hard link to the same dataset")
        return f"{link}"
    n = min(ia.length, ib.length, PREFIX_SAMPLES)
    return identical_prefix(reader.read(a, 0, n), reader.read(b, 0, n))


def identical_prefix(xa: np.ndarray, xb: np.ndarray) -> str | None:
    """"identical first n samples: a copy" when the (non-constant) leading samples ``xa`` and
    ``xb`` of two captures agree, else None."""
    if xa.min() != xa.max() and np.array_equal(xa, xb):
        return f"identical first {xa.shape[0]} samples: a copy"
    return None


def check_noise_levels(path: str | Path, shot_var: float, el_var: float) -> None:
    """Refuse a shot-noise variance not above the electronic noise's (codes^2, both through
    the receiver chain at the signal's scale): N0 <= 0 has no shot-noise units, v_el < 0."""
    if not shot_var > el_var:
        raise RecordingSanityError(
            f"{path}: shot-noise variance {shot_var:.6g} is not above the electronic noise "
            f"{el_var:.6g} (codes^2): no shot-noise units -- captures swapped, or the "
            "shot-noise capture taken with the LO off?",
            {"shot_noise_var": shot_var, "electronic_noise_var": el_var})


def check_clipping(path: str | Path, name: str, measured: float,
                   recorded: float | None) -> None:
    """Refuse capture ``name`` when the fraction of its samples at the rails, measured by the
    receiver or recorded by the writer (``clipped_fraction``), exceeds
    :data:`CLIP_REFUSE_FRACTION`."""
    worst = max(measured, recorded or 0.0)
    if worst > CLIP_REFUSE_FRACTION:
        src = (f"measured {measured:.3g}" if measured >= (recorded or 0.0)
               else f"recorded clipped_fraction {recorded:.3g} (measured {measured:.3g})")
        raise RecordingSanityError(
            f"{path}: /adc/{name} is clipped: {src} of its samples at the ADC rails, above "
            f"{CLIP_REFUSE_FRACTION:g}: lower the gain before the ADC (clipping biases the "
            "noise estimates)",
            {"capture": name, "clipped_fraction": measured,
             "clipped_fraction_recorded": recorded, "clip_refuse_fraction": CLIP_REFUSE_FRACTION})


def check_symbols(path: str | Path, x: np.ndarray, start: int, va: float) -> None:
    """Refuse Alice's symbols ``x`` (``/tx/symbols[start:]``) when one has |x|^2 above
    :data:`SYMBOL_MAX_VA` times the modulation variance ``va`` (no modulation of that variance
    sends it; squaring it would overflow float32)."""
    if x.shape[0] == 0:
        return
    p = np.abs(x).astype(np.float64)
    i = int(np.argmax(p))
    if p[i] ** 2 > SYMBOL_MAX_VA * va:
        raise RecordingSanityError(
            f"{path}: /tx/symbols[{start + i}] has |x|^2 = {p[i] ** 2:.3g} SNU, impossible at "
            f"modulation_variance_snu {va:g} (limit {SYMBOL_MAX_VA:g} V_A): corrupted symbols",
            {"index": start + i, "limit_snu": SYMBOL_MAX_VA * va})


def check_estimates(path: str | Path, est: Any, *, xi_cal_std: float, t_cal_std: float,
                    vel: float, vel_std: float,
                    clipped: dict[str, float] | None = None) -> None:
    """Refuse estimates outside what physics allows, beyond :data:`SIGMA` standard deviations
    of their calibration: T_min > 1, xi_max < 0, v_el < 0, and an empirical modulation
    variance that is not the recording's ``modulation_variance_snu``.

    Parameters
    ----------
    path : the recording (for the message).
    est : dsp.estimation.Estimates
    xi_cal_std, t_cal_std : sd of xi and T from the shot-noise calibration alone.
    vel, vel_std : v_el and its sd (SNU).
    clipped : measured clipped fraction per capture, named in the message as a likely cause.
    """
    metrics = {"transmittance": est.transmittance, "transmittance_min": est.transmittance_min,
               "transmittance_calibration_std": t_cal_std,
               "excess_noise_snu": est.excess_noise_snu,
               "excess_noise_max_snu": est.excess_noise_max_snu,
               "excess_noise_calibration_std_snu": xi_cal_std, "electronic_noise_snu": vel}
    clip = ""
    if clipped and max(clipped.values()) > 0:
        name = max(clipped, key=lambda k: clipped[k])
        clip = f" (/adc/{name} has {clipped[name]:.3g} of its samples at the rails)"
    xi_max = est.excess_noise_max_snu
    if math.isfinite(xi_max) and xi_max < -SIGMA * xi_cal_std:
        raise RecordingSanityError(
            f"{path}: excess noise xi_max = {xi_max:.4g} SNU is below zero by "
            f"{_sigmas(-xi_max, xi_cal_std)} of its calibration: shot-noise level too high "
            f"relative to the signal{clip} -- clipped signal, noise captures at another scale "
            "(volts_per_code) or with more gain than the signal?", metrics)
    t_min = est.transmittance_min
    if math.isfinite(t_min) and t_min > 1 + SIGMA * t_cal_std:
        raise RecordingSanityError(
            f"{path}: transmittance T_min = {t_min:.4g} is above 1 by "
            f"{_sigmas(t_min - 1, t_cal_std)} of its calibration: shot-noise level too low "
            "relative to the signal -- noise captures at another scale (volts_per_code) or "
            "with less gain than the signal, or a wrong /tx efficiency?", metrics)
    if vel < -SIGMA * vel_std:
        raise RecordingSanityError(
            f"{path}: electronic noise v_el = {vel:.4g} SNU is negative: electronic-noise "
            "capture above the shot noise -- captures swapped?", metrics)
    _check_variance(path, est.alice_variance_snu, est.modulation_variance_snu, est.n_pe,
                    "disclosed symbols", metrics)


def check_modulation_variance(path: str | Path, x: np.ndarray, va: float, what: str) -> None:
    """Refuse Alice's symbols ``x`` when their per-quadrature variance is not the recording's
    ``modulation_variance_snu`` ``va`` within :data:`SIGMA` sd plus :data:`VA_REL_SLACK`
    (e.g. all-zero symbols); ``what`` names them in the message."""
    if x.shape[0]:
        got = float(np.mean(x.real.astype(np.float64) ** 2 + x.imag.astype(np.float64) ** 2))
        _check_variance(path, got / 2, va, 2 * x.shape[0], what, {})


def _check_variance(path: str | Path, got: float, va: float, m: int, what: str,
                    metrics: dict[str, float]) -> None:
    # a Gaussian quadrature's sample variance has relative sd sqrt(2/m) over m values
    if m > 0 and math.isfinite(got):
        tol = SIGMA * math.sqrt(2.0 / m) + VA_REL_SLACK
        if abs(got / va - 1) > tol:
            raise RecordingSanityError(
                f"{path}: Alice's {what} have variance {got:.4g} SNU per quadrature but "
                f"/tx modulation_variance_snu says {va:.4g} (allowed +-{100 * tol:.2g} %): "
                "wrong attribute, or symbols missing or in other units",
                {**metrics, "alice_variance_snu": got, "modulation_variance_snu": va})


def _sigmas(excess: float, sd: float) -> str:
    return f"{excess / sd:.0f} sigma" if sd > 0 else "infinitely many sigma"
