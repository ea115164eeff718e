"""512-bit vectors by default on AVX-512 hosts (issue 18): the rules of
``qkd_hw.vector_width`` and that the ``qkd-hw`` entry point, the benchmark scripts and the
bench child really hand them to numba's code generator (fresh interpreters)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qkd_hw import vector_width as vw

ROOT = Path(__file__).resolve().parents[2]
AVX512 = ("emeraldrapids", "+64bit,+avx2,+avx512f,+fma,-avx512fp16")
AVX2 = ("znver3", "+64bit,+avx2,-avx512f,+fma")

#: a fresh interpreter: run ``qkd-hw info`` on a missing file (error after the parser, i.e.
#: after numba's import), then print what numba's CPU code generator was built with
_PROBE = """
import json, os, sys
from qkd_hw.cli.main import main
rc = main(["info", "/nonexistent/x.h5"])
from numba.core.registry import cpu_target
cg = cpu_target.target_context.codegen()
print(json.dumps({"rc": rc, "features": cg._tm_features, "cpu": cg._get_host_cpu_name(),
                  "env": {k: os.environ.get(k) for k in ("NUMBA_CPU_NAME",
                                                         "NUMBA_CPU_FEATURES")}}))
"""


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in (*vw.NUMBA_VARS, vw.ENV, "PYTHONPATH")}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def _probe(code: str, **extra: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], env=_clean_env(**extra), cwd=ROOT,
                         capture_output=True, text=True, check=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _host_has_avx512() -> bool:
    host = vw.host_cpu()
    return host is not None and "+avx512f" in host[1].split(",")


def test_rules_on_an_avx512_host() -> None:
    env = vw.numba_cpu_env({}, AVX512)
    assert env == {"NUMBA_CPU_NAME": "emeraldrapids",
                   "NUMBA_CPU_FEATURES": AVX512[1] + ",-prefer-256-bit"}
    assert vw.vector_width(env) == 512
    assert vw.numba_cpu_env({vw.ENV: "512"}, AVX512) == env
    assert vw.numba_cpu_env({vw.ENV: " Auto "}, AVX512) == env


def test_rules_leave_numba_alone() -> None:
    assert vw.numba_cpu_env({}, AVX2) == {}                     # no avx512f
    assert vw.numba_cpu_env({vw.ENV: "512"}, AVX2) == {}
    assert vw.numba_cpu_env({vw.ENV: "256"}, AVX512) == {}      # the opt-out
    assert vw.numba_cpu_env({"NUMBA_CPU_NAME": "generic"}, AVX512) == {}
    assert vw.numba_cpu_env({"NUMBA_CPU_FEATURES": "+avx2"}, AVX512) == {}
    assert vw.vector_width({}) is None
    assert vw.vector_width({"NUMBA_CPU_FEATURES": AVX2[1] + ",-prefer-256-bit"}) is None
    with pytest.raises(ValueError, match="QKD_HW_VECTOR_WIDTH"):
        vw.numba_cpu_env({vw.ENV: "1024"}, AVX512)


def test_apply_after_numba_import_changes_nothing() -> None:
    import numba  # noqa: F401  (the test process has it already; made sure here)

    env: dict[str, str] = {}
    assert vw.apply(env) == {} and env == {}


def test_caller_environ_drops_only_what_apply_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vw, "_applied", {"NUMBA_CPU_FEATURES": "+a,-prefer-256-bit"})
    env = {"NUMBA_CPU_FEATURES": "+a,-prefer-256-bit", "X": "1"}
    assert vw.caller_environ(env) == {"X": "1"}
    env["NUMBA_CPU_FEATURES"] = "+b"  # changed since: the caller's own
    assert vw.caller_environ(env) == env


@pytest.mark.skipif(not _host_has_avx512(), reason="host without avx512f")
def test_entry_point_sets_512_bit_before_numba() -> None:
    host_name, host_features = vw.host_cpu()
    r = _probe(_PROBE)
    assert r["rc"] == 2  # the missing file, after the parser (numba imported)
    assert r["cpu"] == host_name
    assert r["features"] == host_features + ",-prefer-256-bit"
    assert r["env"]["NUMBA_CPU_FEATURES"] == r["features"]  # inherited by child processes


def test_entry_point_respects_opt_out_and_user_settings() -> None:
    r = _probe(_PROBE, QKD_HW_VECTOR_WIDTH="256")
    assert "-prefer-256-bit" not in r["features"].split(",")
    assert r["env"] == {"NUMBA_CPU_NAME": None, "NUMBA_CPU_FEATURES": None}
    r = _probe(_PROBE, NUMBA_CPU_NAME="generic")
    assert r["cpu"] == "generic" and r["features"] == ""
    assert r["env"] == {"NUMBA_CPU_NAME": "generic", "NUMBA_CPU_FEATURES": None}


def test_entry_point_rejects_a_bad_width() -> None:
    out = subprocess.run([sys.executable, "-m", "qkd_hw.cli.main", "info", "x.h5"],
                         env=_clean_env(QKD_HW_VECTOR_WIDTH="wide"), cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert "QKD_HW_VECTOR_WIDTH must be 256, 512 or auto" in out.stderr


@pytest.mark.skipif(not _host_has_avx512(), reason="host without avx512f")
def test_benchmark_scripts_apply_it_and_imports_do_not() -> None:
    out = subprocess.run([sys.executable, "-m", "benchmarks.ab_scale", "--help"],
                         env=_clean_env(), cwd=ROOT, capture_output=True, text=True,
                         check=True, timeout=300)
    assert "--memcopy" in out.stdout
    # run as a program: applied (by benchmarks/__init__, before numba)
    probe = ("import os, sys, json\nsys.argv[0] = 'benchmarks/ab_scale.py'\n"
             "import __main__; __main__.__file__ = os.path.abspath(sys.argv[0])\n"
             "import benchmarks\nprint(json.dumps(os.environ.get('NUMBA_CPU_FEATURES')))")
    assert _probe(probe).endswith(",-prefer-256-bit")
    # imported (as the tests do): nothing
    assert _probe("import json, os, benchmarks.common\n"
                  "print(json.dumps(os.environ.get('NUMBA_CPU_FEATURES')))") is None


_CACHED = """
import json, sys
from qkd_hw.vector_width import apply
applied = bool(apply())
import numpy as np
import numba

