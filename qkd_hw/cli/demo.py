"""``qkd-hw demo``: the whole link on the virtual lab, in one command.

    qkd-hw demo [--out DIR] [--symbols N] [--set KEY=VALUE] [--json]

Starts the shipped virtual lab (instrument emulators behind a physics model, in-process),
then runs the link check of ``qkd-hw calibrate link`` through the same drivers a real lab
uses: noise calibration (shot and electronic noise), V_A calibration from the power meter,
an acquisition of N symbols, the receiver (exactly ``qkd-hw process``) and the key rate.
Writes DIR (default ``./qkd-hw-demo``): the records (``noise.h5``, ``modulation.h5``,
``link.h5``), the recording, the raw key (mode 0600) and PNG plots; and ends with each
estimate against the virtual lab's truth (within its uncertainty or not) and what the key
rate means at this block size. ``--set`` changes the virtual lab's physics (``[virtual]``
keys, e.g. ``--set excess_noise_snu=0.05``).

Time on this machine (2 cores, defaults; 2026-12-07 with other jobs at load 15-17): 21-32 s
wall with numba's cache warm (22 s on a quiet machine at the earlier 1e5-symbol default); 90 s
on a cold cache (``NUMBA_CACHE_DIR`` empty: the first run compiles 30-32 kernels of the lab
model and the receiver, ``cache=True``; 56 s quiet at the earlier default). The summary says
whether this run compiled, and its receiver throughput then includes the compilation.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Any

from dsp.vocabulary import DEFAULT_BETA
from qkd_hw.cli.jsonout import json_text
from qkd_hw.errors import ConfigError

#: an estimate within this many standard deviations of the truth counts as recovered
WITHIN_SD = 3.0
DEFAULT_OUT = Path("qkd-hw-demo")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="the whole link on the virtual lab, compared with its truth",
        description=__doc__.split("\n\n")[0].strip("`"))
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help=f"report folder (default ./{DEFAULT_OUT})")
    # sd(xi) on the shipped lab: PE 0.045 + shot-noise calibration 0.045 at 1e5 / 5e5, and
    # the asymptotic key (the link check) turns negative at xi_hat ~0.135: ~3 % of healthy
    # runs ended in FAIL. At 2e5 / 2e6: sd 0.039, 0.2 %, and no slower within the load noise
    p.add_argument("--symbols", type=int, default=200_000, help="data symbols (default 2e5)")
    p.add_argument("--noise-samples", type=int, default=2_000_000,
                   help="samples of each noise capture (default 2e6)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the disclosed PE subset (default: random)")
    p.add_argument("--set", dest="assignments", action="append", default=[],
                   metavar="KEY=VALUE", help="change a [virtual] physics value (repeatable)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_run)


def _physics(assignments: list[str]) -> Any:
    """The shipped virtual lab's config with ``--set`` applied to its ``[virtual]``."""
    from qkd_hw.lab import example_path
    from qkd_hw.labconfig import load_lab_config

    cfg = load_lab_config(example_path(virtual=True))
    assert cfg.virtual is not None
    names = {f.name for f in dataclasses.fields(cfg.virtual)}
    changes: dict[str, float] = {}
    for item in assignments:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or key not in names:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE with KEY a [virtual] key: "
                              f"{', '.join(sorted(names))}")
        try:
            changes[key] = float(text)
        except ValueError:
            raise ConfigError(f"--set {item!r}: {text!r} is not a number") from None
    try:
        return dataclasses.replace(cfg, virtual=dataclasses.replace(cfg.virtual, **changes))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"--set: {exc}") from exc


def _run(args: argparse.Namespace) -> int:
    if args.symbols < 20_000:
        raise ConfigError(f"--symbols must be >= 20000 for a meaningful demo, got {args.symbols}")
    if args.noise_samples < 100_000:
        raise ConfigError(f"--noise-samples must be >= 100000, got {args.noise_samples}")
    config = _physics(args.assignments)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:   # a file in the way, no permission: one line, exit 2
        raise ConfigError(f"--out {args.out}: cannot use it as the output directory: "
                          f"{exc.strerror or exc}") from exc
    return _demo(config, args)


