"""A full disk: one line naming the file and the space the job needed, never a traceback, a SIGBUS or lost work.

Every writer runs its writes inside ``space_checked(path)``: an ``OSError`` ENOSPC or EDQUOT anywhere in the
exception's chain (and the same cause in the words of a library that drops the errno: safetensors' "No space left
on device (os error 28)"; or a short write without an errno, as numpy's ``tofile`` and ``torch.save`` report one,
while the file system is full) becomes ``DiskFull``: an ``InputError`` (one line, exit 2) naming the file, what it
needed or had written, and the space free. It is not bad input: a journal or a checkpoint is kept, so the same
command (with ``--resume``) continues once space is freed; ``atomic_write`` removes its temporary file.

``reserve(path, size)`` allocates a file's blocks before any work (``posix_fallocate``; where the file system
cannot, a check of the free space): a file written through a memory map must not be sparse, because a write into
a hole on a full disk kills the process with SIGBUS instead of raising an error.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import InputError

#: The errors of a full file system: no space, or the user's quota spent.
FULL = (errno.ENOSPC, errno.EDQUOT)
#: How libraries that keep no errno word the same errors (lower case).
FULL_WORDS = ("no space left on device", "disk quota exceeded", "os error 28", "os error 122")
#: Free space (bytes) under which a short write without an errno is put down to a full disk.
NEARLY_FULL = 1 << 20
#: Errors of ``posix_fallocate`` that mean "this file system cannot allocate ahead", not "no space".
CANNOT_ALLOCATE = (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class DiskFull(InputError):
    """No space left where a file is written (the message says how much was needed or written, and how much is
    free). A command stopped by it keeps its finished work (journals, checkpoints) for a rerun."""


def human(size: int | None) -> str:
    """``12.3 MB``: a byte count for people (decimal units)."""
    if size is None:
        return "unknown"
    value, unit = float(size), "B"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            break
        value /= 1000
    return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"


def free_bytes(path: str | Path) -> int | None:
    """The bytes this user may still write on the file system holding ``path`` (or its nearest existing folder)."""
    probe = Path(os.path.abspath(path))
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def is_full(exc: BaseException, path: str | Path) -> bool:
    """Whether ``exc``, raised while writing ``path``, means that its file system is full (see the module
    docstring)."""
    for err in _chain(exc):
        if isinstance(err, OSError) and err.errno in FULL:
            return True
        if any(words in str(err).lower() for words in FULL_WORDS):
            return True
    if isinstance(exc, (OSError, RuntimeError)) and getattr(exc, "errno", None) is None:
        free = free_bytes(path)
        return free is not None and free < NEARLY_FULL
    return False


def disk_full(path: str | Path, needed: int | None = None, written: int | None = None) -> DiskFull:
    """The one-line error of a full disk while writing ``path``: the bytes it ``needed`` (when known) or had
    ``written`` when the space ran out, and the bytes free."""
    if needed is not None:
        what = f"it needs {human(needed)}, "
    elif written:
        what = f"{human(written)} written when it filled up, "
    else:
        what = ""
    return DiskFull(f"no space left on the device ({what}{human(free_bytes(path))} free); free some space and run "
                    "the command again", path)


@contextlib.contextmanager
def space_checked(path: str | Path, needed: int | None = None, written: Callable[[], int | None] | None = None,
                  whole: bool = False) -> Iterator[None]:
    """Within the block, a write failing for lack of space raises ``DiskFull`` naming ``path`` (``needed``: the
    bytes the job needs, when known; ``written()``: the bytes written when it failed). A ``DiskFull`` from a block
    inside names its own file, unless this block writes one ``whole`` of many files (a checkpoint folder): then
    it names the whole."""
    try:
        yield
    except Exception as exc:
        inner = isinstance(exc, DiskFull)
        if (inner and not whole) or (not inner and not is_full(exc, path)):
            raise
        raise disk_full(path, needed, written() if written else None) from None


def size_of(path: str | Path) -> int | None:
    """The bytes of a file, or of every file under a folder; None when it is gone."""
    path = Path(path)
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return path.stat().st_size
    except OSError:
        return None


def reserve(path: str | Path, size: int) -> None:
    """Make ``path`` (created when absent) ``size`` bytes long with its blocks allocated, before it is written
    through a memory map; ``DiskFull`` naming the bytes needed when they do not fit."""
    path = Path(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if size <= 0:
            return
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as err:
            if err.errno in FULL:
                raise disk_full(path, needed=size) from None
            if err.errno not in CANNOT_ALLOCATE:
                raise
            info = os.fstat(fd)
            missing = size - min(info.st_blocks * 512, size)
            free = free_bytes(path)
            if free is not None and free < missing:
                raise disk_full(path, needed=size) from None
            if info.st_size < size:
                os.ftruncate(fd, size)
    finally:
        os.close(fd)
