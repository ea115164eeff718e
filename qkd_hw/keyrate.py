"""Secret key rate of Gaussian-modulated coherent-state CV-QKD (GG02 / no-switching).

Security assumptions: reverse reconciliation, collective (Gaussian) attacks, trusted
detector: Bob's efficiency ``eta`` and electronic noise ``v_el`` are not attributed
to Eve. ``K = beta I_AB - chi_BE`` in bits per symbol.

Closed forms after F. Laudenbach et al., Adv. Quantum Technol. 1, 1800011 (2018)
(homodyne) and, for heterodyne, S. Fossier et al., J. Phys. B 42, 114014
(2009). Their convention: ``V = V_A + 1``; noises referred to the channel input,

    chi_line = 1/T - 1 + xi
    chi_hom  = (1 - eta + v_el)/eta           chi_het = (2 - eta + 2 v_el)/eta
    chi_tot  = chi_line + chi_det/T           (= xi - 1 + (1+v_el)/(eta T) homodyne,
                                                 xi - 1 + 2(1+v_el)/(eta T) heterodyne)
    I_AB     = (1/2 or 1) log2((V + chi_tot)/(1 + chi_tot)) = (1/2 or 1) log2(1 + SNR)

with ``SNR = V_A/(1 + chi_tot) = t^2 V_A/(1 + v_el + t^2 xi)`` per quadrature, which is
the conventions.md channel ``y = t x + z`` with ``t^2 = eta T`` (homodyne) or
``eta T/2`` (heterodyne, the 1/2 of the 50:50 split; the factor 2 in chi_het is the
extra vacuum unit of the split referred to the input). The Holevo bound is

    chi_BE = G(l1) + G(l2) - G(l3) - G(l4),   G(l) = g((l-1)/2) (l5 = 1 drops out)
    A = V^2 (1 - 2T) + 2T + T^2 (V + chi_line)^2,   B = T^2 (V chi_line + 1)^2
    l1,2^2 = (A +- sqrt(A^2 - 4B))/2
    homodyne:   C = (A chi_hom + V sqrt(B) + T(V + chi_line)) / (T (V + chi_tot))
                D = sqrt(B) (V + sqrt(B) chi_hom) / (T (V + chi_tot))
    heterodyne: C = (A chi_het^2 + B + 1 + 2 chi_het (V sqrt(B) + T (V + chi_line))
                     + 2 T (V^2 - 1)) / (T (V + chi_tot))^2
                D = ((V + sqrt(B) chi_het) / (T (V + chi_tot)))^2
    l3,4^2 = (C +- sqrt(C^2 - 4D))/2

(evaluated from sums and differences of each pair, see :func:`holevo_bound`, which
avoids the cancellation of the minus branch for near-pure states.) The test suite
checks these against the symplectic spectrum of the purified covariance matrix built
mode by mode.

Numerical domain (float64): ``eta T >= 1e-8``, ``V_A <= 1e4``, ``xi, v_el <= 1e6``; there the
eigenvalues are exact to 1e-8 relative and K to within ``rounding_error_bits`` (checked in
the tests against a 120-digit evaluation of the forms above). Outside it the scalar API
raises :class:`KeyRateInputError`; the array functions (:func:`key_rate_terms` etc.) do not
validate.

Finite size: A. Leverrier, F. Grosshans, P. Grangier, Phys. Rev. A 81, 062343 (2010),
key rate and parameter-estimation bounds:

    K = (n/N) [beta I_AB - chi_BE](T_min, xi_max) - (n/N) Delta(n)
    Delta(n) = (2 dim H_X + 3) sqrt(log2(2/eps_bar)/n) + (2/n) log2(1/eps_PA)

with N the block (symbols sent), n = N - (symbols disclosed for PE) the symbols kept
for the key, ``dim H_X = 2`` (the paper's choice, giving the familiar 7), eps_bar the
smoothing and eps_PA the privacy-amplification failure probabilities. Defaults follow
the paper's numerics: eps_PE = eps_bar = eps_PA = 1e-10. The overall security parameter
adds these up together with eps_EC of the reconciliation code (see the paper for the
exact composition).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from dsp.vocabulary import DEFAULT_EPS_BAR, DEFAULT_EPS_PA, DEFAULT_EPS_PE, DETECTIONS
from qkd_hw.errors import QkdHwError
from qkd_hw.symplectic import entropy_g

if TYPE_CHECKING:
    from dsp.estimation import Estimates

__all__ = [
    "DETECTIONS",
    "KeyRate",
    "KeyRateInputError",
    "asymptotic_key_rate",
    "expected_bounds",
    "finite_size_delta",
    "finite_size_key_rate",
    "holevo_bound",
    "key_rate_from_estimates",
    "key_rate_terms",
    "max_tolerable_excess_noise",
    "mutual_information",
    "transmittance_from_distance",
]


#: lowest ``efficiency * transmittance`` the closed forms take (80 dB of loss, twice any
#: CV-QKD link's; the closed forms only see the product): chi_BE ~ eta T is a difference of
#: terms of order 1, so its relative rounding error grows as ~1e-14/(eta T) (1e-6 at this
#: floor; at 1e-15 the sign of the rate is noise). Below it the scalar API refuses and the
#: finite-size rate certifies no key.
TRANSMITTANCE_FLOOR = 1e-8
#: upper ends of the domain where float64 yields the symplectic eigenvalues to relative
#: precision (against a 120-digit evaluation of the textbook forms, tests): the V^2 terms of
#: A cancel as T -> 1, an error ~eps V_A^2 (1e-9 at V_A = 1e4, 1e-7 at 1e5); xi enters
#: likewise (4e-11 at 1e6, 2e-9 at 1e8, 5e-7 at 1e10); v_el stays at 1e-10 up to 1e12 and
#: shares xi's bound. Beyond them overflow gives NaN or -inf eigenvalues.
MODULATION_VARIANCE_MAX = 1e4
NOISE_MAX = 1e6
#: bound on the rounding error of K: ROUNDING_FACTOR eps (1 + sum G(l_i) + I_AB
#: + (V^2 + xi)/256), the V^2 and xi terms for the cancellations above. Against the 120-digit
#: reference (7e3 points of the domain) the error stays below 1/15 of it: the worst is 1e-12
#: bits at V_A <= 1e3, 2.4e-8 bits at V_A = 1e4, T = 1 (the bound there is 5.7e-6).
ROUNDING_FACTOR = 2.0**16
#: largest block, PE or key count: an int64, what JSON readers into 64-bit integers (and
#: numpy) take; a 1e300-symbol block put a 301-digit integer into the JSON
MAX_COUNT = 2**63 - 1
_LN2 = math.log(2.0)


class KeyRateInputError(QkdHwError, ValueError):
    """A key-rate parameter is out of its physical range (message names it and the range)."""


@dataclass(frozen=True)
class KeyRate:
    """A secret key rate and the terms it was computed from.

    ``key_rate_bits_per_symbol`` is signed: a negative value means no secret key can be
    extracted at these parameters (``-inf`` when the parameter-estimation bounds are
    degenerate, e.g. ``T_min = 0``). It is per symbol sent (per block symbol in the
    finite-size case, i.e. already multiplied by n/N).
    """

    key_rate_bits_per_symbol: float
    i_ab: float
    chi_be: float
    beta: float
    detection: str
    # parameters the rate was evaluated at (worst case T_min, xi_max in finite size)
    modulation_variance_snu: float
    transmittance: float
    excess_noise_snu: float
    efficiency: float
    electronic_noise_snu: float
    snr: float
    chi_tot: float
    symplectic_eigenvalues: tuple[float, ...]
    # finite-size extras (None when asymptotic)
    block_size: int | None = None
    n_pe: int | None = None          # real pairs disclosed (2 per symbol in heterodyne)
    n_key: int | None = None         # symbols kept for the key (n in the paper)
    eps_pe: float | None = None
    eps_pa: float | None = None
    eps_bar: float | None = None
    delta_n: float | None = None
    key_fraction: float | None = None            # n/N
    transmittance_estimate: float | None = None  # point estimate / true value behind T_min
    excess_noise_estimate_snu: float | None = None
    asymptotic_key_rate_bits_per_symbol: float | None = None  # at the point estimate
    # bound on the float64 rounding error of key_rate_bits_per_symbol (bits per symbol)
    rounding_error_bits: float = 0.0

    @property
    def secure(self) -> bool:
        """True if a secret key can be extracted (rate above its rounding error)."""
        return self.key_rate_bits_per_symbol > self.rounding_error_bits

    @property
    def finite_size(self) -> bool:
        return self.block_size is not None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["symplectic_eigenvalues"] = list(self.symplectic_eigenvalues)
        d["secure"] = self.secure
        return d


# --------------------------------------------------------------------------------------------
# validation
def _real(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise KeyRateInputError(f"{name} must be a real number, got {value!r}") from None
    if not math.isfinite(v):
        raise KeyRateInputError(f"{name} must be finite, got {v!r}")
    return v


def _check(va: Any, T: Any, xi: Any, eta: Any, vel: Any, detection: Any,
           beta: Any = None) -> tuple[float, float, float, float, float, str, float | None]:
    va = _real("modulation_variance_snu", va)
    T = _real("transmittance", T)
    xi = _real("excess_noise_snu", xi)
    eta = _real("efficiency", eta)
    vel = _real("electronic_noise_snu", vel)
    if not 0 < va <= MODULATION_VARIANCE_MAX:
        raise KeyRateInputError(
            f"modulation_variance_snu must be in (0, {MODULATION_VARIANCE_MAX:g}], got {va!r}"
            + _PRECISION_NOTE * (va > 0))
    if not 0 < T <= 1:
        raise KeyRateInputError(f"transmittance must be in (0, 1], got {T!r}")
    if T < TRANSMITTANCE_FLOOR:
        raise KeyRateInputError(
            f"transmittance {T!r} is below {TRANSMITTANCE_FLOOR:g} (80 dB of loss), where the "
            "closed forms lose their precision in double precision")
    if not 0 <= xi <= NOISE_MAX:
        raise KeyRateInputError(f"excess_noise_snu must be in [0, {NOISE_MAX:g}], got {xi!r}"
                                + _PRECISION_NOTE * (xi > 0))
    if not 0 < eta <= 1:
        raise KeyRateInputError(f"efficiency must be in (0, 1], got {eta!r}")
    if eta * T < TRANSMITTANCE_FLOOR:
        raise KeyRateInputError(
            f"efficiency * transmittance = {eta!r} * {T!r} = {eta * T:.3g} is below "
            f"{TRANSMITTANCE_FLOOR:g} (80 dB), where the closed forms lose their precision "
            "in double precision")
    if not 0 <= vel <= NOISE_MAX:
        raise KeyRateInputError(
            f"electronic_noise_snu must be in [0, {NOISE_MAX:g}], got {vel!r}"
            + _PRECISION_NOTE * (vel > 0))
    if detection not in DETECTIONS:
        raise KeyRateInputError(f"detection must be one of {DETECTIONS}, got {detection!r}")
    if beta is not None:
        beta = _real("beta", beta)
        if not 0 < beta <= 1:
            raise KeyRateInputError(
                f"beta (reconciliation efficiency) must be in (0, 1], got {beta!r}")
    return va, T, xi, eta, vel, detection, beta


_PRECISION_NOTE = " (beyond it float64 loses the symplectic eigenvalues' precision)"


def _check_eps(name: str, eps: Any) -> float:
    e = _real(name, eps)
    if not 0 < e < 1:
        raise KeyRateInputError(f"{name} must be in the open interval (0, 1), got {e!r}")
    return e


# --------------------------------------------------------------------------------------------
# closed forms (numpy, broadcast over array arguments; no validation)
def _noises(va, T, xi, eta, vel, detection):
    V = np.asarray(va, dtype=np.float64) + 1.0
    T = np.asarray(T, dtype=np.float64)
    chi_line = 1.0 / T - 1.0 + xi
    if detection == "heterodyne":
        chi_det = (2.0 - eta + 2.0 * np.asarray(vel)) / eta
    else:
        chi_det = (1.0 - eta + np.asarray(vel)) / eta
    return V, T, chi_line, chi_det, chi_line + chi_det / T


def mutual_information(va, T, xi, eta, vel, detection: str):
    """``I_AB`` in bits per symbol (array-friendly, unvalidated); returns (I_AB, SNR, chi_tot)."""
    V, T, _, _, chi_tot = _noises(va, T, xi, eta, vel, detection)
    snr = (V - 1.0) / (1.0 + chi_tot)
    factor = 1.0 if detection == "heterodyne" else 0.5
    return factor * np.log1p(snr) / _LN2, snr, chi_tot


def _hom_discriminant(va, T, xi, chi, m=-1.0):
    """``(C^2 - 4D) (T (V + chi_tot))^2`` for homodyne, written without cancellation.

    Expanded (sympy) in ``u = 1 - T`` and ``xi``: the leading quadratic part is the
    sum of squares ``(a u - 2 chi xi)^2 + P^2 xi (2u + xi)`` with
    ``a = V_A (V_A + 2 + 2 chi)`` and ``P = V_A (V_A + 2)``; the rest (r0..r4 u^4) is of
    third order in (u, xi). Evaluating the textbook ``C^2 - 4D`` instead loses half of
    the digits as T -> 1, xi -> 0 (l3 ~ l4 ~ 1, where G is steepest): a 1.5e-7 bit
    error at T = 1 against 1e-13 with this form.

    ``m = +1`` turns every minus sign into a plus: with u, xi, chi, V_A >= 0 this is the
    sum of the moduli of the terms, the scale of the rounding error of the ``m = -1`` value.
    """
    u = 1.0 - T
    x = chi
    a = va * (va + 2.0 + 2.0 * x)
    P = va * (va + 2.0)
    quad = (a * u + m * 2.0 * x * xi) ** 2 + P * P * xi * (2.0 * u + xi)
    r0 = xi**3 * (m * 2 * va**2 * x + 4 * va * x**2 + m * 4 * va * x + x**2 * xi + 4 * x**2)
    r1 = xi**2 * (m * 2 * va**4 + m * 8 * va**3 + m * 8 * va**2 * x**2 + m * 6 * va**2 * x
                  + m * 8 * va**2
                  + m * 4 * va * x**2 + m * 12 * va * x + m * 8 * x**2
                  + xi * (6 * va**2 * x + m * 16 * va * x**2 + 12 * va * x + m * 4 * x**2 * xi
                          + m * 12 * x**2))
    r2 = xi * (2 * va**4 * x + m * 2 * va**4 + 4 * va**3 * x**2 + 8 * va**3 * x + m * 8 * va**3
               + m * 4 * va**2 * x**2 + 12 * va**2 * x + m * 8 * va**2 + 8 * va * x**2 + 8 * va * x
               + xi * (va**4 + 4 * va**3 + 22 * va**2 * x**2 + 12 * va**2 * x + 4 * va**2
                       + 8 * va * x**2 + 24 * va * x + 4 * x**2
                       + xi * (m * 6 * va**2 * x + 24 * va * x**2 + m * 12 * va * x + 6 * x**2 * xi
                               + 12 * x**2)))
    r3 = (2 * va**4 * x + 4 * va**3 * x**2 + 4 * va**3 * x
          + xi * (m * 2 * va**4 * x + m * 8 * va**3 * x**2 + m * 8 * va**3 * x + 4 * va**2 * x**2
                  + m * 8 * va**2 * x
                  + xi * (m * 20 * va**2 * x**2 + m * 6 * va**2 * x + m * 4 * va * x**2
                          + m * 12 * va * x
                          + xi * (2 * va**2 * x + m * 16 * va * x**2 + 4 * va * x
                                  + m * 4 * x**2 * xi + m * 4 * x**2))))
    r4 = x**2 * (va + xi) ** 4
    return quad + r0 + u * (r1 + u * (r2 + u * (r3 + u * r4)))


def _from_sum_diff(s, d):
    """Eigenvalue pair from ``s = l1 + l2`` and ``d = l1 - l2 >= 0``."""
    return 0.5 * (s + d), 0.5 * (s - d)


def holevo_bound(va, T, xi, eta, vel, detection: str):
    """``chi_BE`` in bits per symbol and the eigenvalues (l1, l2, l3, l4) (array-friendly).

    Each pair is evaluated from its sum and difference,
    ``(l1 + l2)^2 = A + 2 sqrt(B)``, ``(l1 - l2)^2 = A - 2 sqrt(B)`` (and C, D alike),
    with the differences in closed forms free of cancellation, so that the result stays
    accurate to ~1e-13 bits even for near-pure states (T -> 1, xi -> 0).
    """
    va = np.asarray(va, dtype=np.float64)
    V, T, chi_line, chi_det, chi_tot = _noises(va, T, xi, eta, vel, detection)
    xi = np.asarray(xi, dtype=np.float64)
    A = V * V * (1.0 - 2.0 * T) + 2.0 * T + T * T * (V + chi_line) ** 2
    sqrt_b = T * (V * chi_line + 1.0)
    B = sqrt_b * sqrt_b
    den = T * (V + chi_tot)
    # gamma_AB = [[V I, c Z], [c Z, b I]], b = 1 + T(V_A + xi), c^2 = T(V^2 - 1):
    # l1 + l2 = sqrt((V + b)^2 - 4 c^2) = sqrt(A + 2 sqrt(B)),  l1 - l2 = |b - V|
    l1, l2 = _from_sum_diff(np.sqrt(A + 2.0 * sqrt_b), np.abs(T * xi - (1.0 - T) * va))
    if detection == "heterodyne":
        C = (A * chi_det**2 + B + 1.0 + 2.0 * chi_det * (V * sqrt_b + T * (V + chi_line))
             + 2.0 * T * (V * V - 1.0)) / den**2
        sqrt_d = (V + sqrt_b * chi_det) / den
        s34 = np.sqrt(C + 2.0 * sqrt_d)
        # C - 2 sqrt(D) = L^2/den^2 (sympy), L = chi (T xi - V_A (1-T)) - V_A (1-T) - T V xi
        d34 = np.abs(chi_det * (T * xi - va * (1.0 - T)) - va * (1.0 - T) - T * V * xi) / den
    else:
        C = (A * chi_det + V * sqrt_b + T * (V + chi_line)) / den
        sqrt_d = np.sqrt(sqrt_b * (V + sqrt_b * chi_det) / den)
        s34 = np.sqrt(C + 2.0 * sqrt_d)
        # (l3 - l4)^2 by whichever form has the smaller rounding scale (the sum of the
        # moduli of its terms, in units of (l3 - l4)^2): C - 2 sqrt(D) as written, or the
        # expansion, which is exact for near-pure states (l3 ~ l4 ~ 1, where C - 2 sqrt(D)
        # cancels) but cancels itself at large xi and low T (1e-5 relative at xi = 100,
        # T = 1e-8)
        direct = C - 2.0 * sqrt_d
        disc = _hom_discriminant(va, T, xi, chi_det)  # (C^2 - 4D) den^2
        a_mag = V * V * np.abs(1.0 - 2.0 * T) + 2.0 * T + T * T * (V + chi_line) ** 2
        direct_mag = (a_mag * chi_det + V * sqrt_b + T * (V + chi_line)) / den + 2.0 * sqrt_d
        disc_mag = _hom_discriminant(va, T, xi, chi_det, m=1.0) / (den * s34) ** 2
        d34 = np.where(direct_mag <= disc_mag, np.sqrt(np.maximum(direct, 0.0)),
                       np.sqrt(np.maximum(disc, 0.0)) / (den * s34))
    l3, l4 = _from_sum_diff(s34, d34)
    G = [entropy_g((lam - 1.0) / 2.0) for lam in (l1, l2, l3, l4)]
    return G[0] + G[1] - G[2] - G[3], (l1, l2, l3, l4)


def key_rate_terms(va, T, xi, eta, vel, beta, detection: str):
    """Array-friendly ``(K, I_AB, chi_BE)`` without validation (for plots and scans)."""
    i_ab, _, _ = mutual_information(va, T, xi, eta, vel, detection)
    chi_be, _ = holevo_bound(va, T, xi, eta, vel, detection)
    return beta * i_ab - chi_be, i_ab, chi_be


# --------------------------------------------------------------------------------------------
# public scalar API
def asymptotic_key_rate(*, modulation_variance_snu: float, transmittance: float,
                        excess_noise_snu: float, efficiency: float, electronic_noise_snu: float,
                        beta: float, detection: str) -> KeyRate:
    """Asymptotic key rate ``beta I_AB - chi_BE`` (bits/symbol), trusted detector, RR.

    Parameters
    ----------
    modulation_variance_snu : float
        V_A per quadrature, SNU, > 0.
    transmittance : float
        Channel transmittance T in (0, 1].
    excess_noise_snu : float
        xi >= 0, SNU, referred to the channel input.
    efficiency, electronic_noise_snu : float
        Trusted eta in (0, 1] and v_el >= 0 (SNU).
    beta : float
        Reconciliation efficiency in (0, 1].
    detection : {"heterodyne", "homodyne"}

    Raises
    ------
    KeyRateInputError
        (a ``QkdHwError`` and ``ValueError``) naming the parameter out of range.
    """
    va, T, xi, eta, vel, detection, beta = _check(
        modulation_variance_snu, transmittance, excess_noise_snu, efficiency,
        electronic_noise_snu, detection, beta)
    return _rate(va, T, xi, eta, vel, beta, detection)


def _rate(va: float, T: float, xi: float, eta: float, vel: float, beta: float,
          detection: str, **extra: Any) -> KeyRate:
    i_ab, snr, chi_tot = mutual_information(va, T, xi, eta, vel, detection)
    chi_be, lams = holevo_bound(va, T, xi, eta, vel, detection)
    # chi_BE >= 0 exactly (a Holevo quantity); a negative value is rounding (eta T -> 0)
    chi_be = max(float(chi_be), 0.0)
    k = beta * float(i_ab) - chi_be
    err = _rounding_error(va, xi, float(i_ab), lams)
    if extra.get("key_fraction") is not None:
        k = extra["key_fraction"] * (k - extra["delta_n"])
        err *= extra["key_fraction"]
    return KeyRate(
        key_rate_bits_per_symbol=k, i_ab=float(i_ab), chi_be=chi_be, beta=beta,
        detection=detection, modulation_variance_snu=va, transmittance=T, excess_noise_snu=xi,
        efficiency=eta, electronic_noise_snu=vel, snr=float(snr), chi_tot=float(chi_tot),
        symplectic_eigenvalues=tuple(float(x) for x in lams), rounding_error_bits=err, **extra)


def _rounding_error(va: float, xi: float, i_ab: float, lams: tuple) -> float:
    """Bound on the float64 rounding error of K (see :data:`ROUNDING_FACTOR`)."""
    g_sum = sum(float(entropy_g((float(lam) - 1.0) / 2.0)) for lam in lams)
    eps = float(np.finfo(np.float64).eps)
    return ROUNDING_FACTOR * eps * (1.0 + g_sum + i_ab + ((va + 1.0) ** 2 + xi) / 256.0)


def finite_size_delta(n_key: int, *, eps_bar: float = DEFAULT_EPS_BAR,
                      eps_pa: float = DEFAULT_EPS_PA,
                      dim_hx: int = 2) -> float:
    """Leverrier et al. 2010 offset ``Delta(n)`` in bits per kept symbol."""
    n = _positive_int("n_key", n_key)
    eps_bar = _check_eps("eps_bar", eps_bar)
    eps_pa = _check_eps("eps_pa", eps_pa)
    dim = _positive_int("dim_hx", dim_hx)
    # 1 - log2(eps), not log2(2/eps): 2/eps overflows to inf for eps < 1.1e-308
    return ((2 * dim + 3) * math.sqrt((1.0 - math.log2(eps_bar)) / n)
            - 2.0 / n * math.log2(eps_pa))


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise KeyRateInputError(f"{name} must be a positive integer, got {value!r}")
    if value <= 0:
        raise KeyRateInputError(f"{name} must be a positive integer, got {value!r}")
    if value > MAX_COUNT:
        raise KeyRateInputError(f"{name} must be <= 2^63 - 1 (an int64), "
                                f"got {_count_text(int(value))}")
    return int(value)


def _z(eps_pe: float) -> float:
    from scipy.special import ndtri
    return float(-ndtri(eps_pe / 2.0))


def expected_bounds(*, modulation_variance_snu: float, transmittance: float,
                    excess_noise_snu: float, efficiency: float, electronic_noise_snu: float,
                    detection: str, n_pe: int,
                    eps_pe: float = DEFAULT_EPS_PE) -> tuple[float, float]:
    """``(T_min, xi_max)`` a block of ``n_pe`` real PE pairs typically yields (planning).

    The paper's bounds evaluated with the estimates equal to the true values
    (as in the numerics of Leverrier et al. 2010): ``t_min = t - z sqrt(sigma2/(m V_A))``,
    ``sigma2_max = sigma2 (1 + z sqrt(2/m))``. ``T_min`` is 0 and ``xi_max`` inf when
    the block is too small to bound t away from 0.
    """
    va, T, xi, eta, vel, detection, _ = _check(
        modulation_variance_snu, transmittance, excess_noise_snu, efficiency,
        electronic_noise_snu, detection)
    m = _positive_int("n_pe", n_pe)
    z = _z(_check_eps("eps_pe", eps_pe))
    gain = eta / 2 if detection == "heterodyne" else eta
    t = math.sqrt(gain * T)
    sigma2 = 1 + vel + t * t * xi
    t_min = t - z * math.sqrt(sigma2 / (m * va))
    sigma2_max = sigma2 * (1 + z * math.sqrt(2.0 / m))
    if t_min <= 0:
        return 0.0, math.inf
    # worst case never better than the estimate: sqrt(gain T)^2/gain rounds above T when the
    # confidence term vanishes (huge blocks)
    return (min(t_min * t_min / gain, T),
            max((sigma2_max - 1 - vel) / (t_min * t_min), xi))


def finite_size_key_rate(*, modulation_variance_snu: float, transmittance: float,
                         excess_noise_snu: float, efficiency: float, electronic_noise_snu: float,
                         beta: float, detection: str, block_size: int, n_pe: int,
                         eps_pe: float = DEFAULT_EPS_PE, eps_pa: float = DEFAULT_EPS_PA,
                         eps_bar: float = DEFAULT_EPS_BAR,
                         n_key: int | None = None, dim_hx: int = 2) -> KeyRate:
    """Finite-size key rate for a link with the given true parameters (planning, CLI).

    The worst-case ``(T_min, xi_max)`` are those the block would give with the
    estimates equal to the truth (:func:`expected_bounds`).

    Parameters
    ----------
    block_size : int
        N, symbols sent in the block.
    n_pe : int
        m, real pairs disclosed for parameter estimation (as ``Estimates.n_pe``:
        2 per symbol in heterodyne, 1 in homodyne).
    eps_pe, eps_pa, eps_bar : float
        Failure probabilities of PE, privacy amplification, and the smoothing
        parameter, each in (0, 1). Defaults 1e-10 (the paper's numerics).
    n_key : int, optional
        Symbols kept for the key; default ``N - (symbols disclosed)``.
    """
    va, T, xi, eta, vel, detection, beta = _check(
        modulation_variance_snu, transmittance, excess_noise_snu, efficiency,
        electronic_noise_snu, detection, beta)
    eps_pe = _check_eps("eps_pe", eps_pe)
    t_min2, xi_max = expected_bounds(
        modulation_variance_snu=va, transmittance=T, excess_noise_snu=xi, efficiency=eta,
        electronic_noise_snu=vel, detection=detection, n_pe=n_pe, eps_pe=eps_pe)
    asym = _rate(va, T, xi, eta, vel, beta, detection).key_rate_bits_per_symbol
    return _finite(va, t_min2, xi_max, eta, vel, beta, detection, block_size=block_size,
                   n_pe=n_pe, n_key=n_key, eps_pe=eps_pe, eps_pa=eps_pa, eps_bar=eps_bar,
                   dim_hx=dim_hx, t_est=T, xi_est=xi, asym=asym)


def _finite(va: float, T_min: float, xi_max: float, eta: float, vel: float, beta: float,
            detection: str, *, block_size: int, n_pe: int, n_key: int | None, eps_pe: float,
            eps_pa: float, eps_bar: float, dim_hx: int, t_est: float, xi_est: float,
            asym: float) -> KeyRate:
    N = _positive_int("block_size", block_size)
    m = _positive_int("n_pe", n_pe)
    pe_symbols = math.ceil(m / 2) if detection == "heterodyne" else m
    if n_key is None:
        n_key = N - pe_symbols
        if n_key <= 0:
            raise KeyRateInputError(
                f"block_size ({_count_text(N)} symbols) must exceed the symbols disclosed "
                f"for parameter estimation ({_count_text(pe_symbols)} = n_pe "
                f"{_count_text(m)} real pairs)")
    n = _positive_int("n_key", n_key)
    if n > N:
        raise KeyRateInputError(f"n_key ({n}) cannot exceed block_size ({N})")
    delta = finite_size_delta(n, eps_bar=eps_bar, eps_pa=eps_pa, dim_hx=dim_hx)
    extra = dict(block_size=N, n_pe=m, n_key=n, eps_pe=eps_pe, eps_pa=_check_eps("eps_pa", eps_pa),
                 eps_bar=_check_eps("eps_bar", eps_bar), delta_n=delta, key_fraction=n / N,
                 transmittance_estimate=t_est, excess_noise_estimate_snu=xi_est,
                 asymptotic_key_rate_bits_per_symbol=asym)
    if not (eta * T_min >= TRANSMITTANCE_FLOOR and xi_max <= NOISE_MAX):
        # too few PE pairs to bound t away from 0 (or T_min, xi_max outside the closed
        # forms' range): no key can be certified
        nan = math.nan
        return KeyRate(key_rate_bits_per_symbol=-math.inf, i_ab=nan, chi_be=nan, beta=beta,
                       detection=detection, modulation_variance_snu=va, transmittance=T_min,
                       excess_noise_snu=xi_max, efficiency=eta, electronic_noise_snu=vel,
                       snr=nan, chi_tot=nan, symplectic_eigenvalues=(), **extra)
    T, xi = _physical(T_min, xi_max)
    return _rate(va, T, xi, eta, vel, beta, detection, **extra)


def _count_text(n: int) -> str:
    """``n`` in full up to 16 digits, else as 1.23457e+300 (not 300 digits on one line)."""
    return str(n) if n < 10**16 else f"{n:.6g}"


def _physical(T: float, xi: float) -> tuple[float, float]:
    """``(T, xi)`` moved into the physical range in the conservative direction.

    T > 1 only comes from a miscalibrated eta or N0. T is clipped to 1 and xi raised to
    ``T xi``, so that the noise the data certify at the output, ``t^2 xi`` (proportional to
    ``T xi``), is kept: keeping xi itself would model less noise than was measured.
    xi < 0 can only mean v_el or N0 is off; 0 is the conservative physical floor.
    """
    if T > 1.0:
        xi = T * xi if xi > 0 else xi
        T = 1.0
    return T, max(xi, 0.0)


def key_rate_from_estimates(est: Estimates, *, beta: float, block_size: int | None = None,
                            n_key: int | None = None, eps_pa: float = DEFAULT_EPS_PA,
                            eps_bar: float = DEFAULT_EPS_BAR, dim_hx: int = 2,
                            modulation_variance_snu: float | None = None,
                            efficiency: float | None = None,
                            electronic_noise_snu: float | None = None,
                            detection: str | None = None) -> KeyRate:
    """Key rate from :class:`dsp.estimation.Estimates` of one block.

    With ``block_size`` (N, symbols in the block): finite-size rate at the estimate's
    worst case ``(T_min, xi_max)`` at its ``eps_pe``, with ``n_pe`` from the estimates.
    Without: asymptotic rate at the point estimates ``(T_hat, xi_hat)``.
    V_A, eta, v_el and detection come from ``est`` unless given.

    Estimates outside the physical range are moved conservatively (the rate increases with
    T and decreases with xi): ``T > 1 -> 1`` with ``xi -> T xi`` (the measured output noise
    is kept), ``xi -> max(xi, 0)``.
    """
    va = est.modulation_variance_snu if modulation_variance_snu is None else modulation_variance_snu
    eta = est.efficiency if efficiency is None else efficiency
    vel = est.electronic_noise_snu if electronic_noise_snu is None else electronic_noise_snu
    det = getattr(est, "detection", None) if detection is None else detection
    t_hat = est.transmittance
    if not (t_hat > 0 and math.isfinite(est.excess_noise_snu)):
        raise KeyRateInputError(
            f"estimates have no usable transmittance/excess noise (T_hat={t_hat!r}, "
            f"xi_hat={est.excess_noise_snu!r}): Bob's data are not correlated with Alice's")
    va, T, xi, eta, vel, det, beta = _check(va, *_physical(t_hat, est.excess_noise_snu),
                                            eta, vel, det, beta)
    asym = _rate(va, T, xi, eta, vel, beta, det)
    if block_size is None:
        return asym
    return _finite(va, est.transmittance_min, est.excess_noise_max_snu, eta, vel, beta, det,
                   block_size=block_size, n_pe=est.n_pe, n_key=n_key, eps_pe=est.eps_pe,
                   eps_pa=eps_pa, eps_bar=eps_bar, dim_hx=dim_hx, t_est=est.transmittance,
                   xi_est=est.excess_noise_snu, asym=asym.key_rate_bits_per_symbol)


def transmittance_from_distance(distance_km, loss_db_per_km: float = 0.2):
    """Fibre transmittance ``10^(-loss L/10)`` (array-friendly)."""
    return 10.0 ** (-loss_db_per_km * np.asarray(distance_km, dtype=np.float64) / 10.0)


def max_tolerable_excess_noise(*, modulation_variance_snu: float, transmittance: float,
                               efficiency: float, electronic_noise_snu: float, beta: float,
                               detection: str, xi_hi: float = 10.0) -> float:
    """The excess noise at which the asymptotic rate crosses zero (0 if already <= 0 at xi=0).

    The rate is strictly decreasing in xi, so the root is unique (brentq, xtol 1e-12).
    A rate at xi = 0 within its rounding error counts as no key (0 is returned).
    """
    from scipy.optimize import brentq

    va, T, _, eta, vel, detection, beta = _check(
        modulation_variance_snu, transmittance, 0.0, efficiency, electronic_noise_snu,
        detection, beta)
    hi = _real("xi_hi", xi_hi)
    if not 0 < hi <= NOISE_MAX:
        raise KeyRateInputError(f"xi_hi must be in (0, {NOISE_MAX:g}], got {hi!r}")

    def k(xi: float) -> float:
        return _rate(va, T, xi, eta, vel, beta, detection).key_rate_bits_per_symbol

    if not _rate(va, T, 0.0, eta, vel, beta, detection).secure:
        return 0.0
    while k(hi) > 0:
        if hi >= NOISE_MAX:  # cannot happen for a physical rate (xi >= 2 breaks any link)
            raise KeyRateInputError(
                f"key rate stays positive up to excess noise {NOISE_MAX:g} SNU (check inputs)")
        hi = min(2.0 * hi, NOISE_MAX)
    return float(brentq(k, 0.0, hi, xtol=1e-12, rtol=1e-12))
