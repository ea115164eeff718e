"""Density evolution for multi-edge-type LDPC ensembles on the BIAWGN channel.

Two analyses of the sum-product decoder on the binary-input AWGN channel of noise ``sigma``
(channel LLR ``N(2/sigma^2, 4/sigma^2)``, all variable nodes observed, degree-one variable
nodes included), for an ensemble given as a :class:`~.codes.MetEnsemble`:

- :func:`ga_threshold`: Gaussian approximation (Chung, Richardson, Urbanke, IEEE Trans. IT 47,
  657 (2001)) extended edge type by edge type (Richardson & Urbanke, "Multi-edge type LDPC
  codes", 2004): messages are consistent Gaussians given by their mean; variable-to-check
  mixtures are averaged in the ``phi`` domain, check-to-variable means arithmetically. Fast
  (milliseconds per SNR), used to search ensembles; about 0.03 dB optimistic-or-pessimistic
  on regular codes (the (3,6) threshold is sigma 0.8747 against 0.8809).
- :func:`de_threshold`: discretised density evolution (Chung, Forney, Richardson, Urbanke,
  IEEE Comm. Lett. 5, 58 (2001)): message densities on a uniform LLR grid, variable nodes by
  FFT convolution, check nodes by the pairwise quantised tanh rule (a table lookup). Slower
  (tenths of a second per iteration), the figure recorded with each ensemble in
  :mod:`.codes`.
- :func:`de_fast_run` / :func:`de_fast_threshold`: the same discretised analysis organised
  for a search loop (spectra once per iteration, check side in one numba kernel, early stop
  on convergence or a stalled error); it returns the iterations and the last error too, the
  score of ``benchmarks/design_codes.py --search de``.

Both return the threshold as a noise ``sigma*``; :func:`snr_of_sigma` and :func:`efficiency`
turn it into the SNR and ``beta = R / (1/2 log2(1 + SNR))`` used by the reconciliation.
:func:`biawgn_capacity` gives the binary-input bound (``beta`` at capacity is below 1: the
multidimensional reconciliation turns the Gaussian channel into a binary-input one).

:func:`optimise_jouguet` searches the three-edge-type structure of Jouguet et al. (PRA 84,
062317 (2011)) with the Gaussian approximation. :func:`forest_ensemble` and
:func:`girth_ensemble` give that structure with a chosen number of *weak* core nodes (two
type-1 edges), placed by :func:`~.codes.build_code` as a forest or for a long lifted weak
girth (the error floor of ``benchmarks/reconciliation.md``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numba import njit

from dsp._numba_options import NJIT
from qkd_hw.postprocessing.codes import MetEnsemble

__all__ = ["biawgn_capacity", "de_fast_run", "de_fast_threshold", "de_threshold", "efficiency",
           "forest_ensemble", "ga_converges", "ga_threshold", "girth_ensemble",
           "jouguet_ensemble", "optimise_jouguet", "phi", "phi_inv", "sigma_of_snr",
           "snr_of_sigma"]


def snr_of_sigma(sigma: float) -> float:
    """SNR ``1/sigma^2`` of the unit-amplitude BIAWGN channel of noise ``sigma``."""
    return 1.0 / (sigma * sigma)


def sigma_of_snr(snr: float) -> float:
    """Noise ``sigma = 1/sqrt(snr)`` of the unit-amplitude BIAWGN channel."""
    return 1.0 / math.sqrt(snr)


def efficiency(rate: float, sigma: float) -> float:
    """``beta = rate / (1/2 log2(1 + 1/sigma^2))`` at the noise ``sigma``."""
    return rate / (0.5 * math.log2(1.0 + snr_of_sigma(sigma)))


# Gauss-Hermite nodes for expectations over N(m, 2m)
_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(120)
_GH_W = _GH_W / _GH_W.sum()


def biawgn_capacity(sigma: float) -> float:
    """Capacity in bits per use of the BIAWGN channel of noise ``sigma`` (uniform input).

    ``1 - E[log2(1 + exp(-L))]`` with ``L ~ N(2/sigma^2, 4/sigma^2)``.
    """
    m = 2.0 / (sigma * sigma)
    llr = m + math.sqrt(2.0 * m) * _GH_X
    return float(1.0 - np.sum(_GH_W * np.logaddexp(0.0, -llr)) / math.log(2.0))


def _phi_exact(m: np.ndarray) -> np.ndarray:
    """``1 - E[tanh(u/2)]``, ``u ~ N(m, 2m)``, by Gauss-Hermite quadrature."""
    m = np.atleast_1d(np.asarray(m, dtype=np.float64))
    u = m[:, None] + np.sqrt(2.0 * m)[:, None] * _GH_X[None, :]
    # 1 - tanh(u/2) = 2 / (1 + e^u): no cancellation for large u
    return np.sum(_GH_W * 2.0 * np.exp(-np.logaddexp(0.0, u)), axis=1)


@lru_cache(maxsize=1)
def _phi_table() -> tuple[np.ndarray, np.ndarray]:
    logm = np.linspace(math.log(1e-8), math.log(60.0), 4000)
    return logm, np.log(_phi_exact(np.exp(logm)))


def phi(m: np.ndarray | float) -> np.ndarray:
    """Chung's ``phi(m) = 1 - E[tanh(u/2)]`` for ``u ~ N(m, 2m)``; ``phi(0) = 1``.

    Tabulated in log-log (quadrature) up to ``m = 60``, the asymptote
    ``sqrt(pi/m) exp(-m/4) (1 - 10/(7m))`` (Chung et al. 2001) above.
    """
    m = np.asarray(m, dtype=np.float64)
    logm, logphi = _phi_table()
    with np.errstate(divide="ignore"):
        lm = np.log(np.maximum(m, 1e-300))
    small = np.interp(lm, logm, logphi, left=0.0)
    big = 0.5 * np.log(math.pi / np.maximum(m, 60.0)) - np.maximum(m, 60.0) / 4.0 + np.log1p(
        -10.0 / (7.0 * np.maximum(m, 60.0)))
    out = np.exp(np.where(m > 60.0, big, small))
    return np.where(m <= 0.0, 1.0, out)


def phi_inv(y: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`phi` on ``(0, 1]`` (``phi_inv(1) = 0``; tiny ``y`` -> large mean)."""
    y = np.clip(np.asarray(y, dtype=np.float64), 1e-300, 1.0)
    logm, logphi = _phi_table()
    ly = np.log(y)
    # logphi decreases with logm: interpolate on the reversed table
    out = np.exp(np.interp(ly, logphi[::-1], logm[::-1]))
    out = np.where(ly >= logphi[0], 0.0, out)
    # beyond the table: invert the asymptote by a few Newton steps on log phi
    far = ly < logphi[-1]
    if np.any(far):
        m = np.full(int(far.sum()), 60.0)
        t = ly[far]
        for _ in range(30):
            f = 0.5 * np.log(math.pi / m) - m / 4.0 + np.log1p(-10.0 / (7.0 * m)) - t
            df = -0.5 / m - 0.25 + (10.0 / 7.0) / (m * m - 10.0 * m / 7.0)
            m = np.maximum(m - f / df, 60.0)
        out[far] = m
    return out


