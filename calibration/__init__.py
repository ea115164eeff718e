"""Calibration procedures of the link (``qkd-hw calibrate NAME``), one module each.

Every procedure runs through a :class:`~qkd_hw.lab.session.LabSession` (settings restored
afterwards), writes an HDF5 record (:mod:`calibration.common`) and gives a verdict.
:data:`PROCEDURES` maps each name to its options class, measurement and plot.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

__all__ = ["PROCEDURES", "Procedure"]


class Procedure(NamedTuple):
    options: type
    measure: Callable[[Any, Any, Any], None]
    plot: Callable[[Any], Any]
    help: str


def _procedures() -> Mapping[str, Procedure]:
    from calibration import bias, linearity, link, modulation, noise

    return {
        "noise": Procedure(noise.NoiseOptions, noise.measure_noise, noise.plot,
                           "electronic (LO off) and shot noise (signal blocked): v_el, N0, "
                           "clearance"),
        "linearity": Procedure(linearity.LinearityOptions, linearity.measure_linearity,
                               linearity.plot, "LO power sweep: slope, offset, r^2, "
                               "saturation"),
        "bias": Procedure(bias.BiasOptions, bias.measure_bias, bias.plot,
                          "modulator nulls, lock, extinction"),
        "modulation": Procedure(modulation.ModulationOptions, modulation.measure_modulation,
                                modulation.plot, "set and verify V_A from power-meter "
                                "readings"),
        "link": Procedure(link.LinkOptions, link.measure_link, link.plot,
                          "noise + V_A calibration, acquisition, receiver, key rate, "
                          "verdict"),
    }


PROCEDURES: Mapping[str, Procedure] = _procedures()
