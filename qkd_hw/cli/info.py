"""`qkd-hw info FILE.h5 [--json] [--verify]`: validate a recording and summarise it.

Prints the format, the ADC captures (length, dtype, sample rate, duration,
storage layout), the /tx parameters and whether /truth is present. Never
prints key-like data: no symbol values, no ADC samples, no /truth values.
A raw-key hand-off file is recognised too (counts and estimates only).
Exit 0 if the file is valid, 2 with one clear error line if not.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from qkd_hw._h5check import attr_str, open_h5
from qkd_hw.cli.jsonout import json_text
from qkd_hw.cli.main import one_line
from qkd_hw.errors import TraceFormatError
from qkd_hw.raw_key import RAW_KEY_FORMAT, read_raw_key
from qkd_hw.sizes import check_capture_holds_sync, gib, receiver_memory_bytes
from qkd_hw.trace_io import ADC_DATASETS, FORMAT_NAME, FORMAT_VERSION, TraceReader


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="validate a recorded trace (or raw-key file) and summarise it",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", metavar="FILE.h5", help="recording (qkd-trace) or raw key (qkd-raw-key)")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    p.add_argument("--verify", action="store_true",
                   help="also read every sample and symbol (finds damaged chunks, NaN/inf); "
                        "raw-key files are always read whole")
    p.set_defaults(func=_run)


def _peek_format(path: str) -> str | None:
    file, f = open_h5(path, kind=f"{FORMAT_NAME} or {RAW_KEY_FORMAT}")
    with f:
        return attr_str(file, f, "format", obj_name="/", required=False)


def trace_summary(path: str | os.PathLike[str], *, verify: bool = False) -> dict[str, Any]:
    """Validated summary of a recording as plain JSON-able data (no key material)."""
    with TraceReader(path) as r:
        if verify:
            _verify(r)
        sig = r.adc["signal"]
        return {
            "path": str(r.path),
            "size_bytes": r.path.stat().st_size,
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "description": r.description,
            "created_utc": r.created_utc,
            "sample_rate_hz": r.sample_rate_hz,
            "duration_s": sig.duration_s,
            "samples_per_symbol": r.sample_rate_hz / r.tx.symbol_rate_hz,
            "adc": {
                name: {
                    "length": a.length,
                    "dtype": str(a.dtype),
                    "sample_rate_hz": a.sample_rate_hz,
                    "volts_per_code": a.volts_per_code,
                    "duration_s": a.duration_s,
                    "chunks": list(a.chunks) if a.chunks else None,
                    "compression": a.compression,
                }
                for name, a in r.adc.items()
            },
            "tx": {
                "n_symbols": r.tx.n_symbols,
                "symbol_rate_hz": r.tx.symbol_rate_hz,
                "rolloff": r.tx.rolloff,
                "signal_frequency_hz": r.tx.signal_frequency_hz,
                "pilot_frequencies_hz": list(r.tx.pilot_frequencies_hz),
                "modulation_variance_snu": r.tx.modulation_variance_snu,
                "efficiency": r.tx.efficiency,
                "detection": r.tx.detection,
                "duration_s": r.tx.n_symbols / r.tx.symbol_rate_hz,
            },
            "has_truth": r.has_truth(),
            "verified": verify,
            # what `process` will need (the reader refused the file if it exceeds the limit)
            "receiver_memory_bytes": int(receiver_memory_bytes(
                samples_per_symbol=r.sample_rate_hz / r.tx.symbol_rate_hz, rolloff=r.tx.rolloff,
                n_symbols=r.tx.n_symbols, signal_length=sig.length).total),
        }


def _verify(r: TraceReader) -> None:
    from tqdm import tqdm

    # before reading everything: the DSP cannot lock on a capture shorter than its sync
    check_capture_holds_sync(r.path, r.tx, r.sample_rate_hz, r.adc["signal"].length)

    total = sum(a.length for a in r.adc.values()) + r.tx.n_symbols
    with tqdm(total=total, unit="S", unit_scale=True, desc="verify", file=sys.stderr,
              disable=total < 50_000_000 or None) as bar:
        r.verify(progress=bar.update)


def raw_key_summary(path: str | os.PathLike[str]) -> dict[str, Any]:
    raw = read_raw_key(path)
    return {
        "path": str(Path(path)),
        "size_bytes": Path(path).stat().st_size,
        "format": RAW_KEY_FORMAT,
        "format_version": 1,
        "mode": oct(Path(path).stat().st_mode & 0o777),
        "n_key_symbols": int(raw.bob_symbols.shape[0]),
        "n_pe_symbols": int(raw.pe_tx_index.shape[0]),
        "estimates": dict(raw.estimates),
    }


def _si(value: float, unit: str) -> str:
    for factor, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:g} {prefix}{unit}"
    return f"{value:g} {unit}"


def _duration(s: float) -> str:
    return f"{s * 1e3:.6g} ms" if s < 1 else f"{s:.6g} s"


def _print_trace(d: dict[str, Any]) -> None:
    print(f"{one_line(d['path'])}: {d['format']} version {d['format_version']}, "
          f"{d['size_bytes'] / 1e6:.1f} MB")
    for key in ("description", "created_utc"):
        if d[key] is not None:
            print(f"  {key}: {d[key]}")
    print(f"  sample rate: {_si(d['sample_rate_hz'], 'S/s')}, "
          f"{d['samples_per_symbol']:g} samples per symbol")
    print("  adc:")
    for name in ADC_DATASETS:
        a = d["adc"][name]
        layout = f"chunks {a['chunks'][0]}" if a["chunks"] else "contiguous"
        if a["compression"]:
            layout += f", {a['compression']}"
        print(f"    {name:<17} {a['length']:>12} samples  {a['dtype']:<7} "
              f"{_duration(a['duration_s']):>12}  {a['volts_per_code']:.6g} V/code  {layout}")
    t = d["tx"]
    pilots = ", ".join(_si(f, "Hz") for f in t["pilot_frequencies_hz"])
    print(f"  tx: {t['n_symbols']} symbols ({_duration(t['duration_s'])} at "
          f"{_si(t['symbol_rate_hz'], 'Bd')}), RRC roll-off {t['rolloff']:g}, {t['detection']}")
    print(f"      signal at {_si(t['signal_frequency_hz'], 'Hz')}, pilot(s) at {pilots}")
    print(f"      V_A {t['modulation_variance_snu']:g} SNU, efficiency {t['efficiency']:g}")
    print(f"  truth: {'present (simulated recording)' if d['has_truth'] else 'absent'}")
    print(f"  process needs ~{gib(d['receiver_memory_bytes'])} of memory")
    if d["verified"]:
        print("  verify: every sample and symbol read, all finite")


def _print_raw_key(d: dict[str, Any]) -> None:
    print(f"{one_line(d['path'])}: {d['format']} version {d['format_version']}, "
          f"mode {d['mode']}")
    print(f"  key symbols: {d['n_key_symbols']}, disclosed for estimation: {d['n_pe_symbols']}")
    print("  estimates:")
    for k, v in sorted(d["estimates"].items()):
        print(f"    {k:<28} {v:.6g}")


def _run(args: argparse.Namespace) -> int:
    fmt = _peek_format(args.path)
    if fmt == RAW_KEY_FORMAT:
        d = raw_key_summary(args.path)
        printer = _print_raw_key
    elif fmt == FORMAT_NAME or fmt is None:  # None: TraceReader names the missing attribute
        d = trace_summary(args.path, verify=args.verify)
        printer = _print_trace
    else:
        raise TraceFormatError(f"{args.path}: attribute 'format' of /: expected "
                               f"{FORMAT_NAME!r} or {RAW_KEY_FORMAT!r}, got {fmt!r}")
    if args.json:
        print(json_text(d, indent=2))
    else:
        printer(d)
    return 0
