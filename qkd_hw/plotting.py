"""Matplotlib for the project's PNGs: the non-interactive Agg backend, chosen once, pyplot
imported only when a plot is made (it costs ~0.3 s of start-up otherwise), and one atomic
PNG writer (CLI subcommands, the bench history, the HIL report)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

from qkd_hw.atomic import atomic_write
from qkd_hw.errors import QkdHwError

__all__ = ["pyplot", "save_png"]


def pyplot() -> ModuleType:
    """``matplotlib.pyplot`` on the Agg backend (no display needed: CI, lab hosts, ssh)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: Path, *, dpi: int = 110) -> Path:
    """Write the matplotlib figure ``fig`` to ``path`` as PNG, atomically; close it in any case.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure; it is laid out (``tight_layout``) and closed.
    path : Path
        Target file. Through :func:`qkd_hw.atomic.atomic_write`: written under a temporary
        name beside it and renamed when complete; a device node, FIFO or socket there is
        refused, never replaced.
    dpi : int
        Resolution.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    QkdHwError
        Any OS error (including a refused target), naming the path.
    """
    import matplotlib.pyplot as plt

    try:
        fig.tight_layout()
        with atomic_write(path) as tmp:
            # format given: the temporary name does not end in .png
            fig.savefig(tmp, format="png", dpi=dpi)
    except OSError as exc:
        raise QkdHwError(f"cannot write plot {path}: {exc.strerror or exc}") from exc
    finally:
        plt.close(fig)
    return path
