"""Exceptions of the DSP package (``dsp`` imports nothing of ``qkd_hw``; the host converts)."""

from __future__ import annotations

__all__ = ["DspLockError"]


class DspLockError(RuntimeError):
    """The receiver could not lock: pilot not found or synchronisation failed.

    ``metrics`` holds the lock metrics (pilot SNR, correlation peak-to-side-lobe ratio,
    thresholds, ...) so the caller can report why, never a number from an unlocked receiver.
    ``reason`` is the message without the metrics (to re-raise with more metrics).
    """

    def __init__(self, message: str, metrics: dict[str, float] | None = None) -> None:
        self.reason = message
        self.metrics = dict(metrics or {})
        detail = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in self.metrics.items())
        super().__init__(f"{message} ({detail})" if detail else message)
