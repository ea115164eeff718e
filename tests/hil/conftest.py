"""The hardware-in-the-loop suite: the same tests against the real lab or the virtual one.

Nightly HIL run: ``QKD_HW_LAB_CONFIG=/path/lab.toml pytest tests/hil`` opens the instruments
of that lab config. Without it (CI, a laptop) the virtual lab of the shipped example
(``qkd_hw/lab/examples/virtual_lab.toml``: every emulator on loopback sockets and
pseudo-terminals behind one physics model) is started and its client config used, so the
suite itself never rots. The HIL tests are read-only or restore what they change.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from qkd_hw.lab import example_path, virtual_lab
from qkd_hw.labconfig import LabConfig, load_lab_config


@pytest.fixture(scope="session")
def lab() -> Iterator[LabConfig]:
    real = os.environ.get("QKD_HW_LAB_CONFIG")
    if real:
        yield load_lab_config(real)
    else:
        with virtual_lab(example_path(virtual=True)) as client:
            yield client
