"""512-bit SIMD vectors for the numba kernels on AVX-512 hosts (issue 18).

LLVM tunes recent Intel cores (``emeraldrapids``, ``sapphirerapids``, ``icelake-server``, ...)
for 256-bit vectors (its ``prefer-256-bit`` tuning flag, against the clock drop of 512-bit
code on older Xeons), and numba compiles for the host's CPU name with that tuning. Turning
the flag off (``NUMBA_CPU_FEATURES`` = the host's features + ``-prefer-256-bit``) lets the
matched filter's loops run in zmm registers: on this project's Xeon the matched filter takes
-21 % time and the whole receiver ~9 % less CPU, its outputs moved at float32 rounding only
(figures and the penalty table: ``benchmarks/README.md`` section 8c).

numba reads ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` once, before its first compilation,
so the setting belongs to a program's entry point, before numba is imported: :func:`apply`,
called by ``qkd-hw`` (``qkd_hw.cli.main``), by the benchmark scripts (``benchmarks/__init__``)
and by the bench child. A program that imports ``dsp`` or ``qkd_hw.receiver`` itself gets
numba's default unless it calls :func:`apply` first or sets the variables.

Rules (:func:`numba_cpu_env`): nothing is changed when the user has set ``NUMBA_CPU_NAME`` or
``NUMBA_CPU_FEATURES`` (either), when ``QKD_HW_VECTOR_WIDTH=256`` (opt-out: LLVM's default
for the host), or when the host has no ``avx512f``; otherwise (``QKD_HW_VECTOR_WIDTH`` unset,
``auto`` or ``512``) both variables are set. numba's on-disk cache keys its entries on the CPU
name and features, so both settings keep their own cached kernels side by side.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, MutableMapping

#: the opt-out: ``256`` keeps LLVM's default vector width for the host
ENV = "QKD_HW_VECTOR_WIDTH"
#: accepted values of :data:`ENV` (empty = unset)
VALUES = ("", "auto", "256", "512")
#: numba's variables, read once before its first compilation
NUMBA_VARS = ("NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES")
#: the LLVM tuning flag switched off
FLAG = "-prefer-256-bit"

#: what :func:`apply` set in ``os.environ`` in this process (for :func:`caller_environ`)
_applied: dict[str, str] = {}


def host_cpu() -> tuple[str, str] | None:
    """The host's LLVM CPU name and feature string (``+avx2,-avx512fp16,...``), as numba
    would use them; None without llvmlite (numba's compiler)."""
    try:
        import llvmlite.binding as ll
    except ImportError:
        return None
    return ll.get_host_cpu_name(), ll.get_host_cpu_features().flatten()


def numba_cpu_env(environ: Mapping[str, str],
                  host: tuple[str, str] | None = None) -> dict[str, str]:
    """The numba variables to add to ``environ`` for 512-bit vectors (empty: none).

    Parameters
    ----------
    environ
        The environment the program was started with.
    host
        ``(cpu_name, features)`` of the host; None: :func:`host_cpu`.

    Raises
    ------
    ValueError
        ``QKD_HW_VECTOR_WIDTH`` is not one of :data:`VALUES`.
    """
    width = environ.get(ENV, "").strip().lower()
    if width not in VALUES:
        raise ValueError(f"{ENV} must be 256, 512 or auto, not {environ[ENV]!r}")
    if width == "256" or any(environ.get(v) for v in NUMBA_VARS):
        return {}
    host = host if host is not None else host_cpu()
    if host is None:
        return {}
    name, features = host
    if "+avx512f" not in features.split(","):
        return {}
    return {"NUMBA_CPU_NAME": name, "NUMBA_CPU_FEATURES": f"{features},{FLAG}"}


def apply(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set the numba variables of :func:`numba_cpu_env` in ``environ`` (default
    ``os.environ``, then also inherited by child processes), unless numba is imported
    already (too late to take effect in this process: nothing is changed).

    Returns
    -------
    dict
        The variables set (empty: none).
    """
    if "numba" in sys.modules:
        return {}
    target = os.environ if environ is None else environ
    env = numba_cpu_env(target)
    target.update(env)
    if environ is None:
        _applied.update(env)
    return env


def caller_environ(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``environ`` (default ``os.environ``) without what :func:`apply` set in it: the
    environment of a child that runs ANOTHER source tree, which then applies its own default
    (an old tree without this module: LLVM's default), as its users get it."""
    env = dict(os.environ if environ is None else environ)
    for k, v in _applied.items():
        if env.get(k) == v:
            del env[k]
    return env


def vector_width(environ: Mapping[str, str] | None = None) -> int | None:
    """512 when ``environ``'s numba features turn off ``prefer-256-bit`` on an AVX-512
    target, None otherwise (LLVM's choice for the CPU: 256 bits on the Xeons above)."""
    env = os.environ if environ is None else environ
    features = env.get("NUMBA_CPU_FEATURES", "").split(",")
    return 512 if FLAG in features and "+avx512f" in features else None
