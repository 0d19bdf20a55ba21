"""The one rule for reading a user's text file, used by every reader (topics, qrels, runs, collections, query ids,
score files, metadata, configs).

- UTF-8 only: a byte sequence that is not UTF-8 is an ``InputError`` ``FILE:LINE: line is not valid UTF-8``;
- a UTF-8 byte-order mark at the start of the file is dropped (Windows editors write one; kept, it would glue
  itself to the first id and silently change results);
- lines end at ``\\n``; a ``\\r`` before it (CRLF) is dropped; a lone ``\\r`` inside a line is text, as in the
  MS MARCO collection;
- a missing path, a folder or an unreadable file is an ``InputError`` naming it;
- an id (a query's, a passage's) is one token: no whitespace inside it (``checked_id``), since run files and
  qrels separate their fields by whitespace and an id holding some could not be read back.

The fast path is Python's own text decoding; the line number of a bad byte is found by a second, binary pass,
only when there is one.
"""
from __future__ import annotations

import codecs
import contextlib
import io
import itertools
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from ..errors import InputError

#: What a UTF-8 byte-order mark looks like on disk (for the readers that scan bytes themselves).
BOM = codecs.BOM_UTF8
ENCODING = "utf-8-sig"  # UTF-8, with a leading byte-order mark dropped
NOT_UTF8 = "line is not valid UTF-8"
_WHITESPACE = re.compile(r"\s")

Opener = Callable[..., IO]


@contextlib.contextmanager
def _readable(path: Path) -> Iterator[None]:
    """Turn the operating system's refusals to read ``path`` into one-line ``InputError``s."""
    try:
        yield
    except FileNotFoundError:
        raise InputError("file not found", path) from None
    except IsADirectoryError:
        raise InputError("is a folder; expected a file", path) from None
    except PermissionError:
        raise InputError("permission denied: cannot read this file", path) from None


def checked_id(value: str, what: str, path: str | Path, lineno: int) -> str:
    """``value`` as an id (``what``: "query id", "document id"), surrounding whitespace dropped; an empty id or
    one with whitespace inside is an ``InputError`` naming the file and line."""
    value = value.strip()
    if not value:
        raise InputError(f"empty {what}", path, lineno)
    if _WHITESPACE.search(value):
        raise InputError(f"{what} {value!r} holds whitespace: an id must be one token (run files and qrels "
                         "separate their fields by whitespace)", path, lineno)
    return value


def bad_line(path: str | Path, opener: Opener = open) -> int | None:
    """The number of the first line of ``path`` that is not valid UTF-8 (None if every line is)."""
    with opener(path, "rb") as handle:
        for lineno, raw in enumerate(handle, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return lineno
    return None


def iter_lines(path: str | Path, opener: Opener = open, start: int = 0, first_line: int = 1,
               lines: int | None = None) -> Iterator[tuple[int, str]]:
    """Stream ``(line number, line without its ending)`` from a text file; see the module docstring.

    ``opener`` opens other containers the same way (``bz2.open``): it is called as ``opener(path, "rt",
    encoding=..., newline=...)`` and, to locate a bad byte, ``opener(path, "rb")``. A part of a plain file:
    ``lines`` lines (all by default) from the byte offset ``start`` (the first byte of a line), numbered from
    ``first_line``.
    """
    path = Path(path)
    with _readable(path):
        try:
            with _open_at(path, opener, start) as handle:
                for lineno, line in enumerate(itertools.islice(handle, lines), first_line):
                    yield lineno, line.rstrip("\r\n")
        except UnicodeDecodeError:
            raise InputError(NOT_UTF8, path, bad_line(path, opener)) from None


def _open_at(path: Path, opener: Opener, start: int) -> IO[str]:
    """``path`` as text (the module's rule) from the byte offset ``start``."""
    if not start:
        return opener(path, "rt", encoding=ENCODING, newline="\n")
    raw = opener(path, "rb")
    raw.seek(start)
    return io.TextIOWrapper(raw, encoding="utf-8", newline="\n")


def read_text(path: str | Path) -> str:
    """A whole text file (JSON, TOML) decoded by the same rule, line endings kept."""
    path = Path(path)
    with _readable(path):
        data = path.read_bytes()
    try:
        return data.decode(ENCODING)
    except UnicodeDecodeError as err:
        raise InputError(NOT_UTF8, path, data[: err.start].count(b"\n") + 1) from None
