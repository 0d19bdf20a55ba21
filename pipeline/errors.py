"""The one error type for bad user input: the CLI prints it on one line and exits with code 2."""
from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """Bad input: a malformed file, a missing path, inconsistent data.

    ``str(err)`` is one line naming the file and line where known: ``path:line: message``.
    """

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        self.message = message
        self.path = str(path) if path is not None else None
        self.line = line
        where = self.path or ""
        if where and line is not None:
            where += f":{line}"
        super().__init__(f"{where}: {message}" if where else message)
