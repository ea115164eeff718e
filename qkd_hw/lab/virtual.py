"""The virtual lab: every instrument emulator started together behind one :class:`LinkModel`.

See :mod:`qkd_hw.lab` for the API and how a capture is produced.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Self

import numpy as np

from drivers.emulators.agiltron_switch import AgiltronSwitchEmulator
from drivers.emulators.homodyne_detector import HomodyneDetectorEmulator
from drivers.emulators.keysight_infiniium import InfiniiumEmulator
from drivers.emulators.keysight_m8195a import M8195AEmulator
from drivers.emulators.keysight_n77xx import N77xxEmulator
from drivers.emulators.nkt_koheras_basik import KoherasBasikEmulator
from drivers.emulators.thorlabs_mbx import ThorlabsMbxEmulator
from drivers.emulators.thorlabs_pm100d import PM100DEmulator
from qkd_hw.errors import ConfigError, QkdHwError
from qkd_hw.lab.model import Drive, LinkModel, LinkState, code_histogram
from qkd_hw.labconfig import (
    ROLE_INSTRUMENTS,
    LabConfig,
    lab_config_to_toml,
    load_lab_config,
    parse_lab_config_text,
)
from qkd_hw.sim.waveform import laser_phase, quantize

__all__ = ["REQUIRED_PORTS", "ROLE_DRIVERS", "VirtualLab", "virtual_lab"]

#: the driver each role must have in a virtual lab (the model reads that emulator's state)
ROLE_DRIVERS: Mapping[str, str] = {
    "signal_laser": "nkt_koheras_basik",
    "lo_laser": "nkt_koheras_basik",
    "awg": "keysight_m8195a",
    "bias_controller": "thorlabs_mbx",
    "digitizer": "keysight_infiniium",
    "detector": "homodyne_detector",
    "power_meter": "thorlabs_pm100d",
    "voa": "keysight_n77xx",
    "switch": "agiltron_switch",
}
#: board temperature the virtual detector reports (a fault's ``readings`` can change it)
DETECTOR_TEMPERATURE_C = 31.5
REQUIRED_PORTS = ("awg_i_channel", "digitizer_channel", "voa_channel", "switch_signal_port",
                  "switch_block_port")


class VirtualLab:
    """Emulators of every instrument of ``config`` on loopback sockets / ptys, tied to one
    physics model (``config.virtual``). ``start()`` returns self; use as a context manager."""

    def __init__(self, config: LabConfig | str | os.PathLike[str]) -> None:
        if not isinstance(config, LabConfig):
            config = load_lab_config(config)
        self.config = config
        src = config.path or "<lab config>"
        if config.virtual is None:
            raise ConfigError(f"{src}: no [virtual] table: a virtual lab needs the physical "
                              f"truth (see `qkd-hw lab example --virtual`)")
        for role, driver in ROLE_DRIVERS.items():
            inst = config.role(role)
            if inst.driver != driver:
                raise ConfigError(f"{src}: roles.{role} = {inst.name!r} has driver "
                                  f"{inst.driver!r}; the virtual lab models {driver!r}")
        for port in REQUIRED_PORTS:
            config.port(port)
        self.physics = config.virtual
        self.model = LinkModel(self.physics,
                               switch_signal_port=config.port("switch_signal_port"))
        self.rng = np.random.default_rng(self.physics.seed)
        self._rng_lock = threading.Lock()
        self.emulators: dict[str, Any] = {}
        self._drives: dict[int, tuple[tuple[object, ...], Drive | None]] = {}
        self.client_config: LabConfig | None = None
        self.client_config_text = ""

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> Self:
        """Start every emulator and build the client lab config (``client_config``)."""
        if self.emulators:
            raise RuntimeError("virtual lab already started")
        _warm_up()
        try:
            for name, inst in self.config.instruments.items():
                emu = self._make_emulator(name, inst.driver)
                self.emulators[name] = emu
                try:
                    emu.start()
                except OSError as exc:  # no pty, no loopback port: one line, not a traceback
                    raise QkdHwError(f"virtual lab: cannot start the emulator of "
                                     f"instruments.{name} ({inst.driver}): {exc}") from exc
            self.client_config_text = self._client_text()
            self.client_config = parse_lab_config_text(self.client_config_text,
                                                       source="<virtual lab client config>")
            for name, fault in self.config.faults.items():
                if not fault.answers:  # unplugged: its resource stays in the client config
                    self.emulators[name].stop()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every emulator (sockets and ptys closed, threads joined). Idempotent."""
        for emu in self.emulators.values():
            with contextlib.suppress(Exception):
                emu.stop()
        self.emulators.clear()

    def __enter__(self) -> Self:
        return self if self.emulators else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- access ----------------------------------------------------------------------------

    def emulator(self, role: str) -> Any:
        """The running emulator of ``role`` (``"lo_laser"``, ``"digitizer"``, ...)."""
        if role not in ROLE_INSTRUMENTS:
            raise KeyError(f"unknown role {role!r}; known: {sorted(ROLE_INSTRUMENTS)}")
        return self.emulators[self.config.role(role).name]

    def state(self) -> LinkState:
        """Every setting the physics depends on, read from the emulators now."""
        cfg = self.config
        awg = self.emulator("awg")
        adc = self.emulator("digitizer")
        det = self.emulator("detector")
        ch_adc = cfg.port("digitizer_channel")
        q_ch = cfg.roles.ports.get("awg_q_channel")
        return LinkState(
            tx_power_mw=self.emulator("signal_laser").output_power_mw(),
            lo_power_mw=self.emulator("lo_laser").output_power_mw(),
            bias_v=self.emulator("bias_controller").bias_v(),
            drive_i=self._drive(awg, cfg.port("awg_i_channel")),
            drive_q=self._drive(awg, q_ch) if q_ch is not None else None,
            awg_sample_rate_hz=awg.sample_rate,
            voa_transmission=self.emulator("voa").transmission(cfg.port("voa_channel")),
            switch_port=self.emulator("switch").channel,
            detector_enabled=bool(det.enabled),
            detector_gain_v_per_a=det.state()["gain_v_per_a"],
            adc_sample_rate_hz=adc.sample_rate,
            adc_range_v=adc.range_v[ch_adc],
            adc_offset_v=adc.offset_v[ch_adc],
        )

    def truth(self) -> dict[str, float | None]:
        """What an ideal receiver would estimate now (:meth:`LinkModel.truth`)."""
        return self.model.truth(self.state())

    def _drive(self, awg: M8195AEmulator, ch: int) -> Drive | None:
        """The channel's playing segment, one object while nothing about it changes (the
        model caches by identity; a 64 M-sample segment is copied once, not per reading)."""
        key = (awg.memory_version, awg.running, awg.output[ch], awg.selected[ch],
               awg.amplitude[ch], awg.offset[ch])
        cached = self._drives.get(ch)
        if cached is not None and cached[0] == key:
            return cached[1]
        out = awg.output_codes(ch)
        drive = None if out is None else Drive(*out)
        self._drives[ch] = (key, drive)
        return drive

    def capture(self, n: int) -> np.ndarray:
        """``n`` digitizer codes of the detector channel in the present state (what
        ``:SINGle`` records), without going through the digitizer."""
        st = self.state()
        with self._rng_lock:  # one Generator, used from the emulators' threads
            return self.model.adc_codes(st, n, self.rng)

    # -- wiring ----------------------------------------------------------------------------

    def _make_emulator(self, name: str, driver: str) -> Any:
        p = self.physics
        role = self.config.roles.role_of(name)
        make = _EMULATOR_FACTORIES.get(driver)
        if make is None:
            raise ConfigError(f"{self.config.path or '<lab config>'}: instruments.{name}: no "
                              f"emulator for driver {driver!r} in the virtual lab (have: "
                              f"{sorted(_EMULATOR_FACTORIES)})")
        emu = make(self, role)
        fault = self.config.faults.get(name)
        if fault is not None and fault.readings:
            if not hasattr(emu, "readings_override"):
                raise ConfigError(f"{self.config.path or '<lab config>'}: virtual.faults.{name}"
                                  f".readings: the {driver} emulator has no fixed readings")
            emu.readings_override.update(fault.readings)
        if driver == "keysight_n77xx":
            emu.INSERTION_LOSS_DB = p.voa_insertion_loss_db
        return emu

    def _adc_source(self, emu: InfiniiumEmulator, ch: int, n: int) -> np.ndarray:
        if ch != self.config.port("digitizer_channel"):  # nothing connected
            return np.zeros(n, dtype=np.int16)
        return self.capture(n)

    def _measure_detector(self, quantity: str, state: Mapping[str, Any]) -> float:
        i1, i2 = self.model.photocurrents_ua(self.state())
        return {"pd1_current_ua": i1, "pd2_current_ua": i2,
                "temperature_c": DETECTOR_TEMPERATURE_C}[quantity]

    def _measure_bias(self, quantity: str, state: Mapping[str, Any]) -> float:
        bias = self.emulator("bias_controller")
        if quantity == "bias_voltage_v":
            return bias.working_point_v()
        if quantity == "input_power_mw":
            return self.emulator("signal_laser").output_power_mw()
        return self.model.modulator_output_mw(self.state())  # tap_power_mw

    def _client_text(self) -> str:
        """The lab config with every resource pointing at its emulator, without [virtual]."""
        insts = {}
        for name, inst in self.config.instruments.items():
            emu = self.emulators[name]
            resource = getattr(emu, "resource", None) or emu.port
            insts[name] = dataclasses.replace(inst, resource=str(resource))
        client = dataclasses.replace(self.config, instruments=MappingProxyType(insts),
                                     virtual=None)
        return (f"# client config of the virtual lab started from {self.config.path}\n\n"
                + lab_config_to_toml(client) + "\n")


