"""A learned state value, trained by EP with TD(0) targets: the planner's look past its horizon.

A planner that sums ``H`` imagined steps cannot see slow failures beyond ``H`` (a cart drifting off the track).
As in TD-MPC, a terminal value ``V(ŝ_H)`` closes the sum. ``V`` is an ensemble MLP prediction-error energy (the
same engine as the world model) trained with the local EP rule on replayed real transitions:

    target = (1 − γ)·r/κ + γ·(1 − terminated)·u⁻(s')        u ≈ (1 − γ)·V/κ

where ``u⁻`` is a slowly tracking copy (Polyak ``tau``) and ``κ = √(μ_r² + σ_r²)`` the root mean square of the
rewards seen (from the reward normaliser; a constant reward such as CartPole's has ``σ_r = 0``): the network
learns a value in units of ``κ/(1 − γ)``, of order one for any reward scale. Truncated episodes
bootstrap (only ``terminated`` stops the sum). The value is that of the agent's own behaviour (the planner).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from eqagent.adam import FusedAdam
from eqagent.costs import MSECost
from eqagent.energy import EnsembleMLPEnergy
from eqagent.energy.prediction_error import propagate
from eqagent.ep import EPConfig, ep_gradients
from eqagent.validation import check_finite_fields

__all__ = ["EPValueFunction", "ValueConfig"]


@dataclass
class ValueConfig:
    """Settings of :class:`EPValueFunction`.

    Attributes:
        hidden: Hidden layer sizes.
        members: Ensemble members (each sees its own bootstrapped batch; the value is their mean). Two members
            in one batched EP step learn from as many replayed transitions as two steps of one network, at about
            60% of the cost (the step's cost is per operation, not per member, at these sizes).
        pessimism: ``V = mean − pessimism · std`` over the members: lower where they disagree, i.e. where the
            value has little data (0: the mean; needs ``members`` > 1 to act).
        discount: γ of the value (use the planner's).
        lr: Adam learning rate.
        beta: EP nudging strength.
        settle_steps: EP nudged relaxation steps.
        batch_size: Replayed transitions per update and member.
        tau: Polyak rate of the target copy.
        recent: Sample the replay's newest ``recent`` transitions only (0: all of it). TD(0) on old transitions
            learns the value of old behaviour: a start state from which an early, poor policy fell fast keeps a
            low value long after the agent learned to balance from it.
        terminal_fraction: Share of each batch drawn from the terminal transitions of that window (when there
            are any): terminations are rare once the agent is good, and what they teach (which states end an
            episode) is what the planner needs from the value.
        seed: Initialisation and sampling seed.
    """

    hidden: tuple[int, ...] = (64, 64)
    members: int = 2
    pessimism: float = 0.0
    discount: float = 0.99
    lr: float = 1e-3
    beta: float = 0.01
    settle_steps: int = 1
    batch_size: int = 64
    tau: float = 0.05
    recent: int = 0
    terminal_fraction: float = 0.125
    seed: int = 0

    def __post_init__(self) -> None:
        check_finite_fields(self)
        self.hidden = tuple(int(n) for n in self.hidden)
        if any(n < 1 for n in self.hidden) or self.settle_steps < 1:
            raise ValueError(
                f"hidden sizes and settle_steps must be >= 1, got {self.hidden}, {self.settle_steps}"
            )
        if not 0 < self.discount < 1:
            raise ValueError(f"value discount must lie in (0, 1), got {self.discount}")
        if not 0 < self.tau <= 1 or not self.lr > 0 or not self.beta > 0:
            raise ValueError("tau must lie in (0, 1], lr and beta must be > 0")
        if self.recent < 0 or not 0 <= self.terminal_fraction < 1:
            raise ValueError(
                f"recent must be >= 0 and terminal_fraction in [0, 1), got {self.recent}, {self.terminal_fraction}"
            )
        if self.pessimism < 0:
            raise ValueError(f"pessimism must be >= 0, got {self.pessimism}")
        if self.members < 1 or self.batch_size < 1 or len(self.hidden) < 1:
            raise ValueError("members and batch_size must be >= 1 and hidden must list a layer")


class EPValueFunction(nn.Module):
    """``V(s)`` of a world model's env, learned by EP from its replay (see the module docstring).

    Args:
        world_model: An :class:`eqagent.world_model.EPWorldModel`: its replay, observation and reward normalisers
            are shared (not copied).
        config: :class:`ValueConfig`.
    """

    def __init__(self, world_model, config: ValueConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or ValueConfig()
        self.wm = [world_model]  # a list: not registered as a submodule (saved by its owner)
        gen = torch.Generator().manual_seed(cfg.seed + 7919)
        d = world_model.obs_dim
        self.energy = EnsembleMLPEnergy([d, *cfg.hidden, 1], cfg.members, "tanh", generator=gen)
        self.energy.to(world_model.device)
        self.target = copy.deepcopy(self.energy).requires_grad_(False)
        self.cost = MSECost()
        self.optimizer = FusedAdam(self.energy.parameters(), lr=cfg.lr)
        self._params, self._target_params = list(self.energy.parameters()), list(self.target.parameters())
        # (replay key, indices of its terminal transitions)
        self._terminals: tuple[tuple, np.ndarray] | None = None
        self.ep = EPConfig(beta=cfg.beta, symmetric=True, free_steps=0, nudged_steps=cfg.settle_steps)
        self.rng = np.random.default_rng(cfg.seed + 7919)
        self.updates = 0

    def _input(self, obs: torch.Tensor) -> torch.Tensor:
        return self.wm[0].obs_norm.normalize(obs).clamp(-10, 10)

    def _kappa(self) -> float:
        """Root mean square of the rewards seen (at least 1e-3); computed once per state of the reward
        statistics."""
        rn = self.wm[0].reward_norm
        cached = self.__dict__.get("_kappa_cache")
        if cached is None or cached[0] != rn.version:
            var = float((rn.m2 / rn.count.clamp_min(1.0)).item())
            cached = self.__dict__["_kappa_cache"] = (
                rn.version,
                max(1e-3, (float(rn.mean.item()) ** 2 + var) ** 0.5),
            )
        return cached[1]

    def _scale(self) -> float:
        """``κ / (1 − γ)``: network units → reward units."""
        return self._kappa() / (1 - self.config.discount)

    @torch.no_grad()
    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """``V`` in reward units for observations ``(..., d)`` → ``(...)`` (the members' mean, less ``pessimism`` times
        their spread)."""
        lead = obs.shape[:-1]
        x = self._input(obs.reshape(-1, obs.shape[-1]))  # (B, d)
        v = self.energy(x)[..., 0]  # (M, B): the free phase = the (checked) forward pass
        if self.config.pessimism and v.shape[0] > 1:
            out = v.mean(0) - self.config.pessimism * v.std(0, unbiased=False)
        else:
            out = v.mean(0)
        return out.reshape(lead) * self._scale()

    def update(self) -> float:
        """One EP step on a replayed minibatch per member with TD(0) targets; returns the mean squared TD error."""
        cfg, wm = self.config, self.wm[0]
        n = wm.replay.size
        if n == 0:
            return float("nan")
        window = wm.replay.newest(cfg.recent) if 0 < cfg.recent < n else None  # None: the whole replay
        size = n if window is None else len(window)
        b = min(cfg.batch_size, size)
        idx = self.rng.integers(0, size, size=(cfg.members, b))
        idx = idx if window is None else window[idx]
        k = round(cfg.terminal_fraction * b)
        if k:
            terminals = self._terminal_indices(window)
            if len(terminals):
                idx[:, :k] = terminals[self.rng.integers(0, len(terminals), size=(cfg.members, k))]
        o, _, no, r, t = (torch.from_numpy(v).to(wm.device) for v in wm.replay.sample(idx))
        with torch.no_grad():
            x = self._input(torch.stack([o, no]))  # (2, M, B, d): both ends normalised in one pass
            # the target copy's forward pass on replayed (finite) observations
            boot = propagate(x[1], self.target.layers(), self.target._act_value)[..., 0]  # (M, B)
            y = ((1 - cfg.discount) * r / self._kappa() + cfg.discount * (1 - t) * boot)[..., None]
        step = ep_gradients(self.energy, self.cost, x[0], y, self.ep)
        self.optimizer.step([step.grads[p] for p in self._params])
        with torch.no_grad():
            torch._foreach_lerp_(self._target_params, self._params, cfg.tau)
        self.updates += 1
        return float(step.loss)

    def _terminal_indices(self, window: np.ndarray | None) -> np.ndarray:
        """Replay indices of the terminal transitions (of ``window``, or of the whole replay), found once per
        replay state: the replay changes once per env step, the value updates several times."""
        wm = self.wm[0]
        replay = wm.replay
        key = (wm.observed, replay.pos, replay.size, None if window is None else len(window))
        if self._terminals is None or self._terminals[0] != key:
            terms = replay.term
            found = np.flatnonzero(terms[: replay.size]) if window is None else window[terms[window] > 0]
            self._terminals = (key, found)
        return self._terminals[1]
