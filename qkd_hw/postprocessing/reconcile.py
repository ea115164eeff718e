"""Two-party reverse reconciliation: multidimensional maps + MET-LDPC syndrome decoding.

Bob (whose bits become the key) draws uniform key bits from a generator seeded from
``secrets``, turns each block of ``d`` values into a map (:mod:`.multidim`) and publishes the
maps, the block norms and the syndrome of his bits under a MET-LDPC mother code
(:mod:`.codes`). Alice maps her own values, derives the binary-input AWGN LLRs and decodes
(:mod:`.ldpc`).

Rate adaptation by shortening (Elkouss et al., arXiv:1006.2660; Wang et al., QIC 18, 0197
(2018)): ``s`` positions of the mother code of length ``N`` and dimension ``K`` carry a bit 0
known to both sides, so the ``N - s`` remaining positions carry the key at rate
``(K - s)/(N - s)``. The positions are a seeded pseudo-random subset, public like the code.
Only the ``N - K`` syndrome bits are disclosed about the key (:func:`leakage_bits`); maps and
norms are independent of the key bits (see :mod:`.multidim`).

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
from qkd_hw.postprocessing.codes import ENSEMBLES, LdpcCode, get_code
from qkd_hw.postprocessing.ldpc import decode

__all__ = ["AliceReconciler", "BobReconciler", "ReconciliationParams", "capacity",
           "choose_code", "leakage_bits"]

#: default mother-code lengths (multiples of the base graphs and of 8)
DEFAULT_LENGTH = {0.1: 100_000, 0.05: 160_000, 0.02: 1_000_000}
#: efficiency targeted by choose_code: the highest measured point with FER <= 0.1 of each
#: mother code at its default length (benchmarks/reconciliation.md)
DESIGN_BETA = {0.1: 0.90, 0.05: 0.90, 0.02: 0.94}
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
        Net key rate of the shortened code, ``(K - s)/(N - s)``.
    frame_bits : int
        Real values per frame, equal to the key bits per frame (``N - s``).
    max_iterations : int
        Decoder iteration cap.
    mother_rate : float
        Design rate of the mother MET-LDPC code (0.1, 0.05 or 0.02).
    code_length : int
        Mother code length ``N``.
    shortened : int
        Shortened (known) positions ``s``.
    code_seed : int
        Seed of the code construction and of the shortened positions.
    """

    dimension: int
    rate: float
    frame_bits: int
    max_iterations: int
    mother_rate: float = 0.1
    code_length: int = 100_000
    shortened: int = 0
    code_seed: int = CODE_SEED

    def __post_init__(self) -> None:
        if self.dimension not in multidim.DIMENSIONS:
            raise ReconciliationError(f"dimension must be one of {multidim.DIMENSIONS}, "
                                      f"got {self.dimension}")
        if self.mother_rate not in ENSEMBLES:
            raise ReconciliationError(f"mother_rate must be one of {sorted(ENSEMBLES)}, "
                                      f"got {self.mother_rate}")
        if self.code_length % ENSEMBLES[self.mother_rate].base_n:
            raise ReconciliationError(f"code_length {self.code_length} is not a multiple of "
                                      f"{ENSEMBLES[self.mother_rate].base_n}")
        if not 0 <= self.shortened < self.code_length * self.mother_rate:
            raise ReconciliationError(f"shortened={self.shortened} out of range")
        if self.frame_bits != self.code_length - self.shortened:
            raise ReconciliationError(f"frame_bits={self.frame_bits} must equal code_length - "
                                      f"shortened = {self.code_length - self.shortened}")
        if self.frame_bits % self.dimension:
            raise ReconciliationError(f"frame_bits={self.frame_bits} is not a multiple of the "
                                      f"dimension {self.dimension}")
        if self.max_iterations < 1:
            raise ReconciliationError(f"max_iterations must be >= 1, got {self.max_iterations}")


def _code(params: ReconciliationParams) -> LdpcCode:
    return get_code(params.mother_rate, params.code_length, params.code_seed)


@lru_cache(maxsize=8)
def _positions(code: LdpcCode, shortened: int, seed: int) -> np.ndarray:
    """Indices of the key (non-shortened) positions, sorted.

    The shortened positions are drawn among the high-degree (core) variable nodes first:
    a known core bit helps every check it touches, a known degree-one bit only its own.
    """
    rng = np.random.default_rng([seed, code.n, shortened])
    degree = np.bincount(code.check_var, minlength=code.n)
    core = np.flatnonzero(degree > 1)
    rest = np.flatnonzero(degree <= 1)
    pick = np.concatenate([rng.permutation(core), rng.permutation(rest)])[:shortened]
    mask = np.ones(code.n, dtype=bool)
    mask[pick] = False
    out = np.flatnonzero(mask)
    out.setflags(write=False)
    return out


