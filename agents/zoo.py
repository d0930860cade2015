"""Tuned Stable-Baselines3 hyperparameters from rl-baselines3-zoo, kept as data.

Copied value by value from the zoo's YAML files (the commit of each file is in :data:`ZOO_SOURCES`); envs the zoo
does not list use SB3's defaults. Conventions of the zoo kept here: ``n_envs`` (vectorised copies),
``normalize`` (``VecNormalize`` of observations), learning rates / clip ranges written ``"lin_X"`` (linear decay
from X to 0), and ``policy_kwargs`` as a plain dict (the zoo writes a Python expression; nothing is evaluated here).
The zoo's ``n_timesteps`` are kept apart in :data:`ZOO_TIMESTEPS` (``eqagent compare`` sets one budget for every
algorithm; ``eqagent suite`` gives each SB3 algorithm the zoo's budget capped at 50,000). The MuJoCo entries are the
zoo's ``-v3`` settings applied to the ``-v5`` envs (same tasks; the zoo tunes the older versions).
"""

from __future__ import annotations

import copy

__all__ = ["ZOO", "ZOO_SOURCES", "ZOO_TIMESTEPS", "zoo_hyperparams"]

ZOO_SOURCES = {
    "ppo": "DLR-RM/rl-baselines3-zoo hyperparams/ppo.yml @ 208b6fdf3a9aa24de44b2e068c6e5f6a07d97fcc",
    "dqn": "DLR-RM/rl-baselines3-zoo hyperparams/dqn.yml @ ce95481b041fe5314c1b2f1a53940d169b9253fc",
    "sac": "DLR-RM/rl-baselines3-zoo hyperparams/sac.yml @ c94924e5b31bce36920f29d3eb18b975231bdec4",
    "ppo (InvertedPendulum-v3)": "DLR-RM/rl-baselines3-zoo hyperparams/ppo.yml @ 00128b5d46d497b772f3bd891ae9f520919e8971",
}

ZOO: dict[str, dict[str, dict]] = {
    "ppo": {
        "CartPole-v1": dict(
            n_envs=8, n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20, ent_coef=0.0,
            learning_rate="lin_0.001", clip_range="lin_0.2",
        ),
        "Pendulum-v1": dict(
            n_envs=4, n_steps=1024, gae_lambda=0.95, gamma=0.9, n_epochs=10, ent_coef=0.0, learning_rate=1e-3,
            clip_range=0.2, use_sde=True, sde_sample_freq=4,
        ),
        "Acrobot-v1": dict(normalize=True, n_envs=16, n_steps=256, gae_lambda=0.94, gamma=0.99, n_epochs=4,
                           ent_coef=0.0),
        "MountainCarContinuous-v0": dict(
            normalize=True, n_envs=1, batch_size=256, n_steps=8, gamma=0.9999, learning_rate=7.77e-05,
            ent_coef=0.00429, clip_range=0.1, n_epochs=10, gae_lambda=0.9, max_grad_norm=5, vf_coef=0.19,
            use_sde=True, policy_kwargs=dict(log_std_init=-3.29, ortho_init=False),
        ),
        "InvertedPendulum-v5": dict(
            normalize=True, n_envs=1, batch_size=64, n_steps=32, gamma=0.999, learning_rate=0.000222425,
            ent_coef=1.37976e-07, clip_range=0.4, n_epochs=5, gae_lambda=0.9, max_grad_norm=0.3, vf_coef=0.19816,
        ),
    },
    "dqn": {
        "CartPole-v1": dict(
            learning_rate=2.3e-3, batch_size=64, buffer_size=100000, learning_starts=1000, gamma=0.99,
            target_update_interval=10, train_freq=256, gradient_steps=128, exploration_fraction=0.16,
            exploration_final_eps=0.04, policy_kwargs=dict(net_arch=[256, 256]),
        ),
        "Acrobot-v1": dict(
            learning_rate=6.3e-4, batch_size=128, buffer_size=50000, learning_starts=0, gamma=0.99,
            target_update_interval=250, train_freq=4, gradient_steps=-1, exploration_fraction=0.12,
            exploration_final_eps=0.1, policy_kwargs=dict(net_arch=[256, 256]),
        ),
    },
    "sac": {
        "Pendulum-v1": dict(learning_rate=1e-3),
        "MountainCarContinuous-v0": dict(
            learning_rate=3e-4, buffer_size=50000, batch_size=512, ent_coef=0.1, train_freq=32, gradient_steps=32,
            gamma=0.9999, tau=0.01, learning_starts=0, use_sde=True,
            policy_kwargs=dict(log_std_init=-3.67, net_arch=[64, 64]),
        ),
        "HalfCheetah-v5": dict(learning_starts=10000),
    },
}  # fmt: skip

ZOO_TIMESTEPS: dict[str, dict[str, int]] = {
    "ppo": {"CartPole-v1": 100_000, "Pendulum-v1": 100_000, "Acrobot-v1": 1_000_000,
            "MountainCarContinuous-v0": 20_000, "InvertedPendulum-v5": 1_000_000},
    "dqn": {"CartPole-v1": 50_000, "Acrobot-v1": 100_000},
    "sac": {"Pendulum-v1": 20_000, "MountainCarContinuous-v0": 50_000, "HalfCheetah-v5": 1_000_000},
}  # fmt: skip


def zoo_hyperparams(algo: str, env_id: str) -> tuple[dict, bool]:
    """The zoo's settings for ``algo`` on ``env_id`` (a fresh copy) and whether the zoo tunes that pair.

    Raises:
        ValueError: ``algo`` is not one the compare command knows.
    """
    if algo not in ZOO:
        raise ValueError(f"unknown SB3 algorithm {algo!r}; choose from {sorted(ZOO)}")
    hp = ZOO[algo].get(env_id)
    return (copy.deepcopy(hp), True) if hp is not None else ({}, False)
