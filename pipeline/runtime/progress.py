"""Progress bars only where someone watches them: the one rule for every tqdm bar of the package.

A bar is shown when it is asked for (``enabled=True``), never when refused (``enabled=False``), and by
default (``None``) only when stderr is a terminal, so a log file never fills with carriage-return frames.
The command line can change that default once (``configure``: ``--progress`` / ``--no-progress``).
"""
from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm

_default: bool | None = None  # None: bars when stderr is a terminal


def configure(enabled: bool | None) -> None:
    """The default for bars not told otherwise: ``True`` always, ``False`` never, ``None`` on a terminal."""
    global _default
    _default = enabled


def wanted(enabled: bool | None = None) -> bool:
    """Whether a bar is shown: ``enabled`` when given, else the configured default, else stderr is a terminal."""
    if enabled is not None:
        return enabled
    if _default is not None:
        return _default
    return sys.stderr.isatty()


def bar(iterable: Iterable | None = None, *, enabled: bool | None = None, **options: Any) -> tqdm:
    """A tqdm bar (``total``, ``desc``, ``unit``, ... as tqdm takes them), disabled unless ``wanted(enabled)``."""
    return tqdm(iterable, disable=not wanted(enabled), dynamic_ncols=True, **options)
