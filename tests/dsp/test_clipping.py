"""dsp.clipping: the one-pass rail kernel against a naive numpy twin, chunk merging, and the
rail rule on clipped and unclipped Gaussian captures."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

from dsp.clipping import (
    RAIL_MIN_COUNT,
    RailCounter,
    RailStats,
    merged_parts,
    rail_stats,
    segment_rails,
)


def naive(x: np.ndarray) -> RailStats:
    lo, hi = x.min(), x.max()
    return RailStats(x.size, float(lo), int((x == lo).sum()), int((x == lo + 1).sum()),
                     float(hi), int((x == hi).sum()), int((x == hi - 1).sum()))


def gaussian(n: int, rms: float, dtype: str, seed: int = 0, rail: float | None = None):
    x = np.random.default_rng(seed).normal(0, rms, n)
    if np.dtype(dtype).kind == "i":
        x = np.floor(x + 0.5)
    if rail is not None:
        x = np.clip(x, -rail - 1, rail)   # a 12-bit style asymmetric pair of rails
    return x.astype(dtype)


@pytest.mark.parametrize("dtype", ["int8", "int16", "float32", "float64"])
@pytest.mark.parametrize("rms", [0.7, 3.0, 40.0])
def test_kernel_matches_numpy_twin(dtype, rms):
    for seed in range(4):
        x = gaussian(20_000, rms if dtype != "int8" else min(rms, 20), dtype, seed,
                     rail=None if seed % 2 else 30.0)
        assert rail_stats(x) == naive(x)


def test_chunks_merge_to_the_whole():
    # chunk boundaries anywhere, including chunks whose extremes are one code apart
    x = gaussian(50_001, 2.0, "int16", seed=3)
    for n in (1, 7, 1000, 50_001):
        c = RailCounter()
        for i in range(0, x.size, n):
            c.feed(x[i:i + n])
        assert c.stats == naive(x), n
    c = RailCounter()
    for part in (np.array([5, 4, 4], np.int16), np.array([6, 6], np.int16),
                 np.array([3, 7, 7], np.int16)):
        c.feed(part)
    # one max (7, twice) with 6 one code inwards (twice); min 3 once, 4 inwards twice
    assert c.stats == RailStats(8, 3.0, 1, 2, 7.0, 2, 2)


def test_unclipped_gaussian_has_no_rails():
    for dtype, rms in (("int16", 35.0), ("int16", 256.0), ("float32", 35.0), ("int8", 4.0)):
        x = gaussian(1_000_000, rms, dtype, seed=1)
        assert rail_stats(x).clipped_fraction(x.dtype) == 0.0, (dtype, rms)


def test_clipped_gaussian_counts_both_rails():
    x = gaussian(400_000, 60.0, "int16", seed=2, rail=100.0)   # rails -101, +100
    expect = int((x == 100).sum() + (x == -101).sum())
    assert expect > 400_000 * 0.05
    assert rail_stats(x).clipped_samples(x.dtype) == expect
    # float captures clipped at a rail pile up on one exact value just the same
    f = np.clip(np.random.default_rng(4).normal(0, 60, 100_000), -150, 150).astype(np.float32)
    assert rail_stats(f).clipped_samples(f.dtype) == int((np.abs(f) == 150).sum())


def test_dtype_extremes_are_rails_whatever_the_count():
    x = gaussian(10_000, 3.0, "int16", seed=5)
    x[17] = 32767
    assert rail_stats(x).clipped_samples(x.dtype) == 1
    # ... but a few samples on a capture's own extreme are just its tail
    y = gaussian(10_000, 3.0, "int16", seed=5)
    y[:RAIL_MIN_COUNT - 1] = y.max() + 5
    assert rail_stats(y).clipped_samples(y.dtype) == 0


def test_constant_capture_is_not_clipping_unless_at_the_dtype_extreme():
    assert rail_stats(np.zeros(100, np.int16)).clipped_fraction(np.dtype(np.int16)) == 0.0
    full = np.full(100, -128, np.int8)
    assert rail_stats(full).clipped_fraction(full.dtype) == 1.0


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="1-D"):
        rail_stats(np.zeros((2, 2), np.int16))
    with pytest.raises(ValueError, match="dtype"):
        rail_stats(np.zeros(3, np.int32))
    assert rail_stats(np.zeros(0, np.int16)).n == 0


@pytest.mark.parametrize("dtype", ["int8", "int16", "float32"])
def test_segment_rails_and_merged_parts_match_numpy_twin(dtype):
    # the pilot kernel's in-cache count (segments of 512) and its merge of the tasks' rows:
    # parts of any length, extremes that differ by a code between parts, pile-ups at rails
    rng = np.random.default_rng(7)
    for seed, rms, rail in ((0, 0.7, None), (1, 3.0, 4.0), (2, 40.0, None)):
        x = gaussian(6000, rms, dtype, seed, rail=rail)
        cuts = np.concatenate([[0], np.sort(rng.choice(np.arange(1, x.size), 5, False)),
                               [1, 512, 513], [x.size]])
        cuts = np.unique(cuts)
        ext = np.empty((cuts.size - 1, 2))
        cnt = np.empty((cuts.size - 1, 5), np.int64)
        for i, (a, b) in enumerate(pairwise(cuts)):
            segment_rails(x[a:b], ext[i], cnt[i])
            assert RailStats(int(cnt[i, 0]), ext[i, 0], int(cnt[i, 1]), int(cnt[i, 2]),
                             ext[i, 1], int(cnt[i, 3]), int(cnt[i, 4])) == naive(x[a:b])
        assert merged_parts(ext, cnt) == naive(x), (seed, cuts)
    assert merged_parts(np.empty((0, 2)), np.empty((0, 5), np.int64)).n == 0
