"""Root-raised-cosine pulse of the link simulator: closed form, truncation, tables.

Time is in symbol periods. The pulse is truncated to ``|u| <= L`` symbols
(``rrc_span_symbols = 2 L``) and scaled to unit energy *after* truncation,
``∫ p(u)^2 du = 1``. Sampled at ``sps`` samples per symbol and divided by
``sqrt(sps)`` it has unit energy in samples (exactly so for the untruncated,
band-limited pulse when ``(1 + beta) Rs < fs``; the truncation changes the
sum by far less than 1e-6), so a receiver's matched filter with unit-energy
taps returns the symbol.

Truncation ISI: a receiver matched to the same truncated pulse sees, for a
symbol of variance V_A per quadrature, residual inter-symbol interference of
variance ``V_A * isi(beta, L)`` referred to the channel input (it looks like
excess noise). The automatic span is the shortest ``2 L`` (multiple of 4
symbols, 16..512) with ``V_A * isi <= 1e-5 SNU``, i.e. a tenth of 1e-4 SNU;
for beta = 0.2 and V_A = 5 that is 32 symbols (isi 1.6e-6 -> 8e-6 SNU).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

#: bound on the truncation ISI referred to the channel input (SNU) used by the auto span
AUTO_SPAN_ISI_SNU = 1e-5
_SPAN_MIN, _SPAN_MAX = 16, 512


def rrc(u: np.ndarray, beta: float) -> np.ndarray:
    """Closed-form root-raised-cosine pulse, untruncated, peak ``1 - beta + 4 beta / pi``.

    Parameters
    ----------
    u : array_like
        Time in symbol periods.
    beta : float
        Roll-off, ``0 < beta <= 1``.

    Returns
    -------
    ndarray, float64, shape of ``u``
        ``∫ rrc(u)^2 du = 1`` for the untruncated pulse.
    """
    if not 0.0 < beta <= 1.0:
        raise ValueError(f"rolloff must be in (0, 1], got {beta!r}")
    u = np.asarray(u, dtype=np.float64)
    out = np.empty_like(u)
    at_zero = u == 0.0
    at_sing = np.abs(np.abs(4.0 * beta * u) - 1.0) < 1e-9
    reg = ~(at_zero | at_sing)
    x = u[reg]
    out[reg] = (np.sin(np.pi * x * (1 - beta)) + 4 * beta * x * np.cos(np.pi * x * (1 + beta))) / (
        np.pi * x * (1 - (4 * beta * x) ** 2))
    out[at_zero] = 1.0 - beta + 4.0 * beta / np.pi
    out[at_sing] = beta / math.sqrt(2.0) * ((1 + 2 / np.pi) * math.sin(np.pi / (4 * beta))
                                            + (1 - 2 / np.pi) * math.cos(np.pi / (4 * beta)))
    return out


@lru_cache(maxsize=64)
def truncated_energy(beta: float, half_span: int) -> float:
    """``∫_{-L}^{L} rrc(u)^2 du`` (Simpson rule on 1/512-symbol steps; error < 1e-12)."""
    n = 1024 * half_span  # even number of intervals
    u = np.linspace(-half_span, half_span, n + 1)
    f = rrc(u, beta) ** 2
    h = 2.0 * half_span / n
    return float(h / 3.0 * (f[0] + f[-1] + 4.0 * f[1:-1:2].sum() + 2.0 * f[2:-1:2].sum()))


def truncated_rrc(u: np.ndarray, beta: float, half_span: int) -> np.ndarray:
    """RRC truncated to ``|u| <= half_span`` and scaled to unit energy after truncation."""
    u = np.asarray(u, dtype=np.float64)
    p = rrc(u, beta) / math.sqrt(truncated_energy(beta, half_span))
    return np.where(np.abs(u) <= half_span, p, 0.0)


@lru_cache(maxsize=64)
def truncation_isi(beta: float, half_span: int) -> float:
    """ISI power (fraction of the symbol power) of the truncated pulse into its matched filter.

    ``sum_{k != 0} q(k)^2`` with ``q(k) = ∫ p(u) p(u - k) du`` for the truncated,
    unit-energy pulse (rectangle rule on 1/256-symbol steps, exact enough for
    a 1e-8 level quantity: the integrand is smooth apart from the two edges).
    """
    r = 256
    u = np.arange(-half_span * r, half_span * r + 1) / r
    # imported here: scipy.signal is ~25 MB that qkd_hw.sim.params (and so every command
    # of the CLI) would otherwise load
    from scipy.signal import fftconvolve

    p = truncated_rrc(u, beta, half_span)
    acf = fftconvolve(p, p[::-1])[p.size - 1:] / r  # acf[j] = sum_i p[i + j] p[i] / r
    q = acf[r::r][: 2 * half_span]  # lags k = 1 .. 2L symbols
    return float(2.0 * np.sum(q * q))


def auto_span_symbols(beta: float, modulation_variance_snu: float) -> int:
    """Shortest span (symbols, multiple of 4) with ``V_A * isi <= AUTO_SPAN_ISI_SNU``."""
    for span in range(_SPAN_MIN, _SPAN_MAX + 1, 4):
        if modulation_variance_snu * truncation_isi(beta, span // 2) <= AUTO_SPAN_ISI_SNU:
            return span
    return _SPAN_MAX


def polyphase_table(beta: float, half_span: int, phases: int) -> np.ndarray:
    """Pulse taps for the synthesis kernel, float64 ``[phases + 1, 2 L]``.

    Row ``m`` holds ``p(m / phases - i)`` for ``i = -L + 1 .. L`` (the symbols
    ``k0 + i`` around a sample at fractional position ``k0 + m / phases``).
    Row ``phases`` equals row 0 shifted by one symbol and is kept so the
    kernel never wraps.
    """
    m = np.arange(phases + 1)[:, None] / phases
    i = np.arange(-half_span + 1, half_span + 1)[None, :]
    return np.ascontiguousarray(truncated_rrc(m - i, beta, half_span))
