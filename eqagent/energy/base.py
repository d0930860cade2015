"""The contract every energy family fulfils so that :func:`eqagent.relax.settle` can relax it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:  # costs import the activations of this package: no runtime import cycle
    from eqagent.costs import Cost

__all__ = ["Dynamics", "LayeredEnergy", "row_signs"]

MODES = ("fixed_point", "gradient")


_ROW_SIGNS: dict[tuple, torch.Tensor] = {}


def row_signs(b: int, value: float, like: torch.Tensor) -> torch.Tensor:
    """The constant column ``[+value] * b + [−value] * b`` ``(2b, 1)`` with ``like``'s dtype and device, made once
    per (``b``, ``value``, dtype, device) and shared: the per-row strengths (or rule weights) of two stacked
    phases. Callers must not modify it."""
    key = (b, value, like.dtype, like.device)
    out = _ROW_SIGNS.get(key)
    if out is None:
        if len(_ROW_SIGNS) >= 256:
            _ROW_SIGNS.clear()
        out = _ROW_SIGNS[key] = torch.cat([like.new_full((b, 1), value), like.new_full((b, 1), -value)])
    return out


@dataclass(frozen=True)
class Dynamics:
    """What one relaxation step needs besides the states: which layers move and under which forces.

    Attributes:
        free: Indices of the layers that relax (the others are clamped).
        mode: ``"fixed_point"`` or ``"gradient"``.
        beta: Nudging strength (0: the free phase; negative for the −β phase), or a tensor of one strength per
            sample (broadcast against the output, e.g. ``(B, 1)``: both phases of symmetric nudging in one batch).
        cost: Cost acting on the last layer (needed when ``beta != 0``).
        target: Its checked target (needed when ``beta != 0``).
        eps: Step size of the gradient dynamics.
    """

    free: tuple[int, ...]
    mode: str = "fixed_point"
    beta: float | torch.Tensor = 0.0
    cost: Cost | None = None
    target: torch.Tensor | None = None
    eps: float = 0.5

    @property
    def nudged(self) -> bool:
        return torch.is_tensor(self.beta) or self.beta != 0.0

    def nudge(self, s_out: torch.Tensor) -> torch.Tensor:
        """``β ∂C/∂s_L`` at the output state (only for a nudged relaxation)."""
        return self.beta * self.cost.grad_state(s_out, self.target)


class LayeredEnergy(nn.Module):
    """Abstract base of the energy families that :func:`eqagent.relax.settle` relaxes.

    Contract (states are lists with one tensor per layer, ``([M,] B, n_l)``-shaped for dense layers):

    * ``sizes`` / ``num_layers`` — layer sizes and their number, input included.
    * ``check_layer(l, value, what)`` — validate/convert a clamp or warm-start value for layer ``l``; raise
      ``ValueError`` naming the problem (shape, NaN/inf).
    * ``feedforward(x)`` — the states of the family's one bottom-up computation from input ``x``: the free
      equilibrium itself for the prediction-error family, a warm start for the Hopfield family.
    * ``energy(states)`` — per-sample energy ``E(s)``.
    * ``project(l, s)`` — project a state of layer ``l`` onto its admissible set.
    * ``check_mode(mode, free)`` — raise ``ValueError`` if ``mode`` is not valid for these free layers.
    * ``relax_context(states, clamped)`` — precompute what stays constant while the clamped layers are fixed.
    * ``relax_step(states, dyn, ctx)`` — one step of the dynamics of ``F = E + βC`` described by a
      :class:`Dynamics`; returns the new states (clamped ones as given, never mutated in place).
    * ``energy_param_grad_diff(a, b)`` — ``∂E/∂θ(a) − ∂E/∂θ(b)`` batch-averaged, closed form (the local rule).
    """

    sizes: list[int]

    @property
    def num_layers(self) -> int:
        """Number of layers ``L + 1`` (input included)."""
        return len(self.sizes)

    def check_layer(self, l: int, value: torch.Tensor, what: str = "state") -> torch.Tensor:
        raise NotImplementedError

    def feedforward(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def energy(self, states: Sequence[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def project(self, l: int, s: torch.Tensor) -> torch.Tensor:
        return s

    def check_mode(self, mode: str, free: Sequence[int]) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown relaxation mode {mode!r}; choose one of {MODES}")

    def relax_context(self, states: Sequence[torch.Tensor], clamped: set[int]) -> dict:
        return {}

    def relax_step(self, states: Sequence[torch.Tensor], dyn: Dynamics, ctx: dict) -> list[torch.Tensor]:
        raise NotImplementedError

    def energy_param_grad_diff(
        self, a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]
    ) -> dict[nn.Parameter, torch.Tensor]:
        raise NotImplementedError
