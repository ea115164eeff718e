"""Keysight N776xA VOA: bytes against the 816x/N77xx attenuator command set, round trips,
lab-config attenuation limits enforced before anything is written."""

from __future__ import annotations

import pytest

from drivers.emulators.keysight_n77xx import N77xxEmulator
from drivers.keysight_n77xx import KeysightN77xxVoa
from qkd_hw.errors import (
    InstrumentReportedError,
    InstrumentStateError,
    LimitError,
    ProtocolError,
)
from qkd_hw.labconfig import Limits
from tests.drivers.scpi_helpers import config, running, sent

ERR = b"SYST:ERR?"


def range_queries(ch: int) -> list[bytes]:
    return [f":INP{ch}:OFFS?".encode(), f":INP{ch}:ATT? MIN".encode(),
            f":INP{ch}:ATT? MAX".encode()]


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
    # offset and range first (the lab limit bounds the filter attenuation), then the setting
    assert sent(emu) == [*range_queries(ch), f":INP{ch}:ATT 21.25".encode(), ERR]
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
    assert sent(emu) == [*range_queries(1), b":INP1:ATT 30", ERR, b"*OPC?"]


@pytest.mark.parametrize("value", [5.0, 40.5, 50.0, -1.0])
def test_attenuation_limits_enforced_before_the_setting_is_sent(pair, value):
    voa, emu = pair
    c = voa.channel(1)
    c.attenuation_db = 20.0
    emu.clear_received()
    with pytest.raises(LimitError, match="attenuation"):
        c.attenuation_db = value
    assert sent(emu) == range_queries(1)  # read-only queries, no setting
    assert emu.attenuation_db[1] == 20.0


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "20", None])
def test_attenuation_that_is_not_a_number_is_refused_before_any_byte(pair, value):
    voa, emu = pair
    with pytest.raises(LimitError, match="attenuation"):
        voa.channel(1).attenuation_db = value
    assert emu.rx_bytes == 0


# -- offset: alpha = alpha_filter + alpha_offset; the lab limit bounds alpha_filter ------------


def test_offset_does_not_bypass_the_lab_limit_on_the_filter_attenuation(pair):
    """r01: offset 20 dB + attenuation 20 dB = 0 dB filter, below the 10 dB lab minimum."""
    voa, emu = pair
    c = voa.channel(1)
    c.offset_db = 20.0
    emu.clear_received()
    with pytest.raises(LimitError, match=r"filter attenuation.*attenuation_db \[10, 40\]"):
        c.attenuation_db = 20.0
    assert sent(emu) == range_queries(1)
    assert emu.filter_db(1) == 0.0 and emu.attenuation_db[1] == 20.0  # untouched
    # filter 50 - 20 = 30 dB is inside [10, 40]: displayed 50 dB is allowed with this offset
    c.attenuation_db = 50.0
    assert sent(emu)[-2:] == [b":INP1:ATT 50", ERR]
    assert emu.filter_db(1) == pytest.approx(30.0)
    assert c.filter_attenuation_db() == pytest.approx(30.0)
    with pytest.raises(LimitError, match="filter attenuation"):
        c.attenuation_db = 60.5  # filter 40.5 dB > 40
    assert emu.filter_db(1) == pytest.approx(30.0)


@pytest.mark.parametrize("how", ["front panel", "OFFS:DISP"])
def test_offset_changed_behind_the_drivers_back_is_read_before_every_setting(pair, how):
    voa, emu = pair
    c = voa.channel(2)
    c.attenuation_db = 25.0
    if how == "front panel":
        emu.set_offset(2, 15.0)  # filter stays 25 dB, display 40 dB
    else:
        voa.write(":INP2:OFFS:DISP", idempotent=True)  # offset -25 dB, display 0 dB
    emu.clear_received()
    target = 15.0 if how == "front panel" else -20.0  # both: filter 0 / 5 dB < 10 dB
    with pytest.raises(LimitError, match="filter attenuation"):
        c.attenuation_db = target
    assert sent(emu) == range_queries(2)
    assert emu.filter_db(2) == pytest.approx(25.0)


