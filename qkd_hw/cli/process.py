"""`qkd-hw process TRACE.h5`: run the DSP receiver over a recording.

Locks on the pilot and Alice's symbols, calibrates shot-noise units from the shot- and
electronic-noise captures, estimates T, xi, v_el on a disclosed random subset and the
finite-size key rate, and (with --out) writes the raw key (mode 0600). On lock failure it
exits with code 2 and a message giving the lock metrics; no estimate is printed then. So it
does for a recording that fails a physical sanity check (clipped captures, a noise capture
that is the signal, T above 1 or xi_max below 0 beyond the calibration's uncertainty), and
no raw key is written. Every output (--out, the plots of --plot) is checked before
processing starts: its directory takes files, it is no device, FIFO or directory, and the
outputs fit the disk.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from dsp.carrier import PHASE_METHODS
from dsp.pipeline import ReceiverOptions
from dsp.vocabulary import DEFAULT_BETA, DEFAULT_EPS_PE
from qkd_hw.atomic import check_target
from qkd_hw.cli.jsonout import json_text
from qkd_hw.cli.main import one_line
from qkd_hw.cli.process_archive import add_archive_arguments, run_archive_cli
from qkd_hw.errors import QkdHwError, ReceiverLockError, RecordingSanityError
from qkd_hw.plotting import save_png
from qkd_hw.raw_key import CHUNK as RAW_KEY_CHUNK
from qkd_hw.receiver import DEFAULT_CHUNK, ReceiverResult, process_recording
from qkd_hw.receiver.estimate import ImplausibleDiagnosticWarning
from qkd_hw.trace_io import TraceReader

#: show a progress bar above this many samples (about a second of processing)
PROGRESS_MIN_SAMPLES = 50_000_000

#: files :func:`write_plots` writes into its directory
PLOT_NAMES = ("constellation.png", "pilot_phase.png", "spectrum.png")
#: bytes of free space asked per plot before processing (the PNGs take 30-200 kB)
PLOT_BYTES_BOUND = 1 << 20


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("process", help="run the DSP receiver over a recording",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("trace", metavar="TRACE.h5", nargs="?",
                   help="recording (format qkd-trace v1)")
    p.add_argument("--out", metavar="RAW.h5", help="write the raw key (undisclosed symbols)")
    p.add_argument("--pe-fraction", type=float, default=0.5, metavar="F",
                   help="fraction of symbols disclosed for parameter estimation, (0, 1] "
                        "(default 0.5; 1 uses all, leaving no key)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the disclosed parameter-estimation subset (default: a fresh "
                        "random seed for every run, reported as pe_seed in the output; give "
                        "one only to reproduce a run)")
    p.add_argument("--eps-pe", type=float, default=DEFAULT_EPS_PE,
                   help="PE failure probability (default %(default)g)")
    p.add_argument("--beta", type=float, default=DEFAULT_BETA,
                   help="reconciliation efficiency (default %(default)s)")
    p.add_argument("--phase-method", choices=PHASE_METHODS,
                   default=ReceiverOptions.phase_method,
                   help="carrier-phase tracker (default %(default)s: Kalman filter + RTS "
                        "smoother; fir: boxcar at the optimal bandwidth)")
    p.add_argument("--pilot-bandwidth-hz", type=float, default=None,
                   help="force the pilot filter bandwidth (default: optimum from the data)")
    p.add_argument("--pilot-search-mhz", type=float,
                   default=ReceiverOptions.pilot_search_hz / 1e6,
                   help="half-width of the laser-offset search, MHz (default %(default)g)")
    p.add_argument("--no-clock-tracking", action="store_true",
                   help="assume Alice's and Bob's sample clocks are locked")
    p.add_argument("--no-map", action="store_true",
                   help="read the recording instead of memory-mapping it (network file "
                        "systems; a file that may be truncated while it is processed)")
    p.add_argument("--chunk-samples", type=int, default=DEFAULT_CHUNK, help=argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--plot", metavar="DIR", help="write PNG plots (constellation, pilot phase, "
                                                 "spectrum) into DIR")
    add_archive_arguments(p)
    p.set_defaults(func=_run)


@contextlib.contextmanager
def progress_bar(trace: str | Path, *, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """tqdm bar over all samples of the recording (only for long recordings and if enabled);
    yields the callback ``tick(n_samples)`` for ``process_recording(progress=...)``."""
    with TraceReader(trace) as r:
        total = sum(a.length for a in r.adc.values())
    if not enabled or total < PROGRESS_MIN_SAMPLES:
        yield lambda n: None
        return
    from tqdm import tqdm

    bar = tqdm(total=total, unit="S", unit_scale=True, desc="process", file=sys.stderr)
    try:
        yield bar.update
    finally:
        bar.close()


def receiver_options(args: argparse.Namespace) -> ReceiverOptions:
    """The receiver options of the command line (shared with the archive mode)."""
    try:
        return ReceiverOptions(phase_method=args.phase_method,
                               pilot_bandwidth_hz=args.pilot_bandwidth_hz,
                               pilot_search_hz=args.pilot_search_mhz * 1e6,
                               clock_tracking=not args.no_clock_tracking)
    except ValueError as exc:
        raise QkdHwError(str(exc)) from exc


def _run(args: argparse.Namespace) -> int:
    if args.archive:
        return run_archive_cli(args)
    if not args.trace:
        raise QkdHwError("give a recording TRACE.h5 (or --archive DIR --summary OUT)")
    if not 0 < args.pe_fraction <= 1:
        raise QkdHwError(f"--pe-fraction must be in (0, 1], got {args.pe_fraction}")
    if args.chunk_samples < 1:
        raise QkdHwError(f"--chunk-samples must be >= 1, got {args.chunk_samples}")
    options = receiver_options(args)
    check_outputs(args)  # every output before the first is written (or any work done)
    try:
        with progress_bar(args.trace, enabled=sys.stderr.isatty()) as tick, \
                warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ImplausibleDiagnosticWarning)
            res = process_recording(args.trace, options=options, pe_fraction=args.pe_fraction,
                                    seed=args.seed, eps_pe=args.eps_pe, beta=args.beta,
                                    raw_key_out=args.out, chunk_samples=args.chunk_samples,
                                    progress=tick, diagnostics=bool(args.plot),
                                    map_file=not args.no_map)
    except ReceiverLockError as exc:
        if args.json:
            print(json_text({"locked": False, "error": str(exc), "lock": exc.metrics}))
        raise
    except RecordingSanityError as exc:   # locked, but the recording is broken: no estimates
        if args.json:
            print(json_text({"locked": True, "sane": False, "error": str(exc),
                             "sanity": exc.metrics}))
        raise
    except ValueError as exc:
        raise QkdHwError(f"{args.trace}: {exc}") from exc
    summary = {"locked": True, **res.summary()}
    # a diagnostic that cannot be right: one line each, and in the JSON (never a traceback-like
    # two-line Python warning)
    notes = [one_line(str(w.message)) for w in caught
             if issubclass(w.category, ImplausibleDiagnosticWarning)]
    for w in caught:
        if not issubclass(w.category, ImplausibleDiagnosticWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    for text in notes:
        print(f"qkd-hw process: warning: {text}", file=sys.stderr)
    summary["warnings"] = notes
    if args.plot:
        summary["plots"] = [str(p) for p in write_plots(res, Path(args.plot))]
    if args.json:
        print(json_text(summary))
    else:
        _print_human(summary)
    return 0


def _linewidth_text(s: dict[str, Any]) -> str:
    """The linewidth, or its bound when the estimate cannot be told from zero."""
    if s.get("linewidth_below_resolution"):
        bound = s["linewidth_resolution_hz"]
        return f"< {bound:.0f} Hz (below resolution)" if bound >= 10 else \
            f"< {bound:.2g} Hz (below resolution)"
    return f"~{s['linewidth_hz']:.0f} Hz"


def _print_human(s: dict[str, Any]) -> None:
    def f(v, fmt):
        return "n/a" if v is None else format(v, fmt)
    lock = s["lock"]
    lines = [
        f"recording          {s['path']}",
        f"lock               pilot SNR {lock['pilot_snr_db']:.1f} dB, sync PSLR "
        f"{lock['sync_pslr_db']:.1f} dB",
        f"frequency offset   {s['frequency_offset_hz'] / 1e6:+.6f} MHz "
        f"(linewidth {_linewidth_text(s)})",
        f"first symbol at    {s['delay_samples']:.3f} samples, clock offset "
        f"{s['clock_offset_ppm']:+.3f} +- {s['clock_offset_std_ppm']:.3f} ppm "
        f"({len(s['clock_probe_first_samples'])} late probe(s))",
        f"symbols            {s['n_symbols_received']} received, {s['n_pe_symbols']} disclosed "
        f"(seed {s['pe_seed']})",
        f"T                  {s['transmittance']:.5f} (min {s['transmittance_min']:.5f})",
        f"xi                 {s['excess_noise_snu']:.5f} SNU (max "
        f"{s['excess_noise_max_snu']:.5f}; shot-noise calibration sd "
        f"{f(s['excess_noise_calibration_std_snu'], '.5f')})",
        f"v_el               {s['electronic_noise_snu']:.5f} +- "
        f"{s['electronic_noise_std_snu']:.5f} SNU",
        f"SNR                {s['snr']:.4f}",
        "clipped            " + ", ".join(f"{k} {v:.2g}" for k, v in s["clipped_fraction"].items())
        + " (fraction of samples at the ADC rails)",
        f"key rate           {f(s['key_rate_bits_per_symbol'], '.5f')} bit/symbol"
        + (f" ({s['key_rate_error']})" if s.get("key_rate_error") else ""),
        f"throughput         {s['samples'] / 1e6:.1f} MS in {s['seconds']:.2f} s",
    ]
    if s.get("raw_key_path"):
        lines.append(f"raw key            {s['raw_key_path']} ({s['n_key_symbols']} symbols)")
    for p in s.get("plots", []):
        lines.append(f"plot               {p}")
    print("\n".join(lines))


def _key_bytes_bound(trace: str) -> int:
    """Upper bound of the raw-key file's data: 16 bytes per symbol (key symbols take a
    complex64 and an index, disclosed ones an index) plus the last, partly filled chunk of
    each of its three datasets."""
    with TraceReader(trace) as r:
        n = r.tx.n_symbols
    return 16 * n + 3 * RAW_KEY_CHUNK * 8


def check_outputs(args: argparse.Namespace) -> None:
    """Check every output of ``process`` before anything is computed or written.

    The raw key (``--out``) and each plot (``--plot``) must be creatable (directory
    exists and takes files, the name is no directory, device, FIFO or socket), together
    they must fit the free space of their file system, none may be the recording and no
    two may be the same file.
    Raises :class:`QkdHwError` naming the output and the reason.
    """
    outputs: list[tuple[str, Path]] = []
    if args.out is not None:
        if not args.out:
            raise QkdHwError("--out: empty file name")
        outputs.append(("raw key", Path(args.out)))
    if args.plot:  # an unusable plot directory must not cost a raw key
        prepare_plot_dir(Path(args.plot))
        outputs += [("plot", Path(args.plot) / name) for name in PLOT_NAMES]
    seen: dict[Path, str] = {}
    trace = Path(args.trace)
    need_on_fs: dict[int, int] = {}  # all outputs on one file system must fit together
    for what, path in outputs:
        key = path.resolve()
        if key in seen:
            raise QkdHwError(f"{what} {path}: same file as the {seen[key]} output")
        seen[key] = what
        if key == trace.resolve() or (path.exists() and trace.exists()
                                      and path.samefile(trace)):
            raise QkdHwError(f"{what} {path}: is the recording itself")
        try:
            need = _key_bytes_bound(args.trace) if what == "raw key" else PLOT_BYTES_BOUND
            fs = os.stat(path.parent).st_dev if path.parent.is_dir() else -1
            need_on_fs[fs] = need_on_fs.get(fs, 0) + need
            check_target(path, need_bytes=need_on_fs[fs])
        except OSError as exc:
            raise QkdHwError(f"{what} {exc.filename or path}: {exc.strerror or exc}") from exc


def prepare_plot_dir(out_dir: Path) -> None:
    """Create ``out_dir`` (with parents) and check that the plots can be written into it.

    Raises :class:`QkdHwError` naming the path if it is not a directory, cannot be
    created or written, or if one of :data:`PLOT_NAMES` there is a directory.
    """
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:  # exist_ok: raised only if it is not a directory
        raise QkdHwError(f"plot directory {out_dir} exists and is not a directory") from exc
    except OSError as exc:
        raise QkdHwError(f"cannot create plot directory {out_dir}: "
                         f"{exc.strerror or exc}") from exc
    for name in PLOT_NAMES:
        if (out_dir / name).is_dir():
            raise QkdHwError(f"cannot write plot {out_dir / name}: it is a directory")
    try:  # really writable (permissions, read-only file system); leaves nothing behind
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as exc:
        raise QkdHwError(f"plot directory {out_dir} is not writable: "
                         f"{exc.strerror or exc}") from exc


def write_plots(res: ReceiverResult, out_dir: Path) -> list[Path]:
    """Constellation, pilot phase vs time and the spectrum of the head, as PNG files.

    Each file is written atomically (temporary name beside it, renamed when complete);
    any OS error is raised as :class:`QkdHwError` naming the path.
    """
    from qkd_hw.plotting import pyplot

    plt = pyplot()

    prepare_plot_dir(out_dir)
    d = res.diagnostics
    paths = []
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(d.constellation_y.real, d.constellation_y.imag, ".", ms=1, alpha=0.5,
            label="Bob (SNU, disclosed)")
    t = res.estimates.t_eff
    ax.plot(t * d.constellation_x.real, t * d.constellation_x.imag, ".", ms=1, alpha=0.3,
            label="t x Alice")
    ax.set_xlabel("q (SNU)")
    ax.set_ylabel("p (SNU)")
    ax.set_aspect("equal")
    ax.legend(loc="upper right", markerscale=8)
    ax.set_title("constellation")
    paths.append(save_png(fig, out_dir / PLOT_NAMES[0]))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(1e3 * np.asarray(d.pilot_phase_t_s), d.pilot_phase_rad, lw=0.8)
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("pilot phase (rad)")
    ax.set_title(f"carrier phase ({res.acquisition.carrier.method}, "
                 f"B = {res.acquisition.carrier.bandwidth_hz / 1e3:.0f} kHz)")
    paths.append(save_png(fig, out_dir / PLOT_NAMES[1]))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(d.spectrum_f_hz / 1e6, d.spectrum_db, lw=0.6)
    ax.set_xlabel("frequency (MHz)")
    ax.set_ylabel("PSD (dB, arb.)")
    ax.set_title("spectrum of the signal capture (head)")
    paths.append(save_png(fig, out_dir / PLOT_NAMES[2]))
    return paths
