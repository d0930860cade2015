"""Gymnasium environments and wrappers of eqagent (installed as ``eqagent.envs``).

Importing this package registers the environments under ``eqagent/...-v0`` ids with string entry points, so
``gymnasium.make("eqagent/PatternCompletion-v0")`` works after ``import eqagent.envs``.
"""

import gymnasium as gym
from eqagent.envs.pattern_completion import PatternCompletionEnv

__all__ = ["ENV_IDS", "PatternCompletionEnv"]

ENV_IDS = ("eqagent/PatternCompletion-v0",)

if "eqagent/PatternCompletion-v0" not in gym.registry:
    gym.register(
        id="eqagent/PatternCompletion-v0", entry_point="eqagent.envs.pattern_completion:PatternCompletionEnv"
    )
