"""Prior preferences shipped for the classic-control envs: energies over observations (lower = preferred).

Each takes imagined observations ``(..., d)`` and returns ``(...)``. Select one by name (``preference="upright"``
with the env id) or pass any callable. A ``MODULE:CALLABLE`` string is imported only when the caller passes
``trust_remote_code=True`` (a name read from a config or a checkpoint is data, never code to run).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch

__all__ = ["PREFERENCES", "describe_preference", "resolve_preference"]


def cartpole_upright(obs: torch.Tensor) -> torch.Tensor:
    """Pole upright (θ ≈ 0, calm), cart centred: ``50·θ² + 0.1·θ̇² + 0.05·x² + 0.01·ẋ²`` (radians, metres)."""
    x, x_dot, theta, theta_dot = obs.unbind(-1)
    return theta**2 * 50 + 0.1 * theta_dot**2 + 0.05 * x**2 + 0.01 * x_dot**2


def pendulum_upright(obs: torch.Tensor) -> torch.Tensor:
    """Pendulum up and still: ``(1 − cos θ) + 0.02·θ̇²``."""
    cos, _sin, theta_dot = obs.unbind(-1)
    return (1 - cos) + 0.02 * theta_dot**2


def mountaincar_goal(obs: torch.Tensor) -> torch.Tensor:
    """Car at the flag (x ≥ 0.45): ``(0.45 − x)₊``."""
    return (0.45 - obs[..., 0]).clamp_min(0)


def acrobot_up(obs: torch.Tensor) -> torch.Tensor:
    """Free end high: ``cos θ₁ + cos(θ₁ + θ₂)`` (−2 is the top)."""
    c1, s1, c2, s2 = obs[..., 0], obs[..., 1], obs[..., 2], obs[..., 3]
    return c1 + (c1 * c2 - s1 * s2)


PREFERENCES: dict[str, dict[str, Callable[[torch.Tensor], torch.Tensor]]] = {
    "CartPole-v1": {"upright": cartpole_upright},
    "Pendulum-v1": {"upright": pendulum_upright},
    "MountainCarContinuous-v0": {"goal": mountaincar_goal},
    "MountainCar-v0": {"goal": mountaincar_goal},
    "Acrobot-v1": {"up": acrobot_up},
}


def resolve_preference(
    pref, env_id: str | None, trust_remote_code: bool = False
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """``None``, a callable, a shipped name for ``env_id``, or ``"module:callable"`` (with ``trust_remote_code``)."""
    if pref is None or callable(pref):
        return pref
    if not isinstance(pref, str):
        raise ValueError(f"preference must be None, a callable or a string, got {type(pref).__name__}")
    if ":" in pref:
        if not trust_remote_code:
            raise ValueError(
                f"preference {pref!r} names code to import; pass the callable itself, or trust_remote_code=True"
            )
        module, _, name = pref.partition(":")
        fn = getattr(importlib.import_module(module), name, None)
        if not callable(fn):
            raise ValueError(f"preference {pref!r}: {name} is not a callable of {module}")
        return fn
    shipped = PREFERENCES.get(env_id or "", {})
    if pref not in shipped:
        raise ValueError(f"no preference {pref!r} for {env_id}; shipped: {sorted(shipped) or 'none'}")
    return shipped[pref]


def describe_preference(fn, name: str) -> tuple[str, str]:
    """How a preference is saved: ``("none" | "shipped" | "import" | "callable", name)``."""
    if fn is None:
        return "none", ""
    if name and ":" in name:
        return "import", name
    if name:
        return "shipped", name
    return "callable", f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