@dataclass(frozen=True)
class _Graph:
    """Edge-perspective weights of an ensemble."""

    var_deg: np.ndarray      # (types_v, edge types)
    chk_deg: np.ndarray      # (types_c, edge types)
    var_w: np.ndarray        # (types_v, edge types): fraction of type-t edges at var type i
    chk_w: np.ndarray        # (types_c, edge types)


def _graph(ens: MetEnsemble) -> _Graph:
    ens.validate()
    vc = np.array([c for c, _ in ens.var_types], dtype=np.float64)
    vd = np.array([d for _, d in ens.var_types], dtype=np.float64)
    cc = np.array([c for c, _ in ens.check_types], dtype=np.float64)
    cd = np.array([d for _, d in ens.check_types], dtype=np.float64)
    edges = (vc[:, None] * vd).sum(axis=0)
    return _Graph(vd, cd, vc[:, None] * vd / edges, cc[:, None] * cd / edges)


@njit(**NJIT)
def _phi_nb(m, logm, logphi):
    """:func:`phi` for one mean (uniform table in log m, asymptote above it)."""
    if m <= 0.0:
        return 1.0
    if m > 60.0:
        return math.exp(0.5 * math.log(math.pi / m) - m / 4.0 + math.log1p(-10.0 / (7.0 * m)))
    lm = math.log(m)
    if lm <= logm[0]:
        return 1.0
    step = (logm[-1] - logm[0]) / (logm.size - 1)
    x = (lm - logm[0]) / step
    i = min(int(x), logm.size - 2)
    f = x - i
    return math.exp(logphi[i] * (1.0 - f) + logphi[i + 1] * f)


