"""Rate adaptation of the mother codes: shortening, puncturing, the announced code, leakage."""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import pytest

from qkd_hw.errors import ReconciliationError
from qkd_hw.postprocessing import reconcile
from qkd_hw.postprocessing.channel import ClassicalChannel
from qkd_hw.postprocessing.codes import get_code
from qkd_hw.postprocessing.parties import (
    Alice,
    Bob,
    ProtocolSettings,
    agree_code,
    postprocess_raw_key,
    run_frames,
)
from qkd_hw.postprocessing.reconcile import (
    AliceReconciler,
    BobReconciler,
    ReconciliationParams,
    adapt_code,
    capacity,
    choose_code,
    leakage_bits,
    params_from_message,
    params_message,
)
from tests.qkd_hw.postprocessing.helpers import make_raw_key

# rate-0.1 mother of 8000 bits: K = 800 information positions, M = 7200 checks
N, K, M = 8000, 800, 7200


def _frames(rng, n, snr, frames=1, va=5.0, t=0.4):
    """Alice's x ~ N(0, va), Bob's y = t x + z with t^2 va / Var(z) = snr."""
    x = rng.normal(size=n * frames) * math.sqrt(va)
    return x, t * x + rng.normal(size=x.size) * math.sqrt(t * t * va / snr)


def test_effective_rate_by_hand():
    # shortening to 0.05: s = ceil((800 - 400) / 0.95) = 422, raised to 424 so that
    # N - s = 7576 is a multiple of 8
    p = adapt_code(0.1, 0.05, frame_bits=N)
    assert (p.shortened, p.punctured, p.frame_bits) == (424, 0, 7576)
    assert p.rate == (800 - 424) / (8000 - 424)
    # puncturing to 0.15: p = floor(8000 - 800 / 0.15) = 2666, lowered to 2664 (N - p = 5336)
    q = adapt_code(0.1, 0.15, frame_bits=N)
    assert (q.shortened, q.punctured, q.frame_bits) == (0, 2664, 5336)
    assert q.rate == 800 / 5336 and q.rate <= 0.15
    # both: (K - s) / (N - s - p); a count that does not match the rate is refused
    r = ReconciliationParams(dimension=8, rate=(800 - 100) / (8000 - 100 - 500),
                             frame_bits=7400, max_iterations=10, mother_rate=0.1,
                             code_length=N, shortened=100, punctured=500)
    assert r.rate == pytest.approx(700 / 7400)
    with pytest.raises(ReconciliationError, match="is not"):
        ReconciliationParams(dimension=8, rate=0.1, frame_bits=7400, max_iterations=10,
                             mother_rate=0.1, code_length=N, shortened=100, punctured=500)
    # net key per frame = key bits - syndrome bits sent = K - s
    for pr in (p, q, r):
        assert pr.frame_bits - leakage_bits(pr) == K - pr.shortened


def test_choose_code_adapts_to_the_target_efficiency():
    snr = 10 ** (-9.5 / 10)          # between the rate-0.1 and rate-0.05 anchors
    c = capacity(snr)
    # the rate-0.05 mother punctured up by 23 % (<= MAX_PUNCTURED) rather than rate 0.1
    # shortened down
    p = choose_code(snr, beta=0.85)
    assert (p.mother_rate, p.shortened) == (0.05, 0)
    assert p.punctured == 37304 and 0.85 - 0.001 < p.rate / c <= 0.85
    f = reconcile.MAX_PUNCTURED
    assert 1 - 0.05 / (0.85 * c) <= f
    assert choose_code(snr, rate=0.1).shortened == 0               # forced mother, as it is
    down = choose_code(snr, rate=0.1, beta=0.85)                   # forced mother, shortened
    assert down.shortened > 0 and down.punctured == 0
    assert 0.85 - 0.001 < down.rate / c <= 0.85
    # at -12 dB the rate-0.02 mother would need 47 % punctured: rate 0.05 shortened
    q = choose_code(10 ** (-12 / 10), beta=0.85)
    assert (q.mother_rate, q.punctured) == (0.05, 0) and q.shortened > 0
    # far above the highest mother: punctured by MAX_PUNCTURED, beta below the target
    high = choose_code(1.0, beta=0.9)
    assert (high.mother_rate, high.punctured) == (0.1, round(f * high.code_length))
    assert high.rate / capacity(1.0) < 0.9
    with pytest.raises(ReconciliationError, match=r"no mother code of rate 0\.3"):
        choose_code(snr, rate=0.3)
    with pytest.raises(ReconciliationError, match="beta"):
        choose_code(snr, beta=1.5)


