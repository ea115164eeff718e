"""The receiver on the shared sample recordings: estimates vs /truth within statistically
derived tolerances, delay and frequency offset, chunk invariance, lock failures, raw key."""

from __future__ import annotations

import math
import os
import stat

import numpy as np
import pytest

from dsp.pipeline import ReceiverOptions
from qkd_hw.errors import ReceiverLockError
from qkd_hw.raw_key import read_raw_key
from qkd_hw.receiver import process_recording
from qkd_hw.trace_io import TraceReader, TraceWriter, read_truth
from tests.conftest import SHARED_TRACES

NAMES = ("pristine", "basic", "metro")
_CACHE: dict = {}


def _run(name: str, **kw):
    # options=None is the default ReceiverOptions(): one key (and one run) for both spellings
    kw.setdefault("options", ReceiverOptions())
    key = (name, tuple(sorted(kw.items())))
    if key not in _CACHE:
        _CACHE[key] = process_recording(SHARED_TRACES[name], pe_fraction=1.0, **kw)
    return _CACHE[key]


def _tolerances(truth, va: float, eta: float, n_sym: int, n_noise: int) -> dict[str, float]:
    """Standard deviations of the estimators at the TRUE parameters (conventions.md model).

    Per quadrature y = t x + z, Var(z) = sigma2 = 1 + v_el + t^2 xi, m = 2 n_sym pooled pairs
    (heterodyne).
    * t_hat = sum(xy)/sum(x^2): Var(t_hat) = sigma2 / (m V_A).
    * T_hat = t_hat^2/(eta/2): sd(T) = 2 |t| sd(t) / (eta/2) (delta method).
    * sigma2_hat = mean of m squared residuals: Var = 2 sigma2^2 / m.
    * The shot-noise calibration is statistical too: v_el_hat = V_el / N0_hat with
      N0_hat = V_sn - V_el from n_noise independent complex matched-filter outputs per capture;
      each per-quadrature variance V has sd(V)/V = 1/sqrt(n) (|y|^2/2 is exponential), so the
      relative error delta of N0 has sd^2 = ((1 + v_el)^2 + v_el^2)/n and
      sd(v_el)^2 = v_el^2/n (1 + (1 + v_el)^2 + v_el^2).
    * xi_hat = (sigma2_hat (1 - delta) - 1 - v_el_hat) / (t_hat^2 (1 - delta)): to first order
      xi_hat - xi = [d sigma2 - v_el eps_el - delta] / t^2 - 2 xi d t / t (eps_el: relative
      error of V_el), so sd(xi)^2 = [sd(sigma2)^2 + v_el^2/n + sd(delta)^2] / t^4
      + (2 xi sd(t) / t)^2. At 1e5 noise outputs the calibration term (~0.02 SNU for basic) is
      as large as the README's 0.02 SNU statistical term.
    """
    t = truth.t_eff
    vel = truth.electronic_noise_snu
    s2 = 1 + vel + t * t * truth.excess_noise_snu
    m = 2 * n_sym
    sd_t = math.sqrt(s2 / (m * va))
    sd_vel = vel * math.sqrt((1 + (1 + vel) ** 2 + vel**2) / n_noise)
    sd_s2 = s2 * math.sqrt(2 / m)
    sd_delta2 = ((1 + vel) ** 2 + vel**2) / n_noise
    sd_xi = math.sqrt((sd_s2**2 + vel**2 / n_noise + sd_delta2) / t**4
                      + (2 * truth.excess_noise_snu / t * sd_t) ** 2)
    return {"t": sd_t, "T": 2 * t * sd_t / (eta / 2), "xi": sd_xi, "vel": sd_vel}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("method", ["fir", "kalman-rts"])
def test_estimates_within_three_sigma_of_truth(shared_traces, name, method):
    res = _run(name, options=ReceiverOptions(phase_method=method))
    truth = read_truth(shared_traces[name])
    with TraceReader(shared_traces[name]) as r:
        va, eta, k = r.tx.modulation_variance_snu, r.tx.efficiency, r.tx.n_symbols
    assert res.n_received == k          # every symbol of the recording is received
    sd = _tolerances(truth, va, eta, k, res.shot_noise.n_symbols)
    # e.g. basic: sd(T) = 0.0060, sd(xi) = 0.028, sd(v_el) = 0.00047 (README: ~0.02 SNU
    # without the calibration term)
    e = res.estimates
    assert abs(e.transmittance - truth.transmittance) < 3 * sd["T"]
    assert abs(e.t_eff - truth.t_eff) < 3 * sd["t"]
    assert abs(e.excess_noise_snu - truth.excess_noise_snu) < 3 * sd["xi"]
    assert abs(res.electronic_noise_snu - truth.electronic_noise_snu) < 3 * sd["vel"]
    # the receiver's own v_el uncertainty agrees with the derivation (to 20%)
    assert res.electronic_noise_std_snu == pytest.approx(sd["vel"], rel=0.2)