def _warm_up() -> None:
    """Compile (or load from numba's cache) the kernels a capture uses now, not inside the
    first ``:SINGle``, whose reply would wait for it beyond a driver's timeout."""
    laser_phase(np.zeros(4), 0.0)
    code_histogram(np.zeros(4, np.int8))
    quantize(np.zeros(4), scale=1.0, dtype="int16", lo=-32768.0, hi=32767.0)


def _laser(lab: VirtualLab, role: str | None) -> KoherasBasikEmulator:
    return KoherasBasikEmulator(standard_wavelength_nm=lab.physics.wavelength_nm)


def _bias(lab: VirtualLab, role: str | None) -> ThorlabsMbxEmulator:
    p = lab.physics
    measure = lab._measure_bias if role == "bias_controller" else None
    return ThorlabsMbxEmulator(measure=measure, v_pi=p.bias_v_pi_v, v_offset=p.bias_v_offset_v)


def _detector(lab: VirtualLab, role: str | None) -> HomodyneDetectorEmulator:
    return HomodyneDetectorEmulator(measure=lab._measure_detector if role == "detector" else None)


def _digitizer(lab: VirtualLab, role: str | None) -> InfiniiumEmulator:
    emu = InfiniiumEmulator()
    if role == "digitizer":
        emu.adc_source = lab._adc_source
        emu.acquire_channels = (lab.config.port("digitizer_channel"),)
    return emu


