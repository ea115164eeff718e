"""Streaming and reproducibility of the simulator: chunking never changes a byte."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest

from qkd_hw.sim import SimParams, simulate_recording, true_phase
from qkd_hw.sim.simulate import SAMPLE_BLOCK
from qkd_hw.trace_io import ADC_DATASETS, TraceReader, read_truth, read_truth_dataset

P = SimParams(symbol_rate_hz=150e6, signal_frequency_hz=160e6,
              pilot_frequencies_hz=(330e6, 30e6), pilot_powers_dbsn=(17.0, 10.0),
              frequency_offset_hz=-17e6, linewidth_hz=3e4, delay_samples=2871.37,
              clock_offset_ppm=25.0, shot_noise_samples=150_000,
              electronic_noise_samples=70_001)


def _contents(path) -> dict[str, object]:
    """Every dataset and every attribute below the root (the root's created_utc differs)."""
    out: dict[str, object] = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            for k, v in obj.attrs.items():
                out[f"{name}@{k}"] = v
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[()]
        f.visititems(visit)
    return out


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        va, vb = np.asarray(a[k]), np.asarray(b[k])
        assert va.dtype == vb.dtype and va.shape == vb.shape, k
        assert np.array_equal(va, vb), f"{k} differs"


def test_chunk_size_does_not_change_the_file(tmp_path):
    files = []
    for chunk in (1 << 20, 3 * SAMPLE_BLOCK + 7, 10_007):
        path = tmp_path / f"c{chunk}.h5"
        simulate_recording(path, P, seed=11, n_symbols=40_000, chunk_samples=chunk,
                           truth_phase=True)
        files.append(_contents(path))
    assert "truth/phase_rad" in files[0]
    _assert_same(files[0], files[1])
    _assert_same(files[0], files[2])


def test_seed_changes_everything_and_prefixes_do_not_depend_on_length(tmp_path):
    a, b, c = tmp_path / "a.h5", tmp_path / "b.h5", tmp_path / "c.h5"
    simulate_recording(a, P, seed=12, n_symbols=20_000)
    simulate_recording(b, P, seed=12, n_symbols=5_000)
    simulate_recording(c, P, seed=13, n_symbols=5_000)
    with TraceReader(a) as ra, TraceReader(b) as rb, TraceReader(c) as rc:
        assert np.array_equal(ra.symbols(0, 5000), rb.symbols())
        # samples before the first pulse of symbol 5000 - L do not see the length
        sps = P.samples_per_symbol_eff
        cut = math.floor(P.delay_samples + (5000 - P.half_span - 1) * sps)
        assert np.array_equal(ra.read("signal", 0, cut), rb.read("signal", 0, cut))
        for name in ("shot_noise", "electronic_noise"):
            assert np.array_equal(ra.read(name), rb.read(name))
            assert not np.array_equal(rb.read(name), rc.read(name))
        assert not np.array_equal(rb.symbols(), rc.symbols())


def test_reading_back_chunked_equals_whole(tmp_path):
    path = tmp_path / "r.h5"
    simulate_recording(path, P, seed=14, n_symbols=30_000, chunk_samples=77_777)
    with TraceReader(path) as rd:
        for name in ADC_DATASETS:
            whole = rd.read(name)
            assert whole.dtype == np.int16
            parts = list(rd.iter_chunks(name, 65_537))
            assert np.array_equal(np.concatenate(parts), whole)
        assert rd.tx.n_symbols == 30_000
        assert rd.adc["signal"].length == P.signal_samples(30_000)
        assert rd.adc["shot_noise"].length == 150_000
        assert rd.adc["electronic_noise"].length == 70_001


def test_truth_phase_is_the_documented_process(tmp_path):
    """phase_rad = 2 pi df n / fs + Wiener walk with increment variance 2 pi lw / fs."""
    path = tmp_path / "p.h5"
    truth = simulate_recording(path, P, seed=15, n_symbols=100_000)
    phase = read_truth_dataset(path, "phase_rad")
    assert phase.dtype == np.float64 and phase.shape == (P.signal_samples(100_000),)
    np.testing.assert_array_equal(phase, true_phase(P, 15, phase.shape[0]))
    fs = P.sample_rate_hz
    inc = np.diff(phase) - 2 * np.pi * P.frequency_offset_hz / fs
    var = 2 * np.pi * P.linewidth_hz / fs
    n = inc.size
    assert abs(inc.mean()) < 5 * math.sqrt(var / n)
    assert inc.var() == pytest.approx(var, rel=5 * math.sqrt(2 / n))
    assert phase[0] == pytest.approx(truth.extra["initial_phase_rad"], abs=0)


def test_clipping_is_counted(tmp_path):
    p = P.replace(adc_bits=10, adc_shot_noise_rms_codes=60.0, pilot_powers_dbsn=(17.0, 10.0))
    path = tmp_path / "clip.h5"
    truth = simulate_recording(path, p, seed=16, n_symbols=20_000)
    frac = truth.extra["clipped_fraction_signal"]
    with TraceReader(path) as rd:
        sig = rd.read("signal")
    at_rail = np.mean((sig == -512) | (sig == 511))
    assert 0.001 < frac <= at_rail  # rails also hold samples that rounded onto them
    assert at_rail - frac < 0.05 * frac
    assert read_truth(path).extra["clipped_fraction_signal"] == frac


def test_short_rng_rows_are_redrawn_with_the_same_result(monkeypatch):
    from qkd_hw.sim import simulate

    keys = [(simulate.Stream.SIGNAL_NOISE, 0), (simulate.Stream.PHASE, 3)]
    ref = simulate.normals_blocks(17, keys, 5000)
    monkeypatch.setattr(simulate, "_words_for", lambda n: n // 2)  # always too short
    assert np.array_equal(simulate.normals_blocks(17, keys, 5000), ref)
