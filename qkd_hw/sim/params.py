"""Parameters of the link simulator: one frozen dataclass, validated once.

Names follow ``shared/spec/conventions.md`` and the trace format. Every
field is settable from the command line (``qkd-hw simulate --set name=value``)
and is written to ``/truth`` of the recording, so :meth:`SimParams.from_attrs`
rebuilds exactly the parameters a recording was made with.

Units and definitions that the spec leaves open:

* ``pilot_powers_dbsn``: power of each pilot tone (mean square of its ADC
  waveform, ``A^2 / 2``) in dB relative to the shot-noise variance per ADC
  sample, i.e. to the vacuum-noise power over the whole 0..fs/2 band. The
  pilot's SNR in a resolution bandwidth B is that ratio times ``fs / (2 B)``.
  One value applies to every pilot, or one value per pilot.
* ``adc_shot_noise_rms_codes``: ADC gain, given as the rms of the shot noise
  alone (vacuum, LO on, no electronic noise) per sample, in codes.
* ``electronic_noise_snu`` is what the receiver measures from the
  electronic-noise capture, ADC quantisation noise (1/12 code^2) included:
  the analog electronic noise is set to ``v_el * sigma_shot^2 - 1/12``.
* ``clock_offset_ppm``: the transmitter's symbol clock runs fast by this many
  ppm relative to the ADC clock, so symbol ``k`` is centred at sample
  ``delay_samples + k * fs / (symbol_rate_hz * (1 + ppm * 1e-6))``. The IF
  carriers are not scaled (the receiver-side frequency offset is
  ``frequency_offset_hz`` alone).
* Framing (all off by default): ``lead_samples`` of noise only, then a synchronisation
  preamble of ``preamble_samples`` (``preamble_kind``: ``"zadoff-chu"``, a Zadoff-Chu
  sequence at baseband at the sample rate, i.e. a chirp over the whole band, real part; or
  ``"noise"``, a white Gaussian burst) of power ``preamble_power_dbsn`` (dB re the shot-noise
  variance per sample, like the pilots), both without pilot; the pilots start right after
  the preamble and, with ``pilot_gate = "data"``, stop where the last symbol's pulse ends (a
  noise-only tail; ``"always"``: they run to the end of the capture). The data must start
  after the preamble (``delay_samples`` at least half a pulse past it).
* ``rrc_span_symbols = 0`` and ``tail_samples = 0`` mean "automatic" and are
  replaced by the resolved value at construction (see :mod:`qkd_hw.sim.pulse`;
  the tail is ``max(4000, the last pulse's half length)``).
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from dsp.vocabulary import DETECTIONS
from qkd_hw.errors import ConfigError
from qkd_hw.sim.pulse import auto_span_symbols

ADC_DTYPES = ("int16", "int8", "float32")
MAX_PILOTS = 8
#: minimum clearance of a pilot from the quantum band's edge, in symbol rates
PILOT_GUARD_SYMBOL_RATES = 0.02
QUANTISATION_VAR_CODES2 = 1.0 / 12.0
#: refuse settings whose largest pilot alone clips more of the signal capture than this
MAX_PILOT_CLIPPED_FRACTION = 0.5
#: one symbol's samples at most (as many as the longest capture allowed, 1e12)
MAX_SAMPLES_PER_SYMBOL = 1e12
PREAMBLE_KINDS = ("none", "zadoff-chu", "noise")
PILOT_GATES = ("always", "data")
#: longest preamble (it is generated whole, then sliced per chunk)
MAX_PREAMBLE_SAMPLES = 10_000_000
#: framing fields: absent from the /truth of recordings made before them (defaults apply)
FRAMING_FIELDS = ("lead_samples", "preamble_kind", "preamble_samples", "preamble_power_dbsn",
                  "pilot_gate")


@dataclass(frozen=True)
class SimParams:
    """Physical parameters of a simulated CV-QKD link (see the module docstring for units)."""

    detection: str = "heterodyne"
    transmittance: float = 0.5
    excess_noise_snu: float = 0.02
    electronic_noise_snu: float = 0.1
    modulation_variance_snu: float = 5.0
    efficiency: float = 0.7
    sample_rate_hz: float = 1e9
    symbol_rate_hz: float = 100e6
    rolloff: float = 0.2
    rrc_span_symbols: int = 0
    signal_frequency_hz: float = 150e6
    pilot_frequencies_hz: tuple[float, ...] = (250e6,)
    pilot_powers_dbsn: tuple[float, ...] = (17.0,)
    pilot_phases_rad: tuple[float, ...] = (0.0,)
    frequency_offset_hz: float = 0.0
    linewidth_hz: float = 0.0
    delay_samples: float = 1500.0
    tail_samples: int = 0
    clock_offset_ppm: float = 0.0
    adc_dtype: str = "int16"
    adc_bits: int = 12
    adc_shot_noise_rms_codes: float = 35.0
    adc_full_scale_vpp: float = 1.0
    shot_noise_samples: int = 1_000_000
    electronic_noise_samples: int = 1_000_000
    lead_samples: int = 0
    preamble_kind: str = "none"
    preamble_samples: int = 0
    preamble_power_dbsn: float = 30.0
    pilot_gate: str = "always"

    def __post_init__(self) -> None:
        # normalise types first (CLI strings, numpy scalars, lists from HDF5 attributes)
        for f in fields(self):
            object.__setattr__(self, f.name, _coerce(f.name, _FIELD_TYPES[f.name],
                                                     getattr(self, f.name)))
        n_p = len(self.pilot_frequencies_hz)
        for name in ("pilot_powers_dbsn", "pilot_phases_rad"):
            v = getattr(self, name)
            if len(v) == 1 and n_p > 1:
                object.__setattr__(self, name, v * n_p)
        if self.rrc_span_symbols == 0 and 0.0 < self.rolloff <= 1.0 \
                and self.modulation_variance_snu > 0:
            object.__setattr__(self, "rrc_span_symbols",
                               auto_span_symbols(self.rolloff, self.modulation_variance_snu))
        self._validate()
        if self.tail_samples == 0:
            need = math.ceil(self.half_span * self.samples_per_symbol_eff) + 1
            object.__setattr__(self, "tail_samples", max(4000, need))
        self._validate_tail()

    # ------------------------------------------------------------------ derived quantities
    @property
    def t_eff(self) -> float:
        """Per-quadrature gain t: ``sqrt(eta T / 2)`` heterodyne, ``sqrt(eta T)`` homodyne."""
        share = 0.5 if self.detection == "heterodyne" else 1.0
        return math.sqrt(share * self.efficiency * self.transmittance)

    @property
    def half_span(self) -> int:
        return self.rrc_span_symbols // 2

    @property
    def samples_per_symbol(self) -> float:
        return self.sample_rate_hz / self.symbol_rate_hz

    @property
    def samples_per_symbol_eff(self) -> float:
        """ADC samples per transmitted symbol, clock offset included."""
        return self.sample_rate_hz / (self.symbol_rate_hz * (1.0 + 1e-6 * self.clock_offset_ppm))

    @property
    def band_width_hz(self) -> float:
        """Two-sided width of the quantum band, ``(1 + rolloff) * symbol_rate_hz``."""
        return (1.0 + self.rolloff) * self.symbol_rate_hz

    @property
    def quantised(self) -> bool:
        return self.adc_dtype != "float32"

    @property
    def volts_per_code(self) -> float:
        return self.adc_full_scale_vpp / 2.0 ** self.adc_bits

    @property
    def code_range(self) -> tuple[float, float]:
        """Lowest and highest code (float32: +-inf, nothing clips)."""
        if not self.quantised:
            return (-math.inf, math.inf)
        return (-(2.0 ** (self.adc_bits - 1)), 2.0 ** (self.adc_bits - 1) - 1.0)

    @property
    def electronic_rms_analog_codes(self) -> float:
        """Rms of the analog electronic noise (quantisation noise excluded), codes."""
        q = QUANTISATION_VAR_CODES2 if self.quantised else 0.0
        return math.sqrt(max(0.0, self.electronic_noise_snu * self.adc_shot_noise_rms_codes ** 2
                             - q))

    @property
    def signal_amplitude_codes(self) -> float:
        """ADC amplitude S of the IF carrier per unit symbol: ``sqrt(2) t sigma_shot``.

        Demodulating ``Re{S s e^{j w n}}`` with ``e^{-j w n}`` and a unit-energy
        matched filter gives ``S/2 * a`` per quadrature, the shot noise
        ``sigma_shot^2 / 2 = N0``: so ``S / 2 = t sqrt(N0)``.
        """
        return math.sqrt(2.0) * self.t_eff * self.adc_shot_noise_rms_codes

    @property
    def pilot_amplitudes_codes(self) -> tuple[float, ...]:
        s = self.adc_shot_noise_rms_codes
        return tuple(s * math.sqrt(2.0 * 10.0 ** (p / 10.0)) for p in self.pilot_powers_dbsn)

    @property
    def framed(self) -> bool:
        """Whether the signal capture has a lead or preamble without pilot, or gated pilots."""
        return self.pilot_on_sample > 0 or self.pilot_gate != "always"

    @property
    def pilot_on_sample(self) -> int:
        """First sample with the pilots on (after the lead and the preamble)."""
        return self.lead_samples + self.preamble_samples

    def pilot_off_sample(self, n_symbols: int) -> int:
        """One past the last sample with the pilots on."""
        if self.pilot_gate == "always":
            return self.signal_samples(n_symbols)
        last = self.delay_samples + (n_symbols - 1) * self.samples_per_symbol_eff
        return min(math.ceil(last + self.half_span * self.samples_per_symbol_eff) + 1,
                   self.signal_samples(n_symbols))

    @property
    def preamble_amplitude_codes(self) -> float:
        """rms of the preamble (codes)."""
        return self.adc_shot_noise_rms_codes * math.sqrt(10.0 ** (self.preamble_power_dbsn / 10))

    def signal_samples(self, n_symbols: int) -> int:
        """Length of ``/adc/signal`` for ``n_symbols`` data symbols."""
        last = self.delay_samples + (n_symbols - 1) * self.samples_per_symbol_eff
        return math.ceil(last) + 1 + self.tail_samples

    # ------------------------------------------------------------------ (de)serialisation
    def to_attrs(self) -> dict[str, Any]:
        """Plain values for HDF5 attributes (tuples become float64 arrays)."""
        out: dict[str, Any] = {}
        for k, v in asdict(self).items():
            out[k] = np.asarray(v, dtype=np.float64) if isinstance(v, tuple) else v
        return out

    def to_json(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> SimParams:
        """Rebuild from ``/truth`` attributes (other attributes are ignored)."""
        names = {f.name for f in fields(cls)}
        missing = sorted(names - set(attrs) - set(FRAMING_FIELDS))
        if missing:
            raise ConfigError(f"simulator parameters missing from the truth: {missing}")
        return cls(**{k: attrs[k] for k in names if k in attrs})

    @classmethod
    def from_truth(cls, truth: Any) -> SimParams:
        """Rebuild from a :class:`~qkd_hw.trace_io.Truth` (its fields plus ``extra``)."""
        attrs = dict(truth.extra)
        for k in ("transmittance", "excess_noise_snu", "electronic_noise_snu",
                  "frequency_offset_hz", "linewidth_hz", "delay_samples"):
            attrs[k] = getattr(truth, k)
        return cls.from_attrs(attrs)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def replace(self, **changes: Any) -> SimParams:
        """A copy with some fields changed (validated; unknown names are errors).

        Resolved automatic values (``rrc_span_symbols``, ``tail_samples``) are
        kept; pass 0 to resolve them again for the new parameters.
        """
        unknown = sorted(set(changes) - set(self.names()))
        if unknown:
            raise ConfigError(f"unknown simulator parameter(s) {unknown}; allowed: "
                              f"{', '.join(self.names())}")
        d = asdict(self)
        d.update(changes)
        return SimParams(**d)

    # ------------------------------------------------------------------ validation
    def _validate(self) -> None:
        _range("detection", self.detection, choices=DETECTIONS)
        _range("transmittance", self.transmittance, gt=0.0, le=1.0)
        _range("excess_noise_snu", self.excess_noise_snu, ge=0.0, le=100.0)
        _range("electronic_noise_snu", self.electronic_noise_snu, ge=0.0, le=100.0)
        _range("modulation_variance_snu", self.modulation_variance_snu, gt=0.0, le=1e4)
        _range("efficiency", self.efficiency, gt=0.0, le=1.0)
        _range("sample_rate_hz", self.sample_rate_hz, gt=0.0, le=1e12)
        fs, nyq = self.sample_rate_hz, self.sample_rate_hz / 2.0
        _range("symbol_rate_hz", self.symbol_rate_hz, gt=0.0, lt=fs)
        if not self.samples_per_symbol <= MAX_SAMPLES_PER_SYMBOL:   # inf for a denormal rate
            raise ConfigError(f"symbol_rate_hz = {self.symbol_rate_hz!r} is "
                              f"{self.samples_per_symbol:.3g} samples per symbol at sample_rate_hz"
                              f" {fs:g}; allowed at most {MAX_SAMPLES_PER_SYMBOL:g}")
        _range("rolloff", self.rolloff, gt=0.0, le=1.0,
               why=" (0 would be a sinc pulse, which no finite span can hold)")
        _range("rrc_span_symbols", self.rrc_span_symbols, ge=4, le=1024)
        if self.rrc_span_symbols % 2:
            raise ConfigError(f"rrc_span_symbols must be even, got {self.rrc_span_symbols}")
        _range("frequency_offset_hz", self.frequency_offset_hz, gt=-nyq, lt=nyq)
        _range("linewidth_hz", self.linewidth_hz, ge=0.0, le=0.01 * fs)
        _range("delay_samples", self.delay_samples, ge=0.0, le=1e12)
        _range("clock_offset_ppm", self.clock_offset_ppm, ge=-1000.0, le=1000.0)
        _range("adc_dtype", self.adc_dtype, choices=ADC_DTYPES)
        max_bits = {"int16": 16, "int8": 8, "float32": 24}[self.adc_dtype]
        _range("adc_bits", self.adc_bits, ge=2, le=max_bits, why=f" for adc_dtype={self.adc_dtype}")
        _range("adc_shot_noise_rms_codes", self.adc_shot_noise_rms_codes, gt=0.0,
               le=2.0 ** (self.adc_bits - 1))
        _range("adc_full_scale_vpp", self.adc_full_scale_vpp, gt=0.0, le=1e3)
        _range("shot_noise_samples", self.shot_noise_samples, ge=1000, le=10 ** 12)
        _range("electronic_noise_samples", self.electronic_noise_samples, ge=1000, le=10 ** 12)
        if self.quantised:
            # the analog electronic noise must dither the ADC (>= 1 code rms) for its
            # quantisation error to be the uniform, independent 1/12 code^2 that the
            # v_el bookkeeping assumes (error ~exp(-2 pi^2 sigma^2): 3e-9 at 1 code)
            floor = (1.0 + QUANTISATION_VAR_CODES2) / self.adc_shot_noise_rms_codes ** 2
            if self.electronic_noise_snu < floor:
                raise ConfigError(
                    f"electronic_noise_snu={self.electronic_noise_snu!r} is below "
                    f"{floor:.3g} SNU, the least the ADC allows at adc_shot_noise_rms_codes="
                    f"{self.adc_shot_noise_rms_codes:g} (1/12 code^2 quantisation plus 1 code "
                    "rms of analog noise to dither it); raise it or the gain, or use "
                    "adc_dtype=float32")
        self._validate_frequencies()
        self._validate_pilot_clipping()
        self._validate_framing()

    def _validate_framing(self) -> None:
        _range("preamble_kind", self.preamble_kind, choices=PREAMBLE_KINDS)
        _range("pilot_gate", self.pilot_gate, choices=PILOT_GATES)
        _range("lead_samples", self.lead_samples, ge=0, le=10 ** 12)
        _range("preamble_samples", self.preamble_samples, ge=0, le=MAX_PREAMBLE_SAMPLES)
        _range("preamble_power_dbsn", self.preamble_power_dbsn, ge=-40.0, le=60.0)
        if (self.preamble_kind == "none") != (self.preamble_samples == 0):
            raise ConfigError(f"preamble_kind={self.preamble_kind!r} with preamble_samples="
                              f"{self.preamble_samples}: a preamble needs both a kind and a "
                              "length (none: kind 'none' and 0 samples)")
        first = self.delay_samples - self.half_span * self.samples_per_symbol_eff
        if self.pilot_on_sample > 0 and first < self.pilot_on_sample:
            raise ConfigError(
                f"delay_samples={self.delay_samples:g}: the first symbol's pulse starts at "
                f"sample {first:.0f}, inside the lead_samples={self.lead_samples} + "
                f"preamble_samples={self.preamble_samples}; set delay_samples >= "
                f"{self.pilot_on_sample + self.half_span * self.samples_per_symbol_eff:.0f}")

    def _validate_pilot_clipping(self) -> None:
        # a tone of amplitude A against rails at +-R sits beyond them a fraction
        # (2/pi) arccos(R/A) of the time, whatever else is added: a lower bound of the
        # signal capture's clipped fraction from the largest pilot alone
        if not self.quantised:
            return
        rail = 2.0 ** (self.adc_bits - 1)
        i = int(np.argmax(self.pilot_powers_dbsn))
        amp = self.pilot_amplitudes_codes[i]
        if amp > rail and 2 / math.pi * math.acos(rail / amp) > MAX_PILOT_CLIPPED_FRACTION:
            raise ConfigError(
                f"pilot_powers_dbsn[{i}] = {self.pilot_powers_dbsn[i]:g} dB is a pilot of "
                f"{amp:.4g} codes amplitude against the ADC's +-{rail:g} "
                f"(adc_bits={self.adc_bits}): {2 / math.pi * math.acos(rail / amp):.0%} of the "
                f"signal samples or more would clip; lower it or adc_shot_noise_rms_codes")

    def _validate_frequencies(self) -> None:
        nyq, df = self.sample_rate_hz / 2.0, self.frequency_offset_hz
        half = self.band_width_hz / 2.0
        lo, hi = self.signal_frequency_hz + df - half, self.signal_frequency_hz + df + half
        if lo <= 0.0 or hi >= nyq:
            raise ConfigError(
                f"quantum band [{lo / 1e6:.6g}, {hi / 1e6:.6g}] MHz (signal_frequency_hz "
                f"{self.signal_frequency_hz / 1e6:g} MHz + frequency_offset_hz {df / 1e6:g} MHz "
                f"+- (1 + rolloff) symbol_rate_hz / 2 = {half / 1e6:g} MHz) must lie inside "
                f"(0, {nyq / 1e6:g}) MHz (DC to Nyquist)")
        n_p = len(self.pilot_frequencies_hz)
        if not 1 <= n_p <= MAX_PILOTS:
            raise ConfigError(f"pilot_frequencies_hz needs 1..{MAX_PILOTS} entries, got {n_p}")
        if len(set(self.pilot_frequencies_hz)) != n_p:
            raise ConfigError(f"pilot_frequencies_hz repeat: {list(self.pilot_frequencies_hz)}")
        for name in ("pilot_powers_dbsn", "pilot_phases_rad"):
            if len(getattr(self, name)) != n_p:
                want = "1 entry" if n_p == 1 else f"1 or {n_p} entries"
                raise ConfigError(f"{name} needs {want} (one per pilot in pilot_frequencies_hz),"
                                  f" got {len(getattr(self, name))}")
        for i, p in enumerate(self.pilot_powers_dbsn):
            _range(f"pilot_powers_dbsn[{i}]", p, ge=-40.0, le=60.0)
        for i, ph in enumerate(self.pilot_phases_rad):   # NaN would make every sample NaN
            _range(f"pilot_phases_rad[{i}]", ph)
        guard = PILOT_GUARD_SYMBOL_RATES * self.symbol_rate_hz
        for i, fp in enumerate(self.pilot_frequencies_hz):
            name = f"pilot_frequencies_hz[{i}]"
            f_act = fp + df
            if not 0.0 < f_act < nyq:
                raise ConfigError(f"{name} = {fp / 1e6:g} MHz + frequency_offset_hz "
                                  f"{df / 1e6:g} MHz = {f_act / 1e6:g} MHz must lie inside "
                                  f"(0, {nyq / 1e6:g}) MHz (DC to Nyquist)")
            if abs(fp - self.signal_frequency_hz) < half + guard:
                raise ConfigError(
                    f"{name} = {fp / 1e6:g} MHz overlaps the quantum band "
                    f"{(self.signal_frequency_hz - half) / 1e6:g}..."
                    f"{(self.signal_frequency_hz + half) / 1e6:g} MHz (plus a guard of "
                    f"{PILOT_GUARD_SYMBOL_RATES:g} symbol rates = {guard / 1e6:g} MHz); move it "
                    f"at least {(half + guard) / 1e6:g} MHz away from signal_frequency_hz")
        # (a pilot's image after down-conversion, at fs - f_p - f_s, cannot reach the band:
        # f_p < fs/2 and f_s + W/2 < fs/2 keep it above W/2)

    def _validate_tail(self) -> None:
        # like delay_samples: /truth stores it as int64, and 1e12 samples are 2 TB already
        _range("tail_samples", self.tail_samples, ge=0, le=10 ** 12)
        need = math.ceil(self.half_span * self.samples_per_symbol_eff) + 1
        if self.tail_samples < need:
            raise ConfigError(
                f"tail_samples={self.tail_samples} is shorter than half the pulse "
                f"({need} samples at rrc_span_symbols={self.rrc_span_symbols}); the last "
                "symbols would be cut (use 0 for automatic)")


# ---------------------------------------------------------------------- helpers
_FIELD_TYPES: dict[str, Any] = typing.get_type_hints(SimParams)


def _range(name: str, v: Any, *, gt: float | None = None, ge: float | None = None,
           lt: float | None = None, le: float | None = None,
           choices: tuple[str, ...] | None = None, why: str = "") -> None:
    if choices is not None:
        if v not in choices:
            raise ConfigError(f"{name} must be one of {list(choices)}, got {v!r}")
        return
    if isinstance(v, float) and not math.isfinite(v):
        raise ConfigError(f"{name} must be finite, got {v!r}")
    ok = ((gt is None or v > gt) and (ge is None or v >= ge)
          and (lt is None or v < lt) and (le is None or v <= le))
    if not ok:
        lo = f"({gt:g}" if gt is not None else (f"[{ge:g}" if ge is not None else "(-inf")
        hi = f"{lt:g})" if lt is not None else (f"{le:g}]" if le is not None else "inf)")
        shown = repr(v) if len(repr(v)) <= 24 else f"{v:.6g}"   # 1e300 as an int: 301 digits
        raise ConfigError(f"{name} = {shown} is out of range; allowed {lo}, {hi}{why}")


def _coerce(name: str, typ: Any, v: Any) -> Any:
    """Convert a value (str from the CLI, numpy from HDF5) to the field's type or raise."""
    try:
        if typ is float:
            if isinstance(v, bool):
                raise TypeError
            return float(v)
        if typ is int:
            if isinstance(v, bool):
                raise TypeError
            if isinstance(v, str):
                f = float(v)
            elif isinstance(v, int | np.integer):
                return int(v)
            else:
                f = float(v)
            if not f.is_integer():
                raise ValueError(f"not an integer: {v!r}")
            return int(f)
        if typ is str:
            if isinstance(v, bytes):
                v = v.decode()
            if not isinstance(v, str):
                raise TypeError
            return v
        if typing.get_origin(typ) is tuple or isinstance(typ, types.GenericAlias):
            if isinstance(v, str):
                items = [s for s in v.replace(" ", "").split(",") if s]
            else:
                items = list(np.atleast_1d(np.asarray(v)).tolist())
            return tuple(float(x) for x in items)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}: cannot interpret {v!r} as {_type_name(typ)}") from exc
    raise AssertionError(f"unhandled field type {typ!r}")


