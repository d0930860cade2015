"""The auto-associative pattern-completion task as a Gymnasium environment."""

from __future__ import annotations

from typing import ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from eqagent.plasticity import PatternTask, pattern_episode_batch

__all__ = ["PatternCompletionEnv"]


class PatternCompletionEnv(gym.Env):
    """Memorise ``k`` random ±1 patterns within an episode, then complete a degraded one.

    ## Description
    Each episode draws ``k`` random patterns of ``n`` bits in {−1, +1}. Each is shown for ``show_steps`` steps
    followed by ``gap_steps`` zero-input steps; the whole sequence is shown ``rounds`` times. Then one of the
    patterns, with half of its bits set to 0, is shown for ``query_steps`` steps. The agent must output the
    full pattern at the last step (Miconi et al. 2018, "Differentiable plasticity").

    ## Observation Space
    ``Box(-1, 1, (n,), float32)``: the input of the current step (a pattern, zeros, or the degraded query).

    ## Action Space
    ``Box(-1, 1, (n,), float32)``: the agent's output; only its signs at the last step are scored.

    ## Rewards
    0 on every step but the last, where it is ``−(fraction of bits whose sign differs from the pattern)``
    (a zero counts as wrong).

    ## Starting State
    Fresh random patterns on every reset (``self.np_random``).

    ## Episode End
    Terminated after the last query step (``rounds·k·(show_steps + gap_steps) + query_steps`` steps; 60 by
    default). No truncation.

    Args:
        n: Bits per pattern.
        k: Patterns per episode.
        show_steps, gap_steps, rounds, query_steps: Episode layout (see :class:`eqagent.plasticity.PatternTask`).
    """

    metadata: ClassVar[dict] = {"render_modes": []}

    def __init__(
        self,
        n: int = 50,
        k: int = 3,
        show_steps: int = 6,
        gap_steps: int = 3,
        rounds: int = 2,
        query_steps: int = 6,
    ) -> None:
        if n < 2 or k < 1 or show_steps < 1 or gap_steps < 0 or rounds < 1 or query_steps < 1:
            raise ValueError(
                f"bad PatternCompletion settings: n={n}, k={k}, show_steps={show_steps}, gap_steps={gap_steps}, "
                f"rounds={rounds}, query_steps={query_steps}"
            )
        self.task = PatternTask(n, k, show_steps, gap_steps, rounds, query_steps)
        self.observation_space = spaces.Box(-1.0, 1.0, (n,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (n,), np.float32)
        self._inputs: np.ndarray | None = None
        self._target: np.ndarray | None = None
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        inputs, target = pattern_episode_batch(self.task, 1, self.np_random)
        self._inputs, self._target = inputs[:, 0], target[0]
        self._t = 0
        return self._inputs[0].copy(), {}

    def step(self, action):
        if self._inputs is None:
            raise RuntimeError("call reset() before step()")
        action = np.asarray(action, dtype=np.float32)
        if action.shape != (self.task.n,):
            raise ValueError(f"action must have shape ({self.task.n},), got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError("action contains NaN or inf")
        self._t += 1
        last = self._t >= self.task.length
        reward = 0.0
        info = {}
        if last:
            wrong = float(np.mean(np.sign(action) != self._target))
            reward = -wrong
            info = {"bit_error": wrong, "pattern": self._target.copy()}
            obs = np.zeros(self.task.n, dtype=np.float32)
        else:
            obs = self._inputs[self._t].copy()
        return obs, reward, last, False, info
