"""Alice's transmitter: Gaussian symbols, RRC shaping, IF up-conversion, pilot tone(s), DAC codes.

The waveform is one AWG segment that the AWG plays cyclically: ``P`` symbols (the *segment
symbols*) shaped by the project's truncated RRC (:func:`qkd_hw.sim.pulse.truncated_rrc`,
span :func:`~qkd_hw.sim.pulse.auto_span_symbols`) by a *cyclic* convolution, so the segment
joins itself without a seam, and up-converted to the IF; the pilot tone(s) are added at the
AWG rate. The complex baseband ``x[n]`` (I = real part on ``awg_i_channel``, Q = imaginary
part on ``awg_q_channel``) is Alice's output field in the units of the virtual lab's model
(quadrature units per *ADC* sample, vacuum variance 1 per quadrature): a receiver's
unit-energy matched filter at the ADC rate returns the symbols in SNU. Its scale:

* symbol ``k`` is centred at AWG sample ``k * sps_awg`` (``sps_awg = f_awg / R_s``, an
  integer), pulse ``p[m] = truncated_rrc(m / sps_awg) / sqrt(sps_adc)`` (unit energy in ADC
  samples, ``sps_adc = f_adc / R_s``);
* symbols ``a_k = sqrt(V_A) (g + j g')`` with ``g, g'`` standard normal from a numpy
  Generator seeded by :func:`secrets.randbits` (128 bits): per-quadrature variance ``V_A``;
* each pilot ``A e^{j 2 pi f_p t}`` with ``A^2 = 10^(pilot_to_signal_db / 10) * 2 V_A /
  sps_adc`` (power ratio to the quantum band's mean power per sample);
* DAC codes ``round(G x)`` with ``G`` (codes per field unit) putting the largest ``|I|``,
  ``|Q|`` at ``peak_fraction * 127``.

For a seamless cyclic segment, the IF and every pilot must be whole multiples of
``R_s / P`` (whole cycles per segment) and the segment (``P * sps_awg`` samples) a multiple
of the AWG's 256-sample granularity: :func:`segment_symbols` picks the smallest valid ``P``
at or above a wanted count.

How many field units a code is at the modulator output is the job of the V_A calibration
(AWG amplitude, Tx laser power); :func:`virtual_tx_levels` computes it from the virtual lab's
``[virtual]`` truth, the stand-in for that calibration on the virtual lab only.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import scipy.fft as sfft

from qkd_hw.errors import ConfigError, ResourceError
from qkd_hw.labconfig import LinkParams, VirtualPhysics
from qkd_hw.sim.pulse import auto_span_symbols, truncated_rrc
from qkd_hw.sizes import available_memory_bytes, gib

__all__ = ["TxDesign", "TxWaveform", "make_waveform", "secure_rng", "segment_symbols",
           "virtual_tx_levels"]

#: AWG segment granularity and minimum length (M8195A), samples
GRANULARITY = 256
MIN_SEGMENT = 1280
DAC_MAX_CODE = 127
PLANCK_J_S = 6.62607015e-34
LIGHT_M_S = 299_792_458.0
#: peak working memory of make_waveform per AWG sample (complex128 spectra, measured ~80)
BYTES_PER_SAMPLE = 96


@dataclass(frozen=True)
class TxDesign:
    """What the transmitter generates (from the lab config's ``[link]`` plus the DAC design).

    Attributes
    ----------
    symbol_rate_hz, awg_sample_rate_hz, adc_sample_rate_hz : float
        ``awg_sample_rate_hz / symbol_rate_hz`` must be an integer.
    rolloff : float
        RRC roll-off.
    signal_frequency_hz : float
        IF of the quantum band.
    pilot_frequencies_hz : tuple of float
        Pilot tone frequencies (at least one).
    modulation_variance_snu : float
        V_A per quadrature at Alice's output (the calibration makes it so).
    pilot_to_signal_db : float
        Power of each pilot over the quantum band's mean power per sample.
    span_symbols : int
        RRC truncation (0: :func:`~qkd_hw.sim.pulse.auto_span_symbols`).
    peak_fraction : float
        Largest DAC code as a fraction of 127.
    """

    symbol_rate_hz: float
    awg_sample_rate_hz: float
    adc_sample_rate_hz: float
    rolloff: float
    signal_frequency_hz: float
    pilot_frequencies_hz: tuple[float, ...]
    modulation_variance_snu: float
    pilot_to_signal_db: float = 10.0
    span_symbols: int = 0
    peak_fraction: float = 0.95

    def __post_init__(self) -> None:
        if self.span_symbols == 0:
            object.__setattr__(self, "span_symbols", auto_span_symbols(
                self.rolloff, self.modulation_variance_snu))
        if not self.pilot_frequencies_hz:
            raise ConfigError("transmitter: link.pilot_frequencies_hz is empty (the receiver "
                              "needs a pilot tone)")
        if not 0 < self.peak_fraction <= 1:
            raise ValueError(f"peak_fraction must be in (0, 1], got {self.peak_fraction!r}")
        ratio = self.awg_sample_rate_hz / self.symbol_rate_hz
        if abs(ratio - round(ratio)) > 1e-9 * ratio:
            raise ConfigError(f"transmitter: link.awg_sample_rate_hz / link.symbol_rate_hz = "
                              f"{ratio:g} must be an integer (symbols on the AWG sample grid)")

    @classmethod
    def from_link(cls, link: LinkParams, **design: float) -> TxDesign:
        """The design for a lab config's ``[link]`` (``awg_sample_rate_hz`` required)."""
        if link.awg_sample_rate_hz is None:
            raise ConfigError("transmitter: link.awg_sample_rate_hz is not set")
        return cls(symbol_rate_hz=link.symbol_rate_hz,
                   awg_sample_rate_hz=link.awg_sample_rate_hz,
                   adc_sample_rate_hz=link.sample_rate_hz, rolloff=link.rolloff,
                   signal_frequency_hz=link.signal_frequency_hz,
                   pilot_frequencies_hz=tuple(link.pilot_frequencies_hz),
                   modulation_variance_snu=link.modulation_variance_snu, **design)

    @property
    def sps_awg(self) -> int:
        """AWG samples per symbol."""
        return round(self.awg_sample_rate_hz / self.symbol_rate_hz)

    @property
    def sps_adc(self) -> float:
        """ADC samples per symbol."""
        return self.adc_sample_rate_hz / self.symbol_rate_hz

    @property
    def pilot_amplitude(self) -> float:
        """Amplitude of each pilot tone, field units."""
        return math.sqrt(10 ** (self.pilot_to_signal_db / 10)
                         * 2 * self.modulation_variance_snu / self.sps_adc)


def secure_rng() -> np.random.Generator:
    """A numpy Generator seeded from :func:`secrets.randbits` (128 bits): Alice's symbols
    must not be predictable from anything Eve could know (a fixed or time-based seed)."""
    return np.random.default_rng(secrets.randbits(128))


def _step_symbols(design: TxDesign) -> int:
    """Smallest ``q`` such that every valid segment length is a multiple of ``q`` symbols."""
    q = 1
    rs = Fraction(design.symbol_rate_hz).limit_denominator(10**6)
    for f in (design.signal_frequency_hz, *design.pilot_frequencies_hz):
        cycles_per_symbol = Fraction(f).limit_denominator(10**6) / rs   # f P / Rs integer
        q = math.lcm(q, cycles_per_symbol.denominator)
    # P * sps_awg a multiple of the granularity
    q = math.lcm(q, GRANULARITY // math.gcd(GRANULARITY, design.sps_awg))
    return q


def segment_symbols(design: TxDesign, wanted: int) -> int:
    """Smallest valid segment length (symbols) >= ``wanted`` (see the module docstring)."""
    q = _step_symbols(design)
    p = max(q, -(-int(wanted) // q) * q)
    while p * design.sps_awg < MIN_SEGMENT:
        p += q
    return p


@dataclass(frozen=True)
class TxWaveform:
    """One generated AWG segment.

    Attributes
    ----------
    design : TxDesign
    symbols : ndarray, complex128 [P]
        Alice's symbols of the segment in SNU (symbol ``k`` centred at AWG sample
        ``k * design.sps_awg``).
    i_codes, q_codes : ndarray, int8 [P * sps_awg]
        DAC codes of the I and Q channels.
    codes_per_field : float
        ``G``: DAC codes per field unit (the calibration maps codes back to the field).
    """

    design: TxDesign
    symbols: np.ndarray
    i_codes: np.ndarray
    q_codes: np.ndarray
    codes_per_field: float

    @property
    def segment_symbols(self) -> int:
        return int(self.symbols.size)

    def symbols_seen(self, first: int, count: int) -> np.ndarray:
        """``count`` symbols from segment symbol ``first`` on, repeating cyclically (what a
        capture spanning several segment periods saw), complex64."""
        idx = (np.arange(count, dtype=np.int64) + first) % self.symbols.size
        return self.symbols[idx].astype(np.complex64)


def make_waveform(design: TxDesign, n_symbols: int,
                  rng: np.random.Generator | None = None) -> TxWaveform:
    """Generate a segment of ``n_symbols`` symbols (a valid length: :func:`segment_symbols`).

    Parameters
    ----------
    design : TxDesign
    n_symbols : int
        Segment length in symbols.
    rng : numpy Generator, optional
        Source of the symbols; default :func:`secure_rng`. (Tests pass a seeded one.)
    """
    p = int(n_symbols)
    if p != segment_symbols(design, p):
        raise ValueError(f"segment of {p} symbols is not valid for this design; use "
                         f"segment_symbols() (multiples of {_step_symbols(design)})")
    sps = design.sps_awg
    n = p * sps
    need, (have, source) = n * BYTES_PER_SAMPLE, available_memory_bytes()
    if need > have // 2:
        raise ResourceError(f"transmitter: a segment of {p} symbols ({n} AWG samples) needs "
                            f"~{gib(need)} to generate, more than half the {gib(have)} of "
                            f"{source}; use a shorter segment")
    rng = secure_rng() if rng is None else rng
    va = design.modulation_variance_snu
    symbols = math.sqrt(va) * (rng.standard_normal(p) + 1j * rng.standard_normal(p))
    # cyclic pulse: taps at m / sps for |m| <= L sps, wrapped around the segment
    half = design.span_symbols // 2
    m = np.arange(-half * sps, half * sps + 1)
    taps = truncated_rrc(m / sps, design.rolloff, half) / math.sqrt(design.sps_adc)
    pulse = np.zeros(n)
    np.add.at(pulse, m % n, taps)
    # the FFT of the symbols upsampled by sps is that of the symbols, tiled sps times
    spectrum = np.tile(np.fft.fft(symbols), sps)
    spectrum *= np.fft.fft(pulse)
    del pulse
    # whole cycles per segment: the up-conversion is a shift by whole bins, a pilot one bin
    spectrum = np.roll(spectrum, _bin(design.signal_frequency_hz, design, n))
    for f in design.pilot_frequencies_hz:
        spectrum[_bin(f, design, n)] += design.pilot_amplitude * n
    x = sfft.ifft(spectrum, overwrite_x=True)
    del spectrum
    peak = float(max(np.abs(x.real).max(), np.abs(x.imag).max()))
    g = design.peak_fraction * DAC_MAX_CODE / peak
    i_codes = np.rint(x.real * g).astype(np.int8)
    q_codes = np.rint(x.imag * g).astype(np.int8)
    return TxWaveform(design=design, symbols=symbols, i_codes=i_codes, q_codes=q_codes,
                      codes_per_field=g)


def _bin(f: float, design: TxDesign, n: int) -> int:
    """DFT bin of frequency ``f`` in a segment of ``n`` AWG samples (a whole number)."""
    return round(f * n / design.awg_sample_rate_hz) % n


def virtual_tx_levels(physics: VirtualPhysics, wf: TxWaveform, *, tx_power_mw: float
                      ) -> float:
    """AWG amplitude (V, peak-to-peak over codes -127..127) that makes the virtual lab's
    modulator output equal the designed field at a Tx laser power ``tx_power_mw`` -- the
    stand-in for the V_A calibration, valid only for the virtual lab whose truth it reads.

    Transfer at the null bias (``qkd_hw.lab.model``): ``-2 sqrt(P 10^(-att/10) / (h nu
    f_adc)) sin(kappa d) / sqrt(2)`` per quadrature, ``kappa = pi rf_gain / (2 V_pi_rf)``, a
    code is ``amplitude / 254`` V. The quantum signal rides on the pilot(s): its gain is the
    slope ``cos(kappa d)`` averaged over the drive (Bussgang), about 0.3 % below the
    small-signal slope here, so the amplitude is found by fixed-point iteration on it.
    """
    kappa = math.pi * physics.rf_gain / (2 * physics.modulator_v_pi_rf_v)
    p_w = 1e-3 * tx_power_mw * 10 ** (-physics.tx_attenuation_db / 10)
    h_nu = PLANCK_J_S * LIGHT_M_S / (physics.wavelength_nm * 1e-9)
    photons = 2.0 * math.sqrt(p_w / (h_nu * wf.design.adc_sample_rate_hz))
    field_per_volt = photons * kappa / math.sqrt(2.0)
    small_signal = 2 * DAC_MAX_CODE / (field_per_volt * wf.codes_per_field)
    # the slope depends on the codes only through their histogram
    counts = (np.bincount(wf.i_codes.astype(np.int64) + 128, minlength=256)
              + np.bincount(wf.q_codes.astype(np.int64) + 128, minlength=256))
    codes = np.arange(256) - 128
    amplitude = small_signal
    for _ in range(20):
        slope = float(np.dot(counts, np.cos(kappa * codes * amplitude / (2 * DAC_MAX_CODE)))
                      / counts.sum())
        new = small_signal / slope
        if abs(new - amplitude) < 1e-12 * small_signal:
            break
        amplitude = new
    return amplitude
