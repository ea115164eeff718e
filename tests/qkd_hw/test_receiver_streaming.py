"""Streaming over a simulated recording long enough to exercise the clock-offset probe and the
timing loop: any chunking gives the same result, and the clock offset is measured."""

from __future__ import annotations

import numpy as np
import pytest

from qkd_hw.raw_key import read_raw_key
from qkd_hw.receiver import process_recording
from qkd_hw.sim.params import SimParams
from qkd_hw.sim.simulate import simulate_recording

PARAMS = {"frequency_offset_hz": -21e6, "linewidth_hz": 300.0, "clock_offset_ppm": -1.7,
          "delay_samples": 3333.3}


@pytest.fixture(scope="module")
def long_recording(tmp_path_factory):
    path = tmp_path_factory.mktemp("stream") / "long.h5"
    # 6e5 symbols: > 2 timing-loop blocks of 2^18 symbols, 6e6 samples
    simulate_recording(path, SimParams(**PARAMS), seed=8, n_symbols=600_000, truth_phase=False)
    return path


def test_chunking_invariance_with_timing_loop(long_recording, tmp_path):
    runs = []
    for i, chunk in enumerate((1 << 23, 777_777, 1_048_573)):
        key = tmp_path / f"k{i}.h5"
        r = process_recording(long_recording, pe_fraction=0.4, seed=2, chunk_samples=chunk,
                              raw_key_out=key)
        runs.append((r, read_raw_key(key)))
    r0, k0 = runs[0]
    assert len(r0.timing_log) == 2          # two full 2^18-symbol blocks were fitted
    for r, k in runs[1:]:
        np.testing.assert_allclose(np.array(r.timing_log), np.array(r0.timing_log),
                                   rtol=1e-7, atol=1e-9)
        for name in ("transmittance", "excess_noise_snu", "t_eff", "sigma2"):
            assert getattr(r.estimates, name) == pytest.approx(getattr(r0.estimates, name),
                                                               rel=1e-7, abs=1e-9)
        np.testing.assert_array_equal(k.bob_tx_index, k0.bob_tx_index)
        np.testing.assert_allclose(k.bob_symbols, k0.bob_symbols, rtol=0, atol=1e-5)


def test_clock_offset_and_delay_measured(long_recording):
    r = process_recording(long_recording, pe_fraction=0.5)
    a = r.acquisition
    # probe lever arm ~6e6 samples, timing sd ~0.03 sample per fit: sd(ppm) ~ 0.007
    assert a.clock_offset_ppm == pytest.approx(PARAMS["clock_offset_ppm"], abs=0.05)
    assert a.clock_offset_std_ppm < 0.02
    assert abs(a.tau0 - PARAMS["delay_samples"]) < 0.15
    assert r.n_received == 600_000
    # the loop found nothing left to correct: every block fit is a small fraction of a sample
    assert all(abs(d) < 0.1 for _, d in r.timing_log)