def _type_name(typ: Any) -> str:
    if typing.get_origin(typ) is tuple:
        return "a comma-separated list of numbers"
    return {float: "a number", int: "an integer", str: "a string"}.get(typ, str(typ))


FIELD_DOCS: dict[str, str] = {
    "detection": "heterodyne (one balanced detector, RF heterodyne) or homodyne",
    "transmittance": "channel transmittance T, (0, 1]",
    "excess_noise_snu": "excess noise xi referred to the channel input, SNU",
    "electronic_noise_snu": "electronic noise v_el (incl. ADC quantisation), SNU",
    "modulation_variance_snu": "Alice's per-quadrature variance V_A, SNU",
    "efficiency": "Bob's trusted detection efficiency eta, (0, 1]",
    "sample_rate_hz": "ADC sample rate, Hz",
    "symbol_rate_hz": "symbol rate Rs, Hz (non-integer samples per symbol allowed)",
    "rolloff": "RRC roll-off beta, (0, 1]",
    "rrc_span_symbols": "RRC truncation span, symbols, even (0: automatic, ISI <= 1e-5 SNU)",
    "signal_frequency_hz": "IF centre of the quantum band at zero laser offset, Hz",
    "pilot_frequencies_hz": "pilot tone IF(s), Hz, comma list",
    "pilot_powers_dbsn": "pilot power(s), dB re the shot-noise variance per ADC sample",
    "pilot_phases_rad": "pilot phase(s) relative to the signal carrier, rad",
    "frequency_offset_hz": "laser frequency offset, shifts signal and pilots, Hz",
    "linewidth_hz": "combined Lorentzian linewidth of the two lasers, Hz",
    "delay_samples": "sample index of symbol 0's pulse centre (fractional allowed)",
    "tail_samples": "samples after the last symbol's centre (0: automatic)",
    "clock_offset_ppm": "transmitter symbol clock fast by this many ppm vs the ADC",
    "adc_dtype": "int16, int8 or float32 (float32: not quantised)",
    "adc_bits": "ADC resolution, bits (clip range)",
    "adc_shot_noise_rms_codes": "ADC gain: rms of the shot noise alone per sample, codes",
    "adc_full_scale_vpp": "ADC full scale, V peak-to-peak (volts_per_code = vpp / 2^bits)",
    "shot_noise_samples": "length of the shot-noise capture (LO on, signal blocked)",
    "electronic_noise_samples": "length of the electronic-noise capture (LO off)",
    "lead_samples": "noise-only samples (no pilot) at the start of the signal capture",
    "preamble_kind": "synchronisation preamble after the lead, without pilot: none, "
                     "zadoff-chu (baseband chirp) or noise",
    "preamble_samples": "preamble length, samples (0 with kind none)",
    "preamble_power_dbsn": "preamble power, dB re the shot-noise variance per ADC sample",
    "pilot_gate": "always (pilots from the preamble's end to the end of the capture) or data "
                  "(off after the last symbol's pulse: a noise-only tail)",
}


