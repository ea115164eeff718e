"""Numba compilation options, defined once for every kernel of the project.

fastmath allows reassociation and contraction (vectorised reductions) but not
``nnan``/``ninf``: a NaN in an ADC trace must propagate and be caught, not be
optimised away.
"""

# a plain set: numba rejects a frozenset here; treat it as read-only
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

#: options for serial kernels
NJIT = {"cache": True, "fastmath": FASTMATH, "nogil": True, "error_model": "numpy"}
#: options for kernels with ``prange``
NJIT_PARALLEL = {**NJIT, "parallel": True}
