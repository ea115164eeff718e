"""Every numba kernel of the simulator against a naive numpy version of itself."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qkd_hw.sim import oracle, waveform
from qkd_hw.sim.pulse import polyphase_table, truncated_rrc


# ------------------------------------------------------------------ ziggurat
def naive_zignor(words: np.ndarray, n: int) -> tuple[list[float], int]:
    """Doornik's ZIGNOR (2005) in plain Python, tables computed here from its formulas."""
    c, r, v = 128, 3.442619855899, 9.91256303526217e-3
    x = [0.0] * (c + 1)
    f = math.exp(-0.5 * r * r)
    x[0], x[1] = v / f, r
    for i in range(2, c):
        x[i] = math.sqrt(-2 * math.log(v / x[i - 1] + f))
        f = math.exp(-0.5 * x[i] ** 2)
    ratio = [x[i + 1] / x[i] for i in range(c)]
    pos, out = 0, []

    def unif(word, open_zero=False):
        return ((int(word) >> 11) + (1 if open_zero else 0)) / 2.0 ** 53

    while len(out) < n:
        w = int(words[pos])
        pos += 1
        i = w & 127
        u = 2 * unif(w) - 1
        if abs(u) < ratio[i]:
            out.append(u * x[i])
            continue
        if i == 0:
            while True:
                xt = -math.log(unif(words[pos], True)) / r
                yt = -math.log(unif(words[pos + 1], True))
                pos += 2
                if 2 * yt >= xt * xt:
                    break
            out.append(-(r + xt) if u < 0 else r + xt)
            continue
        xx = u * x[i]
        f0 = math.exp(-0.5 * (x[i] ** 2 - xx * xx))
        f1 = math.exp(-0.5 * (x[i + 1] ** 2 - xx * xx))
        p = unif(words[pos])
        pos += 1
        if f1 + p * (f0 - f1) < 1.0:
            out.append(xx)
    return out, pos


def _words(seed, n):
    return np.random.default_rng(seed).integers(0, 2 ** 64, n, dtype=np.uint64)


def test_ziggurat_matches_naive_python():
    words = _words(1, 3 * 20_000)
    got, used = waveform.ziggurat_normals(words, 20_000)
    ref, ref_used = naive_zignor(words, 20_000)
    assert used == ref_used
    np.testing.assert_allclose(got, ref, rtol=1e-13, atol=1e-13)
    assert np.abs(got).max() > waveform.ZIG_R  # the tail path was exercised


def test_ziggurat_blocks_are_independent_rows():
    words = _words(2, 4 * 5000).reshape(4, 5000)
    got, used = waveform.ziggurat_normals(words, 4000)
    for b in range(4):
        ref, ref_used = naive_zignor(words[b], 4000)
        np.testing.assert_allclose(got[b], ref, rtol=1e-13, atol=1e-13)
        assert used[b] == ref_used


def test_ziggurat_reports_exhaustion_and_longer_rows_extend_it():
    words = _words(3, 10_000)
    _, used = waveform.ziggurat_normals(words[:1000], 1000)  # ~1010 words needed
    assert used == -1
    short, used_short = waveform.ziggurat_normals(words[:1200], 1000)
    long, used_long = waveform.ziggurat_normals(words, 1000)
    assert used_short == used_long > 1000
    assert np.array_equal(short, long)


def test_ziggurat_is_standard_normal():
    """2e6 deviates: Kolmogorov-Smirnov, a 100-bin chi-square, moments and the tail mass.

    Bounds are ~5 sigma of each statistic's sampling distribution (fixed seed).
    """
    from scipy import stats

    z, used = waveform.ziggurat_normals(_words(4, 2_100_000), 2_000_000)
    assert used > 0
    n = z.size
    assert stats.kstest(z, "norm").pvalue > 1e-4
    edges = np.concatenate([[-np.inf], stats.norm.ppf(np.linspace(0.01, 0.99, 99)), [np.inf]])
    counts, _ = np.histogram(z, edges)
    chi2 = np.sum((counts - n / 100) ** 2 / (n / 100))
    assert chi2 < 99 + 5 * math.sqrt(2 * 99)
    assert abs(z.mean()) < 5 / math.sqrt(n)
    assert abs(z.var() - 1) < 5 * math.sqrt(2 / n)
    assert abs(np.mean(z ** 4) - 3) < 5 * math.sqrt(96 / n)
    # the tail beyond R (its own code path): P = 2 (1 - Phi(R)) = 5.7e-4
    p_tail = 2 * stats.norm.sf(waveform.ZIG_R)
    k = np.count_nonzero(np.abs(z) > waveform.ZIG_R)
    assert abs(k - n * p_tail) < 5 * math.sqrt(n * p_tail)
    k4 = np.count_nonzero(np.abs(z) > 4.5)
    assert abs(k4 - n * 2 * stats.norm.sf(4.5)) < 5 * math.sqrt(n * 2 * stats.norm.sf(4.5)) + 1


