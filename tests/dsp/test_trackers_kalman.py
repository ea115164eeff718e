"""Kalman / RTS kernels against the textbook recursions."""

from __future__ import annotations

import numpy as np
import pytest

from dsp.trackers.kalman import (
    kalman_phase_forward,
    rts_lengths,
    rts_smooth_block,
    rts_smooth_blocks,
)

RNG = np.random.default_rng(12345)


@pytest.mark.parametrize("drift", [0.0, 0.05, -0.9])
def test_kalman_and_rts_match_naive(drift):
    # drift (rad/step): the phase crosses +-pi every 2 pi / drift steps, exercising the
    # kernel's re-wrapping of its speculative steady-state runs
    n, q, r = 2000, 1e-3, 2e-2
    phi = np.cumsum(RNG.normal(drift, np.sqrt(q), n)) + 3.0
    z = np.exp(1j * (phi + RNG.normal(0, np.sqrt(r), n)))
    got_f, got_p = kalman_phase_forward(z, phi0=3.0, p0=0.1, q=q, r=r)
    # naive: textbook scalar Kalman filter with the innovation wrapped to (-pi, pi]
    x, p, fx, fp = 3.0, 0.1, [], []
    for zz in z:
        p = p + q
        inn = np.angle(zz * np.exp(-1j * x))
        k = p / (p + r)
        x, p = x + k * inn, (1 - k) * p
        fx.append(x)
        fp.append(p)
    np.testing.assert_allclose(got_f, fx, atol=1e-9)
    np.testing.assert_allclose(got_p, fp, rtol=1e-12)
    sm = rts_smooth_block(got_f, got_p, q, got_f[-1], got_p[-1])
    xs = np.array(fx)
    ps = np.array(fp)
    want = xs.copy()
    for j in range(n - 2, -1, -1):
        c = ps[j] / (ps[j] + q)
        want[j] = xs[j] + c * (want[j + 1] - xs[j])
    np.testing.assert_allclose(sm, want, atol=1e-9)
    # and the smoother is better than the filter on this realisation (physics sanity)
    assert np.mean((sm - phi) ** 2) < np.mean((got_f - phi) ** 2)


@pytest.mark.parametrize("lookahead", [None, 512, 100, 1])
def test_rts_blocks_equal_blockwise_rts(lookahead):
    n, q, r, L = 5000, 2e-4, 1e-3, 512
    H = L if lookahead is None else lookahead
    phi = np.cumsum(RNG.normal(0.3, np.sqrt(q), n))
    z = np.exp(1j * (phi + RNG.normal(0, np.sqrt(r), n)))
    f, p = kalman_phase_forward(z, phi0=0.0, p0=r, q=q, r=r)
    nb = n // L - 1
    got = rts_smooth_blocks(f, p, q, L, nb, lookahead=lookahead)
    want = np.concatenate([rts_smooth_block(f[b * L:(b + 1) * L + H], p[b * L:(b + 1) * L + H],
                                            q, f[(b + 1) * L + H - 1], p[(b + 1) * L + H - 1])[:L]
                           for b in range(nb)])
    np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="forward estimates"):
        rts_smooth_blocks(f[:L], p[:L], q, L, 1)
    with pytest.raises(ValueError, match="lookahead"):
        rts_smooth_blocks(f, p, q, L, nb, lookahead=L + 1)


@pytest.mark.parametrize("tc", [1.2, 2.0, 30.0])
def test_rts_lookahead_of_the_design_matches_the_exact_smoother(tc):
    """The look-ahead of ``rts_lengths`` (16 tc, >= 64 blocks) must give the smoothed phase of
    a backward pass over the WHOLE record: the truncation is to decay below 1e-6 of the
    forward-vs-smoothed difference it starts from (~sqrt(p) ~ 0.03-0.3 rad here)."""
    q = 1e-4
    r = q * tc * tc
    L, H = rts_lengths(q, r)
    assert 64 <= H <= L and 16 * tc <= H
    n = 3 * L + H + 1
    phi = np.cumsum(RNG.normal(0.0, np.sqrt(q), n))
    z = np.exp(1j * (phi + RNG.normal(0, np.sqrt(r), n)))
    f, p = kalman_phase_forward(z, phi0=0.0, p0=r, q=q, r=r)
    exact = rts_smooth_block(f, p, q, f[-1], p[-1])
    got = rts_smooth_blocks(f, p, q, L, 3, lookahead=H)
    err = np.abs(got - exact[:3 * L]).max()
    start = np.abs(exact - f).max()
    assert err <= 1e-6 * start, (err, start)


