"""Activations ρ of the energy nets, with their derivatives and the boxes their states live in.

``hard_sigmoid`` (clip to [0, 1], the default), ``hard_tanh`` (clip to [−1, 1]), ``identity``, ``sigmoid`` and
``tanh``. For the clipping activations the state of a layer is kept inside the clipping box (projected dynamics),
where ``ρ(s) = s``: the Hopfield energy is then a box-constrained quadratic, the layer-wise minimiser is
``clip(drive)``, and both relaxation forms of :mod:`eqagent.relax` reach the same equilibria.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["ACTIVATIONS", "Activation", "get_activation"]


@dataclass(frozen=True)
class Activation:
    """An activation ρ with its derivative and the box its states live in.

    Attributes:
        name: Registered name.
        low: Lower end of the state box (``-inf`` if unbounded).
        high: Upper end of the state box (``inf`` if unbounded).
        smooth: False for the clipping family (state kept in the box, ``ρ(s) = s`` inside it).
    """

    name: str
    low: float
    high: float
    smooth: bool

    @property
    def bounded(self) -> bool:
        return math.isfinite(self.low) or math.isfinite(self.high)

    def __call__(self, s: torch.Tensor) -> torch.Tensor:
        if self.name in ("hard_sigmoid", "hard_tanh"):
            return s.clamp(self.low, self.high)
        if self.name == "identity":
            return s
        if self.name == "sigmoid":
            return torch.sigmoid(s)
        if self.name == "tanh":
            return torch.tanh(s)
        raise ValueError(f"unknown activation {self.name!r}")  # pragma: no cover - guarded by get_activation

    def prime(self, s: torch.Tensor) -> torch.Tensor:
        """Derivative ρ'(s). For the clipping family it is 1 inside the closed box (states never leave it)."""
        if self.name in ("hard_sigmoid", "hard_tanh"):
            return ((s >= self.low) & (s <= self.high)).to(s.dtype)
        if self.name == "identity":
            return torch.ones_like(s)
        if self.name == "sigmoid":
            r = torch.sigmoid(s)
            return r * (1 - r)
        if self.name == "tanh":
            return 1 - torch.tanh(s) ** 2
        raise ValueError(f"unknown activation {self.name!r}")  # pragma: no cover

    def project(self, s: torch.Tensor) -> torch.Tensor:
        """Projects a state onto the activation's box (identity for smooth activations)."""
        if self.smooth or not self.bounded:
            return s
        return s.clamp(self.low, self.high)


ACTIVATIONS: dict[str, Activation] = {
    "hard_sigmoid": Activation("hard_sigmoid", 0.0, 1.0, smooth=False),
    "hard_tanh": Activation("hard_tanh", -1.0, 1.0, smooth=False),
    "identity": Activation("identity", -math.inf, math.inf, smooth=False),
    "sigmoid": Activation("sigmoid", -math.inf, math.inf, smooth=True),
    "tanh": Activation("tanh", -math.inf, math.inf, smooth=True),
}


def get_activation(name: str | Activation) -> Activation:
    """Returns the :class:`Activation` called ``name`` (raises ``ValueError`` naming the choices)."""
    if isinstance(name, Activation):
        return name
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None
