"""Alice and Bob: reverse reconciliation, verification and privacy amplification by messages.

Each party holds only its own data (Alice her symbols ``x``, Bob his ``y``, both as real
values: real and imaginary parts interleaved in heterodyne) and talks to the other only
through its :class:`~qkd_hw.postprocessing.channel.Endpoint`. Per frame of
``params.frame_bits`` real values (one key bit per value, reverse reconciliation: Bob's bits
are the key), after Bob has announced the code (``code``: mother code, shortened and punctured
counts; leaks nothing; :func:`agree_code`):

1. Bob encodes his frame, keeps his key bits, sends ``reconciliation`` (maps, norms,
   syndrome...; leaks ``leakage_bits(params)``);
2. Alice decodes; sends ``decoded`` (converged or not; a frame that did not converge is
   dropped by both);
3. Bob draws a hash key (:mod:`secrets`) and sends ``verification`` (key, tag; leaks the tag);
4. Alice compares with her tag and sends ``verified``; both keep the frame or drop it.

After the frames, each party computes the final key length from the public estimates and
its own count of what was disclosed about its kept frames
(:func:`~qkd_hw.postprocessing.privacy.secret_key_length`); Bob draws the Toeplitz seed
(:mod:`secrets`) and sends ``privacy_amplification``; Alice refuses an announced length
other than her own. Each party hashes its kept bits to the final key. No method logs, prints
or returns key bits except :attr:`_Party.final_key`.
"""

from __future__ import annotations

import inspect
import math
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from dsp.vocabulary import DEFAULT_EPS_BAR, DEFAULT_EPS_PA
from qkd_hw.errors import QkdHwError
from qkd_hw.postprocessing.channel import Endpoint
from qkd_hw.postprocessing.ldpc import LANES
from qkd_hw.postprocessing.privacy import (
    SecrecyParameters,
    random_bits,
    secret_key_length,
    toeplitz_hash,
    toeplitz_seed_length,
)
from qkd_hw.postprocessing.verify import collision_bound, new_hash_key, toeplitz_tag

__all__ = ["Alice", "Bob", "ProtocolError", "ProtocolSettings", "run_frames",
           "symbols_to_values"]


class ProtocolError(QkdHwError):
    """The peer sent something the protocol does not allow (length mismatch, bad frame)."""


class BobReconcilerLike(Protocol):
    def encode(self, y: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]: ...


class AliceReconcilerLike(Protocol):
    def decode(self, x: np.ndarray, message: dict[str, np.ndarray],
               snr: float) -> tuple[np.ndarray | None, int]: ...


@dataclass(frozen=True)
class ProtocolSettings:
    """Public settings both parties agree on before the first frame."""

    frame_bits: int               # real values (and key bits) per frame
    leak_ec_bits: int             # what one reconciliation message discloses
    detection: str = "heterodyne"
    tag_bits: int = 64
    eps_pa: float = DEFAULT_EPS_PA
    eps_bar: float = DEFAULT_EPS_BAR

    @property
    def values_per_symbol(self) -> int:
        return 2 if self.detection == "heterodyne" else 1


def symbols_to_values(symbols: np.ndarray, detection: str) -> np.ndarray:
    """Real values (float64) of complex symbols: (re, im) interleaved, or re in homodyne."""
    s = np.asarray(symbols)
    if detection == "heterodyne":
        return s.astype(np.complex128).view(np.float64)
    return s.real.astype(np.float64)


