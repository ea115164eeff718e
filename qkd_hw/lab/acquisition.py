"""Acquisition through a :class:`~qkd_hw.lab.session.LabSession`: a format-v1 recording.

:func:`acquire` generates Alice's waveform (:mod:`qkd_hw.lab.transmitter`), uploads it to the
AWG, brings the lab to its working point through the session (every change restored when the
session ends) and takes the three captures, each fetched from the digitizer in chunks straight
into the file (a capture larger than memory is fine):

========================  ========================  ==================================
capture                   switch                    LO laser
========================  ========================  ==================================
``signal``                ``switch_signal_port``    emission on (``link.lo_power_mw``)
``shot_noise``            ``switch_block_port``     emission on
``electronic_noise``      ``switch_block_port``     emission off
========================  ========================  ==================================

Working point set up here: digitizer sample rate and record length (``[link]``), detector
enabled, the bias controller in AUTO_NULL and locked, the AWG at ``link.awg_sample_rate_hz``
playing the segment (outputs on, ``awg_amplitude_v`` if given), the Tx laser emitting (at
``tx_power_mw`` if given), the VOA shutter open (at ``voa_db`` if given). The AWG amplitude and
Tx laser power that make Alice's variance V_A are the calibration's; without them the
instruments keep theirs. On every exit the AWG is stopped (its run state is no property the
session could restore).

Symbols and the cyclic segment
------------------------------
The AWG's memory is finite: the segment of ``P`` symbols repeats cyclically, and the digitizer
record starts with the segment (the AWG's marker triggers it). ``/tx/symbols`` holds the
symbols *as the digitizer saw them*: segment symbols ``lead, lead + 1, ...`` modulo ``P``
(``lead`` symbols first leave room for the receiver's matched filter). A real link sends
fresh symbols all along (a repeated segment would let Eve learn the symbols); the repetition
is a convenience of the virtual lab and of tests, and the receiver's synchronisation may lock
on any repetition of the first symbols (it then uses fewer symbols; the estimates stay right).

Interruptions
-------------
The recording is written under a temporary name with root attribute ``complete = false`` and
appears at ``OUT`` only when every capture is in full (``complete = true``). An interrupted
acquisition (Ctrl-C, an instrument fault) leaves the partial file at
:func:`incomplete_path` (``OUT`` with ``.incomplete`` before the suffix), still marked
``complete = false``, which readers refuse by default; a complete recording already at ``OUT``
is never replaced by a partial one.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from drivers.thorlabs_mbx import MzmMode
from qkd_hw.errors import ConfigError, InstrumentError
from qkd_hw.lab.session import LabSession
from qkd_hw.lab.transmitter import TxDesign, TxWaveform, make_waveform, segment_symbols
from qkd_hw.labconfig import lab_config_to_toml
from qkd_hw.trace_io import TraceWriter, TxInfo

__all__ = ["AcquisitionPlan", "AcquisitionResult", "acquire", "incomplete_path"]

CAPTURES = ("signal", "shot_noise", "electronic_noise")
INT16_SPAN = 65536
SYMBOL_CHUNK = 1 << 20
log = logging.getLogger(__name__)
#: digitizer volts per code must agree with range / 65536 to this relative precision
VPC_RTOL = 1e-6


@dataclass(frozen=True)
class AcquisitionPlan:
    """What to acquire.

    Attributes
    ----------
    n_symbols : int
        Data symbols in ``/tx/symbols`` (the signal capture covers them plus lead and tail).
    noise_samples : int or None
        Length of the shot- and electronic-noise captures (None: that of the signal).
    segment_symbols : int
        Wanted AWG segment length in symbols (rounded up to a valid one, at most what the
        capture needs).
    lead_symbols, tail_symbols : int
        Symbols before the first and after the last data symbol in the signal capture
        (0 tail: the RRC span + 8).
    chunk_samples : int
        Digitizer transfer and file append size.
    tx_power_mw, awg_amplitude_v, voa_db : float or None
        Settings the calibration chose (None: leave the instrument's).
    pilot_to_signal_db : float
        Pilot power over the quantum band's mean power (:class:`TxDesign`).
    capture_timeout_s : float
        Longest wait for one acquisition.
    """

    n_symbols: int
    noise_samples: int | None = None
    segment_symbols: int = 4096
    lead_symbols: int = 128
    tail_symbols: int = 0
    chunk_samples: int = 1 << 20
    tx_power_mw: float | None = None
    awg_amplitude_v: float | None = None
    voa_db: float | None = None
    pilot_to_signal_db: float = 8.0
    capture_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        for name in ("n_symbols", "segment_symbols", "chunk_samples"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if self.noise_samples is not None and self.noise_samples < 16:
            raise ValueError(f"noise_samples must be >= 16, got {self.noise_samples!r}")


@dataclass(frozen=True)
class AcquisitionResult:
    """What :func:`acquire` wrote."""

    path: Path
    n_symbols: int
    segment_symbols: int
    lengths: dict[str, int]
    sample_rate_hz: float
    volts_per_code: dict[str, float]
    clipped_fraction: dict[str, float]
    awg_amplitude_v: float
    tx_power_mw: float

    def summary(self) -> dict[str, Any]:
        return {"path": str(self.path), "n_symbols": self.n_symbols,
                "segment_symbols": self.segment_symbols, "lengths": dict(self.lengths),
                "sample_rate_hz": self.sample_rate_hz,
                "volts_per_code": dict(self.volts_per_code),
                "clipped_fraction": dict(self.clipped_fraction),
                "awg_amplitude_v": self.awg_amplitude_v, "tx_power_mw": self.tx_power_mw}


def incomplete_path(out: str | os.PathLike[str]) -> Path:
    """Where an interrupted acquisition leaves its partial recording: ``run.h5`` ->
    ``run.incomplete.h5`` (next to it, visibly not the recording asked for)."""
    p = Path(out)
    return p.with_name(f"{p.stem}.incomplete{p.suffix or '.h5'}")


def _signal_samples(design: TxDesign, plan: AcquisitionPlan) -> int:
    tail = plan.tail_symbols or design.span_symbols + 8
    return math.ceil((plan.lead_symbols + plan.n_symbols + tail) * design.sps_adc)


def acquire(session: LabSession, out: str | os.PathLike[str], plan: AcquisitionPlan, *,
            rng: np.random.Generator | None = None, description: str | None = None,
            amplitude_for: Callable[[TxWaveform], float] | None = None) -> AcquisitionResult:
    """Take the signal, shot-noise and electronic-noise captures into a recording at ``out``.

    Parameters
    ----------
    session : LabSession
        Open session of the lab (its config needs ``[link]`` and the roles and ports used).
    out : path
        The recording (format v1 with ``/meta/snapshot``, ``/meta/lab_config``, ``complete``).
    plan : AcquisitionPlan
    rng : numpy Generator, optional
        Source of Alice's symbols; default :func:`qkd_hw.lab.transmitter.secure_rng`.
    description : str, optional
        Root ``description`` of the recording.
    amplitude_for : callable, optional
        AWG amplitude (V) for the generated waveform, when ``plan.awg_amplitude_v`` is None
        (e.g. :func:`qkd_hw.lab.transmitter.virtual_tx_levels` on the virtual lab).

    Returns
    -------
    AcquisitionResult
    """
    cfg = session.config
    link = cfg.link
    if link is None:
        raise ConfigError(f"{cfg.path or '<lab config>'}: no [link] table: the acquisition "
                          f"needs the link parameters")
    design = TxDesign.from_link(link, pilot_to_signal_db=plan.pilot_to_signal_db)
    n_signal = _signal_samples(design, plan)
    total_symbols = math.ceil(n_signal / design.sps_adc)
    wf = make_waveform(design, segment_symbols(design, min(plan.segment_symbols,
                                                           total_symbols)), rng)
    session.report(f"transmitter: segment of {wf.segment_symbols} symbols "
                   f"({wf.i_codes.size} AWG samples per channel)")
    if plan.awg_amplitude_v is None and amplitude_for is not None:
        plan = dataclasses.replace(plan, awg_amplitude_v=float(amplitude_for(wf)))
    n_noise = plan.noise_samples or n_signal
    adc = session.instrument("digitizer")
    try:
        _working_point(session, wf, plan)
        ch = cfg.port("digitizer_channel")
        vpc = float(session.get("digitizer", "range_v", channel=ch)) / INT16_SPAN
        tx = TxInfo(symbol_rate_hz=link.symbol_rate_hz, rolloff=link.rolloff,
                    signal_frequency_hz=link.signal_frequency_hz,
                    pilot_frequencies_hz=tuple(link.pilot_frequencies_hz),
                    # the repeating segment's own variance, not the target's: its few thousand
                    # symbols are what Alice sends, and their sample variance is off V_A by
                    # ~sqrt(2/p) (1.6 % at 4096), which the sanity check of Alice's symbols
                    # would read as a wrong modulation variance
                    modulation_variance_snu=float(np.mean(np.abs(wf.symbols) ** 2) / 2),
                    efficiency=link.detector_efficiency, detection=link.detection,  # type: ignore[arg-type]
                    n_symbols=plan.n_symbols)
        clipped: dict[str, float] = {}
        with TraceWriter(out, tx=tx, sample_rate_hz=link.sample_rate_hz, volts_per_code=vpc,
                         description=description, chunk_samples=plan.chunk_samples,
                         incomplete_path=incomplete_path(out)) as writer:
            writer.write_meta("snapshot", session.snapshot_json())
            writer.write_meta("lab_config", lab_config_to_toml(cfg))
            for k in range(0, plan.n_symbols, SYMBOL_CHUNK):  # bounded memory for any N
                writer.append_symbols(wf.symbols_seen(plan.lead_symbols + k,
                                                      min(SYMBOL_CHUNK, plan.n_symbols - k)))
            for name, n in zip(CAPTURES, (n_signal, n_noise, n_noise), strict=True):
                _route(session, name)
                clipped[name] = _capture(session, writer, name, n, vpc, plan)
                writer.set_clipped_fraction(name, clipped[name])
            lengths = writer.lengths
        amplitude = float(session.get("awg", "amplitude_v", channel=cfg.port("awg_i_channel")))
        tx_mw = float(session.get("signal_laser", "power_setpoint_mw"))
    finally:
        _stop_awg(session)
    session.report(f"acquisition written to {out}")
    return AcquisitionResult(path=Path(out), n_symbols=plan.n_symbols,
                             segment_symbols=wf.segment_symbols, lengths=lengths,
                             sample_rate_hz=float(adc.sample_rate_hz),
                             volts_per_code=dict.fromkeys(CAPTURES, vpc),
                             clipped_fraction=clipped, awg_amplitude_v=amplitude,
                             tx_power_mw=tx_mw)


def _awg_channels(session: LabSession) -> list[int]:
    cfg = session.config
    chans = [cfg.port("awg_i_channel")]
    if cfg.roles.ports.get("awg_q_channel") is not None:
        chans.append(cfg.port("awg_q_channel"))
    return chans


def _working_point(session: LabSession, wf: TxWaveform, plan: AcquisitionPlan) -> None:
    """Every instrument to the capture's working point (through the session: restored)."""
    cfg = session.config
    link = cfg.link
    assert link is not None
    say = session.report
    say("working point: digitizer, detector, bias lock")
    session.set("digitizer", "sample_rate_hz", link.sample_rate_hz)
    session.set("detector", "enabled", True)
    session.set("bias_controller", "mode", MzmMode.AUTO_NULL)
    session.instrument("bias_controller").wait_locked()  # type: ignore[attr-defined]
    say("working point: AWG upload")
    awg = session.instrument("awg")
    session.set("awg", "sample_rate_hz", wf.design.awg_sample_rate_hz)
    chans = _awg_channels(session)
    for ch, codes in zip(chans, (wf.i_codes, wf.q_codes), strict=False):
        if plan.awg_amplitude_v is not None:
            session.set("awg", "amplitude_v", plan.awg_amplitude_v, channel=ch)
        awg.channel(ch).upload(codes, chunk_samples=1 << 22)  # type: ignore[attr-defined]
        session.set("awg", "output_enabled", True, channel=ch)
    awg.start()  # type: ignore[attr-defined]
    say("working point: Tx laser, VOA, LO")
    if plan.tx_power_mw is not None:
        session.set("signal_laser", "power_setpoint_mw", plan.tx_power_mw)
    session.set("signal_laser", "emission", True)
    voa_ch = cfg.port("voa_channel")
    if plan.voa_db is not None:
        session.set("voa", "attenuation_db", plan.voa_db, channel=voa_ch)
    session.set("voa", "output_enabled", True, channel=voa_ch)
    if link.lo_power_mw is not None:
        session.set("lo_laser", "power_setpoint_mw", link.lo_power_mw)


def _route(session: LabSession, capture: str) -> None:
    """Switch port and LO emission of ``capture`` (module docstring table)."""
    cfg = session.config
    port = cfg.port("switch_signal_port" if capture == "signal" else "switch_block_port")
    session.set("switch", "channel", port)
    session.set("lo_laser", "emission", capture != "electronic_noise")


def _capture(session: LabSession, writer: TraceWriter, name: str, n: int, vpc: float,
             plan: AcquisitionPlan) -> float:
    """One acquisition of ``n`` samples, fetched in chunks into ``/adc/<name>``; returns the
    fraction of samples at a rail of the int16 codes."""
    cfg = session.config
    ch = cfg.port("digitizer_channel")
    adc: Any = session.instrument("digitizer")
    session.set("digitizer", "record_length", n)
    session.report(f"capture {name}: {n} samples")
    adc.arm()
    adc.wait_acquired(plan.capture_timeout_s)
    pre = adc.preamble(ch)
    if pre.points < n:
        raise InstrumentError(f"capture {name}: the record has {pre.points} points, "
                              f"{n} were asked for", instrument=adc.name)
    if not math.isclose(pre.y_increment_v, vpc, rel_tol=VPC_RTOL):
        raise InstrumentError(f"capture {name}: {pre.y_increment_v:g} V per code, expected "
                              f"range / 65536 = {vpc:g}", instrument=adc.name)
    rails = 0
    t0 = time.monotonic()
    for off in range(0, n, plan.chunk_samples):
        k = min(plan.chunk_samples, n - off)
        codes = adc.fetch(ch, start=off, count=k, chunk_points=k)
        rails += int(np.count_nonzero((codes == 32767) | (codes == -32768)))
        writer.append(name, codes)
        session.report(f"capture {name}: {off + k}/{n} samples fetched")
    session.report(f"capture {name}: done in {time.monotonic() - t0:.2f} s")
    return rails / n


def _stop_awg(session: LabSession) -> None:
    """Stop signal generation (also after a failure: nothing plays after the acquisition)."""
    try:
        session.instrument("awg").stop()  # type: ignore[attr-defined]
    except InstrumentError as exc:  # logged only: the acquisition's own error goes on
        log.error("could not stop the AWG: %s", exc)
