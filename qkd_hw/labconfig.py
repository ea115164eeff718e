"""Lab configuration: which instrument sits where, its timeouts and its safety limits.

One TOML file describes the lab; :func:`load_lab_config` validates it once into frozen
dataclasses. Unknown keys, wrong types and missing required keys raise
:class:`~qkd_hw.errors.ConfigError` naming the file and the dotted key. Example::

    [lab]
    name = "DTU CV-QKD link, Bob"           # optional, free text

    [instruments.awg]
    driver = "keysight_m8195a"              # required: module name under drivers/
    resource = "TCPIP::10.0.0.5::5025::SOCKET"   # required: VISA resource or serial port
    timeout_s = 5.0                         # optional (default 2.0): per read, seconds
    retries = 2                             # optional (default 2): retries of idempotent queries
    visa_library = "@py"                    # optional (default "@py" = pyvisa-py)

    [instruments.awg.limits]                # optional: enforced before anything is written
    amplitude_v = { max = 0.5 }             # each limit is {min = ..., max = ...}, either optional

    [instruments.voa.limits]
    attenuation_db = { min = 10.0, max = 60.0 }
    wavelength_nm = { min = 1530.0, max = 1565.0 }

    [instruments.laser.options]             # driver-specific settings, checked by the driver
    baudrate = 115200

The limit names are fixed (:data:`LIMIT_QUANTITIES`); a misspelt limit must be an error, not a
silently absent limit.

Optional tables that describe the setup (each validated into a frozen dataclass; unknown keys
are errors here too)::

    [roles]                      # instrument names by role (ROLE_INSTRUMENTS), ports (ROLE_PORTS)
    lo_laser = "laser_lo"
    digitizer = "adc"
    digitizer_channel = 1        # the detector's output
    switch = "switch"
    switch_signal_port = 1       # passes the signal; switch_block_port blocks it (shot noise)
    switch_block_port = 2

    [link]                       # nominal link parameters (LinkParams)
    symbol_rate_hz = 100e6
    ...

    [ramp]                       # largest step per setting change (RampLimits)
    bias_v_per_step = 0.5
    lo_mw_per_step = 1.0

    [virtual]                    # physical truth of the virtual lab (VirtualPhysics)
    electronic_noise_snu = 0.1

    [virtual.faults.laser_lo]    # per-instrument faults of the virtual lab (InstrumentFault)
    answers = true               # false: the emulator is stopped after start (no answer)
    readings = { wavelength_offset_pm = 250.0 }   # fixed values of the emulator's readings

    [hil]                        # health thresholds of the HIL suite (HilConfig)
    drift_nights = 7             # previous nights a quantity is compared with
    [hil.detector]               # group (a role, or noise/linearity/link) -> quantity
    temperature_c = { min = 15.0, max = 45.0, baseline = 31.5, tolerance = 3.0 }

The shipped examples ``qkd_hw/lab/examples/real_lab.toml`` and ``virtual_lab.toml`` document
every key. :func:`lab_config_to_toml` writes a config back as TOML.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from dsp.vocabulary import DETECTIONS
from qkd_hw.errors import ConfigError
from qkd_hw.filekind import non_regular_kind

#: Limit names a lab config may use, with what they bound. Drivers refer to them by name
#: (``limit="power_dbm"`` on a property).
LIMIT_QUANTITIES: Mapping[str, str] = MappingProxyType({
    "power_dbm": "optical power set point (laser emission, power-meter range, VOA output), dBm",
    "power_mw": "optical power set point, mW",
    "attenuation_db": "optical attenuation of a variable attenuator, dB",
    "wavelength_nm": "wavelength set point, nm",
    "frequency_hz": "optical or RF frequency set point, Hz",
    "amplitude_v": "DAC/AWG output amplitude (peak-to-peak, single-ended), V",
    "offset_v": "DAC/AWG output offset, V",
    "bias_v": "modulator bias voltage, V",
    "current_ma": "laser diode or TEC current, mA",
    "temperature_c": "temperature set point, degrees Celsius",
    "sample_rate_hz": "DAC/ADC sample rate, Sa/s",
    "gain_db": "amplifier/detector gain, dB",
    "channel": "switch channel / port number",
})

OptionValue = str | int | float | bool

#: ``[roles]`` keys naming an instrument, with what that instrument is
ROLE_INSTRUMENTS: Mapping[str, str] = MappingProxyType({
    "signal_laser": "transmitter laser (Alice's carrier)",
    "lo_laser": "local-oscillator laser (Bob)",
    "awg": "arbitrary waveform generator driving the IQ modulator",
    "bias_controller": "modulator bias controller",
    "digitizer": "ADC / oscilloscope recording the detector",
    "detector": "balanced (homodyne) detector",
    "power_meter": "optical power meter at the modulator's monitor tap",
    "voa": "variable optical attenuator in the quantum channel",
    "switch": "optical switch between the channel and the detector",
})

#: ``[roles]`` keys giving a channel or port: (instrument role it belongs to, meaning)
ROLE_PORTS: Mapping[str, tuple[str, str]] = MappingProxyType({
    "awg_i_channel": ("awg", "AWG channel driving the modulator's I arm"),
    "awg_q_channel": ("awg", "AWG channel driving the modulator's Q arm"),
    "digitizer_channel": ("digitizer", "digitizer channel carrying the detector output"),
    "voa_channel": ("voa", "VOA channel in the quantum channel"),
    "switch_signal_port": ("switch", "switch port that passes the signal to the detector"),
    "switch_block_port": ("switch", "switch port that blocks the signal (shot-noise capture)"),
})

DEFAULT_TIMEOUT_S = 2.0
DEFAULT_RETRIES = 2
DEFAULT_VISA_LIBRARY = "@py"


@dataclass(frozen=True)
class Interval:
    """A closed interval ``[min, max]``; ``None`` means unbounded on that side."""

    min: float | None = None
    max: float | None = None

    def __post_init__(self) -> None:
        # Built in code (Limits.of, from_resource, scripts) as well as from the file: a NaN
        # bound would make every comparison False and silently disable that side.
        for side in ("min", "max"):
            value = getattr(self, side)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"limit {side} must be a number or None, got "
                                 f"{type(value).__name__} {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"limit {side} must be finite, got {value!r}")
            object.__setattr__(self, side, float(value))
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min:g} > max {self.max:g}")

    def __contains__(self, value: float) -> bool:
        if value != value:  # NaN: not inside any limit (every comparison with it is False)
            return False
        if self.min is not None and value < self.min:
            return False
        return not (self.max is not None and value > self.max)

    def __str__(self) -> str:
        lo = "-inf" if self.min is None else f"{self.min:g}"
        hi = "+inf" if self.max is None else f"{self.max:g}"
        return f"[{lo}, {hi}]"


@dataclass(frozen=True)
class Limits:
    """Safety limits of one instrument, by quantity name (see :data:`LIMIT_QUANTITIES`)."""

    intervals: Mapping[str, Interval] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if not isinstance(self.intervals, Mapping):
            raise ValueError(f"limits must be a mapping of quantity -> Interval, got "
                             f"{type(self.intervals).__name__}")
        unknown = sorted(set(self.intervals) - set(LIMIT_QUANTITIES), key=str)
        if unknown:
            raise ValueError(f"unknown limit(s) {unknown}; allowed: {sorted(LIMIT_QUANTITIES)}")
        for quantity, interval in self.intervals.items():
            if not isinstance(interval, Interval):
                raise ValueError(f"limit {quantity} must be an Interval, got "
                                 f"{type(interval).__name__} {interval!r}")
        object.__setattr__(self, "intervals", MappingProxyType(dict(self.intervals)))

    def get(self, quantity: str) -> Interval | None:
        if quantity not in LIMIT_QUANTITIES:
            raise KeyError(f"unknown limit quantity {quantity!r}")
        return self.intervals.get(quantity)

    def __contains__(self, quantity: str) -> bool:
        return quantity in self.intervals

    @classmethod
    def of(cls, **intervals: Interval | tuple[float | None, float | None]) -> Limits:
        """Build in code: ``Limits.of(power_dbm=(None, 10.0), attenuation_db=Interval(3, 60))``."""
        conv: dict[str, Interval] = {}
        for quantity, v in intervals.items():
            if isinstance(v, Interval):
                conv[quantity] = v
                continue
            if not (isinstance(v, tuple | list) and len(v) == 2):
                raise ValueError(f"limit {quantity} must be an Interval or a (min, max) pair, "
                                 f"got {v!r}")
            try:
                conv[quantity] = Interval(*v)
            except ValueError as exc:
                raise ValueError(f"limit {quantity}: {exc}") from None
        return cls(conv)


@dataclass(frozen=True)
class InstrumentConfig:
    """How to reach one instrument and what it may be told to do."""

    name: str
    driver: str
    resource: str
    timeout_s: float = DEFAULT_TIMEOUT_S
    retries: int = DEFAULT_RETRIES
    visa_library: str = DEFAULT_VISA_LIBRARY
    limits: Limits = field(default_factory=Limits)
    options: Mapping[str, OptionValue] = field(default_factory=lambda: MappingProxyType({}))
    source: str = "<code>"  # file the entry came from, for error messages

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))
        if not isinstance(self.limits, Limits):
            raise ValueError(f"limits must be a Limits (e.g. Limits.of(...)), got "
                             f"{type(self.limits).__name__}")
        t = self.timeout_s
        if isinstance(t, bool) or not isinstance(t, int | float) or not (
                t > 0 and math.isfinite(t)):
            raise ValueError(f"timeout_s must be a finite number > 0, got {t!r}")
        r = self.retries
        if isinstance(r, bool) or not isinstance(r, int) or r < 0:
            raise ValueError(f"retries must be an integer >= 0, got {r!r}")


@dataclass(frozen=True)
class Roles:
    """What the instruments are for: instrument names by role, and the channels/ports that
    carry meaning (see :data:`ROLE_INSTRUMENTS`, :data:`ROLE_PORTS`). ``None``: not set."""

    instruments: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    ports: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        object.__setattr__(self, "instruments", MappingProxyType(dict(self.instruments)))
        object.__setattr__(self, "ports", MappingProxyType(dict(self.ports)))

    def role_of(self, instrument: str) -> str | None:
        """Role of the instrument named ``instrument`` (None if it has none)."""
        for role, name in self.instruments.items():
            if name == instrument:
                return role
        return None


@dataclass(frozen=True)
class LinkParams:
    """Nominal parameters of the link (what the transmitter and the receiver are set up for)."""

    symbol_rate_hz: float
    sample_rate_hz: float
    rolloff: float
    signal_frequency_hz: float
    modulation_variance_snu: float
    detector_efficiency: float
    detection: str = "heterodyne"
    awg_sample_rate_hz: float | None = None
    pilot_frequencies_hz: tuple[float, ...] = ()
    lo_power_mw: float | None = None


@dataclass(frozen=True)
class RampLimits:
    """Largest step of a setting a procedure may make at once (it ramps in such steps)."""

    bias_v_per_step: float | None = None
    lo_mw_per_step: float | None = None
    step_interval_s: float = 0.1


@dataclass(frozen=True)
class VirtualPhysics:
    """The physical truth of the virtual lab (``[virtual]``); every number its model uses.

    See ``qkd_hw/lab/examples/virtual_lab.toml`` for the meaning and unit of each field and
    :mod:`qkd_hw.lab` for the model.
    """

    electronic_noise_snu: float = 0.1
    excess_noise_snu: float = 0.02
    fiber_loss_db: float = 5.0
    detector_efficiency: float = 0.7
    lo_saturation_mw: float = 12.0
    laser_linewidth_hz: float = 1e3
    frequency_offset_hz: float = 0.0
    lo_reference_mw: float = 5.0
    shot_noise_rms_v: float = 0.02
    lo_path_loss_db: float = 0.0
    tx_attenuation_db: float = 60.0
    modulator_v_pi_rf_v: float = 3.0
    rf_gain: float = 1.0
    bias_v_pi_v: float = 5.0
    bias_v_offset_v: float = 0.7
    power_meter_tap_db: float = 20.0
    responsivity_a_per_w: float = 0.8
    detector_imbalance: float = 0.01
    voa_insertion_loss_db: float = 0.0
    wavelength_nm: float = 1550.0
    trigger_delay_s: float = 0.0
    seed: int | None = None


@dataclass(frozen=True)
class InstrumentFault:
    """A fault of one emulator of the virtual lab (``[virtual.faults.<instrument>]``).

    answers : False: the emulator is stopped once the lab has started (it does not answer).
    readings : fixed values of the emulator's measured quantities (its ``measure`` hook's
        names, e.g. ``module_temperature_c``, ``wavelength_offset_pm``, ``temperature_c``).
    """

    answers: bool = True
    readings: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Threshold:
    """Allowed range of one health quantity and its drift tolerance (``[hil.<group>]``).

    ``min``/``max`` bound the value absolutely; ``baseline`` +- ``tolerance`` is the lab's
    normal value, and a move by more than ``tolerance`` from the previous nights is drift.
    """

    min: float | None = None
    max: float | None = None
    baseline: float | None = None
    tolerance: float | None = None

    def problem(self, value: float) -> str | None:
        """Why ``value`` is out of range (None when it is inside)."""
        if not math.isfinite(value):
            return "not a finite number"
        if self.min is not None and value < self.min:
            return f"below the minimum {self.min:g}"
        if self.max is not None and value > self.max:
            return f"above the maximum {self.max:g}"
        if self.baseline is not None and self.tolerance is not None \
                and abs(value - self.baseline) > self.tolerance:
            return f"off the baseline {self.baseline:g} +- {self.tolerance:g}"
        return None

    def __str__(self) -> str:
        parts = [f"[{'-inf' if self.min is None else f'{self.min:g}'}, "
                 f"{'inf' if self.max is None else f'{self.max:g}'}]"]
        if self.baseline is not None and self.tolerance is not None:
            parts.append(f"baseline {self.baseline:g} +- {self.tolerance:g}")
        return ", ".join(parts)


@dataclass(frozen=True)
class HilConfig:
    """Thresholds of the HIL suite (``[hil]``): ``"group.quantity"`` -> :class:`Threshold`."""

    thresholds: Mapping[str, Threshold] = field(default_factory=lambda: MappingProxyType({}))
    drift_nights: int = 7


@dataclass(frozen=True)
class LabConfig:
    path: Path | None
    name: str
    instruments: Mapping[str, InstrumentConfig]
    roles: Roles = field(default_factory=Roles)
    link: LinkParams | None = None
    ramp: RampLimits = field(default_factory=RampLimits)
    virtual: VirtualPhysics | None = None
    faults: Mapping[str, InstrumentFault] = field(default_factory=lambda: MappingProxyType({}))
    hil: HilConfig | None = None

    def role(self, role: str) -> InstrumentConfig:
        """The instrument of ``role`` (ConfigError naming the file if the role is not set)."""
        if role not in ROLE_INSTRUMENTS:
            raise KeyError(f"unknown role {role!r}; known: {sorted(ROLE_INSTRUMENTS)}")
        name = self.roles.instruments.get(role)
        if name is None:
            raise ConfigError(f"{self.path or '<lab config>'}: roles.{role} is not set "
                              f"(which instrument is the {ROLE_INSTRUMENTS[role]}?)")
        return self.instruments[name]

    def port(self, name: str) -> int:
        """Channel/port number of ``name`` (:data:`ROLE_PORTS`); ConfigError if not set."""
        if name not in ROLE_PORTS:
            raise KeyError(f"unknown port role {name!r}; known: {sorted(ROLE_PORTS)}")
        value = self.roles.ports.get(name)
        if value is None:
            raise ConfigError(f"{self.path or '<lab config>'}: roles.{name} is not set "
                              f"({ROLE_PORTS[name][1]})")
        return value

    def instrument(self, name: str) -> InstrumentConfig:
        try:
            return self.instruments[name]
        except KeyError:
            raise ConfigError(
                f"{self.path}: no instrument {name!r} (have: {sorted(self.instruments)})"
            ) from None


_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
_INSTRUMENT_KEYS = {"driver", "resource", "timeout_s", "retries", "visa_library", "limits",
                    "options"}
_REQUIRED = ("driver", "resource")


def _type_name(value: Any) -> str:
    return type(value).__name__


def _number(value: Any, where: str, src: str) -> float:
    # bool is an int subclass in Python; a 'true' where a number belongs is a typo, not 1.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{src}: {where} must be a number, got {_type_name(value)} {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{src}: {where} must be finite, got {value!r}")
    return float(value)


def _parse_limits(raw: Any, where: str, src: str) -> Limits:
    if not isinstance(raw, dict):
        raise ConfigError(f"{src}: {where} must be a table, got {_type_name(raw)}")
    intervals: dict[str, Interval] = {}
    for quantity, spec in raw.items():
        key = f"{where}.{quantity}"
        if quantity not in LIMIT_QUANTITIES:
            allowed = ", ".join(sorted(LIMIT_QUANTITIES))
            raise ConfigError(f"{src}: unknown key {key!r} (allowed limits: {allowed})")
        if not isinstance(spec, dict):
            raise ConfigError(
                f"{src}: {key} must be a table like {{ min = 1.0, max = 2.0 }}, "
                f"got {_type_name(spec)} {spec!r}"
            )
        extra = sorted(set(spec) - {"min", "max"})
        if extra:
            raise ConfigError(f"{src}: unknown key {key}.{extra[0]!r} (allowed: min, max)")
        if not spec:
            raise ConfigError(f"{src}: {key} needs min and/or max")
        lo = _number(spec["min"], f"{key}.min", src) if "min" in spec else None
        hi = _number(spec["max"], f"{key}.max", src) if "max" in spec else None
        if lo is not None and hi is not None and lo > hi:
            raise ConfigError(f"{src}: {key}: min {lo:g} > max {hi:g}")
        intervals[quantity] = Interval(lo, hi)
    return Limits(intervals)


def _parse_instrument(name: str, raw: Any, src: str) -> InstrumentConfig:
    where = f"instruments.{name}"
    if not _NAME_RE.match(name):
        raise ConfigError(f"{src}: {where}: instrument names are identifiers, got {name!r}")
    if not isinstance(raw, dict):
        raise ConfigError(f"{src}: {where} must be a table, got {_type_name(raw)}")
    for key in raw:
        if key not in _INSTRUMENT_KEYS:
            allowed = ", ".join(sorted(_INSTRUMENT_KEYS))
            raise ConfigError(f"{src}: unknown key '{where}.{key}' (allowed: {allowed})")
    for key in _REQUIRED:
        if key not in raw:
            raise ConfigError(f"{src}: missing required key '{where}.{key}'")
    for key in ("driver", "resource", "visa_library"):
        if key in raw and not (isinstance(raw[key], str) and raw[key].strip()):
            raise ConfigError(
                f"{src}: {where}.{key} must be a non-empty string, got {_type_name(raw[key])} "
                f"{raw[key]!r}"
            )
    timeout_s = DEFAULT_TIMEOUT_S
    if "timeout_s" in raw:
        timeout_s = _number(raw["timeout_s"], f"{where}.timeout_s", src)
        if timeout_s <= 0:
            raise ConfigError(f"{src}: {where}.timeout_s must be > 0, got {timeout_s:g}")
    retries = DEFAULT_RETRIES
    if "retries" in raw:
        r = raw["retries"]
        if isinstance(r, bool) or not isinstance(r, int) or not 0 <= r <= 10:
            raise ConfigError(f"{src}: {where}.retries must be an integer 0..10, got {r!r}")
        retries = r
    limits = _parse_limits(raw["limits"], f"{where}.limits", src) if "limits" in raw else Limits()
    options: dict[str, OptionValue] = {}
    if "options" in raw:
        opts = raw["options"]
        if not isinstance(opts, dict):
            raise ConfigError(f"{src}: {where}.options must be a table, got {_type_name(opts)}")
        for key, value in opts.items():
            if not isinstance(value, str | int | float | bool):
                raise ConfigError(
                    f"{src}: {where}.options.{key} must be a string, number or boolean, "
                    f"got {_type_name(value)}"
                )
            options[key] = value
    return InstrumentConfig(
        name=name,
        driver=raw["driver"].strip(),
        resource=raw["resource"].strip(),
        timeout_s=timeout_s,
        retries=retries,
        visa_library=raw.get("visa_library", DEFAULT_VISA_LIBRARY),
        limits=limits,
        options=options,
        source=src,
    )


_TOP_KEYS = ("lab", "instruments", "roles", "link", "ramp", "virtual", "hil")
_THRESHOLD_KEYS = ("min", "max", "baseline", "tolerance")

#: numeric rules of the typed tables: field -> (lower bound, lower inclusive, upper bound)
_RULES: Mapping[str, tuple[float | None, bool, float | None]] = MappingProxyType({
    "symbol_rate_hz": (0.0, False, None), "sample_rate_hz": (0.0, False, None),
    "awg_sample_rate_hz": (0.0, False, None), "rolloff": (0.0, True, 1.0),
    "signal_frequency_hz": (0.0, True, None), "modulation_variance_snu": (0.0, False, None),
    "detector_efficiency": (0.0, False, 1.0), "lo_power_mw": (0.0, True, None),
    "bias_v_per_step": (0.0, False, None), "lo_mw_per_step": (0.0, False, None),
    "step_interval_s": (0.0, True, None),
    "electronic_noise_snu": (0.0, True, None), "excess_noise_snu": (0.0, True, None),
    "fiber_loss_db": (0.0, True, None), "lo_saturation_mw": (0.0, False, None),
    "laser_linewidth_hz": (0.0, True, None), "lo_reference_mw": (0.0, False, None),
    "shot_noise_rms_v": (0.0, False, None), "lo_path_loss_db": (0.0, True, None),
    "tx_attenuation_db": (0.0, True, None), "modulator_v_pi_rf_v": (0.0, False, None),
    "rf_gain": (0.0, True, None), "bias_v_pi_v": (0.0, False, None),
    "power_meter_tap_db": (0.0, True, None), "responsivity_a_per_w": (0.0, False, None),
    "detector_imbalance": (-1.0, True, 1.0), "voa_insertion_loss_db": (0.0, True, None),
    "wavelength_nm": (0.0, False, None), "trigger_delay_s": (0.0, True, None),
})
_CHOICES: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "detection": DETECTIONS})


def _checked_number(value: Any, key: str, src: str) -> float:
    v = _number(value, key, src)
    rule = _RULES.get(key.rsplit(".", 1)[-1])
    if rule is not None:
        lo, lo_incl, hi = rule
        if lo is not None and (v < lo or (v == lo and not lo_incl)):
            raise ConfigError(f"{src}: {key} must be {'>=' if lo_incl else '>'} {lo:g}, "
                              f"got {v:g}")
        if hi is not None and v > hi:
            raise ConfigError(f"{src}: {key} must be <= {hi:g}, got {v:g}")
    return v


def _parse_value(kind: str, value: Any, key: str, src: str) -> Any:
    """One value of a typed table by its annotation (``float``, ``str``, ``int | None``,
    ``tuple[float, ...]``, ``float | None``)."""
    base = kind.replace(" | None", "")
    if base == "float":
        return _checked_number(value, key, src)
    if base == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{src}: {key} must be an integer, got {_type_name(value)} "
                              f"{value!r}")
        return value
    if base == "str":
        choices = _CHOICES.get(key.rsplit(".", 1)[-1])
        if not isinstance(value, str) or (choices and value not in choices):
            want = f"one of {list(choices)}" if choices else "a string"
            raise ConfigError(f"{src}: {key} must be {want}, got {value!r}")
        return value
    if base == "tuple[float, ...]":
        if not isinstance(value, list):
            raise ConfigError(f"{src}: {key} must be a list of numbers, got "
                              f"{_type_name(value)} {value!r}")
        return tuple(_checked_number(v, key, src) for v in value)
    raise AssertionError(f"no parser for {kind}")  # pragma: no cover - schema bug


def _parse_fields(cls: type, raw: Any, where: str, src: str) -> Any:
    """A frozen dataclass from a TOML table: unknown keys, wrong types and missing required
    fields are ConfigErrors naming the dotted key."""
    import dataclasses

    if not isinstance(raw, dict):
        raise ConfigError(f"{src}: {where} must be a table, got {_type_name(raw)}")
    fields_ = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields_:
            raise ConfigError(f"{src}: unknown key '{where}.{key}' (allowed: "
                              f"{', '.join(fields_)})")
    values: dict[str, Any] = {}
    for name, f in fields_.items():
        required = (f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING)
        if name not in raw:
            if required:
                raise ConfigError(f"{src}: missing required key '{where}.{name}'")
            continue
        values[name] = _parse_value(str(f.type), raw[name], f"{where}.{name}", src)
    return cls(**values)


def _check_link(link: LinkParams, src: str) -> None:
    """The quantum band and the pilots must lie below the digitizer's Nyquist frequency."""
    nyquist = link.sample_rate_hz / 2
    top = link.signal_frequency_hz + (1 + link.rolloff) * link.symbol_rate_hz / 2
    if top >= nyquist:
        raise ConfigError(
            f"{src}: link: the quantum band reaches {top:g} Hz (signal_frequency_hz + (1 + "
            f"rolloff) symbol_rate_hz / 2), not below the Nyquist frequency {nyquist:g} Hz of "
            f"link.sample_rate_hz")
    for f in link.pilot_frequencies_hz:
        if f >= nyquist:
            raise ConfigError(f"{src}: link.pilot_frequencies_hz: {f:g} Hz is not below the "
                              f"Nyquist frequency {nyquist:g} Hz of link.sample_rate_hz")