def _key_positions(params: ReconciliationParams) -> np.ndarray:
    return _positions(_code(params), params.shortened, params.code_seed)


def choose_code(snr: float, *, frame_bits: int | None = None, dimension: int = 8,
                max_iterations: int = 500) -> ReconciliationParams:
    """Pick the mother code and shortening for an SNR (per real dimension).

    The target rate is ``DESIGN_BETA * C(snr)``; the mother code is the lowest-rate one whose
    rate is at least the target, shortened down to it. Above the highest mother rate the
    rate-0.1 code is used unshortened (efficiency below the design value). Shortened codes do
    worse than their mother at the same beta (benchmarks/reconciliation.md, measured on the
    previous codes: FER 0.95 at beta 0.87, 0.25 at 0.78, rate 0.1 shortened at -9 dB; not yet
    re-measured on the current ones): between the mother rates expect more failed frames.

    Parameters
    ----------
    snr : float
        Signal-to-noise ratio per real dimension (linear), 1e-3 to 10.
    frame_bits : int, optional
        Mother code length ``N`` (a multiple of the ensemble's base graph); default
        :data:`DEFAULT_LENGTH`. The key bits per frame are ``N`` minus the shortened ones.
    dimension : int
        Multidimensional block size.
    max_iterations : int
        Decoder iteration cap.

    Returns
    -------
    ReconciliationParams
    """
    if not (isinstance(snr, float | int) and math.isfinite(snr) and 1e-3 <= snr <= 10.0):
        raise ReconciliationError(f"snr must be a finite number in [1e-3, 10], got {snr!r}")
    c = capacity(float(snr))
    fitting = [r for r in sorted(ENSEMBLES) if r >= DESIGN_BETA[r] * c]
    mother = fitting[0] if fitting else max(ENSEMBLES)
    target = min(DESIGN_BETA[mother] * c, mother)
    n = DEFAULT_LENGTH[mother] if frame_bits is None else int(frame_bits)
    if n <= 0 or n % ENSEMBLES[mother].base_n or n % dimension:
        raise ReconciliationError(f"frame_bits={frame_bits} must be a positive multiple of "
                                  f"{ENSEMBLES[mother].base_n} and of {dimension} for the "
                                  f"rate-{mother} code")
    k = n - ENSEMBLES[mother].base_m * (n // ENSEMBLES[mother].base_n)
    s = max(0, math.ceil((k - target * n) / (1.0 - target)))
    s += (n - s) % dimension            # key length a multiple of the block size
    return ReconciliationParams(dimension=dimension, rate=(k - s) / (n - s), frame_bits=n - s,
                                max_iterations=max_iterations, mother_rate=mother,
                                code_length=n, shortened=s)


def leakage_bits(params: ReconciliationParams) -> int:
    """Bits the public messages disclose about the key: the syndrome length ``N - K``."""
    return _code(params).m


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
            ``syndrome`` uint8 ``(N - K,)``.
        """
        p = self.params
        yv = _values(y, p.frame_bits, "Bob's values")
        d = p.dimension
        bits = self._rng.integers(0, 2, p.frame_bits, dtype=np.uint8)
        try:
            maps, norms = multidim.bob_maps(yv.reshape(-1, d), multidim.bits_to_points(bits, d))
        except ValueError as exc:
            raise ReconciliationError(f"Bob's values: {exc}") from exc
        word = np.zeros(p.code_length, dtype=np.uint8)
        word[_key_positions(p)] = bits
        return bits, {"maps": maps, "norms": norms, "syndrome": self._code.syndrome(word)}


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
        pos = _key_positions(p)
        llr = np.full((len(xs), p.code_length), _KNOWN_LLR)
        syn = np.empty((len(xs), self._code.m), dtype=np.uint8)
        for i, (x, msg) in enumerate(zip(xs, messages, strict=True)):
            llr[i, pos] = self.llr(x, msg, snr)
            syn[i] = msg["syndrome"]
        res = decode(self._code, llr, syn, p.max_iterations)
        out: list[np.ndarray | None] = [
            res.bits[i, pos] if res.converged[i] else None for i in range(len(xs))]
        return out, res.iterations

    def _check_message(self, message: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        p = self.params
        blocks = p.frame_bits // p.dimension
        want = {"maps": (blocks, p.dimension), "norms": (blocks,), "syndrome": (self._code.m,)}
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
