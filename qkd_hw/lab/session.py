"""A lab session: every instrument of ``[roles]`` open, settings changed safely and undone.

::

    with LabSession(config) as lab:
        lab.set("lo_laser", "power_setpoint_mw", 5.0)      # ramped in [ramp] steps
        lab.set("lo_laser", "emission", True)
        lab.set("switch", "channel", config.port("switch_signal_port"))
        lab.set("voa", "attenuation_db", 3.0, channel=config.port("voa_channel"))
        awg = lab.instrument("awg")                         # anything else: the driver itself
    # every setting changed through set() is back at its value before the session

``set(role, prop, value, channel=None)`` writes the driver :class:`~drivers.base.Property`
``prop`` (on ``instrument.channel(channel)`` when ``channel`` is given), after reading and
remembering its old value the first time it is changed. :meth:`LabSession.restore` (and the
exit of the ``with`` block, on success, error and Ctrl-C) puts the remembered values back in the
reverse order of their first change; Ctrl-C is deferred while it runs (a second Ctrl-C does not
cut the restore short) and delivered afterwards. A restore that fails for one setting still
restores the others, then raises :class:`RestoreError` naming every setting it could not
restore.

Ramps (``[ramp]`` of the lab config; the drivers do not enforce them)
----------------------------------------------------------------------
=====================  ==================================  ====================================
role                   property (driver)                   ramp
=====================  ==================================  ====================================
``bias_controller``    ``hold_voltage_v`` (MBX, V)         steps of at most ``bias_v_per_step``
``bias_controller``    ``mode`` (MBX ``MzmMode``)          into MANUAL or OFF (0 V): MANUAL takes
                                                           over at the bias applied now, the
                                                           hold voltage ramps to the target
                                                           (OFF: 0 V, then OFF, and the stored
                                                           hold voltage is put back); into an
                                                           auto mode: one write
``lo_laser``           ``power_setpoint_mw`` (BasiK, mW)   steps of at most ``lo_mw_per_step``
                                                           while emission is on (off: one write)
``lo_laser``           ``emission`` (BasiK, bool)          on: emission starts at a set point of
                                                           at most one step, then ramps up; off:
                                                           ramps down to one step, turns off,
                                                           and puts the set point back
``lo_laser``           ``power_setpoint_dbm``              refused when ``lo_mw_per_step`` is
                                                           set (use ``power_setpoint_mw``)
=====================  ==================================  ====================================

Between two steps the session waits ``step_interval_s``. Every intermediate write goes
through the driver, so its limits apply to each step. Other properties are written at once.
Entering an auto mode is not ramped: the controller searches its own lock point.
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from drivers.base import (
    Instrument,
    Property,
    create_instrument,
    defer_sigint,
    no_read_abort,
)
from qkd_hw.errors import InstrumentError, LimitError
from qkd_hw.lab.snapshot import lab_snapshot_json
from qkd_hw.labconfig import LabConfig

__all__ = ["LabSession", "RestoreError", "ramp_values"]

log = logging.getLogger(__name__)

#: progress callback: one human-readable line per step of a procedure
Progress = Callable[[str], None]

#: MBX ``MzmMode`` names (compared by name: the session does not import the driver's enum)
_MANUAL, _OFF = "MANUAL", "OFF"


class RestoreError(InstrumentError):
    """One or more settings could not be put back at the end of a session."""


def ramp_values(start: float, target: float, max_step: float | None) -> list[float]:
    """The values to write to go from ``start`` to ``target`` in equal steps of at most
    ``max_step`` (the last one is ``target``; ``[target]`` without a limit).

    Parameters
    ----------
    start, target : float
        Present and wanted value.
    max_step : float or None
        Largest change per write (> 0); None: one write.

    Returns
    -------
    list of float
        E.g. ``ramp_values(0, 3, 0.5)`` -> ``[0.5, 1.0, ..., 3.0]`` (6 writes).
    """
    delta = target - start
    if max_step is None or abs(delta) <= max_step:
        return [target]
    # 1e-9: 3 V in 0.5 V steps is 6 steps, not 7 because of float rounding
    n = math.ceil(abs(delta) / max_step - 1e-9)
    return [start + delta * k / n for k in range(1, n)] + [target]


def _has_channels(inst: Instrument) -> bool:
    # on the switch ``channel`` is a Property (the routed port), not a channel accessor
    return inspect.isfunction(getattr(type(inst), "channel", None))


def _mode_name(value: Any) -> str:
    return str(getattr(value, "name", value))


class LabSession:
    """Every instrument of the lab config's ``[roles]`` open; :meth:`set` changes settings with
    the ``[ramp]`` limits and remembers them so that :meth:`restore` (and ``__exit__``) can undo
    them. See the module docstring for the ramp rules.

    Parameters
    ----------
    config : LabConfig
        The lab (client) config; ``[roles]`` names the instruments opened.
    progress : callable, optional
        Called with one line per ramp and restore step (and by the procedures that use the
        session); an exception it raises (e.g. KeyboardInterrupt) stops the procedure.
    """

    def __init__(self, config: LabConfig, *, progress: Progress | None = None) -> None:
        self.config = config
        self.progress = progress
        self._instruments: dict[str, Instrument] = {}  # by instrument name, opening order
        self._saved: dict[tuple[str, str, int | None], Any] = {}  # first-change order
        self._restoring = False
        self._interrupted_in_restore: BaseException | None = None

    # -- life cycle ---------------------------------------------------------------------------

    def __enter__(self) -> LabSession:
        names = list(dict.fromkeys(self.config.roles.instruments.values()))
        try:
            for name in names:
                inst = create_instrument(self.config.instrument(name))
                inst.open()
                self._instruments[name] = inst
        except BaseException:
            self._close_all()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        with defer_sigint():
            try:
                self.restore()
            finally:
                self._close_all()

    def _close_all(self) -> None:
        for name, inst in reversed(list(self._instruments.items())):
            try:
                inst.close()
            except InstrumentError as exc:
                log.error("%s: close failed: %s", name, exc)
        self._instruments.clear()

    # -- access -------------------------------------------------------------------------------

    def instrument(self, role: str) -> Instrument:
        """The open driver of ``role`` (ConfigError naming the file if the role is not set)."""
        name = self.config.role(role).name
        try:
            return self._instruments[name]
        except KeyError:
            raise InstrumentError("session is not open (use it as a context manager)",
                                  instrument=name) from None

    def _target(self, role: str, channel: int | None) -> Any:
        inst = self.instrument(role)
        if channel is None:
            return inst
        if not _has_channels(inst):
            raise InstrumentError(f"{role}: the {type(inst).__name__} driver has no channels "
                                  f"(channel={channel})", instrument=inst.name)
        try:
            return inst.channel(channel)  # type: ignore[attr-defined]
        except ValueError as exc:  # e.g. channel 7 of a 4-channel instrument
            raise InstrumentError(f"{role}: {exc}", instrument=inst.name) from None

    def report(self, message: str) -> None:
        """Log ``message`` and pass it to the progress callback (procedures' steps)."""
        self._say(message)

    def _say(self, message: str) -> None:
        log.info("%s", message)
        if self.progress is None:
            return
        if not self._restoring:
            self.progress(message)
            return
        try:  # a restore is never cut short, not even by the progress callback
            self.progress(message)
        except BaseException as exc:  # re-raised when the restore is done
            self._interrupted_in_restore = self._interrupted_in_restore or exc

    # -- settings -----------------------------------------------------------------------------

    def get(self, role: str, prop: str, *, channel: int | None = None) -> Any:
        """Read property ``prop`` of ``role`` (of its channel ``channel``)."""
        return getattr(self._target(role, channel), prop)

    def set(self, role: str, prop: str, value: Any, *, channel: int | None = None) -> None:
        """Set ``prop`` of the instrument of ``role`` to ``value``, ramped by ``[ramp]``.

        Parameters
        ----------
        role : str
            Instrument role (``[roles]``), e.g. ``"lo_laser"``.
        prop : str
            Driver property name, e.g. ``"power_setpoint_mw"``, ``"hold_voltage_v"``.
        value
            New value (validated and limit-checked by the driver before each write).
        channel : int, optional
            Channel of the instrument (``instrument.channel(n)``), for channel properties.
        """
        ramp = self.config.ramp
        if role == "lo_laser" and prop == "emission":
            self._lo_emission(bool(value))
        elif role == "lo_laser" and prop == "power_setpoint_mw":
            self._lo_power(float(value))
        elif (role == "lo_laser" and prop == "power_setpoint_dbm"
              and ramp.lo_mw_per_step is not None):
            raise LimitError(f"{role}.{prop}: the lab ramps the LO in mW "
                             f"(ramp.lo_mw_per_step); set power_setpoint_mw instead; "
                             f"nothing was sent", instrument=self.instrument(role).name)
        elif role == "bias_controller" and prop == "hold_voltage_v":
            self._ramp(role, prop, float(value), ramp.bias_v_per_step, channel)
        elif role == "bias_controller" and prop == "mode":
            self._bias_mode(value)
        else:
            self._write(role, prop, value, channel)

    def _remember(self, role: str, prop: str, channel: int | None) -> None:
        key = (role, prop, channel)
        if key not in self._saved and not self._restoring:
            target = self._target(role, channel)
            declared = getattr(type(target), prop, None)
            if not isinstance(declared, Property) or declared.readonly or declared.writeonly:
                # only declared settings can be read back, hence restored
                raise InstrumentError(f"{role}: {type(target).__name__} has no readable and "
                                      f"writable property {prop!r}; nothing was sent",
                                      instrument=self.instrument(role).name)
            self._saved[key] = getattr(target, prop)

    def _write(self, role: str, prop: str, value: Any, channel: int | None = None) -> None:
        self._remember(role, prop, channel)
        setattr(self._target(role, channel), prop, value)

    def _ramp(self, role: str, prop: str, target: float, max_step: float | None,
              channel: int | None = None) -> None:
        self._remember(role, prop, channel)
        start = float(getattr(self._target(role, channel), prop))
        steps = ramp_values(start, target, max_step)
        for i, v in enumerate(steps):
            if i:
                time.sleep(self.config.ramp.step_interval_s)
            if len(steps) > 1:
                self._say(f"{role}.{prop}: {v:g} (step {i + 1}/{len(steps)})")
            setattr(self._target(role, channel), prop, v)

    def _lo_power(self, target: float) -> None:
        step = self.config.ramp.lo_mw_per_step
        emitting = bool(self.get("lo_laser", "emission"))
        self._ramp("lo_laser", "power_setpoint_mw", target, step if emitting else None)

    def _lo_emission(self, on: bool) -> None:
        step = self.config.ramp.lo_mw_per_step
        self._remember("lo_laser", "emission", None)
        if bool(self.get("lo_laser", "emission")) == on:
            return
        setpoint = float(self.get("lo_laser", "power_setpoint_mw"))
        if step is None or setpoint <= step:
            self._write("lo_laser", "emission", on)
            return
        if on:  # start low, then ramp up to the stored set point
            self._write("lo_laser", "power_setpoint_mw", step)
            self._write("lo_laser", "emission", True)
            self._ramp("lo_laser", "power_setpoint_mw", setpoint, step)
        else:  # ramp down, stop, keep the set point as it was
            self._ramp("lo_laser", "power_setpoint_mw", step, step)
            self._write("lo_laser", "emission", False)
            self._write("lo_laser", "power_setpoint_mw", setpoint)

    def _bias_mode(self, mode: Any) -> None:
        step = self.config.ramp.bias_v_per_step
        role = "bias_controller"
        self._remember(role, "mode", None)
        current = self.get(role, "mode")
        now, new = _mode_name(current), _mode_name(mode)
        if step is None or now == new or new not in (_MANUAL, _OFF):
            # into an auto mode the controller searches its own lock point: not ramped
            self._write(role, "mode", mode)
            return
        hold = float(self.get(role, "hold_voltage_v"))
        target = hold if new == _MANUAL else 0.0  # OFF applies 0 V
        if now != _MANUAL:
            applied = float(self.get(role, "bias_voltage_v"))
            if abs(target - applied) <= step:
                self._write(role, "mode", mode)
                return
            # take over in MANUAL where the bias is now, then ramp
            self._write(role, "hold_voltage_v", applied)
            self._write(role, "mode", type(current)[_MANUAL])
        self._ramp(role, "hold_voltage_v", target, step)
        if new == _OFF:
            self._write(role, "mode", mode)
            self._write(role, "hold_voltage_v", hold)  # OFF ignores it: keep the stored one

    # -- restore ------------------------------------------------------------------------------

    def restore(self) -> None:
        """Put every setting changed through :meth:`set` back, last changed first, ramped as
        in :meth:`set`; Ctrl-C waits until it is done. Raises :class:`RestoreError` naming the
        settings that could not be restored (after trying all of them)."""
        failures: list[str] = []
        self._restoring, self._interrupted_in_restore = True, None
        try:
            with defer_sigint(), no_read_abort():
                while self._saved:
                    (role, prop, channel), value = self._saved.popitem()  # last first
                    where = f"{role}.{prop}" + (f"[{channel}]" if channel is not None else "")
                    try:
                        self._say(f"restore {where} = {value!r}")
                        self.set(role, prop, value, channel=channel)
                    except (InstrumentError, OSError) as exc:
                        log.error("could not restore %s to %r: %s", where, value, exc)
                        failures.append(f"{where} (to {value!r}): {exc}")
        finally:
            self._restoring = False
        if failures:
            raise RestoreError("could not restore " + "; ".join(failures))
        if self._interrupted_in_restore is not None:
            raise self._interrupted_in_restore

    def snapshot_json(self) -> str:
        """Every open instrument's snapshot as the JSON text of ``/meta/snapshot``."""
        return lab_snapshot_json(self.config, self._instruments)
