"""Authenticated classical channel between Alice and Bob, and its public transcript.

The parties talk only through :class:`Endpoint` objects of one :class:`ClassicalChannel`.
This version is an in-process queue per receiver; a network transport replaces the queues
and keeps the interface (``send`` / ``receive`` of named messages whose payloads are plain
numeric arrays), so splitting the parties across machines does not change them.

Everything sent is public: each message is numbered and handed to the channel's recorder
(the transcript, what an eavesdropper sees) before it is delivered, and the sender declares
how many bits of it are information about the key (``leaked_bits``: a syndrome's length, a
verification tag; 0 for a public random seed or a yes/no decision). The channel keeps a
ledger of every message (kind, frame, size, leaked bits) for the leakage accounting.
Payload arrays are copied on send and read-only on delivery: nothing is shared between the
parties but the bytes of the messages.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

import numpy as np

from qkd_hw.errors import QkdHwError

__all__ = ["ChannelError", "ClassicalChannel", "Endpoint", "LedgerEntry", "MemoryTranscript",
           "Message", "Recorder"]


class ChannelError(QkdHwError):
    """A message is missing, unexpected, or not a plain numeric payload."""


@dataclass(frozen=True)
class Message:
    """One message on the channel (public)."""

    seq: int
    sender: str
    receiver: str
    kind: str
    frame: int                           # -1: not tied to one frame
    payload: Mapping[str, np.ndarray]
    leaked_bits: int

    @property
    def nbytes(self) -> int:
        return int(sum(v.nbytes for v in self.payload.values()))

    def __repr__(self) -> str:  # sizes only: payloads can be long
        return (f"Message(#{self.seq} {self.sender}->{self.receiver} {self.kind!r} "
                f"frame={self.frame} {self.nbytes} B leaked={self.leaked_bits})")


@dataclass(frozen=True)
class LedgerEntry:
    """What the channel remembers of every message (no payload)."""

    seq: int
    sender: str
    kind: str
    frame: int
    nbytes: int
    leaked_bits: int


class Recorder(Protocol):
    """Receives every message before delivery (the public transcript)."""

    def record(self, message: Message) -> None: ...


@dataclass
class MemoryTranscript:
    """A transcript kept in memory (tests, short runs)."""

    messages: list[Message] = field(default_factory=list)

    def record(self, message: Message) -> None:
        self.messages.append(message)


def _freeze(kind: str, payload: Mapping[str, object]) -> Mapping[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name, value in payload.items():
        arr = np.array(value, copy=True)   # a copy: the sender keeps no handle on it
        if arr.dtype.kind not in "biuf":
            raise ChannelError(f"message {kind!r}: payload {name!r} has dtype {arr.dtype}; "
                               "only booleans, integers and floats can be sent")
        arr.setflags(write=False)
        out[str(name)] = arr
    return MappingProxyType(out)


class ClassicalChannel:
    """In-process classical channel between named parties (default Alice and Bob).

    Parameters
    ----------
    parties : iterable of str
        Names of the endpoints.
    recorder : Recorder, optional
        Receives every message (default: a :class:`MemoryTranscript`, in :attr:`recorder`).
    """

    def __init__(self, parties: Iterable[str] = ("alice", "bob"), *,
                 recorder: Recorder | None = None) -> None:
        self._queues: dict[str, deque[Message]] = {p: deque() for p in parties}
        if len(self._queues) < 2:
            raise ValueError("a channel needs at least two parties")
        self.recorder: Recorder = MemoryTranscript() if recorder is None else recorder
        self.ledger: list[LedgerEntry] = []

    def endpoint(self, name: str, peer: str) -> Endpoint:
        """The endpoint through which party ``name`` talks to ``peer``."""
        for p in (name, peer):
            if p not in self._queues:
                raise ValueError(f"unknown party {p!r} (channel parties: {list(self._queues)})")
        return Endpoint(self, name, peer)

    def leaked_bits(self, frames: Iterable[int] | None = None) -> int:
        """Bits declared as key information: all, or of messages of these frames (and -1)."""
        if frames is None:
            return sum(e.leaked_bits for e in self.ledger)
        keep = set(frames) | {-1}
        return sum(e.leaked_bits for e in self.ledger if e.frame in keep)

    def pending(self, name: str) -> int:
        """Messages waiting for ``name``."""
        return len(self._queues[name])

    def _send(self, sender: str, receiver: str, kind: str, payload: Mapping[str, object],
              frame: int, leaked_bits: int) -> Message:
        if leaked_bits < 0:
            raise ValueError(f"leaked_bits must be >= 0, got {leaked_bits}")
        msg = Message(seq=len(self.ledger), sender=sender, receiver=receiver, kind=kind,
                      frame=int(frame), payload=_freeze(kind, payload),
                      leaked_bits=int(leaked_bits))
        self.recorder.record(msg)   # public before it is delivered
        self.ledger.append(LedgerEntry(msg.seq, sender, kind, msg.frame, msg.nbytes,
                                       msg.leaked_bits))
        self._queues[receiver].append(msg)
        return msg

    def _receive(self, receiver: str, kind: str, frame: int) -> Message:
        q = self._queues[receiver]
        if not q:
            raise ChannelError(f"{receiver}: no message waiting (expected {kind!r}, "
                               f"frame {frame})")
        msg = q[0]
        if msg.kind != kind or msg.frame != frame:
            raise ChannelError(f"{receiver}: expected {kind!r} for frame {frame}, got "
                               f"{msg.kind!r} for frame {msg.frame} from {msg.sender}")
        return q.popleft()


class Endpoint:
    """One party's side of the channel."""

    def __init__(self, channel: ClassicalChannel, name: str, peer: str) -> None:
        self._channel = channel
        self.name = name
        self.peer = peer

    def send(self, kind: str, payload: Mapping[str, object], *, frame: int = -1,
             leaked_bits: int = 0) -> Message:
        """Send ``payload`` (name -> numeric array or scalar) to the peer; returns the record."""
        return self._channel._send(self.name, self.peer, kind, payload, frame, leaked_bits)

    def receive(self, kind: str, *, frame: int = -1) -> Message:
        """The next message for this party; it must be of ``kind`` for ``frame``."""
        return self._channel._receive(self.name, kind, frame)
