"""Archive mode: the receiver over every recording of a folder on Dask distributed.

One task per recording (:func:`process_one`, run on a worker process), results gathered as they
complete into one summary file, CSV or HDF5 by its extension (:data:`COLUMNS`, one row per
recording). A recording the receiver refuses (corrupted, truncated, no lock) is a row with
``status = "error"`` and its one-line error; the others are kept. The summary is rewritten
atomically after every completed task, so an interrupted run keeps what was done, and a
re-run skips the recordings that have an ``ok`` row (failed ones are tried again).

Dask is an optional dependency (``pip install -e ".[archive]"``). The local cluster
(``scheduler`` None or ``"local"``) listens on the loopback interface only and has no
dashboard; with an address, the existing scheduler's workers must have qkd-hw installed.
Workers read the recordings (``map_file=False``): a mapped page of a file truncated on the
archive's file system would kill the worker with SIGBUS, a read fails with an error row.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dsp.vocabulary import DEFAULT_BETA, DEFAULT_EPS_PE
from qkd_hw.atomic import atomic_write
from qkd_hw.errors import BenchError

__all__ = ["COLUMNS", "ArchiveJob", "connect", "install_hint", "process_one", "read_summary",
           "run_archive", "write_summary"]

#: summary columns: identity and outcome, then the estimates (``ReceiverResult.summary`` keys)
ID_COLUMNS = ("file", "status", "error", "pe_seed", "samples", "seconds")
ESTIMATE_COLUMNS = ("transmittance", "transmittance_min", "excess_noise_snu",
                    "excess_noise_max_snu", "electronic_noise_snu", "t_eff", "sigma2", "snr",
                    "n_pe", "key_rate_bits_per_symbol", "frequency_offset_hz",
                    "delay_samples", "clock_offset_ppm")
COLUMNS = ID_COLUMNS + ESTIMATE_COLUMNS
_TEXT = ("file", "status", "error")
_INT = ("pe_seed", "samples", "n_pe")


def install_hint() -> str:
    """The one line shown when Dask is missing."""
    return ("archive mode needs Dask distributed: pip install -e \".[archive]\" "
            "(or pip install \"dask[distributed]\")")


@dataclass
class ArchiveJob:
    """What every task runs with (picklable: it travels to the workers)."""

    pe_fraction: float = 0.5
    seed: int | None = None
    eps_pe: float = DEFAULT_EPS_PE
    beta: float = DEFAULT_BETA
    options: Any = None
    chunk_samples: int = 1 << 22


def process_one(path: str, job: ArchiveJob) -> dict[str, Any]:
    """Summary row of one recording (runs on a worker; never raises for a bad recording)."""
    from qkd_hw.errors import QkdHwError
    from qkd_hw.receiver import process_recording

    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update(file=str(path), status="ok", error="")
    try:
        res = process_recording(path, options=job.options, pe_fraction=job.pe_fraction,
                                seed=job.seed, eps_pe=job.eps_pe, beta=job.beta,
                                chunk_samples=job.chunk_samples, map_file=False)
    except (QkdHwError, OSError, ValueError) as exc:
        return {**row, "status": "error", "error": f"{type(exc).__name__}: {exc}"}
    s = res.summary()
    row.update({k: s.get(k) for k in ESTIMATE_COLUMNS})
    row.update(pe_seed=s["pe_seed"], samples=res.samples, seconds=res.seconds)
    return row


def find_archive(directory: str | os.PathLike[str]) -> list[Path]:
    """The ``*.h5`` files under ``directory`` (recursively, sorted, resolved)."""
    d = Path(directory)
    if not d.is_dir():
        raise BenchError(f"--archive {d}: not a folder")
    return sorted(p.resolve() for p in d.rglob("*.h5") if p.is_file())


def _kind(path: Path) -> str:
    ext = path.suffix.lower()
    if ext == ".csv":
        return "csv"
    if ext in (".h5", ".hdf5"):
        return "h5"
    raise BenchError(f"--summary {path}: extension must be .csv, .h5 or .hdf5")


def _typed(k: str, v: Any) -> Any:
    if k in _TEXT:
        return "" if v is None else str(v)
    if v is None or v == "":
        return None
    try:
        if k in _INT:   # int() of the text: seeds up to 2^63 do not survive a float
            x = int(v)
            return None if x == -1 else x   # -1: none, in HDF5
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def read_summary(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Rows of an existing summary (none if the file does not exist).

    Raises
    ------
    BenchError
        The file exists but is not a summary this module wrote (names the file).
    """
    p = Path(path)
    kind = _kind(p)
    if not p.exists():
        return []
    try:
        if kind == "csv":
            with open(p, newline="") as f:
                rows = list(csv.DictReader(f))
            if rows and "file" not in rows[0]:
                raise BenchError(f"--summary {p}: no 'file' column: not an archive summary")
        else:
            import h5py

            with h5py.File(p, "r") as f:
                g = f.get("summary")
                if not isinstance(g, h5py.Group) or "file" not in g:
                    raise BenchError(f"--summary {p}: no /summary/file: not an archive summary")
                cols = {k: g[k][()] for k in COLUMNS if k in g}
            n = len(cols["file"])
            rows = [{k: (v[i].decode() if isinstance(v[i], bytes) else v[i])
                     for k, v in cols.items()} for i in range(n)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise BenchError(f"--summary {p}: cannot read it ({exc})") from exc
    return [{k: _typed(k, r.get(k)) for k in COLUMNS} for r in rows]


def write_summary(path: str | os.PathLike[str], rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` to ``path`` (CSV or HDF5 by extension), atomically."""
    p = Path(path)
    kind = _kind(p)
    try:
        with atomic_write(p) as tmp:
            if kind == "csv":
                buf = io.StringIO()
                w = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
                w.writeheader()
                for r in rows:
                    w.writerow({k: "" if r.get(k) is None else r.get(k) for k in COLUMNS})
                tmp.write_text(buf.getvalue())
            else:
                _write_h5(tmp, rows)
    except OSError as exc:
        raise BenchError(f"--summary {p}: cannot write it ({exc.strerror or exc})") from exc


def _write_h5(tmp: Path, rows: list[dict[str, Any]]) -> None:
    import h5py

    with h5py.File(tmp, "w") as f:
        g = f.create_group("summary")
        g.attrs["columns"] = ",".join(COLUMNS)
        for k in COLUMNS:
            vals = [r.get(k) for r in rows]
            if k in _TEXT:
                g.create_dataset(k, data=np.array(["" if v is None else str(v) for v in vals],
                                                  dtype=h5py.string_dtype()))
            elif k in _INT:   # -1: none (a failed recording)
                g.create_dataset(k, data=np.array([-1 if v is None else int(v) for v in vals],
                                                  dtype=np.int64))
            else:
                g.create_dataset(k, data=np.array([np.nan if v is None else float(v)
                                                   for v in vals], dtype=np.float64))


def connect(scheduler: str | None, workers: int) -> tuple[Any, Any]:
    """A Dask client on a new local cluster (``scheduler`` None or ``"local"``; ``workers``
    processes, loopback only) or on the scheduler at that address; (client, cluster or None).

    Raises
    ------
    BenchError
        Dask is not installed (the install line), or the scheduler cannot be reached.
    """
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as exc:
        raise BenchError(install_hint()) from exc
    if logging.getLogger().getEffectiveLevel() > logging.INFO:   # -v shows Dask's log
        logging.getLogger("distributed").setLevel(logging.ERROR)
    if scheduler in (None, "", "local"):
        # loopback only: the scheduler, nannies and workers are reachable from this host alone
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address=None,
                               silence_logs=logging.getLogger("distributed").level)
        return Client(cluster), cluster
    try:
        return Client(scheduler, timeout="20s"), None
    except OSError as exc:
        raise BenchError(f"--scheduler {scheduler}: cannot connect ({exc})") from exc


def run_archive(directory: str | os.PathLike[str], summary: str | os.PathLike[str], *,
                job: ArchiveJob, scheduler: str | None = None, workers: int = 2,
                on_row: Callable[[dict[str, Any]], None] | None = None
                ) -> list[dict[str, Any]]:
    """Process every recording of ``directory`` not yet ``ok`` in ``summary``; returns all
    rows of the summary as written (``on_row`` called with each new row)."""
    if workers < 1:
        raise BenchError(f"--workers must be >= 1, got {workers}")
    # the summary itself may be an .h5 inside the archive: it is not a recording
    files = [f for f in find_archive(directory) if f != Path(summary).resolve()]
    old = read_summary(summary)
    if not Path(summary).parent.is_dir():   # before any work: it is written after each task
        raise BenchError(f"--summary {summary}: folder {Path(summary).parent} does not exist")
    done = {r["file"] for r in old if r["status"] == "ok"}
    todo = [str(p) for p in files if str(p) not in done]
    rows = {r["file"]: r for r in old}
    if not todo:
        return list(rows.values())
    client, cluster = connect(scheduler, workers)
    try:
        from dask.distributed import as_completed

        futures = client.map(process_one, todo, job=job, pure=False)
        path_of = {f.key: p for f, p in zip(futures, todo, strict=True)}
        for fut in as_completed(futures):
            try:
                row = fut.result()
            except Exception as exc:   # the task itself died (worker killed, unpicklable)
                row = {**dict.fromkeys(COLUMNS), "file": path_of[fut.key], "status": "error",
                       "error": f"{type(exc).__name__}: {exc}"}
            rows[row["file"]] = row
            write_summary(summary, sorted(rows.values(), key=lambda r: r["file"]))
            if on_row is not None:
                on_row(row)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return sorted(rows.values(), key=lambda r: r["file"])
