"""DSP penalty against ideal receivers on the same simulated 1e6-symbol recording (a subset of
``benchmarks/dsp_penalty.py``'s matrix; the full table is benchmarks/dsp_penalty.md).

Receivers (all with the oracle's shot-noise calibration, see the benchmark's docstring):
O = oracle (true phase, pilots subtracted exactly); F = floor receiver (the true phase seen only
through the pipeline's own pilot filter, pilots subtracted with that phase: it keeps the pilot
skirt and the tracking error every pilot receiver has); P = the pipeline.
``dsp = xi(P) - xi(F)`` (with no phase noise F = O and ``penalty = xi(P) - xi(O)``); target
<= 1 mSNU.

Tolerance of the paired difference: xi(P) and xi(F) see the same symbols, shot, excess and
phase noise; they differ by dy = y_P - y_F (the pipeline's own errors), so
xi(P) - xi(F) = [2 sum Re(z* dy) + sum |dy|^2] / (m t^2) with z the common noise: mean = the
penalty d, sd about 2 sqrt(sigma2 d / (m t^2)) = 0.07 mSNU at d = 0.3 mSNU (sigma2 = 1.2,
t^2 = 0.175, m = 2e6 real pairs). On top of that the pipeline's own estimates (sync timing
from 16384 symbols, sd ~0.025 sample -> ISI V_A (2 pi B_rms dtau)^2 up to ~0.5 mSNU) change
from recording to recording. So the spread was MEASURED: the two cases below over seeds 1..6
at 1e6 symbols (``run_case``, 2026-11-27):

* lw 0, +38 MHz, delay 1234.37: penalty mean 0.20, sd 0.19 mSNU (min -0.02, max 0.43);
* lw 1 kHz, 22 dB pilot: dsp fir mean 0.41, sd 0.11 (max 0.54); kalman-rts mean 0.30,
  sd 0.16 (max 0.56); measured skirt / analytic tail 1.11 +- 0.04; fir track 0.31 +- 0.04.

The bound 1 mSNU is the requirement; it sits >= 3.7 sd above every measured mean. The lower
bound -0.5 mSNU is >= 3.6 sd below them: a pipeline "better than the floor receiver" beyond it
would mean a broken floor receiver (or a pipeline reading the truth).

1e6 symbols is the smallest size that decides: at 4e5 (same cases, seeds 1..6, 2026-12-06)
the +38 MHz penalty had sd 0.23 (max 0.67) and one delay error of -0.12 sample (> 0.1), and
the phase-noise dsp sd 0.25 (fir max 0.72, 1 mSNU only ~2.6 sd above the mean) with skirt /
analytic up to 1.23 against the 1.3 bound.
"""

from __future__ import annotations

import pytest

from benchmarks.dsp_penalty import run_case

BASE = {"linewidth_hz": 0.0, "delay_samples": 1500.0}
N_SYM = 1_000_000


@pytest.mark.slow
@pytest.mark.parametrize("name,params", [
    # 100 MBaud at 1 GSa/s, +38 MHz offset, fractional delay
    ("100MBd-offset+38MHz", {**BASE, "frequency_offset_hz": 38e6, "delay_samples": 1234.37}),
    # two pilots, 150 MBaud (6.667 samples/symbol), roll-off 0.1, 2.5 ppm clock offset
    ("two-pilots-150MBd-clock", {**BASE, "symbol_rate_hz": 150e6, "rolloff": 0.1,
                                 "pilot_frequencies_hz": (280e6, 330e6),
                                 "frequency_offset_hz": -25e6, "clock_offset_ppm": 2.5,
                                 "delay_samples": 1777.77}),
])
def test_dsp_penalty_without_phase_noise(tmp_path, name, params):
    row = run_case(params, n_symbols=N_SYM, seed=3, workdir=tmp_path, methods=("fir",),
                   floors=False)
    assert row["fir:n_received"] == row["n_oracle"] == N_SYM
    assert abs(row["fir:delay_error_samples"]) < 0.1
    assert abs(row["fir:frequency_error_hz"]) < 10.0
    assert row["skirt_th"] == 0.0
    assert row["fir:penalty"] <= 1.0, row
    assert row["fir:penalty"] > -0.5, row


@pytest.mark.slow
def test_dsp_penalty_with_phase_noise(tmp_path):
    """1 kHz linewidth, -17 MHz, pilot 22 dB (benchmarks.dsp_penalty.pilot_power_dbsn): the
    floors are measured and the pipeline's cost beyond them stays <= 1 mSNU, both trackers."""
    params = {**BASE, "frequency_offset_hz": -17e6, "linewidth_hz": 1e3,
              "delay_samples": 1400.6, "pilot_powers_dbsn": (22.0,)}
    row = run_case(params, n_symbols=N_SYM, seed=4, workdir=tmp_path,
                   methods=("fir", "kalman-rts"))
    for m in ("fir", "kalman-rts"):
        # the measured skirt agrees with the analytic Lorentzian tail (9.7 mSNU) to 30%
        # (measured ratio 1.11 +- 0.04 over 6 seeds)
        assert row[f"{m}:skirt"] == pytest.approx(row["skirt_th"], rel=0.3)
        # tracking floor ~ half the RTS bound V_A sqrt(D_phi c_n)/2 = 0.5 mSNU (measured
        # 0.31 +- 0.04 for fir)
        assert 0.0 < row[f"{m}:track"] < 1.0
        assert row[f"{m}:dsp"] <= 1.0, row
        assert row[f"{m}:dsp"] > -0.5, row
