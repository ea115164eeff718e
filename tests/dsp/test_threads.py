"""Per-chunk thread-count choice: follows the measured cost, changes no number."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import numba
import numpy as np
import pytest

from dsp.matched_filter import matched_filter_at
from dsp.pe import pair_moments
from dsp.pilot import _decimate
from dsp.rrc import MatchedFilterBank
from dsp.threads import ThreadCount, WorkShare

RNG = np.random.default_rng(7)


class _Clock:
    """Clock of a host where a chunk of ``cost[n]`` seconds per sample runs with n threads."""

    def __init__(self) -> None:
        self.t = 0.0
        self.cost = {1: 1.0, 2: 0.55}

    def __call__(self) -> float:
        return self.t


def _run(tc: ThreadCount, clock: _Clock, chunks: int) -> list[int]:
    used = []
    for _ in range(chunks):
        with tc.chunk(100) as n:
            clock.t += clock.cost[n] * 100
        used.append(n)
    return used


def test_thread_count_follows_the_load():
    clock = _Clock()
    tc = ThreadCount(2, probe_every=8, max_interval=32, clock=clock)
    idle = _run(tc, clock, 64)
    # each count measured once, then 2 threads; probes of 1 after 8, 16, 32 chunks
    probes = [i for i, n in enumerate(idle) if n == 1]
    assert probes == [0, 8, 24, 56]
    clock.cost = {1: 1.0, 2: 2.0}                # the other core taken: 2 threads cost 2x
    busy = _run(tc, clock, 64)
    # the chosen count slowed down: one chunk shows it, the next runs single-threaded
    assert busy[0] == 2 and busy[1:9] == [1] * 8
    assert tc.best() == 1 and busy[1:].count(2) <= 3
    clock.cost = {1: 1.0, 2: 0.55}               # the core free again
    again = _run(tc, clock, 128)
    assert tc.best() == 2 and again[-48:].count(1) <= 2

def test_single_core_never_probes():
    clock = _Clock()
    tc = ThreadCount(1, clock=clock)
    assert set(_run(tc, clock, 20)) == {1}


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 numba threads")
def test_thread_count_changes_no_number():
    # the kernels sum over fixed task ranges: 1 and 2 threads give the same bits
    bank = MatchedFilterBank(samples_per_symbol=10.0, rolloff=0.2, span_symbols=16,
                             n_phases=64, mixer_cycles_per_sample=0.173)
    x = RNG.integers(-2000, 2000, 400_000).astype(np.int16)
    phase = (0.0, 16.0, np.cumsum(RNG.normal(0, 0.05, 25_000)))
    kw = dict(first_sample=0, tau0=bank.half + 2.6, period=10.0 * (1 - 2e-6), k_start=0,
              count=39_000, phase=phase)
    out = {}
    prev = numba.get_num_threads()
    try:
        for n in (1, 2):
            numba.set_num_threads(n)
            y = matched_filter_at(x, bank, **kw)
            out[n] = (y, *pair_moments(y, y[::-1], scale=0.3))
    finally:
        numba.set_num_threads(prev)
    for a, b in zip(out[1], out[2], strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("given", [None, "ACTIVE"])
def test_openmp_workers_sleep_unless_told(given):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given:
        env["OMP_WAIT_POLICY"] = given
    code = ("import os, numpy as np, numba, dsp.pe; dsp.pe.pair_moments(np.ones(1 << 14, "
            "complex), np.ones(1 << 14, complex)); print(numba.threading_layer(), "
            "os.environ['OMP_WAIT_POLICY'])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out[1] == (given or "PASSIVE")


def test_work_share_runs_every_piece_once_on_both_threads():
    # pieces 0 and 1 each wait at a two-party barrier: the job only completes if the helper
    # and the caller run pieces at the same time (a broken barrier raises in the piece)
    barrier = threading.Barrier(2, timeout=30)
    done: list[tuple[int, int]] = []

    def piece(i: int) -> None:
        if i < 2:
            barrier.wait()
        done.append((i, threading.get_ident()))

    with WorkShare() as share:
        share.run(40, piece)
        assert sorted(i for i, _ in done) == list(range(40))
        assert len({t for _, t in done}) == 2
        done.clear()
        share.run(1, lambda i: done.append((i, 0)))   # one piece: on the caller only
        assert done == [(0, 0)]


def test_work_share_reraises_a_piece_error():
    def piece(i: int) -> None:
        if i == 5:
            raise ValueError("piece 5")

    with WorkShare() as share, pytest.raises(ValueError, match="piece 5"):
        share.run(12, piece)


def test_shared_matched_filter_and_pilot_change_no_number():
    # the pieces are whole kernel tasks: the same bits as one call (3 pieces each)
    bank = MatchedFilterBank(samples_per_symbol=10.0, rolloff=0.2, span_symbols=16,
                             n_phases=64, mixer_cycles_per_sample=0.173)
    x = RNG.integers(-2000, 2000, 760_000).astype(np.int16)
    phase = (0.0, 16.0, np.cumsum(RNG.normal(0, 0.05, 47_500)))
    kw = dict(first_sample=0, tau0=bank.half + 2.6, period=10.0 * (1 - 2e-6), k_start=3,
              count=74_000, phase=phase)
    x[1000:1100] = 2**15 - 1     # some codes at the rail for the rail statistics
    with WorkShare() as share:
        y = matched_filter_at(x, bank, **kw, share=share)
        z, rails = _decimate(x, 1e9, 2.5e8 + 3e3, 17, 0, 2, 44_000, rails=True, share=share)
    np.testing.assert_array_equal(y, matched_filter_at(x, bank, **kw))
    z1, rails1 = _decimate(x, 1e9, 2.5e8 + 3e3, 17, 0, 2, 44_000, rails=True)
    np.testing.assert_array_equal(z, z1)
    assert rails == rails1 and (rails.hi, rails.n_hi) == (2**15 - 1, 100)


def test_work_share_does_not_wait_for_a_busy_helper():
    # the helper is held by another caller's job (as a descheduled thread would be): a job
    # run meanwhile completes on its own thread instead of waiting for the helper
    release, held = threading.Event(), []

    def hold(i: int) -> None:
        held.append(i)
        release.wait(30)

    with WorkShare() as share:
        other = threading.Thread(target=share.run, args=(2, hold))
        other.start()
        for _ in range(3000):            # until both of its pieces run (helper taken)
            if len(held) == 2:
                break
            threading.Event().wait(0.01)
        done: list[int] = []
        job = threading.Thread(target=share.run,
                               args=(10, lambda i: done.append(threading.get_ident())))
        job.start()
        job.join(20)
        finished = not job.is_alive()
        release.set()
        other.join()
        job.join()
    assert len(held) == 2 and finished
    assert done == [job.ident] * 10