class _Party:
    """What both parties share: frames of values, kept bits, leakage tally, final key."""

    name = "party"

    def __init__(self, endpoint: Endpoint, values: np.ndarray, settings: ProtocolSettings
                 ) -> None:
        self._ep = endpoint
        self._values = values
        self.settings = settings
        self.n_frames = values.shape[0] // settings.frame_bits
        self._bits: dict[int, np.ndarray] = {}
        self._leaked: dict[int, int] = {}
        self.frames_dropped: list[int] = []
        self.final_key: np.ndarray | None = None
        self.secrecy: SecrecyParameters | None = None

    def __repr__(self) -> str:  # never key bits
        return (f"{type(self).__name__}(frames={self.n_frames}, kept={len(self._bits)}, "
                f"dropped={len(self.frames_dropped)})")

    def _frame(self, f: int) -> np.ndarray:
        if not 0 <= f < self.n_frames:
            raise ProtocolError(f"{self.name}: frame {f} out of range [0, {self.n_frames})")
        n = self.settings.frame_bits
        return self._values[f * n:(f + 1) * n]

    def _count(self, f: int, bits: int) -> None:
        self._leaked[f] = self._leaked.get(f, 0) + int(bits)

    def _drop(self, f: int) -> None:
        self._bits.pop(f, None)
        self.frames_dropped.append(f)

    @property
    def frames_kept(self) -> list[int]:
        return sorted(self._bits)

    def kept_bits(self) -> np.ndarray:
        """The bits of the kept frames, in frame order (input of privacy amplification)."""
        if not self._bits:
            return np.zeros(0, np.uint8)
        return np.concatenate([self._bits[f] for f in self.frames_kept])

    def compute_secrecy(self, estimates: Mapping[str, float], block_symbols: int
                        ) -> SecrecyParameters:
        """Final key length from the public estimates and this party's own tally."""
        s = self.settings
        kept = self.frames_kept
        leak_ec = sum(self._leaked.get(f, 0) for f in kept) - len(kept) * s.tag_bits
        self.secrecy = secret_key_length(
            estimates, detection=s.detection, block_symbols=block_symbols,
            key_symbols=len(kept) * s.frame_bits // s.values_per_symbol,
            reconciled_bits=len(kept) * s.frame_bits, leak_ec_bits=leak_ec,
            leak_verification_bits=len(kept) * s.tag_bits,
            # any verified frame could be the one whose errors collide
            eps_cor=(len(kept) + len(self.frames_dropped)) * collision_bound(s.tag_bits),
            eps_pa=s.eps_pa, eps_bar=s.eps_bar)
        return self.secrecy


class Bob(_Party):
    """Bob: his reconciled bits are the key (reverse reconciliation)."""

    name = "bob"

    def __init__(self, endpoint: Endpoint, values: np.ndarray, settings: ProtocolSettings,
                 reconciler: BobReconcilerLike) -> None:
        super().__init__(endpoint, values, settings)
        self._rec = reconciler
        self._verifying: set[int] = set()

    def reconcile(self, f: int) -> None:
        """Encode frame ``f`` and send the public reconciliation message."""
        bits, message = self._rec.encode(self._frame(f))
        bits = np.asarray(bits, np.uint8)
        if bits.shape != (self.settings.frame_bits,):
            raise ProtocolError(f"bob: reconciler returned {bits.shape} key bits for frame "
                                f"{f}, expected ({self.settings.frame_bits},)")
        self._bits[f] = bits
        self._ep.send("reconciliation", message, frame=f,
                      leaked_bits=self.settings.leak_ec_bits)
        self._count(f, self.settings.leak_ec_bits)

    def verify(self, f: int) -> None:
        """After Alice's ``decoded``: send a fresh hash key and the tag, or drop the frame."""
        ok = bool(self._ep.receive("decoded", frame=f).payload["ok"])
        if not ok:
            self._drop(f)
            return
        t = self.settings.tag_bits
        key = new_hash_key(self.settings.frame_bits, t)
        tag = toeplitz_tag(self._bits[f], key, t)
        self._ep.send("verification", {"hash_key": np.packbits(key), "tag": np.packbits(tag)},
                      frame=f, leaked_bits=t)
        self._count(f, t)
        self._verifying.add(f)

    def conclude(self, f: int) -> None:
        """Keep or drop frame ``f`` on Alice's ``verified``."""
        if f not in self._verifying:
            return
        self._verifying.discard(f)
        if not bool(self._ep.receive("verified", frame=f).payload["ok"]):
            self._drop(f)

    def privacy_amplification(self) -> np.ndarray:
        """Draw and send the Toeplitz seed; hash the kept bits to the final key."""
        if self.secrecy is None:
            raise ProtocolError("bob: compute_secrecy() before privacy_amplification()")
        raw = self.kept_bits()
        n_out = self.secrecy.final_key_bits
        seed = random_bits(toeplitz_seed_length(raw.shape[0], n_out)) if n_out else \
            np.zeros(0, np.uint8)
        self._ep.send("privacy_amplification",
                      {"seed": np.packbits(seed), "input_bits": raw.shape[0],
                       "output_bits": n_out})
        self.final_key = toeplitz_hash(raw, seed, n_out) if n_out else np.zeros(0, np.uint8)
        return self.final_key


