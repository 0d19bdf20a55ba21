"""Seals of the big state files the project writes once and reads back often (the token cache, the dense index):
what a file was when it was written, checked cheaply every time it is opened.

A seal (``seal``) is the file's size, its mtime and two SHA-1 digests: of the whole file, and of ``SAMPLES``
blocks of ``BLOCK`` bytes spread evenly over it (of the whole file when it is no bigger than those blocks).
It is computed once, when the file is complete. ``check`` costs:

- a ``stat`` always: a file of another size is refused at once;
- size and mtime as sealed: the sampled digest, at most 256 KiB read whatever the file's size;
- another mtime (the file was copied, touched or written to): the full digest, one sequential read of the file;
  when it still matches, ``check`` returns the seal with the new mtime, for the caller to record, so that the
  next open is cheap again.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: Blocks of the sampled digest and their size: 64 x 4 KiB = 256 KiB read at most.
SAMPLES, BLOCK = 64, 4096
KEYS = ("bytes", "mtime_ns", "sha1", "sample")


class BrokenSeal(Exception):
    """A file that no longer matches its seal; ``str(err)`` says how, in a few words."""


def _full(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha1").hexdigest()


def _sample(path: Path, size: int) -> str:
    """The digest of ``SAMPLES`` blocks spread evenly over the file (the first and the last included)."""
    sha = hashlib.sha1(str(size).encode())
    with open(path, "rb") as handle:
        if size <= SAMPLES * BLOCK:
            sha.update(handle.read())
        else:
            for i in range(SAMPLES):
                sha.update(os.pread(handle.fileno(), BLOCK, i * (size - BLOCK) // (SAMPLES - 1)))
    return sha.hexdigest()


def seal(path: str | Path) -> dict[str, Any]:
    """The seal of a complete file (one full read)."""
    path = Path(path)
    stat = path.stat()
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha1": _full(path),
            "sample": _sample(path, stat.st_size)}


def check(path: str | Path, sealed: Mapping[str, Any]) -> dict[str, Any]:
    """The seal of ``path`` as it is now: ``sealed`` itself, or a copy with a new mtime when the file was
    copied or touched but its bytes are those sealed. A file that differs is a ``BrokenSeal``."""
    path = Path(path)
    if not isinstance(sealed, Mapping) or any(key not in sealed for key in KEYS):
        raise BrokenSeal("its seal is missing or incomplete")
    try:
        stat = path.stat()
    except OSError:
        raise BrokenSeal(f"{path.name} is missing") from None
    if stat.st_size != sealed["bytes"]:
        raise BrokenSeal(f"{path.name} is {stat.st_size} bytes, not the {sealed['bytes']} written")
    if stat.st_mtime_ns == sealed["mtime_ns"]:
        if _sample(path, stat.st_size) != sealed["sample"]:
            raise BrokenSeal(f"the bytes of {path.name} changed since it was written")
        return dict(sealed)
    if _full(path) != sealed["sha1"]:
        raise BrokenSeal(f"the bytes of {path.name} changed since it was written")
    return {**sealed, "mtime_ns": stat.st_mtime_ns}
