"""Two-party reverse reconciliation: multidimensional maps + MET-LDPC syndrome decoding.

Bob (whose bits become the key) draws uniform key bits from a generator seeded from
``secrets``, turns each block of ``d`` values into a map (:mod:`.multidim`) and publishes the
maps, the block norms and the syndrome of his bits under a MET-LDPC mother code
(:mod:`.codes`). Alice maps her own values, derives the binary-input AWGN LLRs and decodes
(:mod:`.ldpc`).

Rate adaptation (Elkouss, Martinez-Mateo, Martin, QIC 11, 226 (2011), arXiv:1006.2660;
Wang et al., QIC 18, 0197 (2018)): of the mother code's ``N`` positions (dimension ``K``,
``M = N - K`` checks), ``s`` are *shortened* (bit 0 known to both: Alice's LLR is a large
finite value, they are not key) and ``p`` are *punctured* (no channel value: Alice's LLR is
0, not key). The ``N - s - p`` remaining positions carry the key at the effective rate
``R_eff = (K - s) / (N - s - p)``. Shortened positions are spread uniformly over the
non-punctured positions by a seeded permutation; punctured positions are degree-one
variable nodes, each the only degree-one node of its check, chosen by a seeded permutation.
Such a check's syndrome bit is ``(core bits) xor (punctured bit)``: it carries no
information once the punctured bit is unknown, so Bob does not send it and Alice's decoder
gets a check whose messages to the core are zero, i.e. the code with those ``p`` checks
removed. Disclosed about the key: the ``M - p`` syndrome bits sent (:func:`leakage_bits`);
the key per frame is ``N - s - p`` bits, so ``key - leak = K - s = R_eff * key``. Maps and
norms are independent of the key bits (see :mod:`.multidim`). Positions, counts and seed
are public and agreed before the first frame (:func:`params_message`).

Efficiency ``beta = rate / C(snr)`` with ``C = 1/2 log2(1 + snr)`` per real dimension.

Alice's LLRs assume ``x`` and ``y`` positively correlated (``t > 0``, conventions.md) and
zero-mean; both sides normalise by the frame's own second moment (Bob's through the published
norms). A converged decoder satisfies Bob's syndrome but may still hold a different word (the
codes have low-weight codewords through their degree-two core nodes): only the verification
hash that follows decides whether the frame is kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from qkd_hw.errors import ReconciliationError
from qkd_hw.postprocessing import multidim
from qkd_hw.postprocessing.codes import DEFAULT_FAMILY, ENSEMBLES, LdpcCode, ensemble, get_code
from qkd_hw.postprocessing.ldpc import decode

__all__ = ["MAX_PUNCTURED", "AliceReconciler", "BobReconciler", "ReconciliationParams",
           "adapt_code", "capacity", "choose_code", "effective_rate", "leakage_bits",
           "params_from_message", "params_message", "puncturable"]

#: default mother-code lengths (multiples of the base graphs and of 8)
DEFAULT_LENGTH = {0.1: 100_000, 0.05: 160_000, 0.02: 1_000_000}
#: efficiency targeted by choose_code: the highest measured point with FER <= 0.1 of each
#: mother code at its default length (benchmarks/reconciliation.md)
DESIGN_BETA = {0.1: 0.90, 0.05: 0.90, 0.02: 0.92}
#: largest punctured fraction of the mother length choose_code uses: measured up to 36 %
#: (benchmarks/reconciliation.md, "Rate adaptation"); 74 % failed most frames
MAX_PUNCTURED = 0.4
#: seed of the code construction and of the shortened positions (public)
CODE_SEED = 20111213
# LLR of a shortened (known zero) bit: large but finite for the decoder
_KNOWN_LLR = 50.0


def capacity(snr: float) -> float:
    """Capacity ``1/2 log2(1 + snr)`` of the real Gaussian channel, bits per use."""
    return 0.5 * math.log2(1.0 + snr)


@dataclass(frozen=True)
class ReconciliationParams:
    """Parameters both parties agree on before reconciling.

    Attributes
    ----------
    dimension : int
        Multidimensional block size, 1, 2, 4 or 8.
    rate : float
        Effective key rate of the adapted code, ``(K - s)/(N - s - p)``.
    frame_bits : int
        Real values per frame, equal to the key bits per frame (``N - s - p``).
    max_iterations : int
        Decoder iteration cap.
    mother_rate : float
        Design rate of the mother MET-LDPC code (0.1, 0.05 or 0.02).
    code_length : int
        Mother code length ``N``.
    shortened : int
        Shortened (known, not key) positions ``s``.
    code_seed : int
        Seed of the code construction and of the shortened/punctured positions.
    punctured : int
        Punctured (untransmitted, not key) degree-one positions ``p``.
    code_family : int, optional
        Mother ensemble of that rate (:data:`.codes.FAMILIES`); None: the default one
        (:data:`.codes.DEFAULT_FAMILY`), resolved to its number on construction.
    """

    dimension: int
    rate: float
    frame_bits: int
    max_iterations: int
    mother_rate: float = 0.1
    code_length: int = 100_000
    shortened: int = 0
    code_seed: int = CODE_SEED
    punctured: int = 0
    code_family: int | None = None

    def __post_init__(self) -> None:
        if self.dimension not in multidim.DIMENSIONS:
            raise ReconciliationError(f"dimension must be one of {multidim.DIMENSIONS}, "
                                      f"got {self.dimension}")
        if self.mother_rate not in ENSEMBLES:
            raise ReconciliationError(f"mother_rate must be one of {sorted(ENSEMBLES)}, "
                                      f"got {self.mother_rate}")
        if self.code_family is None:
            object.__setattr__(self, "code_family", DEFAULT_FAMILY[self.mother_rate])
        try:
            ens = ensemble(self.mother_rate, self.code_family)
        except ValueError as exc:
            raise ReconciliationError(str(exc)) from None
        if self.code_length <= 0 or self.code_length % ens.base_n:
            raise ReconciliationError(f"code_length {self.code_length} is not a positive "
                                      f"multiple of {ens.base_n}")
        k = _dimension_k(self.mother_rate, self.code_length, self.code_family)
        if not 0 <= self.shortened < k:
            raise ReconciliationError(f"shortened={self.shortened} out of range")
        if not 0 <= self.punctured < self.code_length - self.shortened:
            raise ReconciliationError(f"punctured={self.punctured} out of range")
        key = self.code_length - self.shortened - self.punctured
        if self.frame_bits != key:
            raise ReconciliationError(f"frame_bits={self.frame_bits} must equal code_length - "
                                      f"shortened - punctured = {key}")
        if self.frame_bits % self.dimension:
            raise ReconciliationError(f"frame_bits={self.frame_bits} is not a multiple of the "
                                      f"dimension {self.dimension}")
        if self.max_iterations < 1:
            raise ReconciliationError(f"max_iterations must be >= 1, got {self.max_iterations}")
        if not math.isclose(self.rate, effective_rate(k, self.code_length, self.shortened,
                                                      self.punctured), rel_tol=1e-9):
            raise ReconciliationError(f"rate={self.rate} is not (K - s)/(N - s - p) of these "
                                      "counts")


def effective_rate(k: int, n: int, shortened: int, punctured: int) -> float:
    """Key rate ``(k - s) / (n - s - p)`` of a length-``n`` dimension-``k`` code with ``s``
    shortened and ``p`` punctured positions."""
    return (k - shortened) / (n - shortened - punctured)


def _dimension_k(mother_rate: float, n: int, family: int | None = None) -> int:
    """Design dimension ``K = N - M`` of the mother code of length ``n`` (a rank-deficient
    ``H`` has a larger one; the leakage counts every syndrome bit sent either way)."""
    e = ensemble(mother_rate, family)
    return n - e.base_m * (n // e.base_n)


def _code(params: ReconciliationParams) -> LdpcCode:
    return get_code(params.mother_rate, params.code_length, params.code_seed,
                    params.code_family)


@dataclass(frozen=True, eq=False)
class _Layout:
    """Where the key, shortened and punctured positions of an adapted code are."""

    key: np.ndarray          # sorted key positions (N - s - p)
    shortened: np.ndarray    # sorted shortened positions (s)
    punctured: np.ndarray    # sorted punctured positions (p)
    sent_checks: np.ndarray  # sorted checks whose syndrome bit is sent (M - p)


def puncturable(code: LdpcCode) -> np.ndarray:
    """Degree-one variable nodes that are the only degree-one node of their check, sorted."""
    degree = np.bincount(code.check_var, minlength=code.n)
    check_of_edge = np.repeat(np.arange(code.m), np.diff(code.check_ptr))
    one = degree[code.check_var] == 1
    ones_per_check = np.bincount(check_of_edge[one], minlength=code.m)
    ok = one & (ones_per_check[check_of_edge] == 1)
    return np.sort(code.check_var[ok]).astype(np.int64)


@lru_cache(maxsize=8)
def _layout(code: LdpcCode, shortened: int, punctured: int, seed: int) -> _Layout:
    """Seeded positions: punctured among :func:`puncturable`, shortened uniformly among the
    rest (a known bit anywhere; spread so that no part of the graph loses many)."""
    rng = np.random.default_rng([seed, code.n, shortened, punctured])
    cand = puncturable(code)
    if punctured > cand.size:
        raise ReconciliationError(f"{code.name}: {punctured} punctured positions asked, the "
                                  f"code has {cand.size} puncturable (degree-one) positions")
    punct = np.sort(rng.permutation(cand)[:punctured])
    free = np.ones(code.n, dtype=bool)
    free[punct] = False
    short = np.sort(rng.permutation(np.flatnonzero(free))[:shortened])
    free[short] = False
    masked = np.zeros(code.m, dtype=bool)
    check_of_edge = np.repeat(np.arange(code.m), np.diff(code.check_ptr))
    is_p = np.zeros(code.n, dtype=bool)
    is_p[punct] = True
    masked[check_of_edge[is_p[code.check_var]]] = True
    out = _Layout(key=np.flatnonzero(free), shortened=short, punctured=punct,
                  sent_checks=np.flatnonzero(~masked))
    for a in (out.key, out.shortened, out.punctured, out.sent_checks):
        a.setflags(write=False)
    return out


def _layout_of(params: ReconciliationParams) -> _Layout:
    return _layout(_code(params), params.shortened, params.punctured, params.code_seed)


def _key_positions(params: ReconciliationParams) -> np.ndarray:
    return _layout_of(params).key


def adapt_code(mother_rate: float, target_rate: float | None, *, frame_bits: int | None = None,
               dimension: int = 8, max_iterations: int = 500,
               family: int | None = None) -> ReconciliationParams:
    """Shorten (target below the mother rate) or puncture (above) a mother code to a rate.

    ``s = ceil((K - R N) / (1 - R))`` shortened positions, or ``p = floor(N - K / R)``
    punctured ones, give ``R_eff <= R`` (never above the target efficiency); then ``s`` is
    raised (``p`` lowered) until the key length ``N - s - p`` is a multiple of ``dimension``.

    Parameters
    ----------
    mother_rate : float
        Design rate of the mother code (a key of :data:`ENSEMBLES`).
    target_rate : float or None
        Wanted effective rate, in (0, 1); None: the mother code as it is.
    frame_bits : int, optional
        Mother code length ``N`` (default :data:`DEFAULT_LENGTH`).
    dimension, max_iterations : int
        As in :class:`ReconciliationParams`.
    family : int, optional
        Mother ensemble of that rate (:data:`.codes.FAMILIES`; None: the default).

    Returns
    -------
    ReconciliationParams
    """
    if mother_rate not in ENSEMBLES:
        raise ReconciliationError(f"no mother code of rate {mother_rate}; available: "
                                  f"{sorted(ENSEMBLES)}")
    if target_rate is not None and not (math.isfinite(target_rate) and 0.0 < target_rate < 1.0):
        raise ReconciliationError(f"target rate must be in (0, 1), got {target_rate!r}")
    try:
        ens = ensemble(mother_rate, family)
    except ValueError as exc:
        raise ReconciliationError(str(exc)) from None
    n = DEFAULT_LENGTH[mother_rate] if frame_bits is None else int(frame_bits)
    if n <= 0 or n % ens.base_n or n % dimension:
        raise ReconciliationError(f"frame_bits={frame_bits} must be a positive multiple of "
                                  f"{ens.base_n} and of {dimension} for the "
                                  f"rate-{mother_rate} code")
    k = _dimension_k(mother_rate, n, family)
    s = p = 0
    if target_rate is None:
        pass
    elif target_rate < k / n:
        s = math.ceil((k - target_rate * n) / (1.0 - target_rate) - 1e-9)
        s += (n - s) % dimension            # key length a multiple of the block size
        if s >= k:
            raise ReconciliationError(f"target rate {target_rate:.4g} is too far below the "
                                      f"rate-{mother_rate} mother code (would shorten {s} of "
                                      f"its {k} information positions)")
    elif target_rate > k / n:
        p = max(0, math.floor(n - k / target_rate + 1e-9))
        p -= (dimension - (n - p) % dimension) % dimension
        p = max(p, 0)
    return ReconciliationParams(dimension=dimension, rate=effective_rate(k, n, s, p),
                                frame_bits=n - s - p, max_iterations=max_iterations,
                                mother_rate=mother_rate, code_length=n, shortened=s,
                                punctured=p, code_family=family)


def choose_code(snr: float, *, frame_bits: int | None = None, dimension: int = 8,
                max_iterations: int = 500, beta: float | None = None,
                rate: float | None = None, family: int | None = None) -> ReconciliationParams:
    """Pick the mother code and its shortening/puncturing for an SNR (per real dimension).

    The target rate is ``R_t = beta * C(snr)``. Without ``rate``, the mother code is the
    highest-rate one at or below ``R_t``, punctured up to it, if that punctures at most
    :data:`MAX_PUNCTURED` of its positions; otherwise the lowest-rate one above ``R_t``,
    shortened down to it. ``rate`` forces the mother code: used as it is without ``beta``,
    shortened or punctured to ``R_t`` with it. Puncturing never goes beyond
    :data:`MAX_PUNCTURED` (the rate stays below ``R_t`` then, e.g. far above the highest
    mother's SNR). ``beta`` is a target; the frame error rate says what it costs
    (benchmarks/reconciliation.md, "Rate adaptation").

    Parameters
    ----------
    snr : float
        Signal-to-noise ratio per real dimension (linear), 1e-3 to 10.
    frame_bits : int, optional
        Mother code length ``N`` (a multiple of the ensemble's base graph); default
        :data:`DEFAULT_LENGTH`. The key bits per frame are ``N - s - p``.
    dimension : int
        Multidimensional block size.
    max_iterations : int
        Decoder iteration cap.
    beta : float, optional
        Target efficiency in (0, 1]; default the chosen mother code's :data:`DESIGN_BETA`
        (its measured operating point).
    rate : float, optional
        Mother code rate (0.1, 0.05 or 0.02).
    family : int, optional
        Mother ensemble of the chosen rate (:data:`.codes.FAMILIES`; None: the default).

    Returns
    -------
    ReconciliationParams
    """
    if not (isinstance(snr, float | int) and math.isfinite(snr) and 1e-3 <= snr <= 10.0):
        raise ReconciliationError(f"snr must be a finite number in [1e-3, 10], got {snr!r}")
    if beta is not None and not (math.isfinite(beta) and 0.0 < beta <= 1.0):
        raise ReconciliationError(f"beta must be in (0, 1], got {beta!r}")
    if rate is not None and rate not in ENSEMBLES:
        raise ReconciliationError(f"no mother code of rate {rate}; available: "
                                  f"{sorted(ENSEMBLES)}")
    c = capacity(float(snr))

    def target_of(r: float) -> float:
        return (DESIGN_BETA[r] if beta is None else beta) * c

    if rate is not None:
        mother = rate
    else:
        below = [r for r in sorted(ENSEMBLES) if r <= target_of(r)]
        above = [r for r in sorted(ENSEMBLES) if r > target_of(r)]
        # puncturing did better than shortening where both were measured
        # (benchmarks/reconciliation.md, "Rate adaptation"): shorten only when no mother
        # reaches the target within MAX_PUNCTURED
        if below and (not above or 1.0 - below[-1] / target_of(below[-1]) <= MAX_PUNCTURED):
            mother = below[-1]
        else:
            mother = above[0]
    # a forced mother without a target efficiency is used as it is
    target = None if rate is not None and beta is None else target_of(mother)
    if target is not None and target > mother:
        target = min(target, mother / (1.0 - MAX_PUNCTURED))
    return adapt_code(mother, target, frame_bits=frame_bits, dimension=dimension,
                      max_iterations=max_iterations, family=family)


def params_message(params: ReconciliationParams) -> dict[str, float | int]:
    """The public ``code`` message announcing the adapted code (numbers only)."""
    return {"dimension": params.dimension, "max_iterations": params.max_iterations,
            "mother_rate": params.mother_rate, "code_length": params.code_length,
            "shortened": params.shortened, "punctured": params.punctured,
            "code_seed": params.code_seed, "code_family": params.code_family}


def params_from_message(payload: dict) -> ReconciliationParams:
    """Rebuild and validate the parameters announced by :func:`params_message`."""
    try:
        v = {k: np.asarray(payload[k]).item() for k in (
            "dimension", "max_iterations", "mother_rate", "code_length", "shortened",
            "punctured", "code_seed")}
    except KeyError as exc:
        raise ReconciliationError(f"code message lacks {exc.args[0]!r}") from None
    # announcements recorded before code families existed named the first ensemble
    v["code_family"] = np.asarray(payload.get("code_family", 0)).item()
    ints = {k: int(x) for k, x in v.items() if k != "mother_rate"}
    if any(ints[k] != v[k] for k in ints):
        raise ReconciliationError(f"code message: non-integer count in {v}")
    mother = float(v["mother_rate"])
    n, s, p, fam = (ints["code_length"], ints["shortened"], ints["punctured"],
                    ints["code_family"])
    try:
        ens = ensemble(mother, fam)
    except ValueError:
        ens = None
    if ens is None or n <= 0 or n % ens.base_n:
        raise ReconciliationError(f"code message: no mother code of rate {mother}, family "
                                  f"{fam} and length {n}")
    k = _dimension_k(mother, n, fam)
    if not (0 <= s < k and 0 <= p < n - s):
        raise ReconciliationError(f"code message: shortened={s}, punctured={p} out of range "
                                  f"for N={n}, K={k}")
    return ReconciliationParams(dimension=ints["dimension"], rate=effective_rate(k, n, s, p),
                                frame_bits=n - s - p, max_iterations=ints["max_iterations"],
                                mother_rate=mother, code_length=n, shortened=s,
                                code_seed=ints["code_seed"], punctured=p, code_family=fam)


def leakage_bits(params: ReconciliationParams) -> int:
    """Bits the public messages disclose about the key: the ``M - p`` syndrome bits sent."""
    return _code(params).m - params.punctured


def _values(v: np.ndarray, n: int, what: str) -> np.ndarray:
    a = np.asarray(v)
    if a.dtype.kind not in "fiu" or a.shape != (n,):
        raise ReconciliationError(f"{what}: expected {n} real values, got shape {a.shape} "
                                  f"dtype {a.dtype}")
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise ReconciliationError(f"{what}: holds NaN or infinite values")
    if not np.any(a):
        raise ReconciliationError(f"{what}: all values are zero")
    return a


class BobReconciler:
    """Bob's side of reverse reconciliation: his random bits become the key.

    Parameters
    ----------
    params : ReconciliationParams
        Agreed parameters.
    rng : numpy.random.Generator
        Source of the key bits; seed it from :mod:`secrets`.
    """

    def __init__(self, params: ReconciliationParams, rng: np.random.Generator) -> None:
        self.params = params
        self._rng = rng
        self._code = _code(params)

    def encode(self, y: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Draw one frame of key bits and the public message for Bob's values ``y``.

        Parameters
        ----------
        y : numpy.ndarray
            ``frame_bits`` real values (any scale; zero mean).

        Returns
        -------
        key_bits : numpy.ndarray
            uint8 ``(frame_bits,)``.
        message : dict
            ``maps`` float64 ``(frame_bits/d, d)``, ``norms`` float64 ``(frame_bits/d,)``,
            ``syndrome`` uint8 ``(N - K - p,)`` (the checks without a punctured node).
        """
        p = self.params
        yv = _values(y, p.frame_bits, "Bob's values")
        d = p.dimension
        bits = self._rng.integers(0, 2, p.frame_bits, dtype=np.uint8)
        try:
            maps, norms = multidim.bob_maps(yv.reshape(-1, d), multidim.bits_to_points(bits, d))
        except ValueError as exc:
            raise ReconciliationError(f"Bob's values: {exc}") from exc
        lay = _layout_of(p)
        word = np.zeros(p.code_length, dtype=np.uint8)   # shortened: 0, punctured: unsent
        word[lay.key] = bits
        syndrome = self._code.syndrome(word)[lay.sent_checks]
        return bits, {"maps": maps, "norms": norms, "syndrome": syndrome}


class AliceReconciler:
    """Alice's side: recovers Bob's key bits from her values and his public message.

    Parameters
    ----------
    params : ReconciliationParams
        Agreed parameters.
    """

    def __init__(self, params: ReconciliationParams) -> None:
        self.params = params
        self._code = _code(params)

    def llr(self, x: np.ndarray, message: dict[str, np.ndarray], snr: float) -> np.ndarray:
        """Channel LLRs of Bob's key bits from Alice's values ``x`` (see :mod:`.multidim`)."""
        p = self.params
        d = p.dimension
        xv = _values(x, p.frame_bits, "Alice's values")
        if not (math.isfinite(snr) and snr > 0.0):
            raise ReconciliationError(f"snr must be a positive finite number, got {snr!r}")
        maps, norms = self._check_message(message)
        xs = xv / math.sqrt(np.mean(xv * xv))
        sigma_y = math.sqrt(np.sum(norms * norms) / p.frame_bits)
        v = multidim.apply_maps(maps, xs.reshape(-1, d))
        rho = math.sqrt(snr / (1.0 + snr))
        amp = rho * norms / (sigma_y * math.sqrt(d))       # BIAWGN amplitude per block
        return (2.0 * (1.0 + snr) * amp[:, None] * v).ravel()

    def decode(self, x: np.ndarray, message: dict[str, np.ndarray],
               snr: float) -> tuple[np.ndarray | None, int]:
        """Decode one frame; returns (Bob's key bits, or None if not converged; iterations)."""
        bits, iters = self.decode_frames([x], [message], snr)
        return bits[0], int(iters[0])

    def decode_frames(self, xs: list[np.ndarray], messages: list[dict[str, np.ndarray]],
                      snr: float) -> tuple[list[np.ndarray | None], np.ndarray]:
        """Decode several frames concurrently (one decoder thread per core)."""
        if len(xs) != len(messages):
            raise ReconciliationError(f"{len(xs)} frames but {len(messages)} messages")
        p = self.params
        lay = _layout_of(p)
        pos = lay.key
        llr = np.zeros((len(xs), p.code_length))
        llr[:, lay.shortened] = _KNOWN_LLR
        # a punctured node's check (syndrome not sent) passes nothing to the core: its
        # syndrome bit only decides the punctured node's own hard decision
        syn = np.zeros((len(xs), self._code.m), dtype=np.uint8)
        for i, (x, msg) in enumerate(zip(xs, messages, strict=True)):
            llr[i, pos] = self.llr(x, msg, snr)
            syn[i, lay.sent_checks] = msg["syndrome"]
        res = decode(self._code, llr, syn, p.max_iterations)
        out: list[np.ndarray | None] = [
            res.bits[i, pos] if res.converged[i] else None for i in range(len(xs))]
        return out, res.iterations

    def _check_message(self, message: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        p = self.params
        blocks = p.frame_bits // p.dimension
        want = {"maps": (blocks, p.dimension), "norms": (blocks,),
                "syndrome": (self._code.m - p.punctured,)}
        for key, shape in want.items():
            if key not in message:
                raise ReconciliationError(f"reconciliation message lacks {key!r}")
            if np.shape(message[key]) != shape:
                raise ReconciliationError(f"reconciliation message {key!r}: expected shape "
                                          f"{shape}, got {np.shape(message[key])}")
        maps = np.asarray(message["maps"], dtype=np.float64)
        norms = np.asarray(message["norms"], dtype=np.float64)
        syn = np.asarray(message["syndrome"])
        if not (np.all(np.isfinite(maps)) and np.all(np.isfinite(norms)) and np.all(norms > 0)):
            raise ReconciliationError("reconciliation message: maps/norms not finite and positive")
        if not np.allclose(np.linalg.norm(maps, axis=1), 1.0, atol=1e-6):
            raise ReconciliationError("reconciliation message: maps are not unit elements")
        if syn.dtype.kind not in "iub" or np.any((syn != 0) & (syn != 1)):
            raise ReconciliationError("reconciliation message: syndrome must hold 0/1 values")
        return maps, norms
