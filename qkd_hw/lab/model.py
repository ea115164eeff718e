"""Physics of the virtual lab: what each instrument measures, given every instrument's state.

Pure functions of a :class:`LinkState` (the settings read from the emulators at one instant)
and the ``[virtual]`` table (:class:`~qkd_hw.labconfig.VirtualPhysics`); nothing here talks to
an emulator, so the model can be tested and reused on its own. The equations (every symbol is
a ``[virtual]`` key or a state field):

* Modulator (ideal IQ modulator, both child MZMs at the bias controller's working point):
  ``theta = pi (V_bias - bias_v_offset_v) / (2 bias_v_pi_v)``, ``kappa = pi rf_gain /
  (2 modulator_v_pi_rf_v)`` per AWG volt, field transfer
  ``M = (cos(theta + kappa d_I) + j cos(theta + kappa d_Q)) / sqrt(2)`` (``|M| <= 1``). At the
  null (``theta = pi/2``) the field is linear in the drive and the carrier vanishes; away from
  it the carrier leaks with amplitude ``cos(theta)``.
* Alice's output field per ADC sample, in quadrature units (vacuum quadrature variance 1,
  ``s = 2 alpha``): ``s[n] = 2 sqrt(P_tx 10^(-tx_attenuation_db/10) / (h nu f_adc)) M[n]``,
  plus the excess noise ``zeta[n]`` (complex Gaussian, ``excess_noise_snu / 2`` per
  quadrature per sample) while the transmitter laser emits. White noise in the field covers
  the signal's band and its image alike, and one balanced detector folds both onto the IF
  band: at ``xi/2`` each, the detected in-band noise is ``eta T xi / 2 = t^2 xi`` over the shot
  noise, i.e. ``xi`` referred to the channel input in the heterodyne convention
  (``t^2 = eta T / 2``, conventions.md), as :meth:`LinkModel.truth` states.
* Channel: ``T = 10^(-fiber_loss_db/10) * VOA transmission * switch`` (1 on
  ``switch_signal_port``, 0 on any other port).
* LO at the detector: ``P_LO = laser_lo output * 10^(-lo_path_loss_db/10)``; the detector's
  gain saturates: ``P_eff = min(P_LO, lo_saturation_mw)``.
* Detector output (volts), heterodyne by the beat at ``frequency_offset_hz`` with Wiener
  phase noise of ``laser_linewidth_hz`` (combined): ``x[n] = sigma_v [sqrt(eta T)
  Re{(s[n] + zeta[n]) e^{j psi_n}} + w_n] + sigma_el u_n`` with ``sigma_v = shot_noise_rms_v
  sqrt(P_eff / lo_reference_mw) g``, ``sigma_el = sqrt(electronic_noise_snu) shot_noise_rms_v
  g``, ``g`` = detector transimpedance / 1e4 V/A, ``eta = detector_efficiency``, ``w, u``
  standard normal. A disabled detector outputs 0 V. ``electronic_noise_snu`` is therefore the
  analog electronic noise relative to the shot noise at ``lo_reference_mw``.
* Digitizer: ``code = clip(round((x - offset_v) * 65536 / range_v), int16)`` (the Infiniium's
  WORD scaling: ``YINC = range / 65536``, ``YOR = offset``).
* Power meter (at the modulator's monitor tap): ``P_tx mean|M|^2 10^(-power_meter_tap_db/10)``,
  the mean over the playing AWG segment.
* Photocurrents: ``responsivity P_LO / 2 * (1 +- detector_imbalance)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from dsp._numba_options import NJIT
from qkd_hw.labconfig import VirtualPhysics
from qkd_hw.sim.waveform import laser_phase, quantize

__all__ = ["REFERENCE_GAIN_V_PER_A", "Drive", "LinkModel", "LinkState", "code_histogram"]

PLANCK_J_S = 6.62607015e-34
LIGHT_M_S = 299_792_458.0
#: transimpedance at which ``shot_noise_rms_v`` is given (the detector's gain step 1)
REFERENCE_GAIN_V_PER_A = 1e4
INT16_SPAN = 65536


@dataclass(frozen=True, eq=False)
class Drive:
    """The segment an AWG channel plays: int8 codes, volts per code and offset (V).

    Compared and hashed by identity: the virtual lab reuses one object while the segment
    memory and the channel's settings are unchanged, so values derived from it are cached.
    """

    codes: np.ndarray
    volts_per_code: float
    offset_v: float

    @property
    def size(self) -> int:
        return int(self.codes.size)

    def volts(self, index: np.ndarray | slice = slice(None)) -> np.ndarray:
        return self.codes[index].astype(np.float64) * self.volts_per_code + self.offset_v


@numba.njit(**NJIT)
def _histogram_kernel(codes, counts):  # pragma: no cover - jit
    for i in range(codes.shape[0]):
        counts[codes[i] + 128] += 1


def code_histogram(codes: np.ndarray) -> np.ndarray:
    """Counts of the int8 codes -128..127 (index ``code + 128``); np.bincount would first
    widen 64 M codes to int64 (0.5 s)."""
    counts = np.zeros(256, dtype=np.int64)
    _histogram_kernel(np.ascontiguousarray(codes, dtype=np.int8), counts)
    return counts


_ZERO = Drive(np.zeros(1, np.int8), 0.0, 0.0)  # no drive at all


@dataclass(frozen=True)
class LinkState:
    """The instrument settings the physics depends on, read at one instant."""

    tx_power_mw: float
    lo_power_mw: float
    bias_v: float
    drive_i: Drive | None
    drive_q: Drive | None
    awg_sample_rate_hz: float
    voa_transmission: float
    switch_port: int
    detector_enabled: bool
    detector_gain_v_per_a: float
    adc_sample_rate_hz: float
    adc_range_v: float
    adc_offset_v: float


class LinkModel:
    """The link's physics for one ``[virtual]`` table and the setup's signal/block ports."""

    def __init__(self, physics: VirtualPhysics, *, switch_signal_port: int) -> None:
        self.physics = physics
        self.switch_signal_port = switch_signal_port
        self._mean_power: dict[tuple[object, ...], float] = {}

    # -- optical powers --------------------------------------------------------------------

    def lo_at_detector_mw(self, st: LinkState) -> float:
        return st.lo_power_mw * 10 ** (-self.physics.lo_path_loss_db / 10)

    def transmittance(self, st: LinkState) -> float:
        """Power transmission from Alice's output to the detector input (fibre, VOA, switch)."""
        if st.switch_port != self.switch_signal_port:
            return 0.0
        return 10 ** (-self.physics.fiber_loss_db / 10) * st.voa_transmission

    def bias_phase(self, st: LinkState) -> float:
        p = self.physics
        return math.pi * (st.bias_v - p.bias_v_offset_v) / (2 * p.bias_v_pi_v)

    def modulator_field(self, drive_i: np.ndarray | float, drive_q: np.ndarray | float,
                        st: LinkState) -> np.ndarray:
        """Field transfer ``M`` of the modulator for drive voltages (AWG output, V)."""
        theta = self.bias_phase(st)
        kappa = math.pi * self.physics.rf_gain / (2 * self.physics.modulator_v_pi_rf_v)
        return (np.cos(theta + kappa * np.asarray(drive_i, dtype=np.float64))
                + 1j * np.cos(theta + kappa * np.asarray(drive_q, dtype=np.float64))
                ) / math.sqrt(2.0)

    def mean_modulator_power(self, st: LinkState) -> float:
        """``mean |M|^2`` over the playing segment (no drive: the carrier alone)."""
        key = (st.drive_i, st.drive_q, st.bias_v)
        cached = self._mean_power.get(key)
        if cached is None:
            # |M|^2 = (cos^2(theta + kappa v_I) + cos^2(theta + kappa v_Q)) / 2 depends on the
            # code values only: a histogram of the 256 codes makes it exact and cheap for
            # segments of 64 M samples
            di, dq = self._segment(st)
            cached = 0.0
            for d in (di, dq):
                counts = code_histogram(d.codes)
                volts = (np.arange(256) - 128) * d.volts_per_code + d.offset_v
                field = self.modulator_field(volts, volts, st).real * math.sqrt(2.0)
                cached += float(np.dot(counts, field ** 2)) / (2 * d.size)
            if len(self._mean_power) > 16:
                self._mean_power.clear()
            self._mean_power[key] = cached
        return cached

    def modulator_output_mw(self, st: LinkState) -> float:
        return st.tx_power_mw * self.mean_modulator_power(st)

    def power_meter_w(self, st: LinkState) -> float:
        return 1e-3 * self.modulator_output_mw(st) * 10 ** (-self.physics.power_meter_tap_db / 10)

    def photocurrents_ua(self, st: LinkState) -> tuple[float, float]:
        half = self.physics.responsivity_a_per_w * self.lo_at_detector_mw(st) / 2 * 1e3
        imb = self.physics.detector_imbalance
        return half * (1 + imb), half * (1 - imb)

    # -- detector output -------------------------------------------------------------------

    def _gain(self, st: LinkState) -> float:
        return st.detector_gain_v_per_a / REFERENCE_GAIN_V_PER_A if st.detector_enabled else 0.0

    def shot_noise_rms_v(self, st: LinkState) -> float:
        """Rms of the shot noise at the detector output (the LO's, saturating)."""
        p = self.physics
        p_eff = min(self.lo_at_detector_mw(st), p.lo_saturation_mw)
        return p.shot_noise_rms_v * math.sqrt(p_eff / p.lo_reference_mw) * self._gain(st)

    def electronic_noise_rms_v(self, st: LinkState) -> float:
        p = self.physics
        return math.sqrt(p.electronic_noise_snu) * p.shot_noise_rms_v * self._gain(st)

    def truth(self, st: LinkState) -> dict[str, float | None]:
        """What an ideal receiver estimates from captures made in the state ``st``.

        Keys: ``transmittance`` (Alice's output to the detector input), ``efficiency``,
        ``excess_noise_snu`` (channel input; 0 while the Tx laser is off),
        ``electronic_noise_snu`` as the receiver measures it (digitizer rounding included,
        relative to the shot noise at the present LO power; None without shot noise),
        ``shot_noise_rms_codes``, ``frequency_offset_hz``, ``linewidth_hz``.
        """
        p = self.physics
        lsb = st.adc_range_v / INT16_SPAN
        shot = self.shot_noise_rms_v(st)
        el_var = self.electronic_noise_rms_v(st) ** 2 + lsb ** 2 / 12
        return {
            "transmittance": self.transmittance(st),
            "efficiency": p.detector_efficiency,
            "excess_noise_snu": p.excess_noise_snu if st.tx_power_mw > 0 else 0.0,
            "electronic_noise_snu": el_var / shot ** 2 if shot > 0 else None,
            "shot_noise_rms_codes": shot / lsb,
            "frequency_offset_hz": p.frequency_offset_hz,
            "linewidth_hz": p.laser_linewidth_hz,
        }

    def photons_scale(self, st: LinkState) -> float:
        """``2 sqrt(P_alice / (h nu f_adc))``: Alice's quadrature amplitude per ADC sample
        for ``|M| = 1``."""
        p = self.physics
        p_w = 1e-3 * st.tx_power_mw * 10 ** (-p.tx_attenuation_db / 10)
        h_nu = PLANCK_J_S * LIGHT_M_S / (p.wavelength_nm * 1e-9)
        return 2.0 * math.sqrt(p_w / (h_nu * st.adc_sample_rate_hz))

    def _segment(self, st: LinkState) -> tuple[Drive, Drive]:
        """I and Q drive of equal length (an absent channel drives 0 V)."""
        di, dq = st.drive_i, st.drive_q
        if di is None and dq is None:
            return _ZERO, _ZERO
        n = max(d.size for d in (di, dq) if d is not None)

        def fit(d: Drive | None) -> Drive:
            if d is None:
                return Drive(np.zeros(n, np.int8), 0.0, 0.0)
            if d.size == n:
                return d
            return Drive(np.resize(d.codes, n), d.volts_per_code, d.offset_v)

        return fit(di), fit(dq)

    def drive_at(self, st: LinkState, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The AWG drive (I, Q volts) at ADC samples ``0 .. n-1``: the playing segment repeats
        cyclically, linearly interpolated at ``t = k / f_adc + trigger_delay_s``."""
        di, dq = self._segment(st)
        if di.size == 1:
            return np.full(n, di.volts()[0]), np.full(n, dq.volts()[0])
        u = (np.arange(n) / st.adc_sample_rate_hz + self.physics.trigger_delay_s) \
            * st.awg_sample_rate_hz
        i0 = np.floor(u)
        frac = u - i0
        i0 = i0.astype(np.int64) % di.size
        i1 = (i0 + 1) % di.size
        return (di.volts(i0) * (1 - frac) + di.volts(i1) * frac,
                dq.volts(i0) * (1 - frac) + dq.volts(i1) * frac)

    def alice_field(self, st: LinkState, n: int) -> np.ndarray:
        """``s[n]``: Alice's output field per ADC sample (quadrature units), no excess noise."""
        di, dq = self.drive_at(st, n)
        return self.photons_scale(st) * self.modulator_field(di, dq, st)

    def detector_volts(self, st: LinkState, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` samples of the detector output (V) in the state ``st``; fresh noise each call."""
        p = self.physics
        sigma_v = self.shot_noise_rms_v(st)
        x = self.electronic_noise_rms_v(st) * rng.standard_normal(n)
        if sigma_v == 0.0:
            return x
        x += sigma_v * rng.standard_normal(n)
        t = self.transmittance(st)
        if t > 0.0 and st.tx_power_mw > 0.0:
            field = self.alice_field(st, n)
            if p.excess_noise_snu > 0.0:   # xi/2 per quadrature: see the module docstring
                field = field + math.sqrt(p.excess_noise_snu / 2) * (
                    rng.standard_normal(n) + 1j * rng.standard_normal(n))
            psi = self.beat_phase(n, st.adc_sample_rate_hz, rng)
            x += sigma_v * math.sqrt(p.detector_efficiency * t) * (field * np.exp(1j * psi)).real
        return x

    def beat_phase(self, n: int, fs: float, rng: np.random.Generator) -> np.ndarray:
        """``psi_n``: frequency offset ramp plus the Wiener phase of the two lasers, from a
        uniformly random start (the lasers are free-running)."""
        p = self.physics
        step = math.sqrt(2 * math.pi * p.laser_linewidth_hz / fs)
        if step > 0.0:
            phi, _ = laser_phase(step * rng.standard_normal(n), rng.uniform(0, 2 * math.pi))
        else:
            phi = np.full(n, rng.uniform(0, 2 * math.pi))
        return phi + 2 * math.pi * p.frequency_offset_hz / fs * np.arange(n)

    def adc_codes(self, st: LinkState, n: int, rng: np.random.Generator) -> np.ndarray:
        """One digitizer record of ``n`` int16 codes of the detector channel."""
        x = self.detector_volts(st, n, rng) - st.adc_offset_v
        codes, _ = quantize(x, scale=INT16_SPAN / st.adc_range_v, dtype="int16",
                            lo=-32768.0, hi=32767.0)
        return codes
