"""Multidimensional reconciliation maps: algebra, orthogonality, the induced BIAWGN channel."""

from __future__ import annotations

import numpy as np
import pytest

from qkd_hw.postprocessing import multidim


@pytest.mark.parametrize("d", [1, 2, 4, 8])
def test_maps_are_orthogonal_and_send_bobs_direction_to_the_code_point(d):
    rng = np.random.default_rng(d)
    y = rng.normal(size=(200, d)) * 3.0
    bits = rng.integers(0, 2, 200 * d)
    u = multidim.bits_to_points(bits, d)
    maps, norms = multidim.bob_maps(y, u)
    np.testing.assert_allclose(norms, np.sqrt((y * y).sum(axis=1)), rtol=1e-12)
    np.testing.assert_allclose(multidim.apply_maps(maps, y / norms[:, None]), u, atol=1e-12)
    for k in range(0, 200, 7):
        m = multidim.left_matrix(maps[k])
        np.testing.assert_allclose(m.T @ m, np.eye(d), atol=1e-12)
        np.testing.assert_allclose(m @ (y[k] / norms[k]), u[k], atol=1e-12)
    # code points: +-1/sqrt(d), bit 0 -> positive
    np.testing.assert_allclose(u.ravel(), (1 - 2 * bits) / np.sqrt(d))


def test_low_dimensions_are_reals_complex_and_quaternions():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 2)), rng.normal(size=(5, 2))
    za, zb = a[:, 0] + 1j * a[:, 1], b[:, 0] + 1j * b[:, 1]
    prod = multidim.multiply(a, b)
    np.testing.assert_allclose(prod[:, 0] + 1j * prod[:, 1], za * zb, atol=1e-12)
    # Hamilton: i j = k, j i = -k, and the octonion units anticommute/square to -1
    e = np.eye(4)
    np.testing.assert_allclose(multidim.multiply(e[[1]], e[[2]])[0], e[3])
    np.testing.assert_allclose(multidim.multiply(e[[2]], e[[1]])[0], -e[3])
    e8 = np.eye(8)
    for i in range(1, 8):
        np.testing.assert_allclose(multidim.multiply(e8[[i]], e8[[i]])[0], -e8[0])


def test_octonions_are_normed_and_alternative_but_not_associative():
    rng = np.random.default_rng(3)
    a, b, c = (rng.normal(size=(50, 8)) for _ in range(3))
    ab = multidim.multiply(a, b)
    np.testing.assert_allclose(np.linalg.norm(ab, axis=1),
                               np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), rtol=1e-12)
    # alternativity: (a b) b = a (b b)
    bb = multidim.multiply(b, b)
    np.testing.assert_allclose(multidim.multiply(ab, b), multidim.multiply(a, bb), atol=1e-10)
    assoc = multidim.multiply(ab, c) - multidim.multiply(a, multidim.multiply(b, c))
    assert np.abs(assoc).max() > 0.1


@pytest.mark.parametrize("d", [1, 8])
def test_alice_sees_a_binary_input_awgn_channel_of_the_predicted_noise(d):
    """x ~ N(0, VA), y = t x + z: the mapped x is rho |y|/sigma_y u + w, Var(w) = 1/(1+snr)."""
    rng = np.random.default_rng(10 + d)
    n, va, t, snr = 400_000, 4.0, 0.5, 0.1
    sigma2 = t * t * va / snr
    x = rng.normal(size=n) * np.sqrt(va)
    y = t * x + rng.normal(size=n) * np.sqrt(sigma2)
    bits = rng.integers(0, 2, n)
    u = multidim.bits_to_points(bits, d)
    maps, norms = multidim.bob_maps(y.reshape(-1, d), u)
    v = multidim.apply_maps(maps, (x / np.sqrt(va)).reshape(-1, d))
    rho = np.sqrt(snr / (1 + snr))
    w = v - rho * (norms / np.sqrt(t * t * va + sigma2))[:, None] * u
    var_pred = 1.0 / (1.0 + snr)
    se_var = var_pred * np.sqrt(2.0 / n)
    se_mean = np.sqrt(var_pred / n)
    assert abs(w.mean()) < 5 * se_mean
    assert abs(w.var() - var_pred) < 5 * se_var
    # the noise does not depend on the key bit
    b = bits.reshape(-1, d).astype(bool)
    assert abs(w[b].mean() - w[~b].mean()) < 5 * np.sqrt(4 * var_pred / n)


def test_public_maps_carry_no_information_on_the_key_bits():
    """Maps are uniform on the sphere whatever u is: their mean given each bit is ~0."""
    rng = np.random.default_rng(5)
    n = 100_000
    y = rng.normal(size=(n, 8))
    bits = rng.integers(0, 2, n * 8)
    maps, _ = multidim.bob_maps(y, multidim.bits_to_points(bits, 8))
    first = bits.reshape(-1, 8)[:, 0].astype(bool)
    se = np.sqrt(1 / 8 / (n / 2))
    assert np.abs(maps[first].mean(axis=0) - maps[~first].mean(axis=0)).max() < 5 * np.sqrt(2) * se


def test_zero_block_is_refused():
    with pytest.raises(ValueError, match="zero"):
        multidim.bob_maps(np.zeros((1, 8)), multidim.bits_to_points(np.zeros(8), 8))