@pytest.mark.parametrize("method", ["kalman", "kalman-rts"])
@pytest.mark.parametrize("phase_noise_var, linewidth_hz", [(1e-4, 100.0), (3e-3, 1e3)])
def test_reported_bandwidth_and_error_are_the_trackers_own(method, phase_noise_var,
                                                           linewidth_hz):
    """The design's predicted_phase_var is the tracker's error on a Wiener phase observed in
    white noise (Monte Carlo against the true phase), and bandwidth_hz the noise bandwidth
    sum h^2 / dt of its measured response to a small phase step in one block. Before: both
    were a boxcar's of the same duration (0.72x the filter's error here, 1.19x the
    smoother's; on framed.h5, from the acquisition's leakage-inflated noise, 3.0e-4 rad^2 for
    a smoother at 3.1e-5)."""
    from dsp.carrier import design_pilot_filter
    from dsp.trackers import make_tracker

    d = design_pilot_filter(1e9, phase_noise_var=phase_noise_var, acq_decimation=64,
                            linewidth_hz=linewidth_hz, method=method)
    dt = d.decimation / 1e9
    rng = np.random.default_rng(7)
    n = 200_000
    phi = np.cumsum(rng.normal(0, np.sqrt(d.q), n))
    z = np.exp(1j * (phi + rng.normal(0, np.sqrt(d.r), n)))
    tr = make_tracker(d)
    est = np.concatenate([tr.push(z)[1], tr.flush()[1]])
    err = (est - phi)[5000:-5000]
    # 190k errors correlated over sqrt(r/q) < 20 blocks: the variance to ~3 %
    assert np.var(err) == pytest.approx(d.predicted_phase_var, rel=0.1)
    # impulse response: a 1e-4 rad step of one block's observation, noise-free
    eps, j = 1e-4, 50_000
    ph = np.zeros(100_000)
    ph[j] = eps
    tr = make_tracker(d)
    h = np.concatenate([tr.push(np.exp(1j * ph))[1], tr.flush()[1]]) / eps
    assert h.sum() == pytest.approx(1.0, rel=1e-3)
    assert np.sum(h * h) / dt == pytest.approx(d.bandwidth_hz, rel=1e-3)


def test_refine_kalman_noise_of_block_means():
    """The observation noise r read from block MEANS of a Wiener phase: their structure
    function is ``2 r + q (l - 1/3)``, so the intercept alone (the old reading) gives
    ``r - q/6`` (0.833 r here, measured 0.830 +- 0.024 over 20 seeds); ``r = s2 + slope/6``
    gives r (measured 0.996 +- 0.022 over 20 seeds at twice this size)."""
    from dsp.trackers.base import HeadPilot
    from dsp.trackers.kalman import KalmanDesign, refine_kalman

    D, nb, q_s = 16, 100_000, 1e-5           # q_s: rad^2 per sample
    q = q_s * D                              # per block
    r = q                                    # q/6 is 1/6 of r
    rng = np.random.default_rng(3)
    th = np.cumsum(rng.normal(0.0, np.sqrt(q_s), nb * D))
    z = np.exp(1j * th).reshape(nb, D).mean(axis=1) * np.exp(1j * rng.normal(0, np.sqrt(r), nb))
    design = KalmanDesign(method="kalman-rts", decimation=D, window=1, tau_s=D / 1e9,
                          bandwidth_hz=1e9 / D, predicted_phase_var=0.0, linewidth_used_hz=0.0,
                          q=q, r=1.0, rts_block=1024, rts_lookahead=64)
    got = refine_kalman(design, HeadPilot(samples=nb * D, phasors=lambda d: z)).r
    assert got == pytest.approx(r, rel=0.08)


def _pilot_samples(n: int, q_s: float, r_s: float, seed: int):
    """A Wiener phase (q_s per sample) and its phasor seen through per-sample phase noise r_s."""
    rng = np.random.default_rng(seed)
    phi = np.cumsum(rng.normal(0.0, np.sqrt(q_s), n))
    return phi, np.exp(1j * (phi + rng.normal(0.0, np.sqrt(r_s), n)))


