"""A tiny bundled env for fast learnability tests."""

from __future__ import annotations

from typing import ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

__all__ = ["LineWorldEnv"]


class LineWorldEnv(gym.Env):
    """Move a point on a line back to the origin.

    ## Description
    The state is a position ``x``; each action moves it by ``±0.1`` (Discrete) or ``0.1·a`` (Box, ``a ∈ [−1, 1]``).

    ## Observation Space
    ``Box(-2, 2, (1,), float32)``: the position.

    ## Action Space
    ``Discrete(2)`` (0: left, 1: right) or, with ``continuous=True``, ``Box(-1, 1, (1,), float32)``.

    ## Rewards
    ``1 − |x|`` after the move.

    ## Starting State
    ``x ~ U(−1, 1)`` from ``self.np_random``.

    ## Episode End
    Terminated when ``|x| > 1.5``; truncated after ``max_steps`` (30) steps.
    """

    metadata: ClassVar[dict] = {"render_modes": []}

    def __init__(self, continuous: bool = False, max_steps: int = 30) -> None:
        self.continuous = continuous
        self.max_steps = int(max_steps)
        self.observation_space = spaces.Box(-2.0, 2.0, (1,), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32) if continuous else spaces.Discrete(2)
        self.x = 0.0
        self.t = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.x = float(self.np_random.uniform(-1, 1))
        self.t = 0
        return np.array([self.x], np.float32), {}

    def step(self, action):
        if self.continuous:
            a = float(np.clip(np.asarray(action, dtype=np.float32).reshape(-1)[0], -1, 1))
        else:
            if not self.action_space.contains(int(action)):
                raise ValueError(f"action must be 0 or 1, got {action}")
            a = 1.0 if int(action) == 1 else -1.0
        self.x = float(np.clip(self.x + 0.1 * a, -2, 2))
        self.t += 1
        terminated = abs(self.x) > 1.5
        truncated = self.t >= self.max_steps
        return np.array([self.x], np.float32), 1.0 - abs(self.x), terminated, truncated, {}
