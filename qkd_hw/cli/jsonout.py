"""The ``--json`` output of every subcommand: one valid JSON object.

JSON has no NaN or infinity (``json.dumps`` would write the non-standard ``NaN``/``Infinity``
that strict parsers refuse): non-finite numbers become ``null``; the text output shows them.
numpy scalars and arrays become numbers and lists, paths strings.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = ["json_safe", "json_text"]


def json_safe(v: Any) -> Any:
    """``v`` with every non-finite float replaced by None, recursively (JSON-ready)."""
    if hasattr(v, "tolist") and not isinstance(v, str | bytes):   # numpy scalar or array
        v = v.tolist()
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): json_safe(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [json_safe(x) for x in v]
    if isinstance(v, Path):
        return str(v)
    return v


def json_text(v: Any, *, indent: int | None = None) -> str:
    """One strict JSON document (``allow_nan=False``: a missed NaN is a bug, not output)."""
    return json.dumps(json_safe(v), indent=indent, allow_nan=False)
