"""Run the bench child (:mod:`qkd_hw.bench.child`) over recordings; add truth errors; totals.

Each recording is measured in its own fresh interpreter so that its peak RSS and its JIT
compile time are its own (one recording's peak cannot hide the next's, and the first call of
every child pays the kernel load).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from qkd_hw.bench.truth_errors import truth_errors
from qkd_hw.errors import BenchError, QkdHwError
from qkd_hw.trace_io import read_truth
from qkd_hw.vector_width import caller_environ

__all__ = ["find_recordings", "measure_recording", "run_suite", "total_record"]

DEFAULT_CHUNK = 1 << 22


def find_recordings(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The recordings named: files as given, folders searched (recursively) for ``*.h5``.

    Raises
    ------
    BenchError
        A path that does not exist, or no recording at all.
    """
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found.extend(sorted(q for q in p.rglob("*.h5") if q.is_file()))
        elif p.is_file():
            found.append(p)
        else:
            raise BenchError(f"{p}: no such file or folder")
    if not found:
        raise BenchError("no recording (*.h5) in " + ", ".join(map(str, paths)))
    seen: set[Path] = set()
    return [p for p in found if not (p.resolve() in seen or seen.add(p.resolve()))]


def measure_recording(path: Path, *, repeat: int = 1, seed: int = 1, pe_fraction: float = 0.5,
                      chunk_samples: int = DEFAULT_CHUNK, reference: bool = False,
                      reference_samples: int | None = None,
                      env: dict[str, str] | None = None, tree: Path | None = None,
                      warmup: Path | None = None) -> dict[str, Any]:
    """One bench record of ``path`` (``error`` set instead when the receiver refuses it).

    ``tree``: measure the receiver of another source tree (e.g. an old commit unpacked by
    ``git archive``): the child runs from this package's file with ``PYTHONPATH`` = ``tree``,
    so the tree needs no bench code of its own, only ``qkd_hw.receiver.process_recording``
    and ``qkd_hw.trace_io.TraceReader``. ``warmup``: a small recording for the child's first
    (JIT) call instead of ``path`` itself.
    """
    spec = {"path": str(path), "repeat": int(repeat), "seed": int(seed),
            "pe_fraction": float(pe_fraction), "chunk_samples": int(chunk_samples),
            "reference": bool(reference), "reference_samples": reference_samples,
            "warmup": None if warmup is None else str(warmup)}
    child = ["-m", "qkd_hw.bench.child"]
    full_env = {**os.environ, **(env or {})}
    if tree is not None:
        child = [str(Path(__file__).with_name("child.py"))]
        # not this tree's vector width: the other tree's child applies its own
        full_env = {**caller_environ(), **(env or {}), "PYTHONPATH": str(tree)}
    proc = subprocess.run([sys.executable, *child, json.dumps(spec)],
                          capture_output=True, text=True, env=full_env, check=False)
    rec: dict[str, Any] = {"file": str(path), "file_bytes": path.stat().st_size}
    try:
        out = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        tail = proc.stderr.strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        return {**rec, "error": f"bench child failed: {tail[0]}"}
    rec.update(out)
    if "error" not in out:
        try:
            truth = read_truth(path)
        except QkdHwError as exc:
            truth, rec["truth_error"] = None, str(exc)
        if truth is not None:
            rec["truth"] = truth_errors(out["estimates"], truth)
    return rec


def total_record(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``"total": true`` record over the recordings measured without error."""
    ok = [r for r in records if "error" not in r]
    n = sum(r["samples"] for r in ok)
    s = sum(r["seconds"] for r in ok)
    tot: dict[str, Any] = {
        "total": True, "recordings": len(records), "failed": len(records) - len(ok),
        "samples": n, "seconds": s, "samples_per_second": n / s if s > 0 else None,
        "peak_memory_bytes": max((r["peak_memory_bytes"] for r in ok), default=None),
        "compile_seconds": max((r["compile_seconds"] for r in ok), default=None),
    }
    copy_s = sum(r["samples"] / r["copy_samples_per_second"] for r in ok)
    tot["copy_samples_per_second"] = n / copy_s if copy_s > 0 else None
    ref = [r for r in ok if "reference_seconds" in r]
    if ref:
        rn, rs = (sum(r["reference_samples"] for r in ref),
                  sum(r["reference_seconds"] for r in ref))
        sn, ss = sum(r["samples"] for r in ref), sum(r["seconds"] for r in ref)
        tot["reference_speedup"] = (sn / ss) / (rn / rs)
    return tot


def run_suite(paths: list[Path], *, progress: Callable[[dict[str, Any]], None] | None = None,
              **kw: Any) -> list[dict[str, Any]]:
    """:func:`measure_recording` of every path (``progress`` called after each)."""
    out = []
    for p in paths:
        out.append(measure_recording(p, **kw))
        if progress is not None:
            progress(out[-1])
    return out
