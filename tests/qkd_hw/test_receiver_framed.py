"""The receiver on framed recordings: a noise lead and a pilot-free Zadoff-Chu preamble before
the data (shared ``framed.h5``, independent generator) must not reach the carrier statistics."""

from __future__ import annotations

import math

import h5py
import pytest

from dsp.pipeline import ReceiverOptions
from qkd_hw.receiver import process_recording
from qkd_hw.trace_io import TraceReader, read_truth
from tests.conftest import shared_dir
from tests.qkd_hw.test_receiver import _tolerances

FRAMED = shared_dir() / "traces" / "framed.h5"


@pytest.fixture(scope="module")
def framed():
    if not FRAMED.is_file():
        pytest.fail(f"shared recording missing: {FRAMED} (set QKD_HW_SHARED)")
    return process_recording(FRAMED, pe_fraction=1.0, seed=1,
                             options=ReceiverOptions(phase_method="kalman-rts"))


def test_framed_linewidth_and_tracker_from_the_data(framed):
    # before: 172 kHz (the preamble's phase taken as laser phase noise), the Kalman tracker
    # at its 8 MHz cap and a pilot leakage floor of 2.46 SNU
    truth_lw = 100.0
    lw = framed.acquisition.pilot.linewidth_hz
    assert truth_lw / 2 < lw < 2 * truth_lw
    # the pilot statistics start after the preamble (the receiver never reads /truth)
    with h5py.File(FRAMED, "r") as f:
        zc_end = int(f["truth"].attrs["zc_end_sample"])
    assert framed.acquisition.pilot.span_samples[0] > zc_end
    # tracker set by the data: its optimum for 100 Hz, far below the 8 MHz cap
    assert framed.acquisition.carrier.bandwidth_hz < 1e6
    assert 0 <= framed.pilot_leakage_floor_snu < 0.01


def test_framed_estimates_within_three_sigma_of_truth(framed):
    truth = read_truth(FRAMED)
    with TraceReader(FRAMED) as r:
        va, eta, k = r.tx.modulation_variance_snu, r.tx.efficiency, r.tx.n_symbols
    assert framed.n_received == k
    sd = _tolerances(truth, va, eta, k, framed.shot_noise.n_symbols)
    e = framed.estimates
    assert abs(e.transmittance - truth.transmittance) < 3 * sd["T"]
    assert abs(e.excess_noise_snu - truth.excess_noise_snu) < 3 * sd["xi"]
    assert abs(framed.acquisition.pilot.frequency_offset_hz
               - truth.frequency_offset_hz) < 1e3
    assert math.isclose(framed.acquisition.sync.tau0, truth.delay_samples, abs_tol=0.2)


def test_implausible_leakage_floor_is_a_warning_not_a_number(framed):
    # the linewidth the preamble used to give: its floor (2.46 SNU) exceeds what was measured
    from dataclasses import replace

    from qkd_hw.receiver.estimate import (
        ImplausibleDiagnosticWarning,
        leakage_floor,
        plausible_leakage_floor,
    )

    acq = framed.acquisition
    bad = replace(acq, pilot=replace(acq.pilot, linewidth_hz=171_656.0))
    e = framed.estimates
    assert leakage_floor(bad, acq.link, framed.n0_codes2, e.t_eff) > 1.0
    with pytest.warns(ImplausibleDiagnosticWarning, match=r"framed: .*171656 Hz"):
        floor = plausible_leakage_floor("framed", bad, acq.link, framed.n0_codes2, e,
                                        framed.excess_noise_calibration_std_snu)
    assert math.isnan(floor)
    # the acquired linewidth's floor is physical and reported as is
    assert framed.pilot_leakage_floor_snu == plausible_leakage_floor(
        "framed", acq, acq.link, framed.n0_codes2, e, framed.excess_noise_calibration_std_snu)
