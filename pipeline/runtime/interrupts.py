"""Stopping cleanly: SIGTERM and SIGHUP raise an exception like Ctrl-C does, so every clean-up runs.

Python turns SIGINT (Ctrl-C) into ``KeyboardInterrupt``, which unwinds the stack through every ``finally`` and
``except BaseException`` (temporary files, scratch folders, locks). SIGTERM (``kill``, a job scheduler) and SIGHUP
(a closed terminal) would end the process at once and leave those behind; inside ``signals_raise()`` they raise
``Interrupted``, a ``KeyboardInterrupt``, instead. Only SIGKILL cannot be caught: what it leaves is removed by the
next run that takes the output's lock (``pipeline.outputs``).
"""
from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

CAUGHT = (signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """The process was asked to stop by ``signum``."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(signal.Signals(self.signum).name)


def exit_code(exc: BaseException) -> int:
    """The shell's convention for a process stopped by a signal: 128 + the signal's number (130 for Ctrl-C)."""
    return 128 + getattr(exc, "signum", signal.SIGINT)


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise ``Interrupted`` (once: a second signal during the clean-up is
    ignored); the previous handlers are restored after. Outside the main thread it changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised = False

    def handler(signum: int, frame) -> None:
        nonlocal raised
        if not raised:
            raised = True
            raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in CAUGHT}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
