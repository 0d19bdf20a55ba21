"""Journals of finished work: a killed run resumes where it stopped, and refuses to resume with other inputs.

A journal is a text file beside the output: a header line naming the run (its inputs and every option that
changes the output, as JSON), then one JSON line per finished chunk of work, its first key the CRC-32 of the rest
(``{"crc":"1a2b3c4d","chunk":0,...}``). Each line is written, flushed and fsync'd before the next chunk starts,
so a ``kill -9`` at any moment loses at most the chunk in flight. A torn last line (no newline: the process died
while writing it) is dropped on reading and cut off before the next append.

Opening a journal to resume checks every line (a stat and one read of the file): a line whose checksum fails,
that is not a record, or that repeats a chunk is refused with its file and line number, and the journal is left
as it is (the chunks before the line are intact: the message says how to keep them). What a record holds is
checked by the command that reads it back (``records`` gives line numbers, ``damaged`` words the refusal).

- A fresh run finding a journal refuses to start (``InputError``: resume it with ``--resume``, or delete it).
- ``resume=True`` reads the finished records; a journal whose header differs is refused with ``InputError``
  naming the first difference (exit 2 on the command line); no journal at all starts from the beginning.
- The command removes the journal once its final output is written (``remove``), and when bad input stops it
  (``dropped_on_bad_input``: the inputs must change, so the journal could never be resumed). A signal, a crash
  or a refusal of the journal itself keeps it.

Inputs are named by ``identity``: the path, size and SHA-1 of a file's content (of each file of a folder).
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import InputError
from . import distributed
from .diskspace import DiskFull, space_checked

log = logging.getLogger(__name__)

MAGIC = "distilrank-journal"
#: The layout of the records (2: each line carries its CRC-32), part of the header.
FORMAT = 2
_CRC = re.compile(rb'\{"crc":"([0-9a-f]{8})",')


def _sha1(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha1").digest()


def identity(path: str | Path) -> dict[str, Any]:
    """What names an input: its resolved path, its size in bytes and the SHA-1 of its content (a folder: of its
    files' relative names and SHA-1s, in sorted order)."""
    path = Path(path)
    if not path.exists():
        raise InputError("not found", path)
    if not path.is_dir():
        return {"path": str(path.resolve()), "bytes": path.stat().st_size, "sha1": _sha1(path).hex()}
    sha, size = hashlib.sha1(), 0
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        sha.update(str(file.relative_to(path)).encode() + b"\0" + _sha1(file))
        size += file.stat().st_size
    return {"path": str(path.resolve()), "bytes": size, "sha1": sha.hexdigest()}


def source_identity(source: str | Path) -> dict[str, Any]:
    """A model or input given as a local file or folder (by ``identity``) or as a name (a hub model: by name)."""
    return identity(source) if Path(source).exists() else {"name": str(source)}


def journal_files(output: str | Path) -> list[Path]:
    """The journals ``output`` may have: one process's, and this process's under ``torchrun`` (what an output
    guard keeps apart from the inputs)."""
    ctx = distributed.context()
    return sorted({journal_path(output), journal_path(output, ctx.rank, ctx.world_size)})


def journal_path(output: str | Path, rank: int = 0, world_size: int = 1) -> Path:
    """The journal of ``output`` written by rank ``rank`` of ``world_size`` processes: ``OUTPUT.journal`` for a
    single process, ``OUTPUT.rank{R}-of-{W}.journal`` in a run of several."""
    output = Path(output)
    tag = f".rank{rank}-of-{world_size}" if world_size > 1 else ""
    return output.with_name(f"{output.name}{tag}.journal")


def open_journal(output: str | Path, header: dict[str, Any], resume: bool, rank: int = 0,
                 world_size: int = 1) -> Journal:
    """The journal of ``output`` for rank ``rank`` of ``world_size`` (see ``Journal``); journals left by a run
    with another number of processes are refused (its chunks were split another way)."""
    output = Path(output)
    own = journal_path(output, rank, world_size)
    others = {journal_path(output, r, world_size) for r in range(world_size)}
    ours = re.compile(re.escape(output.name) + r"(\.rank\d+-of-\d+)?\.journal")
    stray = sorted(p for p in output.parent.glob(f"{glob.escape(output.name)}*.journal")
                   if p not in others and ours.fullmatch(p.name))
    if stray:
        raise InputError(f"{len(stray)} journal(s) of a run with another number of processes are here "
                         f"({stray[0].name}): resume with as many processes, or delete them to start over",
                         output.parent)
    return Journal(own, {**header, "rank": rank, "world_size": world_size}, resume)


def _difference(found: Any, expected: Any, where: str = "") -> str | None:
    """The first place two headers differ, as ``key: found X, expected Y``; ``None`` when equal."""
    if isinstance(found, dict) and isinstance(expected, dict):
        for key in list(expected) + [k for k in found if k not in expected]:
            diff = _difference(found.get(key), expected.get(key), f"{where}.{key}" if where else key)
            if diff:
                return diff
        return None
    if found != expected:
        return f"{where or 'header'}: the journal has {found!r}, this run {expected!r}"
    return None


class Journal:
    """``Journal(path, header, resume)``: ``len(journal)`` chunks were finished by earlier runs, iterating reads
    their records back (streamed from the file), ``append`` adds one."""

    def __init__(self, path: str | Path, header: dict[str, Any], resume: bool = False):
        self.path = Path(path)
        self.header = json.loads(json.dumps({**header, "format": FORMAT}))  # as it reads back (tuples: lists)
        self.count = 0
        if self.path.exists():
            if not resume:
                raise InputError("a journal of an unfinished run is here: continue it with --resume, or delete it "
                                 "to start over", self.path)
            good = self._check()
            with open(self.path, "r+b") as handle:  # cut a torn last line off before appending
                handle.truncate(good)
            log.info("resuming from %s: %d chunks already done", self.path, self.count)
        else:
            if resume:
                log.info("no journal at %s: nothing to resume, starting from the beginning", self.path)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._write_line({"journal": MAGIC, **self.header}, mode="xb", checked=False)
            except BaseException:
                self.path.unlink(missing_ok=True)  # a torn header (a full disk) would make it unreadable
                raise
            _fsync_dir(self.path.parent)

    def _check(self) -> int:
        """Check the header and every complete record (checksum, a chunk number not seen before), count the
        records; the byte length of the complete lines."""
        with open(self.path, "rb") as handle:
            first = handle.readline()
            try:
                header = json.loads(first) if first.endswith(b"\n") else None
            except (json.JSONDecodeError, UnicodeDecodeError):
                header = None
            if not isinstance(header, dict) or header.pop("journal", None) != MAGIC:
                raise InputError("not a distilrank journal, yet it is where this output's journal goes: move it "
                                 "away (it may be an input) or choose another output", self.path, 1)
            diff = _difference(header, self.header)
            if diff:
                raise InputError(f"this journal was made for another run ({diff}); delete it to start over, or "
                                 "run the command it was made for", self.path, 1)
            good, chunks = len(first), {}
            for lineno, line in enumerate(handle, 2):
                if not line.endswith(b"\n"):
                    log.warning("%s: dropping a torn last record (%d bytes; the run was killed while writing it)",
                                self.path, len(line))
                    break
                chunk = self._parse(line, lineno)["chunk"]
                if chunk in chunks:
                    raise self.damaged(lineno, f"chunk {chunk} is recorded twice (first on line {chunks[chunk]})")
                chunks[chunk] = lineno
                good += len(line)
                self.count += 1
        return good

    def _parse(self, line: bytes, lineno: int) -> dict[str, Any]:
        """A record line checked: its checksum, a JSON object with a chunk number."""
        match = _CRC.match(line)
        body = b"{" + line[match.end() : -1] if match else b""
        if not match or int(match.group(1), 16) != zlib.crc32(body):
            raise self.damaged(lineno, "damaged record (its checksum does not match)")
        try:
            record = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise self.damaged(lineno, "damaged record (not JSON)") from None
        if not isinstance(record, dict) or type(record.get("chunk")) is not int or record["chunk"] < 0:
            raise self.damaged(lineno, "damaged record (no chunk number)")
        return record

    def damaged(self, lineno: int, why: str) -> InputError:
        """The refusal of record line ``lineno`` (kept by ``dropped_on_bad_input``): why, and how to resume from
        the chunks recorded before it, or to start over."""
        kept = f"keep its first {lineno - 1} lines (head -n {lineno - 1}) to resume from the chunks before it, or "
        return InputError(f"{why}: {kept if lineno > 2 else ''}delete the journal to start over", self.path, lineno)

    def records(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(line number, record)`` of the finished chunks, in the order they were appended (read from the
        file, each checked again)."""
        with open(self.path, "rb") as handle:
            handle.readline()
            for lineno, line in enumerate(handle, 2):
                if not line.endswith(b"\n"):
                    return
                yield lineno, self._parse(line, lineno)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """The finished records, in the order they were appended."""
        return (record for _, record in self.records())

    def __len__(self) -> int:
        return self.count

    def _write_line(self, record: dict[str, Any], mode: str = "ab", checked: bool = True) -> None:
        line = json.dumps(record, separators=(",", ":"), allow_nan=False).encode()
        line = (b'{"crc":"%08x",' % zlib.crc32(line) + line[1:] if checked else line) + b"\n"
        with space_checked(self.path, needed=len(line)), open(self.path, mode) as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def append(self, record: dict[str, Any]) -> None:
        """Add a finished chunk's record (``chunk``: its number, and more keys), on disk (flushed and fsync'd)
        before this returns."""
        self._write_line(record)
        self.count += 1

    def remove(self) -> None:
        """Delete the journal (the run's final output is written)."""
        self.path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def dropped_on_bad_input(self) -> Iterator[None]:
        """Within the block, an ``InputError`` removes the journal (then propagates); anything else keeps it, and so
        do a full disk (``DiskFull``: the same run continues once space is freed) and a refusal of the journal
        itself (``damaged``: its finished chunks are kept for the user to save)."""
        try:
            yield
        except DiskFull:
            raise
        except InputError as err:
            if err.path != str(self.path):
                self.remove()
            raise


def _fsync_dir(folder: Path) -> None:
    """Make a new file's directory entry durable too."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
