"""Kalman phase trackers (methods ``"kalman"`` and ``"kalman-rts"``): kernels, design and the
streaming trackers.

Random-walk phase state with ``q = D_phi D / fs`` per block and the pilot phase as observation
with ``r = sigma_n^2 D_acq / D`` (Chin et al., npj Quantum Inf. 7, 20 (2021)); ``"kalman-rts"``
adds the Rauch-Tung-Striebel smoother (offline processing), run over fixed blocks of the
decimated grid with a bounded look-ahead, so the result does not depend on how the recording is
chunked. Its pilot blocks are at least ``pilot_block_guard`` samples long (up to tau): shorter
blocks let the quantum band into the phase measurements. The observation noise r is measured
again on the head at the tracker's own block length (``refine_kalman``), as the noise of block
MEANS (``block_noise_var``).

Overlapping blocks (``overlap`` h > 1, chosen by ``choose_overlap`` where the block length D is
several smoother time constants, i.e. at large linewidths): the pilot is decimated at the hop
``D / h`` and the tracker observes the sums of h consecutive hop phasors, windows of ``h hop >=
D`` samples (the quantum band stays beyond the long window's first null) one hop apart, so
block structure and interpolation cost what a hop costs (``overlap_phase_var``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from numba import njit, prange

from dsp._numba_options import NJIT, NJIT_PARALLEL
from dsp.core import TWO_PI, atan2
from dsp.errors import DspLockError
from dsp.fits import structure_fit
from dsp.trackers.base import DesignInputs, HeadPilot, PilotFilterDesign, common_fields

__all__ = ["KalmanDesign", "KalmanRtsTracker", "KalmanTracker", "block_noise_var",
           "choose_overlap", "design_kalman", "hop_cross_leak", "kalman_phase_forward",
           "kalman_steady_state", "overlap_phase_var", "refine_kalman", "rts_lengths",
           "rts_smooth_block", "rts_smooth_blocks", "window_sums"]

#: lags of the structure-function fit of the observation noise on the head
NOISE_FIT_LAGS = 16
#: floor of the fitted observation noise (the intercept can come out <= 0 at large linewidths)
MIN_OBSERVATION_VAR = 1e-12
#: RTS block length bounds (blocks)
RTS_BLOCK_MIN = 1024
RTS_BLOCK_MAX = 1 << 18
#: overlaps tried by ``choose_overlap`` (odd: the window is centred on its middle hop)
OVERLAPS = (3, 5, 7, 9)
#: scales of the hop tracker's r (times h r_window) tried by ``choose_overlap``
R_SCALES = (0.25, 0.5, 0.75, 1.0)
#: non-overlapping blocks are kept while their predicted error is within this of the bound
OVERLAP_TOLERANCE = 1.05
#: the smallest overlap whose predicted error is within this of the least of ``OVERLAPS``
OVERLAP_NEAR_BEST = 1.03
#: largest response of a hop's boxcar to another pilot (or its image) that a hop may have. The
#: pilots' common phasor is estimated jointly per hop (``dsp.pilot.joint_pilot``: the cross
#: terms are exact, no other pilot's noise enters), so leakage costs only through the hops'
#: unequal information: windows of 3-5 hops measured 1.05 x the bound's r at leaks <= 0.2,
#: 1.07 x at 0.47 (250/320 MHz pilots, hop 9 at 1 GSa/s), 1.09 x at 0.66, 1.12 x at 0.82
#: (``benchmarks.pilot_window_noise``). A refused hop is replaced by the next longer quiet one
#: (``_quiet_hop``)
MAX_HOP_CROSS_LEAK = 0.5


def hop_cross_leak(pilot_cycles: tuple[float, ...], hop: int) -> float:
    """Largest ``|H_hop(nu)|`` (the boxcar of ``hop`` samples) at the other pilots and their
    images seen from each pilot (``nu_j - nu_k`` and ``-(nu_j + nu_k)``, j != k)."""
    worst = 0.0
    for k, nk in enumerate(pilot_cycles):
        for j, nj in enumerate(pilot_cycles):
            if j == k:
                continue
            for nu in (nj - nk, -(nj + nk)):
                nu -= math.floor(nu + 0.5)
                s = math.sin(math.pi * nu)
                h = 1.0 if abs(s) < 1e-12 else abs(math.sin(math.pi * nu * hop) / (hop * s))
                worst = max(worst, h)
    return worst


# --------------------------------------------------------------------------------------------
# kernels: Kalman filter (random-walk phase, pilot-phasor observation) and RTS smoother
# --------------------------------------------------------------------------------------------
@njit(**NJIT)
def _angles_range(z, out):
    # over slices indexed from 0, in a function of its own, the loop vectorises (inside the
    # prange body over [t per, (t+1) per) it did not: 2.3x slower)
    for j in range(z.shape[0]):
        out[j] = atan2(z[j].imag, z[j].real)


@njit(**NJIT_PARALLEL)
def _angles(z, out):
    # the observations' atan2 does not depend on the filter state: computed in parallel,
    # out of the serial recursion
    n = z.shape[0]
    nthreads = 16
    per = (n + nthreads - 1) // nthreads
    for t in prange(nthreads):
        lo = min(n, t * per)
        hi = min(n, (t + 1) * per)
        _angles_range(z[lo:hi], out[lo:hi])


_KF_RUN = 64   # steps per speculative run of the steady-state Kalman filter


@njit(**NJIT)
def _kalman_forward(meas, phi0, p0, q, r, phi_f, p_f):
    phi = phi0
    p = p0
    n = meas.shape[0]
    j = 0
    # variance recursion until it reaches its fixed point (to 1e-15): the division chain then
    # leaves the loop
    while j < n:
        pp = p + q
        g = pp / (pp + r)
        p_new = (1.0 - g) * pp
        innov = meas[j] - phi
        innov -= TWO_PI * math.floor(innov / TWO_PI + 0.5)
        phi = phi + g * innov
        phi_f[j] = phi
        j += 1
        if abs(p_new - p) <= 1e-15 * p:
            # converged: p stays at the value this step's gain came from, so a later call
            # started from p_f[-1] continues exactly as one long call would
            p_f[j - 1] = p
            break
        p_f[j - 1] = p_new
        p = p_new
    if j >= n:
        return phi, p
    pp = p + q
    g = pp / (pp + r)
    p_f[j:] = p
    # steady state. The measurements are wrapped angles and phi is unwrapped: the innovation
    # is (meas + off) - phi with off the multiple of 2 pi that brings meas next to phi.
    # Runs of _KF_RUN steps go without the wrap (a multiply-add chain only) and are redone
    # step by step with it, and off re-derived, when an innovation left [-pi, pi): only when
    # the phase crosses a multiple of 2 pi.
    off = TWO_PI * math.floor((phi - meas[j]) / TWO_PI + 0.5)
    while j < n:
        e = min(n, j + _KF_RUN)
        phi_start = phi
        bad = False
        for i in range(j, e):
            innov = (meas[i] + off) - phi
            bad |= (innov >= math.pi) | (innov < -math.pi)
            phi = phi + g * innov
            phi_f[i] = phi
        if bad:
            phi = phi_start
            for i in range(j, e):
                innov = (meas[i] + off) - phi
                if innov >= math.pi or innov < -math.pi:
                    off = TWO_PI * math.floor((phi - meas[i]) / TWO_PI + 0.5)
                    innov = (meas[i] + off) - phi
                phi = phi + g * innov
                phi_f[i] = phi
        j = e
    return phi, p


def kalman_phase_forward(z: np.ndarray, *, phi0: float, p0: float, q: float,
                         r: float) -> tuple[np.ndarray, np.ndarray]:
    """Forward Kalman filter of a random-walk phase observed through pilot phasors.

    State ``phi_j = phi_{j-1} + w_j``, ``Var(w) = q`` (rad^2 per step, ``2 pi linewidth dt``);
    observation ``arg z_j = phi_j + v_j`` (mod 2 pi), ``Var(v) = r``. The innovation is wrapped
    to (-pi, pi] so the output is an unwrapped, continuous phase (Chin et al., npj Quantum Inf.
    7, 20 (2021), linearised around the prediction).

    Returns ``(phi_filtered, p_filtered)``, float64 arrays shaped like ``z``.
    """
    z = np.ascontiguousarray(z, np.complex128)
    if z.ndim != 1:
        raise ValueError(f"z must be 1-D, got shape {z.shape}")
    if not (q >= 0 and r > 0):
        raise ValueError(f"need q >= 0 and r > 0, got q={q!r}, r={r!r}")
    n = z.shape[0]
    phi_f = np.empty(n)
    p_f = np.empty(n)
    if n:
        meas = np.empty(n)
        _angles(z, meas)
        _kalman_forward(meas, float(phi0), float(p0), float(q), float(r), phi_f, p_f)
    return phi_f, p_f


@njit(inline="always", **NJIT)
def _rts_run(phi_f, p_f, q, lo, hi, phi_end, out, keep_hi):
    # backward over forward estimates [lo, hi); phi_s starts as the smoothed state after
    # hi - 1; the smoothed values of j < keep_hi go to out[j] (same indexing as phi_f)
    phi_s = phi_end
    p_last = -1.0
    c = 0.0
    for j in range(hi - 1, lo - 1, -1):
        # prediction of j+1 from j: (phi_f[j], p_f[j] + q); the gain does not depend on the
        # smoothed state, so the loop-carried chain is one multiply-add; it is recomputed
        # only when p_f changes (after the filter's start-up it is constant)
        pj = p_f[j]
        if pj != p_last:
            c = pj / (pj + q)
            p_last = pj
        phi_s = phi_f[j] + c * (phi_s - phi_f[j])
        if j < keep_hi:
            out[j] = phi_s


@njit(**NJIT)
def _rts(phi_f, p_f, q, phi_end, out):
    n = phi_f.shape[0]
    _rts_run(phi_f, p_f, q, 0, n, phi_end, out, n)


@njit(**NJIT_PARALLEL)
def _rts_blocks(phi_f, p_f, q, L, H, nb, out):
    # block b: backward from H estimates after its end (the forward value there as the
    # start), keep block b; independent blocks -> one task each
    for b in prange(nb):
        lo = b * L
        hi = lo + L + H
        _rts_run(phi_f, p_f, q, lo, hi, phi_f[hi - 1], out, lo + L)


def rts_smooth_block(phi_f: np.ndarray, p_f: np.ndarray, q: float, phi_next: float,
                     p_next: float) -> np.ndarray:
    """Rauch-Tung-Striebel backward pass over a block of forward estimates.

    ``phi_next`` is the (approximately) smoothed state after the block (``p_next``, its
    variance, does not enter the smoothed mean); the random-walk prediction is
    ``phi_{j+1|j} = phi_f[j]`` with variance ``p_f[j] + q``.
    """
    phi_f = np.ascontiguousarray(phi_f, np.float64)
    p_f = np.ascontiguousarray(p_f, np.float64)
    if phi_f.shape != p_f.shape or phi_f.ndim != 1:
        raise ValueError(f"phi_f and p_f must be 1-D of equal length, got {phi_f.shape} and "
                         f"{p_f.shape}")
    out = np.empty_like(phi_f)
    if phi_f.shape[0]:
        _rts(phi_f, p_f, float(q), float(phi_next), out)
    return out


def rts_smooth_blocks(phi_f: np.ndarray, p_f: np.ndarray, q: float, block: int,
                      n_blocks: int, *, lookahead: int | None = None) -> np.ndarray:
    """Fixed-lag RTS over consecutive blocks: block b (``[b L, (b+1) L)``) is smoothed by a
    backward pass that starts H = ``lookahead`` estimates after its end (default: L) from the
    forward estimate there, i.e. ``rts_smooth_block(phi_f[bL:(b+1)L+H], ...,
    phi_f[(b+1)L+H-1], ...)[:L]`` for every b, in one parallel call (``rts_lengths``
    gives L and H). Needs ``1 <= H <= L`` and ``len(phi_f) >= n_blocks L + H``.

    Returns
    -------
    ndarray, shape (n_blocks * L,), float64
    """
    phi_f = np.ascontiguousarray(phi_f, np.float64)
    p_f = np.ascontiguousarray(p_f, np.float64)
    L, nb = int(block), int(n_blocks)
    H = L if lookahead is None else int(lookahead)
    if L < 1 or nb < 0:
        raise ValueError(f"need block >= 1 and n_blocks >= 0, got {block!r}, {n_blocks!r}")
    if not 1 <= H <= L:
        raise ValueError(f"lookahead must be in [1, block = {L}], got {lookahead!r}")
    if phi_f.shape != p_f.shape or phi_f.shape[0] < nb * L + H:
        raise ValueError(f"{nb} blocks of {L} with look-ahead {H} need {nb * L + H} forward "
                         f"estimates, got {phi_f.shape[0]} (p_f: {p_f.shape[0]})")
    out = np.empty(nb * L)
    if nb:
        _rts_blocks(phi_f, p_f, float(q), L, H, nb, out)
    return out


# --------------------------------------------------------------------------------------------
# design
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KalmanDesign(PilotFilterDesign):
    """Kalman tracker design: q, r : process / observation variances per block (rad^2);
    rts_block : RTS block length in blocks; rts_lookahead : blocks of look-ahead of each
    block's backward pass (``rts_lengths``; unused by ``"kalman"``); overlap : hops h per
    observation window (``decimation`` is then the hop, the window ``overlap * decimation``
    samples); r_scale : r over the noise variance of one window's mean (1 without overlap);
    pilot_cycles : the pilots' frequencies over fs (``choose_overlap`` in ``refine_kalman``).
    With overlap, ``predicted_phase_var`` is the per-sample error ``overlap_phase_var``."""

    q: float
    r: float
    rts_block: int
    rts_lookahead: int
    overlap: int = 1
    r_scale: float = 1.0
    pilot_cycles: tuple[float, ...] = ()


def rts_lengths(q: float, r: float) -> tuple[int, int]:
    """RTS block length and look-ahead (blocks) for the Kalman variances q, r.

    With ``tc = sqrt(r / q)`` blocks (the smoother's time constant): blocks of
    ``16 tc`` clipped to [1024, 2^18] (long enough that the per-call overhead vanishes), and a
    look-ahead of ``16 tc`` blocks, at least 64 and at most one block. Each block's backward
    pass starts from the FORWARD estimate that far after it; the smoother forgets that start
    by the factor ``c = p / (p + q) ~ 1 - 1/tc`` per step, i.e. by ``e^-16`` (``~1e-9`` rad for a
    start error of the filter's ~0.03 rad) or less; a whole block of look-ahead would double
    the smoother's work when tc is short (strong pilot: tc ~ 2 blocks)."""
    tc = math.sqrt(r / q) if q > 0 else math.inf
    if not math.isfinite(tc):
        return RTS_BLOCK_MAX, RTS_BLOCK_MAX
    block = int(min(max(RTS_BLOCK_MIN, 16 * math.ceil(tc)), RTS_BLOCK_MAX))
    return block, int(min(block, max(64, 16 * math.ceil(tc))))


def kalman_steady_state(method: str, q: float, r: float, dt: float) -> dict[str, float]:
    """``bandwidth_hz`` and ``predicted_phase_var`` of the steady-state tracker.

    Parameters
    ----------
    method : str
        ``"kalman"`` (forward filter) or ``"kalman-rts"`` (with the RTS smoother).
    q, r : float
        Process and observation variances per block (rad^2).
    dt : float
        Block duration (s).

    Returns
    -------
    dict
        ``bandwidth_hz``: noise bandwidth ``sum_j h_j^2 / dt`` of the estimate's response h to
        the observations (a boxcar of duration tau: 1/tau, the boxcar's own convention);
        ``predicted_phase_var``: its error variance (rad^2).

    Notes
    -----
    Prediction variance ``P- = (q + sqrt(q^2 + 4 q r)) / 2``, gain ``K = P- / (P- + r)``,
    filter variance ``P = (1 - K) P-``: the filter is ``h_j = K a^j`` with ``a = 1 - K``
    (``sum h^2 = K / (2 - K)``). The RTS pass is the backward pole ``c = P / P- = a``: the
    smoother ``h_j = (1 - a) / (1 + a) a^|j|``, error variance
    ``(P - a^2 P-) / (1 - a^2)`` (about half the filter's when q << r). Both at the block
    centres, like the boxcar's: between them the linear interpolation of the phase adds
    about ``V (a - 1) / 3 + q / 6`` (V the variance above; adjacent errors correlate by a):
    7.6e-5 rad^2 per sample predicted, 7.8e-5 measured on a simulated framed recording at
    100 Hz.
    """
    if not q > 0:
        return {"bandwidth_hz": 0.0, "predicted_phase_var": 0.0}
    pp = 0.5 * (q + math.sqrt(q * q + 4 * q * r))
    k = pp / (pp + r)
    p = (1 - k) * pp
    if method != "kalman-rts":
        return {"bandwidth_hz": k / (2 - k) / dt, "predicted_phase_var": p}
    a = 1 - k
    g = ((1 - a) / (1 + a)) ** 2 * (1 + a * a) / (1 - a * a)
    return {"bandwidth_hz": g / dt, "predicted_phase_var": (p - a * a * pp) / (1 - a * a)}


def overlap_phase_var(q_s: float, r_s: float, hop: int, overlap: int, q: float,
                      r: float) -> float:
    """Per-sample phase-error variance of the steady-state RTS smoother on overlapping windows.

    Parameters
    ----------
    q_s, r_s : float
        The true phase diffusion per sample and the pilot's per-sample phase-noise variance
        (rad^2): a Wiener phase observed in white noise, linearised.
    hop, overlap : int
        Hop H (samples) and hops h per window (odd): observation k is the mean over the
        samples of hops ``k - (h-1)/2 .. k + (h-1)/2``.
    q, r : float
        The tracker's model variances per hop (they set its gain, right or wrong).

    Returns
    -------
    float
        Mean over the samples of the squared error of the smoothed phase linearly
        interpolated between hop centres (rad^2); the bound of any estimator from the samples
        themselves is ``sqrt(q_s r_s) / 2``.

    Notes
    -----
    The smoother is the two-sided filter ``s_l = (1 - a) / (1 + a) a^|l|`` (``a = 1 - K``, K
    the steady-state gain of q, r); convolved with the window's boxcar it puts a weight w_n on
    each sample n, the interpolation mixes two such estimates. Its error at sample t is
    ``sum_n w_n (phi_n + v_n) - phi_t``: ``r_s sum_n w_n^2`` from the noise, and from the
    Wiener phase ``q_s sum_j (C_j - [j >= t])^2`` with ``C_j = sum_{n <= j} w_n`` the weight
    on the increment ``phi_{j+1} - phi_j``. Exact for the linear model; with ``overlap`` 1 it
    is the block structure's cost of non-overlapping blocks (1.16 x the bound at D = 2.4
    smoother time constants, as simulated directly).
    """
    H, h = int(hop), int(overlap)
    if H < 1 or h < 1 or h % 2 == 0:
        raise ValueError(f"need hop >= 1 and an odd overlap, got {hop!r}, {overlap!r}")
    pp = 0.5 * (q + math.sqrt(q * q + 4 * q * r))
    a = r / (pp + r)                       # 1 - K
    K = math.ceil(12 / (1 - a)) + 1        # a^K < 1e-5: the weights beyond are negligible
    lag = np.arange(-K, K + 1)
    g = np.convolve((1 - a) / (1 + a) * a ** np.abs(lag), np.full(h, 1.0 / h))
    g /= g.sum()
    n0 = (K + (h - 1) // 2) * H            # sample index of w[0] is -n0 (hop 0 from 0)
    w0 = np.repeat(g, H) / H
    w1 = np.concatenate([np.zeros(H), w0[:-H]])   # the estimate at hop 1
    c0 = (H - 1) / 2
    t = math.ceil(c0) + np.arange(H)       # the samples between centres 0 and 1
    f = (t - c0) / H
    # sample t's weights are (1 - f) w0 + f w1, so its C_j is (1 - f) C0_j + f C1_j: the sums
    # over j of C_j^2 (j < t + n0) and (1 - C_j)^2 (j >= t + n0) are quadratic forms in
    # (1 - f, f) of prefix sums of C0^2, C0 C1, C1^2 and suffix sums of the (1 - C)
    # products, O(length) instead of the (H, length) matrix of every sample's weights
    # (O(H^2 K): 0.6 s per call at hop 157, 18 calls per design). Every term is >= 0 and
    # the suffix sums run from the end, so nothing cancels.
    C0 = np.cumsum(w0)[:-1]
    C1 = np.cumsum(w1)[:-1]
    E0, E1 = 1.0 - C0, 1.0 - C1

    def prefix(x: np.ndarray) -> np.ndarray:   # [sum_{j < k} x_j for k = 0 .. len(x)]
        return np.concatenate([[0.0], np.cumsum(x)])

    def suffix(x: np.ndarray) -> np.ndarray:   # [sum_{j >= k} x_j for k = 0 .. len(x)]
        return np.concatenate([np.cumsum(x[::-1])[::-1], [0.0]])

    tk = t + n0
    u, v = 1.0 - f, f
    phase = (u * u * (prefix(C0 * C0)[tk] + suffix(E0 * E0)[tk])
             + 2 * u * v * (prefix(C0 * C1)[tk] + suffix(E0 * E1)[tk])
             + v * v * (prefix(C1 * C1)[tk] + suffix(E1 * E1)[tk]))
    noise = (u * u * np.dot(w0, w0) + 2 * u * v * np.dot(w0, w1) + v * v * np.dot(w1, w1))
    return float((q_s * np.sum(phase) + r_s * np.sum(noise)) / H)


def _quiet_hop(pilot_cycles: tuple[float, ...], hop: int, D: int) -> int | None:
    """The shortest hop from ``hop`` up to ``D - 1`` whose boxcar passes no other pilot by more
    than ``MAX_HOP_CROSS_LEAK`` (``hop_cross_leak``), or None. A longer hop (window ``h H > D``)
    may cost less than the leak; ``choose_overlap`` compares it with blocks of D."""
    for H in range(hop, max(hop, D - 1) + 1):
        if hop_cross_leak(pilot_cycles, H) <= MAX_HOP_CROSS_LEAK:
            return H
    return None


def choose_overlap(q_s: float, r_s: float, D: int,
                   pilot_cycles: tuple[float, ...] = ()) -> tuple[int, int, float, float]:
    """Overlap of the RTS tracker's pilot windows for blocks of at least D samples.

    Returns ``(overlap h, hop H, r_scale, predicted variance)`` (the bound where D is at most
    one time constant, not evaluated): ``(1, D, 1.0, ...)`` while
    non-overlapping blocks of D are within ``OVERLAP_TOLERANCE`` of the bound (D up to ~1.4
    smoother time constants ``sqrt(r_s / q_s)``: every linewidth up to a few kHz); otherwise
    the smallest h of ``OVERLAPS`` whose ``overlap_phase_var`` (at its best ``R_SCALES``) is
    within ``OVERLAP_NEAR_BEST`` of the least (``H = ceil(D / h)``: windows of ``h H >= D``;
    the tracker's r is ``r_scale`` times the noise of one window's mean). Cost: h times the
    hops through the pilot kernel and the tracker. Hops whose boxcar passes another pilot by
    more than ``MAX_HOP_CROSS_LEAK`` (``hop_cross_leak``) are not taken: the next longer
    quiet hop is (``_quiet_hop``; its window ``h H`` exceeds D), and blocks of D where none
    is predicted better than they are.
    """
    bound = math.sqrt(q_s * r_s) / 2
    if not (q_s > 0 and r_s > 0) or r_s / q_s >= D * D:
        return 1, D, 1.0, bound
    v1 = overlap_phase_var(q_s, r_s, D, 1, q_s * D, r_s / D)
    if v1 <= OVERLAP_TOLERANCE * bound:
        return 1, D, 1.0, v1
    # per overlap its best r scale; then the smallest overlap near the best of all (every hop
    # costs the pilot kernel and the tracker one step)
    per_h = []
    for h in OVERLAPS:
        H = _quiet_hop(pilot_cycles, -(-D // h), D)
        if H is None:
            continue
        per_h.append(min((overlap_phase_var(q_s, r_s, H, h, q_s * H, scale * r_s / H), h, H,
                          scale) for scale in R_SCALES))
    least = min((v for v, *_ in per_h), default=math.inf)
    if least >= v1:   # only long quiet hops (windows h H well beyond D): blocks cost less
        return 1, D, 1.0, v1
    v, h, H, scale = next(c for c in per_h if c[0] <= OVERLAP_NEAR_BEST * least)
    return h, H, scale, v


def design_kalman(method: str, inputs: DesignInputs) -> KalmanDesign:
    """Kalman design: the boxcar's block length raised to ``min_block_samples`` (but not
    beyond the filter duration tau: a block longer than the optimal averaging time would cost
    more tracking error than the band leakage it removes), q and r per block of that length;
    the RTS smoother's blocks overlapping where that pays (``choose_overlap``)."""
    fs, D = inputs.fs, inputs.decimation
    if inputs.min_block_samples > D:
        D = max(D, min(int(inputs.min_block_samples), round(inputs.tau * fs)))
    r_s = inputs.phase_noise_var * inputs.acq_decimation
    h, H, scale, var = (choose_overlap(inputs.dphi / fs, r_s, D, inputs.pilot_cycles)
                        if method == "kalman-rts" else (1, D, 1.0, 0.0))
    if h > 1:
        q, r = inputs.dphi * H / fs, scale * r_s / H
        rts_block, rts_lookahead = rts_lengths(q, r)
        fields = {**common_fields(method, inputs, H),
                  **kalman_steady_state(method, q, r, H / fs), "predicted_phase_var": var}
        return KalmanDesign(**fields, q=q, r=r, rts_block=rts_block,
                            rts_lookahead=rts_lookahead, overlap=h, r_scale=scale * h,
                            pilot_cycles=inputs.pilot_cycles)
    q = inputs.dphi * D / fs
    r = inputs.phase_noise_var * inputs.acq_decimation / D
    rts_block, rts_lookahead = rts_lengths(q, r)
    # the tracker's own bandwidth and error, not the boxcar's of the same duration
    fields = {**common_fields(method, inputs, D),
              **kalman_steady_state(method, q, r, D / inputs.fs)}
    return KalmanDesign(**fields, q=q, r=r, rts_block=rts_block, rts_lookahead=rts_lookahead,
                        pilot_cycles=inputs.pilot_cycles)


def block_noise_var(s2: float, slope: float) -> float:
    """Observation noise r of block-mean phases from the structure-function fit
    ``S(l) = 2 s2 + slope l`` (``dsp.fits.structure_fit``).

    The pilot phasor of a block is the MEAN of a Wiener phase over its D samples, not its value
    at one instant: for block means ``S(l) = Var(mean_{j+l} - mean_j) = 2 r + q (l - 1/3)``
    (``q`` per block; the two means share no samples and each averages its walk), so the
    intercept is ``2 r - q/3`` and ``r = s2 + slope / 6``. Read as ``r = s2`` the noise came
    out ``q/6`` low: ~10 % at 1 kHz with 22 dB pilots, and <= 0 (floored: a tracker that
    takes every block as exact) at 10 kHz, where ``q/6 ~ r``.
    """
    return float(s2) + float(slope) / 6


def _window_noise_var(head: HeadPilot, D: int) -> float:
    """r of the means of D samples from the head (``block_noise_var``), floored."""
    nj = head.samples // D
    if nj < 4 * NOISE_FIT_LAGS:
        raise DspLockError("recording too short: the Kalman tracker's noise fit needs "
                           f"{4 * NOISE_FIT_LAGS} pilot blocks of {D} samples in the head, it "
                           f"has {nj}",
                           {"head_samples": float(head.samples), "pilot_blocks": float(nj)})
    ph = np.unwrap(np.angle(head.phasors(D)))
    s2, slope = structure_fit(ph, max_lag=NOISE_FIT_LAGS)
    r = block_noise_var(s2, slope)
    return r if r > MIN_OBSERVATION_VAR else MIN_OBSERVATION_VAR


def refine_kalman(design: KalmanDesign, head: HeadPilot) -> KalmanDesign:
    """Observation noise r measured at the tracker's own block length D (structure-function
    intercept of the head's pilot phase): short blocks let part of the quantum band through,
    which the acquisition's long blocks hide. With overlap, D is the window (``overlap`` hops)
    and the tracker's r ``r_scale`` times that window's.

    Where the design kept non-overlapping blocks (from the acquisition's pilot noise, which
    the pilots' mutual leakage and framing inflate several times) the RTS smoother's overlap
    is chosen again from the measured r (``choose_overlap``), the new window measured again.
    A design that overlaps keeps its choice: at large linewidths the fit of long windows is
    ill-conditioned (q per window several times r) and reads r low.
    """
    H, h = design.decimation, design.overlap
    D = H * h
    r_window = _window_noise_var(head, D)
    q, scale = design.q, design.r_scale
    if design.method == "kalman-rts" and h == 1:
        h2, H2, scale2, _ = choose_overlap(q / H, r_window * D, D, design.pilot_cycles)
        if h2 > 1:
            r_window = _window_noise_var(head, h2 * H2)
            q = q / H * H2
            H, h, D, scale = H2, h2, h2 * H2, scale2 * h2
    r = r_window * scale
    block, lookahead = rts_lengths(q, r)
    M, tau_s = design.window, design.tau_s
    dt = tau_s / M   # the block (hop) duration H / fs
    if design.decimation != H:   # the filter duration on the new hop grid (odd, as designed)
        dt = dt / design.decimation * H
        M = max(1, round(tau_s / dt))
        M += 1 - M % 2
        tau_s = M * dt
    steady = kalman_steady_state(design.method, q, r, dt)
    if h > 1:
        steady["predicted_phase_var"] = overlap_phase_var(q / H, r_window * D, H, h, q, r)
    return replace(design, decimation=H, window=M, tau_s=tau_s, overlap=h, r_scale=scale, q=q,
                   r=r, rts_block=block, rts_lookahead=lookahead, **steady)


#: the window sums without ``reassoc``: added first to last, as the streaming split requires
#: (and as ``numpy`` adds them), whatever LLVM would rather vectorise
_NJIT_ORDERED = {**NJIT, "fastmath": NJIT["fastmath"] - {"reassoc"}}


@njit(**_NJIT_ORDERED)
def _window_sums(hist, z, h, out):
    # out[j] = buf[j] + buf[j + 1] + ... + buf[j + h - 1] (left to right), buf = hist ++ z,
    # without forming buf: the first len(hist) windows start in hist, the rest read z only
    m = hist.shape[0]
    nw = out.shape[0]
    first = min(nw, m)
    for j in range(first):
        s = hist[j]
        for i in range(j + 1, j + h):
            s += hist[i] if i < m else z[i - m]
        out[j] = s
    for j in range(first, nw):
        k = j - m
        s = z[k]
        for i in range(1, h):
            s += z[k + i]
        out[j] = s


def window_sums(z: np.ndarray, hist: np.ndarray, overlap: int) -> tuple[np.ndarray, np.ndarray]:
    """Sums of ``overlap`` consecutive phasors of ``hist`` followed by ``z`` (one per complete
    window, added first to last, so the result does not depend on how the stream is split),
    and the last ``overlap - 1`` phasors: the ``hist`` of the next call.

    One pass of a numba kernel over ``hist`` and ``z`` (no concatenated copy, no temporaries:
    numpy's ``h`` slice additions took ~15 ns per hop, 1/3 of the tracker at 10 kHz).
    """
    h = int(overlap)
    if h < 1:
        raise ValueError(f"overlap must be >= 1, got {overlap!r}")
    z = np.ascontiguousarray(z, np.complex128)
    hist = np.ascontiguousarray(hist, np.complex128)
    if z.ndim != 1 or hist.ndim != 1:
        raise ValueError(f"z and hist must be 1-D, got shapes {z.shape} and {hist.shape}")
    n = hist.shape[0] + z.shape[0]
    nw = n - (h - 1)
    if nw <= 0:
        return np.empty(0, np.complex128), np.concatenate([hist, z])
    y = np.empty(nw, np.complex128)
    _window_sums(hist, z, h, y)
    k = h - 1   # the next hist: buf[nw:]
    if k == 0:
        rest = np.empty(0, np.complex128)
    elif z.shape[0] >= k:
        rest = z[z.shape[0] - k:].copy()
    else:
        rest = np.concatenate([hist[hist.shape[0] - (k - z.shape[0]):], z])
    return y, rest


class KalmanTracker:
    """Forward Kalman filter (``dsp.trackers.base.PhaseTracker``): every pushed block is
    final at once."""

    def __init__(self, design: KalmanDesign) -> None:
        self.design = design
        self.n_in = 0            # blocks received
        self.n_out = 0           # blocks finalised
        self._phi_f = np.empty(0)     # forward estimates of blocks [n_out, n_in)
        self._p_f = np.empty(0)
        self._kstate: tuple[float, float] | None = None
        self._hist: np.ndarray | None = None    # the last overlap - 1 hops (overlap > 1)

    def latency_blocks(self) -> int:
        return (self.design.overlap - 1) // 2

    def push(self, z: np.ndarray) -> tuple[int, np.ndarray]:
        z = np.asarray(z, np.complex128)
        self.n_in += z.shape[0]
        self._forward(self._observe(z))
        return self._take(self._phi_f.shape[0])

    def flush(self) -> tuple[int, np.ndarray]:
        self._forward(self._observe(np.empty(0, np.complex128), final=True))
        return self._take(self._phi_f.shape[0])

    def _observe(self, z: np.ndarray, final: bool = False) -> np.ndarray:
        """The tracker's observations: the hop phasors themselves, or with overlap h the
        window sums centred on each hop (the first and last hop repeated (h-1)/2 times at the
        ends, so that every hop gets one)."""
        h = self.design.overlap
        if h == 1:
            return z
        m = (h - 1) // 2
        if self._hist is None:
            if z.shape[0] == 0:
                return z
            self._hist = np.repeat(z[:1], m)
        if final:
            z = np.concatenate([z, np.repeat(self._hist[-1:], m)])
        y, self._hist = window_sums(z, self._hist, h)
        return y

    def _forward(self, z: np.ndarray) -> None:
        if z.shape[0] == 0:
            return
        d = self.design
        if self._kstate is None:    # first prediction: the first pilot phase, variance r
            self._kstate = (float(np.angle(z[0])), max(d.r - d.q, 0.0))
        phi_f, p_f = kalman_phase_forward(z, phi0=self._kstate[0], p0=self._kstate[1],
                                          q=d.q, r=d.r)
        self._kstate = (float(phi_f[-1]), float(p_f[-1]))
        self._phi_f = np.concatenate([self._phi_f, phi_f])
        self._p_f = np.concatenate([self._p_f, p_f])

    def _take(self, n: int, out: np.ndarray | None = None) -> tuple[int, np.ndarray]:
        """Emit blocks ``[n_out, n_out + n)`` (``out``, or the forward estimates) and drop
        their forward estimates."""
        j0 = self.n_out
        out = self._phi_f[:n] if out is None else out
        self._phi_f = self._phi_f[n:]
        self._p_f = self._p_f[n:]
        self.n_out = j0 + n
        return j0, out


class KalmanRtsTracker(KalmanTracker):
    """Kalman filter + fixed-lag RTS smoother over blocks of ``rts_block`` (each finalised
    once the forward pass is ``rts_lookahead <= rts_block`` blocks past its end; exact RTS
    over the rest at ``flush``)."""

    def latency_blocks(self) -> int:
        """A block of ``rts_block`` waits for the next one to be complete (and, with
        overlap, for the window of its last hop)."""
        return 2 * self.design.rts_block + (self.design.overlap - 1) // 2

    def push(self, z: np.ndarray) -> tuple[int, np.ndarray]:
        z = np.asarray(z, np.complex128)
        self.n_in += z.shape[0]
        self._forward(self._observe(z))
        d = self.design
        L = d.rts_block
        # finalise whole blocks b with forward data up to the end of block b+1; the forward
        # buffer starts at the first unfinished output, n_out
        nb = ((self.n_out + self._phi_f.shape[0]) // L) - 1 - (self.n_out // L)
        if nb <= 0:
            return self.n_out, np.empty(0)
        out = rts_smooth_blocks(self._phi_f, self._p_f, d.q, L, nb, lookahead=d.rts_lookahead)
        return self._take(out.shape[0], out)

    def flush(self) -> tuple[int, np.ndarray]:
        self._forward(self._observe(np.empty(0, np.complex128), final=True))
        if self._phi_f.shape[0] == 0:
            return self.n_out, np.empty(0)
        out = rts_smooth_block(self._phi_f, self._p_f, self.design.q, self._phi_f[-1],
                               self._p_f[-1])
        return self._take(out.shape[0], out)
