"""dsp.noise.NoiseMeter: the noise capture is sampled on the signal's symbol lattice."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from dsp.noise import NoiseMeter, first_lattice_instant
from dsp.rrc import MatchedFilterBank


@dataclass(frozen=True)
class _Chain:
    """The parts of an Acquisition the NoiseMeter reads."""

    bank: MatchedFilterBank
    tau0: float
    period: float


@pytest.mark.parametrize("tau0, period, earliest, expected", [
    (1000.25, 5.0, 45.0, 45.25), (3.0, 2.5, 9.0, 10.5), (9.0, 2.5, 9.0, 9.0),
    (-7.0, 4.0, 1.0, 1.0)])
def test_first_lattice_instant_is_the_first_signal_instant_not_before_earliest(
        tau0, period, earliest, expected):
    assert first_lattice_instant(tau0, period, earliest) == pytest.approx(expected, abs=1e-12)


def test_n0_does_not_jump_when_tau0_crosses_an_integer():
    """tau0 = 1000 -+ 1e-3 sample (as when the signal's delay moves by 2e-3 sample across an
    integer) samples the same noise at instants 2e-3 sample apart: both round to the same
    polyphase row, so N0 must agree to rounding. Sampling from ``tau0 % 1`` put the instants
    a whole sample apart (0.999 vs 0.001) and moved N0 by 0.11 sd on this capture."""
    bank = MatchedFilterBank(samples_per_symbol=5.0, rolloff=0.2, span_symbols=16, n_phases=64,
                             mixer_cycles_per_sample=0.1)
    x = (np.random.default_rng(1).standard_normal(100_000) * 30).astype(np.float32)
    stats = []
    for tau0 in (1000 - 1e-3, 1000 + 1e-3):
        meter = NoiseMeter(_Chain(bank, tau0, 5.0))  # type: ignore[arg-type]
        meter.feed(x)
        stats.append(meter.result())
    below, above = stats
    assert below.n_symbols == above.n_symbols
    assert abs(below.variance - above.variance) <= 1e-3 * below.variance_std
