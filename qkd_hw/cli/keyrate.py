"""`qkd-hw keyrate`: secret key rate for given link parameters (asymptotic or finite size).

Examples::

    qkd-hw keyrate --modulation-variance 5 --transmittance 0.5 --excess-noise 0.02 \\
        --efficiency 0.7 --electronic-noise 0.05 --beta 0.95 --detection heterodyne --json
    qkd-hw keyrate ... --block-size 1e9 --pe-fraction 0.5 --eps-pe 1e-10
    qkd-hw keyrate ... --distance-km 50 --plot rate.png
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from dsp.vocabulary import (
    DEFAULT_BETA,
    DEFAULT_EPS_BAR,
    DEFAULT_EPS_PA,
    DEFAULT_EPS_PE,
    HETERODYNE,
)
from qkd_hw.cli.jsonout import json_text
from qkd_hw.keyrate import (
    DETECTIONS,
    TRANSMITTANCE_FLOOR,
    KeyRate,
    KeyRateInputError,
    asymptotic_key_rate,
    finite_size_key_rate,
    key_rate_terms,
    max_tolerable_excess_noise,
    transmittance_from_distance,
)
from qkd_hw.plotting import save_png


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "keyrate",
        help="secret key rate for given link parameters",
        description=(
            "Secret key rate K = beta I_AB - chi_BE (bits/symbol) of Gaussian-modulated CV-QKD: "
            "reverse reconciliation, collective attacks, trusted detector (eta, v_el). "
            "Closed forms of Laudenbach et al. 2018 / Fossier et al. 2009; finite size after "
            "Leverrier et al., PRA 81, 062343 (2010). Noise in shot-noise units, xi referred "
            "to the channel input."),
    )
    p.add_argument("--modulation-variance", type=float, required=True, metavar="V_A",
                   help="Alice's modulation variance per quadrature, SNU")
    ch = p.add_mutually_exclusive_group(required=True)
    ch.add_argument("--transmittance", type=float, metavar="T", help="channel transmittance")
    ch.add_argument("--distance-km", type=float, metavar="L",
                    help="fibre length; T = 10^(-loss L/10)")
    p.add_argument("--loss-db-per-km", type=float, default=0.2, metavar="dB",
                   help="fibre loss for --distance-km and --plot (default 0.2)")
    p.add_argument("--excess-noise", type=float, required=True, metavar="XI",
                   help="excess noise xi, SNU, referred to the channel input")
    p.add_argument("--efficiency", type=float, required=True, metavar="ETA",
                   help="trusted detection efficiency eta in (0, 1]")
    p.add_argument("--electronic-noise", type=float, required=True, metavar="V_EL",
                   help="trusted electronic noise v_el, SNU")
    p.add_argument("--beta", type=float, default=DEFAULT_BETA,
                   help="reconciliation efficiency (%(default)s)")
    p.add_argument("--detection", choices=DETECTIONS, default=HETERODYNE,
                   help="detection (default %(default)s)")
    fs = p.add_argument_group("finite size (Leverrier et al. 2010)")
    fs.add_argument("--block-size", type=_count, metavar="N",
                    help="symbols per block; enables the finite-size rate (1e9 is accepted)")
    pe = fs.add_mutually_exclusive_group()
    pe.add_argument("--pe-fraction", type=float, metavar="F",
                    help="fraction of the block's symbols disclosed for PE (default 0.5)")
    pe.add_argument("--n-pe", type=_count, metavar="M",
                    help="real pairs disclosed for PE (2 per symbol in heterodyne)")
    # default None: given without --block-size they would be silently ignored
    fs.add_argument("--eps-pe", type=float, default=None,
                    help=f"PE failure probability ({DEFAULT_EPS_PE:g})")
    fs.add_argument("--eps-pa", type=float, default=None,
                    help=f"privacy-amplification failure probability ({DEFAULT_EPS_PA:g})")
    fs.add_argument("--eps-bar", type=float, default=None,
                    help=f"smoothing parameter ({DEFAULT_EPS_BAR:g})")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", type=Path, metavar="PNG", help="write key rate vs distance to PNG")
    p.add_argument("--max-distance-km", type=float, metavar="L",
                   help="x range of --plot (default: up to where the rate vanishes, <= 400 km)")
    p.set_defaults(func=_run)


def _count(text: str) -> int:
    """A positive count; scientific notation allowed if integral (1e9)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(v) and v.is_integer() and v > 0):
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return int(v)


