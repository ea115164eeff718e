"""The code base stays ruff clean and its package graph is acyclic (ARCHITECTURE.md, "Units").

The import graph between *units* is built from the AST of every module (absolute and relative
imports, also those inside functions or ``if TYPE_CHECKING``, and ``importlib.import_module``
of a literal or f-string module name); every edge must be in
:data:`ALLOWED`, and :data:`ALLOWED` itself must have a topological order, so the code cannot
grow an import cycle between units. :func:`layering_violations` works on any source root (the
synthetic-tree test below feeds it a cycle). No module of the packages uses another module's
private names (:func:`private_imports`; tests may).
"""

from __future__ import annotations

import ast
import itertools
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from tests.conftest import REPO

PACKAGES = ("qkd_hw", "dsp", "drivers", "calibration", "benchmarks")
#: units, most specific first where they nest: qkd_hw is the core, i.e. every module of qkd_hw
#: outside the subpackages qkd_hw.lab (virtual lab) and qkd_hw.cli (console script)
UNITS = ("dsp", "qkd_hw", "drivers", "qkd_hw.lab", "calibration", "qkd_hw.cli", "benchmarks")
#: which units each unit may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "dsp": set(),
    "qkd_hw": {"dsp"},
    "drivers": {"qkd_hw"},
    "qkd_hw.lab": {"drivers", "qkd_hw", "dsp"},
    "calibration": {"qkd_hw.lab", "drivers", "qkd_hw", "dsp"},
    "qkd_hw.cli": {"calibration", "qkd_hw.lab", "drivers", "qkd_hw", "dsp"},
    # measurement scripts: may use everything but the CLI; nothing imports them
    "benchmarks": {"qkd_hw.lab", "drivers", "qkd_hw", "dsp"},
}


def unit_of(module: str, units: Iterable[str]) -> str | None:
    """The unit a dotted module name belongs to: its longest unit prefix (None: third party)."""
    best = None
    for unit in units:
        if (module == unit or module.startswith(unit + ".")) and (
                best is None or len(unit) > len(best)):
            best = unit
    return best


