"""Parameter estimation, its sanity checks and the key rate, from the disclosed pairs' sums."""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import asdict, dataclass

from dsp.carrier import pilot_leakage_floor
from dsp.estimation import Estimates, estimate_parameters
from dsp.lock import Acquisition
from dsp.noise import NoiseStats
from dsp.options import LinkParameters
from dsp.pe import PairMoments
from dsp.snu import SnuCalibration, calibration_std
from qkd_hw.errors import ReceiverLockError
from qkd_hw.keyrate import KeyRate, KeyRateInputError, key_rate_from_estimates
from qkd_hw.sanity import check_estimates

__all__ = ["Estimation", "ImplausibleDiagnosticWarning", "estimate", "leakage_floor",
           "plausible_leakage_floor", "raw_key_estimates"]


class ImplausibleDiagnosticWarning(UserWarning):
    """A diagnostic came out where no link can be: it is reported as NaN, with what was
    found."""


@dataclass(frozen=True)
class Estimation:
    """Outcome of the estimation step (SNU unless named otherwise)."""

    estimates: Estimates
    #: common residual carrier phase of Bob's symbols (fitted on the disclosed pairs)
    residual_phase_rad: float
    key_rate: KeyRate | None
    #: why there is no finite-size key rate (None when there is one)
    key_rate_error: str | None
    asymptotic_key_rate_bits_per_symbol: float | None
    #: sds of xi (None when t_hat = 0) and T from the shot-noise calibration alone
    xi_calibration_std: float | None
    t_calibration_std: float
    pilot_leakage_floor_snu: float


def estimate(moments: PairMoments, *, name: str, link: LinkParameters, acq: Acquisition,
             cal: SnuCalibration, shot: NoiseStats, eps_pe: float, beta: float,
             n_received: int, clipped: dict[str, float]) -> Estimation:
    """Estimate T, xi, the key rates and the leakage floor from the disclosed pairs' sums.

    Raises
    ------
    ReceiverLockError
        Fewer than 2 symbols were disclosed.
    RecordingSanityError
        The estimates are outside physics beyond the calibration's uncertainty (checked
        before any key rate: it would clamp xi_max < 0 to 0 and T > 1 to 1 and certify a key).
    """
    if moments.count < 2:
        raise ReceiverLockError(f"{name}: only {moments.count} symbols disclosed for parameter "
                                "estimation", acq.lock_metrics)
    theta = moments.phase()
    acc = moments.accumulator(link.detection, theta)
    est = estimate_parameters(acc, modulation_variance_snu=link.modulation_variance_snu,
                              efficiency=link.efficiency, electronic_noise_snu=cal.vel,
                              eps_pe=eps_pe, fitted_phase=True)
    xi_cal_std, t_cal_std = calibration_std(
        t_eff=est.t_eff, transmittance=est.transmittance, shot_variance_std=shot.variance_std,
        n0=cal.n0, n0_std=cal.n0_std)
    check_estimates(name, est, xi_cal_std=xi_cal_std if xi_cal_std is not None else math.inf,
                    t_cal_std=t_cal_std, vel=cal.vel, vel_std=cal.vel_std, clipped=clipped)
    kr, kr_err, kr_asym = _key_rates(est, beta=beta, n_received=n_received,
                                     n_pe=moments.count)
    return Estimation(estimates=est, residual_phase_rad=theta, key_rate=kr, key_rate_error=kr_err,
                      asymptotic_key_rate_bits_per_symbol=kr_asym,
                      xi_calibration_std=xi_cal_std, t_calibration_std=t_cal_std,
                      pilot_leakage_floor_snu=plausible_leakage_floor(
                          name, acq, link, cal.n0, est,
                          xi_cal_std if xi_cal_std is not None else math.inf))


def _key_rates(est: Estimates, *, beta: float, n_received: int,
               n_pe: int) -> tuple[KeyRate | None, str | None, float | None]:
    """Finite-size key rate (or why there is none) and the asymptotic rate at the point
    estimates (None if undefined), always useful to an engineer."""
    kr, kr_err = None, None
    try:
        kr = key_rate_from_estimates(est, beta=beta, block_size=n_received,
                                     n_key=n_received - n_pe if n_received > n_pe else None)
    except (KeyRateInputError, ValueError) as exc:
        kr_err = str(exc)
    kr_asym = None
    with contextlib.suppress(KeyRateInputError, ValueError):
        kr_asym = key_rate_from_estimates(est, beta=beta).key_rate_bits_per_symbol
    return kr, kr_err, kr_asym


def leakage_floor(acq: Acquisition, link: LinkParameters, n0: float, t_eff: float) -> float:
    """``dsp.carrier.pilot_leakage_floor`` of the acquired pilots (SNU; inf when ``t_eff``
    is 0)."""
    if t_eff == 0:
        return math.inf
    p = acq.pilot
    return pilot_leakage_floor(
        pilot_amplitudes=p.pilot_amplitudes,
        pilot_frequencies_hz=[f + p.frequency_offset_hz for f in link.pilot_frequencies_hz],
        linewidth_hz=p.linewidth_hz, mixer_hz=acq.mixer_hz,
        symbol_rate_hz=link.symbol_rate_hz, rolloff=link.rolloff,
        fs=link.sample_rate_hz, shot_noise_var=2 * n0, t_eff=abs(t_eff))


def plausible_leakage_floor(name: str, acq: Acquisition, link: LinkParameters, n0: float,
                            est: Estimates, xi_cal_std: float) -> float:
    """``leakage_floor``, or NaN with an ``ImplausibleDiagnosticWarning`` when it exceeds the
    excess noise's upper bound (``excess_noise_max_snu`` plus 3 calibration sds): the floor is
    part of the measured excess noise, so such a floor comes from a linewidth that cannot be
    right (a pilot-free or disturbed span taken as laser phase noise), not from the link."""
    floor = leakage_floor(acq, link, n0, est.t_eff)
    bound = est.excess_noise_max_snu + 3 * xi_cal_std
    if math.isfinite(floor) and not floor <= bound:
        warnings.warn(f"{name}: pilot leakage floor {floor:.3g} SNU from the acquired linewidth "
                      f"{acq.pilot.linewidth_hz:.0f} Hz exceeds the measured excess noise's "
                      f"upper bound {bound:.3g} SNU: the linewidth estimate cannot be right "
                      "(floor reported as NaN)", ImplausibleDiagnosticWarning, stacklevel=2)
        return math.nan
    return floor


def raw_key_estimates(est: Estimates, key_rate: KeyRate | None) -> dict[str, float]:
    """The finite numeric estimates and ``key_rate_bits_per_symbol`` (0 when there is no
    finite key rate) for the raw-key file's ``/estimates``."""
    d = {k: float(v) for k, v in asdict(est).items()
         if isinstance(v, int | float) and not isinstance(v, bool)}
    rate = key_rate.key_rate_bits_per_symbol if key_rate else float("nan")
    d["key_rate_bits_per_symbol"] = rate if math.isfinite(rate) else 0.0
    return {k: v for k, v in d.items() if math.isfinite(v)}
