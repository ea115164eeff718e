"""Root-raised-cosine pulse and the polyphase matched-filter bank evaluated at symbol instants."""

from __future__ import annotations

import numpy as np

__all__ = ["MatchedFilterBank", "rrc_frequency_response", "rrc_pulse"]


def rrc_pulse(t: np.ndarray, rolloff: float) -> np.ndarray:
    """Root-raised-cosine impulse response at ``t`` symbol periods (peak ~1, not normalised).

    Parameters
    ----------
    t : ndarray
        Times in units of the symbol period T (any shape).
    rolloff : float
        Roll-off factor beta, 0 < beta <= 1.

    Returns
    -------
    ndarray (same shape as ``t``), float64.
    """
    b = float(rolloff)
    if not 0.0 < b <= 1.0:
        raise ValueError(f"rolloff must be in (0, 1], got {rolloff!r}")
    t = np.asarray(t, dtype=np.float64)
    out = np.empty_like(t)
    at0 = np.abs(t) < 1e-9
    sing = np.abs(np.abs(t) - 1.0 / (4.0 * b)) < 1e-9
    reg = ~(at0 | sing)
    tr = t[reg]
    out[reg] = ((np.sin(np.pi * tr * (1 - b)) + 4 * b * tr * np.cos(np.pi * tr * (1 + b)))
                / (np.pi * tr * (1 - (4 * b * tr) ** 2)))
    out[at0] = 1 - b + 4 * b / np.pi
    out[sing] = b / np.sqrt(2) * ((1 + 2 / np.pi) * np.sin(np.pi / (4 * b))
                                  + (1 - 2 / np.pi) * np.cos(np.pi / (4 * b)))
    return out


def rrc_frequency_response(f: np.ndarray, symbol_rate_hz: float, rolloff: float) -> np.ndarray:
    """|H(f)| of the RRC filter (sqrt of the raised-cosine spectrum), 1 in the pass band.

    ``f`` in Hz (any shape); float64 of the same shape.
    """
    b = float(rolloff)
    af = np.abs(np.asarray(f, dtype=np.float64)) / float(symbol_rate_hz)
    lo, hi = (1 - b) / 2, (1 + b) / 2
    out = np.zeros_like(af)
    out[af <= lo] = 1.0
    mid = (af > lo) & (af < hi)
    out[mid] = np.sqrt(0.5 * (1 + np.cos(np.pi / b * (af[mid] - lo))))
    return out


class MatchedFilterBank:
    """Polyphase table of the RRC matched filter combined with the down-conversion mixer.

    The matched-filter output of symbol k at the (fractional) sample instant t_k is

        y_k = sum_n h(t_k - n) r[n] exp(-j w n)
            = exp(-j w t_k) sum_d [h(mu - d) exp(j w (mu - d))] r[n_c + d]

    with ``n_c = floor(t_k)``, ``mu = t_k - n_c`` and ``d = -half+1 .. half``; the bracket is
    tabulated for ``n_phases`` values of ``mu`` (mu is rounded to the nearest one, a timing
    quantisation of at most 1/(2 n_phases) sample). Every phase is normalised to unit energy,
    ``sum_d h(mu - d)^2 = 1``, so white noise of variance s2 per sample gives ``E|y|^2 = s2``
    for every phase: the SNU normalisation through the shot-noise capture is exact.

    The taps are truncated to ``span_symbols`` symbol periods (centred) and tapered by a
    Kaiser window (beta ``taper``) to keep the stop-band (pilot rejection) clean.

    The carrier phase varies inside the matched-filter window (laser phase noise, residual
    frequency offset); a single phase per symbol would leave inter-symbol interference of
    order ``V_A * 2 pi linewidth * (pulse duration)``. The kernel therefore corrects the phase
    to first order around the symbol instant, ``exp(-j (psi_k + psi'_k (n - t_k)))``, with a
    second table ``dtaps = (t_k - n) * taps``:
    ``y_k = exp(-j (w t_k + psi_k)) (Y0 + j psi'_k Y1)``.
    """

    def __init__(self, *, samples_per_symbol: float, rolloff: float, span_symbols: int,
                 n_phases: int, mixer_cycles_per_sample: float, taper: float = 0.0) -> None:
        sps = float(samples_per_symbol)
        if not sps >= 2.0:
            raise ValueError(f"samples_per_symbol must be >= 2, got {samples_per_symbol!r}")
        if int(span_symbols) < 2:
            raise ValueError(f"span_symbols must be >= 2, got {span_symbols!r}")
        if int(n_phases) < 1:
            raise ValueError(f"n_phases must be >= 1, got {n_phases!r}")
        self.samples_per_symbol = sps
        self.rolloff = float(rolloff)
        self.span_symbols = int(span_symbols)
        self.n_phases = int(n_phases)
        self.mixer_cycles_per_sample = float(mixer_cycles_per_sample)
        self.half = int(np.ceil(self.span_symbols * sps / 2.0))
        d = np.arange(-self.half + 1, self.half + 1, dtype=np.float64)
        mu = np.arange(self.n_phases, dtype=np.float64) / self.n_phases
        tau = mu[:, None] - d[None, :]                      # t_k - n, samples
        h = rrc_pulse(tau / sps, rolloff)
        if taper > 0:
            h *= np.i0(taper * np.sqrt(np.clip(1 - (tau / self.half) ** 2, 0, None))) / np.i0(taper)
        h /= np.sqrt(np.sum(h * h, axis=1, keepdims=True))
        w = 2 * np.pi * self.mixer_cycles_per_sample
        g = h * np.exp(1j * w * tau)
        self.taps = g                                        # complex128 [P, 2*half], reference
        self.taps_re = np.ascontiguousarray(g.real, dtype=np.float32)
        self.taps_im = np.ascontiguousarray(g.imag, dtype=np.float32)
        # first-order phase correction inside the window: sum (t_k - n) g r[n] (see kernels)
        g1 = tau * g
        self.dtaps = g1
        self.dtaps_re = np.ascontiguousarray(g1.real, dtype=np.float32)
        self.dtaps_im = np.ascontiguousarray(g1.imag, dtype=np.float32)

    @property
    def n_taps(self) -> int:
        return 2 * self.half
