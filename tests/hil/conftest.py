"""The hardware-in-the-loop suite: the same tests against the real lab or the emulated one.

Nightly HIL run: ``QKD_HW_LAB_CONFIG=/path/lab.toml pytest tests/hil`` opens the instruments
of that lab config. Without it (CI, a laptop) every instrument emulator is started on loopback
sockets and pseudo-terminals and a lab config pointing at them is written, so the suite itself
never rots. The HIL tests are read-only or restore what they change.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.emulators.agiltron_switch import AgiltronSwitchEmulator
from drivers.emulators.homodyne_detector import HomodyneDetectorEmulator
from drivers.emulators.keysight_infiniium import InfiniiumEmulator
from drivers.emulators.keysight_m8195a import M8195AEmulator
from drivers.emulators.keysight_n77xx import N77xxEmulator
from drivers.emulators.nkt_koheras_basik import KoherasBasikEmulator
from drivers.emulators.thorlabs_mbx import ThorlabsMbxEmulator
from drivers.emulators.thorlabs_pm100d import PM100DEmulator
from qkd_hw.labconfig import LabConfig, load_lab_config

# role -> (driver module, emulator class, lab limits written into the emulated lab config)
EMULATED_LAB = {
    "laser_tx": ("nkt_koheras_basik", KoherasBasikEmulator, "power_mw = { max = 20.0 }"),
    "laser_lo": ("nkt_koheras_basik", KoherasBasikEmulator, "power_mw = { max = 20.0 }"),
    "bias_i": ("thorlabs_mbx", ThorlabsMbxEmulator, "bias_v = { min = -10.0, max = 10.0 }"),
    "awg": ("keysight_m8195a", M8195AEmulator, "amplitude_v = { max = 0.5 }"),
    "adc": ("keysight_infiniium", InfiniiumEmulator, ""),
    "power_meter": (
        "thorlabs_pm100d", PM100DEmulator, "wavelength_nm = { min = 1500, max = 1600 }"
    ),
    "voa": ("keysight_n77xx", N77xxEmulator, "attenuation_db = { min = 0.0, max = 60.0 }"),
    "switch": ("agiltron_switch", AgiltronSwitchEmulator, ""),
    "detector": ("homodyne_detector", HomodyneDetectorEmulator, ""),
}


def _emulated_lab(tmp: Path) -> Iterator[LabConfig]:
    started = []
    lines = ['[lab]', 'name = "emulated lab (tests/hil without QKD_HW_LAB_CONFIG)"', ""]
    try:
        for role, (driver, emulator_cls, limits) in EMULATED_LAB.items():
            emu = emulator_cls().start()
            started.append(emu)
            resource = getattr(emu, "resource", None) or emu.port
            lines += [f"[instruments.{role}]", f'driver = "{driver}"',
                      f'resource = "{resource}"', "timeout_s = 2.0", ""]
            if limits:
                lines += [f"[instruments.{role}.limits]", limits, ""]
        path = tmp / "emulated-lab.toml"
        path.write_text("\n".join(lines))
        yield load_lab_config(path)
    finally:
        for emu in started:
            emu.stop()


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabConfig]:
    real = os.environ.get("QKD_HW_LAB_CONFIG")
    if real:
        yield load_lab_config(real)
    else:
        yield from _emulated_lab(tmp_path_factory.mktemp("hil"))