def spectral_cn0_dbhz(x, f_hz: float, fs: float, linewidth_hz: float) -> float:
    """C/N0 (dB-Hz) of the tone at ``f_hz`` measured on the Hann periodogram of ``x``: tone
    power ``A^2/2`` from its bins (+-40, widened by the Lorentzian skirt of ``linewidth_hz``)
    less their noise, N0 the mean one-sided density 5-15 MHz from the tone."""
    x = np.asarray(x, np.float64)
    n = x.shape[0]
    w = np.hanning(n)
    p = np.abs(np.fft.rfft(x * w)) ** 2 / (n * np.sum(w * w))   # mean square per bin
    df = fs / n
    k = round(f_hz / df)
    half = 40 + int(20 * linewidth_hz / df)
    side = np.r_[k - round(15e6 / df):k - round(5e6 / df), k + round(5e6 / df):
                 k + round(15e6 / df)]
    n0 = float(np.mean(p[side])) * 2 / df
    tone = float(np.sum(p[k - half:k + half + 1])) * 2 - (2 * half + 1) * n0 * df
    return 10 * math.log10(tone / n0)


@pytest.mark.parametrize("name", NAMES)
def test_delay_and_frequency_offset(shared_traces, name):
    res = _run(name)
    truth = read_truth(shared_traces[name])
    a = res.acquisition
    # timing: the data-aided fit over K = 16384 symbols has the Cramer-Rao sd
    # 1/(2 pi B_rms sqrt(2 K snr)) (B_rms = 0.03 cycles/sample at 10 samples/symbol, roll-off
    # 0.2): 0.033 sample at snr 0.8 (pristine), 0.05 at snr 0.33 (metro); the receiver reports
    # it as sync.timing_std_samples. 4 sd, which is at most 0.24 sample.
    sd_tau = a.sync.timing_std_samples
    assert sd_tau < 0.06
    assert abs(a.tau0 - truth.delay_samples) < 4 * sd_tau
    assert not a.sync.inverted
    # frequency: least-squares slope of a Wiener phase (D = 2 pi linewidth) over T_obs has
    # sd = sqrt(6 D / (5 T_obs)) / (2 pi): 126 Hz (basic), 400 Hz (metro) for T_obs = 1 ms;
    # plus a 5 Hz floor for the pilot's white phase noise (pristine)
    t_obs = res.n_received / 100e6
    sd_f = math.sqrt(6 * 2 * math.pi * truth.linewidth_hz / (5 * t_obs)) / (2 * math.pi)
    assert abs(res.frequency_offset_hz - truth.frequency_offset_hz) < 4 * sd_f + 5.0
    # the linewidth estimated from the pilot (drives the filter design) is right to 30%
    if truth.linewidth_hz > 0:
        assert a.pilot.linewidth_hz == pytest.approx(truth.linewidth_hz, rel=0.3)
    # and a zero linewidth is reported as below the estimate's resolution (2 sd: ~0.3 Hz here),
    # not as a small measured value
    assert a.pilot.linewidth_below_resolution == (truth.linewidth_hz == 0)
    assert 0 < a.pilot.linewidth_resolution_hz < 1.0
    # C/N0 is the pilot's over the white noise at its frequency (before: basic 1.1 dB low,
    # the pilot's own image leaking into the block means counted as noise)
    with TraceReader(shared_traces[name]) as r:
        x = r.read("signal")[5000:5000 + (1 << 19)]
    ref = spectral_cn0_dbhz(x, 250e6 + res.frequency_offset_hz, 1e9, truth.linewidth_hz)
    assert a.pilot.pilot_cn0_dbhz[0] == pytest.approx(ref, abs=0.4)
    assert a.lock_metrics["pilot_snr_db"] > 40
    assert a.lock_metrics["sync_pslr"] > 1000


