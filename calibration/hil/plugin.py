"""pytest plugin of the HIL suite: the same tests against the virtual lab (CI) or a real one.

Options: ``--lab CONFIG`` (default: ``$QKD_HW_LAB_CONFIG``, else the shipped virtual lab; a
config with a ``[virtual]`` table is started as a virtual lab by the session fixture),
``--read-only`` (only the tests without the ``changes_state`` marker: for a lab in use),
``--hil-history FILE`` (append this run to the history and compare with its previous nights).

Fixtures: ``hil`` (the run: client config, thresholds, checks, sessions), ``lab`` (the client
:class:`~qkd_hw.labconfig.LabConfig`). Parametrisation: a test taking ``instrument_name`` runs
once per configured instrument, ``laser_role`` once per laser role.

Safety: a test that changes settings declares ``@pytest.mark.changes_state`` and changes them
through a :class:`~qkd_hw.lab.session.LabSession` (restored on success, failure and Ctrl-C).
At the end of a run that may have changed state -- also after a failure or Ctrl-C, from the
session fixture's teardown -- every instrument is put in its safe state (lasers' emission
off, detector off, AWG stopped) and the result is recorded per instrument.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from calibration.hil.checks import Check, evaluate
from calibration.hil.history import append_run, read_history
from qkd_hw.errors import QkdHwError
from qkd_hw.labconfig import LabConfig, Roles, load_lab_config

__all__ = ["HilRun", "make_safe"]

_RUN_KEY = pytest.StashKey["HilRun"]()
_LASER_ROLES = ("lo_laser", "signal_laser")


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("hil", "qkd-hw hardware-in-the-loop suite")
    g.addoption("--lab", metavar="CONFIG", default=None,
                help="lab config TOML (default: $QKD_HW_LAB_CONFIG, else the shipped virtual "
                     "lab); a config with [virtual] is started as a virtual lab")
    g.addoption("--read-only", action="store_true", default=False,
                help="run only the tests that change nothing (a lab in use)")
    g.addoption("--hil-history", metavar="FILE", default=None,
                help="HIL history (JSON lines): compare with its previous nights, append "
                     "this run")


def _lab_path(config: pytest.Config) -> Path:
    from qkd_hw.lab import example_path

    given = config.getoption("--lab") or os.environ.get("QKD_HW_LAB_CONFIG")
    return Path(given) if given else example_path(virtual=True)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "hil: hardware-in-the-loop (virtual lab unless --lab)")
    config.addinivalue_line("markers", "changes_state: changes instrument settings (restored); "
                                       "not run with --read-only")
    if config.getoption("--lab"):  # a bad --lab: one usage error line before collection
        _load(config)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    names = {"instrument_name", "laser_role"} & set(metafunc.fixturenames)
    if not names:
        return
    cfg = _load(metafunc.config)
    if "instrument_name" in names:
        metafunc.parametrize("instrument_name", list(cfg.instruments))
    if "laser_role" in names:
        metafunc.parametrize("laser_role", [r for r in _LASER_ROLES
                                            if r in cfg.roles.instruments])


def _load(config: pytest.Config) -> LabConfig:
    try:
        return load_lab_config(_lab_path(config))
    except QkdHwError as exc:  # one line, not a traceback
        raise pytest.UsageError(str(exc)) from None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--read-only"):
        return
    skip = pytest.mark.skip(reason="--read-only: this test changes instrument settings")
    for item in items:
        if item.get_closest_marker("changes_state"):
            item.add_marker(skip)


class HilRun:
    """One run of the suite: the lab, its thresholds, the history and what was measured."""

    def __init__(self, source: LabConfig, client: LabConfig, vlab: Any,
                 history_path: Path | None, read_only: bool) -> None:
        self.source = source
        self.lab = client
        self.vlab = vlab
        self.read_only = read_only
        self.history_path = history_path
        self.history = read_history(history_path) if history_path else []
        hil = source.hil
        self.thresholds = dict(hil.thresholds) if hil else {}
        self.nights = hil.drift_nights if hil else 7
        self.checks: dict[str, Check] = {}
        self.tests: dict[str, str] = {}
        self.safe_state: dict[str, str] = {}
        self.utc = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def instrument_of(self, group: str) -> str:
        """The instrument name of ``group`` when it is a role ("" otherwise)."""
        return self.lab.roles.instruments.get(group, "")

    def check(self, group: str, quantity: str, value: float, unit: str) -> Check:
        """Evaluate and record one quantity (see :func:`calibration.hil.checks.evaluate`)."""
        c = evaluate(f"{group}.{quantity}", value, unit, self.thresholds, self.history,
                     self.nights, self.instrument_of(group))
        self.checks[c.key] = c
        return c

    @contextlib.contextmanager
    def checks_of(self) -> Iterator[Callable[[str, str, float, str], Check]]:
        """Yield :meth:`check`; at the end fail the test with every failed check's line."""
        done: list[Check] = []

        def check(group: str, quantity: str, value: float, unit: str) -> Check:
            c = self.check(group, quantity, value, unit)
            done.append(c)
            return c

        yield check
        bad = [c.message for c in done if c.problems]
        if bad:
            pytest.fail("\n".join(bad), pytrace=False)

    def config_for(self, *roles: str) -> LabConfig:
        """The client config with only ``roles`` in ``[roles]`` (all of them without
        arguments): a session of it opens those instruments only, so that one instrument that
        does not answer fails the checks that need it, not every check."""
        if not roles:
            return self.lab
        names = {r: self.lab.role(r).name for r in roles}
        return dataclasses.replace(self.lab, roles=Roles(names, self.lab.roles.ports))

    def session(self, *roles: str) -> Any:
        """A :class:`~qkd_hw.lab.session.LabSession` of ``roles`` (all without arguments);
        use it as a context manager: it restores what the test changed."""
        from qkd_hw.lab.session import LabSession

        if self.read_only:
            raise RuntimeError("--read-only: a test that opens a session must be marked "
                               "changes_state")
        return LabSession(self.config_for(*roles))

    def record(self) -> dict[str, Any]:
        """This run as a history entry."""
        return {"utc": self.utc, "lab": self.source.name, "config": str(self.source.path),
                "read_only": self.read_only,
                "quantities": {k: c.record() for k, c in sorted(self.checks.items())},
                "tests": dict(self.tests), "safe_state": dict(self.safe_state)}


