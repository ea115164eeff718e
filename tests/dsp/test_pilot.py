"""Pilot stage kernel against a naive numpy version of itself, and the ADC rail count it
makes in the same pass against dsp.clipping's numpy twin."""

from __future__ import annotations

import numpy as np
import pytest

from dsp.pilot import PilotStage, pilot_decimate, pilot_decimate_rails
from tests.dsp.test_clipping import gaussian, naive

RNG = np.random.default_rng(12345)


def _adc(n, dtype):
    if dtype == np.float32:
        return RNG.normal(0, 300, n).astype(np.float32)
    hi = 100 if dtype == np.int8 else 2000
    return RNG.integers(-hi, hi, n).astype(dtype)


@pytest.mark.parametrize("dtype", [np.int16, np.int8, np.float32])
@pytest.mark.parametrize("D", [1, 7, 64])
def test_pilot_decimate_matches_numpy(dtype, D):
    fs, f = 1e9, 251.234567e6
    n0 = 12345                       # absolute index of x[0]: oscillator uses absolute time
    x = _adc(5000, dtype)
    j0 = -(-n0 // D)                 # first whole block inside x
    nj = (n0 + x.shape[0]) // D - j0
    got = pilot_decimate(x, fs, frequency_hz=f, decimation=D, first_sample=n0, first_block=j0,
                         n_blocks=nj)
    n = np.arange(n0, n0 + x.shape[0])
    mixed = x.astype(np.float64) * np.exp(-2j * np.pi * f / fs * n)
    want = np.array([mixed[(j * D - n0):(j * D - n0 + D)].mean() for j in range(j0, j0 + nj)])
    # float32 partial sums: each term rounds at 2^-24 relative, at most ~D terms add up
    tol = 2.0**-24 * np.abs(x.astype(np.float64)).max() * max(D, 2) ** 0.5 * 2
    np.testing.assert_allclose(got, want, rtol=0, atol=tol)


def _lane_order_twin(x, tab_re, tab_im):
    """Block sums in the kernel's documented order (``dsp.pilot._block_sums``): lane k
    accumulates i = k, k + 8, ... by FMA, the last D mod 8 terms go to lane 0, then
    l0 + (((l1 + l2) + (l3 + l4)) + ((l5 + l6) + l7)). An FMA (the host's: numba compiles for
    it) is one float32 rounding of ``t x + acc``: the product of a float32 and a code is
    exact in float64 and the float64 sum is rounded to float32 (a double rounding differs
    from the single one only at exact float32 midpoints: never for these fixed inputs)."""
    X = x.astype(np.float64)
    nb, D = X.shape
    out = []
    for t in (tab_re, tab_im):
        t = t.astype(np.float64)
        lanes = np.zeros((nb, 8), np.float32)
        for m in range(D // 8):
            lanes = (lanes + X[:, 8 * m:8 * m + 8] * t[8 * m:8 * m + 8]).astype(np.float32)
        for i in range(D // 8 * 8, D):
            lanes[:, 0] = (lanes[:, 0] + X[:, i] * t[i]).astype(np.float32)
        l32 = [lanes[:, k] for k in range(8)]
        out.append(l32[0] + (((l32[1] + l32[2]) + (l32[3] + l32[4]))
                             + ((l32[5] + l32[6]) + l32[7])))
    return out


@pytest.mark.parametrize(("dtype", "D"), [(np.int16, 1), (np.int16, 7), (np.int16, 9),
                                          (np.int16, 25), (np.int16, 63), (np.int8, 25),
                                          (np.float32, 25), (np.float32, 31)])
def test_pilot_block_sums_follow_the_documented_order(dtype, D):
    """Bit for bit, at D < 64 (D < 32 for float32 codes: the vector lanes of
    ``_block_sums``): the kernel's float32 sums are the documented order, whatever the
    compiler may reorder under fastmath. The oscillator phase is 0 (cyc_per_sample = 0), so
    the output is the sums themselves."""
    from dsp.pilot import _pilot_dump
    nb = 1500                 # two kernel tasks; the second's 476 blocks: 59 x 8 + 4
    x = _adc(nb * D, dtype)
    tab = np.exp(-2j * np.pi * 0.1234567 * np.arange(D)) / D
    tab_re, tab_im = tab.real.astype(np.float32), tab.imag.astype(np.float32)
    out = np.empty(nb, np.complex128)
    _pilot_dump(x, 0, D, 0, nb, 0.0, tab_re, tab_im, out, np.empty((0, 2)),
                np.empty((0, 5), np.int64))
    want_re, want_im = _lane_order_twin(x.reshape(nb, D), tab_re, tab_im)
    np.testing.assert_array_equal(out.real, want_re.astype(np.float64))
    np.testing.assert_array_equal(out.imag, want_im.astype(np.float64))


def test_pilot_decimate_rejects_out_of_range():
    with pytest.raises(ValueError, match="outside samples"):
        pilot_decimate(np.zeros(100, np.int16), 1e9, frequency_hz=1e8, decimation=10,
                       first_sample=0, first_block=5, n_blocks=6)
    with pytest.raises(ValueError, match="int16, int8, float32"):
        pilot_decimate(np.zeros(100, np.int64), 1e9, frequency_hz=1e8, decimation=10,
                       first_sample=0, first_block=0, n_blocks=1)


@pytest.mark.parametrize("dtype", ["int16", "int8", "float32"])
@pytest.mark.parametrize("D", [1, 7, 64])
def test_rail_count_of_the_pilot_pass_matches_numpy_twin(dtype, D):
    # several kernel tasks (1024 blocks each) and segments; a low rms makes the tasks'
    # extremes differ by a code (the merge), a clip at +-3 rms piles samples up at the rails
    n0 = 4321
    for seed, rms, rail in ((0, 0.7, None), (1, 20.0, 60.0), (2, 20.0, None)):
        x = gaussian(140_000, rms, dtype, seed, rail=rail)
        j0 = -(-n0 // D)
        nj = (n0 + x.shape[0]) // D - j0 - 1     # not up to the end: only the blocks count
        z, rails = pilot_decimate_rails(x, 1e9, frequency_hz=1.7e8, decimation=D,
                                        first_sample=n0, first_block=j0, n_blocks=nj)
        covered = x[j0 * D - n0:(j0 + nj) * D - n0]
        assert rails == naive(covered), (seed, rails)
        if rail is not None:
            assert rails.clipped_samples(x.dtype) > 100   # the rule sees the clipping
        # the count changes nothing in the phasors
        np.testing.assert_array_equal(z, pilot_decimate(
            x, 1e9, frequency_hz=1.7e8, decimation=D, first_sample=n0, first_block=j0,
            n_blocks=nj))
    _, none = pilot_decimate_rails(x[:5], 1e9, frequency_hz=1e8, decimation=D, first_sample=0,
                                   first_block=0, n_blocks=0)
    assert none.n == 0


def test_pilot_stage_counts_every_sample_of_the_stream(shared_traces):
    """The receiver's signal rails come from the pilot stage: over chunks that split blocks
    (and a tail shorter than a block at the end) every sample is counted once, as the numpy
    twin counts the whole capture."""
    from dsp.pipeline import ReceiverOptions, acquire
    from qkd_hw.receiver import _link
    from qkd_hw.trace_io import TraceReader

    opt = ReceiverOptions()
    with TraceReader(shared_traces["metro"]) as r:   # D = 25, as the benchmark link
        link = _link(r)
        n_head = min(r.adc["signal"].length, opt.head_samples(link))
        acq = acquire(r.read("signal", 0, n_head), r.symbols(0, 16384), link, opt)
        sig = r.read("signal")
    # >= 40 samples piled up at an upper rail (below the receiver's refusal of 1e-4)
    hi = np.sort(sig)[-40]
    sig = np.minimum(sig, hi)
    stage = PilotStage(acq)
    D = stage.D
    assert sig.shape[0] % D and 100_003 % D
    for pos in range(0, sig.shape[0], 100_003):
        stage.push(sig[pos:pos + 100_003])
    stage.flush()
    assert stage.rails == naive(sig) and stage.rails.n == sig.shape[0]
    assert stage.rails.clipped_samples(sig.dtype) >= 40


def test_block_leakage_matches_numpy():
    from dsp.pilot import block_leakage

    D, j0, nj = 25, 3_000_001, 2500
    for nu in (0.45, -0.02, 0.123456789):
        n = np.arange(j0 * D, (j0 + nj) * D)
        want = np.exp(2j * np.pi * ((nu * n) % 1.0)).reshape(nj, D).mean(axis=1)
        # both round nu n (~4e7 cycles) to ~1e-8 cycle
        np.testing.assert_allclose(block_leakage(nu, D, j0, nj), want, rtol=0, atol=1e-7)


@pytest.mark.parametrize("freqs, amps, D", [
    ((0.275,), (40.0,), 25),                  # 250 MHz pilot + 25 MHz offset at 1 GSa/s
    ((0.253, 0.273), (40.0, 20.0), 40),       # two pilots 4:1 in power, 20 MHz apart
    ((0.2503,), (40.0,), 9),                  # the overlapping tracker's hop: |H| = 0.11,
])                                            # one pass (the image alone), as exact
def test_cancel_pilot_leakage_recovers_the_tones(freqs, amps, D):
    """Pure real tones: each block average holds the pilot's own image (and the other
    pilot), ``|H|`` = 0.029 of the phasor for the single pilot at D = 25 (a phase error of
    the same size, the white noise's ~1.5x at 22 dB); after the cancellation the phases are
    exact to 1e-6 rad."""
    from dsp.pilot import cancel_pilot_leakage

    phis = (0.3, -1.1)[:len(freqs)]
    n0, nj = 7 * D + 3, 400
    j0 = -(-n0 // D)
    n = np.arange(n0, n0 + (nj + 2) * D)
    x = sum(a * np.cos(2 * np.pi * f * n + p) for a, f, p in zip(amps, freqs, phis, strict=True))
    x = x.astype(np.float32)
    zs = [pilot_decimate(x, 1.0, frequency_hz=f, decimation=D, first_sample=n0,
                         first_block=j0, n_blocks=nj) for f in freqs]
    before = max(np.abs(np.angle(z * np.exp(-1j * p))).max() for z, p in zip(zs, phis, strict=True))
    assert before > 0.02
    got = cancel_pilot_leakage(zs, list(freqs), D, j0)
    for z, p in zip(got, phis, strict=True):
        assert np.abs(np.angle(z * np.exp(-1j * p))).max() < 1e-6


@pytest.mark.parametrize("cycles, D", [((0.275,), 25), ((0.275, 0.32), 25), ((0.25, 0.27), 40),
                                       ((0.2503,), 9)])
def test_cancel_pilot_leakage_kernel_matches_numpy(cycles, D):
    from dsp.pilot import cancel_pilot_leakage, cancel_pilot_leakage_numpy

    j0, nj = 123_457, 9000                    # three kernel tasks, the last one partial
    zs = [RNG.normal(size=nj) + 1j * RNG.normal(size=nj) for _ in cycles]
    got = cancel_pilot_leakage(zs, list(cycles), D, j0)
    want = cancel_pilot_leakage_numpy(zs, list(cycles), D, j0)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-9)


@pytest.mark.parametrize("cycles, D", [((0.275,), 25), ((0.25, 0.27), 40)])
def test_cancel_pilot_leakage_overwrite_gives_the_same_bits(cycles, D):
    """``overwrite=True`` (the pilot stage's call: no copy of the phasors) writes the very
    numbers of the default call, within the numpy twin's tolerance."""
    from dsp.pilot import cancel_pilot_leakage, cancel_pilot_leakage_numpy

    j0, nj = 4_321, 9000
    zs = [RNG.normal(size=nj) + 1j * RNG.normal(size=nj) for _ in cycles]
    want = cancel_pilot_leakage(zs, list(cycles), D, j0)
    got = cancel_pilot_leakage([z.copy() for z in zs], list(cycles), D, j0, overwrite=True)
    for g, w, t in zip(got, want, cancel_pilot_leakage_numpy(zs, list(cycles), D, j0),
                       strict=True):
        assert np.array_equal(g, w)
        np.testing.assert_allclose(g, t, rtol=0, atol=1e-9)


def test_fill_tail_holds_the_last_data_phasor_across_calls():
    """Blocks that begin at or after the data's end (a gated pilot is gone there) repeat the
    last block before it; split into two calls the result is the same."""
    from dsp.pilot import fill_tail

    D, end = 10, 47                          # blocks 0..4 hold data (block 4 ends at 50)
    z = np.exp(1j * np.arange(8.0))
    one = z.copy()
    fill_tail(one, 0, D, end, 0j)
    np.testing.assert_array_equal(one[:5], z[:5])
    np.testing.assert_array_equal(one[5:], z[4])
    two = z.copy()
    last = fill_tail(two[:4], 0, D, end, 0j)     # a view: filled in place
    fill_tail(two[4:], 4, D, end, last)
    np.testing.assert_array_equal(two, one)
    a, b = z.copy(), z.copy()
    last = fill_tail(a[:6], 0, D, end, 0j)
    fill_tail(b[6:], 6, D, end, last)
    np.testing.assert_array_equal(np.concatenate([a[:6], b[6:]]), one)


def _two_tones(n0, n, cycles, amps, phase, noise, seed):
    """Samples n0 .. n0+n-1 of ``Re(c_n s_n) + w_n``: ``s_n = sum_k b_k exp(2 pi j nu_k n)``,
    the common phasor ``c_n = exp(j phase_n)`` (phase: scalar or per sample)."""
    t = np.arange(n0, n0 + n)
    s = sum(b * np.exp(2j * np.pi * ((nu * t) % 1.0)) for b, nu in zip(amps, cycles, strict=True))
    w = np.random.default_rng(seed).normal(0.0, noise, n) if noise else 0.0
    return (np.exp(1j * np.asarray(phase)) * s).real + w, s


def _block_lstsq(x, s, D, nj):
    """Per block of D samples the least-squares (Re c, Im c) of ``x = Re(c s)``, straight from
    the samples (normal equations of the two real regressors Re s, -Im s)."""
    X = x[:nj * D].reshape(nj, D)
    M = np.stack([s.real, -s.imag], axis=-1)[:nj * D].reshape(nj, D, 2)
    rhs = np.einsum("bni,bn->bi", M, X)[..., None]
    c = np.linalg.solve(np.einsum("bni,bnj->bij", M, M), rhs)[..., 0]
    return c[:, 0] + 1j * c[:, 1]


@pytest.mark.parametrize("cycles, amps, D", [
    ((0.29, 0.36), (30.0, 15.0 * np.exp(0.7j)), 9),   # row 17 + 40 MHz: leak 0.47, 3 tasks
    ((0.253, 0.273), (40.0, 20.0), 9),                # 20 MHz apart: leak 0.95
    ((0.25, 0.32, 0.41), (20.0, 20.0, 10.0), 25),
])
def test_joint_pilot_is_the_least_squares_fit_of_the_samples(cycles, amps, D):
    """The kernel against the fit of ``Re(c s)`` to each block's samples computed directly
    (numpy lstsq of the two real regressors, a phase walk and white noise in the samples):
    output = ``c sum_k w_k b_k / 2 (e - |f|^2 / e) / sum |b_k|^2`` with e, f the block means of
    ``|s|^2`` and ``conj(s)^2``; the numpy twin equal; noise-free tones (cross terms and
    images up to 0.95 of the phasor) give the phase exactly."""
    from dsp.pilot import joint_pilot, joint_pilot_numpy

    j0, nj = 3, 9000 if D == 9 else 1000
    n0 = j0 * D
    walk = 0.3 + np.cumsum(np.random.default_rng(2).normal(0.0, 0.01, nj * D))
    x, s = _two_tones(n0, nj * D, cycles, amps, walk, 2.0, seed=3)
    x = x.astype(np.float32)
    zs = [pilot_decimate(x, 1.0, frequency_hz=nu, decimation=D, first_sample=n0,
                         first_block=j0, n_blocks=nj) for nu in cycles]
    w = [np.conj(b) / sum(abs(v) for v in amps) for b in amps]
    got = joint_pilot(zs, list(cycles), list(amps), w, D, j0)
    np.testing.assert_allclose(joint_pilot_numpy(zs, list(cycles), list(amps), w, D, j0), got,
                               rtol=0, atol=1e-10 * np.abs(got).max())
    c = _block_lstsq(x.astype(np.float64), s, D, nj)
    S = s[:nj * D].reshape(nj, D)
    e, f = np.mean(np.abs(S) ** 2, axis=1), np.mean(np.conj(S) ** 2, axis=1)
    want = (c * sum(v * b for v, b in zip(w, amps, strict=True)) / 2 * (e - np.abs(f) ** 2 / e)
            / sum(abs(b) ** 2 for b in amps))
    # float32 samples and block sums: ~1e-7 relative
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * np.abs(want).max())
    x0, _ = _two_tones(n0, nj * D, cycles, amps, 0.3, 0.0, seed=0)
    zs = [pilot_decimate(x0.astype(np.float32), 1.0, frequency_hz=nu, decimation=D,
                         first_sample=n0, first_block=j0, n_blocks=nj) for nu in cycles]
    assert np.abs(np.angle(joint_pilot(zs, list(cycles), list(amps), w, D, j0)
                           * np.exp(-0.3j))).max() < 1e-6


def test_joint_pilot_reaches_the_combined_noise():
    """Monte Carlo (seeded, 1.2e6 samples; constant common phase, white noise) of
    ``combined_pilot`` with two equal pilots 70 MHz apart at hop 9 (row 17's pilots and the
    hop the joint estimate allows): the phase variance per hop equals the analytic one of the
    joint least-squares fit (``joint_pilot_phase_var`` per hop, averaged), within 4 sd of the
    estimate (sd sqrt(2 / n); one hop's is 1.15 x r / 9: the tones leak into each other);
    summed over 3 hops as the tracker's windows (27 samples) the phase noise is within 4 % of
    the bound's ``r / 27`` (measured 1.01), ``r = 2 sigma^2 / sum A_k^2`` the pilots'
    combination. Before (each pilot solved for on its own, ``cancel_pilot_leakage``, then
    combined) it was 1.32 x that (and 1.14 x the joint fit's per hop)."""
    from dsp.acquisition import PilotAcquisition
    from dsp.options import LinkParameters
    from dsp.pilot import combined_pilot, joint_pilot_phase_var

    fs, D, nj, sigma = 1e9, 9, 135_000, 2.0   # 20 dB per pilot over the noise per sample
    freqs, amps, c = (290e6, 360e6), (20.0, 20.0 * np.exp(-0.4j)), np.exp(0.5j)
    x, s = _two_tones(0, nj * D, [f / fs for f in freqs], amps, np.angle(c), sigma, seed=7)
    link = LinkParameters(sample_rate_hz=fs, pilot_frequencies_hz=freqs, signal_frequency_hz=
                          150e6, symbol_rate_hz=100e6, rolloff=0.2, modulation_variance_snu=5.0,
                          efficiency=0.7, detection="heterodyne", n_symbols=1000)
    pil = PilotAcquisition(frequency_offset_hz=0.0, coarse_offset_hz=0.0,
                           pilot_snr_db=(60.0, 60.0), pilot_cn0_dbhz=(100.0, 100.0),
                           phase_noise_var=1e-3, linewidth_hz=0.0, linewidth_std_hz=1.0,
                           decimation=64, pilot_weights=(0.5 + 0j, 0.5 * np.exp(0.4j)),
                           pilot_amplitudes=(20.0, 20.0))
    z = combined_pilot(x.astype(np.float32), link, pil, D, 0, 0, nj)
    err = np.angle(z / c)
    S = s.reshape(nj, D)
    per_hop = np.mean([joint_pilot_phase_var(sigma**2, S[b], c) for b in range(0, nj, 97)])
    assert abs(np.var(err) / per_hop - 1) < 4 * np.sqrt(2 / nj)
    r = 2 * sigma**2 / sum(abs(b) ** 2 for b in amps)
    # long windows average the cross terms out: the analytic variance is the MRC's r / L
    assert joint_pilot_phase_var(sigma**2, s[:2700], c) * 2700 / r == pytest.approx(1, abs=0.01)
    win = np.angle((z[:-2] + z[1:-1] + z[2:])[::3] / c)
    assert np.var(win) * 3 * D / r == pytest.approx(1.0, abs=0.04)
