"""The output guard: before any work, refuse an output that would destroy an input or cannot be written, and
take an exclusive lock on it while it is written.

``claim_output(path, inputs)`` checks, in this order, and raises a one-line ``InputError`` (exit 2) on the first
problem:

1. the output (or a file it also writes, ``also``) is not one of the inputs, comparing resolved paths (symbolic
   links, ``..`` and hard links included);
2. it is not inside an input folder (a model folder, an index, a collection folder), and a folder output that
   is replaced whole (``replaces=True``) holds no input;
3. it can be created: not a folder where a file is expected (nor the reverse), under a folder (not a file), in a
   place where a file can be created (a probe file is made and removed);
4. no other process is writing it: an exclusive ``flock`` on ``.NAME.lock`` beside it, failing at once with
   the other process's id.

Holding the lock, it removes what a killed writer of the same output left (the temporary names of
``pipeline.atomic``, and hidden ``*.tmp`` entries inside a folder output). On failure (an exception, Ctrl-C,
SIGTERM) it removes the folders it made: the parents it created and a folder output left empty. Standard output
(``-``, ``/dev/stdout``) needs none of this.

Under ``torchrun`` (``pipeline.distributed``) every process checks the output and waits for the others to
(``distributed.on_every``: a refusal on any rank stops every rank with the same line), then rank 0 alone makes the
folders, takes the lock and removes the leftovers, and no process goes on before it has (``distributed.on_main``:
its failure, a lock held by another process or a full disk, stops every rank with the same line): the run is one
writer.

``building(path)`` is the same lock for a cache file that many processes may want at once (the docstore's offset
index, the token cache): it waits for the process building it, so that one builds and the others read.
``sweep_unheld(path, also)`` removes what a killed builder left without waiting: only when no process holds the
lock.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from ..errors import InputError
from . import distributed
from .atomic import TEMP_SUFFIX, default_mode, is_stdout, temp_glob, temp_prefix, write_target
from .diskspace import space_checked

log = logging.getLogger(__name__)

PathLike = str | Path
#: label (e.g. ``--collection``) -> a path, several paths, or None (not given).
Inputs = Mapping[str, PathLike | Iterable[PathLike] | None]

_held: dict[Path, int] = {}  # lock files this process holds -> nesting depth (a claim inside a claim is allowed)


def resolved(path: PathLike) -> Path:
    """An absolute path with ``..`` and every symbolic link resolved (the file a write would change)."""
    return Path(os.path.realpath(os.path.abspath(os.path.expanduser(str(path)))))


def _pairs(inputs: Inputs | None) -> list[tuple[str, Path]]:
    out = []
    for label, value in (inputs or {}).items():
        if value is None:
            continue
        values = [value] if isinstance(value, (str, Path)) else list(value)
        out.extend((label, resolved(v)) for v in values if v is not None and str(v) != "")
    return out


def named_inputs(args: object, *names: str) -> dict[str, object]:
    """``{"--name": value}`` for the given attributes of parsed arguments (the labels errors use)."""
    return {f"--{name.replace('_', '-')}": getattr(args, name, None) for name in names}


def _same(a: Path, b: Path) -> bool:
    if a == b:
        return True
    try:
        return os.path.samefile(a, b)  # hard links
    except OSError:
        return False


def _inside(child: Path, folder: Path) -> bool:
    return child != folder and folder in child.parents


def _existing_ancestor(path: Path) -> Path:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def _probe_writable(folder: Path, target: Path) -> None:
    """Create and remove a file in ``folder``: the only test of "can be written" that holds for root and for
    read-only file systems alike."""
    try:
        fd, name = tempfile.mkstemp(prefix=temp_prefix(target), suffix=TEMP_SUFFIX, dir=folder)
    except OSError as err:
        reason = "permission denied" if err.errno in (errno.EACCES, errno.EPERM) else (err.strerror or str(err))
        raise InputError(f"cannot write the output here ({reason} in {folder})", target) from None
    os.close(fd)
    with contextlib.suppress(FileNotFoundError):  # rank 0 of a torchrun job may have swept it already
        os.unlink(name)


def check_output(path: PathLike, inputs: Inputs | None = None, folder: bool = False, also: Iterable[PathLike] = (),
                 replaces: bool = False) -> Path:
    """Refuse an output that is (or is inside) an input, or that cannot be written; returns the path written.

    ``folder``: the output is a folder; ``also``: other paths this output writes (checked against the inputs);
    ``replaces``: a folder output is replaced whole (so no input may live inside it).
    """
    if is_stdout(path):
        return Path(path)
    target = write_target(path)
    real = resolved(target)
    given = _pairs(inputs)
    for candidate in [real, *map(resolved, also)]:
        for label, source in given:
            if _same(candidate, source):
                what = "the output" if candidate == real else f"the output's file {candidate.name}"
                raise InputError(f"{what} is also the input {label}; refusing to overwrite an input "
                                 "(choose another output)", path)
    for label, source in given:
        if source.is_dir() and _inside(real, source):
            raise InputError(f"the output is inside the input folder {label} ({source}); refusing to change an "
                             "input (choose another output)", path)
        if folder and replaces and _inside(source, real):
            raise InputError(f"the input {label} ({source}) is inside this output folder, which is replaced whole; "
                             "choose another output", path)
    if real.exists():
        if folder and not real.is_dir():
            raise InputError("exists and is not a folder; the output here is a folder", path)
        if not folder and real.is_dir():
            raise InputError("is a folder; the output here is a file (give a file name)", path)
    ancestor = _existing_ancestor(real.parent)
    if not ancestor.is_dir():
        raise InputError(f"cannot create the output: {ancestor} is a file, not a folder", path)
    if real.exists() and not real.is_dir() and not real.is_file():  # a pipe or a device: written straight into
        if not os.access(real, os.W_OK):
            raise InputError("cannot write the output (permission denied)", path)
        return target
    _probe_writable(real if folder and real.is_dir() else ancestor, real)
    return target


def _make_parents(folder: Path) -> list[Path]:
    """``mkdir -p folder``; returns the folders made, deepest first."""
    made = []
    probe = folder
    while not probe.exists():
        made.append(probe)
        probe = probe.parent
    folder.mkdir(parents=True, exist_ok=True)
    return made


def lock_path(target: Path) -> Path:
    """The lock file of an output: ``.NAME.lock`` beside it."""
    return target.parent / f".{target.name}.lock"


def _holder(path: Path) -> str:
    with contextlib.suppress(OSError, ValueError):
        pid = int(path.read_text().strip() or 0)
        if pid:
            return f"process {pid}"
    return "another process"


@contextlib.contextmanager
def _lock(target: Path, display: PathLike, wait: bool = False) -> Iterator[None]:
    """An exclusive lock on ``target`` for this process, or an ``InputError`` naming the process holding it
    (``wait``: until that process lets it go)."""
    path = lock_path(target)
    if path in _held:
        _held[path] += 1
        try:
            yield
        finally:
            _held[path] -= 1
        return
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, default_mode())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            raise InputError(f"{_holder(path)} is writing this output (lock {path.name}); wait for it to finish "
                             "or choose another output", display) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed the file between our open and our lock: take the new one
    _held[path] = 1
    try:
        with space_checked(display):  # a full disk: one line, before any work
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        del _held[path]
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.close(fd)


def _sweep(target: Path, folder: bool) -> None:
    """Remove what a killed writer of this output left (it cannot be running: we hold the lock)."""
    stale = list(target.parent.glob(temp_glob(target)))
    if folder and target.is_dir():
        stale += [p for p in target.glob(f".*{TEMP_SUFFIX}")]
    for path in stale:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    if stale:
        log.info("%s: removed %d temporary files left by an interrupted run", target, len(stale))


@contextlib.contextmanager
def claim_output(path: PathLike, inputs: Inputs | None = None, folder: bool = False, also: Iterable[PathLike] = (),
                 replaces: bool = False) -> Iterator[Path]:
    """Check the output (``check_output``), make its parent folders, lock it and yield the path to write.

    On failure the folders made here are removed again when empty (a folder output too, when this claim made it).
    """
    ctx = distributed.context()
    target = distributed.on_every(lambda: check_output(path, inputs, folder, also, replaces), ctx)
    if is_stdout(path):
        yield target
        return
    made: list[Path] = []  # rank 0's: the other ranks make nothing, so remove nothing
    existed = True
    try:
        with contextlib.ExitStack() as held:
            def claim() -> None:
                nonlocal existed
                made.extend(_make_parents(target.parent))
                existed = target.exists()
                held.enter_context(_lock(target, path))
                _sweep(target, folder)

            if ctx.distributed:
                distributed.on_main(claim, ctx)  # the others wait; a held lock or a full disk stops every rank
            else:
                claim()
            yield target
    except BaseException:
        for empty in ([target] if folder and not existed else []) + made:
            with contextlib.suppress(OSError):
                empty.rmdir()  # only when empty
        raise


@contextlib.contextmanager
def building(path: PathLike) -> Iterator[None]:
    """Hold the lock of the cache file ``path`` while building it, waiting for a process building it already:
    check again inside whether it is built (see the module docstring). Holding it, the temporary files a killed
    builder of ``path`` left are removed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _lock(target, target, wait=True):
        _sweep(target, folder=False)
        yield


def sweep_unheld(path: PathLike, also: Iterable[PathLike] = ()) -> None:
    """Remove the temporary files that killed builders of the cache file ``path`` (and of ``also``, the files built
    under its lock) left, unless a live process is building it now (its lock is held: nothing is touched)."""
    targets = [Path(path), *map(Path, also)]
    if not any(next(t.parent.glob(temp_glob(t)), None) for t in targets) or lock_path(targets[0]) in _held:
        return
    try:
        with _lock(targets[0], targets[0]):
            for target in targets:
                _sweep(target, folder=False)
    except InputError:  # a live builder holds the lock: its files are not stale
        return
