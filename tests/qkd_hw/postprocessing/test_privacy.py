"""Toeplitz hashing by FFT: bit-exact against randextract and a naive GF(2) product; the
rounding check; the finite-size key length."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qkd_hw.keyrate import finite_size_delta, holevo_bound
from qkd_hw.postprocessing.privacy import (
    KeyLengthError,
    ToeplitzRoundingError,
    _buffer,
    _correlate,
    integer_correlation,
    random_bits,
    secret_key_length,
    toeplitz_hash,
    toeplitz_seed_length,
)

randextract = pytest.importorskip("randextract")


def _naive(key: np.ndarray, seed: np.ndarray, m: int) -> np.ndarray:
    """GF(2) product with the explicit matrix M[i, j] = seed[(i - j) mod len(seed)]."""
    n = key.shape[0]
    i, j = np.meshgrid(np.arange(m), np.arange(n), indexing="ij")
    M = seed[(i - j) % seed.shape[0]].astype(np.int64)
    return (M @ key.astype(np.int64) % 2).astype(np.uint8)


def _reference(key: np.ndarray, seed: np.ndarray, m: int) -> np.ndarray:
    ext = randextract.ToeplitzHashing(input_length=key.shape[0], output_length=m)
    return np.asarray(ext.extract(key, seed)).astype(np.uint8)


@pytest.mark.parametrize(("n", "m"), [(1, 1), (2, 1), (7, 7), (64, 13), (257, 100), (600, 599)])
def test_toeplitz_matches_naive_gf2_product(n: int, m: int) -> None:
    rng = np.random.default_rng(n * 1000 + m)
    key = rng.integers(0, 2, n, dtype=np.uint8)
    seed = rng.integers(0, 2, toeplitz_seed_length(n, m), dtype=np.uint8)
    want = _naive(key, seed, m)
    assert np.array_equal(toeplitz_hash(key, seed, m), want)
    # the block decomposition (bounded memory) gives the same bits
    assert np.array_equal(toeplitz_hash(key, seed, m, max_fft_len=16), want)


@pytest.mark.parametrize(("n", "m", "max_fft_len"),
                         [(1000, 10, 10**9), (10**5, 31_337, 10**9), (10**6, 250_000, 10**9),
                          (10**6, 400_000, 300_001), (10**6, 10**6, 700_000)])
def test_toeplitz_bit_exact_against_randextract(n: int, m: int, max_fft_len: int) -> None:
    rng = np.random.default_rng(n + m)
    key = rng.integers(0, 2, n, dtype=np.uint8)
    seed = rng.integers(0, 2, toeplitz_seed_length(n, m), dtype=np.uint8)
    got = toeplitz_hash(key, seed, m, max_fft_len=max_fft_len)
    assert got.dtype == np.uint8 and got.shape == (m,)
    assert np.array_equal(got, _reference(key, seed, m))


def test_toeplitz_all_ones_is_exact_at_the_largest_values() -> None:
    # every product is 1: the exact values are the largest possible (n), the parities known
    n, m = 200_003, 50_000
    key = np.ones(n, np.uint8)
    seed = np.ones(n + m - 1, np.uint8)
    assert np.array_equal(toeplitz_hash(key, seed, m), np.full(m, n % 2, np.uint8))


def test_toeplitz_refuses_wrong_shapes_and_values() -> None:
    key = np.ones(10, np.uint8)
    with pytest.raises(ValueError, match="seed"):
        toeplitz_hash(key, np.ones(10, np.uint8), 5)
    with pytest.raises(ValueError, match="n_out"):
        toeplitz_hash(key, np.ones(20, np.uint8), 11)
    with pytest.raises(ValueError, match="0 or 1"):
        toeplitz_hash(key * 2, np.ones(14, np.uint8), 5)


def test_integer_correlation_is_exact_on_small_digits() -> None:
    rng = np.random.default_rng(3)
    v = rng.integers(0, 2**10, 5000)
    x = rng.integers(0, 2**10, 1234)
    want = np.convolve(v, x)[x.shape[0] - 1:v.shape[0]]  # exact int64
    assert np.array_equal(integer_correlation(v, x), want)


def test_rounding_check_refuses_values_beyond_float64() -> None:
    rng = np.random.default_rng(4)
    v = rng.integers(0, 2**22, 2048)
    x = rng.integers(0, 2**22, 1024)   # values up to 2^54: cannot be exact
    with pytest.raises(ToeplitzRoundingError, match="2\\^52"):
        integer_correlation(v, x)


def test_rounding_check_fires_after_an_inexact_transform() -> None:
    # the run-time check itself (the a-priori bound bypassed): exact values ~2^70 come out
    # of the float64 FFT with errors far above 0.25, which must be refused, not rounded
    rng = np.random.default_rng(5)
    n_x, n_v = 1024, 2048
    z, n1, n2 = _buffer(n_v)
    z[:] = 0
    z.real[:n_v] = rng.integers(0, 2**30, n_v)
    z.imag[:n_x] = rng.integers(0, 2**30, n_x)
    with pytest.raises(ToeplitzRoundingError, match="not exact"):
        _correlate(z, n1, n2, n_x, n_v - n_x + 1, math.inf)


def test_random_bits_are_bits_of_the_requested_length() -> None:
    bits = random_bits(10_001)
    assert bits.shape == (10_001,) and bits.dtype == np.uint8
    assert set(np.unique(bits)) <= {0, 1}
    assert 4500 < int(bits.sum()) < 5500  # 10 sigma around 5000
    assert not np.array_equal(bits, random_bits(10_001))


ESTIMATES = {"transmittance": 0.5, "transmittance_min": 0.48, "excess_noise_snu": 0.02,
             "excess_noise_max_snu": 0.03, "electronic_noise_snu": 0.1, "efficiency": 0.7,
             "modulation_variance_snu": 5.0, "n_pe": 200_000, "eps_pe": 1e-10}


def test_secret_key_length_from_the_finite_size_formula() -> None:
    n_sym, reconciled, leak_ec, leak_ver = 1_000_000, 2_000_000, 1_100_000, 64 * 20
    p = secret_key_length(ESTIMATES, detection="heterodyne", block_symbols=1_100_000,
                          key_symbols=n_sym, reconciled_bits=reconciled, leak_ec_bits=leak_ec,
                          leak_verification_bits=leak_ver, eps_cor=20 * 2.0**-64)
    chi, _ = holevo_bound(5.0, 0.48, 0.03, 0.7, 0.1, "heterodyne")  # at (T_min, xi_max)
    delta = finite_size_delta(n_sym, eps_bar=1e-10, eps_pa=1e-10)
    want = math.floor(reconciled - leak_ec - leak_ver - n_sym * (float(chi) + delta))
    assert p.final_key_bits == want > 0
    assert p.chi_be_bits_per_symbol == pytest.approx(float(chi), rel=1e-12)
    assert p.eps_total == pytest.approx(2e-10 + 1e-10 + 1e-10 + 20 * 2.0**-64)


def test_secret_key_length_is_zero_when_leakage_exceeds_the_margin() -> None:
    p = secret_key_length(ESTIMATES, detection="heterodyne", block_symbols=2000,
                          key_symbols=1000, reconciled_bits=2000, leak_ec_bits=1900,
                          leak_verification_bits=64, eps_cor=2.0**-64)
    assert p.final_key_bits == 0


def test_secret_key_length_names_missing_estimates() -> None:
    est = {k: v for k, v in ESTIMATES.items() if k != "transmittance_min"}
    with pytest.raises(KeyLengthError, match="transmittance_min"):
        secret_key_length(est, detection="heterodyne", block_symbols=10, key_symbols=5,
                          reconciled_bits=10, leak_ec_bits=0, leak_verification_bits=0,
                          eps_cor=0.0)