@njit(**NJIT)
def _phi_inv_nb(y, logm, logphi):
    """Inverse of :func:`_phi_nb` by bisection on the table, Newton on the asymptote."""
    if y >= 1.0:
        return 0.0
    y = max(y, 1e-300)
    ly = math.log(y)
    if ly >= logphi[0]:
        return 0.0
    if ly < logphi[-1]:
        m = 60.0
        for _ in range(30):
            f = 0.5 * math.log(math.pi / m) - m / 4.0 + math.log1p(-10.0 / (7.0 * m)) - ly
            df = -0.5 / m - 0.25 + (10.0 / 7.0) / (m * m - 10.0 * m / 7.0)
            m = max(m - f / df, 60.0)
        return m
    lo, hi = 0, logphi.size - 1             # logphi decreasing
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if logphi[mid] > ly:
            lo = mid
        else:
            hi = mid
    f = (ly - logphi[lo]) / (logphi[hi] - logphi[lo])
    return math.exp(logm[lo] * (1.0 - f) + logm[hi] * f)


@njit(**NJIT)
def _ga_run(vdeg, cdeg, vw, cw, m0, max_iter, logm, logphi):
    n_v, n_t = vdeg.shape
    n_c = cdeg.shape[0]
    u = np.zeros(n_t)
    pbar = np.zeros(n_t)
    logs = np.zeros(n_t)
    prev = np.inf
    for it in range(max_iter):
        pbar[:] = 0.0
        for i in range(n_v):
            tot = m0
            for t in range(n_t):
                tot += vdeg[i, t] * u[t]
            for t in range(n_t):
                if vdeg[i, t] > 0:
                    pbar[t] += vw[i, t] * _phi_nb(tot - u[t], logm, logphi)
        for t in range(n_t):
            logs[t] = math.log1p(-min(pbar[t], 1.0 - 1e-16))
        u[:] = 0.0
        for j in range(n_c):
            tot = 0.0
            for t in range(n_t):
                tot += cdeg[j, t] * logs[t]
            for t in range(n_t):
                if cdeg[j, t] > 0:
                    # 1 - phi(u) = prod (1 - pbar_s)^(d_s - [s = t])
                    u[t] += cw[j, t] * _phi_inv_nb(-math.expm1(tot - logs[t]), logm, logphi)
        # converged when every posterior is sure (the messages to and from degree-one nodes
        # stay as weak as the channel, so they cannot be the criterion)
        worst = 0.0
        for i in range(n_v):
            tot = m0
            for t in range(n_t):
                tot += vdeg[i, t] * u[t]
            worst = max(worst, _phi_nb(tot, logm, logphi))
        if worst < 1e-12:
            return True
        if it % 200 == 199:                # stalled: no progress over a long stretch
            if worst > prev * (1.0 - 1e-7):
                return False
            prev = worst
    return False


def ga_converges(ens: MetEnsemble, sigma: float, max_iterations: int = 20000) -> bool:
    """Gaussian-approximation density evolution: does the decoder converge at ``sigma``?"""
    g = _graph(ens)
    logm, logphi = _phi_table()
    return bool(_ga_run(g.var_deg, g.chk_deg, g.var_w, g.chk_w, 2.0 / (sigma * sigma),
                        int(max_iterations), logm, logphi))


def _bisect(converges, lo: float, hi: float, tol: float) -> float:
    """Largest sigma in [lo, hi] with ``converges(sigma)`` (monotone), to ``tol``."""
    if not converges(lo):
        raise ValueError(f"the decoder does not converge even at sigma={lo}")
    if converges(hi):
        return hi
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        if converges(mid):
            lo = mid
        else:
            hi = mid
    return lo


def ga_threshold(ens: MetEnsemble, lo: float = 0.3, hi: float = 12.0,
                 tol: float = 1e-4) -> float:
    """Gaussian-approximation threshold ``sigma*`` of an ensemble on the BIAWGN channel.

    Parameters
    ----------
    ens : MetEnsemble
        The ensemble (every variable node observed through the channel).
    lo, hi : float
        Bracket of the noise (lo must converge).
    tol : float
        Absolute tolerance on ``sigma*``.

    Returns
    -------
    float
        The largest noise at which the approximated decoder converges.
    """
    return _bisect(lambda s: ga_converges(ens, s), lo, hi, tol)


@njit(**NJIT)
def _boxplus_nb(p, q, table):
    out = np.zeros(p.size)
    for i in range(p.size):
        pi = p[i]
        if pi < 1e-300:
            continue
        for j in range(q.size):
            out[table[i, j]] += pi * q[j]
    return out


