"""qkd_hw.atomic: temporary name, exact mode from creation, rename on success only."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from qkd_hw.atomic import AtomicFile, atomic_write


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o277])
def test_mode_is_exact_from_creation_whatever_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        af = AtomicFile(tmp_path / "k.bin", mode=0o600)
        assert stat.S_IMODE(af.tmp_path.stat().st_mode) == 0o600  # before anything is written
        af.tmp_path.write_bytes(b"x")
        af.commit()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k.bin").stat().st_mode) == 0o600


def test_default_mode_follows_umask(tmp_path):
    old = os.umask(0o027)
    try:
        with atomic_write(tmp_path / "a.txt") as tmp:
            tmp.write_text("hello")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640


def test_temp_name_beside_target_and_renamed(tmp_path):
    target = tmp_path / "out.h5"
    with atomic_write(target) as tmp:
        assert tmp.parent == tmp_path
        assert tmp.name == f"out.h5.tmp-{os.getpid()}"
        assert not target.exists()
        tmp.write_bytes(b"data")
    assert target.read_bytes() == b"data"
    assert os.listdir(tmp_path) == ["out.h5"]


def test_stale_temp_name_is_left_alone(tmp_path):
    stale = tmp_path / f"out.h5.tmp-{os.getpid()}"
    stale.write_bytes(b"someone else's")
    with atomic_write(tmp_path / "out.h5") as tmp:
        assert tmp != stale
        tmp.write_bytes(b"mine")
    assert stale.read_bytes() == b"someone else's"
    assert (tmp_path / "out.h5").read_bytes() == b"mine"


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_exception_removes_temp_and_keeps_target(tmp_path, exc):
    target = tmp_path / "out.h5"
    target.write_bytes(b"old")
    with pytest.raises(exc), atomic_write(target) as tmp:
        tmp.write_bytes(b"half")
        raise exc()
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.h5"]


def test_no_overwrite(tmp_path):
    target = tmp_path / "out.h5"
    target.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        AtomicFile(target, overwrite=False)
    af = AtomicFile(tmp_path / "new", overwrite=False)
    (tmp_path / "new").write_bytes(b"raced")
    with pytest.raises(FileExistsError):
        af.commit()
    assert (tmp_path / "new").read_bytes() == b"raced"
    assert sorted(os.listdir(tmp_path)) == ["new", "out.h5"]
    with pytest.raises(IsADirectoryError):
        AtomicFile(tmp_path)
    with pytest.raises(RuntimeError, match="already"):
        af.commit()


def test_long_target_name_gets_a_short_unique_temp_name(tmp_path):
    """A valid 253-byte name: '<name>.tmp-<pid>' would exceed NAME_MAX, so it is shortened."""
    name_max = os.pathconf(tmp_path, "PC_NAME_MAX")
    a = tmp_path / ("k" * (name_max - 5) + "a.h5")
    b = tmp_path / ("k" * (name_max - 5) + "b.h5")
    with atomic_write(a) as tmp_a, atomic_write(b) as tmp_b:
        for tmp in (tmp_a, tmp_b):
            assert tmp.parent == tmp_path and len(os.fsencode(tmp.name)) <= name_max
            assert f".tmp-{os.getpid()}" in tmp.name
        assert tmp_a.name != tmp_b.name and not tmp_b.name.endswith("-1")  # distinct bases
        tmp_a.write_bytes(b"a")
        tmp_b.write_bytes(b"b")
    assert a.read_bytes() == b"a" and b.read_bytes() == b"b"
    assert sorted(os.listdir(tmp_path)) == sorted([a.name, b.name])


def test_long_multibyte_name_is_cut_at_a_character(tmp_path):
    name_max = os.pathconf(tmp_path, "PC_NAME_MAX")
    target = tmp_path / ("é" * ((name_max - 3) // 2) + ".h5")  # 2 bytes per character
    with atomic_write(target) as tmp:
        assert len(os.fsencode(tmp.name)) <= name_max
        tmp.write_bytes(b"x")
    assert os.listdir(tmp_path) == [target.name]


def test_refuses_to_replace_a_device_node_or_fifo(tmp_path):
    # as root, a rename over /dev/null replaced the device for the whole machine by a file
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(FileExistsError, match="not a regular file"), atomic_write(fifo) as tmp:
        tmp.write_bytes(b"x")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]
    with pytest.raises(FileExistsError, match="not a regular file"):
        AtomicFile(Path(os.devnull))
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
