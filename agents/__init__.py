"""Agents of eqagent (installed as ``eqagent.agents``)."""
