"""Verification hash: the Toeplitz matrix product it claims, and every flipped bit caught."""

from __future__ import annotations

import numpy as np
import pytest

from qkd_hw.postprocessing.verify import (
    collision_bound,
    hash_key_length,
    new_hash_key,
    toeplitz_tag,
)


def _naive_tag(x: np.ndarray, key: np.ndarray, t: int) -> np.ndarray:
    n = x.shape[0]
    r, j = np.meshgrid(np.arange(t), np.arange(n), indexing="ij")
    M = key[j - r + t - 1].astype(np.int64)   # Toeplitz: constant along each diagonal
    return (M @ x.astype(np.int64) % 2).astype(np.uint8)


@pytest.mark.parametrize("t", [64, 128])
@pytest.mark.parametrize("n", [1, 2, 63, 64, 65, 1000])
def test_tag_is_the_toeplitz_product(n: int, t: int) -> None:
    rng = np.random.default_rng(n + t)
    for _ in range(5):
        x = rng.integers(0, 2, n, dtype=np.uint8)
        key = rng.integers(0, 2, hash_key_length(n, t), dtype=np.uint8)
        tag = toeplitz_tag(x, key, t)
        assert tag.shape == (t,) and tag.dtype == np.uint8
        assert np.array_equal(tag, _naive_tag(x, key, t))


@pytest.mark.parametrize("t", [64, 128])
def test_every_flipped_bit_is_caught(t: int) -> None:
    # 2-universal: for a fixed difference, a random key gives a collision with probability
    # 2^-t, so over these trials (fresh key each, from secrets) not one may pass
    rng = np.random.default_rng(7)
    n = 4096
    trials = 0
    for flips in (1, 2, 3, 64, 1000):
        for _ in range(300):
            x = rng.integers(0, 2, n, dtype=np.uint8)
            y = x.copy()
            pos = rng.choice(n, size=flips, replace=False)
            if trials % 3 == 0:  # the edges too: the first and the last bit of the frame
                pos[0] = 0 if trials % 2 else n - 1
            y[pos] ^= 1
            key = new_hash_key(n, t)
            assert not np.array_equal(toeplitz_tag(x, key, t), toeplitz_tag(y, key, t)), \
                f"{flips} flipped bits at {sorted(pos)[:4]}... not caught"
            trials += 1
    assert trials == 1500


def test_equal_frames_give_equal_tags_and_the_bound() -> None:
    rng = np.random.default_rng(8)
    x = rng.integers(0, 2, 777, dtype=np.uint8)
    key = new_hash_key(777)
    assert np.array_equal(toeplitz_tag(x, key), toeplitz_tag(x.copy(), key.copy()))
    assert collision_bound(64) == 2.0**-64 and collision_bound(128) == 2.0**-128


def test_tag_refuses_a_key_of_the_wrong_length_and_bad_tag_sizes() -> None:
    x = np.ones(100, np.uint8)
    with pytest.raises(ValueError, match="163 bits"):
        toeplitz_tag(x, np.ones(100, np.uint8))
    with pytest.raises(ValueError, match="tag_bits"):
        toeplitz_tag(x, np.ones(131, np.uint8), 32)
