"""History of bench runs (JSON lines) and regression flags against it.

Store: one JSON object per line, one line per ``qkd-hw bench`` run (project version, machine
description, options, the per-recording records and the total). JSON lines because a run is
one self-contained document that is only ever appended and read back whole: readable and
diffable as text, no schema to migrate when a record gains a field, and a damaged line costs
that run only (it is skipped with a warning). Appends are atomic: the file is rewritten with
the new line under a temporary name and renamed over it (:mod:`qkd_hw.atomic`), under an
exclusive lock on ``FILE.lock`` so two concurrent runs do not lose each other's line.

Regressions (per recording, against the stored runs of the same file (path and size) on the
same CPU model, CPU count and numba thread count, with the same seed, PE fraction and chunk;
``K_NOISE`` = 3 standard deviations, one-sided):

* speed: the CPU seconds (all threads) of the fastest warm call, in log, against the median
  of the stored runs'. CPU time, not wall time: on the shared machine the wall time of one run
  moved 3x against the next with the load while the CPU time moved by the repeat noise (the
  wall-clock rates are reported, not judged). The noise is :func:`speed_noise`: the
  repeat-to-repeat spread pooled over the stored runs and this one, plus the run-to-run
  spread of the stored runs when there are two or more, as its 95 % upper confidence bound;
  at least two calls overall beyond one per run are needed to judge;
* memory: peak RSS against the stored median, the noise being the spread of the stored per-call
  peaks likewise, never below :data:`MEMORY_RESOLUTION_BYTES`;
* estimates (same seed, same data: a receiver unchanged gives the same numbers): a move of more
  than :data:`ESTIMATE_FRACTION` of the estimate's standard deviation
  (:func:`qkd_hw.bench.truth_errors.estimate_std`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import platform
import socket
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from qkd_hw import __version__
from qkd_hw.atomic import atomic_write
from qkd_hw.bench.truth_errors import COMPARED, estimate_std
from qkd_hw.errors import BenchError
from qkd_hw.plotting import save_png
from qkd_hw.vector_width import vector_width

__all__ = ["append_run", "find_regressions", "load_history", "machine", "make_run",
           "plot_history"]

K_NOISE = 3.0
ESTIMATE_FRACTION = 0.1
#: peak RSS resolution: Linux accounts RSS per thread in batches of up to 64 pages, and the
#: allocator's arenas move by a few MB between identical calls
MEMORY_RESOLUTION_BYTES = 4 << 20
#: record fields that must agree for two runs to be compared
COMPARABLE_OPTIONS = ("seed", "pe_fraction", "chunk_samples")


def machine() -> dict[str, Any]:
    """What must agree for two runs' speeds to be comparable."""
    import numba

    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"host": socket.gethostname(), "cpu_model": cpu, "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "numpy": np.__version__,
            "numba": numba.__version__, "numba_threads": numba.config.NUMBA_NUM_THREADS,
            # inherited by the bench children from qkd-hw's entry point (not a comparability
            # key: a run at the other width is compared, and a slower one is flagged)
            "vector_width": vector_width()}


def make_run(records: list[dict[str, Any]], total: dict[str, Any],
             options: dict[str, Any]) -> dict[str, Any]:
    """The history entry of one run."""
    return {"version": __version__, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": machine(), "options": dict(options),
            "load_average_1min": os.getloadavg()[0], "records": records, "total": total}