def test_changing_the_offset_keeps_the_filter_attenuation(pair):
    """Manual: the offset 'does not affect the filter attenuation'; only the displayed
    attenuation factor moves, so an offset change cannot take the light past the limit."""
    voa, emu = pair
    c = voa.channel(1)
    c.attenuation_db = 20.0
    c.output_enabled = True
    t = emu.transmission(1)
    for offset in (20.0, -15.0, 200.0, -200.0):
        c.offset_db = offset
        assert emu.filter_db(1) == pytest.approx(20.0)
        assert emu.transmission(1) == pytest.approx(t)
        assert c.attenuation_db == pytest.approx(20.0 + offset)
    with pytest.raises(LimitError, match="offset"):
        c.offset_db = 200.5


def test_instrument_range_comes_from_the_instrument():
    """ATT? MIN is where the filter is at 0 dB (= the offset), MAX where it is greatest."""
    with running(N77xxEmulator()) as wide:
        wide.FILTER_MAX_DB = 60.0
        v = KeysightN77xxVoa(config("voa", "keysight_n77xx", wide.resource, timeout_s=1.0,
                                    limits=Limits.of(attenuation_db=(0.0, 70.0))))
        with v:
            c = v.channel(1)
            c.offset_db = 30.0
            c.attenuation_db = 85.0  # filter 55 dB: beyond the old fixed 45 dB, legal here
            assert wide.filter_db(1) == pytest.approx(55.0)
            wide.clear_received()
            with pytest.raises(LimitError, match=r"instrument range \[30, 90\]"):
                c.attenuation_db = 25.0  # below MIN = offset: would be a negative filter
            with pytest.raises(LimitError, match=r"instrument range \[30, 90\]"):
                c.attenuation_db = 90.5
            assert sent(wide) == range_queries(1) * 2


def test_unusable_range_reply_is_a_protocol_error_and_nothing_is_set(pair):
    voa, emu = pair
    emu.inject("garble", match=r"ATT\? MAX", payload=b"nan", count=10)
    with pytest.raises(ProtocolError, match="ATT"):
        voa.channel(1).attenuation_db = 20.0
    assert b":INP1:ATT 20" not in sent(emu)
    assert emu.attenuation_db[1] == 0.0


# -- emulator follows the manual --------------------------------------------------------------


def test_emulator_attenuation_range_moves_with_the_offset(pair):
    """r01b: with offset 30 dB, ATT? MIN is 30 dB and ATT 10 is refused (-222) instead of
    giving a -20 dB filter (optical gain)."""
    voa, emu = pair
    voa.write(":INP1:OFFS 30", idempotent=True)
    assert voa.query(":INP1:ATT? MIN") == "+3.00000000E+01"
    assert voa.query(":INP1:ATT? DEF") == "+3.00000000E+01"
    assert voa.query(":INP1:ATT? MAX") == "+7.50000000E+01"
    with pytest.raises(InstrumentReportedError, match="-222"):
        voa.write(":INP1:ATT 10", idempotent=True)
    assert emu.filter_db(1) == 0.0
    voa.write(":INP1:ATT MIN", idempotent=True)
    assert emu.filter_db(1) == 0.0 and emu.attenuation_db[1] == 30.0
    voa.write(":INP1:ATT MAX", idempotent=True)
    assert emu.filter_db(1) == 45.0
    voa.write(":INP1:OFFS:DISP", idempotent=True)  # offset = -filter: display 0 dB
    assert emu.offset_db[1] == -45.0 and emu.attenuation_db[1] == 0.0
    assert emu.filter_db(1) == 45.0
    assert voa.query(":INP1:OFFS? MIN") == "-2.00000000E+02"
    assert voa.query(":INP1:OFFS? MAX") == "+2.00000000E+02"


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
