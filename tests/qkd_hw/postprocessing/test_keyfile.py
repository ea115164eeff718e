"""KEY.h5: mode 0600 whatever the umask, written atomically, bits round-trip."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from qkd_hw.errors import TraceFormatError
from qkd_hw.postprocessing.keyfile import read_alice_symbols, read_key_file, write_key_file
from tests.qkd_hw.postprocessing.helpers import make_raw_key


def test_key_file_is_0600_and_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    key = rng.integers(0, 2, 1001, dtype=np.uint8)   # not a multiple of 8
    old = os.umask(0)
    try:
        write_key_file(tmp_path / "KEY.h5", key, key, {"final_key_bits": 1001, "eps_pa": 1e-10,
                                                       "detection": "heterodyne"})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "KEY.h5").stat().st_mode) == 0o600
    got = read_key_file(tmp_path / "KEY.h5")
    assert np.array_equal(got["alice"], key) and np.array_equal(got["bob"], key)
    assert got["parameters"]["final_key_bits"] == 1001
    assert got["parameters"]["eps_pa"] == 1e-10


def test_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "KEY.h5"
    write_key_file(target, np.ones(8, np.uint8), np.ones(8, np.uint8), {"final_key_bits": 8})
    before = target.read_bytes()
    with pytest.raises(TypeError):
        write_key_file(target, np.zeros(16, np.uint8), np.zeros(16, np.uint8),
                       {"final_key_bits": 16, "bad": object()})
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["KEY.h5"]


def test_alice_symbols_are_read_and_checked(tmp_path: Path) -> None:
    raw = make_raw_key(tmp_path / "raw.h5", 50)
    sym = read_alice_symbols(raw, 50)
    assert sym.dtype == np.complex64 and sym.shape == (50,)
    with pytest.raises(TraceFormatError, match="length 50 differs"):
        read_alice_symbols(raw, 49)
    no_alice = make_raw_key(tmp_path / "bob_only.h5", 50, alice=False)
    with pytest.raises(TraceFormatError, match="/alice"):
        read_alice_symbols(no_alice, 50)
