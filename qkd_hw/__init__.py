"""qkd-hw: host software of a continuous-variable QKD link.

Sub-packages of the distribution: ``qkd_hw`` (host: config, trace I/O,
simulator, key rate, CLI), ``dsp`` (numba receiver, no I/O), ``drivers``
(instrument drivers and their emulators), ``calibration`` (lab procedures).
"""

__version__ = "0.1.0"
