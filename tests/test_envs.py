import warnings

import eqagent.envs
import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from eqagent.plasticity import PlasticRNN


@pytest.mark.parametrize("env_id", eqagent.envs.ENV_IDS)
def test_check_env_on_every_registered_id(env_id):
    env = gym.make(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # check_env warns that the shift envs are wrappers
        check_env(env, skip_render_check=True)


def test_envs_install_under_the_eqagent_namespace():
    assert eqagent.envs.__name__ == "eqagent.envs"
    assert eqagent.envs.PatternCompletionEnv.__module__ == "eqagent.envs.pattern_completion"


def test_pattern_completion_episode_and_reward():
    env = gym.make("eqagent/PatternCompletion-v0", n=10, k=2)
    obs, _ = env.reset(seed=3)
    obs2, _ = env.reset(seed=3)
    assert np.array_equal(obs, obs2)
    steps, done, reward, info = 0, False, 0.0, {}
    while not done:
        obs, reward, terminated, truncated, info = env.step(np.ones(10, dtype=np.float32))
        steps += 1
        done = terminated or truncated
    assert steps == 2 * 2 * (6 + 3) + 6
    assert reward == pytest.approx(-np.mean(info["pattern"] != 1.0))
    with pytest.raises(ValueError, match="shape"):
        env.reset()
        env.step(np.ones(3, dtype=np.float32))


def test_a_plastic_net_acts_in_the_env():
    env = gym.make("eqagent/PatternCompletion-v0", n=8, k=1)
    net = PlasticRNN(8)
    obs, _ = env.reset(seed=0)
    x, hebb = net.initial_state(1)
    done = False
    with torch.no_grad():
        while not done:
            x, hebb = net.step(torch.as_tensor(obs).unsqueeze(0), x, hebb)
            obs, reward, done, _, info = env.step(x[0].clamp(-1, 1).numpy())
    assert -1.0 <= reward <= 0.0 and "bit_error" in info


def test_bad_settings():
    with pytest.raises(ValueError, match="bad PatternCompletion"):
        gym.make("eqagent/PatternCompletion-v0", n=1)


def test_physics_shift_happens_at_the_chosen_step():
    env = gym.make("eqagent/CartPoleShift-v0", shift_step=5)
    env.reset(seed=0)
    g0 = env.unwrapped.gravity
    infos = []
    for _ in range(7):
        _, _, term, trunc, info = env.step(0)
        infos.append(info["physics_shifted"])
        if term or trunc:
            env.reset()
    assert infos[:5] == [False] * 5 and infos[-1] is True
    assert env.unwrapped.length == 0.75 and env.unwrapped.gravity == g0
    assert env.unwrapped.total_mass == pytest.approx(env.unwrapped.masscart + env.unwrapped.masspole)
    pend = gym.make("eqagent/PendulumShift-v0", shift_step=0)
    pend.reset(seed=0)
    pend.step(pend.action_space.sample())
    assert pend.unwrapped.m == 1.5
    with pytest.raises(ValueError, match="no attribute"):
        eqagent.envs.PhysicsShiftWrapper(gym.make("CartPole-v1"), 3, {"warp": 9})
