"""Bias of the IQ modulator: find its null points and lock the controller there.

With the AWG drive off (the output relays as they are; a stopped AWG drives nothing in the
virtual lab, on a real bench stop it first) the power meter at the modulator's monitor tap
sees the carrier alone, ``P(V) = A cos^2(pi (V - V_peak) / (2 V_pi)) + floor``. The bias
controller (MANUAL mode) is stepped over ``bias_range_v`` (ramped in ``[ramp]
bias_v_per_step``), ``P(V)`` is fitted, the nulls are ``V_peak +- V_pi (+ 2k V_pi)``; then
the controller locks in AUTO_NULL and the bias it chose and the extinction ``P_peak /
P(lock)`` are read. The lab's controller drives both child MZMs (``[roles]
bias_controller``), so ``bias_v`` has one entry per controller role; a setup with one
controller per arm would list each. The session puts the controller back in its earlier
mode afterwards: this procedure measures, the acquisition locks again itself.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from calibration.common import Record, bar, preflight

__all__ = ["BiasOptions", "fit_bias_curve", "measure_bias", "plot"]


@dataclass(frozen=True)
class BiasOptions:
    """bias_range_v : (first, last) bias of the sweep (V), inside the lab's bias_v limit.
    step_v : sweep step (V).
    tx_power_mw : signal laser set point during the sweep.
    max_null_error_v : verdict: |locked bias - fitted null| at most this.
    min_extinction_db : verdict threshold.
    """

    bias_range_v: tuple[float, float] = (-8.0, 8.0)
    step_v: float = 0.5
    tx_power_mw: float = 10.0
    max_null_error_v: float = 0.1
    min_extinction_db: float = 20.0
    lock_timeout_s: float = 30.0
    show_progress: bool = False


def _model(v: np.ndarray, a: float, v_peak: float, v_pi: float, floor: float) -> np.ndarray:
    return a * np.cos(np.pi * (v - v_peak) / (2 * v_pi)) ** 2 + floor


def fit_bias_curve(v: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Least-squares fit of ``P(V)`` (see module doc); starts from the sweep's extremes."""
    from scipy.optimize import curve_fit

    v, p = np.asarray(v, float), np.asarray(p, float)
    v_max, v_min = v[np.argmax(p)], v[np.argmin(p)]
    v_pi0 = max(abs(v_max - v_min), 2 * (v[1] - v[0]))
    best = None
    # the half period is ambiguous from one extreme pair: try a few starting V_pi
    for guess in (v_pi0, v_pi0 / 3, v_pi0 * 3 if v_pi0 * 3 < 40 else v_pi0):
        try:
            popt, _ = curve_fit(_model, v, p, p0=(p.max() - p.min(), v_max, guess, p.min()),
                                maxfev=20000)
        except RuntimeError:
            continue
        sse = float(np.sum((p - _model(v, *popt)) ** 2))
        if best is None or sse < best[1]:
            best = (popt, sse)
    if best is None:
        raise ValueError("bias sweep: no cos^2 fit converged")
    a, v_peak, v_pi, floor = best[0]
    v_pi = abs(v_pi)
    return {"amplitude_w": float(a), "v_peak": float(v_peak), "v_pi": float(v_pi),
            "floor_w": float(floor)}


def nulls_in(fit: dict[str, float], lo: float, hi: float) -> list[float]:
    """Null voltages ``V_peak + V_pi (2k + 1)`` inside [lo, hi]."""
    v_peak, v_pi = fit["v_peak"], fit["v_pi"]
    k0 = math.floor((lo - v_peak - v_pi) / (2 * v_pi))
    out = []
    for k in range(k0, k0 + int((hi - lo) / (2 * v_pi)) + 3):
        v = v_peak + v_pi * (2 * k + 1)
        if lo <= v <= hi:
            out.append(float(v))
    return out


def measure_bias(session: Any, rec: Record, opt: BiasOptions) -> None:
    """Sweep, fit, lock at the null, fill ``rec`` (see module doc)."""
    from drivers.thorlabs_mbx import MzmMode

    lo, hi = opt.bias_range_v
    volts = np.arange(lo, hi + opt.step_v / 2, opt.step_v)
    rec.options.update(asdict(opt))
    preflight(session, [("bias_controller", "bias_v", lo, "V"),
                        ("bias_controller", "bias_v", hi, "V"),
                        ("signal_laser", "power_mw", opt.tx_power_mw, "mW")])
    session.set("signal_laser", "power_setpoint_mw", opt.tx_power_mw)
    session.set("signal_laser", "emission", True)
    pm = session.instrument("power_meter")
    session.set("bias_controller", "mode", MzmMode.MANUAL)
    power = np.full(volts.size, np.nan)
    rec.raw["bias_v"] = volts
    rec.raw["power_w"] = power
    with bar(volts.size, "bias sweep", enabled=opt.show_progress,
             on_step=rec.on_step) as tick:
        for i, v in enumerate(volts):
            session.set("bias_controller", "hold_voltage_v", float(v))
            power[i] = pm.measure_power_w()
            tick(1)
    fit = fit_bias_curve(volts, power)
    nulls = nulls_in(fit, lo, hi)
    session.set("bias_controller", "mode", MzmMode.AUTO_NULL)
    ctl = session.instrument("bias_controller")
    locked_v = float(ctl.wait_locked(opt.lock_timeout_s))
    p_lock = pm.measure_power_w()
    p_peak = fit["amplitude_w"] + fit["floor_w"]
    ext = 10 * math.log10(p_peak / p_lock) if p_lock > 0 else math.inf
    err = min((abs(locked_v - n) for n in nulls), default=math.inf)
    role = "bias_controller"
    rec.results.update(bias_v={role: locked_v}, nulls_v=nulls, v_pi_v=fit["v_pi"],
                       peak_v=fit["v_peak"], extinction_db=ext, locked_power_w=p_lock,
                       peak_power_w=p_peak, null_error_v=err)
    rec.passed = all([
        rec.check(bool(nulls), f"{len(nulls)} null(s) in the sweep: "
                  + ", ".join(f"{n:.3f} V" for n in nulls)),
        rec.check(err <= opt.max_null_error_v,
                  f"locked at {locked_v:.3f} V, {err:.3f} V from a fitted null "
                  f"(<= {opt.max_null_error_v:g})"),
        rec.check(ext >= opt.min_extinction_db,
                  f"extinction {ext:.1f} dB >= {opt.min_extinction_db:g} dB"),
    ])


def plot(rec: Record) -> Any:
    """Figure: tap power against bias with the fit, nulls and the lock."""
    from qkd_hw.plotting import pyplot

    plt = pyplot()

    v, p = rec.raw["bias_v"], rec.raw["power_w"]
    r = rec.results
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.semilogy(v, np.maximum(p, 1e-15) * 1e3, "o", label="power meter")
    for n in r["nulls_v"]:
        ax.axvline(n, color="g", ls=":")
    ax.axvline(r["bias_v"]["bias_controller"], color="r", ls="--", label="locked")
    ax.set_xlabel("bias (V)")
    ax.set_ylabel("tap power (mW)")
    ax.set_title(f"bias: locked {r['bias_v']['bias_controller']:.3f} V, extinction "
                 f"{r['extinction_db']:.1f} dB -- {rec.verdict}")
    ax.legend()
    return fig
