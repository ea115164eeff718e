"""The modules `qkd-hw process` loads: none of the heavy ones it does not use.

Each of these is tens of MB of resident memory for every run of the receiver (scipy.stats
with scipy.optimize ~37 MB, scipy.signal/ndimage/interpolate of the simulator ~40 MB); the
receiver's peak RSS was ~300 MB, ~170 MB of it imports. A fresh interpreter is needed:
the test session itself has imported all of them.
"""

from __future__ import annotations

import json
import subprocess
import sys

#: modules the receiver path must not import (only other subcommands or options use them)
HEAVY = ("scipy.stats", "scipy.optimize", "scipy.signal", "scipy.ndimage", "scipy.interpolate",
         "matplotlib", "pyvisa", "serial", "pandas")

_CHILD = """
import json, sys
from qkd_hw.cli.main import build_parser
import qkd_hw.receiver.process  # noqa: F401
build_parser()   # every subcommand's module, as `qkd-hw process` imports them
print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {'scipy', 'matplotlib',
                                                                     'pyvisa', 'serial',
                                                                     'pandas'})))
"""


def test_process_path_imports_no_heavy_module():
    out = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True,
                         check=True, timeout=120)
    loaded = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert "scipy.special" in loaded   # the probe sees scipy's modules at all
    heavy = sorted(m for m in loaded if m in HEAVY or m.split(".")[0] in HEAVY)
    assert heavy == [], f"the process path imports {heavy}"
