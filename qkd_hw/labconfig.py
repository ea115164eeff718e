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

from qkd_hw.errors import ConfigError

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
class LabConfig:
    path: Path | None
    name: str
    instruments: Mapping[str, InstrumentConfig]

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


def parse_lab_config(data: Mapping[str, Any], *, source: str = "<string>",
                     path: Path | None = None) -> LabConfig:
    """Validate an already parsed TOML document (see the module docstring for the schema)."""
    for key in data:
        if key not in ("lab", "instruments"):
            raise ConfigError(f"{source}: unknown key {key!r} (allowed: lab, instruments)")
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
    return LabConfig(path=path, name=name, instruments=MappingProxyType(parsed))


def load_lab_config(path: str | os.PathLike[str]) -> LabConfig:
    """Read and validate a lab-config TOML file; every problem is a ConfigError naming the file."""
    p = Path(path)
    try:
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
