"""Gymnasium environments and wrappers of eqagent (installed as ``eqagent.envs``).

Importing this package registers the environments under ``eqagent/...-v0`` ids with string entry points, so
``gymnasium.make("eqagent/PatternCompletion-v0")`` works after ``import eqagent.envs``.
"""

import gymnasium as gym
from eqagent.envs.mnist import MNISTClassifyEnv
from eqagent.envs.nonstationary import PhysicsShiftWrapper, make_cartpole_shift, make_pendulum_shift
from eqagent.envs.pattern_completion import PatternCompletionEnv
from eqagent.envs.toy import LineWorldEnv

__all__ = [
    "ENV_IDS",
    "LineWorldEnv",
    "MNISTClassifyEnv",
    "PatternCompletionEnv",
    "PhysicsShiftWrapper",
    "make_cartpole_shift",
    "make_pendulum_shift",
]

_ENTRY_POINTS = {
    "eqagent/PatternCompletion-v0": "eqagent.envs.pattern_completion:PatternCompletionEnv",
    "eqagent/CartPoleShift-v0": "eqagent.envs.nonstationary:make_cartpole_shift",
    "eqagent/PendulumShift-v0": "eqagent.envs.nonstationary:make_pendulum_shift",
    "eqagent/LineWorld-v0": "eqagent.envs.toy:LineWorldEnv",
    "eqagent/MNISTClassify-v0": "eqagent.envs.mnist:MNISTClassifyEnv",
}
ENV_IDS = tuple(_ENTRY_POINTS)

for _id, _entry in _ENTRY_POINTS.items():
    if _id not in gym.registry:
        gym.register(id=_id, entry_point=_entry)
