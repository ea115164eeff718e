"""DSP penalty of the receiver against ideal receivers on the same simulated recording.

Every case simulates one recording (``qkd_hw.sim``) and runs five receivers on it, all with
the ORACLE's shot-noise calibration (N0, v_el), so that their differences are paired
differences on the same noise realisation (see below):

==========  ================================================================================
receiver    what it is
==========  ================================================================================
``O``       oracle: true phase per sample, true instants, known pilots subtracted exactly
``T``       ``O`` seeing the true phase only through the receiver's own pilot filter: the
            pipeline's tracker (same method, decimation D, window / Kalman q, r, RTS blocks)
            run on NOISE-FREE pilot phasors ``mean_block exp(j theta_n)``, interpolated to
            every sample
``F``       ``T`` that subtracts the pilots with that filtered phase instead of the true one
            (``remove_pilots="estimate"``): left in the band is the part of the pilots' phase
            noise the filter cannot follow, the pilot skirt every pilot-aided receiver sees.
            (Not subtracting at all would add the oracle's own untapered-filter leakage of
            the pure tone; subtracting with the true phase hides the skirt, and so does
            de-rotating with the true phase, which cancels the pilot's phase noise.)
``R``       ``O`` with the pipeline's actual phase estimate (its tracker on the real pilot,
            rebuilt here from the acquisition) interpolated to every sample
``P``       the pipeline, ``qkd_hw.receiver.process_recording`` (pe_fraction 1)
==========  ================================================================================

Columns (mSNU, referred to the channel input):

* ``track = T - O``: phase-tracking floor of the receiver's filter (laser phase noise the
  filter cannot follow), measured;
* ``skirt = F - T``: pilot phase-noise skirt floor, measured (the analytic
  ``dsp.carrier.pilot_leakage_floor`` is printed next to it as ``skirt_th``);
* ``floor = F - O = track + skirt``: what physics + the chosen filter cost any pilot receiver;
* ``pilot_noise = R - T``: the pilot's additive noise in the phase estimate (small by the
  choice of pilot power, see :func:`pilot_power_dbsn`; RTS theory ``pn_th``). R subtracts the
  TRUE pilots: subtracting them with the noisy estimate would feed the quantum-band noise that
  leaks into short pilot blocks back into the band, correlated with it (R < O was seen);
* ``impl = P - R - skirt``: everything else the implementation costs (timing, filter
  truncation and taper, per-symbol instead of per-sample de-rotation);
* ``dsp = P - F = pilot_noise + impl``: the penalty beyond the floor, target <= 1 mSNU.

Why the paired differences are precise: all five receivers see the same shot noise, excess
noise and phase-noise realisation; their xi estimates differ only by what each removes or adds,
so e.g. ``P - R`` has a spread set by the pipeline's own estimation errors, far below the
sd(xi) ~ 6 mSNU of one 1e6-symbol block (measured over seeds: see
tests/qkd_hw/test_receiver_penalty.py).

Pilot power (:func:`pilot_power_dbsn`): strong enough that the pilot-noise term of the
Kalman-RTS smoother, ``V_A sqrt(D_phi c_n) / 4`` (``c_n = (1 + v_el) / (fs 10^(P/10))``
rad^2 s, ``D_phi = 2 pi linewidth``) is <= ``PILOT_NOISE_TARGET_SNU``, but never below the
simulator's 17 dB default. The price is the skirt, proportional to ``linewidth 10^(P/10)``:
+10 dB of pilot lowers the pilot-noise term sqrt(10) x and raises the skirt 10 x.

Against the bound (``--seeds``, issue 19): ``penalty = P - O`` (same recording, same
calibration) against ``bound = skirt + V_A sqrt(q r) / 2``, the skirt measured and the best
smoothed phase estimate's error of a Wiener phase (``q = 2 pi linewidth / fs`` per sample) seen
through pilots of per-sample phase variance ``r = (1 + v_el) / sum 10^(P/10)`` (heterodyne;
homodyne pays phase errors to second order only: bound = skirt). Beside it the tracker alone:
``tracker = R - O = track + pilot_noise`` (no skirt, no timing: far less spread) and
``phase_mse``, V_A times the mean square of the pipeline's phase error over the data measured
directly (no quantum noise in it at all). Mean and standard error over the seeds.

Usage::

    python -m benchmarks.dsp_penalty [--symbols 1e6] [--quick] [--methods fir,kalman-rts]
                                     [--out table.json] [--md table.md] [--seeds 1,2,3]
                                     [--cases 2,5,8]

The full matrix writes benchmarks/dsp_penalty.md (run times: benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):   # `python benchmarks/dsp_penalty.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from dsp.carrier import make_tracker, pilot_leakage_floor
from dsp.pilot import combined_pilot, data_end_sample, fill_lead, fill_tail
from dsp.pipeline import ReceiverOptions
from dsp.vocabulary import HETERODYNE, HOMODYNE
from qkd_hw.receiver import process_recording
from qkd_hw.sim.oracle import oracle_from_arrays
from qkd_hw.sim.params import SimParams
from qkd_hw.sim.simulate import simulate_recording, true_phase
from qkd_hw.trace_io import TraceReader

#: target of the pilot's additive-noise term of the phase error (RTS smoother), SNU
PILOT_NOISE_TARGET_SNU = 0.25e-3
DEFAULT_PILOT_DBSN = 17.0
#: cap: beyond ~22 dB the skirt (~100 mSNU at 10 kHz, 1 GSa/s) swamps everything; the ADC
#: would clip at ~30 dB (12 bits, 35-code shot-noise rms)
MAX_PILOT_DBSN = 22.0


def pilot_power_dbsn(linewidth_hz: float, sample_rate_hz: float, *, va: float = 5.0,
                     v_el: float = 0.1, n_pilots: int = 1,
                     target_snu: float = PILOT_NOISE_TARGET_SNU) -> float:
    """Pilot power per pilot (dB over the per-sample shot-noise variance) for a given linewidth.

    The RTS smoother of a Wiener phase (diffusion D_phi) seen in white phase noise of density
    c_n has the error variance ``sqrt(D_phi c_n)/2``, half of it from the pilot noise; in
    excess noise ``V_A`` times. A pilot of power ``P`` (``10^(P/10) sigma_shot^2``) over the
    one-sided noise density ``(1 + v_el) sigma_shot^2 / (fs/2)`` has
    ``c_n = 1/(2 C/N0) = (1 + v_el) / (fs 10^(P/10))``; n pilots combined add their C/N0.
    Rounded up to 0.5 dB, at least the simulator's default 17 dB, at most ``MAX_PILOT_DBSN``
    (minus 3 dB per doubling of the pilots) so the ADC does not clip.
    """
    if linewidth_hz <= 0:
        return DEFAULT_PILOT_DBSN
    # V_A sqrt(D c_n)/4 <= target  <=>  c_n <= (4 target / V_A)^2 / D
    c_n = (4 * target_snu / va) ** 2 / (2 * math.pi * linewidth_hz)
    p = 10 * math.log10((1 + v_el) / (sample_rate_hz * c_n * n_pilots))
    cap = MAX_PILOT_DBSN - 10 * math.log10(n_pilots)
    return min(max(DEFAULT_PILOT_DBSN, math.ceil(2 * p) / 2), math.floor(2 * cap) / 2)


def common_calibration_xi(res, n0_ref: float, vel_ref: float) -> tuple[float, float]:
    """The pipeline's xi and T recomputed with another shot-noise calibration (N0, v_el)."""
    e = res.estimates
    scale = res.n0_codes2 / n0_ref                 # y_ref = y_mine * sqrt(scale)
    t = e.t_eff * math.sqrt(scale)
    sigma2 = e.sigma2 * scale
    xi = (sigma2 - 1.0 - vel_ref) / t**2
    gain = e.efficiency / 2 if e.detection == HETERODYNE else e.efficiency
    return xi, t * t / gain


