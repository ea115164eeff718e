"""Linearity of the detector: shot-noise variance against LO power, and where it saturates.

The switch blocks the channel, the LO is stepped (ramped in ``[ramp] lo_mw_per_step``) over
``lo_powers_mw``; at each point a capture goes through the receiver's matched filter
(``dsp.pipeline.NoiseMeter``), and one capture with the LO off gives the electronic floor.
Model fitted (least squares, over every split of the sweep into a linear and a saturated
part): ``var(P) = offset + slope * min(P, P_sat)``. A linear detector has ``offset`` at the
electronic floor and no linear-part point off the line by more than ``max_nonlinearity``
*and* by more than ``max_sd`` of its own standard deviation (a deviation must be both large
enough to matter and larger than the capture noise to count; ``r_squared`` is reported, not
judged, since with few points it moves with the capture noise); ``saturation_lo_mw`` is
``P_sat`` (None when no point lies above it). Set points are the LO laser's; the LO power at
the detector differs by the LO path loss, which this procedure does not know.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from calibration.common import (
    Record,
    bar,
    capture,
    link_params,
    noise_chain,
    noise_stats,
    preflight,
)

__all__ = ["LinearityOptions", "fit_saturating_line", "measure_linearity", "plot"]


@dataclass(frozen=True)
class LinearityOptions:
    """lo_powers_mw : LO set points of the sweep (mW), increasing.
    n_samples : samples per capture.
    max_nonlinearity : verdict threshold on the largest relative deviation of a linear-part
        point from the fitted line (0.01: 1 %).
    max_sd : a deviation within this many of its point's standard deviations is noise.
    """

    lo_powers_mw: tuple[float, ...] = field(
        default_factory=lambda: tuple(float(p) for p in range(1, 21)))
    n_samples: int = 200_000
    max_nonlinearity: float = 0.01
    max_sd: float = 4.0
    show_progress: bool = False


def fit_saturating_line(p: np.ndarray, v: np.ndarray) -> dict[str, Any]:
    """Fit ``v = offset + slope * min(p, p_sat)``; returns slope, offset, r_squared (linear
    part), saturation_lo_mw (None: no saturation within the sweep), n_linear."""
    p, v = np.asarray(p, float), np.asarray(v, float)
    best: dict[str, Any] | None = None
    for k in range(3, p.size + 1):
        slope, offset = np.polyfit(p[:k], v[:k], 1)
        sse = float(np.sum((v[:k] - (offset + slope * p[:k])) ** 2))
        p_sat = None
        if k < p.size:
            plateau = float(np.mean(v[k:]))
            p_sat = (plateau - offset) / slope if slope > 0 else math.nan
            if not p[k - 1] <= p_sat <= p[k]:   # the break must lie between the two parts
                continue
            sse += float(np.sum((v[k:] - plateau) ** 2))
        if best is None or sse < best["sse"] * (1 - 1e-9):
            ss_tot = float(np.sum((v[:k] - v[:k].mean()) ** 2))
            lin_sse = float(np.sum((v[:k] - (offset + slope * p[:k])) ** 2))
            best = {"slope": float(slope), "offset": float(offset), "sse": sse,
                    "r_squared": 1 - lin_sse / ss_tot if ss_tot > 0 else math.nan,
                    "saturation_lo_mw": p_sat, "n_linear": k}
    if best is None:
        raise ValueError(f"linearity fit needs >= 3 sweep points, got {p.size}")
    return best


def measure_linearity(session: Any, rec: Record, opt: LinearityOptions) -> None:
    """Sweep the LO, fit, fill ``rec`` (see module doc)."""
    cfg = session.config
    link = link_params(cfg)
    powers = np.asarray(opt.lo_powers_mw, float)
    rec.options.update(asdict(opt))
    if powers.size < 3 or np.any(np.diff(powers) <= 0) or powers[0] <= 0:
        raise ValueError(f"lo_powers_mw must be >= 3 increasing positive values, got "
                         f"{list(powers)}")
    preflight(session, [("lo_laser", "power_mw", float(powers.max()), "mW")])
    session.set("detector", "enabled", True)
    session.set("switch", "channel", cfg.port("switch_block_port"))
    session.set("digitizer", "sample_rate_hz", link.sample_rate_hz)
    chain = noise_chain(link)
    el = noise_stats(capture(session, opt.n_samples), chain)   # LO still as it was: off
    session.set("lo_laser", "power_setpoint_mw", float(powers[0]))
    session.set("lo_laser", "emission", True)
    var, std = np.full(powers.size, np.nan), np.full(powers.size, np.nan)
    rec.raw["lo_power_mw"] = powers
    rec.raw["variance_codes2"] = var
    rec.raw["variance_std_codes2"] = std
    with bar(powers.size, "LO sweep", enabled=opt.show_progress,
             on_step=rec.on_step) as tick:
        for i, p in enumerate(powers):
            session.set("lo_laser", "power_setpoint_mw", float(p))
            st = noise_stats(capture(session, opt.n_samples), chain)
            var[i], std[i] = st.variance, st.variance_std
            tick(1)
    fit = fit_saturating_line(powers, var)
    k = fit["n_linear"]
    line = fit["offset"] + fit["slope"] * powers[:k]
    resid = var[:k] - line
    nonlin = float(np.max(np.abs(resid) / line))
    worst_sd = float(np.max(np.abs(resid) / std[:k]))
    bad = (np.abs(resid) > opt.max_nonlinearity * line) & (np.abs(resid) > opt.max_sd * std[:k])
    # residuals against each point's own standard deviation: ~1 for a linear detector
    chi2_dof = float(np.sum((resid / std[:k]) ** 2) / max(k - 2, 1))
    rec.results.update(slope=fit["slope"], offset=fit["offset"], r_squared=fit["r_squared"],
                       max_nonlinearity=nonlin, linear_chi2_per_dof=chi2_dof,
                       saturation_lo_mw=fit["saturation_lo_mw"], n_linear=k,
                       electronic_variance=el.variance, slope_unit="codes^2/mW")
    sat = fit["saturation_lo_mw"]
    link_lo = link.lo_power_mw
    rec.passed = all([
        rec.check(not bad.any(),
                  f"linear part: largest deviation {100 * nonlin:.2f} % / {worst_sd:.1f} sd "
                  f"(a point fails beyond both {100 * opt.max_nonlinearity:g} % and "
                  f"{opt.max_sd:g} sd; chi2/dof {chi2_dof:.2f})"),
        rec.check(fit["slope"] > 0, f"slope {fit['slope']:.4g} codes^2/mW > 0"),
        rec.check(link_lo is None or sat is None or link_lo < sat,
                  f"working LO {link_lo} mW below saturation "
                  f"({'none in sweep' if sat is None else f'{sat:.2f} mW'})"),
    ])


def plot(rec: Record) -> Any:
    """Figure: variance against LO power with the fitted model."""
    from qkd_hw.plotting import pyplot

    plt = pyplot()

    p, v = rec.raw["lo_power_mw"], rec.raw["variance_codes2"]
    r = rec.results
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.errorbar(p, v, yerr=rec.raw["variance_std_codes2"], fmt="o", label="measured")
    sat = r["saturation_lo_mw"] if r["saturation_lo_mw"] is not None else math.inf
    pp = np.linspace(0, p.max(), 200)
    ax.plot(pp, r["offset"] + r["slope"] * np.minimum(pp, sat), label="fit")
    if math.isfinite(sat):
        ax.axvline(sat, color="r", ls="--", label=f"saturation {sat:.2f} mW")
    ax.set_xlabel("LO set point (mW)")
    ax.set_ylabel("noise variance per quadrature (codes$^2$)")
    ax.set_title(f"linearity: slope {r['slope']:.4g} codes$^2$/mW, r$^2$ = "
                 f"{r['r_squared']:.5f} -- {rec.verdict}")
    ax.legend()
    return fig