# ------------------------------------------------------------------ laser phase
def test_laser_phase_matches_cumsum_and_carries():
    inc = np.random.default_rng(3).normal(0, 1e-3, 10_001)
    whole, last = waveform.laser_phase(inc, 0.7)
    np.testing.assert_allclose(whole, 0.7 + np.cumsum(inc), rtol=0, atol=1e-12)
    assert last == whole[-1]
    a, carry = waveform.laser_phase(inc[:3333], 0.7)
    b, _ = waveform.laser_phase(inc[3333:], carry)
    # sequential float64 addition: bit-identical whatever the split
    assert np.array_equal(np.concatenate([a, b]), whole)


# ------------------------------------------------------------------ synthesis
def naive_synth(n0, count, *, delay, sps, k_base, symbols, table, amplitude,
                signal_cycles_per_sample, phase, pilot_cycles_per_sample, pilot_amplitudes,
                pilot_phases, noise, noise_std, dtype="float64", lo=-np.inf, hi=np.inf):
    phases = table.shape[0] - 1
    half = table.shape[1] // 2
    n = np.arange(n0, n0 + count)
    out = np.empty(count)
    for i, nn in enumerate(n):
        u = (nn - delay) / sps
        k0 = math.floor(u)
        m = int((u - k0) * phases + 0.5)
        k = np.arange(k0 - half + 1, k0 + half + 1)
        s = np.sum(table[m] * symbols[k - k_base])
        psi = 2 * np.pi * np.mod(signal_cycles_per_sample * nn, 1.0) + phase[i]
        v = amplitude * np.real(s * np.exp(1j * psi))
        for f, a, ph in zip(pilot_cycles_per_sample, pilot_amplitudes, pilot_phases,
                            strict=True):
            v += a * np.cos(2 * np.pi * np.mod(f * nn, 1.0) + phase[i] + ph)
        out[i] = v + noise_std * noise[i]
    n_clip = 0
    if np.dtype(dtype).kind == "i":
        out = np.floor(out + 0.5)
        n_clip = int(np.sum((out < lo) | (out > hi)))
        out = np.clip(out, lo, hi)
    return out, n_clip


def _synth_case(seed, *, n0, count, sps, lw_sigma, pilots, k_total=400):
    rng = np.random.default_rng(seed)
    half = 6
    table = polyphase_table(0.25, half, 64) / math.sqrt(sps)
    delay = 37.3
    k_lo = math.floor((n0 - delay) / sps) - half - 1
    k_hi = math.floor((n0 + count - 1 - delay) / sps) + half + 3
    sym = np.zeros(k_hi - k_lo, complex)
    k = np.arange(k_lo, k_hi)
    live = (k >= 0) & (k < k_total)
    sym[live] = rng.normal(size=live.sum()) + 1j * rng.normal(size=live.sum())
    phase = 0.3 + np.cumsum(rng.normal(0, lw_sigma, count)) if lw_sigma else np.full(count, 0.3)
    return dict(delay=delay, sps=sps, k_base=k_lo, symbols=sym, table=table, amplitude=20.0,
                signal_cycles_per_sample=0.1531,
                phase=phase, pilot_cycles_per_sample=np.array(pilots[0]),
                pilot_amplitudes=np.array(pilots[1]), pilot_phases=np.array(pilots[2]),
                noise=rng.normal(size=count), noise_std=3.0)


@pytest.mark.parametrize("n0, count, sps, lw_sigma, pilots", [
    (0, 700, 10.0, 0.0, ([0.25], [300.0], [0.0])),
    (5_000_123, 513, 6.6667, 0.01, ([0.27, 0.04], [100.0, 50.0], [0.5, -1.0])),
    (1234, 300, 4.000123, 0.1, ([], [], [])),
])
def test_synthesize_matches_naive_float(n0, count, sps, lw_sigma, pilots):
    kw = _synth_case(4, n0=n0, count=count, sps=sps, lw_sigma=lw_sigma, pilots=pilots)
    got, n_clip = waveform.synthesize(n0, count, **kw)
    ref, _ = naive_synth(n0, count, **kw)
    # the kernel rotates its carriers from exact anchors every 64 samples: 1e-13 relative
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9 * np.abs(ref).max())
    assert n_clip == 0


