"""Validation shared by the library's dataclass configs."""

from __future__ import annotations

import math
from dataclasses import fields, is_dataclass

__all__ = ["check_finite_fields"]


def check_finite_fields(cfg) -> None:
    """Raises ``ValueError`` naming the first number field of a dataclass config that is not finite.

    Every int/float field is checked (``math.isfinite``), and tuples of numbers element by element; nested
    dataclass configs check themselves in their own ``__post_init__``.
    """
    if not is_dataclass(cfg):
        raise TypeError(f"expected a dataclass config, got {type(cfg).__name__}")
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        items = value if isinstance(value, (tuple, list)) else (value,)
        for v in items:
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            if not math.isfinite(v):
                raise ValueError(f"{type(cfg).__name__}.{f.name} must be a finite number, got {value}")