def make_safe(config: LabConfig) -> dict[str, str]:
    """Put every instrument of ``config`` in its safe state; ``{name: "ok" | problem}``.

    Lasers: emission off; detector: disabled; AWG: stopped. Instruments without a safe
    setting are only opened (they must answer). One instrument that fails does not keep the
    others from being made safe.
    """
    from drivers.base import create_instrument

    out = {}
    for name, cfg in config.instruments.items():
        try:
            with create_instrument(cfg) as inst:
                out[name] = _safe(inst, cfg.driver)
        except Exception as exc:  # every instrument gets its turn
            out[name] = f"not made safe: {exc}"
    return out


def _safe(inst: Any, driver: str) -> str:
    if driver == "nkt_koheras_basik":
        inst.emission = False
        return "ok" if not inst.emission else "emission still on"
    if driver == "homodyne_detector":
        inst.enabled = False
        return "ok" if not inst.enabled else "detector still enabled"
    if driver == "keysight_m8195a":
        inst.stop()
    return "ok"


@pytest.fixture(scope="session")
def hil(request: pytest.FixtureRequest) -> Iterator[HilRun]:
    """The HIL run: the lab (started if virtual), thresholds, history; safe state at the end."""
    from calibration.common import lab as open_lab

    config = request.config
    source = _load(config)
    history = config.getoption("--hil-history")
    read_only = bool(config.getoption("--read-only"))
    with open_lab(source) as (client, vlab):
        run = HilRun(source, client, vlab, Path(history) if history else None, read_only)
        config.stash[_RUN_KEY] = run
        try:
            yield run
        finally:
            if not read_only:
                run.safe_state = make_safe(client)


@pytest.fixture(scope="session")
def lab(hil: HilRun) -> LabConfig:
    """The client lab config (the virtual lab's emulators, or the real lab's config)."""
    return hil.lab


_OUTCOMES_KEY = pytest.StashKey[dict[str, str]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    outcomes = item.config.stash.setdefault(_OUTCOMES_KEY, {})
    if report.when == "call":
        outcomes[report.nodeid] = report.outcome
    elif report.outcome != "passed":  # setup/teardown error or a skip
        outcomes[report.nodeid] = "skipped" if report.skipped else f"{report.when} error"
    return report


@pytest.hookimpl(trylast=True)  # after the runner's, which tears the fixtures down on Ctrl-C
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    run = session.config.stash.get(_RUN_KEY, None)
    if run is None:
        return
    run.tests.update(session.config.stash.get(_OUTCOMES_KEY, {}))
    unsafe = {n: s for n, s in run.safe_state.items() if s != "ok"}
    if unsafe:
        session.config.get_terminal_writer().line(
            "HIL: instruments not in their safe state: "
            + "; ".join(f"{n}: {s}" for n, s in unsafe.items()), red=True)
    if run.history_path is not None:
        try:
            append_run(run.history_path, run.record())
        except QkdHwError as exc:
            session.config.get_terminal_writer().line(f"HIL: {exc}", red=True)