@numba.njit(cache=True)
def sumsq(x):
    s = np.float32(0)
    for i in range(x.size):
        s += x[i] * x[i]
    return s

sumsq(np.ones(1000, np.float32))
print(json.dumps({"applied": applied, "hits": sum(sumsq.stats.cache_hits.values()),
                  "misses": sum(sumsq.stats.cache_misses.values())}))
"""


@pytest.mark.skipif(not _host_has_avx512(), reason="host without avx512f")
def test_numba_cache_keeps_both_widths_apart(tmp_path: Path) -> None:
    """One on-disk cache (as a fresh clone's, then a reused one): each width compiles once
    and is loaded after, whatever ran in between (no stale entry of the other width)."""
    script = tmp_path / "cached.py"
    script.write_text(_CACHED)
    runs = []
    for width in ("256", "512", "256", "512"):
        out = subprocess.run([sys.executable, str(script)], env=_clean_env(
            QKD_HW_VECTOR_WIDTH=width, NUMBA_CACHE_DIR=str(tmp_path / "cache")), cwd=tmp_path,
            capture_output=True, text=True, check=True, timeout=300)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert [r["applied"] for r in runs] == [False, True, False, True]
    assert [(r["hits"], r["misses"]) for r in runs] == [(0, 1), (0, 1), (1, 0), (1, 0)]


def test_bench_history_records_the_width(monkeypatch: pytest.MonkeyPatch) -> None:
    from qkd_hw.bench.history import machine

    monkeypatch.setenv("NUMBA_CPU_FEATURES", AVX512[1] + ",-prefer-256-bit")
    assert machine()["vector_width"] == 512
    monkeypatch.setenv("NUMBA_CPU_FEATURES", AVX512[1])
    assert machine()["vector_width"] is None
