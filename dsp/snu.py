"""Shot-noise units from the noise captures' statistics (conventions.md, "Units").

Arithmetic only: the variances come from ``dsp.noise.NoiseMeter`` (both captures through the
signal's matched filter bank); this module turns them into ``N0``, ``v_el`` and their standard
deviations, and propagates the calibration's own uncertainty into ``xi`` and ``T``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from dsp.noise import NoiseStats

__all__ = ["SnuCalibration", "calibrate_snu", "calibration_std", "rescaled"]


@dataclass(frozen=True)
class SnuCalibration:
    """Shot-noise calibration of one recording (ADC codes^2 of the signal's scale).

    n0, n0_std : shot-noise variance per quadrature ``Var(shot) - Var(el)`` and its sd.
    vel, vel_std : electronic noise ``Var(el) / N0`` (SNU) and its sd to first order.
    """

    n0: float
    n0_std: float
    vel: float
    vel_std: float

    @property
    def scale(self) -> np.float32:
        """Factor that takes Bob's symbols from codes to SNU, ``1 / sqrt(N0)`` (float32, the
        symbols' precision)."""
        return np.float32(1.0 / math.sqrt(self.n0))


def rescaled(stats: NoiseStats, vpc_ratio: float) -> NoiseStats:
    """``stats`` of a capture whose codes are ``vpc_ratio`` times the signal's (its
    volts_per_code over the signal's), in the signal's codes.

    Parameters
    ----------
    stats : NoiseStats
        Variance and its sd in the capture's own codes^2.
    vpc_ratio : float
        The capture's volts per code over the signal's.

    Returns
    -------
    NoiseStats
        Variance and sd times ``vpc_ratio**2`` (``stats`` itself for a ratio of 1).
    """
    if vpc_ratio == 1.0:
        return stats
    g = vpc_ratio * vpc_ratio
    return replace(stats, variance=stats.variance * g, variance_std=stats.variance_std * g)


def calibrate_snu(shot: NoiseStats, electronic: NoiseStats) -> SnuCalibration:
    """``N0``, ``v_el`` and their sds from the two noise captures' statistics.

    Parameters
    ----------
    shot, electronic : NoiseStats
        Per-quadrature variances (and their sds) of the shot- and electronic-noise captures
        through the receiver chain, at the signal's scale.

    Returns
    -------
    SnuCalibration
        ``N0 = V_shot - V_el`` with sd ``hypot(sd_shot, sd_el)``; ``v_el = V_el / N0`` with
        the first-order sd ``hypot(V_shot sd_el, V_el sd_shot) / N0^2`` (V_el's error moves
        the numerator and N0 together).

    Raises
    ------
    ValueError
        ``V_shot <= V_el``: no shot-noise units.
    """
    n0 = shot.variance - electronic.variance
    if not n0 > 0:
        raise ValueError(f"shot-noise variance {shot.variance!r} is not above the electronic "
                         f"noise {electronic.variance!r}")
    n0_std = math.hypot(shot.variance_std, electronic.variance_std)
    vel = electronic.variance / n0
    # Var(el) is in the numerator and (with a minus sign) in N0: d v_el =
    # (V_sn dV_el - V_el dV_sn) / N0^2; 0 for a noiseless float capture
    vel_std = math.hypot(shot.variance * electronic.variance_std,
                         electronic.variance * shot.variance_std) / (n0 * n0)
    return SnuCalibration(n0=n0, n0_std=n0_std, vel=vel, vel_std=vel_std)


def calibration_std(*, t_eff: float, transmittance: float, shot_variance_std: float,
                    n0: float, n0_std: float) -> tuple[float | None, float]:
    """sd of ``xi`` (SNU) and of ``T`` from the shot-noise calibration alone (outside the PE
    bounds).

    ``xi = (sigma2 - V_shot) / t^2`` in ADC codes, so the sd of the shot-noise variance moves
    ``xi`` by ``sd(V_shot) / N0 / t^2`` (v_el's cancels), and ``T = t^2 / gain`` moves by the
    relative sd of ``N0``.

    Parameters
    ----------
    t_eff, transmittance : float
        Estimated effective amplitude transmission ``t`` and ``T``.
    shot_variance_std : float
        sd of the shot-noise capture's variance (codes^2).
    n0, n0_std : float
        ``N0`` and its sd (codes^2).

    Returns
    -------
    (xi_std, t_std) : (float or None, float)
        ``xi_std`` is None when ``t_eff`` is 0 (no channel, ``xi`` undefined).
    """
    xi_std = shot_variance_std / n0 / t_eff**2 if t_eff else None
    return xi_std, transmittance * n0_std / n0
