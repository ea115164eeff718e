"""Atomic file output: write under a temporary name, rename when complete.

Every file qkd-hw produces (recordings, raw keys, reports) goes through
:class:`AtomicFile` or :func:`atomic_write`, so a crash, an exception or a
Ctrl-C never leaves a half-written file under the final name and never
destroys a file that already sits there.

* The temporary file lives in the target's directory (``os.replace`` is only
  atomic within one file system) and is named ``<target>.tmp-<pid>``
  (``<target>.tmp-<pid>-<n>`` if that name is taken, e.g. by a stale leftover
  of a killed process: leftovers are never deleted, they may belong to a live
  writer in another PID namespace). When that name would exceed the
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
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["AtomicFile", "atomic_write"]


_NAME_MAX_FALLBACK = 255
_COUNTER_ROOM = len("-999")  # "-<n>" appended when the first temporary name is taken


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
        self.tmp_path = self._create_tmp()

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
