"""Atomic file output: write under a temporary name, rename when complete.

Every file qkd-hw produces (recordings, raw keys, reports) goes through
:class:`AtomicFile` or :func:`atomic_write`, so a crash, an exception or a
Ctrl-C never leaves a half-written file under the final name and never
destroys a file that already sits there.

* The temporary file lives in the target's directory (``os.replace`` is only
  atomic within one file system) and is named ``<target>.tmp-<pid>``
  (``<target>.tmp-<pid>-<n>`` if that name is taken, e.g. by the temporary of
  a live writer in another PID namespace). When that name would exceed the
  directory's ``NAME_MAX`` (``os.pathconf``, 255 if unknown), the target's
  name is cut (at a character) and tagged with a hash of the full name,
  ``<cut name>~<12 hex digits>.tmp-<pid>``, so long names that share a
  prefix still get distinct temporary names.
* It is created with ``O_CREAT | O_EXCL`` and, when ``mode`` is given, with
  that mode from the first instant (then ``fchmod`` to exactly ``mode``, which
  makes the result independent of the umask; the file is never more open than
  ``mode`` at any time). Key material uses ``mode=0o600``.
* On commit the data are fsync'ed, the file is renamed over the target and the
  directory is fsync'ed, so after a power cut the target is either the old or
  the new complete file.
* A target that exists but is not a regular file or a directory (a device node such as
  ``/dev/null``, a FIFO, a socket) is refused: the rename would replace the node itself.
* With ``overwrite=False`` the commit uses ``link`` + ``unlink``, which fails
  atomically if the target appeared meanwhile (no check-then-rename race).
* :meth:`AtomicFile.reserve` allocates disk space for the temporary before a
  writer needs it (``fallocate``): a full disk is then an ``OSError``
  (ENOSPC) at a call of ours, naming the file and the sizes, never a failed
  write inside libhdf5 (which leaves a file it cannot close and crashes the
  interpreter at exit).
* Stale temporaries of dead writers (``<target>.tmp-<pid>[-<n>]`` whose PID
  does not exist on this host) are removed when the next writer of the same
  target starts (:func:`remove_stale_temporaries`); a temporary of a live
  process is never touched.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["AtomicFile", "DiskFullError", "atomic_write", "check_target", "free_bytes",
           "remove_stale_temporaries"]


_NAME_MAX_FALLBACK = 255
_COUNTER_ROOM = len("-999")  # "-<n>" appended when the first temporary name is taken
#: extra space reserved beyond the data a writer announces (HDF5 object headers, chunk
#: index, attributes: a few kB per dataset; generous so libhdf5 never meets ENOSPC)
RESERVE_MARGIN = 256 << 10


class DiskFullError(OSError):
    """Not enough free space for an output (raised before the writer needs it)."""


_FALLOC_FL_KEEP_SIZE = 1  # linux/falloc.h


@functools.cache
def _libc_fallocate() -> Any:
    """libc's ``fallocate64`` (Linux), ``None`` elsewhere."""
    try:
        fallocate = ctypes.CDLL(None, use_errno=True).fallocate64
    except (OSError, AttributeError):
        return None
    fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    fallocate.restype = ctypes.c_int
    return fallocate


