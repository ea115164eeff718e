"""``qkd-hw acquire``: take a recording from the lab (format v1 with /meta).

    qkd-hw acquire [--lab CONFIG] OUT.h5 --symbols N [--noise-samples N] [--json] ...

Opens every instrument of the lab config's ``[roles]`` in a session, generates and uploads
Alice's waveform, takes the signal, shot-noise and electronic-noise captures (switch and LO
driven through the session) and writes OUT.h5; every setting it changed is restored
afterwards, also after an error or Ctrl-C. Without ``--lab`` (or with a config that has a
``[virtual]`` table) the virtual lab is started in-process, and its AWG amplitude is computed
from the virtual truth at the Tx laser's power (``--tx-power-mw``, default the laser's
``power_mw`` limit, else 20 mW) -- the stand-in for the V_A calibration. With a real lab the
AWG amplitude and Tx power are the instruments' own unless given.

An interrupted acquisition leaves its partial recording next to OUT as
``OUT-stem.incomplete.h5`` (root attribute ``complete = false``: readers refuse it); OUT is
only written when every capture is in full. ``qkd-hw process OUT.h5`` runs on the result.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from qkd_hw.cli.jsonout import json_text
from qkd_hw.errors import QkdHwError

DEFAULT_TX_POWER_MW = 20.0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("acquire", help="acquire a recording from the (virtual) lab",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="output HDF5 recording")
    p.add_argument("--lab", type=Path, metavar="CONFIG",
                   help="lab config (default: the shipped virtual lab, started in-process)")
    p.add_argument("--symbols", type=_positive_int, required=True, help="data symbols")
    p.add_argument("--noise-samples", type=_positive_int, default=None,
                   help="length of the noise captures (default: that of the signal capture)")
    p.add_argument("--segment-symbols", type=_positive_int, default=4096,
                   help="AWG segment length in symbols (repeats cyclically; default 4096)")
    p.add_argument("--tx-power-mw", type=float, default=None, help="Tx laser power set point")
    p.add_argument("--awg-amplitude-v", type=float, default=None,
                   help="AWG amplitude of the I/Q channels (V peak-to-peak)")
    p.add_argument("--voa-db", type=float, default=None, help="VOA attenuation")
    p.add_argument("--pilot-db", type=float, default=8.0,
                   help="pilot power over the quantum band's power (dB, default 8)")
    p.add_argument("--chunk-samples", type=_positive_int, default=1 << 20,
                   help="digitizer transfer / file append size (samples)")
    p.add_argument("--description", default=None, help="free text for the root attribute")
    p.add_argument("--progress", action="store_true", help="one line per step on stderr")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_run)


def _positive_int(s: str) -> int:
    try:
        f = float(s)
        if not f.is_integer() or f < 1:
            raise ValueError
        return int(f)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {s!r}") from None


@contextlib.contextmanager
def _lab(path: Path | None) -> Iterator[tuple[Any, Any]]:
    """``(client LabConfig, VirtualLab or None)``: a virtual lab is started in-process."""
    from qkd_hw.lab import VirtualLab, example_path
    from qkd_hw.labconfig import load_lab_config

    config = load_lab_config(path if path is not None else example_path(virtual=True))
    if config.virtual is None:
        yield config, None
        return
    with VirtualLab(config).start() as vlab:
        yield vlab.client_config, vlab


def _run(args: argparse.Namespace) -> int:
    from qkd_hw.lab.acquisition import AcquisitionPlan, acquire, incomplete_path
    from qkd_hw.lab.session import LabSession
    from qkd_hw.lab.transmitter import virtual_tx_levels

    try:
        plan = AcquisitionPlan(n_symbols=args.symbols, noise_samples=args.noise_samples,
                               segment_symbols=args.segment_symbols,
                               chunk_samples=args.chunk_samples, tx_power_mw=args.tx_power_mw,
                               awg_amplitude_v=args.awg_amplitude_v, voa_db=args.voa_db,
                               pilot_to_signal_db=args.pilot_db)
    except ValueError as exc:
        raise QkdHwError(f"bad option: {exc}") from None
    progress = (lambda msg: print(f"qkd-hw acquire: {msg}", file=sys.stderr)) \
        if args.progress else None
    side = incomplete_path(args.out)
    stale = _stamp(side)  # a partial file of an earlier run is not this run's
    try:
        with _lab(args.lab) as (config, vlab):
            amplitude_for = None
            if vlab is not None:
                if plan.tx_power_mw is None:
                    limit = vlab.config.role("signal_laser").limits.get("power_mw")
                    tx_mw = limit.max if limit is not None and limit.max is not None \
                        else DEFAULT_TX_POWER_MW
                    plan = _with(plan, tx_power_mw=tx_mw)
                physics, tx_power = vlab.physics, plan.tx_power_mw
                amplitude_for = lambda wf: virtual_tx_levels(  # noqa: E731
                    physics, wf, tx_power_mw=tx_power)
            with LabSession(config, progress=progress) as session:
                result = acquire(session, args.out, plan, description=args.description,
                                 amplitude_for=amplitude_for)
    except BaseException:
        if _stamp(side) not in (None, stale):
            print(f"qkd-hw acquire: partial recording kept at {side} (complete = false)",
                  file=sys.stderr)
        raise
    summary = result.summary()
    summary["virtual_lab"] = vlab is not None
    if args.json:
        print(json_text(summary, indent=2))
    else:
        print(f"wrote {args.out}: {result.n_symbols} symbols (segment of "
              f"{result.segment_symbols}), captures {result.lengths['signal']} / "
              f"{result.lengths['shot_noise']} / {result.lengths['electronic_noise']} samples, "
              f"AWG amplitude {result.awg_amplitude_v:.4g} V, Tx {result.tx_power_mw:.4g} mW")
    return 0


def _stamp(path: Path) -> tuple[int, int] | None:
    """Identity of the file at ``path`` (inode, mtime), None when there is none."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def _with(plan: Any, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(plan, **changes)
