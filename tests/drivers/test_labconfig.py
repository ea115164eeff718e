"""Lab config: TOML -> frozen dataclasses; every mistake is a ConfigError naming file and key."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from qkd_hw.errors import ConfigError
from qkd_hw.labconfig import LIMIT_QUANTITIES, Interval, Limits, load_lab_config

VALID = """
[lab]
name = "Bob"

[instruments.awg]
driver = "keysight_m8195a"
resource = "TCPIP::10.0.0.5::5025::SOCKET"
timeout_s = 5.0
retries = 1

[instruments.awg.limits]
amplitude_v = { max = 0.5 }
sample_rate_hz = { min = 60e9, max = 64e9 }

[instruments.voa]
driver = "keysight_n77xx"
resource = "TCPIP::10.0.0.6::5025::SOCKET"

[instruments.voa.limits]
attenuation_db = { min = 10, max = 60.0 }
wavelength_nm = { min = 1530.0, max = 1565.0 }

[instruments.laser]
driver = "nkt_koheras_basik"
resource = "/dev/ttyUSB0"
visa_library = "@py"
[instruments.laser.options]
baudrate = 115200
"""


def write(tmp_path: Path, text: str, name: str = "lab.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_valid_config_loads_into_frozen_typed_objects(tmp_path):
    p = write(tmp_path, VALID)
    cfg = load_lab_config(p)
    assert cfg.name == "Bob" and cfg.path == p
    assert sorted(cfg.instruments) == ["awg", "laser", "voa"]
    awg = cfg.instrument("awg")
    assert awg.driver == "keysight_m8195a"
    assert awg.resource == "TCPIP::10.0.0.5::5025::SOCKET"
    assert awg.timeout_s == 5.0 and awg.retries == 1
    assert awg.limits.get("amplitude_v") == Interval(None, 0.5)
    assert awg.limits.get("sample_rate_hz") == Interval(60e9, 64e9)
    assert awg.limits.get("power_dbm") is None
    voa = cfg.instrument("voa")
    assert voa.timeout_s == 2.0 and voa.retries == 2 and voa.visa_library == "@py"  # defaults
    att = voa.limits.get("attenuation_db")
    assert att == Interval(10.0, 60.0) and isinstance(att.min, float)
    assert 10.0 in att and 9.99 not in att and 60.01 not in att
    assert cfg.instrument("laser").options == {"baudrate": 115200}
    assert awg.source == str(p)
    # frozen all the way down
    with pytest.raises(dataclasses.FrozenInstanceError):
        awg.timeout_s = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.instruments["x"] = awg  # type: ignore[index]
    with pytest.raises(TypeError):
        awg.limits.intervals["power_dbm"] = Interval(0, 1)  # type: ignore[index]
    with pytest.raises(TypeError):
        cfg.instrument("laser").options["baudrate"] = 9600  # type: ignore[index]


def test_unknown_instrument_name_lookup(tmp_path):
    cfg = load_lab_config(write(tmp_path, VALID))
    with pytest.raises(ConfigError, match=r"lab\.toml.*no instrument 'scope'"):
        cfg.instrument("scope")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (VALID + "\n[extra]\nx = 1\n", "'extra'"),
        (VALID.replace("retries = 1", "retries = 1\nretry = 2"), "instruments.awg.retry"),
        (VALID.replace('name = "Bob"', 'name = "Bob"\nsite = "DTU"'), "lab.site"),
        (VALID.replace("amplitude_v = { max = 0.5 }", "amplitude_vpp = { max = 0.5 }"),
         "instruments.awg.limits.amplitude_vpp"),
        (VALID.replace("amplitude_v = { max = 0.5 }", "amplitude_v = { maximum = 0.5 }"),
         "instruments.awg.limits.amplitude_v.'maximum'"),
    ],
)
def test_unknown_keys_are_errors_naming_file_and_key(tmp_path, text, key):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as ei:
        load_lab_config(p)
    msg = str(ei.value)
    assert str(p) in msg
    assert "unknown key" in msg
    assert key.replace("'", "") in msg.replace("'", "")


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("timeout_s = 5.0", 'timeout_s = "5"', "instruments.awg.timeout_s"),
        ("timeout_s = 5.0", "timeout_s = true", "instruments.awg.timeout_s"),
        ("timeout_s = 5.0", "timeout_s = -1.0", "instruments.awg.timeout_s"),
        ("retries = 1", "retries = 1.5", "instruments.awg.retries"),
        ("retries = 1", "retries = true", "instruments.awg.retries"),
        ('driver = "keysight_m8195a"', "driver = 3", "instruments.awg.driver"),
        ("amplitude_v = { max = 0.5 }", 'amplitude_v = { max = "0.5" }',
         "instruments.awg.limits.amplitude_v.max"),
        ("amplitude_v = { max = 0.5 }", "amplitude_v = 0.5", "instruments.awg.limits.amplitude_v"),
        ("amplitude_v = { max = 0.5 }", "amplitude_v = { min = 1.0, max = 0.5 }",
         "instruments.awg.limits.amplitude_v"),
        ("amplitude_v = { max = 0.5 }", "amplitude_v = { max = nan }",
         "instruments.awg.limits.amplitude_v.max"),
        ("baudrate = 115200", "baudrate = [1, 2]", "instruments.laser.options.baudrate"),
    ],
)
def test_wrong_types_are_errors_naming_file_and_key(tmp_path, old, new, key):
    assert old in VALID
    p = write(tmp_path, VALID.replace(old, new, 1))
    with pytest.raises(ConfigError) as ei:
        load_lab_config(p)
    assert str(p) in str(ei.value)
    assert key in str(ei.value)


@pytest.mark.parametrize(
    ("old", "key"),
    [
        ('driver = "keysight_m8195a"\n', "instruments.awg.driver"),
        ('resource = "TCPIP::10.0.0.6::5025::SOCKET"\n', "instruments.voa.resource"),
    ],
)
def test_missing_required_keys(tmp_path, old, key):
    p = write(tmp_path, VALID.replace(old, "", 1))
    with pytest.raises(ConfigError, match=re.escape(key)) as ei:
        load_lab_config(p)
    assert "missing required key" in str(ei.value) and str(p) in str(ei.value)


def test_missing_instruments_table_and_bad_files(tmp_path):
    p = write(tmp_path, '[lab]\nname = "x"\n')
    with pytest.raises(ConfigError, match="missing required table 'instruments'"):
        load_lab_config(p)
    bad = write(tmp_path, "[instruments.awg\n", "broken.toml")
    with pytest.raises(ConfigError, match=r"broken\.toml: invalid TOML"):
        load_lab_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_lab_config(tmp_path / "nope.toml")


def test_limits_in_code_validate_names():
    lim = Limits.of(power_dbm=(None, 10.0), attenuation_db=Interval(3, 60))
    assert lim.get("power_dbm") == Interval(None, 10.0)
    with pytest.raises(ValueError, match="unknown limit"):
        Limits.of(power=(0, 1))
    with pytest.raises(KeyError):
        lim.get("not_a_quantity")
    assert set(LIMIT_QUANTITIES) >= {"power_dbm", "attenuation_db", "wavelength_nm",
                                     "amplitude_v", "bias_v"}


# -- limits built in code are validated like the file (a NaN bound would disable the limit) ----


@pytest.mark.parametrize(
    ("lo", "hi", "match"),
    [
        (float("nan"), 1.0, "finite"),
        (-4.0, float("nan"), "finite"),
        (None, float("inf"), "finite"),
        (float("-inf"), None, "finite"),
        (2.0, 1.0, "min 2 > max 1"),
        ("0", 1.0, "number"),
        (True, None, "number"),
        (None, [1.0], "number"),
    ],
)
def test_interval_in_code_is_validated(lo, hi, match):
    with pytest.raises(ValueError, match=match):
        Interval(lo, hi)


def test_interval_in_code_normalises_to_float_and_keeps_open_sides():
    iv = Interval(1, 3)
    assert isinstance(iv.min, float) and isinstance(iv.max, float)
    assert iv == Interval(1.0, 3.0) and 2 in iv and 3.5 not in iv
    assert Interval(None, 5.0).min is None and -1e300 in Interval(None, 5.0)
    assert float("nan") not in Interval(None, 5.0)  # a NaN value is never inside a limit


@pytest.mark.parametrize(
    "build",
    [
        lambda: Limits.of(bias_v=(-4.0, float("nan"))),
        lambda: Limits.of(bias_v=(float("nan"), None)),
        lambda: Limits.of(bias_v=(5.0, -5.0)),
        lambda: Limits.of(bias_v=(1.0,)),
        lambda: Limits.of(bias_v=4.0),
        lambda: Limits({"bias_v": (-4.0, 4.0)}),  # a tuple where an Interval belongs
        lambda: Limits({"bias_v": None}),
    ],
)
def test_limits_in_code_are_validated(build):
    with pytest.raises(ValueError, match="bias_v"):
        build()


def test_instrument_config_in_code_validates_its_limits_and_numbers():
    from qkd_hw.labconfig import InstrumentConfig

    with pytest.raises(ValueError, match="limits must be a Limits"):
        InstrumentConfig(name="x", driver="d", resource="r",
                         limits={"bias_v": Interval(-4, 4)})  # type: ignore[arg-type]
    for bad in (1.5, True, "2"):
        with pytest.raises(ValueError, match="retries"):
            InstrumentConfig(name="x", driver="d", resource="r", retries=bad)  # type: ignore
    for bad in (float("nan"), True, "2", 0.0):
        with pytest.raises(ValueError, match="timeout_s"):
            InstrumentConfig(name="x", driver="d", resource="r", timeout_s=bad)  # type: ignore


def test_fifo_or_directory_as_lab_config_is_refused_not_blocking(tmp_path):
    # opening a FIFO blocks until a writer comes: the load runs in a thread, and a writer
    # releases it if the check is missing, so that the test fails instead of hanging
    import os
    import threading

    fifo = tmp_path / "lab.toml"
    os.mkfifo(fifo)
    out: list[BaseException | None] = []

    def load() -> None:
        try:
            load_lab_config(fifo)
            out.append(None)
        except BaseException as exc:   # handed to the test thread
            out.append(exc)

    t = threading.Thread(target=load, daemon=True)
    t.start()
    t.join(5.0)
    if t.is_alive():
        with open(fifo, "wb"):
            pass
        t.join(5.0)
        pytest.fail("load_lab_config blocked on a FIFO")
    assert isinstance(out[0], ConfigError) and "is a FIFO (named pipe)" in str(out[0])
    with pytest.raises(ConfigError, match="is a directory, not a lab config file"):
        load_lab_config(tmp_path)
