"""Agents of eqagent (installed as ``eqagent.agents``): :class:`EPAgent` and env-driven benchmarks."""

from eqagent.agents.ep_agent import PRESETS, EPAgent, EPAgentConfig

__all__ = ["PRESETS", "EPAgent", "EPAgentConfig"]
