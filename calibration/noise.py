"""Noise calibration: electronic noise (LO off) and shot noise (signal blocked, LO on).

Both captures go through the receiver's own matched filter (``dsp.pipeline.NoiseMeter``
over the RRC bank at the link's IF), so the numbers are those ``qkd-hw process`` would
derive from the same captures (conventions.md): ``N0 = Var(shot) - Var(el)`` per quadrature
in ADC codes^2, ``v_el = Var(el) / N0``. The clearance is ``Var(shot) / Var(el)`` in dB
(through the filter), its spectrum the ratio of the two captures' Welch spectra.

Settings driven (all restored afterwards by the session): LO laser set point and emission,
detector enable, switch to ``switch_block_port``, digitizer sample rate and record length.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
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
    psd,
)

__all__ = ["NoiseOptions", "measure_noise", "plot"]


@dataclass(frozen=True)
class NoiseOptions:
    """Options of the noise calibration.

    n_samples : samples per capture (1e6 at 1 GSa/s and 10 samples per symbol gives 1e5
        symbol instants: sd(v_el) ~ 0.5 % relative).
    lo_power_mw : LO set point (default: the lab's ``[link] lo_power_mw``).
    min_clearance_db : verdict threshold on the clearance (shot over electronic noise; the
        shipped virtual lab has 10.4 dB at 5 mW).
    max_electronic_noise_snu : verdict threshold on v_el.
    """

    n_samples: int = 1_000_000
    lo_power_mw: float | None = None
    min_clearance_db: float = 8.0
    max_electronic_noise_snu: float = 0.2
    show_progress: bool = False


def _setup(session: Any, lo_mw: float, fs: float) -> None:
    cfg = session.config
    session.set("detector", "enabled", True)
    session.set("switch", "channel", cfg.port("switch_block_port"))
    session.set("digitizer", "sample_rate_hz", fs)
    session.set("lo_laser", "power_setpoint_mw", lo_mw)
    session.set("lo_laser", "emission", True)


def measure_noise(session: Any, rec: Record, opt: NoiseOptions) -> None:
    """Take the electronic- and shot-noise captures and fill ``rec`` (see module doc)."""
    link = link_params(session.config)
    lo_mw = opt.lo_power_mw if opt.lo_power_mw is not None else link.lo_power_mw
    if lo_mw is None:
        raise ValueError("no LO power: set [link] lo_power_mw or the lo_power_mw option")
    rec.options.update(asdict(opt), lo_power_mw=lo_mw)
    preflight(session, [("lo_laser", "power_mw", lo_mw, "mW")])
    fs = link.sample_rate_hz
    _setup(session, lo_mw, fs)
    chain = noise_chain(link)
    with bar(opt.n_samples, "shot noise", enabled=opt.show_progress,
             on_step=rec.on_step) as tick:
        shot = capture(session, opt.n_samples, progress=tick)
    session.set("lo_laser", "emission", False)
    with bar(opt.n_samples, "electronic noise", enabled=opt.show_progress,
             on_step=rec.on_step) as tick:
        el = capture(session, opt.n_samples, progress=tick)
    half = (1 + link.rolloff) * link.symbol_rate_hz / 2
    rec.options["quantum_band_hz"] = [link.signal_frequency_hz - half,
                                      link.signal_frequency_hz + half]
    rec.raw["shot_noise"] = shot
    rec.raw["electronic_noise"] = el
    analyse(rec, shot, el, chain, fs, opt)


def analyse(rec: Record, shot: np.ndarray, el: np.ndarray, chain: Any, fs: float,
            opt: NoiseOptions) -> None:
    """Results and verdict from the two captures."""
    sn, en = noise_stats(shot, chain), noise_stats(el, chain)
    n0 = sn.variance - en.variance
    n0_std = math.hypot(sn.variance_std, en.variance_std)
    vel = en.variance / n0 if n0 > 0 else math.inf
    vel_std = math.hypot(en.variance_std, en.variance * n0_std / n0) / n0 if n0 > 0 \
        else math.inf
    clear = 10 * math.log10(sn.variance / en.variance) if en.variance > 0 else math.inf
    f, p_sn = psd(shot, fs)
    _, p_el = psd(el, fs)
    rec.raw["psd_frequency_hz"] = f
    rec.raw["psd_shot_codes2_per_hz"] = p_sn
    rec.raw["psd_electronic_codes2_per_hz"] = p_el
    rails = int(np.count_nonzero((shot == 32767) | (shot == -32768)))
    rec.results.update(
        shot_noise_variance=n0, shot_noise_variance_std=n0_std,
        shot_capture_variance=sn.variance, electronic_capture_variance=en.variance,
        electronic_noise_snu=vel, electronic_noise_snu_std=vel_std,
        clearance_db=clear, n_symbol_instants=sn.n_symbols, clipped_samples=rails)
    rec.passed = all([
        rec.check(n0 > 0, f"shot noise above electronic noise (N0 = {n0:.4g} codes^2)"),
        rec.check(clear >= opt.min_clearance_db,
                  f"clearance {clear:.2f} dB >= {opt.min_clearance_db:g} dB"),
        rec.check(vel <= opt.max_electronic_noise_snu,
                  f"v_el {vel:.4f} SNU <= {opt.max_electronic_noise_snu:g}"),
        rec.check(rails == 0, f"{rails} samples of the shot-noise capture at the ADC rails"),
    ])


def plot(rec: Record) -> Any:
    """Figure: the two spectra and the clearance spectrum."""
    from qkd_hw.plotting import pyplot

    plt = pyplot()

    f = rec.raw["psd_frequency_hz"] / 1e6
    p_sn, p_el = rec.raw["psd_shot_codes2_per_hz"], rec.raw["psd_electronic_codes2_per_hz"]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    a1.semilogy(f, p_sn, label="shot noise (LO on, signal blocked)")
    a1.semilogy(f, p_el, label="electronic noise (LO off)")
    a1.set_ylabel("PSD (codes$^2$/Hz)")
    a1.legend()
    a1.set_title(f"noise calibration: v_el = {rec.results['electronic_noise_snu']:.4f} SNU, "
                 f"clearance {rec.results['clearance_db']:.1f} dB -- {rec.verdict}")
    with np.errstate(divide="ignore", invalid="ignore"):
        a2.plot(f, 10 * np.log10(p_sn / p_el))
    a2.axhline(rec.options.get("min_clearance_db", 10.0), color="r", ls="--",
               label="threshold")
    band = rec.options.get("quantum_band_hz")
    if band:
        for ax in (a1, a2):
            ax.axvspan(band[0] / 1e6, band[1] / 1e6, color="g", alpha=0.12,
                       label="quantum band" if ax is a2 else None)
    a2.set_ylabel("clearance (dB)")
    a2.set_xlabel("frequency (MHz)")
    a2.legend()
    return fig
