"""The bench history: appends, and the regression rules on runs whose numbers are known."""

from __future__ import annotations

import json
import math
import multiprocessing
from pathlib import Path

import pytest
from scipy.stats import chi2

from qkd_hw.bench.history import (
    ESTIMATE_FRACTION,
    K_NOISE,
    MEMORY_RESOLUTION_BYTES,
    append_run,
    find_regressions,
    load_history,
    make_run,
)
from qkd_hw.bench.truth_errors import estimate_std
from qkd_hw.errors import BenchError

EST = {"transmittance": 0.5, "excess_noise_snu": 0.02, "electronic_noise_snu": 0.1,
       "t_eff": 0.418, "t_eff_std": 1.5e-3, "n_pe": 100_000, "sigma2": 1.1,
       "electronic_noise_std_snu": 5e-4, "excess_noise_calibration_std_snu": 0.02,
       "transmittance_calibration_std": 1.8e-3}


def _record(seconds: list[float], peaks: list[float], **est) -> dict:
    return {"file": "/data/a.h5", "file_bytes": 1000, "samples": 1_000_000,
            "seconds": min(seconds), "seconds_all": seconds,
            "peak_memory_bytes": max(peaks), "peak_memory_bytes_all": peaks,
            "estimates": {**EST, **est}}


def _run(rec: dict) -> dict:
    return make_run([rec], {"total": True}, {"seed": 1, "pe_fraction": 0.5,
                                             "chunk_samples": 1 << 22, "repeat": 3})


def _checks(history: list[dict], rec: dict) -> dict[str, dict]:
    (found,) = find_regressions(history, _run(rec))
    return {c["what"]: c for c in found["checks"]}


# stored: three calls around 1 s, the fastest 0.9 s. The current run below has three equal
# calls: 4 degrees of freedom (2 + 2), the squared deviations all from the stored run, and the
# noise is the 95 % upper bound of the sd: sqrt(sum dev^2 / chi2_{0.05}(4))
STORED = [_run(_record([1.0, 1.1, 0.9], [300e6, 301e6, 299e6]))]
_LOGS = [math.log(s) for s in (1.0, 1.1, 0.9)]
NOISE = math.sqrt(sum((x - sum(_LOGS) / 3) ** 2 for x in _LOGS) / chi2.ppf(0.05, 4))


def test_speed_threshold_is_k_times_the_stored_noise():
    below = 0.9 * math.exp(0.9 * K_NOISE * NOISE)   # against the stored fastest call
    above = 0.9 * math.exp(1.1 * K_NOISE * NOISE)
    assert not _checks(STORED, _record([below] * 3, [300e6]))["speed"]["regression"]
    assert _checks(STORED, _record([above] * 3, [300e6]))["speed"]["regression"]
    # faster is never a regression
    assert not _checks(STORED, _record([0.1] * 3, [300e6]))["speed"]["regression"]


def test_memory_and_estimate_rules():
    noise = max(1e6, MEMORY_RESOLUTION_BYTES)   # stored peaks 299..301 MB: sd 1 MB < floor
    c = _checks(STORED, _record([1.0], [300e6 + 0.9 * K_NOISE * noise]))
    assert not c["memory"]["regression"]
    c = _checks(STORED, _record([1.0], [300e6 + 1.1 * K_NOISE * noise]))
    assert c["memory"]["regression"]
    sd = estimate_std(EST)["excess_noise_snu"]
    c = _checks(STORED, _record([1.0], [300e6],
                                excess_noise_snu=0.02 + 0.5 * ESTIMATE_FRACTION * sd))
    assert not c["excess_noise_snu"]["regression"]
    c = _checks(STORED, _record([1.0], [300e6],
                                excess_noise_snu=0.02 - 2 * ESTIMATE_FRACTION * sd))
    assert c["excess_noise_snu"]["regression"]
    # (the sd is the current estimate's: its xi term moved by 1e-5 of it)
    assert c["excess_noise_snu"]["change"] == pytest.approx(-2 * ESTIMATE_FRACTION, rel=1e-4)


def test_other_options_or_one_stored_call_are_not_compared():
    other = _run(_record([1.0, 1.1], [300e6, 300e6]))
    other["options"]["seed"] = 2
    assert _checks([other], _record([100.0], [300e6])) == {}
    single = [_run(_record([1.0], [300e6]))]   # one call each: no noise estimate for speed
    assert "speed" not in _checks(single, _record([100.0], [300e6]))


def _append(args: tuple[str, int]) -> None:
    path, i = args
    append_run(path, {"records": [], "i": i})


def test_concurrent_appends_all_kept_and_damaged_line_skipped(tmp_path):
    path = tmp_path / "h.jsonl"
    with multiprocessing.get_context("fork").Pool(4) as pool:
        pool.map(_append, [(str(path), i) for i in range(24)])
    runs = load_history(path)
    assert sorted(r["i"] for r in runs) == list(range(24))
    with open(path, "a") as f:
        f.write('{"records": [], "i": 99')    # a run cut short (not through append_run)
    with pytest.warns(UserWarning, match="line 25"):
        assert len(load_history(path)) == 24
    append_run(path, {"records": [], "i": 100})   # goes on its own line after the damage
    with pytest.warns(UserWarning):
        assert [r["i"] for r in load_history(path)][-1] == 100
    assert all(json.loads(x) for x in path.read_text().splitlines()[:24])


def test_history_that_is_a_folder_is_an_error(tmp_path):
    with pytest.raises(BenchError, match=str(tmp_path)):
        load_history(tmp_path)
    assert load_history(Path(tmp_path / "new.jsonl")) == []
