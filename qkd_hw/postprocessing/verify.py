"""Verification of reconciled frames with a keyed 2-universal (Toeplitz) hash.

After reconciliation Bob draws a fresh hash key from :mod:`secrets` and sends it with his tag;
Alice hashes her decoded frame with the same key and the frame is kept only if the tags are
equal. The family ``h_S(x) = M_S x mod 2`` with the ``t x n`` Toeplitz matrix
``M_S[r, j] = S[j - r + t - 1]`` (``n + t - 1`` key bits) is 2-universal: for any fixed
nonzero difference ``d`` between the two frames, ``Pr_S[M_S d = 0] = 2^-t`` exactly, so a
frame that still holds errors passes with probability ``2^-t`` (the collision bound,
``eps_cor`` per verified frame). The hash key is drawn after the frame is fixed and is public;
the tag's ``t`` bits are counted as leakage.

The tag is computed in one pass: bit ``r`` is the parity of ``sum_j S[j + t - 1 - r] x[j]``,
the XOR over the set bits of ``x`` of the ``t``-bit windows of ``S`` at ``j``.
"""

from __future__ import annotations

import numba
import numpy as np

from qkd_hw.postprocessing.privacy import random_bits

__all__ = ["TAG_BITS", "collision_bound", "hash_key_length", "new_hash_key", "toeplitz_tag"]

#: allowed tag lengths (one or two 64-bit words)
TAG_BITS = (64, 128)


def hash_key_length(n_bits: int, tag_bits: int = 64) -> int:
    """Bits of the hash key for frames of ``n_bits``: ``n_bits + tag_bits - 1``."""
    _check_tag(tag_bits)
    return int(n_bits) + tag_bits - 1


def collision_bound(tag_bits: int = 64) -> float:
    """Probability that a frame with errors passes verification: ``2^-tag_bits``."""
    _check_tag(tag_bits)
    return 2.0 ** -tag_bits


def new_hash_key(n_bits: int, tag_bits: int = 64) -> np.ndarray:
    """A fresh uniformly random hash key (uint8 0/1) from the OS's CSPRNG."""
    return random_bits(hash_key_length(n_bits, tag_bits))


def _check_tag(tag_bits: int) -> None:
    if tag_bits not in TAG_BITS:
        raise ValueError(f"tag_bits must be one of {TAG_BITS}, got {tag_bits!r}")


@numba.njit(cache=True, nogil=True)
def _window_xor(bits: np.ndarray, key: np.ndarray, words: int) -> np.ndarray:
    """XOR over the set ``bits[j]`` of the windows ``key[j + 64 w : j + 64 (w + 1)]``.

    Window bit ``k`` of word ``w`` is ``key[j + 64 w + k]``; the windows slide one bit per
    ``j`` (shift right, new bit in at the top).
    """
    n = bits.shape[0]
    acc = np.zeros(words, np.uint64)
    win = np.zeros(words, np.uint64)
    for w in range(words):
        v = np.uint64(0)
        for k in range(64):
            v |= np.uint64(key[64 * w + k]) << np.uint64(k)
        win[w] = v
    for j in range(n):
        if bits[j]:
            for w in range(words):
                acc[w] ^= win[w]
        if j + 1 < n:
            for w in range(words):
                nxt = np.uint64(key[j + 64 * (w + 1)])
                win[w] = (win[w] >> np.uint64(1)) | (nxt << np.uint64(63))
    return acc


def toeplitz_tag(bits: np.ndarray, key: np.ndarray, tag_bits: int = 64) -> np.ndarray:
    """Tag ``M_S x mod 2`` (uint8 0/1, shape ``(tag_bits,)``) of the frame ``bits``.

    Parameters
    ----------
    bits : ndarray of uint8 (0/1), shape (n,)
    key : ndarray of uint8 (0/1), shape (n + tag_bits - 1,)
        The hash key ``S`` (public, drawn after the frame is fixed).
    tag_bits : {64, 128}
    """
    _check_tag(tag_bits)
    bits = np.ascontiguousarray(bits, dtype=np.uint8)
    key = np.ascontiguousarray(key, dtype=np.uint8)
    if bits.ndim != 1 or bits.shape[0] == 0:
        raise ValueError(f"frame must be a non-empty 1-D bit array, got shape {bits.shape}")
    if key.shape != (hash_key_length(bits.shape[0], tag_bits),):
        raise ValueError(f"hash key must have {hash_key_length(bits.shape[0], tag_bits)} bits "
                         f"for a {bits.shape[0]}-bit frame, got shape {key.shape}")
    acc = _window_xor(bits, key, tag_bits // 64)
    # window offset k of the XOR is tag row r = t - 1 - k
    offsets = np.unpackbits(acc.astype("<u8").view(np.uint8), bitorder="little")
    return offsets[::-1].copy()