def test_shortened_bits_act_as_known():
    """At this SNR the rate-0.1 mother is above capacity (beta 1.1) and cannot decode; with
    ~460 positions shortened to rate 0.045 (beta 0.5) it decodes, which it could not if the
    shortened bits were not used as known (the rate would be 800/7540 > capacity)."""
    snr = 2 ** (2 * 0.1 / 1.1) - 1
    rng = np.random.default_rng(5)
    mother = choose_code(snr, frame_bits=N, rate=0.1, max_iterations=50)
    x, y = _frames(rng, N, snr)
    _, msg = BobReconciler(mother, np.random.default_rng(6)).encode(y)
    assert AliceReconciler(mother).decode(x, msg, snr)[0] is None
    short = adapt_code(0.1, 0.045, frame_bits=N)
    assert short.rate / capacity(snr) < 0.5 and K / (N - short.shortened) > capacity(snr)
    x, y = _frames(rng, short.frame_bits, snr)
    key, msg = BobReconciler(short, np.random.default_rng(7)).encode(y)
    bits, _ = AliceReconciler(short).decode(x, msg, snr)
    np.testing.assert_array_equal(bits, key)


def _syndrome_by_hand(code, word):
    """H word from the check lists, one check at a time."""
    return np.array([int(word[code.check_var[code.check_ptr[c]:code.check_ptr[c + 1]]].sum())
                     & 1 for c in range(code.m)], dtype=np.uint8)


@pytest.mark.parametrize("target", [0.06, 0.15])
def test_adapted_parties_end_with_identical_bits_and_count_the_syndrome(target):
    snr = 0.3                          # beta of the adapted code 0.32 / 0.79: comfortable
    params = adapt_code(0.1, target, frame_bits=N, max_iterations=200)
    s, p = params.shortened, params.punctured
    assert (s > 0) == (target < 0.1) and (p > 0) == (target > 0.1)
    rng = np.random.default_rng(21)
    x, y = _frames(rng, params.frame_bits, snr, frames=3)
    ch = ClassicalChannel()
    b_ep, a_ep = ch.endpoint("bob", "alice"), ch.endpoint("alice", "bob")
    a_params = agree_code(reconcile, params, b_ep, a_ep)
    assert a_params == params
    settings = ProtocolSettings(frame_bits=params.frame_bits, leak_ec_bits=leakage_bits(params))
    bob = Bob(b_ep, y, settings, BobReconciler(params, np.random.default_rng(22)))
    alice = Alice(a_ep, x, settings, AliceReconciler(a_params), snr)
    run_frames(alice, bob, batch=3)
    assert bob.frames_kept == alice.frames_kept == [0, 1, 2]
    np.testing.assert_array_equal(alice.kept_bits(), bob.kept_bits())
    # the transcript: the code message (counts, no key information), then per frame a
    # syndrome of M - p bits (the p checks of punctured nodes are not sent), leaked as such
    msgs = ch.recorder.messages
    assert msgs[0].kind == "code" and msgs[0].leaked_bits == 0
    assert int(msgs[0].payload["shortened"]) == s and int(msgs[0].payload["punctured"]) == p
    recs = [m for m in msgs if m.kind == "reconciliation"]
    assert len(recs) == 3
    for m in recs:
        assert m.payload["syndrome"].shape == (M - p,)
        assert m.leaked_bits == M - p
    assert ch.leaked_bits() == 3 * (M - p) + 3 * settings.tag_bits
    # the syndrome sent is Bob's word (key bits, zeros at the shortened positions) under the
    # checks that hold no punctured position
    code = get_code(0.1, N, params.code_seed)
    lay = reconcile._layout_of(params)
    word = np.zeros(N, dtype=np.uint8)
    word[lay.key] = bob.kept_bits()[:params.frame_bits]
    full = _syndrome_by_hand(code, word)
    has_punct = np.zeros(code.m, dtype=bool)
    for c in range(code.m):
        has_punct[c] = np.isin(code.check_var[code.check_ptr[c]:code.check_ptr[c + 1]],
                               lay.punctured).any()
    assert has_punct.sum() == p
    np.testing.assert_array_equal(recs[0].payload["syndrome"], full[~has_punct])


