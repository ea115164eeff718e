"""The HIL history: one JSON object per run, one run per line (JSON lines).

JSON lines rather than SQLite: a night adds one line and never changes an earlier one, the
file is read whole (a few hundred runs), and a lab engineer reads it with ``grep``/``jq`` or
diffs it without a tool; there is no query, join or concurrent writer that a database would
serve. The file is rewritten through :mod:`qkd_hw.atomic` so that a run interrupted while
writing leaves the previous history intact, never half a line.

A run::

    {"utc": "2026-12-07T02:00:00Z", "lab": "...", "config": "lab.toml", "read_only": false,
     "quantities": {"detector.temperature_c": {"value": 31.5, "unit": "degC",
                    "threshold": {"min": .., "max": .., "baseline": .., "tolerance": ..},
                    "problems": []}},
     "tests": {"tests/hil/test_x.py::test_y": "passed"}, "safe_state": {"laser_lo": "ok"}}
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qkd_hw.atomic import atomic_write
from qkd_hw.errors import QkdHwError

__all__ = ["HistoryError", "append_run", "previous_values", "read_history"]


class HistoryError(QkdHwError):
    """A history file that cannot be read or written (names the file and line)."""


def read_history(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every run of the history file, oldest first (an absent file is an empty history).

    Raises
    ------
    HistoryError
        A line that is not a JSON object with ``utc`` and ``quantities``, naming file and line.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise HistoryError(f"{p}: cannot read the HIL history: {exc}") from exc
    runs = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            run = json.loads(line)
        except json.JSONDecodeError as exc:
            raise HistoryError(f"{p}:{n}: not a JSON line: {exc.msg}") from None
        if not (isinstance(run, dict) and isinstance(run.get("utc"), str)
                and isinstance(run.get("quantities"), dict)):
            raise HistoryError(f"{p}:{n}: not a HIL run (needs 'utc' and 'quantities')")
        runs.append(run)
    return runs


def append_run(path: str | os.PathLike[str], run: Mapping[str, Any]) -> Path:
    """Add ``run`` as the last line of the history (the file is replaced atomically)."""
    p = Path(path)
    old = p.read_text(encoding="utf-8") if p.exists() else ""
    if old and not old.endswith("\n"):
        old += "\n"
    line = json.dumps(run, sort_keys=True, allow_nan=False)
    try:
        with atomic_write(p) as tmp:
            tmp.write_text(old + line + "\n", encoding="utf-8")
    except OSError as exc:
        raise HistoryError(f"{p}: cannot write the HIL history: {exc}") from exc
    return p


def previous_values(runs: list[dict[str, Any]], key: str,
                    nights: int) -> list[tuple[str, float]]:
    """``(utc, value)`` of ``key`` in the last ``nights`` runs that measured it, oldest first."""
    out = []
    for run in runs:
        q = run["quantities"].get(key)
        if isinstance(q, dict) and isinstance(q.get("value"), int | float):
            out.append((run["utc"], float(q["value"])))
    return out[-nights:]