def field_help() -> dict[str, str]:
    """Short help per parameter (meaning, unit, type, default), for the CLI."""
    d = SimParams()
    return {f.name: f"{FIELD_DOCS[f.name]} [{_type_name(_FIELD_TYPES[f.name])}, default "
                    f"{getattr(d, f.name)!r}]" for f in fields(SimParams)}


def parse_assignments(items: list[str] | None, base: SimParams | None = None) -> SimParams:
    """``["name=value", ...]`` -> validated SimParams; unknown names list the allowed ones."""
    allowed = SimParams.names()
    aliases = {"pilot_frequency_hz": "pilot_frequencies_hz",
               "pilot_power_dbsn": "pilot_powers_dbsn",
               "pilot_phase_rad": "pilot_phases_rad"}
    changes: dict[str, Any] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ConfigError(f"--set expects name=value, got {item!r}")
        name = aliases.get(name, name)
        if name not in allowed:
            raise ConfigError(f"unknown simulator parameter {name!r}; allowed: "
                              f"{', '.join(allowed)}")
        if name in changes:
            raise ConfigError(f"parameter {name!r} set twice")
        changes[name] = value.strip()
    base = base or SimParams()
    if "pilot_frequencies_hz" in changes:
        # a new pilot count resets per-pilot lists that were not given explicitly
        n_new = len(_coerce("pilot_frequencies_hz", tuple[float, ...],
                            changes["pilot_frequencies_hz"]))
        for name in ("pilot_powers_dbsn", "pilot_phases_rad"):
            cur = getattr(base, name)
            if name not in changes and len(cur) != n_new:
                changes[name] = (cur[0],)
    if "rrc_span_symbols" not in changes and any(
            k in changes for k in ("rolloff", "modulation_variance_snu")):
        changes["rrc_span_symbols"] = 0  # re-resolve the automatic span
    if "tail_samples" not in changes:
        changes["tail_samples"] = 0
    return base.replace(**changes)
