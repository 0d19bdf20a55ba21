"""The ``distilrank`` command line: a thin layer of subcommands over the library API.

Each module in ``COMMAND_MODULES`` has ``register(subparsers)`` which adds its subcommands; a
subcommand's parser sets ``func(args) -> int``. Bad input (``InputError``) prints one line
``distilrank: error: FILE:LINE: message`` and exits with code 2, and so does a full disk (``DiskFull``: "run the
command again", with ``--resume`` where a command that journals or checkpoints left work); Ctrl-C, SIGTERM and
SIGHUP stop it with clean-up (``pipeline.interrupts``), one line and exit 128 + the signal's number; the commands
that journal or checkpoint (rerank, score, train, distill) keep their finished work for ``--resume`` and say so.

What reaches the terminal is decided here, once: the library logs (``logging``), and ``setup_output``
shows INFO and above on stderr when stderr is a terminal, WARNING and above otherwise (``-v`` adds DEBUG,
``-q`` keeps errors only); progress bars follow the same rule (``pipeline.progress``: on a terminal, or
with ``--progress``; a subcommand's ``--no-progress`` turns its bars off). Results (tables, file names) go to
stdout. Under torchrun only rank 0 prints results and shows progress and messages below warnings.
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import importlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError
from ..runtime import distributed, progress
from ..runtime.diskspace import DiskFull
from ..runtime.interrupts import exit_code, signals_raise

COMMAND_MODULES = ("retrieve", "encode", "submission", "tokenize", "rerank", "train", "compare")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distilrank",
        description="A BM25 (Pyserini), dense (faiss) or hybrid first stage + BERT cross-encoder rerankers: a teacher "
        "and its distilled students, compared for effectiveness and speed.",
    )
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("-v", "--verbose", action="count", default=0,
                          help="more messages on stderr (-v: progress messages even when stderr is not a terminal; "
                          "-vv: debug messages and the libraries' warnings)")
    loudness.add_argument("-q", "--quiet", action="store_true", help="errors only on stderr, no progress bars")
    parser.add_argument("--progress", action="store_true", help="progress bars even when stderr is not a terminal")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


class _StderrHandler(logging.StreamHandler):
    """A handler writing to whatever ``sys.stderr`` is when a record comes (tests and tools swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_output(verbose: int = 0, quiet: bool = False, bars: bool = False) -> None:
    """Logging levels and progress bars for one command (see the module docstring)."""
    terminal = sys.stderr.isatty()
    if quiet:
        level = logging.ERROR
    elif verbose >= 2:
        level = logging.DEBUG
    else:
        level = logging.INFO if verbose or terminal else logging.WARNING
    if not distributed.context().is_main:  # under torchrun, rank 0 speaks for the run
        level, bars, quiet = max(level, logging.WARNING), False, True
    logger = logging.getLogger(__name__.split(".")[0])
    for old in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(old)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT, datefmt="%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(level)
    progress.configure(False if quiet else True if bars else None)
    _libraries_follow(verbose)


def _libraries_follow(verbose: int) -> None:
    """transformers' and huggingface_hub's own bars ("Loading weights", "Writing model shards", downloads) show
    only where ours do (``progress.wanted``), their notices (transformers' multi-line LOAD REPORT) only with -vv.
    They read the environment when first imported; the parser's modules may have imported them already, so they
    are also told directly."""
    bars = progress.wanted()
    if verbose < 2:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if not bars:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "huggingface_hub" in sys.modules and not bars:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        if verbose < 2:
            hf_logging.set_verbosity_error()
        if not bars:
            hf_logging.disable_progress_bar()


@contextlib.contextmanager
def _results_from_rank_0() -> Iterator[None]:
    """Under torchrun, the results (stdout) of rank 0 alone: the others would print the same lines again."""
    if distributed.context().is_main:
        yield
        return
    with open(os.devnull, "w", encoding="utf-8") as sink, contextlib.redirect_stdout(sink):
        yield


def _refuse(err: InputError) -> int:
    print(f"distilrank: error: {err}", file=sys.stderr)
    return 2


def _kept_work(args: argparse.Namespace) -> bool:
    """Whether a command that resumes (``--resume``) left work to resume in its output: a journal beside an output
    file, or anything in an output folder."""
    output = getattr(args, "output", None)
    if not hasattr(args, "resume") or output is None:
        return False
    output = Path(output)
    if output.is_dir():
        return any(output.iterdir())
    return any(output.parent.glob(f"{glob.escape(output.name)}*.journal"))


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except InputError as err:  # a renamed option (``flags.refuse``)
        return _refuse(err)
    setup_output(args.verbose, args.quiet, args.progress)
    try:
        with signals_raise(), _results_from_rank_0():  # SIGTERM/SIGHUP unwind like Ctrl-C: temporary files go
            return int(args.func(args) or 0)
    except DiskFull as err:  # not bad input: what the command finished is kept for the rerun
        kept = " with --resume: finished work is kept" if _kept_work(args) else ""
        return _refuse(InputError(err.message + kept, err.path))  # "... and run the command again" + kept
    except InputError as err:
        return _refuse(err)
    except KeyboardInterrupt as exc:
        kept = "; finished work is kept: the same command with --resume continues it" if hasattr(args, "resume") else ""
        print(f"distilrank: {'interrupted' if exit_code(exc) == 130 else f'terminated ({exc})'}{kept}",
              file=sys.stderr)
        return exit_code(exc)
