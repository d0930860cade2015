"""Agents of eqagent (installed as ``eqagent.agents``): :class:`EPAgent`, its config, the evaluation protocol,
and the RL applications (``eqagent run``, ``compare``, the world-model and replay benchmarks)."""

from eqagent.agents.config import EPAgentConfig, derived_defaults
from eqagent.agents.ep_agent import EPAgent

__all__ = ["EPAgent", "EPAgentConfig", "derived_defaults"]