def _say(args: argparse.Namespace, text: str) -> None:
    if not args.json:
        print(text, file=sys.stderr)


def _demo(config: Any, args: argparse.Namespace) -> int:
    from calibration.link import LinkOptions, virtual_truth
    from qkd_hw.cli.calibrate import run_named
    from qkd_hw.cli.process import write_plots
    from qkd_hw.lab import VirtualLab

    t0 = time.perf_counter()
    misses0 = _jit_cache_misses()
    _say(args, "starting the virtual lab (emulators of 9 instruments + physics model) ...")
    with VirtualLab(config).start() as vlab:
        t_lab = time.perf_counter() - t0
        ph = vlab.physics
        assert vlab.client_config is not None
        opt = LinkOptions(n_symbols=args.symbols, noise_samples=args.noise_samples,
                          tap_db=ph.power_meter_tap_db, tx_attenuation_db=ph.tx_attenuation_db,
                          seed=args.seed, diagnostics=True, out_dir=args.out,
                          show_progress=not args.json and sys.stderr.isatty())
        _say(args, f"calibrating noise and V_A, acquiring {args.symbols} symbols, "
                   f"receiving ... (records in {args.out})")
        rec = run_named("link", vlab.client_config, opt, args.out)
        truth = virtual_truth(vlab, voa_db=opt.voa_db)
    res = rec.artifacts["receiver"]
    plots = [Path(rec.results["plot"]), *write_plots(res, args.out)]
    seconds = time.perf_counter() - t0
    compiled = _jit_cache_misses() - misses0
    report = comparison(rec.results, truth)
    key = key_rate_story(rec.results, truth, va=rec.results["modulation_variance_snu"],
                         eta=ph.detector_efficiency)
    timing = {"total_s": seconds, "lab_start_s": t_lab,
              "receiver_s": rec.results["receiver_seconds"],
              "receiver_msps": rec.results["throughput_msps"], "kernels_compiled": compiled}
    ok = all(r["within"] for r in report.values())
    if args.json:
        print(json_text({**rec.summary(), "truth_comparison": report, "key_rate": key,
                         "timing": timing, "plots": [str(p) for p in plots],
                         "all_within_uncertainty": ok}, indent=2))
    else:
        _print(rec, report, key, timing, plots, ok, args.out)
    return 0


