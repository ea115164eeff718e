"""Test-only reconciler with part A's interface (qkd_hw.postprocessing.reconcile).

Honest but weak: Bob's key bits are the signs of his values, the public message is the parity
of each block of ``BLOCK`` bits (leakage: one bit per block); Alice takes her signs and, in a
block whose parity differs, flips her least reliable bit (smallest |x|). Two errors in a block
go through, so verification has real work. A frame with more than a quarter of its blocks in
error is reported as not converged. Works on high-SNR data only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BLOCK = 8


@dataclass(frozen=True)
class ReconciliationParams:
    dimension: int = 1
    rate: float = 1 - 1 / BLOCK
    frame_bits: int = 1024
    max_iterations: int = 1


def choose_code(snr: float, *, frame_bits: int | None = None) -> ReconciliationParams:
    return ReconciliationParams(frame_bits=frame_bits or 1024)


def leakage_bits(params: ReconciliationParams) -> int:
    return params.frame_bits // BLOCK


def _signs(v: np.ndarray) -> np.ndarray:
    return (np.asarray(v) < 0).astype(np.uint8)


def _parity(bits: np.ndarray) -> np.ndarray:
    return (bits.reshape(-1, BLOCK).sum(axis=1) & 1).astype(np.uint8)


class BobReconciler:
    def __init__(self, params: ReconciliationParams, rng: np.random.Generator) -> None:
        self.params = params

    def encode(self, y: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        bits = _signs(y)
        return bits, {"parity": _parity(bits)}


class AliceReconciler:
    def __init__(self, params: ReconciliationParams) -> None:
        self.params = params

    def decode(self, x: np.ndarray, message: dict[str, np.ndarray],
               snr: float) -> tuple[np.ndarray | None, int]:
        bits = _signs(x)
        wrong = np.flatnonzero(_parity(bits) != message["parity"])
        if wrong.size > bits.shape[0] // BLOCK // 4:
            return None, 1
        mags = np.abs(np.asarray(x)).reshape(-1, BLOCK)
        flip = wrong * BLOCK + np.argmin(mags[wrong], axis=1)
        bits[flip] ^= 1
        return bits, 1
