"""DSP penalty of the receiver against the simulator's oracle receiver.

For each link configuration a recording is simulated (``qkd_hw.sim``), then processed by

* the oracle (true phase per sample, true instants, exact pilot subtraction), and
* ``qkd_hw.receiver.process_recording`` (everything estimated from the data, pe_fraction 1).

Reported per case (mSNU, referred to the channel input):

* ``penalty``: xi(pipeline) - xi(oracle), both normalised with the ORACLE's shot-noise
  calibration (N0, v_el). The calibration itself is statistical (1e6-sample noise captures:
  sd(xi) ~ (1+v_el)/t^2 / sqrt(1e5) ~ 20 mSNU) and the two receivers project the captures at
  different mixer frequencies, so comparing them with their own calibrations would measure the
  capture statistics, not the DSP.
* ``tail_floor``: the pilots' Lorentzian phase-noise tails inside the quantum band
  (``dsp.carrier.pilot_leakage_floor``, analytic): a floor of every pilot-aided receiver which
  the oracle (exact pilot subtraction) does not have.
* ``phase_floor``: the oracle seeing the true phase only through a boxcar as long as the
  pipeline's pilot filter (``oracle_receive(phase_lowpass_hz=...)``).
* ``dsp_penalty = penalty - tail_floor``: what the DSP itself costs (target <= 1 mSNU).

Usage::

    python -m benchmarks.dsp_penalty [--symbols 1e6] [--quick] [--method fir] [--out table.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from dsp.pipeline import ReceiverOptions
from qkd_hw.receiver import process_recording
from qkd_hw.sim.oracle import oracle_receive
from qkd_hw.sim.params import SimParams
from qkd_hw.sim.simulate import simulate_recording


def common_calibration_xi(res, n0_ref: float, vel_ref: float) -> tuple[float, float]:
    """The pipeline's xi and T recomputed with another shot-noise calibration (N0, v_el)."""
    e = res.estimates
    scale = res.n0_codes2 / n0_ref                 # y_ref = y_mine * sqrt(scale)
    t = e.t_eff * math.sqrt(scale)
    sigma2 = e.sigma2 * scale
    xi = (sigma2 - 1.0 - vel_ref) / t**2
    gain = e.efficiency / 2 if e.detection == "heterodyne" else e.efficiency
    return xi, t * t / gain


def run_case(params: dict[str, Any], *, n_symbols: int, seed: int, workdir: Path,
             method: str = "fir", phase_floor: bool = True) -> dict[str, Any]:
    p = SimParams(**params)
    path = Path(workdir) / "penalty.h5"
    t0 = time.perf_counter()
    simulate_recording(path, p, seed=seed, n_symbols=n_symbols, truth_phase=False)
    t_sim = time.perf_counter() - t0
    o = oracle_receive(path)
    t0 = time.perf_counter()
    r = process_recording(path, pe_fraction=1.0, options=ReceiverOptions(phase_method=method))
    t_rx = time.perf_counter() - t0
    xi_c, T_c = common_calibration_xi(r, o.n0_codes2, o.electronic_noise_snu)
    a = r.acquisition
    out = {
        **{k: params[k] for k in sorted(params)},
        "n_symbols": n_symbols, "method": method,
        "xi_oracle": o.excess_noise_snu, "xi_pipeline": r.estimates.excess_noise_snu,
        "xi_pipeline_common": xi_c, "T_oracle": o.transmittance, "T_pipeline_common": T_c,
        "penalty_msnu": 1e3 * (xi_c - o.excess_noise_snu),
        "tail_floor_msnu": 1e3 * r.pilot_leakage_floor_snu,
        "dsp_penalty_msnu": 1e3 * (xi_c - o.excess_noise_snu - r.pilot_leakage_floor_snu),
        "delay_error_samples": a.tau0 - p.delay_samples,
        "frequency_error_hz": r.frequency_offset_hz - p.frequency_offset_hz,
        "clock_offset_ppm": a.clock_offset_ppm,
        "pilot_bandwidth_hz": a.carrier.bandwidth_hz,
        "linewidth_estimate_hz": a.pilot.linewidth_hz,
        "n_received": r.n_received, "n_oracle": o.n_symbols,
        "seconds_sim": t_sim, "seconds_rx": t_rx,
    }
    if phase_floor:
        # the same boxcar as the pipeline's pilot filter: N = fs/(2B) in the oracle's convention
        b = p.sample_rate_hz / (2 * a.carrier.tau_s * p.sample_rate_hz)
        of = oracle_receive(path, phase_lowpass_hz=b)
        out["phase_floor_msnu"] = 1e3 * (of.excess_noise_snu - o.excess_noise_snu)
    path.unlink()
    return out


def matrix(quick: bool = False) -> list[dict[str, Any]]:
    """The benchmark matrix (``quick``: a handful of corner cases)."""
    base = {"frequency_offset_hz": 0.0, "linewidth_hz": 0.0, "delay_samples": 1500.0}
    cases = []
    offsets = (-40e6, -17e6, 0.0, 25e6, 40e6)
    lws = (0.0, 100.0, 1e3, 1e4)
    delays = (1500.0, 1234.37, 2871.5)
    links = [  # (fs, Rs, rolloff, f_sig, pilots)
        (1e9, 100e6, 0.2, 150e6, (250e6,)),
        (1e9, 150e6, 0.1, 150e6, (300e6,)),
        (1e9, 50e6, 0.5, 150e6, (250e6,)),
        (2.5e9, 250e6, 0.3, 300e6, (500e6,)),
        (2e9, 200e6, 0.4, 300e6, (480e6,)),
        (1e9, 100e6, 0.2, 150e6, (250e6, 320e6)),
    ]
    for (fs, rs, beta, fsig, pil), off, lw, d in itertools.product(links, offsets, lws, delays):
        if quick and not (off in (-40e6, 40e6) and d == 1234.37 and lw in (0.0, 1e3, 1e4)):
            continue
        cases.append({**base, "sample_rate_hz": fs, "symbol_rate_hz": rs, "rolloff": beta,
                      "signal_frequency_hz": fsig, "pilot_frequencies_hz": pil,
                      "frequency_offset_hz": off, "linewidth_hz": lw, "delay_samples": d})
    return cases


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--symbols", type=float, default=1e6)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--method", default="fir")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--no-phase-floor", action="store_true",
                    help="skip the oracle-behind-the-pilot-filter run (saves a third)")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="dsp-penalty-") as tmp:
        for params in matrix(args.quick):
            row = run_case(params, n_symbols=int(args.symbols), seed=args.seed,
                           workdir=Path(tmp), method=args.method,
                           phase_floor=not args.no_phase_floor)
            rows.append(row)
            print(f"fs={row['sample_rate_hz'] / 1e9:.1f}G Rs={row['symbol_rate_hz'] / 1e6:.0f}M "
                  f"b={row['rolloff']} pilots={len(row['pilot_frequencies_hz'])} "
                  f"off={row['frequency_offset_hz'] / 1e6:+.0f}M lw={row['linewidth_hz']:.0f} "
                  f"d={row['delay_samples']}: penalty {row['penalty_msnu']:+.2f} "
                  f"tail {row['tail_floor_msnu']:.2f} dsp {row['dsp_penalty_msnu']:+.2f} "
                  f"phase-floor {row.get('phase_floor_msnu', float('nan')):.2f} mSNU "
                  f"(rx {row['seconds_rx']:.1f}s)", flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1, default=list))
    worst = max(r["dsp_penalty_msnu"] for r in rows)
    print(f"worst DSP penalty {worst:.2f} mSNU over {len(rows)} cases")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