def _parse_roles(raw: Any, instruments: Mapping[str, InstrumentConfig], src: str) -> Roles:
    if not isinstance(raw, dict):
        raise ConfigError(f"{src}: roles must be a table, got {_type_name(raw)}")
    names: dict[str, str] = {}
    ports: dict[str, int] = {}
    for key, value in raw.items():
        where = f"roles.{key}"
        if key in ROLE_INSTRUMENTS:
            if not isinstance(value, str) or value not in instruments:
                raise ConfigError(f"{src}: {where} = {value!r} names no instrument of this "
                                  f"config (have: {sorted(instruments)})")
            names[key] = value
        elif key in ROLE_PORTS:
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 255:
                raise ConfigError(f"{src}: {where} must be a channel/port number 1..255, got "
                                  f"{value!r}")
            ports[key] = value
        else:
            allowed = ", ".join([*ROLE_INSTRUMENTS, *ROLE_PORTS])
            raise ConfigError(f"{src}: unknown key '{where}' (allowed: {allowed})")
    if ports.get("switch_signal_port") is not None and \
            ports.get("switch_signal_port") == ports.get("switch_block_port"):
        raise ConfigError(f"{src}: roles.switch_signal_port and roles.switch_block_port are "
                          f"both {ports['switch_signal_port']}: the blocking port must differ")
    if ports.get("awg_i_channel") is not None and \
            ports.get("awg_i_channel") == ports.get("awg_q_channel"):
        raise ConfigError(f"{src}: roles.awg_i_channel and roles.awg_q_channel are both "
                          f"{ports['awg_i_channel']}")
    return Roles(names, ports)