def test_punctured_positions_are_degree_one_on_distinct_checks():
    params = adapt_code(0.1, 0.2, frame_bits=N)
    code = get_code(0.1, N, params.code_seed)
    lay = reconcile._layout_of(params)
    degree = np.bincount(code.check_var, minlength=N)
    assert lay.punctured.size == params.punctured and np.all(degree[lay.punctured] == 1)
    check_of_edge = np.repeat(np.arange(code.m), np.diff(code.check_ptr))
    checks = check_of_edge[np.isin(code.check_var, lay.punctured)]
    assert np.unique(checks).size == params.punctured
    parts = np.concatenate([lay.key, lay.shortened, lay.punctured])
    assert np.array_equal(np.sort(parts), np.arange(N))
    with pytest.raises(ReconciliationError, match="puncturable"):
        reconcile._layout(code, 0, N - 10, params.code_seed)


def test_code_message_is_validated():
    params = adapt_code(0.1, 0.06, frame_bits=N)
    msg = params_message(params)
    assert params_from_message(msg) == params
    with pytest.raises(ReconciliationError, match="out of range"):
        params_from_message(dict(msg, shortened=K))
    with pytest.raises(ReconciliationError, match="lacks 'punctured'"):
        params_from_message({k: v for k, v in msg.items() if k != "punctured"})
    with pytest.raises(ReconciliationError, match="non-integer"):
        params_from_message(dict(msg, shortened=1.5))


def test_code_family_is_announced_and_old_announcements_name_family_0():
    from qkd_hw.postprocessing.codes import FAMILIES

    assert len(FAMILIES[0.1]) >= 2
    for fam in range(len(FAMILIES[0.1])):
        params = adapt_code(0.1, 0.06, frame_bits=N, family=fam)
        msg = params_message(params)
        assert msg["code_family"] == fam
        back = params_from_message(msg)
        assert back == params
        assert reconcile._code(back).name.startswith(FAMILIES[0.1][fam].name + "-n")
    # announcements recorded before families existed carry no code_family: the first ensemble
    old = {k: v for k, v in params_message(adapt_code(0.1, 0.06, frame_bits=N, family=1)).items()
           if k != "code_family"}
    assert params_from_message(old).code_family == 0
    name = reconcile._code(params_from_message(old)).name
    assert name == f"met-r0.10-n{N}-s{reconcile.CODE_SEED}"
    with pytest.raises(ReconciliationError, match="family"):
        params_from_message(dict(msg, code_family=len(FAMILIES[0.1])))
    with pytest.raises(ReconciliationError, match="family"):
        adapt_code(0.1, 0.06, frame_bits=N, family=-1)


def test_postprocess_reports_the_adapted_code(tmp_path: Path) -> None:
    # snr ~0.79 per quadrature; the rate-0.1 code punctured to beta 0.33 (rate ~0.139, 28 %)
    raw = make_raw_key(tmp_path / "raw.h5", 8_000, va=5.0, T=0.5, xi=0.01, vel=0.1, eta=0.7)
    res = postprocess_raw_key(str(raw), str(tmp_path / "K.h5"), str(tmp_path / "T.h5"),
                              frame_bits=N, rate=0.1, target_beta=0.33)
    par = res.parameters
    c = capacity(par["snr"])
    p_hand = math.floor(N - K / (0.33 * c))
    p_hand -= -(N - p_hand) % 8          # the key length N - p a multiple of 8
    assert (par["mother_rate"], par["code_length"], par["shortened"]) == (0.1, N, 0)
    assert par["punctured"] == p_hand
    assert par["code_rate"] == K / (N - p_hand) == pytest.approx(res.beta * c)
    assert res.frames == 2 * 8_000 // (N - p_hand) and res.keys_identical
    assert par["leak_ec_bits"] == res.frames_kept * (M - p_hand)
    with h5py.File(tmp_path / "T.h5") as f:
        first = f["messages"]["00000000"]
        assert first.attrs["kind"] == "code" and first.attrs["leaked_bits"] == 0
        assert int(first["punctured"][()]) == p_hand
