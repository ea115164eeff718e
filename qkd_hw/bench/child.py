"""Measurement of one recording in a fresh interpreter: ``python -m qkd_hw.bench.child SPEC``.

``SPEC`` is a JSON object (``path``, ``repeat``, ``seed``, ``pe_fraction``, ``chunk_samples``,
``reference``, ``reference_samples``, optional ``warmup``). The child prints one JSON object as
its last stdout line:

* the first ``process_recording`` call of the process (numba kernels compiled or loaded from
  the on-disk cache) and ``repeat`` warm calls: ``compile_seconds`` = first minus the fastest
  warm call; with ``warmup`` (the path of a small recording) the first call runs on it instead,
  so that a long recording is not read once more untimed (``compile_seconds`` is then None);
* ``source_tree``: the folder the ``qkd_hw`` package was imported from (the child can be run as
  a script with ``PYTHONPATH`` = another source tree, to measure that tree's receiver);
* the peak RSS of each warm call: the kernel's high-water mark (``VmHWM``) is reset before
  it (``/proc/self/clear_refs``), so LLVM's compile peak and the call before are not counted;
  where that is not possible, ``ru_maxrss`` of the whole process;
* the copy rate of the same ADC data (the ceiling of any receiver): every capture read in
  chunks and ``np.copyto`` into a second buffer, the copies timed (memory stays bounded);
* with ``reference``, the numpy/scipy implementation (:mod:`qkd_hw.bench.numpy_reference`) on
  the same recording (or a prefix of its signal capture): the speed ratio per sample.

Test hook: the environment variable :data:`DELAY_ENV` (seconds, float) makes every warm
receiver call (the timed ones) spin for that many more CPU seconds, to show that a slower
receiver is flagged as a regression.
"""

from __future__ import annotations

import json
import os
import re
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

#: test hook: seconds of delay added to every timed receiver call (documented, tests only)
DELAY_ENV = "QKD_HW_BENCH_TEST_DELAY_S"
#: summary keys carried into the bench record (the estimates and their uncertainties)
ESTIMATE_KEYS = ("transmittance", "transmittance_min", "excess_noise_snu",
                 "excess_noise_max_snu", "electronic_noise_snu", "electronic_noise_std_snu",
                 "excess_noise_calibration_std_snu", "transmittance_calibration_std",
                 "t_eff", "t_eff_std", "sigma2", "snr", "n_pe",
                 "key_rate_bits_per_symbol", "frequency_offset_hz", "delay_samples")
COPY_CHUNK = 1 << 22