# -- writing ----------------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # shortest repr reads back to the same float
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _toml_table(header: str, items: Mapping[str, Any]) -> list[str]:
    lines = [f"[{header}]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in items.items() if v is not None]
    return [*lines, ""]


def lab_config_to_toml(config: LabConfig, *, include_virtual: bool = True) -> str:
    """TOML text of ``config`` that :func:`parse_lab_config_text` reads back to an equal
    config (comments of the original file are not kept). For ``/meta/lab_config`` and the
    virtual lab's client config (``include_virtual=False`` drops ``[virtual]``)."""
    import dataclasses

    lines = _toml_table("lab", {"name": config.name})
    for name, inst in config.instruments.items():
        lines += _toml_table(f"instruments.{name}", {
            "driver": inst.driver, "resource": inst.resource, "timeout_s": inst.timeout_s,
            "retries": inst.retries, "visa_library": inst.visa_library})
        if inst.limits.intervals:
            lines.append(f"[instruments.{name}.limits]")
            for q, iv in inst.limits.intervals.items():
                bounds = ", ".join(f"{side} = {getattr(iv, side)!r}" for side in ("min", "max")
                                   if getattr(iv, side) is not None)
                lines.append(f"{q} = {{ {bounds} }}")
            lines.append("")
        if inst.options:
            lines += _toml_table(f"instruments.{name}.options", inst.options)
    if config.roles.instruments or config.roles.ports:
        lines += _toml_table("roles", {**config.roles.instruments, **config.roles.ports})
    if config.link is not None:
        lines += _toml_table("link", dataclasses.asdict(config.link))
    lines += _toml_table("ramp", dataclasses.asdict(config.ramp))
    if include_virtual and config.virtual is not None:
        lines += _toml_table("virtual", dataclasses.asdict(config.virtual))
        for name, fault in config.faults.items():
            lines += _toml_table(f"virtual.faults.{name}", {"answers": fault.answers})
            lines[-1:-1] = [f"readings = {_inline(fault.readings)}"] if fault.readings else []
    if config.hil is not None:
        lines += _toml_table("hil", {"drift_nights": config.hil.drift_nights})
        groups: dict[str, list[str]] = {}
        for key, th in config.hil.thresholds.items():
            group, quantity = key.split(".", 1)
            groups.setdefault(group, []).append(
                f"{quantity} = {_inline(dataclasses.asdict(th))}")
        for group, items in groups.items():
            lines += [f"[hil.{group}]", *items, ""]
    return "\n".join(lines)


def _inline(items: Mapping[str, Any]) -> str:
    """An inline TOML table of the non-None values."""
    return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in items.items()
                            if v is not None) + " }"


