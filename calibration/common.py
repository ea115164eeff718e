"""What every calibration procedure shares: the lab it runs on, its record, its verdict.

A procedure is a function ``run(session, record, options)`` that drives the lab through a
:class:`~qkd_hw.lab.session.LabSession` (every setting it changes is restored on success,
on error and on Ctrl-C) and fills a :class:`Record`: raw data, results, verdict.
:func:`run_procedure` opens the session, runs the procedure and writes the record as HDF5
(atomically), also when the procedure fails half-way: such a record says ``complete =
False`` and names the error, then the error goes on.

HDF5 record layout (``<out>/<name>.h5``)::

    /                attrs: procedure, software_version, utc_time, complete, passed,
                            verdict, error (incomplete records only), results_json,
                            options_json
    /meta/snapshot   every instrument's settings before the procedure (JSON text)
    /meta/lab_config the lab config (TOML text)
    /raw/<name>      the raw data the results come from (captures, sweeps)
    /results         attrs: one per scalar result
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dsp.pipeline import NoiseMeter, NoiseStats, ReceiverOptions
from dsp.rrc import MatchedFilterBank
from qkd_hw import __version__
from qkd_hw.atomic import atomic_write
from qkd_hw.errors import ConfigError, QkdHwError
from qkd_hw.labconfig import LabConfig, LinkParams, lab_config_to_toml, load_lab_config

__all__ = ["Record", "capture", "lab", "noise_stats", "run_procedure", "write_record"]

Progress = Callable[[int], None]


@dataclass
class Record:
    """What a procedure measured and concluded.

    Attributes
    ----------
    name : procedure name (``noise``, ``linearity``, ...).
    options : the procedure's options as run (JSON-able).
    results : scalar results (the ``--json`` keys).
    raw : arrays the results come from (written under ``/raw``).
    passed : the verdict; ``reasons`` says why not (or what was checked).
    complete : False while the procedure runs and when it failed half-way.
    """

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, np.ndarray] = field(default_factory=dict)
    passed: bool = False
    reasons: list[str] = field(default_factory=list)
    complete: bool = False
    error: str | None = None
    snapshot_json: str = ""
    lab_config_text: str = ""
    utc_time: str = ""
    path: Path | None = None
    #: called with a step's name after each step of a sweep or capture (tests: Ctrl-C or
    #: a fault in the middle)
    on_step: Callable[[str], None] | None = None
    #: objects for the caller that are not part of the record (e.g. the ReceiverResult)
    artifacts: dict[str, Any] = field(default_factory=dict)

    def check(self, ok: bool, text: str) -> bool:
        """Add one verdict line (``ok`` or ``FAIL``); returns ``ok``."""
        self.reasons.append(("ok    " if ok else "FAIL  ") + text)
        return ok

    @property
    def verdict(self) -> str:
        if not self.complete:
            return f"INCOMPLETE ({self.error})"
        return "PASS" if self.passed else "FAIL"

    def summary(self) -> dict[str, Any]:
        """Flat JSON-ready dict: results, verdict, record path."""
        return {"procedure": self.name, **self.results, "passed": self.passed,
                "verdict": self.verdict, "checks": list(self.reasons),
                "complete": self.complete, "record": str(self.path) if self.path else None}


def write_record(path: Path, rec: Record) -> Path:
    """Write ``rec`` as HDF5 at ``path`` atomically (see the module docstring for the layout).

    Raises
    ------
    QkdHwError
        Any OS error, naming the path.
    """
    import h5py

    try:
        with atomic_write(path) as tmp, h5py.File(tmp, "w") as f:
            f.attrs["procedure"] = rec.name
            f.attrs["software_version"] = __version__
            f.attrs["utc_time"] = rec.utc_time
            f.attrs["complete"] = bool(rec.complete)
            f.attrs["passed"] = bool(rec.passed and rec.complete)
            f.attrs["verdict"] = rec.verdict
            f.attrs["checks"] = "\n".join(rec.reasons)
            if rec.error is not None:
                f.attrs["error"] = rec.error
            f.attrs["results_json"] = json.dumps(_jsonable(rec.results), allow_nan=False)
            f.attrs["options_json"] = json.dumps(_jsonable(rec.options), allow_nan=False)
            meta = f.create_group("meta")
            meta.create_dataset("snapshot", data=rec.snapshot_json)
            meta.create_dataset("lab_config", data=rec.lab_config_text)
            raw = f.create_group("raw")
            for name, arr in rec.raw.items():
                raw.create_dataset(name, data=np.asarray(arr))
            res = f.create_group("results")
            for k, v in rec.results.items():
                if isinstance(v, int | float | str | bool | np.number) and v is not None:
                    res.attrs[k] = v
    except OSError as exc:
        raise QkdHwError(f"cannot write calibration record {path}: {exc.strerror or exc}") \
            from exc
    rec.path = path
    return path


def _jsonable(v: Any) -> Any:
    """``v`` for json.dumps: numpy to Python, non-finite floats to None."""
    if hasattr(v, "tolist") and not isinstance(v, str | bytes):
        v = v.tolist()
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, Path):
        return str(v)
    return v


def utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@contextlib.contextmanager
def lab(config: LabConfig | str | os.PathLike[str] | None = None) -> Iterator[
        tuple[LabConfig, Any]]:
    """The lab to calibrate: ``(client LabConfig, VirtualLab or None)``.

    Without ``config`` the shipped virtual lab (``qkd_hw/lab/examples/virtual_lab.toml``)
    is started in-process; a config with a ``[virtual]`` table starts that virtual lab; any
    other config is a real lab and is used as it is.
    """
    from qkd_hw.lab import VirtualLab, example_path

    if config is None:
        config = example_path(virtual=True)
    if not isinstance(config, LabConfig):
        config = load_lab_config(config)
    if config.virtual is None:
        yield config, None
        return
    with VirtualLab(config).start() as vlab:
        assert vlab.client_config is not None
        yield vlab.client_config, vlab


def link_params(config: LabConfig) -> LinkParams:
    """The lab's ``[link]`` table (a ConfigError when the config has none)."""
    if config.link is None:
        raise ConfigError(f"{config.path or '<lab config>'}: no [link] table: the "
                          f"calibration needs the link's rates, IF and LO power")
    return config.link


