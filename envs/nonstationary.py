"""Stationarity-breaking wrappers: the physics of an env changes at a chosen step."""

from __future__ import annotations

from typing import Any

import gymnasium as gym

__all__ = ["PhysicsShiftWrapper", "make_cartpole_shift", "make_pendulum_shift"]


class PhysicsShiftWrapper(gym.Wrapper):
    """Sets attributes of the unwrapped env once ``shift_step`` steps have been taken (counted across episodes).

    ## Description
    A wrapper for detection and re-adaptation experiments: until step ``shift_step`` the env is unchanged;
    from then on ``changes`` (attribute name → new value, e.g. ``{"gravity": 19.6}``) are in force, and
    ``derived`` recomputes dependent attributes (e.g. CartPole's ``total_mass``).

    ## Observation Space / Action Space / Rewards / Episode End
    Those of the wrapped env.

    Args:
        env: The env to wrap.
        shift_step: Global step at which the physics changes (``None``: never).
        changes: New values of attributes of ``env.unwrapped``.
        derived: Optional callable ``f(unwrapped_env)`` run after the change.
    """

    def __init__(self, env: gym.Env, shift_step: int | None, changes: dict[str, Any], derived=None) -> None:
        super().__init__(env)
        base = env.unwrapped
        missing = [k for k in changes if not hasattr(base, k)]
        if missing:
            raise ValueError(f"{type(base).__name__} has no attribute(s) {missing} to shift")
        if shift_step is not None and shift_step < 0:
            raise ValueError(f"shift_step must be >= 0 or None, got {shift_step}")
        self.shift_step = shift_step
        self.changes = dict(changes)
        self.derived = derived
        self.total_steps = 0
        self.shifted = False

    def _maybe_shift(self) -> None:
        if not self.shifted and self.shift_step is not None and self.total_steps >= self.shift_step:
            base = self.env.unwrapped
            for k, v in self.changes.items():
                setattr(base, k, v)
            if self.derived is not None:
                self.derived(base)
            self.shifted = True

    def reset(self, **kwargs):
        self._maybe_shift()
        return self.env.reset(**kwargs)

    def step(self, action):
        self._maybe_shift()
        self.total_steps += 1
        obs, reward, terminated, truncated, info = self.env.step(action)
        info = dict(info, physics_shifted=self.shifted)
        return obs, reward, terminated, truncated, info


def _cartpole_derived(base) -> None:
    base.total_mass = base.masspole + base.masscart
    base.polemass_length = base.masspole * base.length


def make_cartpole_shift(
    shift_step: int | None = 10_000,
    gravity: float = 9.8,
    length: float = 0.75,
    masspole: float = 0.2,
    **kwargs,
) -> gym.Env:
    """CartPole-v1 whose gravity, pole half-length and pole mass change at ``shift_step``.

    Defaults: the pole gets 1.5× longer and 2× heavier (gravity unchanged), a change the model must re-learn
    while the scale of the state changes stays comparable.
    """
    env = gym.make("CartPole-v1", **kwargs)
    return PhysicsShiftWrapper(
        env, shift_step, {"gravity": gravity, "length": length, "masspole": masspole}, _cartpole_derived
    )


def make_pendulum_shift(shift_step: int | None = 10_000, m: float = 1.5, l: float = 1.3, **kwargs) -> gym.Env:
    """Pendulum-v1 whose mass and length change at ``shift_step`` (defaults: 1.5× mass, 1.3× length)."""
    env = gym.make("Pendulum-v1", **kwargs)
    return PhysicsShiftWrapper(env, shift_step, {"m": m, "l": l})
