"""Parameter estimation of a CV-QKD link from disclosed symbol pairs (streaming).

Model and estimators are those of ``conventions.md`` (per quadrature, SNU)::

    y = t x + z,          Var(z) = sigma2 = 1 + v_el + t^2 xi
    t_hat      = sum(x y) / sum(x^2)
    sigma2_hat = mean((y - t_hat x)^2)
    T_hat      = t_hat^2 / (eta/2)   (heterodyne)   or   t_hat^2 / eta   (homodyne)
    xi_hat     = (sigma2_hat - 1 - v_el) / t_hat^2
    snr        = t_hat^2 V_A / sigma2_hat

In heterodyne both quadratures of each complex symbol are pooled (m = 2 real pairs
per symbol); in homodyne only the real parts are used (m = 1 per symbol).

Confidence bounds at failure probability ``eps_pe`` follow Leverrier, Grosshans and
Grangier, Phys. Rev. A 81, 062343 (2010): with
``z = z_{eps_pe/2}`` defined by ``P(N(0,1) > z) = eps_pe/2``,

    t_min      = t_hat - z sqrt(sigma2_hat / (m V_A))
    sigma2_max = sigma2_hat + z sigma2_hat sqrt(2) / sqrt(m)

The paper writes ``m V_A`` for ``sum(x^2)``; we use the empirical ``sum(x^2)``, for
which ``sigma2 / sum(x^2)`` is the exact conditional variance of ``t_hat`` given
Alice's data (no error from the modulation-variance calibration). The worst-case
``T_min = t_min^2/(eta/2 or eta)`` and
``xi_max = (sigma2_max - 1 - v_el) / t_min^2`` follow (if the numerator is negative
the worst case divides by ``t_max^2`` instead, so that ``xi_max >= xi`` still holds
whenever both one-sided bounds hold; the joint failure probability is at most
``eps_pe`` by the union bound).

Everything is computed from sufficient statistics (sums of products), so a block of
2e9 pairs is processed chunk by chunk, in any order, on any number of workers, and
the partial accumulators merged. Sums are formed in float64 blockwise and carried
across blocks with Neumaier compensated summation, so the accumulated sums are
accurate to a few ulp regardless of the number of chunks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.special import ndtri

from dsp.vocabulary import DEFAULT_EPS_PE, DETECTIONS, HETERODYNE, HOMODYNE

__all__ = [
    "DETECTIONS", "STAT_NAMES", "Estimates", "PeAccumulator", "estimate_parameters", "z_quantile",
]


# Sufficient statistics, in this order (r = real part, i = imaginary part).
_STATS = (
    "xr_xr", "xi_xi", "yr_yr", "yi_yi", "xr_yr", "xi_yi", "xr_yi", "xi_yr", "xr", "xi", "yr", "yi",
)
_IDX = {name: k for k, name in enumerate(_STATS)}
STAT_NAMES = _STATS
_IMAG_STATS = ("xi_xi", "yi_yi", "xi_yi", "xr_yi", "xi_yr", "xi", "yi")
# float64 working block: bounds the temporary memory (6 arrays * 8 B * 2^18 = 12 MiB).
_BLOCK = 1 << 18


def _check_detection(detection: str) -> str:
    if detection not in DETECTIONS:
        raise ValueError(f"detection must be one of {DETECTIONS}, got {detection!r}")
    return detection


def z_quantile(eps: float) -> float:
    """``z_{eps/2}``: the two-sided standard normal quantile, ``P(N(0,1) > z) = eps/2``.

    Computed as ``-ndtri(eps/2)`` so it stays accurate for eps as small as 1e-300
    (``ndtri(1 - eps/2)`` would round to ``inf`` or lose all digits below 1e-16).
    """
    eps = float(eps)
    if not (0.0 < eps < 1.0) or not math.isfinite(eps):
        raise ValueError(f"eps_pe must be in the open interval (0, 1), got {eps!r}")
    return float(-ndtri(eps / 2.0))


@dataclass
class PeAccumulator:
    """Streaming sufficient statistics of disclosed pairs (Alice ``x``, Bob ``y``, SNU).

    Parameters
    ----------
    detection : {"heterodyne", "homodyne"}
        Heterodyne pools the real and imaginary parts of each complex symbol
        (2 real pairs per symbol); homodyne uses the real parts only.

    Attributes
    ----------
    n : int
        Number of real pairs accumulated (``m`` in the formulas).
    n_symbols : int
        Number of complex symbols accumulated.

    Notes
    -----
    ``update`` may be called with chunks of any length (including 0); ``merge``
    combines accumulators filled from disjoint parts of a block (e.g. per worker)
    and gives the same sums as one accumulator fed with everything, up to rounding
    of the compensated sums (a few ulp).
    """

    detection: str
    n: int = 0
    n_symbols: int = 0
    _sum: np.ndarray = field(default_factory=lambda: np.zeros(len(_STATS)), repr=False)
    _comp: np.ndarray = field(default_factory=lambda: np.zeros(len(_STATS)), repr=False)

    def __post_init__(self) -> None:
        _check_detection(self.detection)

    # -- accumulation -------------------------------------------------------------------------
    def _add(self, partial: np.ndarray) -> None:
        """Neumaier-compensated ``self._sum += partial`` (elementwise)."""
        s = self._sum
        t = s + partial
        big = np.abs(s) >= np.abs(partial)
        self._comp += np.where(big, (s - t) + partial, (partial - t) + s)
        self._sum = t

    def update(self, x: np.ndarray, y: np.ndarray) -> None:
        """Add a chunk of pairs.

        Parameters
        ----------
        x : ndarray, shape (k,)
            Alice's symbols, SNU (complex; real arrays are accepted in homodyne).
        y : ndarray, shape (k,)
            Bob's symbols, SNU, in the same order as ``x``.

        Raises
        ------
        ValueError
            If shapes differ, arrays are not 1-D, values are not finite, or real
            arrays are given in heterodyne.
        """
        x = np.asarray(x)
        y = np.asarray(y)
        if x.ndim != 1 or y.ndim != 1:
            raise ValueError(f"x and y must be 1-D, got shapes {x.shape} and {y.shape}")
        if x.shape != y.shape:
            raise ValueError(f"x and y must have equal shapes, got {x.shape} and {y.shape}")
        for name, a in (("x", x), ("y", y)):
            numeric = np.issubdtype(a.dtype, np.number)
            if not numeric or np.issubdtype(a.dtype, np.timedelta64):
                raise ValueError(f"{name} must be numeric, got dtype {a.dtype}")
            if self.detection == HETERODYNE and not np.iscomplexobj(a):
                raise ValueError(
                    "heterodyne needs complex symbols (both quadratures); "
                    f"{name} has dtype {a.dtype}"
                )
        k = x.shape[0]
        if k == 0:
            return
        het = self.detection == HETERODYNE
        for start in range(0, k, _BLOCK):
            xs = x[start:start + _BLOCK]
            ys = y[start:start + _BLOCK]
            xr = np.real(xs).astype(np.float64, copy=False)
            yr = np.real(ys).astype(np.float64, copy=False)
            if het:
                xi = np.imag(xs).astype(np.float64, copy=False)
                yi = np.imag(ys).astype(np.float64, copy=False)
                block = (
                    xr @ xr, xi @ xi, yr @ yr, yi @ yi, xr @ yr, xi @ yi, xr @ yi, xi @ yr,
                    xr.sum(), xi.sum(), yr.sum(), yi.sum(),
                )
            else:
                zero = 0.0
                block = (xr @ xr, zero, yr @ yr, zero, xr @ yr, zero, zero, zero,
                         xr.sum(), zero, yr.sum(), zero)
            block = np.array(block, dtype=np.float64)
            if not np.all(np.isfinite(block)):
                raise ValueError(
                    "x and y must be finite: non-finite value (nan/inf) or overflow in pairs "
                    f"{start}..{start + len(xs) - 1} of this chunk"
                )
            self._add(block)
        self.n_symbols += k
        self.n += 2 * k if het else k

    @classmethod
    def from_sums(cls, detection: str, sums: Mapping[str, float], n_symbols: int) -> PeAccumulator:
        """An accumulator holding precomputed sufficient statistics.

        For callers that accumulate a richer statistic themselves (e.g. the full 4x4
        second-moment matrix, to rotate Bob's data afterwards) and hand over the result.

        Parameters
        ----------
        detection : {"heterodyne", "homodyne"}
        sums : mapping
            Values for every name in :data:`STAT_NAMES` (``"xr_yr"`` = sum Re(x) Re(y),
            ``"xr"`` = sum Re(x), ...). In homodyne the imaginary-part entries must be 0.
        n_symbols : int
            Number of complex symbols the sums were taken over (>= 0).
        """
        acc = cls(detection)
        missing = [k for k in _STATS if k not in sums]
        unknown = [k for k in sums if k not in _IDX]
        if missing or unknown:
            raise ValueError(f"sums must have exactly the keys {STAT_NAMES}; "
                             f"missing {missing}, unknown {unknown}")
        vals = np.array([float(sums[k]) for k in _STATS])
        if not np.all(np.isfinite(vals)):
            raise ValueError("sums must be finite")
        if detection == HOMODYNE and np.any(vals[[_IDX[k] for k in _IMAG_STATS]] != 0):
            raise ValueError(f"homodyne uses real parts only: sums of {_IMAG_STATS} must be 0")
        if isinstance(n_symbols, bool) or int(n_symbols) != n_symbols or n_symbols < 0:
            raise ValueError(f"n_symbols must be a non-negative integer, got {n_symbols!r}")
        acc._add(vals)
        acc.n_symbols = int(n_symbols)
        acc.n = 2 * acc.n_symbols if detection == HETERODYNE else acc.n_symbols
        return acc

    def merge(self, other: PeAccumulator) -> PeAccumulator:
        """A new accumulator holding the pairs of ``self`` and ``other`` (both left unchanged)."""
        if not isinstance(other, PeAccumulator):
            raise TypeError(f"can only merge a PeAccumulator, got {type(other).__name__}")
        if other.detection != self.detection:
            raise ValueError(
                "cannot merge accumulators of different detection: "
                f"{self.detection!r} and {other.detection!r}"
            )
        out = PeAccumulator(self.detection, n=self.n, n_symbols=self.n_symbols,
                            _sum=self._sum.copy(), _comp=self._comp.copy())
        out._add(other._sum)
        out._add(other._comp)
        out.n += other.n
        out.n_symbols += other.n_symbols
        return out

    # -- read-out -----------------------------------------------------------------------------
    def sums(self) -> dict[str, float]:
        """Compensated sufficient statistics: pooled ``sxx``, ``sxy``, ``syy`` and all raw sums."""
        tot = self._sum + self._comp
        d = {name: float(tot[k]) for name, k in _IDX.items()}
        d["sxx"] = d["xr_xr"] + d["xi_xi"]
        d["syy"] = d["yr_yr"] + d["yi_yi"]
        d["sxy"] = d["xr_yr"] + d["xi_yi"]
        return d


@dataclass(frozen=True)
class Estimates:
    """Parameter estimates of one block and their worst-case bounds at ``eps_pe``.

    All noise figures in SNU; ``excess_noise_*`` referred to the channel input
    unless named ``_out`` (``T * xi``, referred to the channel output).
    """

    t_eff: float                  # t_hat (signed: a negative value means a pi phase flip)
    t_eff_min: float              # lower bound on |t| (>= 0)
    transmittance: float          # T_hat
    transmittance_min: float      # T_min
    excess_noise_snu: float       # xi_hat
    excess_noise_max_snu: float   # xi_max
    excess_noise_out_snu: float   # T_hat * xi_hat
    electronic_noise_snu: float   # v_el (trusted, as given)
    sigma2: float                 # sigma2_hat
    sigma2_max: float
    snr: float                    # t_hat^2 V_A / sigma2_hat (V_A nominal)
    n_pe: int                     # m, number of real pairs
    eps_pe: float
    # extensions
    detection: str = HETERODYNE
    efficiency: float = float("nan")
    modulation_variance_snu: float = float("nan")   # nominal V_A used in snr
    alice_variance_snu: float = float("nan")        # empirical sum(x^2)/m
    bob_variance_snu: float = float("nan")          # empirical sum(y^2)/m
    t_eff_std: float = float("nan")                 # sqrt(sigma2_hat / sum(x^2))
    residual_phase_rad: float = float("nan")        # heterodyne: arg(sum(conj(x) y)); 0 in homodyne
    z_eps: float = float("nan")                     # z_{eps_pe/2}

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def estimate_parameters(acc: PeAccumulator, *, modulation_variance_snu: float, efficiency: float,
                        electronic_noise_snu: float, eps_pe: float = DEFAULT_EPS_PE,
                        bounds: str = "leverrier", fitted_phase: bool = False) -> Estimates:
    """Estimates and ``eps_pe`` worst-case bounds from an accumulator.

    Parameters
    ----------
    acc : PeAccumulator
        Filled with the disclosed pairs; needs ``acc.n >= 3``.
    modulation_variance_snu : float
        Nominal V_A per quadrature, SNU, > 0 (used for ``snr`` only).
    efficiency : float
        Trusted detection efficiency eta, in (0, 1].
    electronic_noise_snu : float
        Trusted electronic noise v_el, SNU, >= 0.
    eps_pe : float, optional
        Failure probability of parameter estimation, in (0, 1). Default 1e-10.
    bounds : {"leverrier", "exact"}, optional
        ``"leverrier"`` (default, conventions.md): the paper's normal approximations.
        ``"exact"``: the exact Gaussian-model quantiles at the same one-sided level
        eps_pe/2 each, ``RSS/sigma2 ~ chi2(m-1)`` and ``(t_hat - t)/se ~ Student(m-1)``:
        ``sigma2_max = m sigma2_hat / chi2_{m-1}.ppf(eps_pe/2)``,
        ``t_min = |t_hat| - t_{m-1}.isf(eps_pe/2) sqrt(m sigma2_hat / ((m-1) sum x^2))``.
        The normal approximation of the chi2 tail is slightly optimistic for small m
        (one-sided failure 3.2 % instead of 2.5 % at m = 2000, eps_pe = 0.05); the two
        sigma2_max values agree to 5e-6 relative at m = 1e9.
    fitted_phase : bool, optional
        The common phase that aligns Bob's pairs with Alice's was fitted on these same pairs
        (``PairMoments.phase``), a second fitted parameter besides t: the ``"exact"`` bounds
        then use ``m - 2`` degrees of freedom (with ``m - 1``, at m = 40 and eps_pe = 0.2
        each bound failed in 12 % of trials instead of 10 %). The Leverrier approximations
        are those of conventions.md and do not change.

    Returns
    -------
    Estimates
    """
    if not isinstance(acc, PeAccumulator):
        raise TypeError(f"acc must be a PeAccumulator, got {type(acc).__name__}")
    va = _finite("modulation_variance_snu", modulation_variance_snu)
    if va <= 0:
        raise ValueError(f"modulation_variance_snu must be > 0, got {va!r}")
    eta = _finite("efficiency", efficiency)
    if not 0 < eta <= 1:
        raise ValueError(f"efficiency must be in (0, 1], got {eta!r}")
    vel = _finite("electronic_noise_snu", electronic_noise_snu)
    if vel < 0:
        raise ValueError(f"electronic_noise_snu must be >= 0, got {vel!r}")
    z = z_quantile(eps_pe)
    if bounds not in ("leverrier", "exact"):
        raise ValueError(f"bounds must be one of ('leverrier', 'exact'), got {bounds!r}")
    m = acc.n
    if m < 3:
        raise ValueError(f"parameter estimation needs >= 3 real pairs, the accumulator has {m}")
    s = acc.sums()
    sxx, sxy, syy = s["sxx"], s["sxy"], s["syy"]
    if not sxx > 0:
        raise ValueError("Alice's disclosed symbols are all zero: sum(x^2) = 0")

    t_hat = sxy / sxx
    # mean((y - t x)^2) = (syy - 2 t sxy + t^2 sxx)/m = (syy - t sxy)/m; clip rounding below 0
    sigma2 = max((syy - t_hat * sxy) / m, 0.0)
    gain = eta / 2.0 if acc.detection == HETERODYNE else eta

    t_std = math.sqrt(sigma2 / sxx)
    t_abs = abs(t_hat)
    if bounds == "leverrier":
        dt = z * t_std
        sigma2_max = sigma2 + z * sigma2 * math.sqrt(2.0 / m)
    else:
        dof = m - 2 if fitted_phase else m - 1
        if fitted_phase:
            # |t_hat| with a fitted phase also collects the quadrature component of the noise
            # (variance t_std^2): E t_hat^2 = t^2 + 2 t_std^2 against t^2 + t_std^2 for a known
            # phase; remove it so that the bound is centred as with a known phase
            t_abs = math.sqrt(max(t_abs * t_abs - t_std * t_std, 0.0))
        # imported here: scipy.stats (with scipy.optimize) is ~37 MB of the receiver's RSS,
        # and the receiver's default Leverrier bounds never need it
        from scipy.stats import chi2
        from scipy.stats import t as student_t

        dt = float(student_t.isf(eps_pe / 2.0, dof)) * t_std * math.sqrt(m / dof)
        sigma2_max = m * sigma2 / float(chi2.ppf(eps_pe / 2.0, dof))
    t_min = max(t_abs - dt, 0.0)
    t_max = t_abs + dt

    transmittance = t_hat**2 / gain
    transmittance_min = t_min**2 / gain
    noise = sigma2 - 1.0 - vel
    xi_hat = noise / t_hat**2 if t_hat != 0 else math.inf
    noise_max = sigma2_max - 1.0 - vel
    if noise_max >= 0:
        xi_max = noise_max / t_min**2 if t_min > 0 else math.inf
    else:
        xi_max = noise_max / t_max**2
    phase = math.atan2(s["xr_yi"] - s["xi_yr"], s["sxy"]) if acc.detection == HETERODYNE else 0.0

    return Estimates(
        t_eff=t_hat,
        t_eff_min=t_min,
        transmittance=transmittance,
        transmittance_min=transmittance_min,
        excess_noise_snu=xi_hat,
        excess_noise_max_snu=xi_max,
        excess_noise_out_snu=noise / gain,  # = T_hat * xi_hat
        electronic_noise_snu=vel,
        sigma2=sigma2,
        sigma2_max=sigma2_max,
        snr=t_hat**2 * va / sigma2 if sigma2 > 0 else math.inf,
        n_pe=m,
        eps_pe=float(eps_pe),
        detection=acc.detection,
        efficiency=eta,
        modulation_variance_snu=va,
        alice_variance_snu=sxx / m,
        bob_variance_snu=syy / m,
        t_eff_std=t_std,
        residual_phase_rad=phase,
        z_eps=z,
    )


def _finite(name: str, value: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v!r}")
    return v