class _Grid:
    """Uniform LLR grid ``k * delta``, ``|k| <= K``, with the quantised tanh-rule table."""

    def __init__(self, delta: float, llr_max: float) -> None:
        self.delta = delta
        self.k = round(llr_max / delta)
        self.size = 2 * self.k + 1
        x = np.arange(-self.k, self.k + 1) * delta
        self.x = x
        t = np.tanh(np.clip(x, -40.0, 40.0) / 2.0)
        prod = np.clip(t[:, None] * t[None, :], -1.0 + 1e-16, 1.0 - 1e-16)
        r = 2.0 * np.arctanh(prod)
        idx = np.clip(np.rint(r / delta).astype(np.int64), -self.k, self.k) + self.k
        self.table = idx

    def channel(self, sigma: float) -> np.ndarray:
        """pmf of the quantised channel LLR ``N(2/s^2, 4/s^2)`` (rounding to the grid)."""
        from math import erf

        m = 2.0 / (sigma * sigma)
        s = 2.0 / sigma
        edges = (np.arange(-self.k, self.k + 2) - 0.5) * self.delta
        cdf = 0.5 * (1.0 + np.array([erf((e - m) / (s * math.sqrt(2.0))) for e in edges]))
        cdf[0], cdf[-1] = 0.0, 1.0
        return np.diff(cdf)

    def boxplus(self, p: np.ndarray, q: np.ndarray) -> np.ndarray:
        """pmf of the check-node combination of two independent messages."""
        return _boxplus_nb(p, q, self.table)

    def boxplus_power(self, p: np.ndarray, n: int) -> np.ndarray:
        """``p`` combined ``n`` times (``n = 0``: the sure +infinity, i.e. the top bin)."""
        if n == 0:
            out = np.zeros(self.size)
            out[-1] = 1.0
            return out
        out = p
        for _ in range(n - 1):
            out = self.boxplus(out, p)
        return out

    def error(self, p: np.ndarray) -> float:
        """Probability of a wrong hard decision (half the mass at zero counts)."""
        return float(p[:self.k].sum() + 0.5 * p[self.k])


def _convolve_powers(grid: _Grid, ch: np.ndarray, dens: list[np.ndarray],
                     powers: np.ndarray) -> np.ndarray:
    """pmf of ``channel + sum_t powers[t] messages of density dens[t]``, clipped to the grid."""
    terms = 1 + int(powers.sum())
    span = terms * 2 * grid.k + 1
    size = 1 << math.ceil(math.log2(span))
    # zero LLR at index 0, negative values wrapped to the end (circular convolution, no alias)
    def spectrum(p: np.ndarray) -> np.ndarray:
        buf = np.zeros(size)
        buf[:grid.k + 1] = p[grid.k:]
        buf[size - grid.k:] = p[:grid.k]
        return np.fft.rfft(buf)

    f = spectrum(ch)
    for d, pw in zip(dens, powers, strict=True):
        if pw:
            f = f * spectrum(d) ** int(pw)
    full = np.maximum(np.fft.irfft(f, size), 0.0)
    half = terms * grid.k
    pos = full[:half + 1]
    neg = full[size - half:]                  # LLR -half .. -1
    out = np.zeros(grid.size)
    out[grid.k:] = pos[:grid.k + 1]
    out[-1] += pos[grid.k + 1:].sum()
    out[:grid.k] = neg[neg.size - grid.k:]
    out[0] += neg[:neg.size - grid.k].sum()
    return out / out.sum()


