"""Numba compilation options, defined once for every kernel of the project.

fastmath allows reassociation and contraction (vectorised reductions) but not
``nnan``/``ninf``: a NaN in an ADC trace must propagate and be caught, not be
optimised away.
"""

import os

# a plain set: numba rejects a frozenset here; treat it as read-only
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

#: options for serial kernels
NJIT = {"cache": True, "fastmath": FASTMATH, "nogil": True, "error_model": "numpy"}
#: options for kernels with ``prange``
NJIT_PARALLEL = {**NJIT, "parallel": True}

# an idle OpenMP worker sleeps instead of spinning (libgomp reads this when numba loads it, at
# the first parallel call): with a core taken by another process a spinning worker takes time
# from it or from our own thread, and a 2-thread region cost ~400 us against 74 us passive
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