def _grid_to_samples(ph: np.ndarray, D: int, n: int) -> np.ndarray:
    """Block-centre phase grid (``j D + (D-1)/2``) linearly interpolated at samples 0..n-1."""
    t = np.arange(ph.shape[0]) * D + (D - 1) / 2
    return np.interp(np.arange(n, dtype=np.float64), t, ph)


def _track(design, z: np.ndarray) -> np.ndarray:
    tr = make_tracker(design)
    return np.concatenate([tr.push(z)[1], tr.flush()[1]])


def _align(theta_rx: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Remove the constant phase between an estimate and the truth (the pipeline estimates it
    from all PE pairs, to ~1e-4 rad; the oracle's estimators do not rotate)."""
    c = np.angle(np.mean(np.exp(1j * (theta - theta_rx))))
    return theta_rx + c


def receiver_phases(signal: np.ndarray, theta: np.ndarray, acq, link) -> dict[str, np.ndarray]:
    """Per-sample phase of the pipeline's tracker on the real pilot (``"rx"``) and on noise-free
    pilot phasors of the true phase (``"filtered_truth"``), both in the truth's convention."""
    D = acq.carrier.decimation
    fs = link.sample_rate_hz
    off = acq.pilot.frequency_offset_hz
    n = signal.shape[0]
    nj = n // D
    ramp = 2 * np.pi * off / fs * np.arange(n, dtype=np.float64)
    z_rx = combined_pilot(signal, link, acq.pilot, D, 0, 0, nj)
    e = np.exp(1j * (theta[:nj * D] - ramp[:nj * D]))
    z_true = e.reshape(nj, D).mean(axis=1)
    out = {}
    s0, end = acq.pilot.span_samples[0], data_end_sample(acq)
    for name, z in (("rx", z_rx), ("filtered_truth", z_true)):
        # the pipeline's phasors: a still carrier before the pilot (its phasor at the start)
        # and after the data (PilotStage)
        if s0 > 0:
            fill_lead(z, 0, D, s0, acq.lead_phasor if name == "rx" else z[min(nj - 1, -(-s0 // D))])
        fill_tail(z, 0, D, end, 0j)
        ph = _grid_to_samples(_track(acq.carrier, z), D, n) + ramp
        out[name] = _align(ph, theta[:n])
    return out


def run_case(params: dict[str, Any], *, n_symbols: int, seed: int, workdir: Path,
             methods: tuple[str, ...] = ("kalman-rts",), floors: bool = True,
             options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Simulate one recording and compare the receivers (see the module docstring).

    Returns one dict with the case parameters, the oracle's xi and, per method ``m``, the
    columns ``{m}:dsp`` etc. (mSNU; the floors depend on the method's filter, so they are per
    method too). ``options``: further ``ReceiverOptions`` fields for the pipeline.
    """
    p = SimParams(**params)
    path = Path(workdir) / "penalty.h5"
    t0 = time.perf_counter()
    simulate_recording(path, p, seed=seed, n_symbols=n_symbols, truth_phase=False)
    t_sim = time.perf_counter() - t0
    with TraceReader(path) as rd:
        sig = rd.read("signal")
        shot = rd.read("shot_noise")
        elec = rd.read("electronic_noise")
        sym = rd.symbols()
    theta = true_phase(p, seed, sig.shape[0])

    def oracle(**kw):
        return oracle_from_arrays(sig, shot, elec, sym, p, theta, **kw)

    o = oracle()
    ref_n0, ref_vel = o.n0_codes2, o.electronic_noise_snu
    out: dict[str, Any] = {**{k: params[k] for k in sorted(params)}, "n_symbols": n_symbols,
                           "seed": seed, "detection": p.detection,
                           "pilot_dbsn": p.pilot_powers_dbsn[0], "xi_oracle": o.excess_noise_snu,
                           "T_oracle": o.transmittance, "seconds_sim": t_sim}
    for m in methods:
        t0 = time.perf_counter()
        r = process_recording(path, pe_fraction=1.0, options=ReceiverOptions(phase_method=m,
                                                                     **(options or {})))
        out[f"{m}:seconds_rx"] = time.perf_counter() - t0
        xi_p, T_p = common_calibration_xi(r, ref_n0, ref_vel)
        a = r.acquisition
        out[f"{m}:penalty"] = 1e3 * (xi_p - o.excess_noise_snu)
        out[f"{m}:xi_pipeline_own_calibration"] = r.estimates.excess_noise_snu
        out[f"{m}:T_pipeline"] = T_p
        out[f"{m}:delay_error_samples"] = a.tau0 - p.delay_samples
        out[f"{m}:frequency_error_hz"] = r.frequency_offset_hz - p.frequency_offset_hz
        out[f"{m}:linewidth_estimate_hz"] = a.pilot.linewidth_hz
        out[f"{m}:bandwidth_hz"] = a.carrier.bandwidth_hz
        out[f"{m}:decimation"] = a.carrier.decimation
        out[f"{m}:overlap"] = getattr(a.carrier, "overlap", 1)
        out[f"{m}:n_received"] = r.n_received
        out["n_oracle"] = o.n_symbols
        if floors:
            ph = receiver_phases(sig, theta, a, a.link)
            xi_t = oracle(phase_estimate_rad=ph["filtered_truth"]).excess_noise_snu
            xi_f = oracle(phase_estimate_rad=ph["filtered_truth"],
                          remove_pilots="estimate").excess_noise_snu
            # the pilot-noise term with the true pilots removed: subtracting them with the noisy
            # estimate would feed the pilot-phase noise (which holds some quantum-band noise
            # leaking into short pilot blocks) back into the band, correlated with it
            xi_r = oracle(phase_estimate_rad=ph["rx"]).excess_noise_snu
            out[f"{m}:track"] = 1e3 * (xi_t - o.excess_noise_snu)
            out[f"{m}:skirt"] = 1e3 * (xi_f - xi_t)
            out[f"{m}:floor"] = 1e3 * (xi_f - o.excess_noise_snu)
            out[f"{m}:pilot_noise"] = 1e3 * (xi_r - xi_t)
            out[f"{m}:impl"] = 1e3 * (xi_p - xi_r - (xi_f - xi_t))
            out[f"{m}:dsp"] = 1e3 * (xi_p - xi_f)
            # the tracker's phase error measured directly (no quantum noise in it): V_A x its
            # mean square over the data, the small-angle excess noise of a heterodyne receiver
            k0 = int(p.delay_samples)
            k1 = min(sig.shape[0], int(k0 + n_symbols * p.sample_rate_hz / p.symbol_rate_hz))
            err = ph["rx"][k0:k1] - theta[k0:k1]
            out[f"{m}:phase_mse"] = 1e3 * p.modulation_variance_snu * float(
                np.mean((err - err.mean()) ** 2))
    sk_th = pilot_leakage_floor(
        pilot_amplitudes=p.pilot_amplitudes_codes,
        pilot_frequencies_hz=[f + p.frequency_offset_hz for f in p.pilot_frequencies_hz],
        linewidth_hz=p.linewidth_hz, mixer_hz=p.signal_frequency_hz + p.frequency_offset_hz,
        symbol_rate_hz=p.symbol_rate_hz, rolloff=p.rolloff, fs=p.sample_rate_hz,
        shot_noise_var=2 * ref_n0, t_eff=p.t_eff)
    out["skirt_th"] = 1e3 * sk_th
    # pilot-noise term of the RTS smoother, theory: V_A sqrt(D_phi c_n) / 4
    c_n = (1 + p.electronic_noise_snu) / (
        p.sample_rate_hz * sum(10 ** (d / 10) for d in p.pilot_powers_dbsn))
    out["pn_th"] = 1e3 * p.modulation_variance_snu * math.sqrt(
        2 * math.pi * p.linewidth_hz * c_n) / 4
    # the pilot-noise bound of the best (smoothed) phase estimate, V_A sqrt(q r) / 2 with
    # q r = 2 pi linewidth c_n (issue 19); homodyne pays phase errors only to second order
    out["bound_pn"] = 2 * out["pn_th"] if p.detection == HETERODYNE else 0.0
    for m in methods:
        if f"{m}:skirt" in out:
            out[f"{m}:bound"] = out[f"{m}:skirt"] + out["bound_pn"]
            out[f"{m}:distance"] = out[f"{m}:penalty"] - out[f"{m}:bound"]
    path.unlink()
    return out


LINKS = [  # (fs, Rs, rolloff, f_sig, pilots)
    (1e9, 100e6, 0.2, 150e6, (250e6,)),
    (1e9, 150e6, 0.1, 150e6, (300e6,)),
    (1e9, 50e6, 0.5, 150e6, (250e6,)),
    (2.5e9, 250e6, 0.3, 300e6, (500e6,)),
    (2e9, 200e6, 0.4, 300e6, (480e6,)),
    (1e9, 100e6, 0.2, 150e6, (250e6, 320e6)),
]


def matrix(quick: bool = False) -> list[dict[str, Any]]:
    """The benchmark matrix: every link at linewidths 0, 1 kHz, 10 kHz, with offsets and
    fractional delays rotated through the cases (each value of every axis appears; the full
    product would be 360 recordings), plus the first link in homodyne. ``quick``: the first
    link at the three linewidths."""
    offsets = (-40e6, 25e6, 40e6, -17e6, 0.0)
    delays = (1234.37, 2871.5, 1500.0)
    lws = (0.0, 1e3, 1e4)
    cases = []
    i = 0
    links = list(LINKS) if quick else [*LINKS, (1e9, 100e6, 0.2, 150e6, (250e6,), HOMODYNE)]
    for li, (fs, rs, beta, fsig, pil, *det) in enumerate(links):
        if quick and li > 0:
            break
        for lw in lws:
            off, d = offsets[i % len(offsets)], delays[i % len(delays)]
            i += 1
            cases.append({"detection": det[0] if det else HETERODYNE,
                          "sample_rate_hz": fs, "symbol_rate_hz": rs, "rolloff": beta,
                          "signal_frequency_hz": fsig, "pilot_frequencies_hz": pil,
                          "pilot_powers_dbsn": (pilot_power_dbsn(lw, fs, n_pilots=len(pil)),),
                          "frequency_offset_hz": off, "linewidth_hz": lw, "delay_samples": d})
    return cases


#: framed recordings (issue 19): noise lead, a Zadoff-Chu preamble without pilot, two pilots
#: 4:1 (17 and 11 dB) from the data on, gated off after it (tests/qkd_hw/test_receiver_framed)
FRAME = dict(frequency_offset_hz=3e6, pilot_frequencies_hz=(250e6, 270e6),
             pilot_powers_dbsn=(17.0, 11.0), lead_samples=12000, preamble_kind="zadoff-chu",
             preamble_samples=4000, preamble_power_dbsn=31.0, pilot_gate="data",
             delay_samples=16400.3, shot_noise_samples=400_000,
             electronic_noise_samples=400_000)


def framed_cases() -> list[dict[str, Any]]:
    """The framed rows: ``FRAME`` at linewidths 0, 100 Hz, 1 kHz."""
    return [{**FRAME, "linewidth_hz": lw} for lw in (0.0, 100.0, 1e3)]


BOUND_COLS = ("penalty", "bound", "distance", "tracker", "tracker_distance", "phase_mse",
              "phase_distance")


def bound_rows(rows: list[dict[str, Any]], method: str) -> list[dict[str, Any]]:
    """Rows of several seeds of the same case merged: mean and standard error (sd / sqrt(n))
    of each ``BOUND_COLS`` column, and ``bound_pn`` (the pilot-noise bound alone)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        # the tracker alone: R - O = track + pilot_noise (the oracle with the pipeline's phase,
        # true pilots subtracted: no skirt, no timing), and its phase error measured directly
        r = {**r, f"{method}:tracker": r[f"{method}:track"] + r[f"{method}:pilot_noise"]}
        r[f"{method}:tracker_distance"] = r[f"{method}:tracker"] - r["bound_pn"]
        r[f"{method}:phase_distance"] = r[f"{method}:phase_mse"] - r["bound_pn"]
        key = json.dumps({k: r[k] for k in sorted(r) if ":" not in k and k not in (
            "seed", "xi_oracle", "T_oracle", "seconds_sim", "n_oracle", "skirt_th")},
            default=list)
        groups.setdefault(key, []).append(r)
    out = []
    d = SimParams()
    for g in groups.values():
        m = {"sample_rate_hz": d.sample_rate_hz, "symbol_rate_hz": d.symbol_rate_hz,
             "rolloff": d.rolloff, **g[0], "n_seeds": len(g)}
        for c in BOUND_COLS:
            v = np.array([r[f"{method}:{c}"] for r in g])
            m[c] = float(v.mean())
            m[c + "_se"] = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan
        out.append(m)
    return out


def bound_markdown(rows: list[dict[str, Any]], method: str) -> str:
    """The table against the bound (skirt + V_A sqrt(q r) / 2): mean over seeds +- SE."""
    lines = [f"\n### `{method}` against the bound (mSNU, mean over seeds; se = standard "
             "error)\n",
             "| det | fs GSa/s | Rs MBd | pilots | pilot dB | lw kHz | framed | seeds | "
             "penalty P-O | bound skirt+V_A sqrt(qr)/2 | of it V_A sqrt(qr)/2 | **distance** "
             "| se | tracker R-O | its distance | se | V_A phase MSE | its distance | se |",
             "|" + "---|" * 19]
    for r in rows:
        lines.append(
            f"| {r['detection'][:3]} | {r['sample_rate_hz'] / 1e9:g} | "
            f"{r['symbol_rate_hz'] / 1e6:g} | {len(r['pilot_frequencies_hz'])} | "
            + "/".join(f"{d:g}" for d in r["pilot_powers_dbsn"]) + f" | "
            f"{r['linewidth_hz'] / 1e3:g} | {'yes' if r.get('lead_samples') else ''} | "
            f"{r['n_seeds']} | {r['penalty']:.2f} | {r['bound']:.2f} | {r['bound_pn']:.2f} | "
            f"**{r['distance']:+.2f}** | {r['distance_se']:.2f} | {r['tracker']:.2f} | "
            f"{r['tracker_distance']:+.2f} | {r['tracker_distance_se']:.2f} | "
            f"{r['phase_mse']:.2f} | {r['phase_distance']:+.2f} | {r['phase_distance_se']:.2f} |")
    for c in ("distance", "tracker_distance", "phase_distance"):
        d = [abs(r[c]) for r in rows]
        lines.append(f"\nlargest |{c}| {max(d):.2f} mSNU over {len(d)} rows")
    return "\n".join(lines)


COLS = ("skirt", "skirt_th", "track", "floor", "pilot_noise", "pn_th", "impl", "dsp")


HEADER = """# DSP penalty against ideal receivers (generated by `python -m benchmarks.dsp_penalty`)

One simulated recording per row (1e6 symbols, seed 1, T 0.5, xi 0.02, v_el 0.1, V_A 5,
eta 0.7), five receivers on it, all with the oracle's shot-noise calibration. mSNU, referred
to the channel input. Definitions (see the module docstring of `benchmarks/dsp_penalty.py`):

* `skirt` = F - T: the pilots' phase-noise skirt in the quantum band (measured: the oracle
  seeing the phase through the receiver's filter, pilots subtracted with THAT phase, minus the
  same with the pilots subtracted exactly); `skirt_th` the analytic Lorentzian tail.
* `track` = T - O: the true phase seen only through the receiver's own pilot filter (its
  tracker run on noise-free pilot phasors): laser phase noise the filter cannot follow.
* `floor` = F - O = skirt + track: the floor receiver F every pilot-aided receiver with this
  filter and this pilot power has.
* `pilot_noise` = R - T: the pilot's additive noise in the phase estimate (the pipeline's own
  phase estimate, true pilots subtracted); `pn_th` = V_A sqrt(2 pi linewidth c_n)/4 (RTS).
* `impl` = P - R - skirt: the rest (timing, filter taper/truncation, per-symbol de-rotation).
* **dsp** = P - F = pilot_noise + impl: the pipeline's penalty beyond the floor; target 1 mSNU.

Pilot power per linewidth (`pilot_power_dbsn`): the RTS pilot-noise term <= 0.25 mSNU, at
least 17 dB, at most 22 dB over the per-sample shot noise (19 dB each for two pilots). The
skirt grows 10x per +10 dB of pilot (and with the linewidth); the pilot-noise term falls
sqrt(10)x. At 10 kHz the 22 dB cap leaves pn_th ~0.5-0.8 mSNU while the skirt is already
55-100 mSNU: a stronger pilot would trade < 0.5 mSNU of phase error for > 100 mSNU of skirt.
"""


def markdown(rows: list[dict[str, Any]], methods: tuple[str, ...]) -> str:
    lines = [HEADER]
    for m in methods:
        lines.append(f"\n### tracker `{m}` (mSNU; dsp = pipeline - floor receiver F)\n")
        lines.append("| det | fs GSa/s | Rs MBd | beta | pilots | pilot dB | offset MHz | lw kHz "
                     "| delay | skirt | skirt_th | track | floor | pilot_noise | pn_th | impl | "
                     "**dsp** |")
        lines.append("|" + "---|" * 17)
        for r in rows:
            def g(c, r=r, m=m):
                v = r.get(f"{m}:{c}", r.get(c))
                return "" if v is None else f"{v:.2f}"
            lines.append(
                f"| {r['detection'][:3]} | {r['sample_rate_hz'] / 1e9:g} | "
                f"{r['symbol_rate_hz'] / 1e6:g} | "
                f"{r['rolloff']:g} | {len(r['pilot_frequencies_hz'])} | {r['pilot_dbsn']:g} | "
                f"{r['frequency_offset_hz'] / 1e6:+g} | {r['linewidth_hz'] / 1e3:g} | "
                f"{r['delay_samples']:g} | " + " | ".join(g(c) for c in COLS[:-1])
                + f" | **{g('dsp')}** |")
        d = [r[f"{m}:dsp"] for r in rows if f"{m}:dsp" in r]
        if d:
            lines.append(f"\nworst dsp {max(d):.2f} mSNU, mean {np.mean(d):.2f} over {len(d)} "
                         "cases")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--symbols", type=float, default=1e6)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--methods", default="fir,kalman-rts")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--seeds", help="comma-separated seeds: the table against the bound "
                    "(one method, rows + framed rows, mean and standard error over the seeds)")
    ap.add_argument("--cases", help="with --seeds: comma-separated indices into the matrix "
                    "followed by the framed rows (default: all)")
    ap.add_argument("--out", type=Path, help="JSON rows")
    ap.add_argument("--md", type=Path, help="write the markdown table there (default: "
                    "benchmarks/dsp_penalty.md for the full matrix, nowhere with --quick)")
    args = ap.parse_args(argv)
    methods = tuple(args.methods.split(","))
    if args.seeds:
        return main_bound(args, methods[-1])
    rows = []
    with tempfile.TemporaryDirectory(prefix="dsp-penalty-") as tmp:
        for params in matrix(args.quick):
            row = run_case(params, n_symbols=int(args.symbols), seed=args.seed,
                           workdir=Path(tmp), methods=methods)
            rows.append(row)
            print(f"fs={row['sample_rate_hz'] / 1e9:g}G Rs={row['symbol_rate_hz'] / 1e6:g}M "
                  f"b={row['rolloff']} np={len(row['pilot_frequencies_hz'])} "
                  f"P={row['pilot_dbsn']:g}dB off={row['frequency_offset_hz'] / 1e6:+g}M "
                  f"lw={row['linewidth_hz']:g} d={row['delay_samples']}: skirt_th "
                  f"{row['skirt_th']:.2f} pn_th {row['pn_th']:.2f} "
                  + " ".join(f"[{m}: skirt {row.get(m + ':skirt', math.nan):.2f} track "
                             f"{row.get(m + ':track', math.nan):.2f} pn "
                             f"{row.get(m + ':pilot_noise', math.nan):.2f} impl "
                             f"{row.get(m + ':impl', math.nan):.2f} dsp "
                             f"{row.get(m + ':dsp', math.nan):.2f}]" for m in methods),
                  flush=True)
            if args.out:
                args.out.write_text(json.dumps(rows, indent=1, default=list))
    table = markdown(rows, methods)
    print(table)
    md = args.md or (None if args.quick else Path(__file__).with_name("dsp_penalty.md"))
    if md:
        md.write_text(table + "\n")
    return 0


def main_bound(args: argparse.Namespace, method: str) -> int:
    """``--seeds``: every case (matrix + framed) at every seed, then the bound table."""
    seeds = [int(v) for v in args.seeds.split(",")]
    cases = matrix(args.quick) + framed_cases()
    if args.cases:
        cases = [cases[int(i)] for i in args.cases.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="dsp-penalty-") as tmp:
        for params in cases:
            for seed in seeds:
                row = run_case(params, n_symbols=int(args.symbols), seed=seed,
                               workdir=Path(tmp), methods=(method,))
                rows.append(row)
                print(f"lw={row['linewidth_hz']:g} fs={row.get('sample_rate_hz', 1e9):g} "
                      f"P={row['pilot_powers_dbsn']} seed={seed}: penalty "
                      f"{row[method + ':penalty']:.3f} bound {row[method + ':bound']:.3f} "
                      f"distance {row[method + ':distance']:+.3f} phase_mse "
                      f"{row[method + ':phase_mse']:.3f} bound_pn {row['bound_pn']:.3f}",
                      flush=True)
                if args.out:
                    args.out.write_text(json.dumps(rows, indent=1, default=list))
    table = bound_markdown(bound_rows(rows, method), method)
    print(table)
    if args.md:
        args.md.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
