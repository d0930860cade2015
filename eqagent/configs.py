"""Nested dataclass configs as data: overrides by path, conversion to and from plain dicts (JSON).

A config is a dataclass whose fields are numbers, strings, bools, tuples of numbers or other config dataclasses
(e.g. ``EPAgentConfig.planner: PlannerConfig``). :func:`apply_overrides` returns a new config with some fields
replaced, addressed by nested dicts (``{"planner": {"horizon": 25}}``) or dotted paths (``{"planner.horizon": 25}``);
each value is checked against the field's type, and the dataclasses' own ``__post_init__`` validates the ranges.
Nothing is evaluated or imported: a config read from a file is data.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

__all__ = ["apply_overrides", "config_from_dict", "config_to_dict", "parse_assignment"]

T = TypeVar("T")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(owner: str, name: str, tp: Any, value: Any) -> Any:
    """``value`` converted to the field type ``tp`` (``ValueError`` naming ``owner.name`` otherwise)."""
    where = f"{owner}.{name}"
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return config_from_dict(tp, value, where)
        raise ValueError(f"{where} must be a {tp.__name__} or a dict of its fields, got {value!r}")
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None and len(args) < len(typing.get_args(tp)):
            return None
        return _coerce(owner, name, args[0], value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where} must be a list of numbers, got {value!r}")
        inner = typing.get_args(tp)[0] if typing.get_args(tp) else Any
        return tuple(_coerce(owner, name, inner, v) for v in value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ValueError(f"{where} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{where} must be a string, got {value!r}")
        return value
    return value


def config_from_dict(cls: type[T], data: Mapping[str, Any], where: str | None = None) -> T:
    """Builds ``cls`` from a plain dict (unknown keys are an error; missing keys take the defaults)."""
    where = where or cls.__name__
    if not isinstance(data, Mapping):
        raise ValueError(f"{where} must be a dict of fields, got {type(data).__name__}")
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown field(s) {unknown} of {where}; known: {sorted(names)}")
    kwargs = {k: _coerce(where, k, hints[k], v) for k, v in data.items()}
    return cls(**kwargs)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A config as a JSON-ready nested dict (tuples become lists)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        return v

    return plain(cfg)


def _nest(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted keys become nested dicts: ``{"a.b": 1}`` → ``{"a": {"b": 1}}``."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"config keys must be non-empty strings, got {key!r}")
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ValueError(f"config key {key!r} conflicts with a value given for {p!r}")
            node = child
        leaf = parts[-1]
        if isinstance(node.get(leaf), dict) and isinstance(value, Mapping):
            node[leaf].update(value)
        else:
            node[leaf] = dict(value) if isinstance(value, Mapping) else value
    return out


def apply_overrides(cfg: T, overrides: Mapping[str, Any]) -> T:
    """A copy of ``cfg`` with ``overrides`` (nested dicts and/or dotted keys) applied and validated.

    A dict for a nested config merges into it; a config instance replaces it.
    """
    nested = _nest(overrides)
    hints = _hints(type(cfg))
    names = {f.name for f in dataclasses.fields(cfg)}
    changes: dict[str, Any] = {}
    for key, value in nested.items():
        if key not in names:
            raise ValueError(f"unknown field {key!r} of {type(cfg).__name__}; known: {sorted(names)}")
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current) and isinstance(value, Mapping):
            changes[key] = apply_overrides(current, value)
        else:
            changes[key] = _coerce(type(cfg).__name__, key, hints[key], value)
    return dataclasses.replace(cfg, **changes)


def parse_assignment(text: str) -> tuple[str, Any]:
    """``"planner.horizon=25"`` → ``("planner.horizon", 25)``: the value is read as JSON when it parses
    (numbers, ``true``/``false``, lists), else kept as a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"expected FIELD=VALUE (e.g. planner.horizon=25), got {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value
