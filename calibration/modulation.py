"""Modulation variance: set Alice's V_A from power-meter readings through the attenuation chain.

The transmitter's segment (:mod:`qkd_hw.lab.transmitter`: Gaussian symbols of the design
variance ``V_d = [link] modulation_variance_snu``, RRC at the IF, pilots) plays on the AWG
with the modulator locked at its null (AUTO_NULL). The power meter at the modulator's monitor
tap reads ``P_pm``; with the AWG stopped it reads the carrier leak ``P_0``. Through the
calibrated chain (tap ratio ``tap_db``, Alice's attenuation ``tx_attenuation_db``) Alice's
output is ``P_A = (P_pm - P_0) 10^(tap_db/10) 10^(-tx_attenuation_db/10)``, i.e. a field
power per ADC sample ``4 P_A / (h nu f_adc)`` (quadrature units, the model's and the
receiver's). The segment's designed field power per ADC sample is ``mean(I^2 + Q^2) / G^2``
(its DAC codes over ``codes_per_field``), of which the quantum band carries ``V_d``; so

    V_A = V_d * (4 P_A / (h nu f_adc)) / (mean(I^2 + Q^2) / G^2).

The modulator is linear at the null for small drives (``sin(kappa d) ~ kappa d``), so one
reading at a small probe amplitude ``A_p`` gives the chain's *field per drive volt*
``F = sqrt(V_A / V_d) * 254 / (A_p G)`` (a code is ``A / 254`` V); any segment of
``codes_per_field`` ``G'`` then needs ``A = 254 / (F G')`` for V_A = V_d. That amplitude is
checked against the AWG's limit before it is set (a LimitError naming the Tx power it would
take otherwise), set, and V_A verified with ``n_readings`` fresh readings.
``modulation_variance_snu_std`` combines the readings' scatter and the chain's calibration
uncertainty ``chain_uncertainty_db`` (a power ratio known to +-x dB moves V_A by
``ln(10)/10 x`` relative).

Results: ``modulation_variance_snu`` (+ ``_std``), ``field_per_volt`` (F), ``tx_power_mw``,
``awg_amplitude_v`` (for this procedure's segment; :func:`amplitude_for` gives it for
another segment, e.g. the acquisition's). The session restores the AWG,
lasers and bias afterwards; pass these to the acquisition to use them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from calibration.common import Record, bar, link_params, preflight
from qkd_hw.errors import LimitError

__all__ = ["ModulationOptions", "amplitude_for", "measure_modulation", "plot"]

PLANCK_J_S = 6.62607015e-34
LIGHT_M_S = 299_792_458.0


@dataclass(frozen=True)
class ModulationOptions:
    """Options of the V_A calibration.

    tap_db, tx_attenuation_db : the calibrated attenuation chain (monitor tap ratio, Alice's
        attenuation after the modulator), dB. Required on a real lab; on a virtual lab the
        CLI takes them from ``[virtual]`` (its truth stands for the chain's calibration).
    target_snu : V_A wanted (default: ``[link] modulation_variance_snu``).
    tx_power_mw : signal laser set point (the shipped virtual lab plays V_A = 5 SNU at about
        0.65 V of AWG amplitude at 20 mW; below ~10 mW it would need more than its 1 V).
    probe_amplitude_v : AWG amplitude of the reading that measures F (small: linear).
    max_rel_error : verdict: |V_A / target - 1| at most this.
    """

    tap_db: float | None = None
    tx_attenuation_db: float | None = None
    target_snu: float | None = None
    tx_power_mw: float = 20.0
    probe_amplitude_v: float = 0.3
    pilot_to_signal_db: float = 8.0
    wavelength_nm: float = 1550.0
    segment_symbols: int = 4096
    n_readings: int = 5
    chain_uncertainty_db: float = 0.05
    max_rel_error: float = 0.05
    show_progress: bool = False


def amplitude_for(codes_per_field: float, field_per_volt: float) -> float:
    """AWG amplitude (V peak-to-peak over codes -127..127) that makes a segment of
    ``codes_per_field`` play at its designed field, given the calibrated ``field_per_volt``."""
    return 254.0 / (field_per_volt * codes_per_field)


def _readings(pm: Any, n: int) -> tuple[float, float]:
    vals = np.array([pm.measure_power_w() for _ in range(n)])
    return float(vals.mean()), float(vals.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0


def _set_amplitude(session: Any, chans: list[int], amplitude: float) -> None:
    for ch in chans:
        session.set("awg", "amplitude_v", amplitude, channel=ch)


def measure_modulation(session: Any, rec: Record, opt: ModulationOptions) -> None:
    """Calibrate and verify V_A; fill ``rec`` (see module doc)."""
    from drivers.thorlabs_mbx import MzmMode
    from qkd_hw.lab.transmitter import TxDesign, make_waveform, segment_symbols

    cfg = session.config
    link = link_params(cfg)
    if opt.tap_db is None or opt.tx_attenuation_db is None:
        raise ValueError("modulation: the attenuation chain is not calibrated: give tap_db "
                         "and tx_attenuation_db (qkd-hw calibrate: --set tap_db=DB --set "
                         "tx_attenuation_db=DB)")
    target = opt.target_snu if opt.target_snu is not None else link.modulation_variance_snu
    rec.options.update(asdict(opt), target_snu=target)
    preflight(session, [("signal_laser", "power_mw", opt.tx_power_mw, "mW")])
    design = TxDesign.from_link(link, pilot_to_signal_db=opt.pilot_to_signal_db)
    wf = make_waveform(design, segment_symbols(design, opt.segment_symbols))
    field_design = float(np.mean(wf.i_codes.astype(float) ** 2 + wf.q_codes.astype(float) ** 2)
                         ) / wf.codes_per_field ** 2
    h_nu = PLANCK_J_S * LIGHT_M_S / (opt.wavelength_nm * 1e-9)
    chain = 10 ** (opt.tap_db / 10) * 10 ** (-opt.tx_attenuation_db / 10)

    def va_of(p_pm: float, p_0: float) -> float:
        p_alice = (p_pm - p_0) * chain
        return design.modulation_variance_snu * 4 * p_alice / (
            h_nu * link.sample_rate_hz) / field_design

    session.set("power_meter", "wavelength_nm", opt.wavelength_nm)
    session.set("signal_laser", "power_setpoint_mw", opt.tx_power_mw)
    session.set("signal_laser", "emission", True)
    session.set("bias_controller", "mode", MzmMode.AUTO_NULL)
    session.instrument("bias_controller").wait_locked()
    pm = session.instrument("power_meter")
    p_0, p_0_std = _readings(pm, opt.n_readings)          # AWG stopped: the carrier leak
    awg = session.instrument("awg")
    chans = [cfg.port("awg_i_channel")]
    if cfg.roles.ports.get("awg_q_channel") is not None:
        chans.append(cfg.port("awg_q_channel"))
    if link.awg_sample_rate_hz is not None:
        session.set("awg", "sample_rate_hz", link.awg_sample_rate_hz)
    _set_amplitude(session, chans, opt.probe_amplitude_v)
    for ch, codes in zip(chans, (wf.i_codes, wf.q_codes), strict=False):
        awg.channel(ch).upload(codes, chunk_samples=1 << 22)
        session.set("awg", "output_enabled", True, channel=ch)
    try:
        awg.start()
        with bar(2, "V_A", enabled=opt.show_progress, on_step=rec.on_step) as tick:
            va_probe = va_of(_readings(pm, 1)[0], p_0)
            tick(1)
            if not va_probe > 0:
                raise ValueError(f"modulation: no modulated power at the power meter (AWG "
                                 f"amplitude {opt.probe_amplitude_v:g} V)")
            f_per_v = math.sqrt(va_probe / design.modulation_variance_snu) * 254 / (
                opt.probe_amplitude_v * wf.codes_per_field)
            # V_A scales with (amplitude / G)^2: the target's amplitude for this segment
            amplitude = amplitude_for(wf.codes_per_field, f_per_v) * math.sqrt(
                target / design.modulation_variance_snu)
            limit = session.instrument("awg").config.limits.get("amplitude_v")
            if limit is not None and amplitude not in limit:
                need = opt.tx_power_mw * (amplitude / limit.max) ** 2 if limit.max else math.nan
                raise LimitError(f"modulation: V_A = {target:g} SNU needs an AWG amplitude of "
                                 f"{amplitude:.3g} V, above the lab limit amplitude_v "
                                 f"{limit}; nothing was set (a Tx power of about "
                                 f"{need:.3g} mW instead of {opt.tx_power_mw:g} mW would do)",
                                 instrument=awg.name)
            _set_amplitude(session, chans, amplitude)
            p_pm, p_pm_std = _readings(pm, opt.n_readings)
            tick(1)
    finally:
        awg.stop()
    va = va_of(p_pm, p_0)
    rel_chain = math.log(10) / 10 * opt.chain_uncertainty_db
    rel_read = math.hypot(p_pm_std, p_0_std) / max(p_pm - p_0, 1e-300)
    va_std = va * math.hypot(rel_chain, rel_read)
    rec.raw["awg_amplitude_v"] = np.array([opt.probe_amplitude_v, amplitude])
    rec.raw["modulation_variance_snu"] = np.array([va_probe, va])
    rec.results.update(modulation_variance_snu=va, modulation_variance_snu_std=va_std,
                       target_snu=target, awg_amplitude_v=amplitude,
                       tx_power_mw=opt.tx_power_mw, power_meter_w=p_pm,
                       power_meter_dark_w=p_0, field_per_volt=f_per_v,
                       codes_per_field=wf.codes_per_field)
    rec.passed = all([
        rec.check(abs(va / target - 1) <= opt.max_rel_error,
                  f"V_A {va:.4g} +- {va_std:.2g} SNU within {opt.max_rel_error:.0%} of "
                  f"{target:g}"),
    ])


def plot(rec: Record) -> Any:
    """Figure: V_A at each iteration's AWG amplitude, with the target."""
    from qkd_hw.plotting import pyplot

    plt = pyplot()

    r = rec.results
    fig, ax = plt.subplots(figsize=(7, 4.5))
    amp = np.linspace(0, r["awg_amplitude_v"] * 1.1, 50)
    ax.plot(amp, r["target_snu"] * (amp / r["awg_amplitude_v"]) ** 2, ":",
            label="small-signal model")
    ax.plot(rec.raw["awg_amplitude_v"], rec.raw["modulation_variance_snu"], "o",
            label="probe, set")
    ax.errorbar([r["awg_amplitude_v"]], [r["modulation_variance_snu"]],
                yerr=[r["modulation_variance_snu_std"]], fmt="s", color="k", label="verified")
    ax.axhline(r["target_snu"], color="r", ls="--", label="target")
    ax.set_xlabel("AWG amplitude (V)")
    ax.set_ylabel("V_A (SNU)")
    ax.set_title(f"modulation: V_A = {r['modulation_variance_snu']:.3f} SNU at "
                 f"{r['awg_amplitude_v']:.4g} V -- {rec.verdict}")
    ax.legend()
    return fig