def _power_meter(lab: VirtualLab, role: str | None) -> PM100DEmulator:
    emu = PM100DEmulator()
    emu.true_wavelength_nm = lab.physics.wavelength_nm
    if role == "power_meter":
        emu.power_source = lambda _emu: lab.model.power_meter_w(lab.state())
    return emu


_EMULATOR_FACTORIES: Mapping[str, Callable[[VirtualLab, str | None], Any]] = {
    "nkt_koheras_basik": _laser,
    "thorlabs_mbx": _bias,
    "homodyne_detector": _detector,
    "keysight_infiniium": _digitizer,
    "thorlabs_pm100d": _power_meter,
    "keysight_m8195a": lambda lab, role: M8195AEmulator(),
    "keysight_n77xx": lambda lab, role: N77xxEmulator(),
    "agiltron_switch": lambda lab, role: AgiltronSwitchEmulator(),
}


@contextlib.contextmanager
def virtual_lab(config: LabConfig | str | os.PathLike[str]) -> Iterator[LabConfig]:
    """Run a virtual lab for the block; yields the client :class:`LabConfig` (the lab
    config pointing at the emulators) that drivers open like a real lab's."""
    with VirtualLab(config).start() as lab:
        assert lab.client_config is not None
        yield lab.client_config


def example_path(virtual: bool) -> Path:
    """The shipped example config (``virtual_lab.toml`` or ``real_lab.toml``)."""
    return Path(__file__).parent / "examples" / ("virtual_lab.toml" if virtual
                                                  else "real_lab.toml")