def parse_lab_config(data: Mapping[str, Any], *, source: str = "<string>",
                     path: Path | None = None) -> LabConfig:
    """Validate an already parsed TOML document (see the module docstring for the schema)."""
    for key in data:
        if key not in _TOP_KEYS:
            raise ConfigError(f"{source}: unknown key {key!r} (allowed: "
                              f"{', '.join(_TOP_KEYS)})")
    name = ""
    if "lab" in data:
        lab = data["lab"]
        if not isinstance(lab, dict):
            raise ConfigError(f"{source}: lab must be a table")
        for key in lab:
            if key != "name":
                raise ConfigError(f"{source}: unknown key 'lab.{key}' (allowed: name)")
        if "name" in lab:
            if not isinstance(lab["name"], str):
                raise ConfigError(f"{source}: lab.name must be a string")
            name = lab["name"]
    if "instruments" not in data:
        raise ConfigError(f"{source}: missing required table 'instruments'")
    insts = data["instruments"]
    if not isinstance(insts, dict):
        raise ConfigError(f"{source}: instruments must be a table of tables")
    parsed = {n: _parse_instrument(n, raw, source) for n, raw in insts.items()}
    roles = _parse_roles(data["roles"], parsed, source) if "roles" in data else Roles()
    link = _parse_fields(LinkParams, data["link"], "link", source) if "link" in data else None
    if link is not None:
        _check_link(link, source)
    ramp = (_parse_fields(RampLimits, data["ramp"], "ramp", source) if "ramp" in data
            else RampLimits())
    faults: dict[str, InstrumentFault] = {}
    virtual = None
    if "virtual" in data:
        raw_virtual = data["virtual"]
        if isinstance(raw_virtual, dict) and "faults" in raw_virtual:
            raw_virtual = dict(raw_virtual)
            faults = _parse_faults(raw_virtual.pop("faults"), parsed, source)
        virtual = _parse_fields(VirtualPhysics, raw_virtual, "virtual", source)
    hil = _parse_hil(data["hil"], source) if "hil" in data else None
    return LabConfig(path=path, name=name, instruments=MappingProxyType(parsed), roles=roles,
                     link=link, ramp=ramp, virtual=virtual, faults=MappingProxyType(faults),
                     hil=hil)


