"""Benchmark scripts of qkd-hw (``python -m benchmarks.NAME`` or ``python benchmarks/NAME.py``).

Run as a program, a script gets the vector width of the ``qkd-hw`` entry point
(:func:`qkd_hw.vector_width.apply`, before numba is imported), so that its figures are of what
users run; imported by the tests it changes nothing.
"""

import sys
from pathlib import Path


def _main_is_a_benchmark() -> bool:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and (spec.name or "").startswith(__name__ + "."):
        return True
    path = getattr(main, "__file__", None)
    return path is not None and Path(path).resolve().parent == Path(__file__).resolve().parent


if _main_is_a_benchmark():
    from qkd_hw.vector_width import apply

    apply()
