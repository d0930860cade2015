"""Hebbian plastic synapses (differentiable plasticity, Miconi et al. 2018).

A plastic recurrent layer whose effective weights are ``W + α ⊙ Hebb``:

    x_t  = tanh(x_{t−1} (W + α ⊙ Hebb_{t−1}) + u_t)
    Hebb_t = (1 − η) Hebb_{t−1} + η x_{t−1} ⊗ x_t

``W`` (slow weights) and ``α`` (plasticity coefficients) are trained through time with autograd; ``η`` is
learned (or fixed); ``Hebb`` is the fast weight, reset at the start of every episode. Two forms of ``α``:

* ``alpha="connection"`` (Miconi's): one coefficient per connection, and ``Hebb`` kept as a ``(B, N, N)`` tensor.
  Memory of a step is ``O(B·N²)``, so training through ``T`` steps costs ``O(T·B·N²)`` (instead of the ``O(N⁴)``
  of the hand-derived RTRL-like gradients of the early version) — 1.15 GB and seconds per episode at
  ``N = 1000`` (``eqagent bench plasticity``'s ``autograd_bytes``, 106 steps).
* ``alpha="neuron"``: ``α_ij = p_i q_j`` (a plasticity gain per presynaptic and per postsynaptic neuron). The trace
  is then never built: since ``Hebb_{t−1} = Σ_s η(1−η)^{t−1−s} x_{s−1} ⊗ x_s``,

      x_{t−1} (α ⊙ Hebb_{t−1}) = q ⊙ Σ_s η(1−η)^{t−1−s} ((p ⊙ x_{t−1}) · x_{s−1}) x_s,

  so the state is the episode's past activities, ``O(B·t·N)``, and a step costs ``O(B·t·N)`` besides the
  ``N × N`` product with ``W``. This is the same rule and the same ``Hebb`` (:meth:`PlasticRNN.hebb` builds it),
  with fewer plasticity parameters; it is what makes ``N = 1000`` trainable on a CPU.

Also here: :func:`pattern_episode_batch`, batched episodes of the pattern-completion task of
``eqagent/PatternCompletion-v0`` (same generator, for fast training).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = ["PatternTask", "PlasticRNN", "Trace", "bit_error", "pattern_episode_batch"]

Trace = torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None
"""The Hebbian state of :class:`PlasticRNN`: ``(B, n, n)``, a (pre, post) history pair, or ``None`` (plain RNN)."""


class PlasticRNN(nn.Module):
    """A recurrent layer of ``n`` neurons with optional Hebbian plastic synapses.

    Args:
        n: Number of neurons (input and output size too: inputs are added to the neurons, outputs read from them).
        plastic: With ``False`` this is a plain tanh RNN of the same size (``α`` and ``Hebb`` absent).
        eta: Initial (or fixed) Hebbian rate η in (0, 1).
        learn_eta: Train η (through a logit parameter).
        alpha_init: Scale of the initialisation of ``α`` (``"connection"``: uniform in ±alpha_init;
            ``"neuron"``: ``p``, ``q`` uniform in ±√alpha_init, so ``|α_ij|`` ≤ alpha_init). Either way ``α``
            starts with mean zero: an untrained net does not recall; the sign and size of plasticity are learned.
        w_init: Scale of the uniform initialisation of ``W``.
        alpha: ``"connection"`` (one ``α`` per synapse, explicit ``(B, N, N)`` trace) or ``"neuron"``
            (``α_ij = p_i q_j``, trace kept implicitly as the past activities; see the module docstring).
    """

    def __init__(
        self,
        n: int,
        plastic: bool = True,
        eta: float = 0.01,
        learn_eta: bool = True,
        alpha_init: float = 0.01,
        w_init: float = 0.01,
        alpha: str = "connection",
    ) -> None:
        super().__init__()
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if not 0 < eta < 1:
            raise ValueError(f"eta must lie in (0, 1), got {eta}")
        if alpha not in ("connection", "neuron"):
            raise ValueError(f"alpha must be 'connection' or 'neuron', got {alpha!r}")
        if not (math.isfinite(alpha_init) and alpha_init >= 0):
            raise ValueError(f"alpha_init must be finite and >= 0, got {alpha_init}")
        self.n = int(n)
        self.plastic = bool(plastic)
        self.alpha_mode = alpha
        self.w = nn.Parameter((torch.rand(n, n) * 2 - 1) * w_init)
        self.bias = nn.Parameter(torch.zeros(n))
        if self.plastic:
            if alpha == "connection":
                self.alpha = nn.Parameter((torch.rand(n, n) * 2 - 1) * alpha_init)
            else:
                scale = math.sqrt(alpha_init)
                self.alpha_pre = nn.Parameter((torch.rand(n) * 2 - 1) * scale)  # p
                self.alpha_post = nn.Parameter((torch.rand(n) * 2 - 1) * scale)  # q
            logit = torch.tensor(math.log(eta / (1 - eta)))
            if learn_eta:
                self.eta_logit = nn.Parameter(logit)
            else:
                self.register_buffer("eta_logit", logit)

    @property
    def eta(self) -> torch.Tensor:
        return torch.sigmoid(self.eta_logit)

    @property
    def alpha_matrix(self) -> torch.Tensor:
        """``α`` as an ``(n, n)`` matrix (``p ⊗ q`` for ``alpha="neuron"``)."""
        if not self.plastic:
            raise ValueError("a non-plastic net has no alpha")
        if self.alpha_mode == "connection":
            return self.alpha
        return torch.outer(self.alpha_pre, self.alpha_post)

    def initial_state(self, batch: int) -> tuple[torch.Tensor, Trace]:
        """Zero activity and (for plastic nets) an empty Hebbian trace: the state at an episode's start.

        The trace is a ``(B, n, n)`` zero tensor for ``alpha="connection"`` and a pair of empty ``(B, 0, n)``
        histories (presynaptic, postsynaptic activities) for ``alpha="neuron"``.
        """
        p = self.w
        x = torch.zeros(batch, self.n, dtype=p.dtype, device=p.device)
        if not self.plastic:
            return x, None
        if self.alpha_mode == "connection":
            return x, torch.zeros(batch, self.n, self.n, dtype=p.dtype, device=p.device)
        empty = torch.zeros(batch, 0, self.n, dtype=p.dtype, device=p.device)
        return x, (empty, empty)

    def hebb(self, trace: Trace) -> torch.Tensor:
        """The Hebbian trace as a ``(B, n, n)`` tensor, whichever form the state keeps it in."""
        if trace is None:
            raise ValueError("a non-plastic net has no Hebbian trace")
        if isinstance(trace, torch.Tensor):
            return trace
        pre, post = trace  # (B, S, n) each
        coef = self._decay(pre.shape[1])  # (S,)
        return torch.einsum("s,bsi,bsj->bij", coef, pre, post)

    def _decay(self, s: int) -> torch.Tensor:
        """``η(1−η)^{S−1−m}`` for m = 0…S−1: the weight of the m-th stored pair in today's trace."""
        eta = self.eta
        ages = torch.arange(s - 1, -1, -1, dtype=eta.dtype, device=eta.device)
        return eta * (1 - eta) ** ages

    def step(self, u: torch.Tensor, x: torch.Tensor, hebb: Trace) -> tuple[torch.Tensor, Trace]:
        """One time step: ``u`` ``(B, n)`` input, ``x`` ``(B, n)`` activity, ``hebb`` the trace (see
        :meth:`initial_state`)."""
        if not self.plastic:
            return torch.tanh(x @ self.w + self.bias + u), None
        eta = self.eta
        if self.alpha_mode == "connection":
            w_eff = self.w + self.alpha * hebb  # (B, n, n)
            x_new = torch.tanh(torch.bmm(x.unsqueeze(1), w_eff).squeeze(1) + self.bias + u)
            hebb = (1 - eta) * hebb + eta * torch.bmm(x.unsqueeze(2), x_new.unsqueeze(1))
            return x_new, hebb
        pre, post = hebb  # (B, S, n) each
        a = x @ self.w + self.bias + u  # (B, n)
        if pre.shape[1]:
            dots = torch.bmm(pre, (x * self.alpha_pre).unsqueeze(2)).squeeze(2)  # (B, S)
            recall = torch.bmm((dots * self._decay(pre.shape[1])).unsqueeze(1), post).squeeze(1)  # (B, n)
            a = a + self.alpha_post * recall
        x_new = torch.tanh(a)
        return x_new, (torch.cat([pre, x.unsqueeze(1)], 1), torch.cat([post, x_new.unsqueeze(1)], 1))

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
