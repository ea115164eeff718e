"""Boxcar phase tracker (method ``"fir"``): the angle of the pilot phasors summed over a
centred window of ``window`` blocks, unwrapped; the kernel and the streaming tracker.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from dsp._numba_options import NJIT_PARALLEL
from dsp.core import TWO_PI, atan2
from dsp.trackers.base import DesignInputs, PilotFilterDesign, common_fields

__all__ = ["FIR_RUN", "BoxcarTracker", "boxcar_phase", "design_boxcar"]

#: the tracker's sliding sums restart at multiples of this many blocks (chunk invariance)
FIR_RUN = 16384


# --------------------------------------------------------------------------------------------
# kernel: windowed phasor sum, angle, unwrap (one serial pass)
# --------------------------------------------------------------------------------------------
_BOXCAR_RUN = 4096   # outputs per independent sliding-sum run (exact restart, one per task)


@njit(**NJIT_PARALLEL)
def _boxcar_phase(z_re, z_im, z0, n_in, j0, j1, h, last, out):
    # window of output j: blocks [max(j-h, 0), min(j+h+1, n_in)); z[i] is block z0 + i.
    # Parallel part: runs of _BOXCAR_RUN outputs, each restarting its sliding sum exactly,
    # write the wrapped angle (atan2 dominates the cost).
    n_out = j1 - j0
    n_runs = (n_out + _BOXCAR_RUN - 1) // _BOXCAR_RUN
    for r in prange(n_runs):
        ja = j0 + r * _BOXCAR_RUN
        jb = min(ja + _BOXCAR_RUN, j1)
        lo = max(ja - h, 0)
        hi = min(ja + h + 1, n_in)
        sr = 0.0
        si = 0.0
        for i in range(lo, hi):
            sr += z_re[i - z0]
            si += z_im[i - z0]
        for j in range(ja, jb):
            if j > ja:
                nlo = max(j - h, 0)
                nhi = min(j + h + 1, n_in)
                if nhi > hi:
                    sr += z_re[hi - z0]
                    si += z_im[hi - z0]
                if nlo > lo:
                    sr -= z_re[lo - z0]
                    si -= z_im[lo - z0]
                lo = nlo
                hi = nhi
            out[j - j0] = atan2(si, sr)
    # serial part (cheap): unwrap against the previous output
    prev = last
    for k in range(n_out):
        a = out[k]
        a += TWO_PI * math.floor((prev - a) / TWO_PI + 0.5)
        out[k] = a
        prev = a


def boxcar_phase(z: np.ndarray, *, first_block: int, n_blocks_in: int, out_first: int,
                 out_stop: int, half_window: int, last_phase: float) -> np.ndarray:
    """Unwrapped phase of the boxcar-filtered pilot phasors.

    Output j (``out_first <= j < out_stop``) is ``arg sum z[i]`` over blocks
    ``max(j-h, 0) <= i < min(j+h+1, n_blocks_in)``, unwrapped so that consecutive outputs (and
    the first one vs ``last_phase``) differ by less than pi. ``z[0]`` is block ``first_block``.
    """
    z = np.ascontiguousarray(z, np.complex128)
    j0, j1, h = int(out_first), int(out_stop), int(half_window)
    if j1 < j0 or h < 0:
        raise ValueError(f"bad output range [{j0}, {j1}) or half window {h}")
    if j1 > j0 and (max(j0 - h, 0) < first_block
                    or min(j1 + h, n_blocks_in) > first_block + z.shape[0]):
        raise ValueError("phasor history does not cover the requested windows")
    out = np.empty(j1 - j0)
    if j1 > j0:
        _boxcar_phase(np.ascontiguousarray(z.real), np.ascontiguousarray(z.imag),
                      int(first_block), int(n_blocks_in), j0, j1, h, float(last_phase), out)
    return out


def design_boxcar(method: str, inputs: DesignInputs) -> PilotFilterDesign:
    """Boxcar design: blocks of ``inputs.decimation`` samples (8 per window), the window
    nearest to tau."""
    return PilotFilterDesign(**common_fields(method, inputs, inputs.decimation))


class BoxcarTracker:
    """Streaming boxcar tracker (``dsp.trackers.base.PhaseTracker``)."""

    def __init__(self, design: PilotFilterDesign) -> None:
        self.design = design
        self.n_in = 0            # blocks received
        self.n_out = 0           # blocks finalised
        self._last: float | None = None   # last output phase (continuity)
        self._z = np.empty(0, np.complex128)
        self._z0 = 0             # block index of self._z[0]

    def latency_blocks(self) -> int:
        """Half a window and the block in progress."""
        return (self.design.window - 1) // 2 + 1

    def push(self, z: np.ndarray) -> tuple[int, np.ndarray]:
        z = np.asarray(z, np.complex128)
        self.n_in += z.shape[0]
        self._z = np.concatenate([self._z, z])
        return self._run(final=False)

    def flush(self) -> tuple[int, np.ndarray]:
        return self._run(final=True)

    def _run(self, final: bool) -> tuple[int, np.ndarray]:
        """Sliding sums restarted at FIXED block indices (multiples of ``FIR_RUN``), whatever
        the pushes: each output is then computed by the same floating-point operations for
        any chunking (a restart at every push changes the last bits of the phase, which the
        float32 matched-filter outputs and the timing loop then make visible). The run
        containing the first new output is recomputed from its start (<= FIR_RUN outputs)."""
        h = (self.design.window - 1) // 2
        j0 = self.n_out
        j1 = self.n_in if final else max(self.n_in - h, j0)
        if j1 <= j0:
            return j0, np.empty(0)
        parts = []
        prev = self._last
        a = (j0 // FIR_RUN) * FIR_RUN
        while a < j1:
            b = min(a + FIR_RUN, j1)
            # the run's angles, continuous inside the run (chained from 0, whatever came before);
            # only the run's phasors go in (the kernel's wrapper copies what it is given into
            # real and imaginary parts: the whole history, per run, cost more than the kernel)
            lo_b = max(a - h, 0)
            hi_b = min(b + h, self.n_in)
            chain = boxcar_phase(self._z[lo_b - self._z0:hi_b - self._z0], first_block=lo_b,
                                 n_blocks_in=self.n_in, out_first=a, out_stop=b,
                                 half_window=h, last_phase=0.0)[max(j0 - a, 0):]
            # one 2 pi shift per run, set by the previous output: the same shift (and the same
            # float operation) whether the run is emitted in one push or several
            if prev is None:
                prev = float(chain[0])
            ph = chain + TWO_PI * math.floor((prev - chain[0]) / TWO_PI + 0.5)
            parts.append(ph)
            prev = float(ph[-1])
            a = b
        out = np.concatenate(parts)
        self._last = float(out[-1])
        self.n_out = j0 + out.shape[0]
        keep = max((self.n_out // FIR_RUN) * FIR_RUN - h, 0)
        self._z = self._z[keep - self._z0:]
        self._z0 = keep
        return j0, out