@pytest.mark.parametrize("method", ["fir", "kalman", "kalman-rts"])
def test_chunked_equals_one_chunk(tmp_path, method):
    """Chunk sizes that are multiples of nothing give the same estimates and the same key."""
    path = SHARED_TRACES["metro"]
    opt = ReceiverOptions(phase_method=method)
    outs = []
    for i, chunk in enumerate((1 << 21, 99_991, 262_147, 31_337)):
        if method != "fir" and chunk == 31_337:
            continue
        key = tmp_path / f"key{i}.h5"
        r = process_recording(path, options=opt, pe_fraction=0.3, seed=7, chunk_samples=chunk,
                              raw_key_out=key)
        outs.append((r, read_raw_key(key)))
    r0, k0 = outs[0]
    for r, k in outs[1:]:
        for name in ("transmittance", "excess_noise_snu", "t_eff", "sigma2"):
            assert getattr(r.estimates, name) == pytest.approx(getattr(r0.estimates, name),
                                                               rel=1e-7, abs=1e-9)
        assert r.electronic_noise_snu == pytest.approx(r0.electronic_noise_snu, rel=1e-9)
        np.testing.assert_array_equal(k.bob_tx_index, k0.bob_tx_index)
        np.testing.assert_array_equal(k.pe_tx_index, k0.pe_tx_index)
        np.testing.assert_allclose(k.bob_symbols, k0.bob_symbols, rtol=0, atol=1e-5)


def test_raw_key_file(tmp_path, shared_traces):
    key = tmp_path / "raw.h5"
    res = process_recording(shared_traces["basic"], pe_fraction=0.25, seed=3, raw_key_out=key)
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    raw = read_raw_key(key)
    n = res.n_received
    assert raw.bob_symbols.shape[0] + raw.pe_tx_index.shape[0] == n
    assert np.intersect1d(raw.bob_tx_index, raw.pe_tx_index).size == 0
    # the disclosed fraction is Bernoulli(0.25): within 5 sd of n/4
    assert abs(raw.pe_tx_index.shape[0] - n / 4) < 5 * math.sqrt(n * 0.25 * 0.75)
    # the key symbols are SNU-normalised and phase corrected: regression on them (which Bob
    # could not do, the test can) gives the same t as PE, within 4 sd of the difference
    with TraceReader(shared_traces["basic"]) as r:
        x = r.symbols()[raw.bob_tx_index].astype(np.complex128)
    y = raw.bob_symbols.astype(np.complex128)
    t_key = np.sum((x.conj() * y).real) / np.sum(np.abs(x) ** 2)
    sd = math.sqrt(res.estimates.sigma2 / (2 * x.shape[0] * 5.0)
                   + res.estimates.t_eff_std**2)
    assert abs(t_key - res.estimates.t_eff) < 4 * sd
    assert abs(np.angle(np.vdot(x, y))) < 0.05
    assert raw.estimates["transmittance"] == pytest.approx(res.estimates.transmittance)


def _copy_trace(src, dst, *, signal=None, symbols=None, electronic_noise=None):
    with TraceReader(src) as r:
        tx, fs = r.tx, r.sample_rate_hz
        vpc = r.adc["signal"].volts_per_code
        data = {n: r.read(n) for n in ("signal", "shot_noise", "electronic_noise")}
        sym = r.symbols()
    if signal is not None:
        data["signal"] = signal(data)
    if electronic_noise is not None:
        data["electronic_noise"] = electronic_noise(data)
    if symbols is not None:
        sym = symbols(sym)
    with TraceWriter(dst, tx=tx, sample_rate_hz=fs, volts_per_code=vpc) as w:
        w.write_symbols(sym)
        for n, a in data.items():
            w.append(n, a)


def test_lock_failure_without_pilot(tmp_path, shared_traces):
    bad = tmp_path / "nopilot.h5"
    # the "signal" is a second shot-noise capture: no pilot, no quantum signal
    _copy_trace(shared_traces["basic"], bad,
                signal=lambda d: np.concatenate([d["shot_noise"], d["shot_noise"][:5234]]))
    with pytest.raises(ReceiverLockError, match="pilot") as ei:
        process_recording(bad)
    m = ei.value.metrics
    assert m["pilot_snr_db"] < m["pilot_snr_min_db"]


