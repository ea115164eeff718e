"""Root-raised-cosine pulse and the polyphase matched-filter bank evaluated at symbol instants."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.linalg import solve_toeplitz, toeplitz

__all__ = ["STOP_GUARD_SYMBOL_RATES", "MatchedFilterBank", "ls_matched_taps",
           "rrc_frequency_response", "rrc_pulse"]

#: the least-squares design's stop band starts this far (symbol rates) beyond the band edge
#: (1 + beta) Rs / 2: pilots closer than that to the quantum band are not rejected by design
STOP_GUARD_SYMBOL_RATES = 0.15
# design weights (per unit-energy filter): inter-symbol interference of a V_A = 5 signal,
# stop-band energy, white noise; chosen so that ISI, stop band and mismatch loss all beat the
# Kaiser-tapered RRC twice as long (benchmarks/dsp_penalty.md, "matched-filter span")
_LS_VA, _LS_STOP, _LS_NOISE = 5.0, 1e4, 1e-2
#: timing offsets per sample designed (the other polyphase rows are interpolated); the
#: design's temporaries: two ``(nodes/2 + 2) x taps x (taps / sps + 33)`` float64 arrays and
#: a few taps x taps matrices (qkd_hw/sizes.py)
LS_DESIGN_NODES = 16
#: longest least-squares filter (taps): its design costs taps^3 (~3 s and 0.2 GB at 2048);
#: a longer one (beyond ~128 samples per symbol at the default spans) is the Kaiser-tapered
#: RRC of beta LS_FALLBACK_TAPER instead, with that filter's ISI (benchmarks/dsp_penalty.md)
LS_MAX_TAPS, LS_FALLBACK_TAPER = 2048, 5.0
_LS_LEVINSON_TAPS = 400


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


def _ls_design(sps: float, b: float, d: np.ndarray, mu: np.ndarray) -> np.ndarray:
    # least-squares taps (unnormalised) at the timing offsets mu, see ls_matched_taps
    # symbols whose pulse reaches the window, plus 16 symbol periods of RRC tail on each side
    nj = int(np.ceil(d.size / 2 / sps)) + 16
    j = np.arange(-nj, nj + 1, dtype=np.float64)
    # B = w_s S + w_n I, symmetric Toeplitz: its first column, with the stop-band energy
    # matrix S_mn = 2 int_{f1}^{1/2} cos(2 pi f (m - n)) df (f in cycles/sample)
    f1 = ((1 + b) / 2 + STOP_GUARD_SYMBOL_RATES) / sps
    k = np.arange(1, d.size, dtype=np.float64)
    col = np.empty(d.size)
    col[0] = _LS_STOP * (1.0 - 2.0 * f1) + _LS_NOISE
    col[1:] = _LS_STOP * (np.sin(np.pi * k) - np.sin(2 * np.pi * f1 * k)) / (np.pi * k)
    tau = mu[:, None] - d[None, :]                          # t_k - n, samples
    u = rrc_pulse(j[None, None, :] - tau[:, :, None] / sps, b) / np.sqrt(sps)
    # B^-1 by Levinson recursion for short filters (a LAPACK inverse of 160 taps ran 0.2 s
    # instead of 20 ms with two BLAS threads on a loaded machine; Levinson's n columns cost
    # n^3 in a Python loop, 13 s at 1600 taps), then B^-1 U of all offsets in one product
    if d.size <= _LS_LEVINSON_TAPS:
        binv = solve_toeplitz(col, np.eye(d.size), check_finite=False)
    else:
        binv = np.linalg.inv(toeplitz(col))
    nb = mu.size
    v = (binv @ u.transpose(1, 0, 2).reshape(d.size, -1)).reshape(d.size, nb, j.size)
    utv = np.einsum("bnj,nbk->bjk", u, v)
    # A^-1 p_0 = B^-1 p_0 - B^-1 U (I / V_A + U^T B^-1 U)^-1 U^T B^-1 p_0
    corr = np.linalg.solve(np.eye(j.size) / _LS_VA + utv, utv[:, :, nj:nj + 1])[:, :, 0]
    return v[:, :, nj].T - np.einsum("nbj,bj->bn", v, corr)


@lru_cache(maxsize=16)
def ls_matched_taps(samples_per_symbol: float, rolloff: float, half: int,
                    n_phases: int) -> np.ndarray:
    """Least-squares matched filter of length ``2 half`` samples for every polyphase offset.

    For a timing offset ``mu`` (row ``p``: ``mu = p / n_phases``) the taps ``g(mu - d)``,
    ``d = -half+1 .. half``, minimise ``V_A sum_{j != 0} q_j^2 + w_s E_stop + w_n |g|^2`` at
    ``q_0 = 1``, where ``q_j`` is the response to the (untruncated) RRC pulse of symbol
    ``k - j``, ``E_stop`` the energy of the taps' spectrum beyond
    ``(1 + beta) Rs / 2 + STOP_GUARD_SYMBOL_RATES Rs`` and ``|g|^2`` the white-noise gain. The
    optimum is ``g ~ A^-1 p_0`` with ``A = B + V_A U U^T`` (``U`` the pulses ``p_j`` as
    columns; the j = 0 term only rescales the solution) and ``B = w_s S + w_n I`` the same for
    every row (Toeplitz: ``B^-1`` by Levinson), so ``A^-1 p_0`` comes from ``B^-1 U`` and the
    Woodbury identity: ``taps^2`` times (pulses per window) per row instead of ``taps^3``. A
    truncated, windowed RRC of the same length leaves far more ISI or a weaker stop band: the
    window is the part of the pulse that is not matched.

    Returns
    -------
    ndarray, shape (n_phases, 2 half), float64, rows of unit energy (read-only, cached).
    """
    sps, b = float(samples_per_symbol), float(rolloff)
    d = np.arange(-half + 1, half + 1, dtype=np.float64)
    # designed on a grid of LS_DESIGN_NODES offsets (and one beyond each end), cubic in mu
    # between them: at fixed d the taps sample one smooth pulse g(mu - d), so 16 nodes leave
    # < 1e-10 of interpolation error at 4.4-10 samples per symbol and cost 1/16 of designing
    # all 256 rows
    m = min(LS_DESIGN_NODES, n_phases)
    half_nodes = np.arange(-1, m // 2 + 1)            # nodes m - i are nodes i mirrored
    nodes = _ls_design(sps, b, d, half_nodes / m)
    full = np.empty((m + 3, d.size))                  # nodes -1 .. m + 1
    full[half_nodes + 1] = nodes
    for i in range(m // 2 + 1, m + 2):
        full[i + 1] = full[m - i + 1, ::-1]
    x = np.arange(n_phases) * m / n_phases            # position in node units
    i0 = np.minimum(np.floor(x).astype(np.int64), m - 1)
    t = (x - i0)[:, None]
    w = (-t * (t - 1) * (t - 2) / 6, (t + 1) * (t - 1) * (t - 2) / 2,
         -(t + 1) * t * (t - 2) / 2, (t + 1) * t * (t - 1) / 6)
    g = sum(wk * full[i0 + k] for k, wk in enumerate(w))    # Lagrange, nodes i0-1 .. i0+2
    g /= np.sqrt(np.sum(g * g, axis=1, keepdims=True))
    g.setflags(write=False)
    return g


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

    The taps span ``span_symbols`` symbol periods (centred). With ``taper=None`` they are the
    least-squares design of that length (``ls_matched_taps``: matched to the RRC pulse with
    the least inter-symbol interference, and a clean stop band beyond the guard for the
    pilots; beyond ``LS_MAX_TAPS`` taps the Kaiser window below); a number is the truncated RRC
    under a Kaiser window of that beta (0: plain truncation).

    The carrier phase varies inside the matched-filter window (laser phase noise, residual
    frequency offset); a single phase per symbol would leave inter-symbol interference of
    order ``V_A * 2 pi linewidth * (pulse duration)``. The kernel therefore corrects the phase
    to first order around the symbol instant, ``exp(-j (psi_k + psi'_k (n - t_k)))``, with a
    second table ``dtaps = (t_k - n) * taps``:
    ``y_k = exp(-j (w t_k + psi_k)) (Y0 + j psi'_k Y1)``.
    """

    def __init__(self, *, samples_per_symbol: float, rolloff: float, span_symbols: int,
                 n_phases: int, mixer_cycles_per_sample: float,
                 taper: float | None = 0.0) -> None:
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
        if taper is None and 2 * self.half > LS_MAX_TAPS:
            taper = LS_FALLBACK_TAPER
        if taper is None:
            h = ls_matched_taps(sps, self.rolloff, self.half, self.n_phases)
        else:
            h = rrc_pulse(tau / sps, rolloff)
            if taper > 0:
                h *= (np.i0(taper * np.sqrt(np.clip(1 - (tau / self.half) ** 2, 0, None)))
                      / np.i0(taper))
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