class Alice(_Party):
    """Alice: decodes Bob's bits from her symbols and his public messages."""

    name = "alice"

    def __init__(self, endpoint: Endpoint, values: np.ndarray, settings: ProtocolSettings,
                 reconciler: AliceReconcilerLike, snr: float) -> None:
        super().__init__(endpoint, values, settings)
        self._rec = reconciler
        self._snr = float(snr)
        self.iterations: list[int] = []

    def decode(self, frames: list[int]) -> None:
        """Decode these frames from Bob's messages (together when the reconciler can);
        report for each whether it converged."""
        msgs = [self._ep.receive("reconciliation", frame=f) for f in frames]
        for f, m in zip(frames, msgs, strict=True):
            self._count(f, m.leaked_bits)
        xs = [self._frame(f) for f in frames]
        payloads = [dict(m.payload) for m in msgs]
        if hasattr(self._rec, "decode_frames"):   # several frames at once, every core
            bits_list, iters = self._rec.decode_frames(xs, payloads, self._snr)
        else:
            done = [self._rec.decode(x, p, self._snr) for x, p in zip(xs, payloads, strict=True)]
            bits_list, iters = [b for b, _ in done], [i for _, i in done]
        for f, bits, it in zip(frames, bits_list, iters, strict=True):
            self.iterations.append(int(it))
            ok = bits is not None
            if ok:
                bits = np.asarray(bits, np.uint8)
                if bits.shape != (self.settings.frame_bits,):
                    raise ProtocolError(f"alice: decoder returned {bits.shape} bits for "
                                        f"frame {f}")
                self._bits[f] = bits
            else:
                self.frames_dropped.append(f)
            self._ep.send("decoded", {"ok": ok, "iterations": int(it)}, frame=f)

    def check(self, f: int) -> None:
        """Compare Bob's tag with hers; tell him whether the frame is kept."""
        if f not in self._bits:
            return
        msg = self._ep.receive("verification", frame=f)
        self._count(f, msg.leaked_bits)
        t = self.settings.tag_bits
        key = np.unpackbits(msg.payload["hash_key"])[:self.settings.frame_bits + t - 1]
        ok = bool(np.array_equal(np.packbits(toeplitz_tag(self._bits[f], key, t)),
                                 msg.payload["tag"]))
        if not ok:
            self._drop(f)
        self._ep.send("verified", {"ok": ok}, frame=f)

    def privacy_amplification(self) -> np.ndarray:
        """Hash the kept bits with Bob's seed, after checking his lengths against hers."""
        if self.secrecy is None:
            raise ProtocolError("alice: compute_secrecy() before privacy_amplification()")
        p = self._ep.receive("privacy_amplification").payload
        raw = self.kept_bits()
        n_in, n_out = int(p["input_bits"]), int(p["output_bits"])
        if n_in != raw.shape[0] or n_out != self.secrecy.final_key_bits:
            raise ProtocolError(
                f"alice: Bob announced privacy amplification of {n_in} -> {n_out} bits, "
                f"Alice holds {raw.shape[0]} bits and computes {self.secrecy.final_key_bits}")
        seed = np.unpackbits(p["seed"])[:toeplitz_seed_length(n_in, n_out)] if n_out else None
        self.final_key = toeplitz_hash(raw, seed, n_out) if n_out else np.zeros(0, np.uint8)
        return self.final_key


def run_frames(alice: Alice, bob: Bob, *, batch: int = 1, progress: Any = None) -> None:
    """Reconcile and verify every frame, the two parties taking turns on the channel.

    ``batch`` frames are in flight at once (Alice decodes them together: one decoder per
    core in part A's reconciler); the messages of each frame are the same as one by one.
    """
    if alice.n_frames != bob.n_frames:
        raise ProtocolError(f"alice has {alice.n_frames} frames, bob {bob.n_frames}")
    for f0 in range(0, bob.n_frames, max(1, batch)):
        frames = list(range(f0, min(bob.n_frames, f0 + max(1, batch))))
        for f in frames:
            bob.reconcile(f)
        alice.decode(frames)
        for step in (bob.verify, alice.check, bob.conclude):
            for f in frames:
                step(f)
        if progress is not None:
            progress(len(frames))


def beta(settings: ProtocolSettings, snr: float) -> float:
    """Reconciliation efficiency: key bits per value after leakage over ``log2(1+snr)/2``."""
    capacity = 0.5 * math.log2(1.0 + snr)
    return (settings.frame_bits - settings.leak_ec_bits) / (settings.frame_bits * capacity)