def load_history(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Runs stored in ``path`` (none if it does not exist; a damaged line is skipped).

    Raises
    ------
    BenchError
        ``path`` is not a readable regular file.
    """
    p = Path(path)
    if not p.exists():
        return []
    if not p.is_file():
        raise BenchError(f"history {p}: not a regular file")
    runs = []
    try:
        lines = p.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchError(f"history {p}: cannot read it ({exc})") from exc
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            run = json.loads(line)
        except json.JSONDecodeError:
            run = None
        if not isinstance(run, dict) or not isinstance(run.get("records"), list):
            warnings.warn(f"history {p}, line {i}: not a bench run, skipped", stacklevel=2)
            continue
        runs.append(run)
    return runs


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(f"{path}.lock", "a") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lk, fcntl.LOCK_UN)


def append_run(path: str | os.PathLike[str], run: dict[str, Any]) -> None:
    """Append ``run`` as one line to the history ``path``, atomically (see module docstring)."""
    p = Path(path)
    line = json.dumps(run, default=float, allow_nan=True) + "\n"
    try:
        with _locked(p):
            old = p.read_bytes() if p.exists() else b""
            if old and not old.endswith(b"\n"):
                old += b"\n"
            with atomic_write(p) as tmp:
                tmp.write_bytes(old + line.encode())
    except OSError as exc:
        raise BenchError(f"history {p}: cannot append ({exc.strerror or exc})") from exc


def _key(rec: dict[str, Any]) -> tuple[str, int]:
    return (str(Path(rec["file"]).resolve()), int(rec.get("file_bytes", -1)))


def _comparable(run: dict[str, Any], current: dict[str, Any]) -> bool:
    m, c = run.get("machine", {}), current["machine"]
    # not the host name: CI runners of one type are the same machine under new names
    same_machine = all(m.get(k) == c.get(k) for k in ("cpu_model", "cpu_count",
                                                       "numba_threads"))
    o, co = run.get("options", {}), current["options"]
    return same_machine and all(o.get(k) == co.get(k) for k in COMPARABLE_OPTIONS)


def _std(values: list[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) >= 2 else math.nan


def _times(rec: dict[str, Any]) -> list[float]:
    """Log CPU seconds of the warm calls (wall seconds for a record without them)."""
    vals = rec.get("cpu_seconds_all") or rec.get("seconds_all") or [rec["seconds"]]
    return [math.log(max(float(v), 1e-9)) for v in vals]


def speed_noise(runs: list[list[float]]) -> tuple[float, int]:
    """Noise of a run's fastest log time: sd and degrees of freedom.

    ``runs``: log times of the calls of each run (stored ones and the current one; the last
    is the current run). The within-run variance is pooled over all runs about each run's
    own mean; with two or more stored runs the variance of their fastest calls (run to run)
    is added. Returned as the 95 % upper confidence bound of the sd (chi-squared), so that a
    few calls that happen to agree do not make a tiny threshold.
    """
    dev = [x - float(np.mean(r)) for r in runs for x in r]
    dof = sum(len(r) - 1 for r in runs)
    var = sum(d * d for d in dev)
    stored_best = [min(r) for r in runs[:-1]]
    if len(stored_best) >= 2:
        var += float(np.var(stored_best)) * len(stored_best)
        dof += len(stored_best) - 1
    if dof < 1:
        return math.nan, 0
    from scipy.stats import chi2

    return math.sqrt(var / float(chi2.ppf(0.05, dof))), dof


def _speed_flag(rec: dict[str, Any], old: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not old:
        return None
    noise, dof = speed_noise([_times(r) for r in old] + [_times(rec)])
    if not dof:
        return None
    base = float(np.median([min(_times(r)) for r in old]))
    d = min(_times(rec)) - base
    return {"what": "speed", "change": math.expm1(-d), "threshold": math.expm1(-K_NOISE * noise),
            "regression": d > K_NOISE * noise,
            "text": f"{math.exp(-d):.3g}x the stored speed (CPU time; noise {noise * 100:.0f} "
                    f"% per call, {dof} dof)"}


def _memory_flag(rec: dict[str, Any], old: list[dict[str, Any]]) -> dict[str, Any] | None:
    peaks = [float(p) for r in old for p in r.get("peak_memory_bytes_all",
                                                 [r["peak_memory_bytes"]])]
    if len(peaks) < 2:
        return None
    noise = max(_std(peaks), MEMORY_RESOLUTION_BYTES)
    base = float(np.median([r["peak_memory_bytes"] for r in old]))
    d = rec["peak_memory_bytes"] - base
    return {"what": "memory", "change": d, "threshold": K_NOISE * noise,
            "regression": d > K_NOISE * noise,
            "text": f"peak {rec['peak_memory_bytes'] / 1e6:.0f} MB vs stored "
                    f"{base / 1e6:.0f} MB (noise {noise / 1e6:.1f} MB)"}


def _estimate_flags(rec: dict[str, Any], old: list[dict[str, Any]]) -> list[dict[str, Any]]:
    sd = estimate_std(rec["estimates"])
    out = []
    for k in COMPARED:
        vals = [r["estimates"].get(k) for r in old]
        vals = [float(v) for v in vals if isinstance(v, int | float)]
        cur = rec["estimates"].get(k)
        if not vals or not isinstance(cur, int | float) or not sd[k] > 0:
            continue
        move = (float(cur) - float(np.median(vals))) / sd[k]
        out.append({"what": k, "change": move, "threshold": ESTIMATE_FRACTION,
                    "regression": abs(move) > ESTIMATE_FRACTION,
                    "text": f"{k} moved by {move:+.3g} sd"})
    return out


def find_regressions(history: list[dict[str, Any]], current: dict[str, Any]
                     ) -> list[dict[str, Any]]:
    """Per recording of ``current``: the comparisons made (``regression`` True where flagged).

    Returns a list of ``{"file", "checks": [...], "stored_runs": n}``; ``checks`` is empty
    when no comparable stored run holds the recording.
    """
    runs = [r for r in history if _comparable(r, current)]
    out = []
    for rec in current["records"]:
        if "error" in rec:
            continue
        old = [o for r in runs for o in r["records"]
               if "error" not in o and "file" in o and _key(o) == _key(rec)]
        checks = [c for c in (_speed_flag(rec, old), _memory_flag(rec, old)) if c]
        checks += _estimate_flags(rec, old) if old else []
        out.append({"file": rec["file"], "stored_runs": len(old), "checks": checks})
    return out


def plot_history(history: list[dict[str, Any]], directory: str | os.PathLike[str]
                 ) -> list[Path]:
    """PNG figures of the history (speed and peak memory of each recording against the run
    number) in ``directory``; returns their paths."""
    from qkd_hw.plotting import pyplot

    plt = pyplot()

    d = Path(directory)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchError(f"--plot {d}: cannot create the folder ({exc.strerror})") from exc
    series: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for i, run in enumerate(history):
        for rec in run.get("records", []):
            if "error" not in rec and "file" in rec:
                series.setdefault(Path(rec["file"]).name, []).append((i, rec))
    figs = {"history_speed.png": ("samples_per_second", 1e-6, "MS/s"),
            "history_memory.png": ("peak_memory_bytes", 1e-6, "peak RSS (MB)")}
    out = []
    for name, (field, scale, label) in figs.items():
        fig, ax = plt.subplots(figsize=(7, 4))
        for file, pts in series.items():
            ax.plot([i for i, _ in pts], [r[field] * scale for _, r in pts], "o-", label=file)
        ax.set_xlabel("run")
        ax.set_ylabel(label)
        ax.legend(fontsize="small")
        out.append(save_png(fig, d / name, dpi=100))
    return out