def de_converges(ens: MetEnsemble, sigma: float, *, delta: float = 0.1, llr_max: float = 25.0,
                 max_iterations: int = 3000, target: float = 1e-7) -> bool:
    """Discretised density evolution: does the decoder converge at noise ``sigma``?

    Parameters
    ----------
    ens : MetEnsemble
        The ensemble.
    sigma : float
        Channel noise.
    delta, llr_max : float
        LLR quantisation step and saturation.
    max_iterations : int
        Iteration cap (low-rate MET ensembles need hundreds near threshold).
    target : float
        Bit error probability of every edge type at which the decoder counts as converged.

    Returns
    -------
    bool
    """
    g = _graph(ens)
    grid = _grid(delta, llr_max)
    ch = grid.channel(sigma)
    n_t = g.var_deg.shape[1]
    vdeg = g.var_deg.astype(np.int64)
    cdeg = g.chk_deg.astype(np.int64)
    zero = np.zeros(grid.size)
    zero[grid.k] = 1.0
    q = [zero.copy() for _ in range(n_t)]      # check -> variable densities
    best, since = np.inf, 0
    for _ in range(max_iterations):
        p = [np.zeros(grid.size) for _ in range(n_t)]
        for i in range(vdeg.shape[0]):
            for t in range(n_t):
                if vdeg[i, t]:
                    pw = vdeg[i].copy()
                    pw[t] -= 1
                    p[t] += g.var_w[i, t] * _convolve_powers(grid, ch, q, pw)
        q = [np.zeros(grid.size) for _ in range(n_t)]
        # p_s combined k times, k = 0 .. the largest check degree, computed once per type
        pows = []
        for s in range(n_t):
            pk = [grid.boxplus_power(p[s], 0), p[s]]
            for _ in range(2, int(cdeg[:, s].max()) + 1):
                pk.append(grid.boxplus(pk[-1], p[s]))
            pows.append(pk)
        for j in range(cdeg.shape[0]):
            for t in range(n_t):
                if cdeg[j, t]:
                    acc = None
                    for s in range(n_t):
                        k = int(cdeg[j, s] - (s == t))
                        if k > 0:
                            acc = pows[s][k] if acc is None else grid.boxplus(acc, pows[s][k])
                    q[t] += g.chk_w[j, t] * (pows[t][0] if acc is None else acc)
        # every posterior sure (messages to and from degree-one nodes stay weak)
        err = max(grid.error(_convolve_powers(grid, ch, q, vdeg[i]))
                  for i in range(vdeg.shape[0]))
        if err < target:
            return True
        if err < best * (1.0 - 1e-6):
            best, since = err, 0
        else:
            since += 1
            if since > 50:
                return False
    return False


@lru_cache(maxsize=4)
def _grid(delta: float, llr_max: float) -> _Grid:
    return _Grid(delta, llr_max)


def de_threshold(ens: MetEnsemble, lo: float, hi: float, tol: float = 2e-3,
                 **kw) -> float:
    """Discretised-DE threshold ``sigma*`` of an ensemble (bisection in ``[lo, hi]``).

    Parameters
    ----------
    ens : MetEnsemble
        The ensemble.
    lo, hi : float
        Bracket of the noise (``lo`` must converge).
    tol : float
        Absolute tolerance on ``sigma*``.
    **kw
        Passed to :func:`de_converges` (``delta``, ``llr_max``, ``max_iterations``).

    Returns
    -------
    float
    """
    return _bisect(lambda s: de_converges(ens, s, **kw), lo, hi, tol)


def jouguet_ensemble(name: str, base_n: int, rate: float, core: float, two: float,
                     type2: float, three_type1: int = 3) -> MetEnsemble:
    """A balanced three-edge-type ensemble of Jouguet et al.'s structure on ``base_n`` nodes.

    Variable nodes: ``core * base_n`` core nodes (a fraction ``two`` of them with 2 type-1
    edges, the rest with ``three_type1``; every core node with about ``type2`` type-2 edges,
    split between floor and ceiling), the rest degree-one nodes (one type-3 edge). Checks:
    ``(core - rate) * base_n`` type-1 checks (degrees concentrated on two neighbours), one
    type-2 check per degree-one node with a concentrated number of core edges and its
    degree-one node.

    Parameters
    ----------
    name : str
        Ensemble name.
    base_n : int
        Base-graph variable nodes.
    rate : float
        Design rate (``base_n * rate`` must be an integer).
    core, two, type2 : float
        Core fraction, fraction of core nodes with two type-1 edges, mean type-2 degree.
    three_type1 : int
        Type-1 degree of the other core nodes.

    Returns
    -------
    MetEnsemble
    """
    n_core = round(core * base_n)
    n_one = base_n - n_core
    n_c1 = n_core - round(rate * base_n)
    if n_c1 <= 0:
        raise ValueError("core fraction must exceed the rate")
    n_two = round(two * n_core)
    lo2 = math.floor(type2)
    n_hi2 = round((type2 - lo2) * n_core)
    # core nodes: (count, (type1, type2, 0)); two type-2 degrees split over both type-1 kinds
    groups: dict[tuple[int, int, int], int] = {}

    def add(cnt: int, d: tuple[int, int, int]) -> None:
        if cnt > 0:
            groups[d] = groups.get(d, 0) + cnt

    hi_left = n_hi2
    for cnt, d1 in ((n_two, 2), (n_core - n_two, three_type1)):
        h = min(hi_left, cnt)
        add(h, (d1, lo2 + 1, 0))
        add(cnt - h, (d1, lo2, 0))
        hi_left -= h
    var_types = (*tuple((c, d) for d, c in groups.items()), (n_one, (0, 0, 1)))
    e1 = sum(c * d[0] for d, c in groups.items())
    e2 = sum(c * d[1] for d, c in groups.items())
    c1_lo = e1 // n_c1
    c1_hi_n = e1 - c1_lo * n_c1
    c2_lo = e2 // n_one
    c2_hi_n = e2 - c2_lo * n_one
    checks = []
    if n_c1 - c1_hi_n:
        checks.append((n_c1 - c1_hi_n, (c1_lo, 0, 0)))
    if c1_hi_n:
        checks.append((c1_hi_n, (c1_lo + 1, 0, 0)))
    if n_one - c2_hi_n:
        checks.append((n_one - c2_hi_n, (0, c2_lo, 1)))
    if c2_hi_n:
        checks.append((c2_hi_n, (0, c2_lo + 1, 1)))
    ens = MetEnsemble(name, base_n, var_types, tuple(checks))
    ens.validate()
    return ens


