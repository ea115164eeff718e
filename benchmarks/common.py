"""Shared helpers of the DSP benchmarks: cached simulated recordings, environment report,
timing of a subprocess, table printing.

Recordings are simulated once with the project's simulator (``qkd_hw.sim``), uncompressed
int16, and cached in the work directory under a name that encodes the simulator parameters,
the seed and the length, so every rerun (and every script) reuses them. The captures are
stored contiguously (``TraceWriter(lengths=...)``), as digitizer dumps and the shared
recordings are (the layout is part of the cache key).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_WORKDIR = Path(os.environ.get("QKD_HW_BENCH_DIR", "/tmp/qkd-hw-bench"))
SAMPLES_PER_SYMBOL = 10   # BENCH_PARAMS: 1 GSa/s, 100 MBaud

#: The benchmark link: the DTU 100 km local-LO system's rates (1 GSa/s, 100 MBaud, roll-off 0.2,
#: one pilot, conventions.md), a free-running LO (15 MHz offset, 5 kHz linewidth) and a 1 ppm
#: symbol-clock offset between Alice's DAC and Bob's ADC, so every stage of the receiver (pilot
#: search, phase tracking, sync, clock probe, timing loop) does its real work.
BENCH_PARAMS: dict[str, Any] = {
    "detection": "heterodyne", "transmittance": 0.5, "excess_noise_snu": 0.02,
    "electronic_noise_snu": 0.1, "modulation_variance_snu": 5.0, "efficiency": 0.7,
    "sample_rate_hz": 1e9, "symbol_rate_hz": 100e6, "rolloff": 0.2,
    "frequency_offset_hz": 15e6, "linewidth_hz": 5e3, "clock_offset_ppm": 1.0,
    "adc_dtype": "int16", "shot_noise_samples": 1_000_000, "electronic_noise_samples": 1_000_000,
}


def sim_params(**overrides: Any):
    from qkd_hw.sim import SimParams

    return SimParams(**{**BENCH_PARAMS, **overrides})


def symbols_for_samples(signal_samples: float) -> int:
    """Data symbols giving (about) ``signal_samples`` samples of ``/adc/signal``."""
    return max(1, round(float(signal_samples) / SAMPLES_PER_SYMBOL))


def recording_path(workdir: Path, n_symbols: int, seed: int, **overrides: Any) -> Path:
    p = sim_params(**overrides)
    key = json.dumps(p.to_json(), sort_keys=True) + f"|{n_symbols}|{seed}|v2"
    h = hashlib.sha1(key.encode()).hexdigest()[:10]
    return Path(workdir) / f"bench_{n_symbols}sym_seed{seed}_{h}.h5"


def ensure_recording(workdir: str | os.PathLike[str], *, signal_samples: float, seed: int = 1,
                     progress: bool = False, log=None, **overrides: Any) -> Path:
    """Path of a cached simulated recording with about ``signal_samples`` signal samples;
    simulated (uncompressed int16, atomically written) if it is not there yet."""
    from qkd_hw.sim import simulate_recording

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    n_sym = symbols_for_samples(signal_samples)
    path = recording_path(workdir, n_sym, seed, **overrides)
    if not path.is_file():
        t0 = time.perf_counter()
        if log:
            log(f"simulating {path} ({n_sym} symbols) ...")
        simulate_recording(path, sim_params(**overrides), seed=seed, n_symbols=n_sym,
                           truth_phase=False, progress=progress, compression=None,
                           chunk_samples=1 << 22,
                           description=f"qkd-hw benchmark recording, {n_sym} symbols")
        if log:
            log(f"  done in {time.perf_counter() - t0:.1f} s")
    return path


def recording_samples(path: str | os.PathLike[str]) -> dict[str, int]:
    from qkd_hw.trace_io import TraceReader

    with TraceReader(path) as r:
        return {name: a.length for name, a in r.adc.items()}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment() -> dict[str, Any]:
    """What a reader needs to compare figures between machines."""
    import h5py
    import numba
    import numpy as np
    import scipy

    env = {
        "python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
        "numba": numba.__version__, "h5py": h5py.__version__, "hdf5": h5py.version.hdf5_version,
        "numba_threads": numba.config.NUMBA_NUM_THREADS,
        "numba_threading_layer": numba.config.THREADING_LAYER,
        "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "env": {k: v for k, v in os.environ.items()
                if k.startswith(("NUMBA_", "OMP_", "OPENBLAS_", "MKL_"))},
    }
    try:
        cfg = np.show_config(mode="dicts")
        env["numpy_blas"] = cfg["Build Dependencies"]["blas"].get("name")
    except Exception:   # older numpy: no dict mode
        env["numpy_blas"] = None
    return env


def command_line() -> str:
    """Shell equivalent of the running command."""
    return " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])


def print_header(title: str, env: dict[str, Any]) -> None:
    print(f"# {title}")
    print(f"# command: {command_line()}")
    print(f"# cpu: {env['cpu_model']} x {env['cpu_count']}, numba {env['numba']} "
          f"({env['numba_threads']} threads, layer {env['numba_threading_layer']}), "
          f"numpy {env['numpy']} ({env.get('numpy_blas')}), scipy {env['scipy']}, "
          f"h5py {env['h5py']} (HDF5 {env['hdf5']}), load avg {env['load_average_1min']:.2f}")
    if env["env"]:
        print(f"# env: {env['env']}")


def print_table(rows: list[list[Any]], header: list[str]) -> None:
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    w = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for j, r in enumerate(cells):
        print("  ".join(c.rjust(w[i]) for i, c in enumerate(r)))
        if j == 0:
            print("  ".join("-" * x for x in w))


def fmt(v: float, digits: int = 3) -> str:
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def write_json(path: str | None, data: dict[str, Any]) -> None:
    """``--json PATH`` (``-``: stdout) output of a script."""
    if path is None:
        return
    text = json.dumps(data, indent=2, default=float)
    if path == "-":
        print(text)
    else:
        tmp = Path(f"{path}.tmp-{os.getpid()}")
        tmp.write_text(text + "\n")
        tmp.replace(path)


def run_python(code: str, *, env: dict[str, str] | None = None,
               timeout: float | None = None) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter; it must print one JSON object as its last line."""
    e = {**os.environ, **(env or {})}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e,
                         timeout=timeout, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"subprocess failed ({out.returncode}):\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
