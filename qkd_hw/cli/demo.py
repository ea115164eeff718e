"""``qkd-hw demo``: the whole chain on the built-in virtual link, in one command.

    qkd-hw demo [--out DIR] [--symbols N] [--seed S] [--json]

Simulates a metro-like recording (laser offset, 1 kHz linewidth, fractional
delay; parameters of the simulator, see ``qkd-hw simulate --list-params``),
runs the receiver over it exactly as ``qkd-hw process`` does, writes the raw
key (mode 0600) and PNG plots to DIR, and compares every estimate with the
simulator's ground truth in units of its statistical standard deviation.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

from qkd_hw.cli.jsonout import json_text
from qkd_hw.cli.process import progress_bar, write_plots
from qkd_hw.errors import ConfigError
from qkd_hw.receiver import ReceiverResult, process_recording
from qkd_hw.sim import SimParams, parse_assignments, simulate_recording
from qkd_hw.trace_io import Truth

#: metro-like default link of the demo (same physics as shared/traces/metro.h5)
DEMO_LINK = {
    "transmittance": 0.25,
    "excess_noise_snu": 0.01,
    "electronic_noise_snu": 0.05,
    "modulation_variance_snu": 4.0,
    "frequency_offset_hz": -17e6,
    "linewidth_hz": 1e3,
    "delay_samples": 2871.37,
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="simulate a link, receive it, compare with the truth",
        description=__doc__.split("\n\n")[0].strip("`"))
    p.add_argument("--out", type=Path, default=None,
                   help="directory for the recording, raw key and plots (default: a temp dir "
                        "that is removed afterwards)")
    p.add_argument("--symbols", type=int, default=300_000, help="data symbols (default 300000)")
    p.add_argument("--seed", type=int, default=1, help="simulator seed")
    p.add_argument("--set", dest="assignments", action="append", default=[],
                   metavar="NAME=VALUE", help="override a simulator parameter (repeatable)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.symbols < 20_000:
        raise ConfigError(f"--symbols must be >= 20000 for a meaningful demo, got {args.symbols}")
    params = parse_assignments(args.assignments, base=SimParams(**DEMO_LINK))
    if args.out is None:
        with tempfile.TemporaryDirectory(prefix="qkd-hw-demo-") as tmp:
            return _demo(Path(tmp), params, args, keep=False)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:   # a file in the way, no permission: one line, exit 2
        raise ConfigError(f"--out {args.out}: cannot use it as the output directory: "
                          f"{exc.strerror or exc}") from exc
    return _demo(args.out, params, args, keep=True)


def _demo(out: Path, params: SimParams, args: argparse.Namespace, *, keep: bool) -> int:
    trace, raw = out / "demo-trace.h5", out / "demo-raw-key.h5"
    show = not args.json and sys.stderr.isatty()
    if not args.json:
        print(f"simulating {args.symbols} symbols "
              f"({params.signal_samples(args.symbols) / 1e6:.1f} MSa) -> {trace}", file=sys.stderr)
    truth = simulate_recording(trace, params, seed=args.seed, n_symbols=args.symbols,
                               progress=show)
    with progress_bar(trace, enabled=show) as tick:
        # a simulated link: the disclosed subset is seeded too, so that a demo run is
        # reproducible (a real run draws it at random, see process_recording)
        result = process_recording(trace, raw_key_out=raw, seed=args.seed, progress=tick,
                                   diagnostics=keep)
    plots = write_plots(result, out) if keep else []
    report = comparison(result, truth)
    if args.json:
        summary = result.summary()
        summary["truth_comparison"] = report
        summary["plots"] = [str(p) for p in plots]
        print(json_text(summary, indent=2))
    else:
        _print_report(result, report, plots, keep)
    return 0


def comparison(result: ReceiverResult, truth: Truth) -> dict[str, dict[str, float]]:
    """Estimate vs truth for T, xi, v_el, t, with the estimate's standard deviation.

    Standard deviations from the conventions.md estimators over m pooled real pairs:
    std(t) = sqrt(sigma2 / sum x^2) (from the estimator), std(sigma2) = sigma2 sqrt(2/m);
    T = t^2 / s with s = eta/2 (heterodyne) or eta (homodyne): std(T) = 2 t std(t) / s;
    xi = (sigma2 - 1 - v_el) / t^2: std(xi)^2 = (std(sigma2)/t^2)^2 + (dxi/dt std(t))^2 with
    dxi/dt = -2 (sigma2 - 1 - v_el) / t^3 (t and sigma2 are uncorrelated for Gaussian data);
    v_el's std comes from the noise captures.
    """
    e = result.estimates
    m = max(int(e.n_pe), 1)
    t = e.t_eff
    s = e.efficiency / 2 if e.detection == "heterodyne" else e.efficiency
    std_t = e.t_eff_std
    std_s2 = e.sigma2 * math.sqrt(2.0 / m)
    d_xi_d_t = -2.0 * (e.sigma2 - 1.0 - result.electronic_noise_snu) / t**3
    rows = {
        "transmittance": (e.transmittance, truth.transmittance, 2 * t * std_t / s),
        "excess_noise_snu": (e.excess_noise_snu, truth.excess_noise_snu,
                             math.hypot(std_s2 / t**2, d_xi_d_t * std_t)),
        "electronic_noise_snu": (result.electronic_noise_snu, truth.electronic_noise_snu,
                                 result.electronic_noise_std_snu),
        "t_eff": (e.t_eff, truth.t_eff, std_t),
        "frequency_offset_hz": (result.acquisition.pilot.frequency_offset_hz,
                                truth.frequency_offset_hz, float("nan")),
        "delay_samples": (result.acquisition.tau0, truth.delay_samples, float("nan")),
    }
    out: dict[str, dict[str, float]] = {}
    for name, (est, tru, std) in rows.items():
        dev = (est - tru) / std if std and math.isfinite(std) and std > 0 else float("nan")
        out[name] = {"estimate": float(est), "truth": float(tru), "std": float(std),
                     "deviation_sigma": float(dev)}
    return out


def _print_report(result: ReceiverResult, report: dict[str, dict[str, float]],
                  plots: list[Path], keep: bool) -> None:
    print(f"{'quantity':<22}{'truth':>14}{'estimate':>14}{'std':>12}{'dev/std':>9}")
    for name, r in report.items():
        dev = "" if math.isnan(r["deviation_sigma"]) else f"{r['deviation_sigma']:+.2f}"
        std = "" if math.isnan(r["std"]) else f"{r['std']:.3g}"
        print(f"{name:<22}{r['truth']:>14.6g}{r['estimate']:>14.6g}{std:>12}{dev:>9}")
    s = result.summary()
    kr = s["key_rate_bits_per_symbol"]
    print(f"key rate (finite size, {s['n_symbols_received']} symbols): "
          + (f"{kr:.4g} bit/symbol" if kr is not None else f"none ({s['key_rate_error']})"))
    asym = (s.get("key_rate") or {}).get("asymptotic_key_rate_bits_per_symbol")
    if asym is not None:
        print(f"key rate (asymptotic, at the estimates): {asym:.4g} bit/symbol")
    print(f"throughput: {s['throughput_msps']:.0f} MSa/s over {s['samples']} samples "
          f"({s['seconds']:.2f} s incl. first-call JIT if not cached)")
    if keep:
        print(f"raw key (0600): {result.raw_key_path}")
        for p in plots:
            print(f"plot: {p}")