def optimise_jouguet(rate: float, base_n: int, *, cores: np.ndarray, twos: np.ndarray,
                     type2s: np.ndarray, three_type1: tuple[int, ...] = (3,),
                     ) -> list[tuple[float, MetEnsemble]]:
    """Grid search of :func:`jouguet_ensemble` parameters by Gaussian-approximation threshold.

    Returns
    -------
    list of (beta at the GA threshold, ensemble), best first.
    """
    out = []
    for c in cores:
        for tw in twos:
            for t2 in type2s:
                for d1 in three_type1:
                    try:
                        ens = jouguet_ensemble(f"met-r{rate}", base_n, rate, float(c),
                                               float(tw), float(t2), d1)
                        s = ga_threshold(ens, lo=0.5, hi=30.0, tol=1e-3)
                    except ValueError:
                        continue
                    out.append((efficiency(ens.rate, s), ens))
    out.sort(key=lambda p: -p[0])
    return out


# --- fast discretised density evolution (the optimiser's inner loop) -------------------------
#
# Same quantised sum-product density evolution as de_converges (same grid, same rounding of
# the channel LLR, same tanh-rule table), organised for speed: the spectra of the incoming
# message densities are computed once per iteration and raised to every node degree (one
# inverse FFT per variable-node output), the check-node side runs in one numba kernel, and the
# posterior error is checked every few iterations. Results agree with de_converges to the
# floating-point rounding of the FFTs.


@njit(**NJIT)
def _check_step_nb(p, cdeg, cw, table, kmax):
    """Check-to-variable densities of every edge type (mixture over the check types).

    ``p``: (types, S) variable-to-check densities; ``cdeg``: (check types, types) degrees;
    ``cw``: edge-perspective weights; ``kmax[s]``: the largest ``cdeg[:, s]``.
    """
    n_t, size = p.shape
    top = np.zeros(size)
    top[size - 1] = 1.0
    # pows[s, k]: p_s combined k times (k = 0: the sure +infinity)
    pows = np.zeros((n_t, kmax.max() + 1, size))
    for s in range(n_t):
        pows[s, 0] = top
        if kmax[s] >= 1:
            pows[s, 1] = p[s]
        for k in range(2, kmax[s] + 1):
            pows[s, k] = _boxplus_nb(pows[s, k - 1], p[s], table)
    q = np.zeros((n_t, size))
    for j in range(cdeg.shape[0]):
        for t in range(n_t):
            if cdeg[j, t] == 0:
                continue
            acc = top
            first = True
            for s in range(n_t):
                k = cdeg[j, s] - (1 if s == t else 0)
                if k > 0:
                    if first:
                        acc = pows[s, k]
                        first = False
                    else:
                        acc = _boxplus_nb(acc, pows[s, k], table)
            q[t] += cw[j, t] * acc
    return q


