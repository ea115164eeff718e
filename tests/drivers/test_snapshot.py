"""Instrument.snapshot(): every declared property read from the instrument (the emulator's
state is the reference), identity, channels, JSON-able, a failing read recorded as an error."""

from __future__ import annotations

import json

from drivers.emulators.keysight_n77xx import N77xxEmulator
from drivers.emulators.thorlabs_pm100d import PM100DEmulator
from drivers.keysight_n77xx import KeysightN77xxVoa
from drivers.thorlabs_pm100d import ThorlabsPM100D
from tests.drivers.scpi_helpers import config, running


def test_snapshot_reads_every_declared_property_from_the_instrument():
    with running(PM100DEmulator()) as emu, \
            ThorlabsPM100D(config("pm", "thorlabs_pm100d", emu.resource)) as pm:
        emu.wavelength_nm, emu.averaging, emu.auto_range = 1310.0, 7, False
        snap = json.loads(json.dumps(pm.snapshot(role="power_meter"), allow_nan=False))
    assert snap["role"] == "power_meter" and snap["driver"] == "thorlabs_pm100d"
    assert snap["identity"] == PM100DEmulator.IDN
    props = snap["properties"]
    declared = {n for n, v in vars(ThorlabsPM100D).items() if hasattr(v, "_read")}
    assert set(props) == declared
    assert props["wavelength_nm"] == {"value": 1310.0, "unit": "nm"}
    assert props["averaging"]["value"] == 7
    assert props["auto_range"]["value"] is False


def test_snapshot_includes_channels_and_records_a_failed_read_as_an_error():
    with running(N77xxEmulator()) as emu, \
            KeysightN77xxVoa(config("voa", "keysight_n77xx", emu.resource, timeout_s=0.3,
                                    retries=0)) as voa:
        emu.filter_att_db[3] = 17.5
        emu.output[2] = True
        emu.inject("drop", match=r"INP4:WAV\?|INP4:CHAN1:WAV\?|WAV", count=1)
        snap = voa.snapshot()
    assert set(snap["channels"]) == {"1", "2", "3", "4"}
    assert snap["channels"]["3"]["attenuation_db"]["value"] == 17.5
    assert snap["channels"]["2"]["output_enabled"]["value"] is True
    errors = [(ch, name) for ch, props in snap["channels"].items()
              for name, entry in props.items() if "error" in entry]
    assert len(errors) == 1 and "value" not in snap["channels"][errors[0][0]][errors[0][1]]
