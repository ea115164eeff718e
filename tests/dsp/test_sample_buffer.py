"""The streaming sample buffer: ``adopt`` (the chunk already sits in the caller's store, the
kept tail is copied in front of it) holds exactly what ``append`` (copy) holds."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsp.buffer import SampleBuffer


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 400), st.integers(0, 500), st.integers(0, 300)),
                min_size=1, max_size=12),
       st.integers(0, 2**31 - 1))
def test_adopt_equals_append(steps, seed):
    rng = np.random.default_rng(seed)
    stream = rng.integers(-2000, 2000, sum(m for m, _, _ in steps)).astype(np.int16)
    ref, buf = SampleBuffer(), SampleBuffer()
    stores = [None, None, None]
    pos = 0
    for i, (m, room, keep) in enumerate(steps):
        chunk = stream[pos:pos + m]
        ref.append(chunk)
        # a fresh rotating store: room (maybe too small: then adopt copies) + the chunk
        stores[i % 3] = np.full(room + m, 12345, np.int16)
        stores[i % 3][room:] = chunk
        buf.adopt(stores[i % 3], room)
        pos += m
        assert (buf.n0, buf.n_end) == (ref.n0, ref.n_end)
        np.testing.assert_array_equal(buf.data, ref.data)
        np.testing.assert_array_equal(buf.data, stream[buf.n0:buf.n_end])
        cut = buf.n_end - keep          # keep the last `keep` samples (or all)
        ref.trim(cut)
        buf.trim(cut)


def test_adopt_is_zero_copy_when_the_tail_fits():
    buf = SampleBuffer()
    a = np.arange(100, dtype=np.int16)
    buf.append(a)
    buf.trim(90)                         # keeps samples 90..99
    store = np.zeros(50, np.int16)
    store[20:] = np.arange(100, 130)
    buf.adopt(store, 20)
    assert np.shares_memory(buf.data, store)
    np.testing.assert_array_equal(buf.data, np.arange(90, 130))
    assert (buf.n0, buf.n_end) == (90, 130)
    with pytest.raises(ValueError, match="dtype"):
        buf.adopt(np.zeros(10, np.float32), 5)
    with pytest.raises(ValueError, match="start"):
        buf.adopt(np.zeros(10, np.int16), 11)
    with pytest.raises(ValueError, match="C-contiguous"):
        buf.adopt(np.zeros(20, np.int16)[::2], 5)