def _module_name(path: Path, root: Path) -> tuple[str, bool]:
    """Dotted name of a source file and whether it is a package ``__init__``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def imported_modules(path: Path, root: Path) -> Iterator[tuple[int, str]]:
    """``(line, dotted target)`` of every import in a file; relative imports resolved, and
    ``from pkg import name`` yields ``pkg.name`` (``name`` may be a subpackage: a unit)."""
    module, is_package = _module_name(path, root)
    package = module.split(".") if is_package else module.split(".")[:-1]
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if node.level - 1 > len(package):
                    raise ValueError(f"{path}:{node.lineno}: relative import beyond the root")
                base = package[:len(package) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:
                yield node.lineno, target if alias.name == "*" else f"{target}.{alias.name}"
        elif isinstance(node, ast.Call) and _is_dynamic_import(node.func) and node.args:
            target = _literal_prefix(node.args[0])
            if target:
                yield node.lineno, target


def _is_dynamic_import(func: ast.expr) -> bool:
    """``importlib.import_module`` / ``import_module`` / ``__import__``."""
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    return name in ("import_module", "__import__")


def _literal_prefix(arg: ast.expr) -> str:
    """The module named by a constant or the constant head of an f-string
    (``f"drivers.{name}"`` -> ``drivers``); "" when not known statically."""
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
        head = str(arg.values[0].value)
        return head.rsplit(".", 1)[0] if "." in head else ""
    return ""


def unit_edges(root: Path, units: Iterable[str]) -> dict[tuple[str, str], list[str]]:
    """Imports between different units under ``root``: ``(from, to)`` -> where."""
    units = tuple(units)
    tops = {u.split(".")[0] for u in units}
    edges: dict[tuple[str, str], list[str]] = {}
    for top in sorted(tops):
        for path in sorted((root / top).rglob("*.py")):
            src = unit_of(_module_name(path, root)[0], units)
            for line, target in imported_modules(path, root):
                dst = unit_of(target, units)
                if src is not None and dst is not None and dst != src:
                    edges.setdefault((src, dst), []).append(
                        f"{path.relative_to(root)}:{line} imports {target}")
    return edges


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """A cycle ``[a, b, ..., a]`` of a directed graph, or None when a topological order exists
    (Kahn's algorithm; the nodes it cannot order contain a cycle, walked back to close it)."""
    nodes = set(graph) | {v for vs in graph.values() for v in vs}
    succ = {n: {v for v in graph.get(n, ()) if v != n} for n in nodes}
    indeg = {n: 0 for n in nodes}
    for vs in succ.values():
        for v in vs:
            indeg[v] += 1
    ready = [n for n in nodes if indeg[n] == 0]
    while ready:
        n = ready.pop()
        for v in succ[n]:
            indeg[v] -= 1
            if indeg[v] == 0:
                ready.append(v)
    left = {n for n in nodes if indeg[n] > 0}
    if not left:
        return None
    # every node left has a predecessor left: walk predecessors until one repeats
    pred = {v: n for n in sorted(left) for v in succ[n] if v in left}
    path, node = [], min(left)
    while node not in path:
        path.append(node)
        node = pred[node]
    cycle = path[path.index(node):]
    return [*reversed(cycle), cycle[-1]]


def layering_violations(root: Path, units: Iterable[str],
                        allowed: Mapping[str, Iterable[str]]) -> list[str]:
    """Every import edge not in ``allowed``, and a cycle of the actual unit graph."""
    edges = unit_edges(root, units)
    bad = [f"{where} ({src} -> {dst} not allowed)"
           for (src, dst), wheres in sorted(edges.items())
           if dst not in set(allowed.get(src, ())) for where in wheres]
    graph: dict[str, set[str]] = {}
    for src, dst in edges:
        graph.setdefault(src, set()).add(dst)
    cycle = find_cycle(graph)
    if cycle:
        bad.append("import cycle between units: " + " -> ".join(cycle))
    return bad


def test_ruff_clean():
    ruff = shutil.which("ruff")
    cmd = [ruff] if ruff else [sys.executable, "-m", "ruff"]
    res = subprocess.run([*cmd, "check", *PACKAGES, "tests"], cwd=REPO,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_allowed_table_is_acyclic_and_complete():
    assert find_cycle(ALLOWED) is None
    assert set(ALLOWED) == set(UNITS)
    assert set().union(*ALLOWED.values()) <= set(UNITS)


def test_package_graph_follows_the_layering():
    bad = layering_violations(REPO, UNITS, ALLOWED)
    assert not bad, "\n".join(bad)


def _write(root: Path, files: Mapping[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_checker_reports_a_cycle_in_a_synthetic_tree(tmp_path):
    # a -> a.lab by a relative import, a.lab -> b inside a function, b -> a absolute
    _write(tmp_path, {
        "a/__init__.py": "",
        "a/core.py": "from .lab import thing\n",
        "a/lab/__init__.py": "thing = 1\n",
        "a/lab/run.py": "def f():\n    import b.m\n    return b.m\n",
        "b/__init__.py": "",
        "b/m.py": "from a import core\n",
        "b/late.py": "import importlib\n\n\ndef g(x):\n"
                     "    return importlib.import_module(f'a.lab.{x}')\n",
    })
    units = ("a", "a.lab", "b")
    edges = unit_edges(tmp_path, units)
    assert set(edges) == {("a", "a.lab"), ("a.lab", "b"), ("b", "a"), ("b", "a.lab")}
    assert edges["b", "a.lab"] == ["b/late.py:5 imports a.lab"]   # by computed name
    bad = layering_violations(tmp_path, units, {"a": set(), "a.lab": {"a"}, "b": {"a.lab", "a"}})
    assert bad[:2] == ["a/core.py:1 imports a.lab.thing (a -> a.lab not allowed)",
                       "a/lab/run.py:2 imports b.m (a.lab -> b not allowed)"]
    assert len(bad) == 3 and bad[2].startswith("import cycle between units: ")
    cycle = bad[2].split(": ")[1].split(" -> ")
    # a closed walk along actual edges (two cycles: a.lab <-> b, a -> a.lab -> b -> a)
    assert cycle[0] == cycle[-1] and len(cycle) >= 3
    assert all(pair in edges for pair in itertools.pairwise(cycle))
    # a table that allows the cycle is refused by the acyclicity check
    assert find_cycle({"a": {"a.lab"}, "a.lab": {"b"}, "b": {"a"}}) is not None
    # the same tree is clean once b imports nothing of a
    (tmp_path / "b/m.py").write_text("import json\n")
    (tmp_path / "b/late.py").unlink()
    assert layering_violations(tmp_path, units, {"a": {"a.lab"}, "a.lab": {"b"}, "b": set()}) == []


def test_find_cycle_returns_a_closed_cycle():
    assert find_cycle({"x": {"y"}, "y": {"z"}, "z": set()}) is None
    assert find_cycle({"x": {"x"}}) is None            # a unit importing itself is no edge
    cycle = find_cycle({"x": {"y"}, "y": {"z"}, "z": {"y"}, "w": {"x"}})
    assert cycle is not None and cycle[0] == cycle[-1] and sorted(cycle[:-1]) == ["y", "z"]


def private_imports(root: Path, tops: Iterable[str]) -> list[str]:
    """Uses of another module's private name (``_x``) under ``root``: ``from m import _x``, or
    ``m._x`` where ``m`` is a name the file imports; only modules of ``tops`` count."""
    tops = tuple(tops)
    bad = []
    for top in tops:
        for path in sorted((root / top).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            modules: set[str] = set()        # local names bound to one of our modules
            for node in ast.walk(tree):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    source = (node.module or "") if isinstance(node, ast.ImportFrom) else ""
                    for alias in node.names:
                        full = f"{source}.{alias.name}" if source else alias.name
                        if full.split(".")[0] not in tops and not _is_relative(node):
                            continue
                        if isinstance(node, ast.ImportFrom) and _private(alias.name):
                            bad.append(f"{path.relative_to(root)}:{node.lineno} imports "
                                       f"{alias.name} from {source or '.'}")
                        modules.add(alias.asname or alias.name.split(".")[0])
            for node in ast.walk(tree):
                if (isinstance(node, ast.Attribute) and _private(node.attr)
                        and isinstance(node.value, ast.Name) and node.value.id in modules):
                    bad.append(f"{path.relative_to(root)}:{node.lineno} uses "
                               f"{node.value.id}.{node.attr}")
    return bad


def _is_relative(node: ast.stmt) -> bool:
    return isinstance(node, ast.ImportFrom) and bool(node.level)


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_module_uses_another_modules_private_names():
    # the stage's public wrapper validates, its private kernel computes: callers (benchmarks
    # included) go through the wrapper; tests may reach kernels directly (naive twins)
    bad = private_imports(REPO, PACKAGES)
    assert not bad, "\n".join(bad)


def test_private_name_check_fails_on_a_synthetic_tree(tmp_path):
    _write(tmp_path, {
        "a/__init__.py": "",
        "a/k.py": "def _kern():\n    return 1\n\n\ndef kern():\n    return _kern()\n",
        "a/use.py": "from a.k import _kern, kern\nfrom a import k\n\n\n"
                    "def f():\n    return _kern() + k._kern() + kern() + k.kern()\n",
        "a/ok.py": "import json\n\n\ndef g():\n    return json._default_decoder\n",
    })
    assert private_imports(tmp_path, ("a",)) == ["a/use.py:1 imports _kern from a.k",
                                                 "a/use.py:6 uses k._kern"]


#: longest function body of dsp/ and qkd_hw/ in code lines (issue 13: "under ~80 lines")
MAX_FUNCTION_CODE_LINES = 80


def function_code_lines(root: Path, tops: Iterable[str]) -> list[tuple[int, str]]:
    """``(code lines, where)`` of every function under ``root/top``: its lines without the
    docstring, blank lines and comment lines, longest first."""
    rows = []
    for top in tops:
        for path in sorted((root / top).rglob("*.py")):
            lines = path.read_text().splitlines()
            for node in ast.walk(ast.parse("\n".join(lines), filename=str(path))):
                if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                skip: set[int] = set()
                first = node.body[0]
                if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                        and isinstance(first.value.value, str)):
                    skip = set(range(first.lineno, first.end_lineno + 1))
                n = sum(1 for i in range(node.lineno, node.end_lineno + 1)
                        if i not in skip and lines[i - 1].strip()
                        and not lines[i - 1].lstrip().startswith("#"))
                rows.append((n, f"{path.relative_to(root)}:{node.lineno} {node.name}"))
    return sorted(rows, reverse=True)


def test_functions_stay_short():
    long = [f"{where}: {n} code lines" for n, where in function_code_lines(REPO, ("dsp", "qkd_hw"))
            if n > MAX_FUNCTION_CODE_LINES]
    assert not long, "split these (or say in the issue why not):\n" + "\n".join(long)


def test_function_length_counts_code_only(tmp_path):
    body = "".join(f"    x{i} = {i}\n" for i in range(3))
    _write(tmp_path, {"a/m.py": 'def f():\n    """Doc\n\n    more."""\n    # why\n\n'
                                + body + "    return x0\n"})
    assert function_code_lines(tmp_path, ("a",)) == [(5, "a/m.py:1 f")]


#: the maps a reader follows: every path they name must exist (benchmarks/README.md is a
#: measurement log and keeps the names of its time)
MAP_DOCS = ("ARCHITECTURE.md", "README.md", "RELIABILITY.md", "dsp/README.md", "drivers/README.md",
            "qkd_hw/lab/README.md", "qkd_hw/postprocessing/README.md",
            "qkd_hw/receiver/README.md")
_DOC_PATH = re.compile(r"(?<![\w./-])((?:dsp|qkd_hw|drivers|calibration|benchmarks|tests)"
                       r"/[\w/.-]*\w)(<?)")
_FILE_SUFFIXES = (".py", ".md", ".toml", ".json", ".png", ".txt", ".h5", ".csv")


def missing_doc_paths(root: Path, docs: Iterable[str]) -> list[str]:
    """Paths named in ``docs`` that do not exist under ``root``: ``pkg/mod.py``, ``pkg/dir/``,
    ``pkg/mod`` and ``pkg/mod.NAME`` (a module's member) forms; ``pkg/test_<name>`` templates
    are skipped."""
    bad = []
    for doc in docs:
        for m in _DOC_PATH.finditer((root / doc).read_text()):
            token, template = m.groups()
            if template:
                continue
            *head, last = token.split("/")
            stem = last if last.endswith(_FILE_SUFFIXES) else last.split(".")[0]
            base = root.joinpath(*head)
            if not any(p.exists() for p in (base / stem, base / f"{stem}.py")):
                bad.append(f"{doc}: {token}")
    return bad


def test_maps_name_existing_paths():
    bad = missing_doc_paths(REPO, MAP_DOCS)
    assert not bad, "\n".join(bad)


def test_doc_path_check_fails_on_a_moved_module(tmp_path):
    _write(tmp_path, {"dsp/pilot.py": "", "MAP.md": "`dsp/pilot.py`, `dsp/pilot.joint_pilot`, "
                      "dsp/ and `tests/dsp/test_<stage>.py`; moved: `dsp/kernels.py`, "
                      "`benchmarks/numpy_reference.REFERENCE_TRACKERS`\n"})
    assert missing_doc_paths(tmp_path, ["MAP.md"]) == [
        "MAP.md: dsp/kernels.py", "MAP.md: benchmarks/numpy_reference.REFERENCE_TRACKERS"]