def run_procedure(name: str, config: LabConfig, body: Callable[[Any, Record], None], *,
                  options: dict[str, Any], out_dir: Path | None,
                  lab_config_text: str | None = None,
                  on_step: Callable[[str], None] | None = None) -> Record:
    """Run ``body(session, record)`` in a LabSession and write the record.

    The session restores every setting the body changed (success, error, Ctrl-C). On any
    exception the record is written with ``complete = False`` and the error, then the
    exception propagates; a record that cannot be written then does not hide the error.
    """
    from qkd_hw.lab.session import LabSession

    rec = Record(name=name, options=dict(options), utc_time=utc_now(),
                 lab_config_text=lab_config_text or lab_config_to_toml(config),
                 on_step=on_step)
    path = out_dir / f"{name}.h5" if out_dir is not None else None
    try:
        with LabSession(config) as session:
            rec.snapshot_json = session.snapshot_json()
            body(session, rec)
        rec.complete = True
    except BaseException as exc:
        rec.complete = False
        rec.error = (type(exc).__name__ if isinstance(exc, KeyboardInterrupt)
                     else f"{type(exc).__name__}: {exc}")
        if path is not None:
            with contextlib.suppress(QkdHwError):
                write_record(path, rec)
        raise
    if path is not None:
        write_record(path, rec)
    return rec


# -- measurement helpers -------------------------------------------------------------------


def capture(session: Any, n_samples: int, *, progress: Progress | None = None,
            timeout_s: float = 30.0) -> np.ndarray:
    """One digitizer record of ``n_samples`` codes of the detector channel."""
    ch = session.config.port("digitizer_channel")
    session.set("digitizer", "record_length", int(n_samples))
    adc = session.instrument("digitizer")
    adc.arm()
    adc.wait_acquired(timeout_s)
    return adc.fetch(ch, count=int(n_samples), progress=progress)


@dataclass(frozen=True)
class _Chain:
    """The parts of an Acquisition the NoiseMeter reads: the receiver's matched-filter bank
    (RRC at the link's IF, unit energy), the symbol period and a symbol instant."""

    bank: MatchedFilterBank
    tau0: float
    period: float


def noise_chain(link: LinkParams, options: ReceiverOptions | None = None) -> _Chain:
    """The receiver's matched filter for the link's nominal band (no carrier offset: a
    noise capture has no carrier, and white noise is the same at any mixer frequency)."""
    opt = options or ReceiverOptions()
    sps = link.sample_rate_hz / link.symbol_rate_hz
    bank = MatchedFilterBank(samples_per_symbol=sps, rolloff=link.rolloff,
                             span_symbols=opt.span(link.rolloff), n_phases=opt.n_phases,
                             mixer_cycles_per_sample=link.signal_frequency_hz
                             / link.sample_rate_hz, taper=opt.taper)
    return _Chain(bank=bank, tau0=0.0, period=sps)


def noise_stats(codes: np.ndarray, chain: _Chain) -> NoiseStats:
    """Per-quadrature variance (codes^2) of a capture through the receiver's matched filter
    (``dsp.pipeline.NoiseMeter``, as ``qkd-hw process`` measures its noise captures)."""
    meter = NoiseMeter(chain)  # type: ignore[arg-type]  # duck-typed Acquisition
    meter.feed(codes)
    return meter.result()


def preflight(session: Any, checks: list[tuple[str, str, float, str]]) -> None:
    """Refuse up front, before any setting changes, a target outside the lab's limits.

    ``checks``: ``(role, limit quantity, value, unit)``; LimitError (one line naming the
    instrument, limit and value) on the first one violated.
    """
    for role, quantity, value, unit in checks:
        session.instrument(role).check_limit(quantity, value, what=f"{role} {quantity}",
                                             unit=unit)


@contextlib.contextmanager
def bar(total: int, desc: str, *, enabled: bool,
        on_step: Callable[[str], None] | None = None) -> Iterator[Progress]:
    """tqdm progress bar on stderr (a no-op when not enabled); the callback also calls
    ``on_step(desc)``."""
    hook = on_step or (lambda _desc: None)
    if not enabled:
        yield lambda n: hook(desc)
        return
    import sys

    from tqdm import tqdm

    b = tqdm(total=total, desc=desc, unit="S", unit_scale=True, file=sys.stderr, leave=False)

    def tick(n: int) -> None:
        b.update(n)
        hook(desc)

    try:
        yield tick
    finally:
        b.close()


def psd(codes: np.ndarray, fs: float, nfft: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Welch power spectral density (codes^2/Hz) of a capture, Hann window."""
    from scipy.signal import welch

    f, p = welch(np.asarray(codes, np.float64), fs=fs, nperseg=min(nfft, len(codes)))
    return f, p
