"""The EP agent's configuration: the component configs nested, one set of defaults.

``EPAgentConfig`` holds :class:`~eqagent.world_model.WorldModelConfig`, :class:`~eqagent.planning.PlannerConfig`
and :class:`~eqagent.value.ValueConfig` as they are (their defaults are the agent's), plus the few settings that
belong to the agent itself. Any field can be overridden by path: ``EPAgent(env, planner={"horizon": 25})``,
``EPAgent(env, **{"planner.horizon": 25})``, ``eqagent run --set planner.horizon=25`` or a JSON/YAML file
(``eqagent run --config FILE``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eqagent.configs import apply_overrides, config_from_dict, config_to_dict
from eqagent.planning import PlannerConfig
from eqagent.validation import check_finite_fields
from eqagent.value import ValueConfig
from eqagent.world_model import WorldModelConfig

__all__ = ["EPAgentConfig", "agent_config", "agent_config_for_id", "derived_defaults", "read_config_file"]


@dataclass
class EPAgentConfig:
    """Settings of :class:`~eqagent.agents.EPAgent`.

    Attributes:
        world_model: The online EP world model (ensemble, learning rate, replay, surprise gate).
        planner: The active-inference planner (horizon, CEM candidates, iterations, elites, risk weights).
        value: The EP-learned terminal value (used when ``terminal_value``).
        terminal_value: Learn a state value by EP (TD(0) on the replay) and count it past the planning horizon.
        value_updates_per_step: Value updates per vector-env step.
        learning_starts: Env steps of random actions before planning starts.
        error_check_every: Env steps between measurements of the world model's open-loop error (what
            ``planner.error_tolerance`` cuts the imagined horizon by; 0: never measured, the full horizon).
        preference: Name of a shipped preference for the env (``eqagent.agents.preferences``), or empty
            (learned reward only). A callable is passed to ``EPAgent`` directly, not through the config.
    """

    world_model: WorldModelConfig = field(default_factory=WorldModelConfig)
    planner: PlannerConfig = field(default_factory=PlannerConfig)
    value: ValueConfig = field(default_factory=ValueConfig)
    terminal_value: bool = True
    value_updates_per_step: int = 1
    learning_starts: int = 100
    error_check_every: int = 100
    preference: str = ""

    def __post_init__(self) -> None:
        check_finite_fields(self)
        for name in ("value_updates_per_step", "learning_starts", "error_check_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not isinstance(self.preference, str):
            raise ValueError(
                "EPAgentConfig.preference must be a name; pass a callable to EPAgent(preference=...)"
            )

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EPAgentConfig:
        return config_from_dict(cls, data)


def derived_defaults(
    observation_space: Any, action_space: Any, max_episode_steps: int | None = None
) -> dict[str, Any]:
    """What the agent's defaults take from the env itself — its action space and episode length — as overrides
    of :class:`EPAgentConfig` (no table keyed by env id; a user's own env gets the same rules):

    * the search: over a ``Discrete`` space one CEM iteration of 128 sequences that competes with the previous
      plan shifted by a step, 20 steps ahead (the categorical distribution is refitted from the plan it carries);
      over a ``Box`` space 4 iterations of 256, 15 steps ahead (a Gaussian needs refits to narrow, and costs more
      per imagined step), and 4 world-model updates per step (continuous control needs the finer model); over
      either, a search at least every 2nd step (in between, a step the world model predicted unsurprisingly
      takes the next action of the previous plan);
    * over a ``Discrete`` space, 3 iterations for an exploiting search that scores with every member (where
      ending an episode is a gain, ``PlannerConfig.exploit_members``): a deterministic prediction there refines
      its categorical instead of taking the best of one random draw;
    * the termination risk's weight derived from the rewards seen (``planner.termination_penalty = None``:
      ``max(0, mean reward per step) · horizon``): ending an episode is bad where rewards are earned per step
      alive (CartPole, InvertedPendulum), neutral where they are costs (Acrobot; MountainCar until its first flag);
    * the random warm-up ``learning_starts = min(100, max_episode_steps // 4)``: at most a quarter of an episode.

    Observation and reward scales need no setting: the world model and the value normalise what they see.
    """
    from gymnasium import spaces

    discrete = isinstance(action_space, spaces.Discrete)
    planner: dict[str, Any] = {"termination_penalty": None, "replan_every": 2}
    out: dict[str, Any] = {"planner": planner}
    if discrete:
        planner.update(horizon=20, candidates=128, iterations=1, elites=16, exploit_iterations=3)
    else:
        planner.update(horizon=15, candidates=256, iterations=4, elites=32)
        out["world_model"] = {"updates_per_step": 4}
    if max_episode_steps:
        out["learning_starts"] = max(1, min(100, int(max_episode_steps) // 4))
    return out


def agent_config(
    observation_space: Any,
    action_space: Any,
    max_episode_steps: int | None = None,
    config: EPAgentConfig | dict | None = None,
    **overrides: Any,
) -> EPAgentConfig:
    """The agent's config for an env with these spaces: ``config`` (else the defaults with
    :func:`derived_defaults`) with ``overrides`` applied."""
    if config is None:
        config = apply_overrides(
            EPAgentConfig(), derived_defaults(observation_space, action_space, max_episode_steps)
        )
    elif not isinstance(config, EPAgentConfig):
        config = EPAgentConfig.from_dict(config)
    return apply_overrides(config, overrides) if overrides else config


def agent_config_for_id(
    env_id: str, config: EPAgentConfig | dict | None = None, **overrides: Any
) -> EPAgentConfig:
    """:func:`agent_config` for a registered Gymnasium id (its spaces and ``max_episode_steps`` read from one
    instance)."""
    import gymnasium as gym

    env = gym.make(env_id)
    try:
        steps = env.spec.max_episode_steps if env.spec is not None else None
        return agent_config(env.observation_space, env.action_space, steps, config, **overrides)
    finally:
        env.close()


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Overrides from a JSON (``.json``) or YAML (``.yaml``/``.yml``, needs PyYAML) file: a dict of fields."""
    path = Path(path)
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ValueError(f"{path}: reading YAML needs PyYAML (pip install pyyaml), or use JSON") from None
        data = yaml.safe_load(text)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a mapping of config fields, got {type(data).__name__}")
    return data
