"""Link simulator: physical model of the CV-QKD link writing format-v1 recordings with truth.

* :mod:`qkd_hw.sim.params`   -- :class:`SimParams`, the validated parameter set
* :mod:`qkd_hw.sim.pulse`    -- root-raised-cosine pulse, truncation, tables
* :mod:`qkd_hw.sim.waveform` -- numba kernels (normals, laser phase, synthesis, ADC)
* :mod:`qkd_hw.sim.simulate` -- :func:`simulate_recording`, streaming and seeded
* :mod:`qkd_hw.sim.oracle`   -- :func:`oracle_receive`, the ideal receiver for tests

Typical use (tests, benchmarks)::

    p = SimParams(frequency_offset_hz=-17e6, linewidth_hz=1e3, delay_samples=2871.37)
    truth = simulate_recording("rec.h5", p, seed=1, n_symbols=1_000_000)
    ideal = oracle_receive("rec.h5")                           # T, xi, v_el, t, sigma2
    floor = oracle_receive("rec.h5", phase_lowpass_hz=100e3)   # phase-noise floor
    SimParams.from_truth(truth) == p                           # every parameter round-trips

Same seed and parameters give the same file, whatever ``chunk_samples``.
"""

import importlib
from typing import Any

# the names load their modules on first use: ``qkd-hw`` builds every subcommand's parser
# (``cli.simulate`` needs ``SimParams``), and the oracle's and simulator's scipy.signal,
# scipy.ndimage and scipy.stats would add ~40 MB to every command, ``qkd-hw process`` too
_EXPORTS = {
    "OracleResult": "oracle",
    "SimParams": "params",
    "oracle_from_arrays": "oracle",
    "oracle_receive": "oracle",
    "parse_assignments": "params",
    "simulate_recording": "simulate",
    "true_phase": "simulate",
}

__all__ = [
    "OracleResult",
    "SimParams",
    "oracle_from_arrays",
    "oracle_receive",
    "parse_assignments",
    "simulate_recording",
    "true_phase",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
