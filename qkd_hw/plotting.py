"""Matplotlib for the project's PNGs: the non-interactive Agg backend, chosen once, and pyplot
imported only when a plot is made (it costs ~0.3 s of start-up otherwise)."""

from __future__ import annotations

from types import ModuleType

__all__ = ["pyplot"]


def pyplot() -> ModuleType:
    """``matplotlib.pyplot`` on the Agg backend (no display needed: CI, lab hosts, ssh)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
