"""The code base stays ruff clean and the dependency direction of the design card holds."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO

PACKAGES = ("qkd_hw", "dsp", "drivers", "calibration")
# what each package may import of the others (design card: calibration -> drivers, dsp, core)
ALLOWED = {
    "dsp": set(),
    "qkd_hw": {"dsp", "drivers"},
    "drivers": {"qkd_hw"},
    "calibration": {"qkd_hw", "dsp", "drivers"},
}


def test_ruff_clean():
    ruff = shutil.which("ruff")
    cmd = [ruff] if ruff else [sys.executable, "-m", "ruff"]
    res = subprocess.run([*cmd, "check", *PACKAGES, "tests", "benchmarks"], cwd=REPO,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("package", PACKAGES)
def test_dependency_direction(package):
    bad = []
    for path in (REPO / package).rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in PACKAGES and top != package and top not in ALLOWED[package]:
                    bad.append(f"{path.relative_to(REPO)}:{node.lineno} imports {name}")
    assert not bad, "\n".join(bad)
