"""Acquisition, carrier design, PE helpers and option validation of the DSP pipeline."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from dsp.acquisition import acquire_pilot, check_search_range, pilot_span
from dsp.carrier import design_pilot_filter
from dsp.errors import DspLockError
from dsp.estimation import PeAccumulator, estimate_parameters
from dsp.pe import PairMoments, disclosed_mask
from dsp.pipeline import LinkParameters, ReceiverOptions, acquire

FS = 1e9
LINK = {"signal_frequency_hz": 150e6, "symbol_rate_hz": 100e6, "rolloff": 0.2}


def _tones(n, freqs, amps, noise=30.0, seed=0, lw=0.0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    phi = np.cumsum(rng.normal(0, math.sqrt(2 * math.pi * lw / FS), n)) if lw else 0.0
    x = rng.normal(0, noise, n)
    for f, a in zip(freqs, amps, strict=True):
        x += a * np.cos(2 * np.pi * f / FS * t + phi + 0.3)
    return np.round(x).astype(np.int16)


def test_search_range_refuses_images_and_nyquist():
    check_search_range(FS, pilot_frequencies_hz=(250e6,), search_hz=50e6, **LINK)
    with pytest.raises(ValueError, match="leaves"):
        check_search_range(FS, pilot_frequencies_hz=(480e6,), search_hz=50e6, **LINK)
    # quantum band at 460 MHz (+-60, +-R): offsets beyond Nyquist fold it back onto
    # [1000-570, 1000-350] = [430, 650] MHz, which a search of 420 +- 50 MHz would see
    with pytest.raises(ValueError, match="image"):
        check_search_range(FS, pilot_frequencies_hz=(420e6,), search_hz=50e6,
                           signal_frequency_hz=460e6, symbol_rate_hz=100e6, rolloff=0.2)
    with pytest.raises(ValueError, match="> 0"):
        check_search_range(FS, pilot_frequencies_hz=(250e6,), search_hz=0.0, **LINK)


def test_pilot_offset_snr_and_linewidth():
    x = _tones(1 << 20, [250e6 + 12.345678e6], [300.0], lw=2000.0)
    acq = acquire_pilot(x, FS, pilot_frequencies_hz=(250e6,), search_hz=50e6, snr_min_db=20)
    # Wiener phase: LS slope sd = sqrt(6 D / (5 T)) / 2 pi = 330 Hz for T = 1 ms, 2 kHz
    assert abs(acq.frequency_offset_hz - 12.345678e6) < 4 * 330
    assert acq.linewidth_hz == pytest.approx(2000, rel=0.3)
    # amplitude A = 300 over white noise of variance s2 = 900 (+1/12 rounding): the block mean
    # of D = 64 mixed samples has complex noise E|n|^2 = s2/D on a phasor of modulus A/2, and
    # the real tone's image (-f, mixed to -2f) leaves a rotating phasor of modulus
    # (A/2) rho, rho = |sum_{n<D} exp(-4 pi j f n / fs)| / D = 0.015 at f = 262.3 MHz, which
    # scatters the block phasors like noise: phase variance per block
    # (s2/D + (A/2)^2 rho^2) / (2 (A/2)^2) = (14.1 + 5.2) / 45000 = 4.3e-4 rad^2
    f = 250e6 + 12.345678e6
    rho = abs(np.exp(-4j * np.pi * f / FS * np.arange(64)).mean())
    expect = (900 / 64 + 150.0**2 * rho**2) / (2 * 150.0**2)
    assert acq.phase_noise_var == pytest.approx(expect, rel=0.1)
    assert acq.pilot_amplitudes[0] == pytest.approx(300, rel=0.01)
    # C/N0 = (A^2 / 2) / N0 with the one-sided density N0 = 2 s2 / fs of the white noise
    # alone (before: 1.4 dB low, the image counted as noise)
    cn0 = 10 * math.log10(300.0**2 / 2 / (2 * (900 + 1 / 12) / FS))
    assert acq.pilot_cn0_dbhz[0] == pytest.approx(cn0, abs=0.3)


def test_two_pilots_carrier_to_noise_is_not_the_other_pilots_leakage():
    # pilots 20 MHz apart (300 and 150 codes, white noise sd 30): the D = 64 block mean of
    # each holds the other as a rotating phasor of |g| = 0.19 of its amplitude (before:
    # C/N0 12 and 17 dB low); C/N0 = (A^2/2) / (2 s2 / fs)
    x = _tones(1 << 19, [253e6, 273e6], [300.0, 150.0])
    acq = acquire_pilot(x, FS, pilot_frequencies_hz=(250e6, 270e6), search_hz=10e6,
                        snr_min_db=20)
    for a, cn0 in zip((300.0, 150.0), acq.pilot_cn0_dbhz, strict=True):
        assert cn0 == pytest.approx(10 * math.log10(a * a / 2 / (2 * (900 + 1 / 12) / FS)),
                                    abs=0.3)


def test_two_pilots_joint_search_picks_the_common_offset():
    # a strong spur at 300 MHz would win a single-pilot search for the first pilot (window
    # 210-310 MHz); only offset -30 MHz lines up both real pilots (220 and 290 MHz)
    x = _tones(1 << 20, [220e6, 290e6, 300e6], [200.0, 200.0, 260.0])
    acq = acquire_pilot(x, FS, pilot_frequencies_hz=(250e6, 320e6), search_hz=45e6,
                        snr_min_db=20)
    assert abs(acq.frequency_offset_hz + 30e6) < 100


def test_pilot_missing_raises_lock_error_with_metrics():
    x = _tones(1 << 18, [], [])
    with pytest.raises(DspLockError, match="pilot not found") as ei:
        acquire_pilot(x, FS, pilot_frequencies_hz=(250e6,), search_hz=50e6, snr_min_db=20)
    assert ei.value.metrics["pilot_snr_db"] < 20
    assert "pilot_snr_db=" in str(ei.value)


def test_filter_design_is_the_optimum():
    d = design_pilot_filter(FS, phase_noise_var=2e-4, acq_decimation=64, linewidth_hz=1000)
    c_n = 2e-4 * 64 / FS
    tau = math.sqrt(12 * c_n / (2 * math.pi * 1000))
    assert d.tau_s == pytest.approx(tau, rel=0.15)          # rounding to D x M samples
    # the predicted error variance is minimal there: longer or shorter windows are worse
    def var(t):
        return c_n / t + 2 * math.pi * 1000 * t / 12
    assert var(tau) <= min(var(0.5 * tau), var(2 * tau))
    assert d.predicted_phase_var == pytest.approx(var(d.tau_s), rel=1e-9)
    with pytest.raises(ValueError, match=r"\('fir', 'kalman', 'kalman-rts'\)"):
        design_pilot_filter(FS, phase_noise_var=2e-4, acq_decimation=64, linewidth_hz=1e3,
                            method="pll")


def test_kalman_pilot_blocks_keep_the_quantum_band_beyond_the_first_null():
    from dsp.carrier import pilot_block_guard

    # band 300 MHz +- 140 MHz (200 MBd, roll-off 0.4), pilot 480 MHz: 40 MHz gap -> D >= 50
    g = pilot_block_guard(2e9, pilot_frequencies_hz=(480e6,), signal_frequency_hz=300e6,
                          symbol_rate_hz=200e6, rolloff=0.4)
    assert g == 50
    # the nearest of two pilots counts, below or above the band
    assert pilot_block_guard(1e9, pilot_frequencies_hz=(250e6, 320e6), signal_frequency_hz=150e6,
                             symbol_rate_hz=100e6, rolloff=0.2) == 25
    assert pilot_block_guard(1e9, pilot_frequencies_hz=(470e6, 200e6), signal_frequency_hz=400e6,
                             symbol_rate_hz=50e6, rolloff=0.2) == math.ceil(1e9 / (70e6 - 30e6))
    # a 10 kHz line with a strong pilot: the boxcar optimum is ~40 ns -> D = 8 for "fir";
    # the Kalman blocks are lengthened to the guard, but never beyond the filter duration
    kw = dict(phase_noise_var=2e-4, acq_decimation=64, linewidth_hz=1e4)
    fir = design_pilot_filter(2e9, method="fir", min_block_samples=50, **kw)
    kal = design_pilot_filter(2e9, method="kalman-rts", min_block_samples=50, **kw)
    capped = design_pilot_filter(2e9, method="kalman-rts", min_block_samples=10**6, **kw)
    tau_samples = math.sqrt(12 * 2e-4 * 64 / 2e9 / (2 * math.pi * 1e4)) * 2e9
    fwd = design_pilot_filter(2e9, method="kalman", min_block_samples=50, **kw)
    assert fir.decimation < 50 and fwd.decimation == 50
    assert capped.decimation == -(-round(tau_samples) // capped.overlap)   # hops of it
    # the Kalman variances follow the block length
    assert fwd.q == pytest.approx(2 * math.pi * 1e4 * 50 / 2e9)
    assert fwd.r == pytest.approx(2e-4 * 64 / 50)
    # the smoother overlaps windows of >= 50 samples (here 3.4 time constants) by hops
    H, h = kal.decimation, kal.overlap
    assert h > 1 and H * h >= 50 > (H - 1) * h
    assert kal.q == pytest.approx(2 * math.pi * 1e4 * H / 2e9)
    assert kal.r == pytest.approx(kal.r_scale * 2e-4 * 64 / (H * h))


def test_options_validated():
    with pytest.raises(ValueError, match="phase_method must be one of"):
        ReceiverOptions(phase_method="magic")
    with pytest.raises(ValueError, match="span_symbols"):
        ReceiverOptions(span_symbols=1)
    assert ReceiverOptions().span(0.2) == 16
    assert ReceiverOptions().span(0.1) == 28
    assert ReceiverOptions().span(0.5) == 12
    assert ReceiverOptions().span(0.05) == 56


def test_disclosed_mask_is_chunking_independent():
    whole = disclosed_mask(0, 300_000, fraction=0.3, seed=11)
    parts = np.concatenate([disclosed_mask(a, b, fraction=0.3, seed=11)
                            for a, b in ((0, 1), (1, 70_001), (70_001, 299_999),
                                         (299_999, 300_000))])
    np.testing.assert_array_equal(whole, parts)
    # Bernoulli(0.3): within 5 sd
    assert abs(whole.mean() - 0.3) < 5 * math.sqrt(0.21 / 300_000)
    assert not np.array_equal(whole, disclosed_mask(0, 300_000, fraction=0.3, seed=12))
    assert disclosed_mask(5, 9, fraction=1.0, seed=0).all()
    with pytest.raises(ValueError, match="pe_fraction"):
        disclosed_mask(0, 5, fraction=1.5, seed=0)


@pytest.mark.parametrize("detection", ["heterodyne", "homodyne"])
def test_pair_moments_rotation_equals_rotated_arrays(detection):
    rng = np.random.default_rng(2)
    n = 50_000
    x = (rng.normal(0, 2, n) + 1j * rng.normal(0, 2, n)).astype(np.complex64)
    theta = 0.7
    y = (0.4 * x * np.exp(1j * theta) + rng.normal(0, 1, n) + 1j * rng.normal(0, 1, n))
    pm = PairMoments()
    for a, b in ((0, 123), (123, 40_000), (40_000, n)):
        pm.update(x[a:b], y[a:b].astype(np.complex64))
    assert pm.phase() == pytest.approx(np.angle(np.vdot(x, y)), abs=1e-6)
    acc = pm.accumulator(detection, pm.phase())
    ref = PeAccumulator(detection)
    ref.update(x, (y.astype(np.complex64) * np.exp(-1j * pm.phase())).astype(np.complex128))
    kw = {"modulation_variance_snu": 4.0, "efficiency": 0.7, "electronic_noise_snu": 0.1}
    e1, e2 = estimate_parameters(acc, **kw), estimate_parameters(ref, **kw)
    for name in ("t_eff", "sigma2", "transmittance", "excess_noise_snu"):
        assert getattr(e1, name) == pytest.approx(getattr(e2, name), rel=1e-6)
    assert acc.n == ref.n


def test_refine_timing_finds_a_smooth_peak_to_sub_grid_precision():
    from dsp.acquisition import refine_timing

    # a parabola is interpolated exactly by the last grid; a Gaussian-shaped correlation peak
    # (width ~ 1 sample, like an RRC autocorrelation at 10 samples/symbol) to << 1/256 sample
    assert refine_timing(lambda t: 5.0 - (t - 12.3456) ** 2, 12.0, lower=0.0) == \
        pytest.approx(12.3456, abs=1e-9)
    assert refine_timing(lambda t: np.exp(-((t - 7.61) ** 2)), 7.0, lower=0.0) == \
        pytest.approx(7.61, abs=2e-4)
    # instants below ``lower`` are never evaluated
    seen = []
    refine_timing(lambda t: seen.append(t) or -((t - 3.0) ** 2), 3.0, lower=2.5)
    assert min(seen) >= 2.5


def test_refine_timing_batch_mode_evaluates_the_same_grids():
    from dsp.acquisition import refine_timing

    def f(t):
        return np.exp(-((t - 7.61) ** 2))
    calls = []

    def batch(taus):
        calls.append(len(taus))
        return [f(t) for t in taus]
    assert refine_timing(batch, 7.0, lower=6.0, batch=True) == refine_timing(f, 7.0, lower=6.0)
    assert calls == [9, 9, 7]   # one call per grid; the first grid (13) cut at ``lower``


def test_sync_scores_are_the_per_instant_matched_filter_and_dot_bit_for_bit():
    """The timing grid's scores on worker threads (one numba thread each) against one
    ``matched_filter_at`` + ``cdot`` per instant, the synchronisation's definition."""
    import numba

    from dsp.acquisition import sync_scores
    from dsp.core import cdot
    from dsp.matched_filter import matched_filter_at
    from dsp.rrc import MatchedFilterBank

    rng = np.random.default_rng(8)
    x = rng.integers(-2000, 2000, 40_000).astype(np.int16)
    alice = (rng.normal(size=3000) + 1j * rng.normal(size=3000)).astype(np.complex64)
    alice = alice.astype(np.complex128)
    phase = (0.0, 64.0, np.cumsum(rng.normal(0, 0.05, 40_000 // 64 + 2)))
    for period in (10.0, 10.000123):   # paired and unpaired polyphase rows
        bank = MatchedFilterBank(samples_per_symbol=period, rolloff=0.2, span_symbols=24,
                                 n_phases=256, mixer_cycles_per_sample=0.2137, taper=5.0)
        taus = 300.3 + 0.37 * np.arange(-6, 7)
        ref = [cdot(alice, matched_filter_at(x, bank, first_sample=0, tau0=t, period=period,
                                             k_start=0, count=alice.shape[0], phase=phase))
               for t in taus]
        prev = numba.get_num_threads()
        try:
            for n in {1, numba.config.NUMBA_NUM_THREADS}:
                numba.set_num_threads(n)
                got = sync_scores(x, bank, taus, period=period, phase=phase, alice=alice)
                assert got.tolist() == ref
        finally:
            numba.set_num_threads(prev)


def test_segment_phase_uses_absolute_time_with_two_pilots():
    """The clock probe's carrier phase (a late segment) must combine the pilots on absolute
    time, as on the head: referencing their oscillators to the segment start rotates the
    pilots against each other and the combined phasor partly cancels (wrong phase)."""
    from dsp.acquisition import PilotAcquisition
    from dsp.lock import segment_phase
    from dsp.options import LinkParameters

    n, n0 = 400_000, 123_457
    x = _tones(n, (250.3e6, 321.7e6), (400.0, 300.0), seed=5, lw=2e3)
    link = LinkParameters(sample_rate_hz=FS, pilot_frequencies_hz=(250e6, 321.7e6),
                          modulation_variance_snu=5.0, efficiency=0.7, detection="heterodyne",
                          n_symbols=1000, **LINK)
    z = [np.mean(x[:200_000] * np.exp(-2j * np.pi * f / FS * np.arange(200_000)))
         for f in (250.3e6, 322.0e6)]
    w = (1.0 + 0j, np.exp(-1j * np.angle(z[1] / z[0])) * 0.75)   # head-aligned weights
    pil = PilotAcquisition(frequency_offset_hz=0.3e6, coarse_offset_hz=0.3e6,
                           pilot_snr_db=(60.0, 60.0), pilot_cn0_dbhz=(100.0, 100.0),
                           phase_noise_var=1e-3, linewidth_hz=2e3, linewidth_std_hz=1.0,
                           decimation=64, pilot_weights=w, pilot_amplitudes=(400.0, 300.0))
    carrier = design_pilot_filter(FS, phase_noise_var=1e-3, acq_decimation=64,
                                  linewidth_hz=2e3, method="kalman-rts")
    t_full, dt, ph_full = segment_phase(x, link, pil, carrier)
    t_seg, dt2, ph_seg = segment_phase(x[n0:], link, pil, carrier, first_sample=n0)
    assert dt2 == dt
    # the segment grid (relative to x[n0]) sits on the full grid shifted by n0
    j = np.round((t_seg + n0 - t_full) / dt).astype(int)
    assert abs(t_seg + n0 - (t_full + j * dt)) < 1e-9
    a, b = ph_full[j + 200:j + 2000], ph_seg[200:2000]
    d = (a - b) - np.round((a - b).mean() / (2 * np.pi)) * 2 * np.pi
    assert np.std(d) < 0.05 and abs(np.mean(d)) < 0.05


def test_sample_buffer_keeps_exactly_the_untrimmed_samples():
    """The stream's overlap-save buffer reuses one backing array (tail moved to the front,
    possibly overlapping): after any sequence of appends and trims it holds samples
    [n0, n_end) of the stream, and it copies the chunks (their memory may be reused)."""
    from dsp.buffer import SampleBuffer

    rng = np.random.default_rng(9)
    x = rng.integers(-2000, 2000, 400_000).astype(np.int16)
    buf, pos = SampleBuffer(), 0
    for n in (5000, 7000, 30_000, 1, 100, 50_000, 20_000, 120_000, 87_900):
        chunk = x[pos:pos + n].copy()
        buf.append(chunk)
        chunk[:] = 0                      # the caller reuses its chunk memory
        pos += n
        np.testing.assert_array_equal(buf.data, x[buf.n0:buf.n_end])
        buf.trim(buf.n_end - int(rng.integers(0, min(60_000, buf.n_end - buf.n0) + 1)))
        np.testing.assert_array_equal(buf.data, x[buf.n0:buf.n_end])
    assert buf.n_end == pos
    with pytest.raises(ValueError, match="dtype"):
        buf.append(np.zeros(10, np.float32))


@pytest.mark.parametrize("fs, w", [(1e9, 60e6), (2.5e9, 137.5e6), (2.5e9, 37.5e6), (1e9, 120e6)])
def test_sync_decimation_filter_keeps_the_band_and_stops_its_aliases(fs, w):
    """The coarse synchronisation's anti-alias FIR: the band |f| <= w passes flat (a matched
    filter follows in the frequency domain; a tilt only reweights the correlation), everything
    that folds onto the band after decimation by R (|f| >= fs/R - w) is >= 60 dB down (the
    band's mirror image would otherwise correlate with the spectrally inverted hypothesis)."""
    from dsp.acquisition import _sync_decimation

    R, h = _sync_decimation(fs, w)
    assert R == int(fs // (3 * w)) >= 2 and h.shape[0] % 2 == 1
    f = np.linspace(0, fs / 2, 20001)
    n = np.arange(h.shape[0]) - (h.shape[0] - 1) / 2
    H = np.abs(np.exp(-2j * np.pi * np.outer(f / fs, n)) @ h.astype(np.float64))
    assert np.all(np.abs(H[f <= w] - 1) < 1e-2)
    assert 20 * np.log10(H[f >= fs / R - w].max()) < -60
    # too wide a band for any decimation: none
    assert _sync_decimation(1e9, 200e6)[0] == 1


def _head_with_pilot(n: int = 300_000) -> tuple[np.ndarray, LinkParameters]:
    fs = 1e9
    rng = np.random.default_rng(9)
    t = np.arange(n) / fs
    head = (rng.normal(0, 35, n) + 300 * np.cos(2 * np.pi * 250e6 * t)).astype(np.float32)
    link = LinkParameters(sample_rate_hz=fs, symbol_rate_hz=100e6, rolloff=0.2,
                          signal_frequency_hz=150e6, pilot_frequencies_hz=(250e6,),
                          modulation_variance_snu=5.0, efficiency=0.7, detection="heterodyne",
                          n_symbols=20_000)
    return head, link


@pytest.mark.parametrize("alice", ["zeros", "huge"])
def test_sync_without_correlation_is_a_lock_error_without_warnings(alice):
    # an all-zero reference correlates to exactly 0 everywhere (the side-lobe mean was 0/0);
    # a 1e30 symbol overflowed the complex64 power |corr|^2: both printed RuntimeWarnings
    head, link = _head_with_pilot()
    x = np.zeros(4096, np.complex64)
    if alice == "huge":
        x[:] = (np.random.default_rng(1).normal(size=4096) * 2).astype(np.complex64)
        x[100] = 1e30
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DspLockError, match="synchronisation failed"):
            acquire(head, x, link)


def test_pilot_span_excludes_a_pilot_free_lead_and_a_swamping_preamble():
    rng = np.random.default_rng(5)
    n, W = 6400, 32
    strong = 1.0 + 0.05 * rng.standard_normal(n)
    weak = 0.25 + 0.02 * rng.standard_normal(n)     # a second pilot 4:1 weaker
    strong[:640] = weak[:640] = 0.001                # noise lead, no pilot
    strong[640:960], weak[640:960] = 6.0, 0.05       # preamble: swamps one, leaves the other
    b0, b1 = pilot_span([strong, weak], W)
    assert b0 == 960 + W          # one guard window after the last bad one
    assert b1 == n
    # the span ends before a pilot-free tail just as well
    strong[6000:] = 0.001
    assert pilot_span([strong, weak], W) == (960 + W, (6000 // W - 1) * W)


def test_pilot_span_is_the_whole_record_when_the_pilot_is_everywhere():
    rng = np.random.default_rng(6)
    p = 1.0 + 0.1 * rng.standard_normal(5000)        # 5000 not a multiple of the window
    assert pilot_span([p]) == (0, 5000)


def test_pilot_span_is_the_first_long_run_not_the_longest():
    # a pilot lost inside the data must stay ahead of the span, where the lock monitor sees it
    p = np.ones(3200)
    p[:320] = 0.001            # lead
    p[1280:1600] = 0.001       # pilot lost later: the run after it is longer
    assert pilot_span([p], 32, min_blocks=256) == (320 + 32, 1280 - 32)
    # a run too short to be the data (a gap in the lead) is skipped
    p[:320] = 0.001
    p[64:128] = 1.0
    assert pilot_span([p], 32, min_blocks=256)[0] == 320 + 32


@pytest.mark.parametrize("linewidth_hz", [100.0, 1000.0])
def test_diffusion_slope_is_not_moved_by_a_few_corrupted_blocks(linewidth_hz):
    # Wiener phase q = 2 pi lw D / fs per block (analytic slope) plus white pilot noise; three
    # pairs of corrupted blocks (a burst swamping the pilot) leave cycle slips in the unwrapped
    # phase: the mean structure function then reads 20-200x the linewidth
    from dsp.fits import diffusion_slope, structure_fit

    rng = np.random.default_rng(2)
    n, D, fs = 15000, 64, 1e9
    q = 2 * np.pi * linewidth_hz * D / fs
    ph = np.cumsum(rng.normal(0, np.sqrt(q), n)) + rng.normal(0, 0.05, n)
    clean = np.unwrap(np.angle(np.exp(1j * ph)))
    # clean: the mean fit itself (so clean recordings keep their numbers), near q
    assert diffusion_slope(clean, 48) == structure_fit(clean, 48)[1]
    assert diffusion_slope(clean, 48) == pytest.approx(q, rel=0.3)
    z = np.exp(1j * ph)
    for j in (3000, 7000, 11000):
        z[j] *= np.exp(0.9j * np.pi)
        z[j + 1] *= np.exp(-0.95j * np.pi)
    bad = np.unwrap(np.angle(z))
    assert structure_fit(bad, 48)[1] > 10 * q
    assert diffusion_slope(bad, 48) == pytest.approx(q, rel=0.3)


def test_slope_std_white_is_the_spread_of_the_structure_fit():
    from dsp.fits import slope_std_white, structure_fit

    rng = np.random.default_rng(3)
    slopes = [structure_fit(rng.normal(0, 0.1, 4096), 48)[1] for _ in range(300)]
    # 300 draws: the sample sd is within ~8 % (2 sd of its own spread) of the true one
    assert np.std(slopes, ddof=1) == pytest.approx(slope_std_white(0.01, 4096, 48), rel=0.12)


def test_zero_linewidth_is_below_resolution_and_10_khz_is_not():
    # A = 30 over noise sd 30 at f = 262.3 MHz: per-block phase variance s = (900/64 +
    # (A/2)^2 rho^2) / (2 (A/2)^2) (image leakage rho, see test_pilot_offset_snr_and_linewidth)
    # on n / D = 4096 blocks of 64 ns: resolution = 2 * 2 s / sqrt(N L (L^2-1)/12) / (2 pi dt)
    n, f = 1 << 18, 262.345678e6
    rho = abs(np.exp(-4j * np.pi * f / FS * np.arange(64)).mean())
    s = (900 / 64 + 15.0**2 * rho**2) / (2 * 15.0**2)
    expect = 2 * 2 * s / math.sqrt(4096 * 48 * (48**2 - 1) / 12) / (2 * math.pi * 64 / FS)
    est = []
    for seed in range(10):
        acq = acquire_pilot(_tones(n, [f], [30.0], noise=30.0, seed=seed), FS,
                            pilot_frequencies_hz=(250e6,), search_hz=50e6, snr_min_db=20)
        assert acq.linewidth_resolution_hz == pytest.approx(expect, rel=0.1)
        assert acq.linewidth_below_resolution
        est.append(acq.linewidth_hz)
    # the estimate is max(X, 0), X ~ N(0, sd^2): its rms is sd / sqrt(2) = resolution / 2^1.5
    # (measured spread of X over 12 seeds: 26.9 Hz against 24.2 analytic)
    rms = math.sqrt(np.mean(np.square(est)))
    assert expect / 2**1.5 / 2 < rms < expect / 2**1.5 * 2
    acq = acquire_pilot(_tones(n, [f], [30.0], noise=30.0, seed=1, lw=1e4), FS,
                        pilot_frequencies_hz=(250e6,), search_hz=50e6, snr_min_db=20)
    assert acq.linewidth_hz > 5e3 and not acq.linewidth_below_resolution


def test_coarse_search_is_not_moved_by_a_pilot_free_preamble():
    # a training burst without pilot (a tone 23 MHz below the pilot, 40 dB above it) over the
    # first 30 % of the head: the whole head's periodogram peaks on the burst (coarse -20 MHz;
    # before: locked there, offset -17.5 MHz at a 61 dB pilot SNR); on the pilot span the
    # pilot is found (truth +3 MHz)
    n, fp, off = 1 << 20, 250e6, 3e6
    x = _tones(n, [fp + off], [100.0], noise=30.0).astype(np.float64)
    burst = slice(0, int(0.3 * n))
    t = np.arange(burst.stop)
    x[burst] = np.random.default_rng(1).normal(0, 30.0, burst.stop) \
        + 1e4 * np.cos(2 * np.pi * (fp - 20e6) / FS * t)
    acq = acquire_pilot(np.round(x).astype(np.int16), FS, pilot_frequencies_hz=(fp,),
                        search_hz=50e6, snr_min_db=20)
    assert abs(acq.frequency_offset_hz - off) < 1e3
    assert acq.span_samples[0] >= burst.stop
    assert acq.linewidth_below_resolution


def test_pilot_free_preamble_does_not_fail_the_lock(simulated):
    # a 60 dB (re shot noise) Zadoff-Chu preamble over 550k of the 1.2M head samples, pilots
    # at 5 and -1 dB: on the whole head the weaker pilot's peak is 19.5 dB over the median
    # (before: "pilot not found"), on the pilot span 52 dB
    from qkd_hw.sim import SimParams
    from qkd_hw.trace_io import TraceReader

    p = SimParams(frequency_offset_hz=3e6, pilot_frequencies_hz=(250e6, 270e6),
                  pilot_powers_dbsn=(5.0, -1.0), lead_samples=1000, preamble_kind="zadoff-chu",
                  preamble_samples=550_000, preamble_power_dbsn=60.0, pilot_gate="data",
                  delay_samples=551_300.3, shot_noise_samples=20_000,
                  electronic_noise_samples=20_000)
    with TraceReader(simulated(p, seed=3, n_symbols=65_000)) as r:
        x = r.read("signal")[:1_200_000]
    acq = acquire_pilot(x, FS, pilot_frequencies_hz=(250e6, 270e6), search_hz=50e6,
                        snr_min_db=20)
    assert acq.span_samples[0] >= 551_000
    assert min(acq.pilot_snr_db) > 40
    assert abs(acq.frequency_offset_hz - 3e6) < 100
