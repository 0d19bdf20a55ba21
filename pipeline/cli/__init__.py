"""The ``distilrank`` command line: a thin layer of subcommands over the library API.

Each module in ``COMMAND_MODULES`` has ``register(subparsers)`` which adds its subcommands; a
subcommand's parser sets ``func(args) -> int``. Bad input (``InputError``) prints one line
``distilrank: error: FILE:LINE: message`` and exits with code 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import InputError

COMMAND_MODULES = ("first_stage", "submission", "rerank", "train", "compare")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distilrank",
        description="BM25 first stage (Pyserini) + BERT cross-encoder rerankers: a teacher and its distilled "
        "students, compared for effectiveness and speed.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except InputError as err:
        print(f"distilrank: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("distilrank: interrupted", file=sys.stderr)
        return 130
