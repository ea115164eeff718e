"""`qkd-hw postprocess RAW.h5 --out KEY.h5`: reconciliation, verification, privacy amplification.

Runs Alice and Bob (separate objects talking over a recorded classical channel) on a raw-key
file that holds both parties' symbols. Writes KEY.h5 (mode 0600: each party's final key and
every parameter that bounds its secrecy) and the public transcript (default
KEY.transcript.h5). Prints beta, the frame error rate, frame counts, the final key length,
whether the keys are identical, the speed and the adapted code (mother_rate, code_length,
shortened, punctured; code_rate is the effective rate (K - s)/(N - s - p)); never a key
bit. Bad input: one error line, exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dsp.vocabulary import DEFAULT_EPS_BAR, DEFAULT_EPS_PA, DETECTIONS, HETERODYNE
from qkd_hw.cli.jsonout import json_text
from qkd_hw.errors import QkdHwError

#: keys of the summary, in print order
SUMMARY_KEYS = ("beta", "frame_error_rate", "frames", "frames_kept", "final_key_bits",
                "keys_identical", "decoded_bits_per_second", "seconds")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("postprocess", help="reconcile, verify and privacy-amplify a raw key",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("raw", metavar="RAW.h5", help="raw key (qkd-raw-key v1 with /alice/symbols)")
    p.add_argument("--alice-from", metavar="TRACE.h5", default=None,
                   help="Alice's symbols from this recording's /tx/symbols at the raw key's "
                        "/bob/tx_index, for a raw key without /alice/symbols (one host "
                        "holding both parties' data; `qkd-hw process --out` writes them)")
    p.add_argument("--out", metavar="KEY.h5", required=True, help="final keys (mode 0600)")
    p.add_argument("--transcript", metavar="PATH",
                   help="public transcript (default: KEY.transcript.h5 beside --out)")
    p.add_argument("--rate", type=float, default=None, metavar="R",
                   help="mother code rate (0.1, 0.05, 0.02; default: chosen for the "
                        "estimated SNR); used as it is unless --beta is given")
    p.add_argument("--beta", type=float, default=None, metavar="B",
                   help="target efficiency in (0, 1]: the code is shortened/punctured to "
                        "rate B * 1/2 log2(1 + SNR) (default: the mother code's measured "
                        "operating point, reconcile.DESIGN_BETA)")
    p.add_argument("--tag-bits", type=int, choices=(64, 128), default=64,
                   help="verification tag length (default 64)")
    p.add_argument("--detection", choices=DETECTIONS, default=HETERODYNE,
                   help="detection of the raw key (default heterodyne: both quadratures)")
    p.add_argument("--eps-pa", type=float, default=DEFAULT_EPS_PA, help="PA failure probability")
    p.add_argument("--eps-bar", type=float, default=DEFAULT_EPS_BAR, help="smoothing parameter")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=_run)


def transcript_path(out: str | Path) -> Path:
    """``KEY.h5`` -> ``KEY.transcript.h5`` (same directory)."""
    o = Path(out)
    return o.with_name(f"{o.stem}.transcript{o.suffix or '.h5'}")


@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[tuple[Any, Any]]:
    """(on_frames(n), tick(k)) callbacks driving a tqdm bar over frames on a terminal."""
    bar: list[Any] = []

    def start(n: int) -> None:
        if enabled:
            from tqdm import tqdm
            bar.append(tqdm(total=n, unit="frame", desc="postprocess", file=sys.stderr))

    def tick(k: int) -> None:
        if bar:
            bar[0].update(k)

    try:
        yield start, tick
    finally:
        if bar:
            bar[0].close()


def _check_args(args: argparse.Namespace, tr: Path) -> None:
    if args.rate is not None and not 0 < args.rate < 1:
        raise QkdHwError(f"--rate must be in (0, 1), got {args.rate}")
    if args.beta is not None and not 0 < args.beta <= 1:
        raise QkdHwError(f"--beta must be in (0, 1], got {args.beta}")
    for name in ("eps_pa", "eps_bar"):
        v = getattr(args, name)
        if not 0 < v < 1:
            raise QkdHwError(f"--{name.replace('_', '-')} must be in (0, 1), got {v}")
    for opt, path in (("--out", Path(args.out)), ("--transcript", tr)):
        # checked before the run: a key that cannot be written would cost the whole run
        if not path.parent.is_dir():
            raise QkdHwError(f"{opt} {path}: directory {path.parent} does not exist")
    paths = {"RAW.h5": Path(args.raw), "--out": Path(args.out), "--transcript": tr}
    resolved = {k: p.resolve() for k, p in paths.items()}
    if len(set(resolved.values())) < 3:
        raise QkdHwError("RAW.h5, --out and --transcript must be three different files "
                         f"(got {', '.join(f'{k} {p}' for k, p in paths.items())})")


def _run(args: argparse.Namespace) -> int:
    from qkd_hw.postprocessing.parties import CODE_FIELDS, postprocess_raw_key

    tr = Path(args.transcript) if args.transcript else transcript_path(args.out)
    _check_args(args, tr)
    try:
        with _progress(sys.stderr.isatty() and not args.json) as (start, tick):
            res = postprocess_raw_key(args.raw, args.out, str(tr), rate=args.rate,
                                      target_beta=args.beta,
                                      detection=args.detection, tag_bits=args.tag_bits,
                                      eps_pa=args.eps_pa, eps_bar=args.eps_bar,
                                      progress=tick, on_frames=start,
                                      alice_trace=args.alice_from)
    except ValueError as exc:  # a parameter the reconciliation refuses
        raise QkdHwError(f"{args.raw}: {exc}") from exc
    summary = {k: getattr(res, k) for k in SUMMARY_KEYS}
    summary.update(key_file=res.key_path, transcript=res.transcript_path,
                   eps_total=res.parameters["eps_total"])
    # the adapted code: mother rate, shortened/punctured counts, effective rate
    summary.update({k: res.parameters[k] for k in ("code_rate", *CODE_FIELDS)
                    if k in res.parameters})
    if args.json:
        print(json_text(summary))
    else:
        for k, v in summary.items():
            print(f"{k:24s} {v:.6g}" if isinstance(v, float) else f"{k:24s} {v}")
    return 0