def _reserve_blocks(fd: int, length: int) -> None:
    """Allocate ``[0, length)`` of ``fd`` without changing its size (Linux ``fallocate``
    with ``FALLOC_FL_KEEP_SIZE``: libhdf5 keeps its own end of file, a grown size would
    stay in the file as a zero tail). ``OSError(EOPNOTSUPP)`` where that is unavailable."""
    fallocate = _libc_fallocate()
    if fallocate is None:
        raise OSError(errno.EOPNOTSUPP, "fallocate unavailable")
    if fallocate(fd, _FALLOC_FL_KEEP_SIZE, 0, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (any owner)."""
    if pid <= 0:
        return True  # not a PID we wrote: treat as alive, never delete
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _temporary_pid(target: Path, name: str) -> int | None:
    """The PID in ``name`` if it is a temporary name of ``target`` (either form of
    :func:`_tmp_base`, whatever the writer's PID length), else ``None``."""
    head, sep, tail = name.rpartition(".tmp-")
    parts = tail.split("-", 1)
    if not sep or not all(part.isdigit() for part in parts):
        return None
    if head == target.name:
        return int(parts[0])
    tag = "~" + hashlib.sha256(os.fsencode(target.name)).hexdigest()[:12]
    if head.endswith(tag) and target.name.startswith(head[: -len(tag)]):
        return int(parts[0])  # a long target's name, cut to fit NAME_MAX
    return None


def remove_stale_temporaries(target: str | os.PathLike[str]) -> list[Path]:
    """Remove ``<target>.tmp-<pid>[-<n>]`` files left by dead processes; return them.

    Only regular files whose PID is not running are removed (``os.kill(pid, 0)``), so a
    writer that is alive, ours included, keeps its temporary. Long targets (hashed
    temporary names) are matched by the same naming rule as :func:`_tmp_base`.
    """
    target = Path(target)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return removed
    for entry in entries:
        pid = _temporary_pid(target, entry.name)
        if pid is None:
            continue
        try:
            if not entry.is_file(follow_symlinks=False) or _pid_alive(pid):
                continue
            os.unlink(entry.path)
        except OSError:
            continue  # not ours to remove (permissions): left alone
        removed.append(Path(entry.path))
    return removed


def _tmp_base(target: Path) -> str:
    """``<target>.tmp-<pid>``, with the target's name shortened to fit NAME_MAX."""
    suffix = f".tmp-{os.getpid()}"
    try:
        name_max = os.pathconf(target.parent, "PC_NAME_MAX")
    except (OSError, ValueError):  # no such directory yet, or no pathconf: the usual limit
        name_max = _NAME_MAX_FALLBACK
    if name_max <= 0:  # indeterminate
        name_max = _NAME_MAX_FALLBACK
    name = target.name
    room = name_max - len(suffix) - _COUNTER_ROOM
    raw = os.fsencode(name)
    if len(raw) > room:
        # the hash keeps distinct long names distinct after the cut (same prefix)
        tag = "~" + hashlib.sha256(raw).hexdigest()[:12]
        while name and len(os.fsencode(name)) > room - len(tag):
            name = name[:-1]  # whole characters: the result stays valid UTF-8
        name += tag
    return str(target.parent / f"{name}{suffix}")


def _fsync_path(path: Path, *, directory: bool = False) -> None:
    flags = os.O_RDONLY | (os.O_DIRECTORY if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:  # some file systems do not allow opening directories; best effort
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


def free_bytes(directory: str | os.PathLike[str]) -> int:
    """Bytes an unprivileged writer may still use on the file system of ``directory``."""
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def check_target(target: str | os.PathLike[str], *, need_bytes: int = 0) -> None:
    """Check, before any work, that :class:`AtomicFile` can produce ``target``.

    The directory must exist and take a new file (tried: permissions, read-only file
    systems), ``target`` must not be a directory, device, FIFO or socket, and, with
    ``need_bytes``, the file system must have that much free (a hint: the writer reserves
    the space itself when it writes). Nothing is left behind.

    Raises
    ------
    OSError
        With ``filename`` the path at fault and ``strerror`` the reason.
    """
    target = Path(target)
    parent = target.parent
    if not parent.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "its directory does not exist", str(parent))
    if target.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a directory", str(target))
    if target.exists() and not target.is_file():
        raise FileExistsError(errno.EEXIST, "exists and is not a regular file (device, FIFO "
                              "or socket); refusing to replace it", str(target))
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise OSError(exc.errno, f"cannot create files in {parent}: {exc.strerror}",
                      str(target)) from exc
    if need_bytes > 0:
        free = free_bytes(parent)
        if need_bytes + RESERVE_MARGIN > free:
            raise DiskFullError(errno.ENOSPC, f"no space left on the device for the output "
                                f"(needs about {need_bytes + RESERVE_MARGIN} bytes, {free} "
                                f"bytes free)", str(target))


class AtomicFile:
    """A temporary file that becomes ``target`` on :meth:`commit`.

    Typical use is through :func:`atomic_write`; writers that outlive one
    ``with`` block (e.g. :class:`qkd_hw.trace_io.TraceWriter`) hold one of
    these and call :meth:`commit` or :meth:`abort` themselves.

    Parameters
    ----------
    target : path
        Final name of the file.
    mode : int, optional
        Permission bits of the file from its creation on (e.g. ``0o600``).
        ``None``: the usual ``0o666 & ~umask``.
    overwrite : bool
        Replace an existing target on commit (default). ``False``: refuse,
        both at construction and, atomically, at commit (``FileExistsError``).
    fsync : bool
        fsync the data and the directory on commit (default ``True``).
    """

    def __init__(
        self,
        target: str | os.PathLike[str],
        *,
        mode: int | None = None,
        overwrite: bool = True,
        fsync: bool = True,
    ) -> None:
        self.target = Path(target)
        self.mode = mode
        self.overwrite = overwrite
        self.fsync = fsync
        self.done = False
        self._reserved = 0
        if self.target.is_dir():
            raise IsADirectoryError(errno.EISDIR, "target is a directory", str(self.target))
        if self.target.exists() and not self.target.is_file():
            # a device node, FIFO or socket (e.g. /dev/null): renaming over it would replace
            # the node itself by a regular file (as root, /dev/null for the whole machine)
            raise FileExistsError(errno.EEXIST, "target exists and is not a regular file "
                                  "(device, FIFO or socket); refusing to replace it",
                                  str(self.target))
        if not overwrite and os.path.lexists(self.target):
            raise FileExistsError(errno.EEXIST, "target exists (overwrite=False)", str(self.target))
        remove_stale_temporaries(self.target)
        self.tmp_path = self._create_tmp()

    def reserve(self, nbytes: int) -> None:
        """Make sure the temporary file has ``nbytes`` plus :data:`RESERVE_MARGIN` of disk.

        Allocates the blocks without changing the file's size (``fallocate`` with
        ``FALLOC_FL_KEEP_SIZE``; where that is unavailable: checks the free space instead),
        so the writer's later writes up to that size cannot fail for want of space.

        Raises
        ------
        DiskFullError
            Not enough free space, with the target, the bytes needed and the bytes free.
        """
        need = int(nbytes) + RESERVE_MARGIN
        if need <= self._reserved:
            return
        grown = self._reserved + self._reserved // 4  # fewer, larger calls when streaming
        for want in ((grown, need) if grown > need else (need,)):
            try:
                self._allocate(want)
            except DiskFullError:
                if want == need:
                    raise
                continue  # the growth does not fit: what is needed may still
            self._reserved = want
            return

    def _allocate(self, want: int) -> None:
        try:
            fd = os.open(self.tmp_path, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
            try:
                _reserve_blocks(fd, want)
            finally:
                os.close(fd)
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                self._check_free(want)
            elif exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise self._disk_full(want) from exc
            else:
                raise

    def _free_bytes(self) -> int:
        return free_bytes(self.tmp_path.parent)

    def _check_free(self, want: int) -> None:
        used = os.stat(self.tmp_path).st_blocks * 512
        if want - used > self._free_bytes():
            raise self._disk_full(want)

    def _disk_full(self, want: int) -> DiskFullError:
        try:
            free = f"{self._free_bytes()} bytes free"
        except OSError:
            free = "free space unknown"
        return DiskFullError(errno.ENOSPC, f"no space left on the device for the output "
                             f"(needs about {want} bytes, {free})", str(self.target))

    def _create_tmp(self) -> Path:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        create_mode = 0o666 if self.mode is None else self.mode
        base = _tmp_base(self.target)
        for n in range(1000):
            candidate = Path(base if n == 0 else f"{base}-{n}")
            try:
                fd = os.open(candidate, flags, create_mode)
            except FileExistsError:
                continue
            try:
                if self.mode is not None:
                    os.fchmod(fd, self.mode)  # exact mode whatever the umask (never wider)
            except BaseException:
                os.close(fd)
                candidate.unlink(missing_ok=True)
                raise
            os.close(fd)
            return candidate
        raise FileExistsError(errno.EEXIST, "no free temporary name", base)

    def commit(self) -> Path:
        """fsync, move the temporary file to the target; return the target path."""
        if self.done:
            raise RuntimeError(f"{self.target}: already committed or aborted")
        try:
            if self._reserved:  # free the reserved blocks past the writer's end of file
                os.truncate(self.tmp_path, os.stat(self.tmp_path).st_size)
            if self.fsync:
                _fsync_path(self.tmp_path)
            if self.overwrite:
                os.replace(self.tmp_path, self.target)
            else:
                os.link(self.tmp_path, self.target)  # EEXIST if the target appeared meanwhile
                os.unlink(self.tmp_path)
        except BaseException:
            self.abort()
            raise
        self.done = True
        if self.fsync:
            _fsync_path(self.target.parent, directory=True)
        return self.target

    def abort(self) -> None:
        """Remove the temporary file; the target is left as it was. Idempotent."""
        self.done = True
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp_path)

    def __del__(self) -> None:  # a writer dropped without commit leaves nothing behind
        if not getattr(self, "done", True):
            with contextlib.suppress(Exception):
                self.abort()


@contextlib.contextmanager
def atomic_write(
    target: str | os.PathLike[str],
    *,
    mode: int | None = None,
    overwrite: bool = True,
    fsync: bool = True,
) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it to ``target`` on clean exit.

    The caller writes the temporary path (by name: h5py, numpy, matplotlib
    all take a name; the file already exists, empty, with the right mode, so
    open it for truncating write, e.g. h5py mode ``"w"``). On any exception,
    ``KeyboardInterrupt`` included, the temporary file is removed and
    ``target`` is untouched.

    >>> with atomic_write("key.h5", mode=0o600) as tmp:  # doctest: +SKIP
    ...     with h5py.File(tmp, "w") as f: ...
    """
    af = AtomicFile(target, mode=mode, overwrite=overwrite, fsync=fsync)
    try:
        yield af.tmp_path
    except BaseException:
        af.abort()
        raise
    af.commit()