@dataclass(frozen=True)
class PostprocessResult:
    """Summary of one post-processing run (no key bits)."""

    beta: float
    frame_error_rate: float
    frames: int
    frames_kept: int
    final_key_bits: int
    keys_identical: bool
    decoded_bits_per_second: float
    seconds: float
    key_path: str
    transcript_path: str
    parameters: Mapping[str, Any]


def _reconciliation_module() -> Any:
    # imported on use so the rest of the package works without it
    try:
        from qkd_hw.postprocessing import reconcile
    except ImportError as exc:
        raise QkdHwError(f"reconciliation is not available: {exc}") from exc
    return reconcile


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _code_options(rec: Any, rate: float | None, frame_bits: int | None,
                  beta: float | None = None) -> dict[str, Any]:
    """Keyword arguments of ``choose_code``; a rate or efficiency it cannot take is an error,
    not ignored."""
    opts: dict[str, Any] = {}
    if frame_bits is not None:
        opts["frame_bits"] = int(frame_bits)
    for name, value in (("rate", rate), ("beta", beta)):
        if value is None:
            continue
        if name not in inspect.signature(rec.choose_code).parameters:
            raise QkdHwError(f"--{name} {value}: the reconciliation chooses its code from the "
                             f"SNR only (choose_code has no {name} option)")
        opts[name] = float(value)
    return opts


#: fields of the adapted code reported in the key file, the transcript and the summary
CODE_FIELDS = ("mother_rate", "code_length", "shortened", "punctured")


def agree_code(rec: Any, params: Any, bob: Endpoint, alice: Endpoint) -> Any:
    """Bob announces the code he chose (public ``code`` message, no key information);
    Alice's parameters are rebuilt and validated from that message alone.

    A reconciliation without ``params_message``/``params_from_message`` has nothing to
    announce beyond the settings both derive: its ``params`` are returned as they are.
    """
    if not (hasattr(rec, "params_message") and hasattr(rec, "params_from_message")):
        return params
    bob.send("code", rec.params_message(params))
    return rec.params_from_message(dict(alice.receive("code").payload))