def comparison(r: dict[str, Any], truth: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Each estimate against the truth: estimate, truth, std, deviation in std, within."""
    rows = {
        "transmittance": ("transmittance", "transmittance_std"),
        "excess_noise_snu": ("excess_noise_snu", "excess_noise_snu_std"),
        "electronic_noise_snu": ("electronic_noise_snu", "electronic_noise_snu_std"),
        "electronic_noise_snu (noise calibration)": (
            "noise_calibration_electronic_noise_snu",
            "noise_calibration_electronic_noise_snu_std"),
    }
    out = {}
    for name, (est_key, std_key) in rows.items():
        tru = truth[name.split(" ")[0]]
        est, std = float(r[est_key]), float(r[std_key])
        if name == "transmittance":   # T scales with the V_A calibration too
            std = math.hypot(std, tru * r["modulation_variance_snu_std"]
                             / r["modulation_variance_snu"])
        dev = (est - tru) / std if std > 0 else math.nan
        out[name] = {"estimate": est, "truth": tru, "std": std, "deviation_sigma": dev,
                     "within": bool(abs(dev) <= WITHIN_SD)}
    return out


def key_rate_story(r: dict[str, Any], truth: dict[str, float], *, va: float,
                   eta: float) -> dict[str, Any]:
    """The finite-size and asymptotic rates and, when the finite-size one is negative, the
    smallest block (powers of 10) at which this link's truth would give a key."""
    from qkd_hw.keyrate import KeyRateInputError, finite_size_key_rate

    story: dict[str, Any] = {"finite_size_bits_per_symbol": r["key_rate_bits_per_symbol"],
                             "asymptotic_bits_per_symbol":
                                 r["asymptotic_key_rate_bits_per_symbol"],
                             "block_symbols": r["n_symbols_received"],
                             "block_needed_symbols": None}
    kr = r["key_rate_bits_per_symbol"]
    if kr is not None and kr > 0:
        return story
    for k in range(5, 13):
        n = 10 ** k
        try:
            rate = finite_size_key_rate(
                modulation_variance_snu=va, transmittance=truth["transmittance"],
                excess_noise_snu=truth["excess_noise_snu"], efficiency=eta,
                electronic_noise_snu=truth["electronic_noise_snu"], beta=DEFAULT_BETA,
                detection="heterodyne", block_size=n, n_pe=n).key_rate_bits_per_symbol
        except KeyRateInputError:
            continue
        if rate > 0:
            story["block_needed_symbols"] = n
            story["rate_at_block_needed"] = rate
            break
    return story


def _jit_cache_misses() -> int:
    """numba kernels compiled (not loaded from the cache) in this process so far."""
    try:
        from numba.core.registry import CPUDispatcher
    except ImportError:   # pragma: no cover - numba is a dependency
        return 0
    n = 0
    for name, mod in list(sys.modules.items()):
        if not (name.startswith(("dsp", "qkd_hw")) and mod is not None):
            continue
        for obj in list(vars(mod).values()):
            if isinstance(obj, CPUDispatcher):
                n += sum(obj.stats.cache_misses.values())
    return n


def _print(rec: Any, report: dict[str, dict[str, Any]], key: dict[str, Any],
           timing: dict[str, Any], plots: list[Path], ok: bool, out: Path) -> None:
    r = rec.results
    print(f"\nqkd-hw demo: {r['n_symbols_received']} symbols through the virtual lab "
          f"(V_A = {r['modulation_variance_snu']:.3f} +- "
          f"{r['modulation_variance_snu_std']:.2g} SNU set from the power meter)")
    print(f"{'quantity':<42}{'truth':>10}{'estimate':>11}{'std':>10}{'dev/std':>9}  verdict")
    for name, x in report.items():
        verdict = "ok, within its uncertainty" if x["within"] else \
            f"OUTSIDE {WITHIN_SD:g} std"
        print(f"{name:<42}{x['truth']:>10.4g}{x['estimate']:>11.4g}{x['std']:>10.2g}"
              f"{x['deviation_sigma']:>+9.2f}  {verdict}")
    fs, asym = key["finite_size_bits_per_symbol"], key["asymptotic_bits_per_symbol"]
    print(f"key rate, asymptotic at these estimates: "
          f"{'none' if asym is None else f'{asym:.4g}'} bit/symbol")
    print(f"key rate, finite size ({key['block_symbols']} symbols): "
          f"{'none' if fs is None else f'{fs:.4g}'} bit/symbol")
    if fs is None or fs <= 0:
        need = key["block_needed_symbols"]
        print("  negative at this block size: the parameters are estimated from only "
              f"{r['n_pe_symbols']} disclosed symbols, so their worst case (T_min = "
              f"{r['transmittance_min']:.3g}, xi_max = {r['excess_noise_max_snu']:.3g} SNU) "
              "is far from the estimates, and privacy amplification costs a finite-size "
              "offset; " + (f"this link (its truth) gives a key from blocks of about "
                            f"1e{round(math.log10(need))} symbols "
                            f"({key['rate_at_block_needed']:.3g} bit/symbol)."
                            if need else "no block up to 1e12 symbols gives a key here."))
    print(f"time: {timing['total_s']:.1f} s in all (lab start {timing['lab_start_s']:.1f} s, "
          f"receiver {timing['receiver_s']:.2f} s = {timing['receiver_msps']:.3g} MSa/s)")
    if timing["kernels_compiled"]:
        print(f"  this run compiled {timing['kernels_compiled']} numba kernels (cold cache, "
              "first run on this machine): the times above include that compilation; the "
              "next run loads them from the cache")
    print(f"records: {out}/noise.h5, {out}/modulation.h5, {out}/link.h5; recording "
          f"{r['recording']}; raw key (0600) {r['raw_key']}")
    for p in plots:
        print(f"plot: {p}")
    print("verdict: " + ("every estimate is within its uncertainty of the virtual lab's "
                         "truth: the receiver recovers the link" if ok else
                         "some estimate lies outside its uncertainty of the truth (see above)")
          + f"; link check {rec.verdict}")