def _params(args: argparse.Namespace) -> dict[str, Any]:
    if args.distance_km is not None:
        if not (math.isfinite(args.distance_km) and args.distance_km >= 0):
            raise KeyRateInputError(f"--distance-km must be >= 0, got {args.distance_km!r}")
        loss = args.loss_db_per_km
        if not (math.isfinite(loss) and loss >= 0):
            raise KeyRateInputError(f"--loss-db-per-km must be >= 0, got {loss!r}")
        loss_db = loss * args.distance_km  # a Python float: overflows to inf, no warning
        floor_db = -10.0 * math.log10(TRANSMITTANCE_FLOOR)
        if loss_db > floor_db:
            raise KeyRateInputError(
                f"--distance-km {args.distance_km:g} at --loss-db-per-km {loss:g} is "
                f"{loss_db:.4g} dB of loss, beyond the {floor_db:g} dB the closed forms take")
        transmittance = float(transmittance_from_distance(args.distance_km, loss))
    else:
        transmittance = args.transmittance
    return dict(modulation_variance_snu=args.modulation_variance, transmittance=transmittance,
                excess_noise_snu=args.excess_noise, efficiency=args.efficiency,
                electronic_noise_snu=args.electronic_noise, beta=args.beta,
                detection=args.detection)


def _n_pe(args: argparse.Namespace) -> int:
    per_symbol = 2 if args.detection == "heterodyne" else 1
    if args.n_pe is not None:
        return args.n_pe
    f = 0.5 if args.pe_fraction is None else args.pe_fraction
    if not 0 < f < 1:
        raise KeyRateInputError(f"--pe-fraction must be in (0, 1), got {f!r}")
    return max(1, round(f * args.block_size)) * per_symbol


#: defaults of the finite-size epsilons not given on the command line
EPS_DEFAULTS = {"eps_pe": DEFAULT_EPS_PE, "eps_pa": DEFAULT_EPS_PA, "eps_bar": DEFAULT_EPS_BAR}


def _eps(args: argparse.Namespace) -> dict[str, float]:
    return {k: default if getattr(args, k) is None else getattr(args, k)
            for k, default in EPS_DEFAULTS.items()}


def _compute(args: argparse.Namespace, params: dict[str, Any]) -> KeyRate:
    if args.block_size is None:
        given = [f"--{k.replace('_', '-')}" for k in ("n_pe", "pe_fraction", "eps_pe", "eps_pa",
                                                      "eps_bar") if getattr(args, k) is not None]
        if given:
            raise KeyRateInputError(f"{', '.join(given)}: only for the finite-size rate, "
                                    "give --block-size too")
        return asymptotic_key_rate(**params)
    return finite_size_key_rate(**params, block_size=args.block_size, n_pe=_n_pe(args),
                                **_eps(args))


def _run(args: argparse.Namespace) -> int:
    params = _params(args)
    rate = _compute(args, params)
    xi_tol = max_tolerable_excess_noise(**{k: v for k, v in params.items()
                                           if k != "excess_noise_snu"})
    out = rate.as_dict()
    out["channel_loss_db"] = -10 * math.log10(params["transmittance"])
    out["max_tolerable_excess_noise_snu"] = xi_tol
    if args.distance_km is not None:
        out["distance_km"] = args.distance_km
        out["loss_db_per_km"] = args.loss_db_per_km
    if args.plot is not None:
        _plot(args, params, rate, args.plot)
        out["plot"] = str(args.plot)
    if args.json:
        print(json_text(out))
    else:
        _table(out, rate)
    return 0


def _table(out: dict[str, Any], rate: KeyRate) -> None:
    w = sys.stdout.write
    kind = "finite-size" if rate.finite_size else "asymptotic"
    w(f"CV-QKD secret key rate ({kind}; {rate.detection}, reverse reconciliation, "
      "trusted detector, collective attacks)\n")
    rows: list[tuple[str, str]] = [
        ("modulation variance V_A", f"{rate.modulation_variance_snu:.6g} SNU"),
    ]
    if "distance_km" in out:
        rows.append(("distance",
                     f"{out['distance_km']:.6g} km at {out['loss_db_per_km']:.3g} dB/km"))
    if rate.finite_size:
        rows += [
            ("transmittance T (estimate)", f"{rate.transmittance_estimate:.6g}"),
            ("excess noise xi (estimate)", f"{rate.excess_noise_estimate_snu:.6g} SNU"),
            ("block size N", f"{rate.block_size:d} symbols"),
            ("PE pairs m", f"{rate.n_pe:d} real pairs (eps_PE = {rate.eps_pe:.3g})"),
            ("key symbols n", f"{rate.n_key:d} (n/N = {rate.key_fraction:.4g})"),
            ("T_min (worst case)", f"{rate.transmittance:.6g}"),
            ("xi_max (worst case)", f"{rate.excess_noise_snu:.6g} SNU"),
        ]
    else:
        rows += [("transmittance T", f"{rate.transmittance:.6g} ({out['channel_loss_db']:.4g} dB)"),
                 ("excess noise xi", f"{rate.excess_noise_snu:.6g} SNU (input-referred)")]
    rows += [
        ("efficiency eta", f"{rate.efficiency:.6g}"),
        ("electronic noise v_el", f"{rate.electronic_noise_snu:.6g} SNU"),
        ("reconciliation beta", f"{rate.beta:.6g}"),
        ("SNR per quadrature", f"{rate.snr:.6g}"),
        ("I_AB", f"{rate.i_ab:.6f} bit/symbol"),
        ("chi_BE (Holevo bound)", f"{rate.chi_be:.6f} bit/symbol"),
    ]
    if rate.finite_size:
        rows += [("Delta(n)", f"{rate.delta_n:.6g} bit/symbol (eps_PA = {rate.eps_pa:.3g}, "
                              f"eps_bar = {rate.eps_bar:.3g})"),
                 ("asymptotic K", f"{rate.asymptotic_key_rate_bits_per_symbol:.6f} bit/symbol")]
    k_bits = rate.key_rate_bits_per_symbol
    note = "" if rate.secure else "  (no secret key)"
    if not rate.secure and k_bits > 0:
        note = f"  (no secret key: within its rounding error {rate.rounding_error_bits:.2g})"
    rows += [("K = secret key rate", f"{k_bits:.6f} bit/symbol{note}"),
             ("max tolerable xi (asympt.)", f"{out['max_tolerable_excess_noise_snu']:.6g} SNU")]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        w(f"  {k:<{width}}  {v}\n")
    if "plot" in out:
        w(f"  plot written to {out['plot']}\n")


