"""The parties on the real reconciliation (multidimensional maps and MET-LDPC codes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qkd_hw.postprocessing import reconcile
from qkd_hw.postprocessing.keyfile import read_key_file
from qkd_hw.postprocessing.parties import postprocess_raw_key
from tests.qkd_hw.postprocessing.helpers import make_raw_key


@pytest.mark.slow
def test_multidimensional_ldpc_frames_verified_and_kept(tmp_path: Path) -> None:
    # snr ~0.79 per quadrature: the rate-0.1 code decodes every frame of 4000 values
    raw = make_raw_key(tmp_path / "raw.h5", 20_000, va=5.0, T=0.5, xi=0.01, vel=0.1, eta=0.7)
    res = postprocess_raw_key(str(raw), str(tmp_path / "K.h5"), str(tmp_path / "T.h5"),
                              frame_bits=4000, rate=0.1)
    assert res.frames == 10 and res.frames_kept >= 8
    assert res.keys_identical
    p = res.parameters
    params = reconcile.choose_code(p["snr"], frame_bits=4000, rate=0.1)
    assert p["leak_ec_bits"] == res.frames_kept * reconcile.leakage_bits(params)
    assert res.beta == pytest.approx(params.rate / reconcile.capacity(p["snr"]), rel=1e-9)
    # 10 frames cannot beat the finite-size offset: no key, and none is invented
    assert res.final_key_bits == 0
    assert read_key_file(tmp_path / "K.h5")["bob"].shape == (0,)
    assert np.isfinite(p["chi_be_bits_per_symbol"])
