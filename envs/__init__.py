"""Gymnasium environments and wrappers of eqagent (installed as ``eqagent.envs``)."""
