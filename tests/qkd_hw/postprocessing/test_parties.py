"""Alice and Bob over the channel, with the test-only reconciler standing in for part A."""

from __future__ import annotations

import stat
from pathlib import Path

import h5py
import numpy as np
import pytest

from qkd_hw.postprocessing.channel import ClassicalChannel
from qkd_hw.postprocessing.keyfile import read_key_file
from qkd_hw.postprocessing.parties import (
    Alice,
    Bob,
    ProtocolError,
    ProtocolSettings,
    postprocess_raw_key,
    run_frames,
)
from qkd_hw.postprocessing.privacy import KeyLengthError
from qkd_hw.raw_key import read_raw_key
from tests.qkd_hw.postprocessing import toy_reconcile as toy
from tests.qkd_hw.postprocessing.helpers import make_raw_key


def _pair(x: np.ndarray, y: np.ndarray, frame_bits: int = 256, *, one_frame: bool = False):
    params = toy.choose_code(1.0, frame_bits=frame_bits)
    s = ProtocolSettings(frame_bits=frame_bits, leak_ec_bits=toy.leakage_bits(params))
    ch = ClassicalChannel()
    bob = Bob(ch.endpoint("bob", "alice"), y, s, toy.BobReconciler(params, None))
    dec = toy.OneFrameAliceReconciler if one_frame else toy.AliceReconciler
    alice = Alice(ch.endpoint("alice", "bob"), x, s, dec(params), 1.0)
    return ch, alice, bob


@pytest.mark.parametrize(("batch", "one_frame"), [(1, True), (3, False), (64, False)])
def test_frames_with_errors_are_dropped_and_the_transcript_holds_every_message(
        batch: int, one_frame: bool) -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(size=256 * 40)
    x = y + rng.normal(scale=0.02, size=y.shape)      # a few sign errors per frame
    ch, alice, bob = _pair(x, y, one_frame=one_frame)
    run_frames(alice, bob, batch=batch)
    assert alice.frames_kept == bob.frames_kept
    # ground truth: the frames whose decoded bits equal Bob's are exactly the kept ones
    dec = toy.OneFrameAliceReconciler(toy.choose_code(1.0, frame_bits=256))
    truth = []
    for f in range(40):
        xf, yf = x[f * 256:(f + 1) * 256], y[f * 256:(f + 1) * 256]
        bits, _ = dec.decode(xf, {"parity": toy.parity(toy.signs(yf), 8)}, 1.0)
        if bits is not None and np.array_equal(bits, toy.signs(yf)):
            truth.append(f)
    assert bob.frames_kept == truth and 0 < len(truth) < 40
    assert np.array_equal(alice.kept_bits(), bob.kept_bits())
    kinds = [m.kind for m in ch.recorder.messages]
    n_dec = sum(1 for m in ch.recorder.messages if m.kind == "decoded" and m.payload["ok"])
    assert kinds.count("reconciliation") == kinds.count("decoded") == 40
    assert kinds.count("verification") == kinds.count("verified") == n_dec
    assert ch.leaked_bits() == 40 * 32 + 64 * n_dec
    assert "bits" not in repr(bob) and "key" not in repr(alice)


def test_alice_refuses_a_length_bob_should_not_announce(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    y = rng.normal(size=256 * 4)
    _ch, alice, bob = _pair(y.copy(), y)
    run_frames(alice, bob)
    est = read_raw_key(make_raw_key(tmp_path / "r.h5", 100)).estimates
    alice.compute_secrecy(est, 10_000)
    bob.compute_secrecy(est, 10_000)
    object.__setattr__(bob.secrecy, "final_key_bits", bob.secrecy.final_key_bits + 1)
    bob.privacy_amplification()
    with pytest.raises(ProtocolError, match="announced"):
        alice.privacy_amplification()


def test_postprocess_raw_key_end_to_end(tmp_path: Path) -> None:
    raw = make_raw_key(tmp_path / "raw.h5", 40_000)
    res = postprocess_raw_key(str(raw), str(tmp_path / "KEY.h5"), str(tmp_path / "KEY.tr.h5"),
                              reconciliation=toy)
    assert res.frames == 2 * 40_000 // 1024 and 0 < res.frames_kept <= res.frames
    assert res.final_key_bits > 0 and res.keys_identical
    key = read_key_file(tmp_path / "KEY.h5")
    assert stat.S_IMODE((tmp_path / "KEY.h5").stat().st_mode) == 0o600
    assert key["alice"].shape == (res.final_key_bits,)
    assert np.array_equal(key["alice"], key["bob"])
    p = key["parameters"]
    for name in ("eps_pe", "eps_pa", "eps_bar", "eps_cor", "eps_total", "leak_ec_bits",
                 "leak_verification_bits", "chi_be_bits_per_symbol", "delta_n_bits_per_symbol",
                 "transmittance_min", "excess_noise_max_snu", "final_key_bits"):
        assert name in p
    assert p["leak_ec_bits"] == res.frames_kept * 128
    assert p["leak_verification_bits"] == res.frames_kept * 64
    with h5py.File(tmp_path / "KEY.tr.h5") as f:
        assert f.attrs["format"] == "qkd-transcript"
        msgs = f["messages"]
        kinds = [msgs[k].attrs["kind"] for k in sorted(msgs)]
        assert kinds.count("reconciliation") == res.frames
        assert kinds[-1] == "privacy_amplification"
        assert int(f.attrs["transcript_messages"]) == len(kinds)
    # the final key is uniform-looking and not Bob's raw bits
    assert 0.45 < key["bob"].mean() < 0.55


def test_nothing_written_when_the_run_fails(tmp_path: Path) -> None:
    # the frames run (transcript half written), then the key length cannot be computed
    raw = make_raw_key(tmp_path / "raw.h5", 5_000)
    with h5py.File(raw, "a") as f:
        del f["estimates"].attrs["transmittance_min"]
    with pytest.raises(KeyLengthError, match="transmittance_min"):
        postprocess_raw_key(str(raw), str(tmp_path / "K.h5"), str(tmp_path / "T.h5"),
                            reconciliation=toy)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw.h5"]
