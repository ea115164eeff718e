"""SimParams: derived quantities, validation and (de)serialisation."""

from __future__ import annotations

import math

import pytest

from qkd_hw.errors import ConfigError
from qkd_hw.sim import SimParams, parse_assignments
from qkd_hw.sim.pulse import auto_span_symbols


def test_defaults_match_the_reference_link():
    p = SimParams()
    assert p.t_eff == pytest.approx(math.sqrt(0.7 * 0.5 / 2))  # heterodyne: eta T / 2
    assert SimParams(detection="homodyne").t_eff == pytest.approx(math.sqrt(0.7 * 0.5))
    assert p.samples_per_symbol == 10.0
    assert p.rrc_span_symbols == auto_span_symbols(0.2, 5.0)
    assert p.tail_samples >= p.half_span * p.samples_per_symbol
    # S / 2 = t sqrt(N0) with N0 = sigma_shot^2 / 2 per quadrature
    assert p.signal_amplitude_codes / 2 == pytest.approx(p.t_eff * 35.0 / math.sqrt(2))
    # pilot power A^2/2 = 10^(dB/10) * sigma_shot^2
    assert p.pilot_amplitudes_codes[0] ** 2 / 2 == pytest.approx(10 ** 1.7 * 35.0 ** 2)
    # analog electronic noise + 1/12 code^2 quantisation = v_el sigma_shot^2
    assert p.electronic_rms_analog_codes ** 2 + 1 / 12 == pytest.approx(0.1 * 35.0 ** 2)


def test_clock_offset_stretches_the_symbol_grid():
    p = SimParams(clock_offset_ppm=100.0)
    assert p.samples_per_symbol_eff == pytest.approx(10.0 / 1.0001)
    assert p.signal_samples(1000) == math.ceil(1500 + 999 * 10 / 1.0001) + 1 + p.tail_samples


def test_per_pilot_lists_broadcast():
    p = SimParams(pilot_frequencies_hz=(250e6, 300e6, 40e6), pilot_powers_dbsn=(12.0,))
    assert p.pilot_powers_dbsn == (12.0, 12.0, 12.0)
    assert p.pilot_phases_rad == (0.0, 0.0, 0.0)
    q = parse_assignments(["pilot_frequencies_hz=250e6,40e6"])
    assert q.pilot_powers_dbsn == (17.0, 17.0)
    with pytest.raises(ConfigError, match="needs 1 or 2 entries"):
        SimParams(pilot_frequencies_hz=(250e6, 40e6), pilot_powers_dbsn=(1.0, 2.0, 3.0))


def test_attrs_round_trip():
    p = SimParams(detection="homodyne", pilot_frequencies_hz=(250e6, 40e6), linewidth_hz=5.0)
    assert SimParams.from_attrs(p.to_attrs()) == p
    with pytest.raises(ConfigError, match="missing from the truth"):
        SimParams.from_attrs({"transmittance": 0.5})


def test_replace_validates_and_rejects_unknown_names():
    with pytest.raises(ConfigError, match="unknown simulator parameter"):
        SimParams().replace(transmitance=0.5)
    with pytest.raises(ConfigError, match="out of range"):
        SimParams().replace(efficiency=0.0)


@pytest.mark.parametrize("kw, message", [
    (dict(rolloff=0.0), "rolloff"),
    (dict(rolloff=1.01), "rolloff"),
    (dict(rrc_span_symbols=33), "even"),
    (dict(frequency_offset_hz=-100e6), "quantum band"),  # lower edge below DC
    (dict(pilot_frequencies_hz=(211e6,)), "overlaps the quantum band"),  # 60 + 2 MHz guard
    (dict(pilot_frequencies_hz=(499e6,), frequency_offset_hz=2e6), "Nyquist"),
    (dict(pilot_frequencies_hz=()), "1..8 entries"),
    (dict(adc_dtype="int12"), "adc_dtype"),
    (dict(adc_dtype="int8"), "adc_bits = 12 is out of range; allowed \\[2, 8\\]"),
    (dict(adc_dtype="int8", adc_bits=8, adc_shot_noise_rms_codes=200.0),
     "adc_shot_noise_rms_codes"),
    (dict(delay_samples=-1.0), "delay_samples"),
    (dict(clock_offset_ppm=2000.0), "clock_offset_ppm"),
    (dict(linewidth_hz=float("nan")), "finite"),
    (dict(pilot_phases_rad=(float("nan"),)), "pilot_phases_rad\\[0\\] must be finite"),
    (dict(electronic_noise_snu=0.0), "least the ADC allows"),
])
def test_validation_names_the_problem(kw, message):
    with pytest.raises(ConfigError, match=message):
        SimParams(**kw)


def test_zero_electronic_noise_needs_an_unquantised_adc():
    assert SimParams(electronic_noise_snu=0.0, adc_dtype="float32").electronic_rms_analog_codes == 0


def test_pilot_just_outside_the_guard_is_accepted():
    half = 1.2 * 100e6 / 2
    SimParams(pilot_frequencies_hz=(150e6 + half + 2e6 + 1.0,))


def test_every_parameter_is_documented():
    from qkd_hw.sim.params import FIELD_DOCS, field_help

    assert set(FIELD_DOCS) == set(SimParams.names()) == set(field_help())


def test_seed_beyond_int64_refused_before_anything_is_written(tmp_path):
    from qkd_hw.sim.simulate import simulate_recording

    with pytest.raises(ConfigError, match="seed"):
        simulate_recording(tmp_path / "x.h5", SimParams(), seed=2**63, n_symbols=1000)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kw, message", [
    ({"preamble_kind": "zadoff-chu"}, "preamble_kind='zadoff-chu' with preamble_samples=0"),
    ({"preamble_samples": 100}, "preamble_kind='none' with preamble_samples=100"),
    ({"preamble_kind": "chirp", "preamble_samples": 100}, "preamble_kind must be one of"),
    ({"pilot_gate": "sometimes"}, "pilot_gate must be one of"),
    # the first pulse (delay - half span) must start after lead + preamble
    ({"lead_samples": 1000, "preamble_kind": "noise", "preamble_samples": 400,
      "delay_samples": 1500.0}, "inside the lead_samples=1000 + preamble_samples=400"),
])
def test_framing_validation_names_the_problem(kw, message):
    with pytest.raises(ConfigError, match=message.replace("+", r"\+")):
        SimParams(**kw)


def test_truth_without_framing_fields_reads_as_unframed():
    # recordings simulated before the framing fields existed
    attrs = {k: v for k, v in SimParams().to_attrs().items()
             if k not in ("lead_samples", "preamble_kind", "preamble_samples",
                          "preamble_power_dbsn", "pilot_gate")}
    p = SimParams.from_attrs(attrs)
    assert p == SimParams() and not p.framed