def _plot(args: argparse.Namespace, params: dict[str, Any], rate: KeyRate, path: Path) -> None:
    from qkd_hw.plotting import pyplot

    plt = pyplot()
    import numpy as np

    loss = args.loss_db_per_km
    if not (math.isfinite(loss) and loss > 0):
        raise KeyRateInputError(f"--loss-db-per-km must be > 0 for --plot, got {loss!r}")
    p = {k: v for k, v in params.items() if k != "transmittance"}
    if args.max_distance_km is not None:
        lmax = args.max_distance_km
        if not (math.isfinite(lmax) and lmax > 0):
            raise KeyRateInputError(f"--max-distance-km must be > 0, got {lmax!r}")
    # the closed forms hold down to eta T = TRANSMITTANCE_FLOOR (80 dB): no curve beyond it
    t_floor = TRANSMITTANCE_FLOOR / p["efficiency"]
    l_floor = -10.0 * math.log10(t_floor) / loss
    if args.max_distance_km is None:  # up to where the asymptotic rate vanishes (coarse scan)
        grid = np.linspace(0.0, min(400.0, l_floor), 801)
        k = key_rate_terms(p["modulation_variance_snu"], transmittance_from_distance(grid, loss),
                           p["excess_noise_snu"], p["efficiency"], p["electronic_noise_snu"],
                           p["beta"], p["detection"])[0]
        neg = np.nonzero(k <= 0)[0]
        lmax = float(min(grid[-1], 1.15 * grid[neg[0]])) if neg.size else float(grid[-1])
        lmax = max(lmax, 1.0)
    dist = np.linspace(0.0, lmax, 400)
    T = transmittance_from_distance(dist, loss)
    valid = p["efficiency"] * T >= TRANSMITTANCE_FLOOR  # the same test as the API
    k_asym = np.full(T.shape, np.nan)
    k_asym[valid] = key_rate_terms(p["modulation_variance_snu"], T[valid],
                                   p["excess_noise_snu"], p["efficiency"],
                                   p["electronic_noise_snu"], p["beta"], p["detection"])[0]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.semilogy(dist, np.where(k_asym > 0, k_asym, np.nan), label="asymptotic")
    if args.block_size is not None:
        n_pe = _n_pe(args)
        k_fs = np.array([finite_size_key_rate(**p, transmittance=float(t),
                                              block_size=args.block_size, n_pe=n_pe,
                                              **_eps(args)).key_rate_bits_per_symbol
                         if ok else np.nan for t, ok in zip(T, valid, strict=True)])
        ax.semilogy(dist, np.where(k_fs > 0, k_fs, np.nan),
                    label=f"finite size, N = {args.block_size:.3g}")
    if rate.secure:
        t_op = rate.transmittance_estimate if rate.finite_size else rate.transmittance
        ax.plot([-10 * math.log10(t_op) / loss], [rate.key_rate_bits_per_symbol], "o",
                label="operating point")
    ax.set_xlabel(f"distance (km, {loss:g} dB/km)")
    ax.set_ylabel("secret key rate (bit/symbol)")
    ax.set_title(f"{p['detection']}: V_A={p['modulation_variance_snu']:g}, "
                 f"xi={p['excess_noise_snu']:g}, eta={p['efficiency']:g}, "
                 f"v_el={p['electronic_noise_snu']:g}, beta={p['beta']:g}", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    save_png(fig, Path(path), dpi=120)
