"""What reaches the terminal: log levels by -v/-q and the terminal, progress bars only where someone watches."""
from __future__ import annotations

import logging
import sys

import pytest

from pipeline.cli import main, setup_output
from pipeline.runtime import progress


@pytest.fixture
def output_settings():
    """Restore the package logger and the bar default after a test that changes them."""
    logger = logging.getLogger("pipeline")
    handlers, level = list(logger.handlers), logger.level
    yield logger
    logger.handlers[:], logger.level = handlers, level
    progress.configure(None)


@pytest.mark.parametrize(
    "verbose, quiet, terminal, level",
    [(0, False, False, logging.WARNING), (0, False, True, logging.INFO), (1, False, False, logging.INFO),
     (2, False, False, logging.DEBUG), (0, True, True, logging.ERROR)],
)
def test_log_level_follows_the_flags_and_the_terminal(output_settings, monkeypatch, verbose, quiet, terminal, level):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal)
    setup_output(verbose, quiet)
    setup_output(verbose, quiet)  # again (as a second command in one process would): still one handler
    assert output_settings.level == level
    assert sum(type(h).__name__ == "_StderrHandler" for h in output_settings.handlers) == 1


def test_messages_go_to_the_current_stderr(output_settings, capsys):
    setup_output(verbose=1)
    logging.getLogger("pipeline.experiment.compare").info("reranking 3 queries")
    assert "pipeline.experiment.compare: reranking 3 queries" in capsys.readouterr().err


def test_bars_on_a_terminal_or_when_asked(output_settings, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    setup_output()
    assert not progress.wanted() and progress.wanted(True)
    assert progress.bar(range(3)).disable and not progress.bar(range(3), enabled=True).disable
    setup_output(bars=True)
    assert progress.wanted() and not progress.wanted(False)  # a command's --no-progress still wins
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    setup_output(quiet=True, bars=True)
    assert not progress.wanted()  # -q: no bars at all
    setup_output()
    assert progress.wanted()


def test_compare_keys_lists_the_config_keys(output_settings, capsys):
    with pytest.raises(SystemExit) as done:
        main(["compare", "--keys"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "[rerank]" in out and "significance_level = 0.05" in out
