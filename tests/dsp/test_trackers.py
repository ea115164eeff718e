"""Every registered phase tracker against the protocol's contract (``dsp.trackers``):
chunking invariance, the latency bound the stream sizes its buffers by, and the registry
as the one list of methods."""

from __future__ import annotations

import numpy as np
import pytest

from dsp.carrier import design_pilot_filter
from dsp.options import ReceiverOptions
from dsp.trackers import PHASE_METHODS, TRACKERS, make_tracker
from dsp.trackers.kalman import KalmanDesign

FS = 1e9


#: the protocol's cases: every method, and the RTS smoother on overlapping windows (pilot blocks
#: of at least 25 samples, 2.2 smoother time constants: ``choose_overlap`` takes h > 1)
CASES = [*PHASE_METHODS, "kalman-rts-overlap"]


def _design(case):
    method, guard = (("kalman-rts", 25) if case == "kalman-rts-overlap" else (case, 1))
    d = design_pilot_filter(FS, phase_noise_var=0.005, acq_decimation=8, linewidth_hz=5e4,
                            method=method, min_block_samples=guard)
    assert (getattr(d, "overlap", 1) > 1) == (case == "kalman-rts-overlap")
    return d


def _pilot(n, seed=5):
    rng = np.random.default_rng(seed)
    phi = np.cumsum(rng.normal(0, 0.02, n)) + 0.1 * np.arange(n) * 0.01
    return phi, np.exp(1j * phi) + rng.normal(0, 0.1, n) + 1j * rng.normal(0, 0.1, n)


@pytest.mark.parametrize("method", CASES)
def test_phase_tracker_streaming_equals_batch(method):
    n = 20_000
    phi, z = _pilot(n)
    d = _design(method)
    batch = make_tracker(d)
    ref = np.concatenate([batch.push(z)[1], batch.flush()[1]])
    tr = make_tracker(d)
    parts, pos = [], 0
    for size in (1, 7, 999, 3001, 5, 16000):
        j0, ph = tr.push(z[pos:pos + size])
        assert j0 == sum(p.shape[0] for p in parts)
        parts.append(ph)
        pos += size
    parts.append(tr.flush()[1])
    got = np.concatenate(parts)
    assert got.shape == ref.shape == (n,)
    np.testing.assert_allclose(got, ref, atol=1e-9)
    # and it tracks: error well below the raw per-sample phase noise (E|n|^2/2 = 0.01 rad^2)
    err = got - phi
    err -= np.mean(err)
    assert np.mean(err**2) < 5e-3


@pytest.mark.parametrize("method", CASES)
def test_latency_bounds_the_blocks_held_back(method):
    """``latency_blocks`` is what ``SignalStream.room_samples`` keeps in front of a chunk: no
    push may hold back more blocks than it says (and flush returns all of them)."""
    _, z = _pilot(200_000, seed=7)
    d = _design(method)
    tr = make_tracker(d)
    rng = np.random.default_rng(1)
    pushed = returned = 0
    while pushed < z.shape[0]:
        size = int(rng.integers(1, 20_000))
        j0, ph = tr.push(z[pushed:pushed + size])
        assert j0 == returned
        pushed += z[pushed:pushed + size].shape[0]
        returned += ph.shape[0]
        assert pushed - returned <= tr.latency_blocks()
    returned += tr.flush()[1].shape[0]
    assert returned == pushed


def test_registry_is_the_list_of_methods():
    assert PHASE_METHODS == tuple(TRACKERS) == ("fir", "kalman", "kalman-rts")
    for m in PHASE_METHODS:
        assert ReceiverOptions(phase_method=m).phase_method == m
        d = design_pilot_filter(FS, phase_noise_var=0.005, acq_decimation=8, linewidth_hz=5e4,
                                method=m)
        assert d.method == m
        assert isinstance(d, KalmanDesign) == m.startswith("kalman")
    with pytest.raises(ValueError, match="phase method must be one of"):
        design_pilot_filter(FS, phase_noise_var=0.005, acq_decimation=8, linewidth_hz=5e4,
                            method="pll")
    with pytest.raises(ValueError, match="phase_method must be one of"):
        ReceiverOptions(phase_method="pll")
