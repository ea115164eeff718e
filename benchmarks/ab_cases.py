"""The recordings of issue 19's throughput A/B (``ab_scale.py``): simulated once, cached.

* ``bench``: the throughput benchmark's recording (``throughput.py``: ``BENCH_PARAMS``, 5 kHz,
  one pilot), ``--bench-samples`` signal samples;
* ``lw10k``: the penalty table's first link at 10 kHz (``dsp_penalty.matrix()[2]``: one pilot
  at 250 MHz, 22 dB, offset +40 MHz), 1e6 symbols;
* ``framed10k``: the framed two-pilot frame of the penalty table (``dsp_penalty.FRAME``: Zadoff-
  Chu preamble without pilot, pilots 250/270 MHz at 17/11 dB) at 10 kHz, 1e6 symbols;
* ``framed``: the shared ``framed.h5`` (``$QKD_HW_SHARED/traces``), not simulated;
* ``lw10k_long``: ``lw10k`` with 1e7 symbols (1e8 samples: the acquisition amortised).

Uncompressed int16, like the benchmark recordings (the HDF5 read is part of what is timed).

Usage::

    python -m benchmarks.ab_cases [--workdir /tmp/qkd-hw-bench] [--bench-samples 2e8]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):   # `python benchmarks/ab_cases.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import DEFAULT_WORKDIR, ensure_recording

PENALTY_SYMBOLS = 1_000_000


def _penalty_recording(workdir: Path, name: str, params: dict, seed: int = 1,
                       n_symbols: int = PENALTY_SYMBOLS) -> Path:
    """A penalty-table link (``SimParams`` defaults under ``params``), cached by name."""
    from qkd_hw.sim.params import SimParams
    from qkd_hw.sim.simulate import simulate_recording

    path = workdir / f"ab19_{name}_{n_symbols}sym_seed{seed}.h5"
    if not path.is_file():
        t0 = time.perf_counter()
        simulate_recording(path, SimParams(**params), seed=seed, n_symbols=n_symbols,
                           truth_phase=False, compression=None,
                           description=f"issue 19 throughput A/B, {name}")
        print(f"simulated {path} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return path


def recordings(workdir: Path, bench_samples: float) -> dict[str, Path]:
    """Name -> path of the four A/B recordings (simulated if absent)."""
    from benchmarks.dsp_penalty import FRAME, matrix

    workdir.mkdir(parents=True, exist_ok=True)
    row = matrix()[2]
    assert row["linewidth_hz"] == 1e4 and len(row["pilot_frequencies_hz"]) == 1
    shared = Path(os.environ.get("QKD_HW_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    return {
        "bench": ensure_recording(workdir, signal_samples=bench_samples,
                                  log=lambda s: print(s, file=sys.stderr)),
        "lw10k": _penalty_recording(workdir, "lw10k", row),
        "framed10k": _penalty_recording(workdir, "framed10k", {**FRAME, "linewidth_hz": 1e4}),
        "framed": shared / "traces" / "framed.h5",
        "lw10k_long": _penalty_recording(workdir, "lw10k", row, n_symbols=10 * PENALTY_SYMBOLS),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    ap.add_argument("--bench-samples", type=float, default=2e8)
    args = ap.parse_args(argv)
    for name, path in recordings(args.workdir, args.bench_samples).items():
        print(f"{name} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
