"""simulate -> process --out -> postprocess: identical keys of the length the formula predicts.

The link is short and clean (T = 1, xi = 0, V_A = 0.6: SNR ~0.3 per quadrature, where the
rate-0.1 mother code, forced by ``--rate 0.1`` and not punctured, decodes every frame: 0 of
600 failed at SNR 0.3, where at SNR 0.2 1 in 400 converged to a wrong word of its error
floor, benchmarks/reconciliation.md item 2b) and the block small (2e5 symbols, half
disclosed for PE), so the finite-size offset of a 1e5-symbol key leaves room for a key only
at loose failure probabilities: eps_pe = eps_bar = eps_pa = EPS below, passed through the
CLI options that expose them. A test of the pipeline, not a secure setting.
"""

from __future__ import annotations

import json
import math
import stat
from pathlib import Path

import numpy as np
import pytest

from qkd_hw.cli.main import main
from qkd_hw.keyrate import finite_size_delta, holevo_bound
from qkd_hw.postprocessing import reconcile
from qkd_hw.postprocessing.keyfile import read_alice_symbols, read_key_file
from qkd_hw.raw_key import read_raw_key
from qkd_hw.trace_io import TraceReader

EPS = "0.01"
LINK = {"transmittance": 1.0, "excess_noise_snu": 0.0, "electronic_noise_snu": 0.01,
        "efficiency": 1.0, "modulation_variance_snu": 0.6,
        # 5 samples per symbol, the pilot above the quantum band: a short recording
        "symbol_rate_hz": 200e6, "pilot_frequencies_hz": 400e6,
        "shot_noise_samples": 200_000, "electronic_noise_samples": 200_000}


def _predicted_key_bits(raw_path: Path, frames_kept: int) -> int:
    """Leverrier et al. 2010 with this raw key's PE bounds, from first principles."""
    raw = read_raw_key(raw_path)
    est = raw.estimates
    params = reconcile.choose_code(float(est["snr"]), rate=0.1)
    reconciled = frames_kept * params.frame_bits          # 1 key bit per real value
    leak_ec = frames_kept * reconcile.leakage_bits(params)
    leak_ver = frames_kept * 64
    n = reconciled // 2                                    # heterodyne: 2 values per symbol
    # physical range, conservatively (conventions: T <= 1 keeping T xi, xi >= 0)
    t_min, xi_max = float(est["transmittance_min"]), float(est["excess_noise_max_snu"])
    if t_min > 1.0:
        t_min, xi_max = 1.0, t_min * xi_max if xi_max > 0 else xi_max
    chi, _ = holevo_bound(float(est["modulation_variance_snu"]), t_min, max(xi_max, 0.0),
                          float(est["efficiency"]), float(est["electronic_noise_snu"]),
                          "heterodyne")
    delta = finite_size_delta(n, eps_bar=float(EPS), eps_pa=float(EPS))
    return math.floor(reconciled - leak_ec - leak_ver - n * (float(chi) + delta))


@pytest.mark.slow
def test_simulate_process_postprocess_gives_identical_keys_of_the_predicted_length(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rec, raw, key = tmp_path / "rec.h5", tmp_path / "raw.h5", tmp_path / "key.h5"
    sets = [a for k, v in LINK.items() for a in ("--set", f"{k}={v}")]
    assert main(["simulate", str(rec), "--symbols", "200000", "--seed", "3", "--no-progress",
                 *sets]) == 0
    assert main(["process", str(rec), "--out", str(raw), "--seed", "1", "--eps-pe", EPS]) == 0
    capsys.readouterr()
    # the raw key holds Alice's symbols of its key positions: no --alice-from needed
    assert stat.S_IMODE(raw.stat().st_mode) == 0o600
    with TraceReader(rec) as reader:
        tx = reader.symbols()
    bob_index = read_raw_key(raw).bob_tx_index
    np.testing.assert_array_equal(read_alice_symbols(raw, bob_index.shape[0]), tx[bob_index])
    assert main(["postprocess", str(raw), "--out", str(key),
                 "--eps-pa", EPS, "--eps-bar", EPS, "--rate", "0.1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["frames"] == out["frames_kept"] == 2 and out["keys_identical"] is True
    predicted = _predicted_key_bits(raw, out["frames_kept"])
    assert out["final_key_bits"] == predicted > 0
    keys = read_key_file(key)
    assert keys["alice"].shape == keys["bob"].shape == (predicted,)
    assert np.array_equal(keys["alice"], keys["bob"])
    assert keys["parameters"]["eps_total"] == pytest.approx(
        2 * float(EPS) + float(EPS) + float(EPS) + 2 * 2.0**-64)


def test_raw_key_without_alice_is_one_error_naming_alice_from(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.qkd_hw.postprocessing.helpers import make_raw_key

    raw = make_raw_key(tmp_path / "raw.h5", 2000, alice=False)
    code = main(["postprocess", str(raw), "--out", str(tmp_path / "k.h5")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "/alice/symbols" in err[0] and "--alice-from" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw.h5"]


def test_alice_from_a_recording_the_raw_key_is_not_from_is_one_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], shared_traces) -> None:
    from tests.qkd_hw.postprocessing.helpers import make_raw_key

    # /bob/tx_index reaches 120 999; the recording has 100 000 symbols
    raw = make_raw_key(tmp_path / "raw.h5", 120_000, alice=False)
    code = main(["postprocess", str(raw), "--out", str(tmp_path / "k.h5"), "--alice-from",
                 str(shared_traces["pristine"])])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "/tx/symbols" in err[0] and "not from this recording" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw.h5"]