def _block_means(e: np.ndarray, D: int) -> np.ndarray:
    return e[: e.shape[0] // D * D].reshape(-1, D).mean(axis=1)


def _hop_phasors(n: int, H: int, q_s: float, r_s: float, seed: int):
    """The true phase and the pilot phasors of n hops of H samples."""
    phi, e = _pilot_samples(n * H, q_s, r_s, seed)
    return phi, _block_means(e, H)


def _per_sample_mse(est: np.ndarray, phi: np.ndarray, H: int, edge: int) -> float:
    n = est.shape[0]
    t = np.arange(n * H)
    err = np.interp(t, np.arange(n) * H + (H - 1) / 2, est) - phi
    return float(np.mean(err[edge:-edge] ** 2))


def test_overlapping_windows_reach_the_bound_as_predicted():
    """10 kHz at 1 GSa/s, pilot blocks of at least D = 25 samples (the block guard) and a
    smoother time constant of 10.5 samples (the table's 1 GSa/s 10 kHz row): non-overlapping
    blocks cost 1.16 x the bound sqrt(q r)/2 (predicted by ``overlap_phase_var``, measured
    here); the design takes windows of 3 hops of 9 samples, predicted 1.045 x. Monte Carlo:
    the tracker's per-sample error (linear interpolation between hop centres, as the matched
    filter does) equals the prediction to 3 %, and the split of the stream into pushes does
    not change it (beyond 1-ulp roundings). Before: no overlap, the design's error 1.16 x
    the bound."""
    from dataclasses import replace

    from dsp.carrier import design_pilot_filter
    from dsp.trackers import make_tracker
    from dsp.trackers.kalman import overlap_phase_var

    fs, lw, tc, D = 1e9, 1e4, 10.5, 25
    q_s = 2 * np.pi * lw / fs
    r_s = q_s * tc * tc
    bound = np.sqrt(q_s * r_s) / 2
    d = design_pilot_filter(fs, phase_noise_var=r_s / 64, acq_decimation=64, linewidth_hz=lw,
                            method="kalman-rts", min_block_samples=D)
    H, h = d.decimation, d.overlap
    assert h > 1 and H * h >= D
    assert d.predicted_phase_var <= 1.05 * bound
    phi, e = _pilot_samples(135_000, q_s, r_s, seed=11)
    z = _block_means(e, H)
    tr = make_tracker(d)
    est = np.concatenate([tr.push(z)[1], tr.flush()[1]])
    assert est.shape == z.shape
    tr = make_tracker(d)
    parts = [tr.push(z[a:b]) for a, b in ((0, 7), (7, 7), (7, 5003), (5003, z.shape[0]))]
    parts.append(tr.flush())
    got = np.concatenate([p[1] for p in parts])
    np.testing.assert_allclose(got, est, rtol=0, atol=1e-12)   # a few 1-ulp differences
    mse = _per_sample_mse(est, phi, H, edge=2000)
    assert mse == pytest.approx(d.predicted_phase_var, rel=0.03)
    # the same realisation in non-overlapping blocks of 25 (the design without overlap)
    old = replace(d, decimation=D, overlap=1, r_scale=1.0, q=q_s * D, r=r_s / D)
    tr = make_tracker(old)
    z25 = _block_means(e, D)
    est25 = np.concatenate([tr.push(z25)[1], tr.flush()[1]])
    mse25 = _per_sample_mse(est25, phi, D, edge=2000)
    want25 = overlap_phase_var(q_s, r_s, D, 1, q_s * D, r_s / D)
    assert want25 == pytest.approx(1.158 * bound, rel=0.01)
    assert mse25 == pytest.approx(want25, rel=0.03)
    assert mse < 0.93 * mse25


@pytest.mark.parametrize("overlap", [1, 2, 3, 5, 9])
def test_window_sums_equal_the_naive_sums_in_any_split(overlap):
    """``window_sums`` (numba kernel) against Python's complex additions, left to right, of
    every window of the concatenated stream: bit-identical, also when the stream is pushed in
    pieces shorter than a window (the hist carried between calls)."""
    from dsp.trackers.kalman import window_sums

    rng = np.random.default_rng(overlap)
    z = rng.normal(size=200) + 1j * rng.normal(size=200)
    z *= 10.0 ** rng.uniform(-8, 8, 200)      # mixed magnitudes: the order of the adds shows
    hist0 = z[:overlap - 1]
    want = []
    for j in range(z.shape[0] - (overlap - 1)):
        s = complex(z[j])
        for i in range(1, overlap):
            s += complex(z[j + i])
        want.append(s)
    for cuts in ((200,), (0, 1, 2, 3, 50, 51, 200), (7, 7, 8, 199, 200)):
        hist, got, a = hist0, [], overlap - 1
        for b in cuts:
            y, hist = window_sums(z[a:max(a, b)], hist, overlap)
            got.append(y)
            a = max(a, b)
        got = np.concatenate(got)
        assert got.shape[0] == len(want)
        assert np.array_equal(got, np.array(want))
        np.testing.assert_array_equal(hist, z[z.shape[0] - (overlap - 1):])


def _overlap_phase_var_matrix(q_s, r_s, H, h, q, r):
    """``overlap_phase_var`` as first written: the (H, length) matrix of every interpolated
    sample's weights on the samples, its error summed term by term."""
    import math

    pp = 0.5 * (q + math.sqrt(q * q + 4 * q * r))
    a = r / (pp + r)
    K = math.ceil(12 / (1 - a)) + 1
    lag = np.arange(-K, K + 1)
    g = np.convolve((1 - a) / (1 + a) * a ** np.abs(lag), np.full(h, 1.0 / h))
    g /= g.sum()
    n0 = (K + (h - 1) // 2) * H
    w0 = np.repeat(g, H) / H
    w1 = np.concatenate([np.zeros(H), w0[:-H]])
    c0 = (H - 1) / 2
    t = math.ceil(c0) + np.arange(H)
    f = ((t - c0) / H)[:, None]
    w = (1 - f) * w0 + f * w1
    c = np.cumsum(w, axis=1) - (np.arange(w.shape[1]) >= (t + n0)[:, None])
    return float((q_s * np.sum(c[:, :-1] ** 2) + r_s * np.sum(w * w)) / H)


@pytest.mark.parametrize("H, h, tc, r_scale", [(25, 1, 10.5, 1.0), (9, 3, 10.5, 0.5),
                                               (8, 3, 10.5, 1.0), (157, 3, 300.0, 0.75),
                                               (1, 1, 2.0, 1.0), (12, 9, 4.0, 0.25)])
def test_overlap_phase_var_equals_the_weight_matrix(H, h, tc, r_scale):
    """The prefix/suffix-sum form of ``overlap_phase_var`` against the per-sample weight matrix
    it replaced (even and odd hops, overlap 1-9, model r right and wrong): equal to 1e-12."""
    from dsp.trackers.kalman import overlap_phase_var

    q_s = 2 * np.pi * 1e-5
    r_s = q_s * tc * tc
    args = (q_s, r_s, H, h, q_s * H, r_scale * r_s / H)
    assert overlap_phase_var(*args) == pytest.approx(_overlap_phase_var_matrix(*args),
                                                     rel=1e-12)


def test_overlap_only_where_blocks_cost():
    """At 1 kHz (the block D = 25 under a smoother time constant of 33 samples) and with the
    forward filter the design keeps non-overlapping blocks: those rows stay bit-identical."""
    from dsp.carrier import design_pilot_filter

    for method, lw in (("kalman-rts", 1e3), ("kalman", 1e4)):
        d = design_pilot_filter(1e9, phase_noise_var=2 * np.pi * 1e-5 * 10.5**2 / 64,
                                acq_decimation=64, linewidth_hz=lw, method=method,
                                min_block_samples=25)
        assert (d.overlap, d.decimation, d.r_scale) == (1, 25, 1.0)


def test_overlap_tracker_matches_its_numpy_twin():
    """The numpy/scipy reference tracker (qkd_hw.bench.numpy_reference.KalmanRts: sliding
    window sums, lfilter recursions) gives the kernel tracker's phases on overlapping windows,
    pushed in different pieces (float64 evaluation order only: 1e-9 rad)."""
    from dsp.carrier import design_pilot_filter
    from dsp.trackers import make_tracker
    from qkd_hw.bench.numpy_reference import KalmanRts

    q_s = 2 * np.pi * 1e-5
    d = design_pilot_filter(1e9, phase_noise_var=q_s * 10.5**2 / 64, acq_decimation=64,
                            linewidth_hz=1e4, method="kalman-rts", min_block_samples=25)
    assert d.overlap > 1
    _, z = _hop_phasors(3 * d.rts_block + 77, d.decimation, q_s, q_s * 10.5**2, seed=5)
    z = z * np.exp(0.3j * np.arange(z.shape[0]))    # wraps the phase: the unwrapping too
    tr = make_tracker(d)
    got = np.concatenate([tr.push(z[:1000])[1], tr.push(z[1000:])[1], tr.flush()[1]])
    ref = KalmanRts(d)
    want = np.concatenate([ref.push(z[:3])[1], ref.push(z[3:2 * d.rts_block])[1],
                           ref.push(z[2 * d.rts_block:])[1], ref.flush()[1]])
    assert got.shape == want.shape == z.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


@pytest.mark.parametrize("cycles, overlap, hop", [((0.25, 0.36), 3, 9), ((0.25, 0.32), 3, 9),
                                                  ((0.25, 0.29), 1, 25), ((0.25, 0.27), 1, 25)])
def test_overlap_hop_keeps_the_pilots_apart(cycles, overlap, hop):
    """A hop of 9 samples passes a pilot 110 MHz away (at 1 GSa/s) with |H| <= 0.12 (its image)
    and one 70 MHz away with 0.47, below ``MAX_HOP_CROSS_LEAK`` (the pilots' common phasor is
    estimated jointly: ``test_joint_pilot_reaches_the_combined_noise``): overlap at hop 9 (before
    the joint estimate: hop 12 for 70 MHz). 40 MHz away the first quiet hop is 16 (0.45),
    windows of 48 predicted worse than blocks of 25: blocks (before: 3 x 21, predicted 1.2 x the
    bound against 1.16 x); 20 MHz away no hop up to 24 is quiet (0.66 at 24): blocks of 25.
    ``hop_cross_leak`` against the block average of the tones computed directly."""
    from dsp.carrier import design_pilot_filter
    from dsp.trackers.kalman import (
        MAX_HOP_CROSS_LEAK,
        choose_overlap,
        hop_cross_leak,
        overlap_phase_var,
    )

    q_s = 2 * np.pi * 1e-5
    r_s = q_s * 10.5**2
    d = design_pilot_filter(1e9, phase_noise_var=r_s / 64, acq_decimation=64,
                            linewidth_hz=1e4, method="kalman-rts", min_block_samples=25,
                            pilot_cycles=cycles)
    assert (d.overlap, d.decimation) == (overlap, hop)
    a, b = cycles

    def leak(H):
        n = np.arange(H)
        return max(abs(np.mean(np.exp(2j * np.pi * nu * n))) for nu in (b - a, a - b, -(a + b)))

    assert hop_cross_leak(cycles, 9) == pytest.approx(leak(9), rel=1e-9)
    blocks = overlap_phase_var(q_s, r_s, 25, 1, q_s * 25, r_s / 25)
    if overlap > 1:
        assert leak(hop) <= MAX_HOP_CROSS_LEAK < min((leak(H) for H in range(9, hop)),
                                                     default=1.0)
        bound = np.sqrt(q_s * r_s) / 2
        assert d.predicted_phase_var < 0.95 * blocks
        assert d.predicted_phase_var < 1.10 * bound
    else:
        assert choose_overlap(q_s, r_s, 25, cycles)[::3] == (1, blocks)


def test_refine_chooses_the_overlap_from_the_measured_noise():
    """The acquisition's pilot noise can be several times the tracker's (framed recordings:
    the preamble and leaked tones inflate it): with 10x the true r the design keeps blocks of
    25 samples (3.3 time constants by that r), the head's own noise (tc = 10.5 samples, 2.4
    blocks) makes ``refine_kalman`` take windows of 3 hops of 9 samples, its r measured on
    them. Before: the design's overlap stayed, 1.16 x the bound instead of 1.045 x."""
    from dsp.carrier import design_pilot_filter
    from dsp.trackers.base import HeadPilot
    from dsp.trackers.kalman import refine_kalman

    q_s = 2 * np.pi * 1e-5
    r_s = q_s * 10.5**2
    d = design_pilot_filter(1e9, phase_noise_var=10 * r_s / 64, acq_decimation=64,
                            linewidth_hz=1e4, method="kalman-rts", min_block_samples=25)
    assert (d.overlap, d.decimation) == (1, 25)
    _, e = _pilot_samples(300_000, q_s, r_s, seed=4)
    got = refine_kalman(d, HeadPilot(samples=e.shape[0], phasors=lambda D: _block_means(e, D)))
    assert (got.overlap, got.decimation) == (3, 9)
    assert got.q == pytest.approx(q_s * 9, rel=1e-12)
    assert got.r == pytest.approx(got.r_scale * r_s / 27, rel=0.15)
    assert got.predicted_phase_var == pytest.approx(1.045 * np.sqrt(q_s * r_s) / 2, rel=0.1)
    assert got.tau_s == pytest.approx(got.window * 9e-9, rel=1e-12) and got.window % 2 == 1
