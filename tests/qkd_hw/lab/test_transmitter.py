"""Alice's waveform against the design: the RRC band at the IF, the pilot at its frequency and
power ratio, symbol variance V_A in the DAC scaling. The segment is periodic, so its DFT bins
are exact lines of the repeated signal; references are the raised-cosine spectrum and the
matched filter built here from dsp's RRC frequency response (not the transmitter's taps)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dsp.rrc import rrc_frequency_response
from qkd_hw.errors import ConfigError
from qkd_hw.lab.transmitter import (
    TxDesign,
    make_waveform,
    segment_symbols,
    virtual_tx_levels,
)
from qkd_hw.labconfig import VirtualPhysics

DESIGN = TxDesign(symbol_rate_hz=100e6, awg_sample_rate_hz=64e9, adc_sample_rate_hz=1e9,
                  rolloff=0.2, signal_frequency_hz=150e6, pilot_frequencies_hz=(250e6,),
                  modulation_variance_snu=5.0, pilot_to_signal_db=8.0)
P = 2048


@pytest.fixture(scope="module")
def spectrum() -> tuple[np.ndarray, np.ndarray, object]:
    wf = make_waveform(DESIGN, P, np.random.default_rng(7))
    x = wf.i_codes.astype(np.float64) + 1j * wf.q_codes.astype(np.float64)
    f = np.fft.fftfreq(x.size, 1 / DESIGN.awg_sample_rate_hz)
    return f, np.fft.fft(x) / x.size, wf


def test_quantum_band_is_the_rrc_band_at_the_if(spectrum) -> None:
    f, X, _wf = spectrum
    power = np.abs(X) ** 2
    pilot = np.isclose(f, 250e6)
    assert pilot.sum() == 1
    df = np.abs(f - 150e6)
    rs, b = DESIGN.symbol_rate_hz, DESIGN.rolloff
    band = df <= rs * (1 + b) / 2
    signal = power[band].sum()
    # outside the band and the pilot: DAC rounding only (1/12 code^2 per quadrature)
    rest = power[~band & ~pilot].sum()
    assert rest < 2 * (2 / 12) and rest < 1e-3 * signal
    # raised-cosine shape: the flat part |f - f_IF| < Rs (1 - b)/2 carries 1 - b of the power
    flat = power[df < rs * (1 - b) / 2].sum() / signal
    assert flat == pytest.approx(1 - b, abs=0.02)
    # nothing at the image -f_IF (the I/Q pair is a single-sideband signal)
    assert power[np.abs(f + 150e6) <= rs * (1 + b) / 2].sum() < 1e-3 * signal


def test_pilot_at_its_frequency_and_power_ratio(spectrum) -> None:
    f, X, _wf = spectrum
    power = np.abs(X) ** 2
    k = int(np.argmax(power))
    assert f[k] == pytest.approx(250e6)
    band = np.abs(f - 150e6) <= DESIGN.symbol_rate_hz * (1 + DESIGN.rolloff) / 2
    ratio_db = 10 * math.log10(power[k] / power[band].sum())
    # the band's power is that of P Gaussian symbols: relative std sqrt(1/P) ~ 2 %
    assert ratio_db == pytest.approx(8.0, abs=0.15)


def test_symbols_have_variance_va_in_the_dac_scaling(spectrum) -> None:
    f, X, wf = spectrum
    # matched filter: down-convert, multiply by |H|, back to time, sample the symbol instants.
    # For p = rrc(m / sps_awg) / sqrt(sps_adc) (unit energy at the ADC rate) the output at a
    # symbol's centre is a_k / sqrt(sps_adc), since the integral of |H|^2 is Rs.
    n = X.size
    shift = round(150e6 * n / DESIGN.awg_sample_rate_hz)
    Xbb = np.roll(X * n, -shift)
    y = np.fft.ifft(Xbb * rrc_frequency_response(f, DESIGN.symbol_rate_hz, DESIGN.rolloff))
    a = y[:: DESIGN.sps_awg] * math.sqrt(DESIGN.sps_adc) / wf.codes_per_field
    err = a - wf.symbols
    assert np.sqrt(np.mean(np.abs(err) ** 2) / 2) < 0.01 * math.sqrt(5.0)
    per_quadrature = np.mean(np.abs(a) ** 2) / 2
    assert per_quadrature == pytest.approx(5.0, rel=4 * math.sqrt(1 / P))
    # the codes use the DAC range as designed
    peak = max(np.abs(wf.i_codes).max(), np.abs(wf.q_codes).max())
    assert peak == round(0.95 * 127)


def test_segment_lengths_give_whole_cycles_and_granularity() -> None:
    p = segment_symbols(DESIGN, 1000)
    assert p >= 1000 and p * DESIGN.sps_awg % 256 == 0
    assert (150e6 * p / 100e6).is_integer() and (250e6 * p / 100e6).is_integer()
    odd = TxDesign(**{**DESIGN.__dict__, "signal_frequency_hz": 130e6})
    assert (130e6 * segment_symbols(odd, 7) / 100e6).is_integer()
    with pytest.raises(ValueError, match="not valid"):
        make_waveform(DESIGN, 1001)


def test_design_refusals() -> None:
    with pytest.raises(ConfigError, match="integer"):
        TxDesign(**{**DESIGN.__dict__, "awg_sample_rate_hz": 64.05e9})
    with pytest.raises(ConfigError, match="pilot"):
        TxDesign(**{**DESIGN.__dict__, "pilot_frequencies_hz": ()})


def test_symbols_come_from_a_fresh_secret_seed() -> None:
    a = make_waveform(DESIGN, 64).symbols
    b = make_waveform(DESIGN, 64).symbols
    assert not np.array_equal(a, b)


def test_virtual_amplitude_reproduces_the_field_through_the_model() -> None:
    """The virtual lab's modulator driven at virtual_tx_levels gives back x (small signal)."""
    from qkd_hw.lab.model import Drive, LinkModel, LinkState

    physics = VirtualPhysics(tx_attenuation_db=57.0)
    wf = make_waveform(DESIGN, 64, np.random.default_rng(3))
    amp = virtual_tx_levels(physics, wf, tx_power_mw=20.0)
    vpc = amp / 2 / 127
    st = LinkState(tx_power_mw=20.0, lo_power_mw=5.0,
                   bias_v=physics.bias_v_offset_v + physics.bias_v_pi_v,  # the null
                   drive_i=Drive(wf.i_codes, vpc, 0.0), drive_q=Drive(wf.q_codes, vpc, 0.0),
                   awg_sample_rate_hz=64e9, voa_transmission=1.0, switch_port=1,
                   detector_enabled=True, detector_gain_v_per_a=1e4, adc_sample_rate_hz=1e9,
                   adc_range_v=0.8, adc_offset_v=0.0)
    field = LinkModel(physics, switch_signal_port=1).alice_field(st, 640)
    x = (wf.i_codes[::64][:640] + 1j * wf.q_codes[::64][:640]) / wf.codes_per_field
    # the model's field is -x (cos(pi/2 + u) = -sin u), compressed by sin u / u <= 1 %
    assert np.abs(field + x).max() < 0.01 * np.abs(x).max()
    # the quantum band's gain is -1: the 640 ADC samples are the whole periodic segment, so
    # its DFT bins separate the band from the pilot and the products of the modulator's sine
    fx, ff = np.fft.fft(x), np.fft.fft(field)
    band = np.abs(np.fft.fftfreq(640, 1e-9) - 150e6) <= 60e6
    gain = np.vdot(fx[band], ff[band]) / np.vdot(fx[band], fx[band])
    assert gain.real == pytest.approx(-1.0, abs=3e-4)
    assert abs(gain.imag) < 3e-4
