"""Virtual labs for the calibration tests: the shipped example with changed physics."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator
from typing import Any

from qkd_hw.lab import VirtualLab, example_path
from qkd_hw.labconfig import LabConfig, RampLimits, load_lab_config


@contextlib.contextmanager
def virtual(**physics: Any) -> Iterator[tuple[LabConfig, VirtualLab]]:
    """The shipped virtual lab with ``[virtual]`` fields replaced; yields (client config,
    lab). The ramp keeps the example's steps without the pause between them."""
    cfg = load_lab_config(example_path(virtual=True))
    assert cfg.virtual is not None
    cfg = dataclasses.replace(cfg, virtual=dataclasses.replace(cfg.virtual, **physics))
    with VirtualLab(cfg) as vlab:
        assert vlab.client_config is not None
        client = dataclasses.replace(
            vlab.client_config, ramp=RampLimits(bias_v_per_step=0.5, lo_mw_per_step=1.0,
                                                step_interval_s=0.0))
        yield client, vlab


#: settings every procedure may change, as the snapshot names them (readings left out)
SETTINGS = {"laser_lo": ("emission", "power_setpoint_mw"),
            "laser_tx": ("emission", "power_setpoint_mw"),
            "bias_i": ("mode", "hold_voltage_v"), "switch": ("channel",),
            "detector": ("enabled", "gain_step"),
            "adc": ("record_length", "sample_rate_hz")}


def settings(vlab: VirtualLab) -> dict[str, Any]:
    """The lab's settings now: the physics state and the instruments' set points, read from
    the emulators through a fresh whole-lab snapshot."""
    from qkd_hw.lab.session import LabSession

    assert vlab.client_config is not None
    with LabSession(vlab.client_config) as s:
        snap = json.loads(s.snapshot_json())["instruments"]
    out: dict[str, Any] = {f"{n}.{p}": snap[n]["properties"][p]["value"]
                           for n, props in SETTINGS.items() for p in props}
    out["state"] = vlab.state()
    return out
