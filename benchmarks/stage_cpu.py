"""CPU seconds per stage of the receiver (issue 18): thread CPU time (``time.thread_time``,
robust to the machine's load, unlike wall time) of each step, exclusive of the steps it
calls, over one ``process_recording`` run after a warm-up run (JIT from the cache, pages
of the recording in memory).

Each step is a function of the receiver or the ``dsp`` stages, wrapped for the run only and
restored after. Run it with ``NUMBA_NUM_THREADS=1`` so that every kernel runs on the thread
that called it (with more threads the OpenMP workers' time is in no step; with the
two-thread pipeline the pilot stage runs in the reader thread, which the table shows as its
own steps). "other threads" is the process CPU minus the main thread's: the read-ahead
thread (reads, maps, Alice's symbols).

Usage::

    NUMBA_NUM_THREADS=1 python benchmarks/stage_cpu.py RECORDING.h5 [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import os
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

if __package__ in (None, ""):   # `python benchmarks/stage_cpu.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_json

#: (module, attribute path, label): the steps timed. A name looked up by the caller's module
#: is wrapped there (e.g. ``dsp.lock.synchronise``, the head's synchronisation, apart from
#: ``dsp.clock.synchronise``, the late clock probes').
STEPS = [
    ("qkd_hw.receiver.process", "_acquire", "acquisition: head read, symbol checks"),
    ("qkd_hw.receiver.process", "_measure_noise", "noise captures"),
    ("dsp.lock", "acquire_pilot", "acquisition: pilot search"),
    ("dsp.lock", "synchronise", "acquisition: head synchronisation"),
    ("dsp.lock", "clock_offset", "acquisition: head clock offset"),
    ("dsp.lock", "segment_phase", "acquisition: head pilot phase"),
    ("dsp.lock", "MatchedFilterBank", "acquisition: matched-filter bank"),
    ("dsp.clock", "synchronise", "acquisition: clock probes' synchronisation"),
    ("dsp.clock", "segment_phase", "acquisition: clock probes' pilot phase"),
    ("dsp.acquisition", "_coarse_correlation", "  of which coarse correlation (mix, FIR, FFT)"),
    ("dsp.acquisition", "sync_scores", "  of which timing refinement (matched filters)"),
    ("dsp.pilot", "_decimate", "pilot down-conversion + rail count"),
    ("dsp.pilot", "cancel_pilot_leakage", "pilot leakage cancellation"),
    ("dsp.pilot", "PilotStage._monitor", "pilot lock monitor"),
    ("dsp.pilot", "PilotStage.push", "pilot stage rest: tracker, Python"),
    ("dsp.stream", "matched_filter_at", "matched filter (symbols, early/late)"),
    ("dsp.stream", "SignalStream._collect_timing", "timing: collect (Python)"),
    ("dsp.stream", "SignalStream._update_timing", "timing: fit + loop update"),
    ("dsp.stream", "SignalStream._append_phase", "phase append + frequency fit"),
    ("dsp.stream", "SignalStream._emit", "stream: emit (Python)"),
    ("dsp.stream", "SignalStream.feed_in_place", "stream: feed (Python)"),
    ("dsp.pe", "PairMoments.update", "PE sums"),
    ("qkd_hw.receiver.symbols", "SymbolBlocks.symbols", "Alice's symbols, PE mask"),
    ("qkd_hw.receiver.symbols", "SymbolBlocks.mask", "Alice's symbols, PE mask"),
    ("qkd_hw.receiver.process", "_SymbolSink.consume", "symbol sink (Python)"),
    ("qkd_hw.receiver.process", "_stream_signal", "stream set-up, chunk loop (Python)"),
]


class _Clock:
    """Exclusive thread CPU per label: each thread keeps a stack of the children's time."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._local = threading.local()
        self._lock = threading.Lock()

    def wrap(self, f, label: str):
        @functools.wraps(f)
        def timed(*args, **kwargs):
            stack = self._local.__dict__.setdefault("stack", [])
            t0 = time.thread_time()
            stack.append(0.0)
            try:
                return f(*args, **kwargs)
            finally:
                dt = time.thread_time() - t0
                child = stack.pop()
                if stack:
                    stack[-1] += dt
                with self._lock:
                    self.seconds[label] += dt - child
                    self.calls[label] += 1
        return timed


@contextlib.contextmanager
def timed_steps(clock: _Clock) -> Iterator[None]:
    """``STEPS`` wrapped by ``clock`` inside the block, restored after."""
    saved = []
    try:
        for mod_name, path, label in STEPS:
            owner = importlib.import_module(mod_name)
            *outer, name = path.split(".")
            for part in outer:
                owner = getattr(owner, part)
            f = owner.__dict__[name]
            saved.append((owner, name, f))
            setattr(owner, name, clock.wrap(f, label))
        yield
    finally:
        for owner, name, f in reversed(saved):
            setattr(owner, name, f)


def profile(recording: str | os.PathLike[str]) -> dict:
    """Exclusive thread CPU per step (s) of one warm ``process_recording`` run, with the
    process and main-thread CPU, wall time and the receiver's own stage timers."""
    import numba

    from qkd_hw.receiver import process_recording

    process_recording(recording, seed=1, pe_fraction=0.5)
    clock = _Clock()
    with timed_steps(clock):
        t0, c0, m0 = time.perf_counter(), time.process_time(), time.thread_time()
        r = process_recording(recording, seed=1, pe_fraction=0.5)
        wall = time.perf_counter() - t0
        cpu, main_cpu = time.process_time() - c0, time.thread_time() - m0
    return {"recording": str(recording), "numba_threads": numba.get_num_threads(),
            "samples": r.samples, "wall_s": wall, "process_cpu_s": cpu,
            "main_thread_cpu_s": main_cpu, "load": os.getloadavg()[0],
            "steps_cpu_s": dict(clock.seconds), "steps_calls": dict(clock.calls),
            "stage_seconds": dict(r.stage_seconds)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recording", type=Path)
    ap.add_argument("--json", type=str)
    args = ap.parse_args(argv)
    out = profile(args.recording)
    print(f"{out['recording']}: {out['samples']:.3g} samples, {out['numba_threads']} numba "
          f"thread(s), load {out['load']:.2f}; wall {out['wall_s']:.3f} s, process CPU "
          f"{out['process_cpu_s']:.3f} s (main thread {out['main_thread_cpu_s']:.3f}, "
          f"other threads {out['process_cpu_s'] - out['main_thread_cpu_s']:.3f})")
    steps = sorted(out["steps_cpu_s"].items(), key=lambda kv: -kv[1])
    for label, s in steps:
        print(f"{s * 1e3:9.1f} ms  {out['steps_calls'][label]:5d} calls  {label}")
    print(f"{sum(out['steps_cpu_s'].values()) * 1e3:9.1f} ms  in the steps above")
    write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