def _peak_rss_reset() -> bool:
    """Reset the process's RSS high-water mark (Linux >= 4.0); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss(reset_done: bool) -> int:
    """Peak RSS in bytes since the reset (VmHWM), else over the whole process (ru_maxrss)."""
    if reset_done:
        try:
            m = re.search(r"VmHWM:\s+(\d+)\s+kB", Path("/proc/self/status").read_text())
            if m:
                return int(m.group(1)) * 1024
        except OSError:
            pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _delay() -> None:
    """The test hook: spin until the process has used ``DELAY_ENV`` more CPU seconds (a
    slower receiver costs CPU time, which is what the history compares)."""
    try:
        d = max(float(os.environ.get(DELAY_ENV, "0") or 0), 0.0)
    except ValueError:
        return
    end = time.process_time() + d
    while time.process_time() < end:
        pass


def _timed_call(path: str, spec: dict[str, Any], *, warm: bool = True
                ) -> tuple[Any, float, float]:
    """One receiver call (a warm one with the documented test delay); (result, wall seconds,
    CPU seconds of the process, all threads)."""
    from qkd_hw.receiver import process_recording

    c0, t0 = time.process_time(), time.perf_counter()
    res = process_recording(path, pe_fraction=spec["pe_fraction"], seed=spec["seed"],
                            chunk_samples=spec["chunk_samples"])
    if warm:
        _delay()
    return res, time.perf_counter() - t0, time.process_time() - c0


def capture_lengths(path: str) -> dict[str, int]:
    """Samples of every ADC capture of the recording."""
    from qkd_hw.trace_io import TraceReader

    with TraceReader(path) as r:
        return {name: a.length for name, a in r.adc.items()}


def copy_rate(path: str, chunk: int = COPY_CHUNK) -> dict[str, float]:
    """Samples per second of reading (HDF5) and of copying in memory (``np.copyto``) every
    ADC capture, chunk by chunk (two buffers of ``chunk`` samples)."""
    from qkd_hw.trace_io import TraceReader

    read_s = copy_s = 0.0
    n = 0
    with TraceReader(path) as r:
        for name, info in r.adc.items():
            src = np.empty(min(chunk, info.length), info.dtype)
            dst = np.zeros_like(src)   # pages faulted in before timing
            for pos in range(0, info.length, chunk):
                m = min(chunk, info.length - pos)
                t0 = time.perf_counter()
                r.read_into(name, src[:m], pos)
                t1 = time.perf_counter()
                np.copyto(dst[:m], src[:m])
                copy_s += time.perf_counter() - t1
                read_s += t1 - t0
                n += m
    return {"copy_samples_per_second": n / copy_s if copy_s > 0 else float("inf"),
            "read_samples_per_second": n / read_s if read_s > 0 else float("inf")}


def stage_rates(stage_seconds: dict[str, float], lengths: dict[str, int]) -> dict[str, float]:
    """ADC samples per second of each stage, over the samples that stage goes through: the
    noise captures for ``noise``, the signal for ``signal`` and its parts, all otherwise
    (waits, e.g. ``signal_read_wait``, are not stages: left out)."""
    total = sum(lengths.values())
    noise = total - lengths.get("signal", 0)
    out = {}
    for k, s in stage_seconds.items():
        if k.endswith("_wait"):
            continue
        n = noise if k == "noise" else lengths.get("signal", 0) if k.startswith("signal") \
            else total
        out[k] = n / s if s > 0 else float("inf")
    return out


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Everything listed in the module docstring, for ``spec["path"]``."""
    path = str(spec["path"])
    t0 = time.perf_counter()
    import qkd_hw.receiver  # (import time apart from the first call)
    import_seconds = time.perf_counter() - t0
    warmup = spec.get("warmup")
    _, first, _ = _timed_call(str(warmup or path), spec, warm=False)
    warm, cpu, peaks = [], [], []
    res, reset = None, False
    for _ in range(max(int(spec["repeat"]), 1)):
        reset = _peak_rss_reset()
        res, s, c = _timed_call(path, spec)
        warm.append(s)
        cpu.append(c)
        peaks.append(_peak_rss(reset))
    best = int(np.argmin(warm))
    summary = res.summary()
    lengths = capture_lengths(path)
    out: dict[str, Any] = {
        "samples": int(res.samples), "seconds": warm[best], "seconds_all": warm,
        "cpu_seconds": min(cpu), "cpu_seconds_all": cpu,
        "samples_per_second": res.samples / warm[best],
        "samples_per_second_all": [res.samples / s for s in warm],
        "receiver_seconds": float(res.seconds),
        "stage_seconds": {k: float(v) for k, v in res.stage_seconds.items()},
        "stage_samples_per_second": stage_rates(res.stage_seconds, lengths),
        "capture_samples": lengths,
        "compile_seconds": None if warmup else max(first - warm[best], 0.0),
        "first_call_seconds": first, "warmup": warmup, "import_seconds": import_seconds,
        "source_tree": str(Path(qkd_hw.__path__[0]).parent),
        "peak_memory_bytes": max(peaks), "peak_memory_bytes_all": peaks,
        "peak_memory_per_call": reset,
        "estimates": {k: summary.get(k) for k in ESTIMATE_KEYS},
        "eps_pe": summary.get("eps_pe"), "pe_seed": summary.get("pe_seed"),
        **copy_rate(path),
    }
    if spec.get("reference"):
        out.update(reference(path, spec, out["samples_per_second"]))
    return out


def reference(path: str, spec: dict[str, Any], receiver_sps: float) -> dict[str, Any]:
    """The numpy/scipy reference on the same recording: its rate and the speed ratio."""
    from qkd_hw.bench.numpy_reference import process_recording_numpy

    lim = spec.get("reference_samples")
    r = process_recording_numpy(path, pe_fraction=spec["pe_fraction"], seed=spec["seed"],
                                chunk_samples=spec["chunk_samples"],
                                max_signal_samples=None if lim is None else int(lim))
    sps = r["samples"] / r["seconds"]
    return {"reference_samples": int(r["samples"]), "reference_seconds": float(r["seconds"]),
            "reference_samples_per_second": sps, "reference_speedup": receiver_sps / sps}


def main(argv: list[str] | None = None) -> int:
    """Measure ``SPEC`` (argv[0]); one JSON line on stdout, or ``{"error": ...}`` and exit 2
    for a recording the receiver refuses (a ``QkdHwError``: its one-line message)."""
    from qkd_hw.errors import QkdHwError

    spec = json.loads((argv if argv is not None else sys.argv[1:])[0])
    try:
        # the measured tree's own vector width (one from before issue 18: LLVM's); the file
        # test, not an ImportError, since an editable install lends an old tree its module
        import qkd_hw
        if (Path(qkd_hw.__file__).parent / "vector_width.py").is_file():
            from qkd_hw.vector_width import apply
            apply()
        out = measure(spec)
    except (QkdHwError, OSError, ValueError) as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 2
    print(json.dumps(out, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
