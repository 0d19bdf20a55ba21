"""Command-line flags made from dataclass fields (Tevatron's ``arguments.py`` + ``HfArgumentParser`` pattern): a
field's name, type, default and help (``field(metadata={"help": ...})``) are written once, with the dataclass.

A field ``some_name`` becomes ``--PREFIXsome-name`` (its value in ``args.PREFIXsome_name``); a ``bool`` field that
is off by default becomes a switch (``--cuda-graphs``), one that is on (or ``None``: decided later) becomes
``--no-NAME``. ``tuple[X, ...]`` fields take comma-separated values. Metadata read here, besides ``help``:

- ``choices``; ``const``: the value of the bare flag (``--compile`` alone means ``dynamic``);
- ``min`` and ``check`` (a function that normalises a value or raises ``InputError``): applied by
  ``field_values``, so that bad values are one-line errors (exit 2) like any other bad input;
- ``flag``: the flag's own name when it is not the field's (``--bootstrap-from`` for ``biencoder``), or ``False``
  for a field no command sets; ``aliases``: other names it keeps; ``items``: what a tuple holds (its parse error);
- ``formerly``: old names, refused with a hint naming the new one (``refuse``).

Nested dataclass fields (a phase's ``TrainConfig``) get no flag of their own: a command adds their flags with a
prefix (``--lm-epochs``).
"""
from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import MISSING, Field, fields, is_dataclass
from functools import cache
from pathlib import Path
from typing import Any

from ..errors import InputError, renamed
from ..train.options import flag_name

#: How a flag's help names its value, by type.
METAVARS = {int: "N", float: "X", Path: "PATH"}


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _kind(hint: Any) -> Any:
    """The type of an annotation without its ``None`` (``int | None`` is ``int``)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def flagged(cls: type) -> list[Field]:
    """The fields of ``cls`` that are flags: not nested dataclasses, not marked ``flag=False``."""
    return [f for f in fields(cls) if f.metadata.get("flag", True) is not False
            and not is_dataclass(_kind(_hints(cls)[f.name]))]


def _dest(f: Field, prefix: str) -> str:
    return flag_name(f, prefix)[2:].replace("-", "_")


def _default(f: Field, base: Any) -> Any:
    if base is not None:
        return getattr(base, f.name)
    return None if f.default is MISSING else f.default


def _shown(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _comma_separated(kind: type, items: str) -> Callable[[str], tuple]:
    def parse(text: str) -> tuple:
        try:
            values = tuple(kind(v) for v in text.split(",") if v.strip())
        except ValueError:
            values = ()
        if not values:
            raise argparse.ArgumentTypeError(f"expected comma-separated {items}, got {text!r}")
        return values

    return parse


def add_fields(parser: argparse._ActionsContainer, cls: type, prefix: str = "", *, base: Any = None,
               only: Iterable[str] | None = None, unset: Collection[str] = (), required: Collection[str] = (),
               choices: Mapping[str, Collection[Any]] | None = None) -> None:
    """A flag for each field of ``cls`` (the ``only`` ones, in field order), its default ``base``'s value (default:
    the field's). ``unset``: fields whose flag defaults to ``None`` (the command fills them in), their help still
    naming ``base``'s value; ``required``: fields the command needs (in a mutually exclusive group, the group's
    ``required`` says so). ``choices``: allowed values a field's metadata cannot hold."""
    wanted = None if only is None else set(only)
    exclusive = isinstance(parser, argparse._MutuallyExclusiveGroup)
    for f in flagged(cls):
        if wanted is not None and f.name not in wanted:
            continue
        meta, kind = f.metadata, _kind(_hints(cls)[f.name])
        default = None if f.name in required else _default(f, base)
        text = meta["help"]
        if f.name not in required and default not in (None, (), "") and not isinstance(default, bool):
            text += f" (default {_shown(default)})"
        kwargs: dict[str, Any] = {"dest": _dest(f, prefix), "help": text.replace("%", "%%")}
        names = [flag_name(f, prefix)] + [f"--{prefix}{alias}" for alias in meta.get("aliases", ())]
        if kind is bool:
            if default is False:
                kwargs.update(action="store_true", default=False)
            else:
                names = [f"--{prefix}no-{n[2 + len(prefix):]}" for n in names]
                kwargs.update(action="store_const", const=False, default=default, help=f"turn off: {kwargs['help']}")
        else:
            kwargs["default"] = None if f.name in unset else default
            if typing.get_origin(kind) is tuple:
                kwargs["type"] = _comma_separated(typing.get_args(kind)[0], meta.get("items", "values"))
                kwargs["metavar"] = "A,B,..."
            else:
                kwargs["type"] = kind
                allowed = (choices or {}).get(f.name, meta.get("choices"))
                if allowed is not None:
                    kwargs["choices"] = allowed
                else:
                    kwargs["metavar"] = METAVARS.get(kind, f.name.upper())
            if "const" in meta:
                kwargs.update(nargs="?", const=meta["const"])
            if f.name in required and not exclusive:
                kwargs["required"] = True
        parser.add_argument(*names, **kwargs)
        for old in meta.get("formerly", ()):
            refuse(parser, f"--{prefix}{old}", names[0])


def field_values(cls: type, args: argparse.Namespace, prefix: str = "", *, only: Iterable[str] | None = None
                 ) -> dict[str, Any]:
    """The values of the flags ``add_fields`` made (the same ``cls``, ``prefix`` and ``only``), by field name,
    each checked against its ``min`` and ``check``: a bad one is an ``InputError`` naming the flag."""
    wanted = None if only is None else set(only)
    values = {}
    for f in flagged(cls):
        if wanted is not None and f.name not in wanted:
            continue
        flag, value = flag_name(f, prefix), getattr(args, _dest(f, prefix))
        if value is not None and "min" in f.metadata:
            low = f.metadata["min"]
            if any(v < low for v in (value if isinstance(value, tuple) else (value,))):
                raise InputError(f"{flag} must be at least {low}")
        if value is not None and "check" in f.metadata:
            try:
                value = f.metadata["check"](value)
            except InputError as err:
                raise InputError(f"{flag}: {err.message}") from None
        values[f.name] = value
    return values


class _Renamed(argparse.Action):
    """An old flag name, refused when given: one line naming the new flag and what it means (exit 2)."""

    def __init__(self, option_strings: list[str], dest: str, new: str, meaning: str, **kwargs: Any):
        super().__init__(option_strings, argparse.SUPPRESS, nargs="?", default=argparse.SUPPRESS,
                         help=argparse.SUPPRESS)
        self.new, self.meaning = new, meaning

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        raise InputError(renamed(option_string or self.option_strings[0], self.new, self.meaning))


def refuse(parser: argparse._ActionsContainer, old: str, new: str) -> None:
    """Refuse flag ``old`` with a hint naming ``new`` (a flag of ``parser`` already added) and its help."""
    action = parser._option_string_actions[new]
    meaning = (action.help or "") % {**vars(action), "prog": getattr(parser, "prog", "")}
    parser.add_argument(old, action=_Renamed, new=new, meaning=meaning)
