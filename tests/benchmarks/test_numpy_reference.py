"""The numpy/scipy reference receiver (qkd_hw/bench/numpy_reference.py) does the same steps as the
numba pipeline: on the same simulated recordings both give the same estimates to float32
rounding, far below the statistical scatter a different algorithm would show.

Tolerance derivation. The two implementations differ only in floating-point evaluation order:
the matched filter sums ``n_taps`` (320 here) float32 products per symbol, in SIMD partial sums
(numba, fastmath reassoc) or OpenBLAS sgemm order (numpy); everything else (mixer and carrier
phase, pilot phasors, moments) is float64. The rounding error of one output is a sum of ~n_taps
independent roundings of relative size <= 2^-24, i.e. rms ~ 2^-24 sqrt(n_taps / 3) ~ 6e-7 of the
output, zero mean; the PE sums average it over m symbols, so the relative difference of the
second moments (t_hat, sigma2, N0, v_el) is ~6e-7 / sqrt(m) plus a bias of the same order
as one rounding (~1e-7). On top of that, the symbol clock (see below) differs by ~3e-4 ppm
when the head's clock estimate is significant, which re-rounds the polyphase index of some
symbols; measured, the whole chain then differs by up to 1.1e-5 relative (sigma2, snr in the
homodyne 20 kHz case) and by < 3e-7 elsewhere. RTOL = 3e-5 keeps a 3x margin over the worst
case seen. The excess noise is
``(sigma2 - 1 - v_el) / t^2``: its absolute difference is bounded by
``RTOL (sigma2 + v_el + 2 |xi| t^2) / t^2`` (~2e-4 SNU here), which is still ~50x below the
statistical standard deviation of xi_hat for these block sizes
(``sqrt(2/(2m)) sigma2 / t^2`` ~ 1e-2 SNU, conventions.md): a receiver doing any step
differently (filter span or taper, in-window phase correction, timing, noise calibration) moves
xi_hat by more than that on the same data.

The symbol timing is the one figure that amplifies rounding: the last synchronisation step puts a
parabola through ``s = |sum conj(a) y|^2`` at +-h = 1/256 sample, where the relative curvature
is only ``2 (2 pi B_rms h)^2 ~ 1e-6`` (B_rms = 0.029 cycles/sample for roll-off 0.2 at 10
samples per symbol), so a relative rounding difference eps of s moves the vertex by
``h eps / 1e-6 ~ 4e3 eps`` samples. With eps <= 2.5e-6 (the float32 bound above) the delays
agree within TOL_DELAY = 1e-2 sample (observed ~1e-4), and the clock offset, a delay difference
over the late probe's lever arm of ~(n - 2 K_sync) symbols, within
``2 TOL_DELAY / ((n - 2 K_sync) sps)``. A 1e-2-sample timing difference changes the symbols by
``(2 pi B_rms 1e-2)^2 ~ 3e-6`` relative, inside RTOL. The laser offset is float64 on the same
head: within 1e-3 Hz.
"""

from __future__ import annotations

import pytest

from benchmarks.common import ensure_recording
from dsp.pipeline import ReceiverOptions
from qkd_hw.bench.numpy_reference import process_recording_numpy
from qkd_hw.receiver import process_recording

#: both carrier trackers of the reference: the boxcar and the Kalman filter + RTS (default)
FIR = ReceiverOptions(phase_method="fir")
METHODS = {"fir": FIR, "kalman-rts": ReceiverOptions(phase_method="kalman-rts")}

RTOL = 3e-5
TOL_DELAY = 1e-2
K_SYNC = 16384
GAINS = ("t_eff", "transmittance", "sigma2", "snr", "n0_codes2", "electronic_noise_snu")

CASES = {
    # the benchmark link (15 MHz offset, 5 kHz linewidth), 2e5 symbols
    "heterodyne": dict(signal_samples=2e6),
    # homodyne estimators, two pilots combined, spectral placement changed
    "homodyne-2pilots": dict(signal_samples=1.5e6, detection="homodyne",
                             pilot_frequencies_hz=(250e6, 360e6), frequency_offset_hz=-8e6,
                             linewidth_hz=20e3, shot_noise_samples=500_000,
                             electronic_noise_samples=500_000),
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("numpy-ref")


@pytest.fixture(scope="module")
def numpy_run(workdir):
    """``numpy_run(case, method)``: the reference's seeded run on the case's recording, once
    per module (the prefix test compares with the heterodyne fir one)."""
    cache: dict[tuple[str, str], dict] = {}

    def run(case: str, method: str) -> dict:
        if (case, method) not in cache:
            path = ensure_recording(workdir, seed=3, **CASES[case])
            cache[case, method] = process_recording_numpy(path, pe_fraction=0.5, seed=5,
                                                          options=METHODS[method])
        return cache[case, method]

    return run


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("case", list(CASES))
def test_numpy_reference_matches_numba_pipeline(workdir, numpy_run, case, method):
    path = ensure_recording(workdir, seed=3, **CASES[case])
    nb = process_recording(path, pe_fraction=0.5, seed=5, options=METHODS[method])
    ref = numpy_run(case, method)
    s = nb.summary()
    assert ref["n_symbols_received"] == nb.n_received
    assert ref["n_pe"] == s["n_pe"]
    assert ref["spectral_inversion"] == s["spectral_inversion"]
    sps = 10.0
    tol_ppm = 2 * TOL_DELAY / ((nb.n_received - 2 * K_SYNC) * sps) * 1e6
    assert ref["clock_offset_ppm"] == pytest.approx(s["clock_offset_ppm"], abs=tol_ppm)
    for k in GAINS:
        assert ref[k] == pytest.approx(s[k], rel=RTOL), k
    t2 = s["t_eff"] ** 2
    tol_xi = RTOL * (s["sigma2"] + s["electronic_noise_snu"]
                     + 2 * abs(s["excess_noise_snu"]) * t2) / t2
    assert ref["excess_noise_snu"] == pytest.approx(s["excess_noise_snu"], abs=tol_xi)
    assert ref["delay_samples"] == pytest.approx(s["delay_samples"], abs=TOL_DELAY)
    assert ref["acquisition_frequency_offset_hz"] == pytest.approx(
        s["acquisition_frequency_offset_hz"], abs=1e-3)
    assert ref["residual_phase_rad"] == pytest.approx(s["residual_phase_rad"], abs=1e-5)


def test_numpy_reference_prefix_processes_only_the_prefix(workdir, numpy_run):
    """``max_signal_samples`` (used for per-sample throughput on long recordings) stops at the
    prefix and still locks: symbols whose matched filter fits in it, same leading estimates."""
    path = ensure_recording(workdir, seed=3, **CASES["heterodyne"])
    full = numpy_run("heterodyne", "fir")
    pre = process_recording_numpy(path, pe_fraction=0.5, seed=5, options=FIR,
                                  max_signal_samples=1_500_000)
    assert pre["signal_samples"] == 1_500_000      # (the acquisition head is 1.21e6 samples)
    assert 0.95 * 1.5e5 < pre["n_symbols_received"] < 1.5e5
    assert pre["n_symbols_received"] < full["n_symbols_received"]
    # same head acquisition; the late clock probe is taken inside the prefix
    assert pre["acquisition_frequency_offset_hz"] == full["acquisition_frequency_offset_hz"]
    assert pre["delay_samples"] == pytest.approx(full["delay_samples"], abs=0.05)
    assert pre["n_pe"] < 0.8 * full["n_pe"]
    assert pre["excess_noise_snu"] == pytest.approx(full["excess_noise_snu"], abs=0.05)
