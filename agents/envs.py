"""Turning what a user passes as ``env`` into the SB3 ``VecEnv`` the agent trains on, and checking env ids."""

from __future__ import annotations

from typing import Any

import eqagent.envs  # noqa: F401  (registers the eqagent ids)
import gymnasium as gym
from stable_baselines3.common.env_util import is_wrapped
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

__all__ = ["as_vec_env", "check_env_id"]


def check_env_id(env_id: Any, trust_remote_code: bool = False, what: str = "env id") -> str:
    """``env_id`` if it names a registered Gymnasium env; ``ValueError`` otherwise.

    An id with a module prefix (``"module:Env-v0"``) makes Gymnasium import that module: it is refused unless
    ``trust_remote_code`` (the caller vouches for the code it names).
    """
    if not isinstance(env_id, str) or not env_id:
        raise ValueError(f"{what} must be a non-empty string, got {env_id!r}")
    if ":" in env_id:
        if not trust_remote_code:
            raise ValueError(
                f"{what} {env_id!r} names a module to import; pass trust_remote_code=True to allow it"
            )
        return env_id
    if env_id not in gym.registry:
        close = [k for k in gym.registry if k.lower().split("-")[0] == env_id.lower().split("-")[0]][:3]
        hint = f" (registered: {', '.join(close)})" if close else ""
        raise ValueError(f"{what} {env_id!r} is not a registered Gymnasium env{hint}")
    return env_id


def _monitored(make):
    def thunk() -> gym.Env:
        env = make()
        return env if is_wrapped(env, Monitor) else Monitor(env)

    return thunk


def as_vec_env(env: Any, trust_remote_code: bool = False) -> tuple[VecEnv, str | None]:
    """``(vec_env, env_id)``: an SB3 ``VecEnv`` (returned as is), a Gymnasium vector env (rebuilt from its env
    factories: sync → ``DummyVecEnv``, async → ``SubprocVecEnv``), a ``gym.Env`` or an env id (one-env
    ``DummyVecEnv``); every env Monitor-wrapped for SB3's episode statistics."""
    if isinstance(env, str):
        env_id = check_env_id(env, trust_remote_code)
        try:
            vec = DummyVecEnv([_monitored(lambda: gym.make(env_id))])
        except gym.error.Error as e:
            raise ValueError(f"cannot make env {env_id!r}: {e}") from None
        return vec, env_id
    if isinstance(env, VecEnv):
        spec = env.get_attr("spec", [0])[0]
        return env, getattr(spec, "id", None)
    if isinstance(env, gym.vector.VectorEnv):
        fns = getattr(env, "env_fns", None)
        if fns is None:
            raise ValueError(
                f"cannot read the env factories of {type(env).__name__}: pass a SyncVectorEnv/AsyncVectorEnv "
                "(gym.make_vec) or an SB3 VecEnv"
            )
        spec = getattr(env, "spec", None)
        cls = SubprocVecEnv if isinstance(env, gym.vector.AsyncVectorEnv) else DummyVecEnv
        env.close()
        return cls([_monitored(fn) for fn in fns]), getattr(spec, "id", None)
    if isinstance(env, gym.Env):
        return DummyVecEnv([_monitored(lambda: env)]), (env.spec.id if env.spec is not None else None)
    raise ValueError(
        f"env must be an env id, a gym.Env, a Gymnasium vector env or an SB3 VecEnv, got {env!r}"
    )
