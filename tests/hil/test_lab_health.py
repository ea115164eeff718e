"""HIL: every instrument answers, identifies, reads all its properties, and is left exactly as
it was found (settings before == settings after open/read/close). Read-only."""

from __future__ import annotations

import pytest

from drivers.base import Instrument, Property, create_instrument
from qkd_hw.labconfig import LabConfig

pytestmark = pytest.mark.hil


def _holders(inst: Instrument) -> dict[str, object]:
    """The instrument and its channel objects (``inst.channel(i)``), which carry properties."""
    out: dict[str, object] = {"": inst}
    if callable(getattr(inst, "channel", None)):
        for i in range(1, int(getattr(inst, "n_channels", 0) or 0) + 1):
            out[f"channel{i}."] = inst.channel(i)
    return out


def _properties(obj: object) -> dict[str, Property]:
    props: dict[str, Property] = {}
    for cls in reversed(type(obj).__mro__):
        props.update({n: a for n, a in vars(cls).items() if isinstance(a, Property)})
    return {n: p for n, p in sorted(props.items()) if not p.writeonly}


def _read_all(inst: Instrument, *, settings_only: bool) -> dict[str, object]:
    """Every readable property; with ``settings_only`` the writable ones (what a procedure
    could change), without the read-only readings (power, temperature, ...)."""
    return {prefix + name: getattr(obj, name)
            for prefix, obj in _holders(inst).items()
            for name, prop in _properties(obj).items()
            if not (settings_only and prop.readonly)}


def test_lab_config_names_instruments(lab: LabConfig):
    assert lab.instruments, f"{lab.source}: no instruments configured"


def test_instrument_answers_identifies_and_is_left_unchanged(lab: LabConfig,
                                                             instrument_name: str):
    cfg = lab.instruments[instrument_name]
    where = f"{instrument_name} ({cfg.driver} at {cfg.resource})"
    try:
        with create_instrument(cfg) as inst:
            identity = inst.snapshot_identity()
            before = _read_all(inst, settings_only=True)
            readings = _read_all(inst, settings_only=False)
        with create_instrument(cfg) as again:
            after = _read_all(again, settings_only=True)
    except Exception as exc:  # the message is the finding: name the instrument
        pytest.fail(f"{where}: does not answer: {exc}", pytrace=False)
    # drivers without an identification exchange (MBX: model/serial properties; the
    # Agiltron switch has none) identify by those readings, or by answering at all
    identity = identity or next((readings[k] for k in ("model", "serial_number")
                                 if readings.get(k)), None)
    if any(k in readings for k in ("model", "serial_number")) or \
            getattr(inst, "identity", None) is not None:
        assert identity, f"{where}: identity: no identification string"
    assert readings, f"{where}: driver declares no readable property"
    assert before == after, f"{where}: settings changed by open/read/close: {before} -> {after}"