class _FastDe:
    """Per-ensemble state of the fast density evolution (grid, FFT length, degree tables)."""

    def __init__(self, ens: MetEnsemble, delta: float, llr_max: float) -> None:
        from scipy import fft as sfft

        self.g = _graph(ens)
        self.grid = _grid(delta, llr_max)
        self.vdeg = self.g.var_deg.astype(np.int64)
        self.cdeg = self.g.chk_deg.astype(np.int64)
        self.kmax = self.cdeg.max(axis=0)
        k = self.grid.k
        terms = 1 + int(self.vdeg.sum(axis=1).max())
        self.half = terms * k
        self.size = sfft.next_fast_len(2 * self.half + 1, real=True)
        self.fft = sfft

    def spectrum(self, p: np.ndarray) -> np.ndarray:
        """rfft of densities (last axis on the grid), zero LLR at index 0, negatives wrapped."""
        k = self.grid.k
        buf = np.zeros((*p.shape[:-1], self.size))
        buf[..., :k + 1] = p[..., k:]
        buf[..., self.size - k:] = p[..., :k]
        return self.fft.rfft(buf, axis=-1)

    def clip(self, spec: np.ndarray) -> np.ndarray:
        """Density on the grid of the inverse of ``spec``, tails lumped into the end bins."""
        k, half, size = self.grid.k, self.half, self.size
        full = np.maximum(self.fft.irfft(spec, size), 0.0)
        out = np.empty(2 * k + 1)
        out[k:] = full[:k + 1]
        out[-1] += full[k + 1:half + 1].sum()
        out[:k] = full[size - k:]
        out[0] += full[size - half:size - k].sum()
        return out / out.sum()

    def posterior_error(self, fch: np.ndarray, fq: np.ndarray) -> float:
        """Largest hard-decision error over the variable types."""
        worst = 0.0
        for i in range(self.vdeg.shape[0]):
            f = fch.copy()
            for s in range(fq.shape[0]):
                if self.vdeg[i, s]:
                    f = f * fq[s] ** int(self.vdeg[i, s])
            worst = max(worst, self.grid.error(self.clip(f)))
        return worst

    def run(self, sigma: float, max_iterations: int, target: float,
            check_every: int = 4, stall: int = 60) -> tuple[bool, int, float]:
        """Density evolution at ``sigma``: (converged, iterations, last posterior error)."""
        g, grid = self.g, self.grid
        n_t = self.vdeg.shape[1]
        fch = self.spectrum(grid.channel(sigma))
        q = np.zeros((n_t, grid.size))
        q[:, grid.k] = 1.0
        best, since, err = np.inf, 0, 1.0
        for it in range(1, max_iterations + 1):
            fq = self.spectrum(q)
            p = np.zeros((n_t, grid.size))
            for i in range(self.vdeg.shape[0]):
                base = fch.copy()
                for s in range(n_t):
                    if self.vdeg[i, s] > 1:
                        base = base * fq[s] ** int(self.vdeg[i, s] - 1)
                for t in range(n_t):
                    if self.vdeg[i, t]:
                        f = base
                        for s in range(n_t):
                            if s != t and self.vdeg[i, s]:
                                f = f * fq[s]
                        p[t] += g.var_w[i, t] * self.clip(f)
            q = _check_step_nb(p, self.cdeg, g.chk_w, grid.table, self.kmax)
            if it % check_every:
                continue
            err = self.posterior_error(fch, self.spectrum(q))
            if err < target:
                return True, it, err
            # stalled: a fixed point above the threshold (no 1e-6 relative progress)
            if err < best * (1.0 - 1e-6):
                best, since = err, 0
            else:
                since += check_every
                if since > stall:
                    return False, it, err
        return False, max_iterations, err


def de_fast_run(ens: MetEnsemble, sigma: float, *, delta: float = 0.1, llr_max: float = 25.0,
                max_iterations: int = 3000, target: float = 1e-7) -> tuple[bool, int, float]:
    """Fast discretised density evolution at noise ``sigma`` (same analysis as de_converges).

    Parameters
    ----------
    ens : MetEnsemble
        The ensemble.
    sigma : float
        Channel noise.
    delta, llr_max : float
        LLR quantisation step and saturation.
    max_iterations : int
        Iteration cap.
    target : float
        Posterior bit error probability of every variable type counted as convergence.

    Returns
    -------
    (bool, int, float)
        Converged, iterations run, last posterior error (checked every 4 iterations).
    """
    return _FastDe(ens, delta, llr_max).run(sigma, max_iterations, target)


def de_fast_threshold(ens: MetEnsemble, lo: float, hi: float, tol: float = 2e-3, *,
                      delta: float = 0.1, llr_max: float = 25.0, max_iterations: int = 3000,
                      target: float = 1e-7) -> float:
    """Threshold ``sigma*`` by :func:`de_fast_run` and bisection in ``[lo, hi]``.

    Returns
    -------
    float
        The largest noise found to converge (``lo`` must converge).
    """
    st = _FastDe(ens, delta, llr_max)
    return _bisect(lambda s: st.run(s, max_iterations, target)[0], lo, hi, tol)


