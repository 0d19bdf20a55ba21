"""The one error type for bad user input (the CLI prints it on one line and exits with code 2), and the wording of
two of its messages: a renamed key or option, another library's error quoted on one line."""
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

    def __reduce__(self):
        """Pickled whole (its class, message, file and line): it crosses processes, e.g. from the rank that met it
        to the others of a ``torchrun`` job (``distributed.on_main``, ``distributed.on_every``)."""
        return type(self), (self.message, self.path, self.line)


def renamed(old: str, new: str, meaning: str) -> str:
    """The one-line refusal of a renamed config key or command-line option: its new name and what that means."""
    return f"{old!r} is now called {new!r}: {meaning}"


def one_line(exc: BaseException, limit: int = 200) -> str:
    """``Type: message`` of an exception, its message cut to the first line and ``limit`` characters: another
    library's error quoted inside an ``InputError`` (Java's errors carry whole stack traces)."""
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:limit]}"
