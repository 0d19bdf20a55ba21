"""Output files and folders that appear whole or not at all, with the permissions any tool would give them.

- A file is written under a temporary name beside its target (``.NAME.XXXXXX.tmp``) and renamed over it when
  complete; on any failure, Ctrl-C or SIGTERM (see ``pipeline.interrupts``) the temporary file is removed. A full
  disk is a one-line ``DiskFull`` naming the target (``pipeline.runtime.diskspace``).
- A target that is a symbolic link is written *through*: the file it points to is replaced, the link is kept.
- ``-`` and ``/dev/stdout`` stream to standard output; another target that is not a regular file (a named pipe,
  ``/dev/null``) is written straight into.
- A new file gets the mode the umask gives (0644 under umask 022), a replaced file keeps its mode: not the 0600
  of ``mkstemp``.
- Folders: ``scratch_dir`` is a temporary folder beside a target, ``replace_dir`` moves a finished one into place.

Every temporary name of a target ``NAME`` matches ``temp_glob(NAME)``, so a later run that holds the output's lock
(``pipeline.outputs``) can remove what a killed one left.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from .diskspace import size_of, space_checked

#: Output names that mean standard output.
STDOUT_NAMES = ("-", "/dev/stdout")
TEMP_SUFFIX = ".tmp"


def is_stdout(path: str | Path) -> bool:
    """Whether ``path`` names standard output (``-`` or ``/dev/stdout``)."""
    return str(path) in STDOUT_NAMES


def temp_prefix(target: Path) -> str:
    """The start of every temporary name of ``target`` (a hidden name beside it)."""
    return f".{target.name}."


def temp_glob(target: Path) -> str:
    """A glob, relative to ``target``'s folder, matching every temporary name of ``target``."""
    return f"{temp_prefix(target)}*{TEMP_SUFFIX}"


def umask() -> int:
    """The process's umask (read without changing it where Linux allows)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    current = os.umask(0o022)
    os.umask(current)
    return current


def default_mode(folder: bool = False) -> int:
    """The mode a new file (0666) or folder (0777) gets under the umask."""
    return (0o777 if folder else 0o666) & ~umask()


def write_target(path: str | Path) -> Path:
    """The file a write to ``path`` replaces: ``path`` itself, or the end of its chain of symbolic links."""
    path = Path(path)
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def give_default_modes(paths: Iterable[str | Path]) -> None:
    """Give files (and folders) the mode the umask gives, e.g. those a library wrote with mode 0600."""
    for path in map(Path, paths):
        path.chmod(default_mode(folder=path.is_dir()))


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success rename it over ``path``, on error delete it.

    See the module docstring for links, standard output and modes.
    """
    encoding = None if "b" in mode else encoding
    if is_stdout(path):
        stream = sys.stdout.buffer if "b" in mode else sys.stdout
        yield stream
        stream.flush()
        return
    target = write_target(path)
    if target.exists() and not target.is_file():  # a pipe or a device: nothing to replace
        with open(target, mode, encoding=encoding) as handle:
            yield handle
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    new_mode = stat.S_IMODE(target.stat().st_mode) if target.exists() else default_mode()
    with space_checked(target):
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(target), suffix=TEMP_SUFFIX, dir=target.parent)
    try:
        with space_checked(target, written=lambda: size_of(tmp)):  # measured before the file goes
            os.fchmod(fd, new_mode)
            with os.fdopen(fd, mode, encoding=encoding) as handle:
                yield handle
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def scratch_dir(target: str | Path) -> Iterator[Path]:
    """A temporary folder beside ``target`` (a temporary name of it), removed at the end whatever happens."""
    target = write_target(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=temp_prefix(target), suffix=TEMP_SUFFIX, dir=target.parent))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def replace_dir(source: Path, target: str | Path) -> Path:
    """Move the finished folder ``source`` to ``target`` (same file system), replacing an existing folder there.

    The folder gets the umask's mode (``mkdtemp`` makes 0700). An existing target is first renamed to a
    temporary name, so that at no moment is neither the old nor the new folder in place under a known name.
    """
    target = write_target(target)
    source.chmod(default_mode(folder=True))
    if not target.exists():
        source.rename(target)
        return target
    old = Path(tempfile.mkdtemp(prefix=temp_prefix(target), suffix=TEMP_SUFFIX, dir=target.parent))
    old.rmdir()
    target.rename(old)
    try:
        source.rename(target)
    except BaseException:
        old.rename(target)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return target
