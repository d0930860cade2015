"""Dataclass configs as command-line arguments (CleanRL style: one documented field per option).

``add_dataclass_args(parser, Config)`` adds ``--field-name`` for every field (bool fields get
``--flag/--no-flag``; list fields take several values and may be repeated; a field's ``metadata["aliases"]`` adds
other spellings, e.g. rl-zoo's ``--eval-freq``); ``dataclass_from_args(Config, namespace)`` builds the config
back. Field docs come from the ``Attributes:`` section of the dataclass docstring.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from typing import Any, TypeVar

__all__ = ["add_dataclass_args", "dataclass_from_args"]

T = TypeVar("T")


def _field_docs(cls: type) -> dict[str, str]:
    doc = cls.__doc__ or ""
    docs: dict[str, str] = {}
    m = re.search(r"Attributes:\n(.*)", doc, re.S)
    if not m:
        return docs
    current = None
    for line in m.group(1).splitlines():
        fm = re.match(r"\s{4,8}(\w+):\s*(.*)", line)
        if fm and len(line) - len(line.lstrip()) <= 8:
            current = fm.group(1)
            docs[current] = fm.group(2).strip()
        elif current and line.strip():
            docs[current] += " " + line.strip()
    return docs


def _parse_type(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _parse_type(args[0])
    if origin in (list, tuple):
        return ("list", typing.get_args(tp)[0] if typing.get_args(tp) else str)
    return tp


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type) -> None:
    """Adds one option per field of the dataclass ``cls`` to ``parser``."""
    hints = typing.get_type_hints(cls)
    docs = _field_docs(cls)
    for f in dataclasses.fields(cls):
        names = ["--" + f.name.replace("_", "-"), *f.metadata.get("aliases", ())]
        tp = _parse_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_text = f"{docs.get(f.name, '')} (default: {default})"
        if tp is bool:
            parser.add_argument(
                *names, dest=f.name, action=argparse.BooleanOptionalAction, default=default, help=help_text
            )
        elif isinstance(tp, tuple) and tp[0] == "list":  # None: not given (the field's default applies)
            parser.add_argument(*names, dest=f.name, type=tp[1], nargs="+", action="extend", default=None,
                                help=help_text)  # fmt: skip
        else:
            parser.add_argument(*names, dest=f.name, type=tp, default=default, help=help_text)


def dataclass_from_args(cls: type[T], ns: argparse.Namespace) -> T:
    """Builds ``cls`` from the parsed options (validation happens in the dataclass)."""
    kwargs = {
        f.name: getattr(ns, f.name)
        for f in dataclasses.fields(cls)
        if hasattr(ns, f.name) and getattr(ns, f.name) is not None
    }
    for f in dataclasses.fields(cls):
        if isinstance(kwargs.get(f.name), list):
            kwargs[f.name] = tuple(kwargs[f.name])
    return cls(**kwargs)  # type: ignore[call-arg]
