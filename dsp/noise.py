"""Shot-/electronic-noise captures through the signal's very matched filter bank."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dsp.buffer import SampleBuffer
from dsp.lock import Acquisition
from dsp.matched_filter import matched_filter_at, symbol_sample_range

__all__ = ["NoiseMeter", "NoiseStats", "first_lattice_instant"]


@dataclass(frozen=True)
class NoiseStats:
    """Per-quadrature variance of a noise capture through the receiver chain (ADC codes^2)."""

    variance: float
    variance_std: float
    n_symbols: int


def first_lattice_instant(tau0: float, period: float, earliest: float) -> float:
    """The first of the signal's symbol instants ``tau0 + k period`` (any integer k) at or
    after ``earliest``.

    The noise capture is sampled on the signal's own symbol lattice, so its instants move
    continuously with tau0 (a start at ``tau0 % 1`` moves every instant by a whole sample
    whenever tau0 crosses an integer, and N0 by a random fraction of its sd).
    """
    return tau0 + math.ceil((earliest - tau0) / period) * period


class NoiseMeter:
    """Shot-/electronic-noise capture through exactly the signal's matched filter bank
    (same mixer, taps, symbol period and symbol instants, tau0 + k period; no carrier phase)."""

    def __init__(self, acq: Acquisition) -> None:
        self.acq = acq
        self.buf = SampleBuffer()
        b = acq.bank
        self.tau = first_lattice_instant(acq.tau0, acq.period, b.half + 1)
        self.k = 0
        self.sum2 = 0.0
        self.sum4 = 0.0
        self.count = 0

    def feed(self, chunk: np.ndarray) -> None:
        self.buf.append(chunk)
        a, b = self.acq, self.acq.bank
        khi = math.floor((self.buf.n_end - b.half - 2 - self.tau) / a.period) + 1
        if khi > self.k:
            y = matched_filter_at(self.buf.data, b, first_sample=self.buf.n0, tau0=self.tau,
                                  period=a.period, k_start=self.k, count=khi - self.k)
            p = (y.real.astype(np.float64) ** 2 + y.imag.astype(np.float64) ** 2) / 2
            self.sum2 += float(p.sum())
            self.sum4 += float((p * p).sum())
            self.count += p.shape[0]
            self.k = khi
        lo, _ = symbol_sample_range(b, self.tau, a.period, self.k)
        self.buf.trim(lo)

    def result(self) -> NoiseStats:
        if self.count < 2:
            raise ValueError(f"noise capture too short: {self.count} symbol instants")
        m = self.sum2 / self.count
        var_p = max(self.sum4 / self.count - m * m, 0.0)
        return NoiseStats(variance=m, variance_std=math.sqrt(var_p / self.count),
                          n_symbols=self.count)