def forest_ensemble(name: str, base_n: int, rate: float, n_core: int, n_weak: int,
                    weak_type2: int, type2_per_check: float, other_type1: int = 3
                    ) -> MetEnsemble:
    """A three-edge-type ensemble whose weak core nodes can be placed as a forest.

    Jouguet's structure with at most ``n_c1 - 1`` *weak* core nodes (two type-1 edges, i.e.
    two edges into checks that hold no degree-one node), ``n_c1 = n_core - rate * base_n``
    the type-1 checks: that many can form a forest on the type-1 checks, and a forest of the
    base graph lifts to a forest, so no cycle of weak nodes (a low-weight codeword, the error
    floor of ``benchmarks/reconciliation.md`` item 2b) exists at any lifting size. The
    ensemble is flagged ``forest=True``; :func:`~.codes.build_code` then draws the type-1
    matching until the weak nodes form a forest.

    Parameters
    ----------
    name : str
        Ensemble name.
    base_n : int
        Base-graph variable nodes.
    rate : float
        Design rate (``rate * base_n`` an integer).
    n_core : int
        Core (high-degree) variable nodes; the rest are degree-one nodes.
    n_weak : int
        Core nodes with two type-1 edges, at most ``n_c1 - 1``.
    weak_type2 : int
        Type-2 degree of the weak nodes.
    type2_per_check : float
        Mean number of core edges per type-2 check (one type-2 check per degree-one node).
    other_type1 : int
        Type-1 degree of the other core nodes.

    Returns
    -------
    MetEnsemble
    """
    n_c1 = n_core - round(rate * base_n)
    if not 0 <= n_weak < n_c1:
        raise ValueError(f"{n_weak} weak nodes cannot form a forest on {n_c1} checks")
    return _weak_split(name, base_n, rate, n_core, n_weak, weak_type2, type2_per_check,
                       other_type1, forest=True)


def girth_ensemble(name: str, base_n: int, rate: float, n_core: int, n_weak: int,
                   weak_type2: int, type2_per_check: float, other_type1: int = 3
                   ) -> MetEnsemble:
    """:func:`forest_ensemble` with more weak nodes, placed for a long lifted weak girth.

    Between the forest (``n_weak < n_c1``: no weak cycle, DE threshold beta 0.950 at rate 0.1)
    and ``met-r0.10`` (3 weak nodes per type-1 check: DE 0.967, weak cycles of 4 nodes at any
    lifting): weak cycles exist, but :func:`~.codes.build_code` (``weak_girth=True``) places
    the weak nodes PEG-like on the type-1 checks (no two on one pair of checks) and chooses
    their circulant shifts so that the lifted weak graph has no short cycle (a cycle of L weak
    nodes is a codeword of weight about ``L * (1 + weak_type2)``). Parameters as
    :func:`forest_ensemble`; ``n_weak`` at most ``n_c1 (n_c1 - 1) / 2``.

    Returns
    -------
    MetEnsemble
    """
    n_c1 = n_core - round(rate * base_n)
    if not 0 <= n_weak <= n_c1 * (n_c1 - 1) // 2:
        raise ValueError(f"{n_weak} weak nodes do not fit on {n_c1} checks without "
                         "parallel weak edges")
    return _weak_split(name, base_n, rate, n_core, n_weak, weak_type2, type2_per_check,
                       other_type1, weak_girth=True)


def _weak_split(name: str, base_n: int, rate: float, n_core: int, n_weak: int,
                weak_type2: int, type2_per_check: float, other_type1: int,
                forest: bool = False, weak_girth: bool = False) -> MetEnsemble:
    """Node counts of :func:`forest_ensemble` / :func:`girth_ensemble`."""
    n_one = base_n - n_core
    n_c1 = n_core - round(rate * base_n)
    e2 = round(type2_per_check * n_one)
    rest = e2 - n_weak * weak_type2
    n_other = n_core - n_weak
    lo2 = rest // n_other
    hi_n = rest - lo2 * n_other
    var = []
    if n_weak:
        var.append((n_weak, (2, weak_type2, 0)))
    if n_other - hi_n:
        var.append((n_other - hi_n, (other_type1, lo2, 0)))
    if hi_n:
        var.append((hi_n, (other_type1, lo2 + 1, 0)))
    var.append((n_one, (0, 0, 1)))
    e1 = 2 * n_weak + other_type1 * n_other
    c1_lo, c1_hi_n = divmod(e1, n_c1)
    c2_lo, c2_hi_n = divmod(e2, n_one)
    checks = [(cnt, d) for cnt, d in ((n_c1 - c1_hi_n, (c1_lo, 0, 0)),
                                       (c1_hi_n, (c1_lo + 1, 0, 0)),
                                       (n_one - c2_hi_n, (0, c2_lo, 1)),
                                       (c2_hi_n, (0, c2_lo + 1, 1))) if cnt]
    ens = MetEnsemble(name, base_n, tuple(var), tuple(checks), forest=forest,
                      weak_girth=weak_girth)
    ens.validate()
    return ens
