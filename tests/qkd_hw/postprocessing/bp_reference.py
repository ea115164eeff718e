"""Naive numpy reference decoders for the LDPC tests (flooding sum-product, brute force)."""

from __future__ import annotations

import itertools

import numpy as np


def flooding_sum_product(check_ptr, check_var, llr, syndrome, max_iter):
    """Textbook flooding sum-product syndrome decoder; returns (bits, iterations or -1, post)."""
    m = syndrome.size
    edge_check = np.repeat(np.arange(m), np.diff(check_ptr))
    r = np.zeros(check_var.size)
    sign = np.where(syndrome[edge_check] == 1, -1.0, 1.0)
    post = llr.copy()
    for it in range(1, max_iter + 1):
        q = post[check_var] - r
        t = np.tanh(q / 2.0)
        for c in range(m):
            sl = slice(check_ptr[c], check_ptr[c + 1])
            tc = t[sl]
            for k in range(tc.size):
                p = sign[check_ptr[c]] * np.prod(np.delete(tc, k))
                r[check_ptr[c] + k] = 2.0 * np.arctanh(np.clip(p, -1 + 1e-12, 1 - 1e-12))
        post = llr + np.bincount(check_var, weights=r, minlength=llr.size)
        bits = (post < 0).astype(np.uint8)
        synd = np.bitwise_xor.reduceat(bits[check_var], check_ptr[:-1])
        if np.array_equal(synd, syndrome):
            return bits, it, post
    return (post < 0).astype(np.uint8), -1, post


def brute_force_posterior(check_ptr, check_var, llr, syndrome):
    """Exact a-posteriori LLRs by enumerating every word with the given syndrome."""
    n = llr.size
    num = np.zeros(n)
    den = np.zeros(n)
    for word in itertools.product((0, 1), repeat=n):
        b = np.array(word, dtype=np.uint8)
        if not np.array_equal(np.bitwise_xor.reduceat(b[check_var], check_ptr[:-1]), syndrome):
            continue
        w = np.exp(-np.sum(b * llr))     # P(b) ∝ exp(-sum b_v LLR_v)
        num += w * (b == 0)
        den += w * (b == 1)
    return np.log(num / den)


def exact_check_messages(q, sign):
    """Sum-product check-to-variable messages ``sign * 2 atanh(prod_{j != k} tanh(q_j/2))``."""
    t = np.tanh(q / 2.0)
    out = np.empty_like(q)
    for k in range(q.size):
        out[k] = sign * 2.0 * np.arctanh(np.clip(np.prod(np.delete(t, k)), -1 + 1e-15,
                                                 1 - 1e-15))
    return out


def min_sum_check_messages(q, sign, scale, offset):
    """Min-sum messages: ``sign prod sgn(q_j) max(scale min |q_j| - offset, 0)`` over
    ``j != k``."""
    out = np.empty_like(q)
    for k in range(q.size):
        rest = np.delete(q, k)
        out[k] = sign * np.prod(np.sign(rest)) * max(scale * np.abs(rest).min() - offset, 0.0)
    return out


def layered_reference(check_ptr, check_var, llr, syndrome, iterations, messages):
    """Row-layered BP, textbook loops in float64: the posteriors after ``iterations``.

    ``messages(q, sign)`` gives a check's outgoing messages from its incoming ones ``q`` and
    the syndrome sign ``(-1)^s_c``.
    """
    post = np.asarray(llr, dtype=np.float64).copy()
    r = np.zeros(check_var.size)
    for _ in range(iterations):
        for c in range(syndrome.size):
            sl = slice(check_ptr[c], check_ptr[c + 1])
            v = check_var[sl]
            q = post[v] - r[sl]
            r[sl] = messages(q, -1.0 if syndrome[c] else 1.0)
            post[v] = q + r[sl]
    return post
