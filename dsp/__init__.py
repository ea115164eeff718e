"""Numba DSP kernels and the CV-QKD receiver pipeline.

Arrays in, arrays out: this package does no instrument or file I/O and imports
nothing from ``qkd_hw``, ``drivers`` or ``calibration``.
"""
