"""Small samples of a run for the plots of ``qkd-hw process --plot``."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dsp.stream import SignalStream

__all__ = ["CONSTELLATION_POINTS", "Diagnostics"]

#: disclosed symbols kept for the constellation plot
CONSTELLATION_POINTS = 4000
#: samples per segment of the head's averaged periodogram
SPECTRUM_SEGMENT = 1 << 14
#: pilot-phase points kept per chunk
PHASE_POINTS_PER_CHUNK = 200


@dataclass
class Diagnostics:
    """Small samples for plots (never key material beyond a few disclosed PE symbols)."""

    constellation_x: np.ndarray = field(default_factory=lambda: np.empty(0, np.complex64))
    constellation_y: np.ndarray = field(default_factory=lambda: np.empty(0, np.complex64))
    pilot_phase_t_s: list = field(default_factory=list)
    pilot_phase_rad: list = field(default_factory=list)
    spectrum_f_hz: np.ndarray = field(default_factory=lambda: np.empty(0))
    spectrum_db: np.ndarray = field(default_factory=lambda: np.empty(0))

    def add_constellation(self, x: np.ndarray, y_snu: np.ndarray, disclosed: np.ndarray) -> None:
        """Keep disclosed pairs (Alice's ``x``, Bob's ``y_snu``) up to
        :data:`CONSTELLATION_POINTS`."""
        take = min(CONSTELLATION_POINTS - self.constellation_y.shape[0], int(disclosed.sum()))
        self.constellation_x = np.concatenate([self.constellation_x, x[disclosed][:take]])
        self.constellation_y = np.concatenate([self.constellation_y, y_snu[disclosed][:take]])

    @property
    def constellation_full(self) -> bool:
        return self.constellation_y.shape[0] >= CONSTELLATION_POINTS

    def add_spectrum(self, head: np.ndarray, fs: float) -> None:
        """Averaged periodogram (dB) of the head of the signal capture."""
        n = SPECTRUM_SEGMENT
        m = head.shape[0] // n
        if m < 1:
            return
        seg = head[:m * n].astype(np.float64).reshape(m, n)
        p = np.mean(np.abs(np.fft.rfft((seg - seg.mean()) * np.hanning(n), axis=1)) ** 2,
                    axis=0)
        self.spectrum_f_hz = np.fft.rfftfreq(n, 1 / fs)
        self.spectrum_db = 10 * np.log10(p + 1e-30)

    def add_phase(self, stream: SignalStream, fs: float) -> None:
        """A thinned copy of the pilot phase the stream holds now."""
        if stream.ph.shape[0] == 0:
            return
        step = max(1, stream.ph.shape[0] // PHASE_POINTS_PER_CHUNK)
        j = np.arange(0, stream.ph.shape[0], step)
        self.pilot_phase_t_s.extend(((stream.ph_j0 + j) * stream.D / fs).tolist())
        self.pilot_phase_rad.extend(stream.ph[j].tolist())