def _parse_faults(raw: Any, instruments: Mapping[str, InstrumentConfig],
                  src: str) -> dict[str, InstrumentFault]:
    """``[virtual.faults.<instrument>]`` tables (see :class:`InstrumentFault`)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{src}: virtual.faults must be a table, got {_type_name(raw)}")
    out: dict[str, InstrumentFault] = {}
    for name, table in raw.items():
        where = f"virtual.faults.{name}"
        if name not in instruments:
            raise ConfigError(f"{src}: {where}: no instrument {name!r} in this config (have: "
                              f"{sorted(instruments)})")
        if not isinstance(table, dict):
            raise ConfigError(f"{src}: {where} must be a table, got {_type_name(table)}")
        for key in table:
            if key not in ("answers", "readings"):
                raise ConfigError(f"{src}: unknown key '{where}.{key}' (allowed: answers, "
                                  f"readings)")
        answers = table.get("answers", True)
        if not isinstance(answers, bool):
            raise ConfigError(f"{src}: {where}.answers must be true or false, got {answers!r}")
        readings = table.get("readings", {})
        if not isinstance(readings, dict):
            raise ConfigError(f"{src}: {where}.readings must be a table of numbers, got "
                              f"{_type_name(readings)}")
        values = {q: _number(v, f"{where}.readings.{q}", src) for q, v in readings.items()}
        out[name] = InstrumentFault(answers=answers, readings=MappingProxyType(values))
    return out


def _parse_hil(raw: Any, src: str) -> HilConfig:
    """``[hil]``: ``drift_nights`` and ``[hil.<group>]`` tables of quantity thresholds."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{src}: hil must be a table, got {_type_name(raw)}")
    nights = raw.get("drift_nights", 7)
    if isinstance(nights, bool) or not isinstance(nights, int) or not 1 <= nights <= 365:
        raise ConfigError(f"{src}: hil.drift_nights must be an integer 1..365, got {nights!r}")
    thresholds: dict[str, Threshold] = {}
    for group, table in raw.items():
        if group == "drift_nights":
            continue
        if not isinstance(table, dict):
            raise ConfigError(f"{src}: hil.{group} must be a table of quantity thresholds "
                              f"(or hil.drift_nights), got {_type_name(table)}")
        for quantity, spec in table.items():
            where = f"hil.{group}.{quantity}"
            if not isinstance(spec, dict):
                raise ConfigError(f"{src}: {where} must be a table {{min, max, baseline, "
                                  f"tolerance}}, got {_type_name(spec)}")
            for key in spec:
                if key not in _THRESHOLD_KEYS:
                    raise ConfigError(f"{src}: unknown key '{where}.{key}' (allowed: "
                                      f"{', '.join(_THRESHOLD_KEYS)})")
            v = {k: _number(spec[k], f"{where}.{k}", src) for k in spec}
            if v.get("tolerance") is not None and v["tolerance"] <= 0:
                raise ConfigError(f"{src}: {where}.tolerance must be > 0, got "
                                  f"{v['tolerance']:g}")
            if "min" in v and "max" in v and v["min"] > v["max"]:
                raise ConfigError(f"{src}: {where}: min {v['min']:g} > max {v['max']:g}")
            thresholds[f"{group}.{quantity}"] = Threshold(**v)
    return HilConfig(MappingProxyType(thresholds), nights)


def load_lab_config(path: str | os.PathLike[str]) -> LabConfig:
    """Read and validate a lab-config TOML file; every problem is a ConfigError naming the file."""
    p = Path(path)
    try:
        what = non_regular_kind(p)
        if what is not None:   # checked first: opening a FIFO would block
            raise ConfigError(f"{p}: is {what}, not a lab config file")
        with p.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{p}: lab config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read lab config: {exc}") from exc
    return parse_lab_config(data, source=str(p), path=p)


def parse_lab_config_text(text: str, *, source: str = "<string>") -> LabConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from exc
    return parse_lab_config(data, source=source)
