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

__all__ = ["PRESETS", "EPAgentConfig", "agent_config", "read_config_file"]


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
        preference: Name of a shipped preference for the env (``eqagent.agents.preferences``), or empty
            (learned reward only). A callable is passed to ``EPAgent`` directly, not through the config.
    """

    world_model: WorldModelConfig = field(default_factory=WorldModelConfig)
    planner: PlannerConfig = field(default_factory=PlannerConfig)
    value: ValueConfig = field(default_factory=ValueConfig)
    terminal_value: bool = True
    value_updates_per_step: int = 2
    learning_starts: int = 100
    preference: str = ""

    def __post_init__(self) -> None:
        check_finite_fields(self)
        if self.value_updates_per_step < 0 or self.learning_starts < 0:
            raise ValueError(
                f"value_updates_per_step and learning_starts must be >= 0, got {self.value_updates_per_step}, "
                f"{self.learning_starts}"
            )
        if not isinstance(self.preference, str):
            raise ValueError(
                "EPAgentConfig.preference must be a name; pass a callable to EPAgent(preference=...)"
            )

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EPAgentConfig:
        return config_from_dict(cls, data)


PRESETS: dict[str, dict[str, Any]] = {
    # one CEM iteration from the previous plan (shifted, it competes) and a search at least every 2nd step: as
    # steady as 2 iterations at a third of the planning time (docs/benchmarks.md, issue 18)
    "CartPole-v1": {
        "planner": dict(
            horizon=20, candidates=128, iterations=1, elites=16, termination_penalty=20.0, replan_every=2
        )
    },
    "Pendulum-v1": {
        "planner": dict(horizon=15, candidates=256, iterations=4, elites=32, termination_penalty=0.0),
        "world_model": dict(updates_per_step=4),
        "learning_starts": 50,
    },
    "Acrobot-v1": {
        "planner": dict(horizon=20, candidates=128, termination_penalty=0.0, epistemic_weight=1.0)
    },
    "MountainCarContinuous-v0": {
        "planner": dict(horizon=25, candidates=256, termination_penalty=0.0, epistemic_weight=5.0)
    },
}


def agent_config(env_id: str | None, config: EPAgentConfig | None = None, **overrides: Any) -> EPAgentConfig:
    """The agent's config: ``config`` (or the defaults with the env's preset) with ``overrides`` applied."""
    if config is None:
        config = apply_overrides(EPAgentConfig(), PRESETS.get(env_id or "", {}))
    elif not isinstance(config, EPAgentConfig):
        config = EPAgentConfig.from_dict(config)
    return apply_overrides(config, overrides) if overrides else config


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
