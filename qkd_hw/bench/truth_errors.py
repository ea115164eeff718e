"""Estimate minus ground truth (``/truth``) in units of the estimate's standard deviation.

Standard deviations (conventions.md estimators, m = ``n_pe`` real pairs):

* ``t_eff``: ``t_eff_std = sqrt(sigma2 / sum(x^2))`` as the receiver reports it;
* ``transmittance`` ``T = t^2 / g``: ``2 T sd(t) / |t|``, the shot-noise calibration's sd
  added in quadrature;
* ``excess_noise_snu`` ``xi = (sigma2 - 1 - v_el) / t^2``: ``sd(sigma2) = sigma2 sqrt(2/m)``
  (variance of a mean of m squared Gaussians) over ``t^2``, the ``t`` term ``2 |xi| sd(t)/|t|``
  and the calibration's sd, in quadrature;
* ``electronic_noise_snu``: ``electronic_noise_std_snu`` of the receiver.
"""

from __future__ import annotations

import math
from typing import Any

#: estimates compared with /truth (the Truth fields of the same name)
COMPARED = ("transmittance", "excess_noise_snu", "electronic_noise_snu", "t_eff")


def _f(v: Any) -> float:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else math.nan


def estimate_std(e: dict[str, Any]) -> dict[str, float]:
    """Standard deviation of each compared estimate (nan where it cannot be formed)."""
    t, sd_t = _f(e.get("t_eff")), _f(e.get("t_eff_std"))
    m, sigma2 = _f(e.get("n_pe")), _f(e.get("sigma2"))
    xi, big_t = _f(e.get("excess_noise_snu")), _f(e.get("transmittance"))
    cal_xi = _f(e.get("excess_noise_calibration_std_snu"))
    cal_t = _f(e.get("transmittance_calibration_std"))
    cal_xi = 0.0 if math.isnan(cal_xi) else cal_xi
    cal_t = 0.0 if math.isnan(cal_t) else cal_t
    out = {"t_eff": sd_t, "electronic_noise_snu": _f(e.get("electronic_noise_std_snu"))}
    if t and m > 0:
        out["transmittance"] = math.hypot(2 * big_t * sd_t / abs(t), cal_t)
        sd_sigma2 = sigma2 * math.sqrt(2.0 / m)
        out["excess_noise_snu"] = math.sqrt((sd_sigma2 / t**2) ** 2
                                            + (2 * abs(xi) * sd_t / abs(t)) ** 2 + cal_xi**2)
    else:
        out["transmittance"] = out["excess_noise_snu"] = math.nan
    return out


def truth_errors(estimates: dict[str, Any], truth: Any) -> dict[str, dict[str, float]]:
    """Per compared estimate: ``estimate``, ``truth``, ``std``, ``error_sigma``
    = (estimate - truth) / std. ``truth``: a :class:`qkd_hw.trace_io.Truth`.

    ``t_eff`` is compared in magnitude: its sign is the receiver's pi phase convention.
    """
    sds = estimate_std(estimates)
    out = {}
    for k in COMPARED:
        est, tru, sd = _f(estimates.get(k)), _f(getattr(truth, k, None)), sds[k]
        if k == "t_eff":
            est, tru = abs(est), abs(tru)
        err = (est - tru) / sd if sd > 0 else math.nan
        out[k] = {"estimate": est, "truth": tru, "std": sd, "error_sigma": err}
    return out
