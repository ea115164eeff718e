"""Every benchmark script runs as ``python benchmarks/NAME.py`` (the form the docs give), from
any working directory: the script's folder, not the repository, is then on ``sys.path``."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIRST_PARTY = {"benchmarks", "calibration", "drivers", "dsp", "qkd_hw"}


def _scripts() -> list[Path]:
    return [p for p in sorted((ROOT / "benchmarks").glob("*.py"))
            if "__main__" in p.read_text() and p.name != "__init__.py"]


def _top(node: ast.stmt) -> str | None:
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return node.module.split(".")[0]
    if isinstance(node, ast.Import):
        return node.names[0].name.split(".")[0]
    return None


def _guard_before_first_party(tree: ast.Module) -> bool | None:
    """True/False: the ``__package__`` guard comes before the first first-party import; None:
    the script imports nothing of the project at module level."""
    guarded = False
    for node in tree.body:
        if isinstance(node, ast.If) and "__package__" in ast.unparse(node.test):
            guarded = True
        elif _top(node) in FIRST_PARTY:
            return guarded
    return None


def test_each_script_puts_the_repository_on_the_path_before_its_imports():
    scripts = _scripts()
    assert len(scripts) >= 10, scripts
    missing = [p.name for p in scripts
               if _guard_before_first_party(ast.parse(p.read_text())) is False]
    assert not missing, f"imports the project before the sys.path guard: {missing}"


def test_the_guard_check_sees_a_missing_guard():
    bad = ast.parse("import sys\nfrom benchmarks.common import x\n")
    good = ast.parse('import sys\nif __package__ in (None, ""):\n    pass\n'
                     "from benchmarks.common import x\n")
    assert _guard_before_first_party(bad) is False
    assert _guard_before_first_party(good) is True
    assert _guard_before_first_party(ast.parse("import numpy\n")) is None


def test_a_script_runs_by_its_path_from_another_directory(tmp_path):
    script = ROOT / "benchmarks" / "reconciliation_efficiency.py"
    run = subprocess.run([sys.executable, str(script), "--help"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "--frames" in run.stdout
