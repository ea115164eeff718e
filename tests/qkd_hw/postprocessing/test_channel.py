"""Classical channel: every message in the transcript, in order, with its leakage."""

from __future__ import annotations

import numpy as np
import pytest

from qkd_hw.postprocessing.channel import ChannelError, ClassicalChannel, MemoryTranscript


def test_transcript_records_every_message_in_order() -> None:
    ch = ClassicalChannel()
    alice, bob = ch.endpoint("alice", "bob"), ch.endpoint("bob", "alice")
    syn = np.array([1, 0, 1, 1], np.uint8)
    bob.send("syndrome", {"bits": syn}, frame=0, leaked_bits=4)
    alice.send("ok", {"ok": True}, frame=0)
    bob.send("seed", {"seed": np.arange(3)}, leaked_bits=0)
    assert alice.receive("syndrome", frame=0).payload["bits"].tolist() == [1, 0, 1, 1]
    assert bob.receive("ok", frame=0).payload["ok"].item() is True
    assert alice.receive("seed").payload["seed"].tolist() == [0, 1, 2]
    rec = ch.recorder
    assert isinstance(rec, MemoryTranscript)
    assert [(m.seq, m.sender, m.receiver, m.kind, m.frame) for m in rec.messages] == [
        (0, "bob", "alice", "syndrome", 0), (1, "alice", "bob", "ok", 0),
        (2, "bob", "alice", "seed", -1)]
    assert [e.kind for e in ch.ledger] == ["syndrome", "ok", "seed"]
    assert ch.leaked_bits() == 4
    assert ch.leaked_bits(frames=[1]) == 0 and ch.leaked_bits(frames=[0]) == 4


def test_payload_is_a_copy_and_read_only() -> None:
    ch = ClassicalChannel()
    alice, bob = ch.endpoint("alice", "bob"), ch.endpoint("bob", "alice")
    data = np.zeros(4)
    bob.send("x", {"v": data})
    data[:] = 7  # the sender changes its array afterwards: the message does not change
    got = alice.receive("x").payload["v"]
    assert got.tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError):
        got[0] = 1


def test_unexpected_or_missing_message_is_an_error() -> None:
    ch = ClassicalChannel()
    alice, bob = ch.endpoint("alice", "bob"), ch.endpoint("bob", "alice")
    with pytest.raises(ChannelError, match="no message waiting"):
        alice.receive("syndrome", frame=0)
    bob.send("syndrome", {"s": [1]}, frame=1)
    with pytest.raises(ChannelError, match="expected 'syndrome' for frame 0"):
        alice.receive("syndrome", frame=0)
    with pytest.raises(ChannelError, match="dtype"):
        bob.send("text", {"s": "a string"})
