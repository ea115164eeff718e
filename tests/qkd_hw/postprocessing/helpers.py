"""Synthetic raw-key files with Alice's symbols (both parties on one host)."""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np

from qkd_hw.raw_key import RawKey, write_raw_key


def make_raw_key(path: Path, n: int, *, va: float = 1e4, T: float = 1.0, xi: float = 0.0,
                 vel: float = 0.01, eta: float = 1.0, seed: int = 0, n_pe: int = 1000,
                 alice: bool = True) -> Path:
    """Heterodyne channel ``y = t x + z`` (conventions.md), estimates at the true values.

    The PE bounds are written equal to the truth: these files test the post-processing,
    not the estimator.
    """
    rng = np.random.default_rng(seed)
    t = math.sqrt(eta * T / 2)
    sigma2 = 1 + vel + t * t * xi
    x = (rng.normal(0, math.sqrt(va), n) + 1j * rng.normal(0, math.sqrt(va), n))
    y = t * x + rng.normal(0, math.sqrt(sigma2), n) + 1j * rng.normal(0, math.sqrt(sigma2), n)
    est = {"transmittance": T, "transmittance_min": T, "excess_noise_snu": xi,
           "excess_noise_max_snu": xi, "electronic_noise_snu": vel, "t_eff": t,
           "snr": t * t * va / sigma2, "key_rate_bits_per_symbol": 0.0, "efficiency": eta,
           "modulation_variance_snu": va, "n_pe": 2 * n_pe, "eps_pe": 1e-10}
    write_raw_key(path, RawKey(estimates=est, bob_symbols=y.astype(np.complex64),
                               bob_tx_index=np.arange(n, dtype=np.int64) + n_pe,
                               pe_tx_index=np.arange(n_pe, dtype=np.int64)))
    if alice:
        with h5py.File(path, "a") as f:
            f.create_dataset("alice/symbols", data=x.astype(np.complex64))
    return path
