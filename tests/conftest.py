"""Fixtures shared by the whole suite."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# The suite's own kernels compile with numba's default vector width (the HIL plugin imports
# numba before this file runs), so the qkd-hw children the tests start use it too: one set of
# cached kernels instead of two cold compilations per CI run. The 512-bit default itself is
# tested in tests/qkd_hw/test_vector_width.py (its children get a clean environment).
os.environ.setdefault("QKD_HW_VECTOR_WIDTH", "256")

# A runner started in the background of a non-interactive shell (`cmd &`, nohup) inherits
# SIGINT ignored, and Python then keeps it ignored: the Ctrl-C tests (and the children they
# interrupt) need Python's own handler, as in a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


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


@pytest.fixture(scope="session")
def simulated(tmp_path_factory):
    """Factory of simulated recordings shared by the whole session, one per parameter set.

    ``simulated(params, seed=..., n_symbols=..., **kw)`` returns the path of the recording
    ``simulate_recording`` writes for those arguments, simulating it on first use only (the
    simulator is deterministic in them). Tests must not modify it (copy it first): the file is
    read-only, and since root ignores that, a reuse also checks it is unchanged.
    """
    from qkd_hw.sim import simulate_recording

    root = tmp_path_factory.mktemp("sim")
    cache: dict[str, tuple[Path, tuple[int, int]]] = {}

    def get(params, *, seed: int, n_symbols: int, **kw) -> Path:
        key = json.dumps([params.to_json(), seed, n_symbols, kw], sort_keys=True)
        if key not in cache:
            path = root / f"rec{len(cache)}.h5"
            simulate_recording(path, params, seed=seed, n_symbols=n_symbols, **kw)
            path.chmod(0o444)
            st = path.stat()
            cache[key] = path, (st.st_size, st.st_mtime_ns)
        path, sig = cache[key]
        st = path.stat()
        if (st.st_size, st.st_mtime_ns) != sig:
            pytest.fail(f"shared simulated recording {path} was modified by a test")
        return path

    return get
