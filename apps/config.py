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


def _add_field(parser: argparse.ArgumentParser, tp: Any, names: list[str], dest: str, default: Any,
               doc: str) -> None:  # fmt: skip
    help_text = f"{doc} (default: {default})".replace("%", "%%")
    if tp is bool:
        parser.add_argument(
            *names, dest=dest, action=argparse.BooleanOptionalAction, default=default, help=help_text
        )
    elif isinstance(tp, tuple) and tp[0] == "list":  # None: not given (the field's default applies)
        parser.add_argument(
            *names, dest=dest, type=tp[1], nargs="+", action="extend", default=None, help=help_text
        )
    else:
        parser.add_argument(*names, dest=dest, type=tp, default=default, help=help_text)


def _default(f: dataclasses.Field) -> Any:
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type) -> None:
    """Adds one option per field of the dataclass ``cls`` to ``parser``.

    A field that is itself a dataclass config (e.g. ``ReplayBenchConfig.learner: OnlineConfig``) contributes its
    own fields as options (``--code-rank`` sets ``learner.code_rank``), except those the outer config already
    names (the outer value is passed down by the application).
    """
    hints = typing.get_type_hints(cls)
    docs = _field_docs(cls)
    own = {f.name for f in dataclasses.fields(cls)}
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            sub_cls, sub_hints, sub_docs = (
                hints[f.name],
                typing.get_type_hints(hints[f.name]),
                _field_docs(hints[f.name]),
            )
            for sf in dataclasses.fields(sub_cls):
                if sf.name in own or dataclasses.is_dataclass(sub_hints[sf.name]):
                    continue
                names = ["--" + sf.name.replace("_", "-")]
                doc = f"{f.name}.{sf.name}: {sub_docs.get(sf.name, '')}"
                _add_field(parser, _parse_type(sub_hints[sf.name]), names, f"{f.name}.{sf.name}", _default(sf),
                           doc)  # fmt: skip
            continue
        names = ["--" + f.name.replace("_", "-"), *f.metadata.get("aliases", ())]
        _add_field(parser, _parse_type(hints[f.name]), names, f.name, _default(f), docs.get(f.name, ""))


def dataclass_from_args(cls: type[T], ns: argparse.Namespace) -> T:
    """Builds ``cls`` from the parsed options (validation happens in the dataclass)."""
    hints = typing.get_type_hints(cls)
    values = vars(ns)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            prefix = f.name + "."
            sub = {k[len(prefix) :]: v for k, v in values.items() if k.startswith(prefix) and v is not None}
            sub = {k: tuple(v) if isinstance(v, list) else v for k, v in sub.items()}
            kwargs[f.name] = hints[f.name](**sub)
        elif values.get(f.name) is not None:
            v = values[f.name]
            kwargs[f.name] = tuple(v) if isinstance(v, list) else v
    return cls(**kwargs)  # type: ignore[call-arg]
