"""HIL health check: every instrument of the lab opens, identifies, reads all its properties,
and is left exactly as it was found (settings before == settings after open/read/close)."""

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


def test_every_instrument_opens_reads_and_is_left_unchanged(lab: LabConfig):
    failures = []
    for name, cfg in lab.instruments.items():
        inst = create_instrument(cfg)
        try:
            with inst:
                before = _read_all(inst, settings_only=True)
                readings = _read_all(inst, settings_only=False)
                assert readings, f"{name}: driver declares no readable property"
            with create_instrument(cfg) as again:
                after = _read_all(again, settings_only=True)
        except Exception as exc:  # collect: one broken instrument must not hide the others
            failures.append(f"{name} ({cfg.driver} at {cfg.resource}): {exc}")
            continue
        if before != after:
            failures.append(f"{name}: settings changed by open/read/close: {before} -> {after}")
    if failures:
        pytest.fail("\n".join(failures))