def test_lock_failure_with_wrong_symbols(tmp_path, shared_traces):
    bad = tmp_path / "wrongtx.h5"
    rng = np.random.default_rng(99)
    _copy_trace(shared_traces["basic"], bad,
                symbols=lambda s: (rng.normal(0, 2.2, s.shape)
                                   + 1j * rng.normal(0, 2.2, s.shape)).astype(np.complex64))
    key = tmp_path / "raw.h5"
    with pytest.raises(ReceiverLockError, match="synchronisation") as ei:
        process_recording(bad, raw_key_out=key)
    # the streamed raw-key file is discarded: nothing at the target, no temporary left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wrongtx.h5"]
    m = ei.value.metrics
    assert m["sync_pslr"] < m["sync_pslr_min"]
    assert m["pilot_snr_db"] > 40          # the pilot itself was fine


def test_pe_fraction_validated():
    with pytest.raises(ValueError, match="pe_fraction"):
        process_recording(SHARED_TRACES["basic"], pe_fraction=0.0)


def test_arguments_validated_before_anything_is_written(tmp_path):
    trace = tmp_path / "basic.h5"
    trace.write_bytes(SHARED_TRACES["basic"].read_bytes())
    before = trace.read_bytes()
    for kw, msg in [(dict(beta=2.0), "beta"), (dict(beta=math.nan), "beta"),
                    (dict(eps_pe=0.0), "eps_pe"), (dict(seed="1"), "seed"),
                    (dict(raw_key_out=""), "empty"),
                    # the raw key must never replace the recording it came from
                    (dict(raw_key_out=trace), "recording itself"),
                    (dict(raw_key_out=tmp_path / "." / "basic.h5"), "recording itself")]:
        with pytest.raises(ValueError, match=msg):
            process_recording(trace, **kw)
    assert trace.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["basic.h5"]


def test_disclosed_subset_is_random_by_default_and_reproducible_by_its_seed():
    a = process_recording(SHARED_TRACES["basic"], pe_fraction=0.5)
    b = process_recording(SHARED_TRACES["basic"], pe_fraction=0.5)
    # a subset fixed in advance would be known to Eve: two runs draw different 63-bit seeds
    assert a.pe_seed != b.pe_seed and a.summary()["pe_seed"] == a.pe_seed
    assert a.estimates.sigma2 != b.estimates.sigma2
    again = process_recording(SHARED_TRACES["basic"], pe_fraction=0.5, seed=a.pe_seed)
    assert again.estimates == a.estimates and again.pe_seed == a.pe_seed


def test_noiseless_electronic_capture_gives_zero_v_el(tmp_path):
    # a float32 capture of an ideal detector (or a simulator with v_el = 0) has variance 0:
    # v_el = 0 +- 0, not a ZeroDivisionError
    trace = tmp_path / "noiseless_el.h5"
    _copy_trace(SHARED_TRACES["basic"], trace,
                electronic_noise=lambda d: np.zeros_like(d["electronic_noise"]))
    r = process_recording(trace, pe_fraction=1.0)
    assert r.electronic_noise_snu == 0.0 and r.electronic_noise_std_snu == 0.0
    assert r.electronic_noise.variance == 0.0
    # N0 is then the shot-noise capture's variance alone, and xi stays finite
    assert r.n0_codes2 == pytest.approx(r.shot_noise.variance, rel=1e-12)
    assert math.isfinite(r.estimates.excess_noise_snu)


@pytest.mark.parametrize("delay", [77.0, 20.0])
def test_first_symbol_before_the_matched_filter_fits_is_a_lock_error(simulated, delay):
    # the first symbol's matched filter needs half a filter length (80 samples here: span 16
    # at 10 samples per symbol) before it: the receiver must say so, not clamp the delay to
    # the edge (xi 1.4 SNU) or crash
    from qkd_hw.sim.params import SimParams

    trace = simulated(SimParams(delay_samples=delay, frequency_offset_hz=2e6),
                      seed=3, n_symbols=20_000, truth_phase=False)
    with pytest.raises(ReceiverLockError, match="half length") as ei:
        process_recording(trace, seed=1)
    assert ei.value.metrics["matched_filter_half_samples"] == 80
    # and one sample later than the limit it locks, at the true delay (one recording for both
    # cases)
    late = simulated(SimParams(delay_samples=81.3, frequency_offset_hz=2e6),
                     seed=3, n_symbols=20_000, truth_phase=False)
    assert process_recording(late, seed=1).acquisition.tau0 == pytest.approx(81.3, abs=0.1)


