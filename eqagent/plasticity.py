"""Hebbian plastic synapses (differentiable plasticity, Miconi et al. 2018).

A plastic recurrent layer whose effective weights are ``W + α ⊙ Hebb``:

    x_t  = tanh(x_{t−1} (W + α ⊙ Hebb_{t−1}) + u_t)
    Hebb_t = (1 − η) Hebb_{t−1} + η x_{t−1} ⊗ x_t

``W`` (slow weights) and ``α`` (per-connection plasticity) are trained through time with autograd; ``η`` is
learned (or fixed); ``Hebb`` is the fast weight, reset at the start of every episode. Memory of a step is
``O(B·N²)`` (the Hebbian trace), so training through ``T`` steps costs ``O(T·B·N²)`` instead of the ``O(N⁴)`` of
the hand-derived RTRL-like gradients of the early version.

Also here: :func:`pattern_episode_batch`, batched episodes of the pattern-completion task of
``eqagent/PatternCompletion-v0`` (same generator, for fast training).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = ["PatternTask", "PlasticRNN", "bit_error", "pattern_episode_batch"]


class PlasticRNN(nn.Module):
    """A recurrent layer of ``n`` neurons with optional Hebbian plastic synapses.

    Args:
        n: Number of neurons (input and output size too: inputs are added to the neurons, outputs read from them).
        plastic: With ``False`` this is a plain tanh RNN of the same size (``α`` and ``Hebb`` absent).
        eta: Initial (or fixed) Hebbian rate η in (0, 1).
        learn_eta: Train η (through a logit parameter).
        alpha_init: Scale of the uniform initialisation of ``α``.
        w_init: Scale of the uniform initialisation of ``W``.
    """

    def __init__(
        self,
        n: int,
        plastic: bool = True,
        eta: float = 0.01,
        learn_eta: bool = True,
        alpha_init: float = 0.01,
        w_init: float = 0.01,
    ) -> None:
        super().__init__()
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if not 0 < eta < 1:
            raise ValueError(f"eta must lie in (0, 1), got {eta}")
        self.n = int(n)
        self.plastic = bool(plastic)
        self.w = nn.Parameter((torch.rand(n, n) * 2 - 1) * w_init)
        self.bias = nn.Parameter(torch.zeros(n))
        if self.plastic:
            self.alpha = nn.Parameter((torch.rand(n, n) * 2 - 1) * alpha_init)
            logit = torch.tensor(math.log(eta / (1 - eta)))
            if learn_eta:
                self.eta_logit = nn.Parameter(logit)
            else:
                self.register_buffer("eta_logit", logit)

    @property
    def eta(self) -> torch.Tensor:
        return torch.sigmoid(self.eta_logit)

    def initial_state(self, batch: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Zero activity and (for plastic nets) a zero Hebbian trace: the state at an episode's start."""
        p = self.w
        x = torch.zeros(batch, self.n, dtype=p.dtype, device=p.device)
        hebb = torch.zeros(batch, self.n, self.n, dtype=p.dtype, device=p.device) if self.plastic else None
        return x, hebb

    def step(
        self, u: torch.Tensor, x: torch.Tensor, hebb: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One time step: ``u`` ``(B, n)`` input, ``x`` ``(B, n)`` activity, ``hebb`` ``(B, n, n)``."""
        if self.plastic:
            w_eff = self.w + self.alpha * hebb  # (B, n, n)
            x_new = torch.tanh(torch.bmm(x.unsqueeze(1), w_eff).squeeze(1) + self.bias + u)
            eta = self.eta
            hebb = (1 - eta) * hebb + eta * torch.bmm(x.unsqueeze(2), x_new.unsqueeze(1))
            return x_new, hebb
        return torch.tanh(x @ self.w + self.bias + u), None

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Runs a whole episode batch from a fresh state.

        Args:
            inputs: ``(T, B, n)``.

        Returns:
            Activities ``(T, B, n)``.
        """
        if inputs.dim() != 3 or inputs.shape[-1] != self.n:
            raise ValueError(f"inputs must be (T, B, {self.n}), got {tuple(inputs.shape)}")
        if not torch.isfinite(inputs).all():
            raise ValueError("inputs contain NaN or inf")
        x, hebb = self.initial_state(inputs.shape[1])
        outs = []
        for u in inputs:
            x, hebb = self.step(u, x, hebb)
            outs.append(x)
        return torch.stack(outs)


@dataclass(frozen=True)
class PatternTask:
    """The pattern-completion episode layout.

    Attributes:
        n: Bits per pattern.
        k: Patterns per episode.
        show_steps: Steps each pattern is shown.
        gap_steps: Zero-input steps after each showing.
        rounds: Times the sequence of patterns is shown.
        query_steps: Steps the degraded query (half its bits zeroed) is shown; the answer is read at the last.
    """

    n: int = 50
    k: int = 3
    show_steps: int = 6
    gap_steps: int = 3
    rounds: int = 2
    query_steps: int = 6

    @property
    def length(self) -> int:
        return self.rounds * self.k * (self.show_steps + self.gap_steps) + self.query_steps


def pattern_episode_batch(
    task: PatternTask, batch: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draws ``batch`` episodes: inputs ``(T, B, n)`` in {−1, 0, 1} and targets ``(B, n)`` in {−1, 1}."""
    pats = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=(batch, task.k, task.n))
    inputs = np.zeros((task.length, batch, task.n), dtype=np.float32)
    t = 0
    for _ in range(task.rounds):
        for j in range(task.k):
            inputs[t : t + task.show_steps] = pats[:, j]
            t += task.show_steps + task.gap_steps
    which = rng.integers(0, task.k, size=batch)
    target = pats[np.arange(batch), which]
    query = target.copy()
    for b in range(batch):
        query[b, rng.choice(task.n, size=task.n // 2, replace=False)] = 0.0
    inputs[t:] = query
    return inputs, target


def bit_error(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Fraction of bits whose sign differs from the target's (a zero output counts as wrong)."""
    return (torch.sign(output) != target).float().mean()