def test_synthesize_quantizes_and_clips_like_numpy():
    n0, count = 999, 2000
    kw = _synth_case(5, n0=n0, count=count, sps=7.3, lw_sigma=0.01,
                     pilots=([0.3], [400.0], [0.1]))
    got, n_clip = waveform.synthesize(n0, count, dtype="int16", lo=-256, hi=255, **kw)
    ref, ref_clip = naive_synth(n0, count, dtype="int16", lo=-256, hi=255, **kw)
    assert got.dtype == np.int16
    assert ref_clip > 100  # the case does clip
    # identical codes except where the analog value is within 1e-9 of a rounding edge
    assert np.count_nonzero(got != ref) <= 2
    assert abs(n_clip - ref_clip) <= 2


def test_synthesize_is_independent_of_chunk_borders():
    count = 3000
    kw = _synth_case(6, n0=0, count=count, sps=10.37, lw_sigma=0.02,
                     pilots=([0.26, 0.41], [200.0, 80.0], [0.0, 1.0]))
    whole, _ = waveform.synthesize(0, count, dtype="int16", lo=-2048, hi=2047, **kw)
    parts = []
    for a, b in [(0, 1), (1, 63), (63, 65), (65, 1700), (1700, 3000)]:
        part_kw = dict(kw, phase=kw["phase"][a:b], noise=kw["noise"][a:b])
        parts.append(waveform.synthesize(a, b - a, dtype="int16", lo=-2048, hi=2047,
                                         **part_kw)[0])
    assert np.array_equal(np.concatenate(parts), whole)


def test_synthesize_checks_symbol_coverage():
    kw = _synth_case(7, n0=0, count=100, sps=10.0, lw_sigma=0.0, pilots=([], [], []))
    kw["k_base"] += 3  # the case leaves 2 symbols of margin
    with pytest.raises(ValueError, match="symbols cover"):
        waveform.synthesize(0, 100, **kw)


# ------------------------------------------------------------------ ADC
@pytest.mark.parametrize("dtype, lo, hi", [("int16", -2048, 2047), ("int8", -128, 127),
                                           ("float32", -np.inf, np.inf)])
def test_quantize_matches_numpy(dtype, lo, hi):
    x = np.random.default_rng(8).normal(0, 100, 100_001)
    x[:4] = [0.5, -0.5, 1.5, -2.5]  # half-up rounding at the edges
    got, n_clip = waveform.quantize(x, scale=1.7, dtype=dtype, lo=lo, hi=hi)
    v = x * 1.7
    if dtype != "float32":
        v = np.floor(v + 0.5)
    ref = np.clip(v, lo, hi).astype(dtype)
    assert got.dtype == np.dtype(dtype)
    assert np.array_equal(got, ref)
    assert n_clip == int(np.sum((v < lo) | (v > hi)))


# ------------------------------------------------------------------ oracle matched filter
def naive_matched_filter(z, centres, rolloff, half, sps):
    out = np.empty(centres.shape[0], complex)
    for i, c in enumerate(centres):
        n = np.arange(math.ceil(c - half * sps), math.floor(c + half * sps) + 1)
        h = truncated_rrc((n - c) / sps, rolloff, half) / math.sqrt(sps)  # closed form
        out[i] = np.sum(h * z[n])
    return out


def test_matched_filter_matches_closed_form():
    rng = np.random.default_rng(9)
    z = rng.normal(size=5000) + 1j * rng.normal(size=5000)
    sps, half = 6.6667, 8
    centres = 60.0 + np.arange(600) * sps + 0.123
    got = oracle.matched_filter(z, centres, rolloff=0.2, half_span=half, sps=sps)
    ref = naive_matched_filter(z, centres, 0.2, half, sps)
    # linear interpolation in a 4096-per-symbol table: |p''| du^2 / 8 ~ 1e-7 per tap
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6 * np.abs(ref).max())


def test_matched_filter_rejects_windows_outside():
    with pytest.raises(ValueError, match="leave"):
        oracle.matched_filter(np.zeros(100, complex), np.array([5.0]), rolloff=0.2,
                              half_span=4, sps=4.0)
