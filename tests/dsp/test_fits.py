"""The numba loop of the robust structure function against its numpy definition."""

from __future__ import annotations

import numpy as np
import pytest

from dsp.fits import _wrap, _wrapped_squares, line_fit, slope_std, structure_fit


def _robust_structure_numpy(ph: np.ndarray, max_lag: int) -> tuple[float, float]:
    """The robust ``structure_fit`` written with numpy temporaries (its definition)."""
    lags = np.arange(1, max_lag + 1)
    b1 = float(np.angle(np.mean(np.exp(1j * np.diff(ph)))))
    S = np.array([np.mean(_wrap(ph[lag:] - ph[:-lag] - lag * b1) ** 2) for lag in lags])
    slope, icpt = line_fit(lags, S)
    return float(icpt / 2), float(slope)


@pytest.mark.parametrize("scale", [0.01, 1.0, 30.0])
def test_wrapped_squares_are_the_numpy_expression_bit_for_bit(scale):
    # increments inside +-2 pi take the loop's shortcut, larger ones (scale 30) the fmod;
    # exact multiples of pi, +-0 and a NaN sit on the branch edges
    rng = np.random.default_rng(5)
    ph = np.cumsum(rng.normal(0, scale, 3000))
    ph[10:14] = [np.pi, -np.pi, 0.0, -0.0]
    ph[20] = 3 * np.pi
    ph[40] = np.nan
    buf = np.empty(ph.shape[0])
    for lag in (1, 2, 7, 48):
        for b1 in (0.0, 0.3, -2.9, np.pi):
            ref = _wrap(ph[lag:] - ph[:-lag] - np.int64(lag) * b1) ** 2
            got = _wrapped_squares(ph, lag, b1, buf)
            assert got.shape == ref.shape
            assert np.array_equal(ref.view(np.uint64), got.view(np.uint64))


def test_robust_structure_fit_equals_its_numpy_definition():
    rng = np.random.default_rng(6)
    ph = np.cumsum(rng.normal(0.02, 0.05, 4000)) + rng.normal(0, 0.1, 4000)
    ph[1000] += 2.5   # an outlier block: wrapped increments beyond pi
    assert structure_fit(ph, 48, robust=True) == _robust_structure_numpy(ph, 48)
    q = ph.shape[0] // 4
    ref = [_robust_structure_numpy(ph[i * q:(i + 1) * q], 48)[1] for i in range(4)]
    assert slope_std(ph, 48, robust=True) == float(np.std(ref, ddof=1) / 2)
