"""The archive mode of `qkd-hw process` (``--archive DIR --summary OUT``): its options and run.

Kept apart from ``process.py`` so that the single-recording command stays as it is.
"""

from __future__ import annotations

import argparse
import sys

from qkd_hw.archive import ArchiveJob, run_archive
from qkd_hw.errors import BenchError


def add_archive_arguments(p: argparse.ArgumentParser) -> None:
    """``--archive/--scheduler/--workers/--summary`` on the ``process`` parser."""
    g = p.add_argument_group("archive mode (Dask distributed; pip install -e \".[archive]\")")
    g.add_argument("--archive", metavar="DIR",
                   help="process every *.h5 under DIR, one task per recording (no TRACE.h5)")
    g.add_argument("--scheduler", metavar="ADDRESS", default="local",
                   help="Dask scheduler address, or 'local' (default): a local cluster on "
                        "the loopback interface")
    g.add_argument("--workers", type=int, default=2, metavar="N",
                   help="worker processes of the local cluster (default 2)")
    g.add_argument("--summary", metavar="OUT",
                   help="summary file, .csv or .h5 (resumed: recordings already ok in it "
                        "are skipped)")


def run_archive_cli(args: argparse.Namespace) -> int:
    """``qkd-hw process --archive``: exit 0, or 2 if any recording failed (each named)."""
    if args.trace:
        raise BenchError("give either TRACE.h5 or --archive DIR, not both")
    if not args.summary:
        raise BenchError("--archive needs --summary OUT (.csv or .h5)")
    for flag in ("out", "plot", "json"):
        if getattr(args, flag, None):
            raise BenchError(f"--{flag} is not available in archive mode")
    if not 0 < args.pe_fraction <= 1:
        raise BenchError(f"--pe-fraction must be in (0, 1], got {args.pe_fraction}")
    from qkd_hw.cli.process import receiver_options  # process.py imports this module

    options = receiver_options(args)
    job = ArchiveJob(pe_fraction=args.pe_fraction, seed=args.seed, eps_pe=args.eps_pe,
                     beta=args.beta, options=options, chunk_samples=args.chunk_samples)

    def show(row: dict) -> None:
        if row["status"] == "ok":
            print(f"{row['file']}: ok, T {row['transmittance']:.5g}, "
                  f"xi {row['excess_noise_snu']:.4g} SNU", flush=True)
        else:
            print(f"{row['file']}: FAILED: {row['error']}", file=sys.stderr, flush=True)

    rows = run_archive(args.archive, args.summary, job=job, scheduler=args.scheduler,
                       workers=args.workers, on_row=show)
    failed = [r for r in rows if r["status"] != "ok"]
    print(f"summary {args.summary}: {len(rows) - len(failed)} ok, {len(failed)} failed")
    return 2 if failed else 0
