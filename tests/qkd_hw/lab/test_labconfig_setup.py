"""Lab config tables that describe the setup: [roles], [link], [ramp], [virtual]. Each is
validated once; every mistake is one ConfigError naming the file and the dotted key."""

from __future__ import annotations

import pytest

from qkd_hw.errors import ConfigError
from qkd_hw.lab import example_path
from qkd_hw.labconfig import (
    lab_config_to_toml,
    load_lab_config,
    parse_lab_config_text,
)

BASE = """
[instruments.lo]
driver = "nkt_koheras_basik"
resource = "/dev/ttyUSB0"
[instruments.sw]
driver = "agiltron_switch"
resource = "/dev/ttyUSB1"
"""

LINK = """
[link]
symbol_rate_hz = 100e6
sample_rate_hz = 1e9
rolloff = 0.2
signal_frequency_hz = 150e6
modulation_variance_snu = 5.0
detector_efficiency = 0.7
"""


def parse(extra: str):
    return parse_lab_config_text(BASE + extra, source="lab.toml")


def test_setup_tables_parse_into_typed_values():
    cfg = parse('[roles]\nlo_laser = "lo"\nswitch = "sw"\nswitch_signal_port = 1\n'
                'switch_block_port = 3\n' + LINK + 'pilot_frequencies_hz = [250e6, 260e6]\n'
                '[ramp]\nbias_v_per_step = 0.25\nlo_mw_per_step = 1\n'
                '[virtual]\nfiber_loss_db = 7\nseed = 4\n')
    assert cfg.role("lo_laser").name == "lo" and cfg.port("switch_block_port") == 3
    assert cfg.roles.role_of("sw") == "switch" and cfg.roles.role_of("nothing") is None
    assert cfg.link is not None and cfg.link.pilot_frequencies_hz == (250e6, 260e6)
    assert cfg.link.detection == "heterodyne"  # default
    assert cfg.ramp.lo_mw_per_step == 1.0 and isinstance(cfg.ramp.lo_mw_per_step, float)
    assert cfg.virtual is not None and cfg.virtual.fiber_loss_db == 7.0
    assert cfg.virtual.seed == 4


@pytest.mark.parametrize(("extra", "message"), [
    ('[roles]\nlo = "lo"\n', "unknown key 'roles.lo'"),
    ('[roles]\nlo_laser = "laser"\n', "roles.lo_laser = 'laser' names no instrument"),
    ("[roles]\nswitch_signal_port = 0\n", "roles.switch_signal_port must be a channel/port"),
    ("[roles]\ndigitizer_channel = true\n", "roles.digitizer_channel must be a channel/port"),
    ("[roles]\nswitch_signal_port = 2\nswitch_block_port = 2\n", "blocking port must differ"),
    ("[link]\nsymbol_rate_hz = 1e8\n", "missing required key 'link.sample_rate_hz'"),
    (LINK + "roll_off = 0.2\n", "unknown key 'link.roll_off'"),
    (LINK.replace("rolloff = 0.2", "rolloff = 1.5"), "link.rolloff must be <= 1"),
    (LINK.replace("1e9", '"1 GHz"'), "link.sample_rate_hz must be a number, got str"),
    (LINK.replace("5.0", "true"), "link.modulation_variance_snu must be a number, got bool"),
    (LINK + 'detection = "intradyne"\n', "link.detection must be one of"),
    (LINK + "pilot_frequencies_hz = 250e6\n", "link.pilot_frequencies_hz must be a list"),
    ("[ramp]\nbias_v_per_step = 0\n", "ramp.bias_v_per_step must be > 0"),
    ("[virtual]\ndetector_efficiency = 1.2\n", "virtual.detector_efficiency must be <= 1"),
    ("[virtual]\nfiber_loss_db = -3\n", "virtual.fiber_loss_db must be >= 0"),
    ("[virtual]\nlo_saturation_mw = nan\n", "virtual.lo_saturation_mw must be finite"),
    ("[virtual]\nseed = 1.5\n", "virtual.seed must be an integer"),
    ("[virtual]\nelectronic_noise = 0.1\n", "unknown key 'virtual.electronic_noise'"),
    ("[setup]\nx = 1\n", "unknown key 'setup'"),
    (LINK.replace("150e6", "450e6"), "not below the Nyquist frequency 5e+08 Hz"),
    (LINK + "pilot_frequencies_hz = [600e6]\n", "6e+08 Hz is not below the Nyquist"),
])
def test_setup_table_mistakes_are_one_config_error(extra, message):
    with pytest.raises(ConfigError) as info:
        parse(extra)
    text = str(info.value)
    assert text.startswith("lab.toml: ") and message in text and "\n" not in text


def test_an_unset_role_is_a_config_error_naming_it():
    cfg = parse("")
    with pytest.raises(ConfigError, match=r"roles\.lo_laser is not set"):
        cfg.role("lo_laser")
    with pytest.raises(ConfigError, match=r"roles\.switch_block_port is not set"):
        cfg.port("switch_block_port")


@pytest.mark.parametrize("virtual", [False, True])
def test_to_toml_reads_back_to_the_same_config(virtual):
    cfg = load_lab_config(example_path(virtual))
    again = parse_lab_config_text(lab_config_to_toml(cfg))
    assert again.instruments.keys() == cfg.instruments.keys()
    for name, inst in cfg.instruments.items():
        other = again.instruments[name]
        assert (other.driver, other.resource, other.limits, dict(other.options)) == (
            inst.driver, inst.resource, inst.limits, dict(inst.options))
    assert (again.roles, again.link, again.ramp, again.virtual) == (
        cfg.roles, cfg.link, cfg.ramp, cfg.virtual)
    assert lab_config_to_toml(cfg, include_virtual=False).count("[virtual]") == 0
