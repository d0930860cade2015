import warnings

import eqagent.envs
import gymnasium as gym
import numpy as np
import pytest
import torch
from eqagent.envs.mnist import MNISTClassifyEnv
from gymnasium.utils.env_checker import check_env

from eqagent.plasticity import PlasticRNN
from tests.conftest import synthetic_digits


@pytest.mark.parametrize("env_id", eqagent.envs.ENV_IDS)
def test_check_env_on_every_registered_id(env_id):
    kwargs = {}
    if env_id == "eqagent/MNISTClassify-v0":  # tests never need the MNIST files: tiny synthetic digits
        images, labels = synthetic_digits(40, num_classes=10, side=10)
        kwargs = dict(images=images, labels=labels, episode_length=5)
    env = gym.make(env_id, **kwargs)
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


def test_mnist_classify_env_rewards_labels_and_class_subsets():
    images, labels = synthetic_digits(60, num_classes=4, side=8, seed=1)
    env = gym.make("eqagent/MNISTClassify-v0", images=images, labels=labels, episode_length=6, classes=(1, 2))
    obs, info = env.reset(seed=0)
    assert obs.shape == (64,) and obs.dtype == np.float32 and 0 <= obs.min() and obs.max() <= 1
    total, steps = 0.0, 0
    while True:
        idx = info["next_index"]
        assert labels[idx] in (1, 2)
        np.testing.assert_allclose(obs, images[idx].reshape(-1) / 255.0, rtol=1e-6)
        obs, r, term, trunc, info = env.step(int(labels[idx]))  # the right answer
        assert info["label"] == labels[idx] and r == 1.0 and not term
        total, steps = total + r, steps + 1
        if trunc:
            break
    assert steps == 6 and total == 6.0
    obs, info = env.reset(options={"classes": [3]})
    assert labels[info["next_index"]] == 3
    obs, r, _, _, info = env.step(0)  # a wrong label: no reward, the truth is revealed
    assert r == 0.0 and info["label"] == 3
    with pytest.raises(ValueError, match="classes"):
        env.reset(options={"classes": [12]})
    with pytest.raises(ValueError, match="action"):
        env.step(11)
    with pytest.raises(ValueError, match="labels"):
        MNISTClassifyEnv(images=images, labels=labels + 10)