def postprocess_raw_key(raw_path: str, key_path: str, transcript_path: str, *,
                        rate: float | None = None, target_beta: float | None = None,
                        detection: str = "heterodyne",
                        tag_bits: int = 64, eps_pa: float = DEFAULT_EPS_PA,
                        eps_bar: float = DEFAULT_EPS_BAR,
                        frame_bits: int | None = None, reconciliation: Any = None,
                        progress: Any = None, on_frames: Any = None,
                        alice_trace: str | None = None) -> PostprocessResult:
    """Run both parties on one raw-key file; write KEY.h5 (0600) and the public transcript.

    Parameters
    ----------
    raw_path : str
        Raw-key file (spec "Raw key hand-off") holding ``/alice/symbols`` and Bob's data.
    key_path, transcript_path : str
        Outputs, each written atomically.
    rate : float, optional
        Code rate instead of the one chosen for the estimated SNR (passed to
        ``choose_code(snr, rate=...)``; refused if the reconciliation cannot choose by rate).
        The real reconciliation takes a mother-code rate (0.1, 0.05, 0.02).
    target_beta : float, optional
        Target reconciliation efficiency: the code is shortened/punctured to
        ``beta * C(snr)`` (``choose_code(snr, beta=...)``; default the reconciliation's).
    frame_bits : int, optional
        Passed to ``choose_code`` (its code length; default: the reconciliation's).
    reconciliation : module-like, optional
        Provides ``choose_code``, ``BobReconciler``, ``AliceReconciler``, ``leakage_bits``
        (default :mod:`qkd_hw.postprocessing.reconcile`).
    progress : callable, optional
        Called with 1 after each frame; ``on_frames(n)`` is called first with the count.
    alice_trace : str, optional
        Recording the raw key came from: Alice's symbols are its ``/tx/symbols`` at
        ``/bob/tx_index`` instead of the raw key's ``/alice/symbols``.
    """
    import time

    from qkd_hw.postprocessing.channel import ClassicalChannel
    from qkd_hw.postprocessing.keyfile import (
        TranscriptFile,
        alice_symbols_from_trace,
        read_alice_symbols,
        write_key_file,
    )
    from qkd_hw.raw_key import read_raw_key

    t0 = time.perf_counter()
    raw = read_raw_key(raw_path)
    n_sym = raw.bob_symbols.shape[0]
    x = symbols_to_values(read_alice_symbols(raw_path, n_sym) if alice_trace is None else
                          alice_symbols_from_trace(alice_trace, raw.bob_tx_index), detection)
    y = symbols_to_values(raw.bob_symbols, detection)
    snr = float(raw.estimates["snr"])
    if not snr > 0:
        raise ProtocolError(f"{raw_path}: /estimates snr = {snr!r}: no correlation to "
                            "reconcile")
    rec = _reconciliation_module() if reconciliation is None else reconciliation
    # Bob's choice from the public estimates; announced to Alice on the channel below
    params = rec.choose_code(snr, **_code_options(rec, rate, frame_bits, target_beta))

    def settings_of(pr: Any) -> ProtocolSettings:
        return ProtocolSettings(frame_bits=int(pr.frame_bits),
                                leak_ec_bits=int(rec.leakage_bits(pr)), detection=detection,
                                tag_bits=tag_bits, eps_pa=eps_pa, eps_bar=eps_bar)

    settings = settings_of(params)
    n_frames = y.shape[0] // settings.frame_bits
    if n_frames == 0:
        raise ProtocolError(f"{raw_path}: /bob/symbols holds {y.shape[0]} real values, fewer "
                            f"than one frame of {settings.frame_bits}")
    with TranscriptFile(transcript_path) as transcript:
        ch = ClassicalChannel(recorder=transcript)
        # Bob's key bits come from this generator (the reconciler's interface takes a numpy
        # Generator): its whole state is seeded from the OS's CSPRNG, never a fixed seed
        rng = np.random.default_rng(np.random.SeedSequence(secrets.randbits(256)))
        bob_ep, alice_ep = ch.endpoint("bob", "alice"), ch.endpoint("alice", "bob")
        alice_params = agree_code(rec, params, bob_ep, alice_ep)
        if settings_of(alice_params) != settings:
            raise ProtocolError(f"alice: the announced code gives {settings_of(alice_params)}, "
                                f"bob uses {settings}")
        bob = Bob(bob_ep, y, settings, rec.BobReconciler(params, rng))
        alice = Alice(alice_ep, x, settings, rec.AliceReconciler(alice_params), snr)
        if on_frames is not None:
            on_frames(n_frames)
        t_frames = time.perf_counter()
        # the decoder runs LANES frames per core in lock-step
        run_frames(alice, bob, batch=LANES * _cores(), progress=progress)
        t_frames = time.perf_counter() - t_frames
        block = n_sym + raw.pe_tx_index.shape[0]
        sec_b = bob.compute_secrecy(raw.estimates, block)
        alice.compute_secrecy(raw.estimates, block)
        bob.privacy_amplification()
        alice.privacy_amplification()
        assert alice.final_key is not None and bob.final_key is not None
        identical = bool(np.array_equal(alice.final_key, bob.final_key))
        kept = len(bob.frames_kept)
        b = beta(settings, snr)
        summary = {"beta": b, "frame_error_rate": (n_frames - kept) / n_frames,
                   "frames": n_frames, "frames_kept": kept,
                   "final_key_bits": sec_b.final_key_bits, "keys_identical": identical,
                   "decoded_bits_per_second": (n_frames * settings.frame_bits / t_frames
                                               if t_frames > 0 else math.inf)}
        parameters = {**sec_b.as_dict(), **summary, "snr": snr, "code_rate": float(params.rate),
                      "dimension": int(params.dimension), "frame_bits": settings.frame_bits,
                      "tag_bits": tag_bits, "detection": detection,
                      "verification_collision_bound_per_frame": collision_bound(tag_bits),
                      "transcript_messages": len(ch.ledger),
                      "transcript_leaked_bits": ch.leaked_bits(),
                      "raw_key_file": str(raw_path),
                      **{k: getattr(params, k) for k in CODE_FIELDS if hasattr(params, k)}}
        # public transcript first: a failure writing it leaves no key file without it
        transcript.commit({k: v for k, v in parameters.items() if k != "keys_identical"})
        write_key_file(key_path, alice.final_key, bob.final_key, parameters)
    return PostprocessResult(**summary, seconds=time.perf_counter() - t0,
                             key_path=str(key_path), transcript_path=str(transcript_path),
                             parameters=parameters)