@pytest.mark.parametrize("level", [0, 7])
def test_dead_signal_capture_is_a_lock_error(tmp_path, level):
    # a constant capture (dead channel, ADC offset) has a zero noise floor: NaN pilot SNR,
    # which must fail the lock check (it passed "snr < min" and gave xi = -2e14)
    bad = tmp_path / "dead.h5"
    _copy_trace(SHARED_TRACES["basic"], bad, signal=lambda d: np.full_like(d["signal"], level))
    with pytest.raises(ReceiverLockError, match="pilot not found") as ei:
        process_recording(bad, seed=1)
    assert math.isnan(ei.value.metrics["pilot_snr_db"])


def test_too_short_recording_is_a_lock_error_that_says_so(tmp_path):
    from qkd_hw.sim.params import SimParams
    from qkd_hw.sim.simulate import simulate_recording

    trace = tmp_path / "short.h5"
    simulate_recording(trace, SimParams(frequency_offset_hz=2e6, linewidth_hz=100.0), seed=5,
                       n_symbols=300, truth_phase=False)
    with pytest.raises(ReceiverLockError, match="too short") as ei:
        process_recording(trace, seed=1)
    assert ei.value.metrics["pilot_blocks"] < 64


def test_clock_offset_is_probed_in_a_recording_of_a_few_sync_lengths(tmp_path):
    # 60000 symbols (3.7 sync lengths): the head alone measures 2 ppm at ~0.74 ppm sd, not
    # significant, so it would be set to 0 and the timing would drift by 1.2 samples (xi
    # +30 mSNU); a late probe with a lever arm of ~2 sync lengths must measure it
    from qkd_hw.sim.params import SimParams
    from qkd_hw.sim.simulate import simulate_recording

    trace = tmp_path / "ppm.h5"
    simulate_recording(trace, SimParams(clock_offset_ppm=2.0, frequency_offset_hz=-3e6,
                                        linewidth_hz=300.0, delay_samples=2222.2),
                       seed=6, n_symbols=60_000, truth_phase=False)
    a = process_recording(trace, seed=1, pe_fraction=1.0).acquisition
    assert len(a.clock_probes) == 1
    assert a.clock_offset_std_ppm < 0.3
    assert abs(a.clock_offset_ppm - 2.0) < 4 * a.clock_offset_std_ppm


def test_pilot_lost_mid_recording_is_a_lock_error(tmp_path):
    # 200k samples in the middle replaced by a shot-noise capture (pilot and signal gone):
    # the tracker would follow noise there and xi would come out ~2 SNU; the receiver must
    # stop with the lock metrics and leave no raw key
    def cut(d):
        x = d["signal"].copy()
        x[500_000:700_000] = d["shot_noise"][:200_000]
        return x
    bad = tmp_path / "loss.h5"
    _copy_trace(SHARED_TRACES["basic"], bad, signal=cut)
    key = tmp_path / "raw.h5"
    with pytest.raises(ReceiverLockError, match="lost lock") as ei:
        process_recording(bad, seed=1, raw_key_out=key)
    m = ei.value.metrics
    assert m["pilot_power_db_vs_start"] < m["pilot_loss_threshold_db"]
    assert 400_000 <= m["lost_from_sample"] <= 700_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss.h5"]


def test_calibration_uncertainty_is_reported():
    # xi = (sigma2 - V_shot)/t^2 in codes: sd(xi) from the calibration alone is
    # (1 + v_el)/sqrt(n) / t^2 for n complex noise outputs (|y|^2/2 exponential per quadrature
    # pooled: relative sd 1/sqrt(n)); T moves with N0 = V_shot - V_el
    r = _run("basic")
    s = r.summary()
    e, sn, el = r.estimates, r.shot_noise, r.electronic_noise
    vel = r.electronic_noise_snu
    analytic = (1 + vel) / math.sqrt(sn.n_symbols) / e.t_eff**2
    assert s["excess_noise_calibration_std_snu"] == pytest.approx(analytic, rel=0.05)
    n0_rel = math.hypot(sn.variance, el.variance) / math.sqrt(sn.n_symbols) / r.n0_codes2
    assert s["transmittance_calibration_std"] == pytest.approx(e.transmittance * n0_rel,
                                                               rel=0.05)
