"""Snapshot of a whole lab: every instrument's :meth:`drivers.base.Instrument.snapshot`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from drivers.base import Instrument
from qkd_hw.labconfig import LabConfig

__all__ = ["lab_snapshot", "lab_snapshot_json"]


def lab_snapshot(config: LabConfig, instruments: Mapping[str, Instrument]) -> dict[str, Any]:
    """``{"lab": name, "instruments": {name: snapshot}}`` of the open ``instruments`` (by
    instrument name), each with its role from ``config``.

    Parameters
    ----------
    config : LabConfig
        The lab config the instruments were built from (for their roles).
    instruments : mapping of str to Instrument
        Open drivers by instrument name.
    """
    return {"lab": config.name,
            "instruments": {name: inst.snapshot(role=config.roles.role_of(name))
                            for name, inst in instruments.items()}}


def lab_snapshot_json(config: LabConfig, instruments: Mapping[str, Instrument]) -> str:
    """:func:`lab_snapshot` as the JSON text of the recording's ``/meta/snapshot``."""
    return json.dumps(lab_snapshot(config, instruments), allow_nan=False, sort_keys=True)
