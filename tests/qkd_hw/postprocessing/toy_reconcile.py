"""Test-only reconciler with part A's interface (qkd_hw.postprocessing.reconcile).

Honest but weak: Bob's key bits are the signs of his values, the public message is the parity
of each block of ``params.block`` bits (leakage: one bit per block); Alice takes her signs and,
in a block whose parity differs, flips her least reliable bit (smallest |x|). Two errors in a
block go through, so verification has real work. A frame with more than a quarter of its
blocks in error is reported as not converged. Works on high-SNR data only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ReconciliationParams:
    dimension: int = 1
    rate: float = 1 - 1 / 8
    frame_bits: int = 1024
    max_iterations: int = 1
    block: int = 8


def choose_code(snr: float, *, frame_bits: int | None = None,
                rate: float | None = None) -> ReconciliationParams:
    block = 8 if rate is None else round(1 / (1 - rate))
    return ReconciliationParams(rate=1 - 1 / block, frame_bits=frame_bits or 1024, block=block)


def leakage_bits(params: ReconciliationParams) -> int:
    return params.frame_bits // params.block


def signs(v: np.ndarray) -> np.ndarray:
    return (np.asarray(v) < 0).astype(np.uint8)


def parity(bits: np.ndarray, block: int) -> np.ndarray:
    return (bits.reshape(-1, block).sum(axis=1) & 1).astype(np.uint8)


class BobReconciler:
    def __init__(self, params: ReconciliationParams, rng: np.random.Generator | None) -> None:
        self.params = params

    def encode(self, y: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        bits = signs(y)
        return bits, {"parity": parity(bits, self.params.block)}


class OneFrameAliceReconciler:
    """Decodes one frame per call (the interface's minimum)."""

    def __init__(self, params: ReconciliationParams) -> None:
        self.params = params

    def decode(self, x: np.ndarray, message: dict[str, np.ndarray],
               snr: float) -> tuple[np.ndarray | None, int]:
        b = self.params.block
        bits = signs(x)
        wrong = np.flatnonzero(parity(bits, b) != message["parity"])
        if wrong.size > bits.shape[0] // b // 4:
            return None, 1
        mags = np.abs(np.asarray(x)).reshape(-1, b)
        bits[wrong * b + np.argmin(mags[wrong], axis=1)] ^= 1
        return bits, 1


class AliceReconciler(OneFrameAliceReconciler):
    """With part A's ``decode_frames`` (several frames per call)."""

    def decode_frames(self, xs: list[np.ndarray], messages: list[dict[str, np.ndarray]],
                      snr: float) -> tuple[list[np.ndarray | None], np.ndarray]:
        done = [self.decode(x, m, snr) for x, m in zip(xs, messages, strict=True)]
        return [b for b, _ in done], np.array([i for _, i in done])
