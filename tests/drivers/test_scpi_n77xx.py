"""Keysight N776xA VOA: bytes against the 816x/N77xx attenuator command set, round trips,
lab-config attenuation limits enforced before anything is written."""

from __future__ import annotations

import pytest

from drivers.emulators.keysight_n77xx import N77xxEmulator
from drivers.keysight_n77xx import KeysightN77xxVoa
from qkd_hw.errors import InstrumentStateError, LimitError, ProtocolError
from qkd_hw.labconfig import Limits
from tests.drivers.scpi_helpers import config, running, sent

ERR = b"SYST:ERR?"


@pytest.fixture
def pair():
    with running(N77xxEmulator()) as emu:
        voa = KeysightN77xxVoa(config("voa", "keysight_n77xx", emu.resource, timeout_s=1.0,
                                      limits=Limits.of(attenuation_db=(10.0, 40.0))))
        with voa:
            emu.clear_received()
            yield voa, emu


def test_channel_count_from_model(pair):
    voa, _emu = pair
    assert voa.n_channels == 4
    with pytest.raises(ValueError, match=r"1\.\.4"):
        voa.channel(5)


def test_channel_before_open_is_a_state_error():
    with running(N77xxEmulator()) as emu:
        voa = KeysightN77xxVoa(config("voa", "keysight_n77xx", emu.resource))
        with pytest.raises(InstrumentStateError):
            voa.channel(1)


@pytest.mark.parametrize("ch", [1, 3])
def test_attenuation_bytes_and_round_trip(pair, ch):
    voa, emu = pair
    c = voa.channel(ch)
    c.attenuation_db = 21.25
    assert sent(emu) == [f":INP{ch}:ATT 21.25".encode(), ERR]
    assert emu.attenuation_db[ch] == 21.25
    emu.clear_received()
    assert c.attenuation_db == 21.25
    assert sent(emu) == [f":INP{ch}:ATT?".encode()]


def test_wavelength_sent_in_nm_and_read_back_from_metres(pair):
    voa, emu = pair
    c = voa.channel(2)
    c.wavelength_nm = 1550.12
    assert sent(emu) == [b":INP2:WAV 1550.12NM", ERR]
    assert emu.wavelength_m[2] == pytest.approx(1550.12e-9)
    emu.clear_received()
    assert c.wavelength_nm == pytest.approx(1550.12, abs=1e-6)
    assert sent(emu) == [b":INP2:WAV?"]


def test_shutter_and_offset(pair):
    voa, emu = pair
    c = voa.channel(4)
    c.output_enabled = True
    c.offset_db = -0.5
    assert sent(emu) == [b":OUTP4:STAT 1", ERR, b":INP4:OFFS -0.5", ERR]
    assert emu.output[4] is True and emu.offset_db[4] == -0.5
    assert c.output_enabled is True and c.offset_db == -0.5
    voa.block_all()
    assert all(not v for v in emu.output.values())
    assert [m for m in sent(emu) if m.startswith(b":OUTP") and b"?" not in m][-4:] == [
        b":OUTP1:STAT 0", b":OUTP2:STAT 0", b":OUTP3:STAT 0", b":OUTP4:STAT 0"]


def test_set_attenuation_waits_for_settling(pair):
    voa, emu = pair
    emu.settle_s = 0.2
    import time

    t0 = time.perf_counter()
    voa.channel(1).set_attenuation(30.0)
    assert time.perf_counter() - t0 >= 0.19
    assert sent(emu) == [b":INP1:ATT 30", ERR, b"*OPC?"]


@pytest.mark.parametrize("value", [5.0, 40.5, 50.0, -1.0])
def test_attenuation_limits_enforced_before_any_byte(pair, value):
    voa, emu = pair
    c = voa.channel(1)
    c.attenuation_db = 20.0
    emu.clear_received()
    with pytest.raises(LimitError, match="attenuation"):
        c.attenuation_db = value
    assert emu.rx_bytes == 0
    assert emu.attenuation_db[1] == 20.0


def test_transmission_model_for_the_virtual_lab(pair):
    voa, emu = pair
    c = voa.channel(1)
    c.attenuation_db = 20.0
    assert emu.transmission(1) == 0.0  # shutter closed
    c.output_enabled = True
    assert emu.transmission(1) == pytest.approx(10 ** (-(20.0 + 1.2) / 10))


def test_other_model_refused():
    with running(N77xxEmulator()) as emu:
        emu.IDN = "Keysight Technologies,N7744A,DE1,1.0"  # a power meter, not a VOA
        voa = KeysightN77xxVoa(config("voa", "keysight_n77xx", emu.resource))
        with pytest.raises(ProtocolError, match="not a Keysight N776xA"):
            voa.open()
