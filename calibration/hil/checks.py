"""One health quantity against its ``[hil]`` threshold and against the previous nights."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from calibration.hil.history import previous_values
from qkd_hw.labconfig import Threshold

__all__ = ["Check", "drift_problem", "evaluate"]


@dataclasses.dataclass
class Check:
    """A measured quantity and what is wrong with it (nothing: ``problems == []``)."""

    key: str  # "group.quantity": group is an instrument role or noise/linearity/link
    value: float
    unit: str
    threshold: Threshold | None
    problems: list[str]
    instrument: str = ""  # the instrument's name in the lab config, when the group is a role

    @property
    def message(self) -> str:
        """One line naming instrument (group), quantity, value and allowed range."""
        group, quantity = self.key.split(".", 1)
        allowed = "no threshold" if self.threshold is None else f"allowed {self.threshold}"
        who = f"{group} ({self.instrument})" if self.instrument else group
        return (f"{who}: {quantity} = {self.value:.6g} {self.unit} ({allowed}): "
                f"{'; '.join(self.problems)}")

    def record(self) -> dict[str, Any]:
        """The history entry (JSON-able; a non-finite value is stored as null)."""
        th = None if self.threshold is None else dataclasses.asdict(self.threshold)
        return {"value": self.value if math.isfinite(self.value) else None, "unit": self.unit,
                "threshold": th, "problems": list(self.problems)}


def drift_problem(value: float, previous: list[tuple[str, float]],
                  tolerance: float | None) -> str | None:
    """A drift alarm when ``value`` moved by more than ``tolerance`` from any of the
    ``previous`` nights' values (None: no alarm, no tolerance or no previous night)."""
    if tolerance is None or not previous or not math.isfinite(value):
        return None
    utc, ref = max(previous, key=lambda p: abs(value - p[1]))
    if abs(value - ref) > tolerance:
        return (f"drift: moved by {value - ref:+.4g} since {utc} ({ref:.6g}), more than the "
                f"tolerance {tolerance:g}")
    return None


def evaluate(key: str, value: float, unit: str, thresholds: Any,
             history: list[dict[str, Any]], nights: int, instrument: str = "") -> Check:
    """Check ``value`` of ``key`` against ``thresholds[key]`` and the last ``nights`` runs."""
    th = thresholds.get(key)
    problems = []
    if th is None:
        problems.append(f"no threshold: add {key.split('.', 1)[1]} = {{ min = .., max = .., "
                        f"baseline = .., tolerance = .. }} to [hil.{key.split('.', 1)[0]}] of "
                        f"the lab config")
    else:
        p = th.problem(float(value))
        if p:
            problems.append(p)
        d = drift_problem(float(value), previous_values(history, key, nights), th.tolerance)
        if d:
            problems.append(d)
    return Check(key, float(value), unit, th, problems, instrument)
