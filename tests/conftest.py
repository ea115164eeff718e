"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """``../shared`` beside the checkout (QKD_HW_SHARED overrides it)."""
    return Path(os.environ.get("QKD_HW_SHARED", REPO.parent / "shared"))


SHARED_TRACES = {
    name: shared_dir() / "traces" / f"{name}.h5" for name in ("pristine", "basic", "metro")
}


@pytest.fixture(scope="session")
def shared_traces() -> dict[str, Path]:
    missing = [str(p) for p in SHARED_TRACES.values() if not p.is_file()]
    if missing:
        pytest.fail(f"shared sample recordings missing: {missing} (set QKD_HW_SHARED)")
    return dict(SHARED_TRACES)
