import json
from pathlib import Path

import eqagent.envs  # noqa: F401
import gymnasium as gym
import numpy as np
import pytest
from eqagent.agents import EPAgent
from eqagent.agents.preferences import resolve_preference
from eqagent.apps.cli import main
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import DummyVecEnv

TINY = dict(
    world_model=dict(hidden=(16, 16), members=3),
    planner=dict(horizon=8, candidates=32, elites=6, iterations=2),
    learning_starts=30,
)


def _returns(policy, n=10, seed=100):
    env = gym.make("eqagent/LineWorld-v0")
    out = []
    for ep in range(n):
        obs, _ = env.reset(seed=seed + ep)
        done, total = False, 0.0
        while not done:
            obs, r, term, trunc, _ = env.step(policy(obs))
            total += r
            done = term or trunc
        out.append(total)
    return float(np.mean(out))


def test_learns_the_toy_env_in_a_few_hundred_steps():
    # Without the terminal value: in 300 steps its TD estimate (γ 0.99: values ~100× the reward) is still too noisy
    # here and costs the planner (agent 18.1 vs random 12.3 with it); known issue, see docs/benchmarks.md.
    # The default planner's sizes (2 s): TINY's 32 candidates shared out among 3 members leave ~11 per member, and
    # its result swings with the seed (with either planner, seeds 0–9: 5 to 26).
    agent = EPAgent("eqagent/LineWorld-v0", seed=0, terminal_value=False).learn(300)
    rng = np.random.default_rng(0)
    random_return = _returns(lambda o: int(rng.integers(2)))
    agent_return = _returns(lambda o: agent.predict(o)[0])
    assert agent_return > random_return + 8


def test_same_seed_same_run_and_save_load_round_trip(tmp_path):
    a = EPAgent("eqagent/LineWorld-v0", seed=3, **TINY).learn(80)
    b = EPAgent("eqagent/LineWorld-v0", seed=3, **TINY).learn(80)
    for (k, v), (_, w) in zip(a.world_model.state_dict().items(), b.world_model.state_dict().items()):
        if k != "_extra_state":
            assert np.array_equal(v.numpy(), w.numpy()), k
    a.save(tmp_path / "agent")
    loaded = EPAgent.load(tmp_path / "agent")
    obs = np.array([[0.3], [-0.7], [1.2]], np.float32)
    assert np.array_equal(a.predict(obs)[0], loaded.predict(obs)[0])
    assert loaded.num_timesteps == 80
    wm, kept = a.world_model, loaded.world_model  # the terminal statistics read by exploit_members="auto"
    assert (kept.terminations, kept.terminal_reward) == (wm.terminations, wm.terminal_reward)
    assert wm.terminations > 0
    assert not list(tmp_path.glob("*.safetensors.*"))  # no temp files left behind


def test_evaluate_policy_and_tensorboard_tags(tmp_path):
    agent = EPAgent("eqagent/LineWorld-v0", seed=0, tensorboard_log=str(tmp_path), **TINY).learn(60)
    mean, _ = evaluate_policy(agent, gym.make("eqagent/LineWorld-v0"), n_eval_episodes=2, warn=False)
    assert np.isfinite(mean)
    run = next(tmp_path.iterdir())
    header = (run / "progress.csv").read_text().splitlines()[0]
    assert (run / "config.json").exists()
    for tag in (
        "rollout/ep_rew_mean",
        "rollout/ep_len_mean",
        "time/fps",
        "world_model/surprise",
        "world_model/gate_lr",
        "planner/latency_ms",
    ):
        assert tag in header
    assert list(run.glob("events.out.tfevents.*"))


def test_box_actions_and_preferences():
    agent = EPAgent(
        gym.make("eqagent/LineWorld-v0", continuous=True),
        seed=0,
        preference=_prefer_origin,
        **TINY,
    ).learn(40)
    a, _ = agent.predict(np.array([0.5], np.float32))
    assert a.shape == (1,) and -1 <= a[0] <= 1
    assert resolve_preference("upright", "CartPole-v1") is not None
    with pytest.raises(ValueError, match="no preference"):
        resolve_preference("upright", "eqagent/LineWorld-v0")


def _prefer_origin(obs):
    return obs[..., 0] ** 2


def test_bad_inputs():
    with pytest.raises(ValueError, match="1-D Box observation"):
        EPAgent(_image_env())
    with pytest.raises(ValueError, match="unknown field 'horizn'"):
        EPAgent("eqagent/LineWorld-v0", horizn=3)
    with pytest.raises(ValueError, match="unknown field 'horizn'"):
        EPAgent("eqagent/LineWorld-v0", planner=dict(horizn=3))
    agent = EPAgent("eqagent/LineWorld-v0", **TINY)
    with pytest.raises(ValueError, match="NaN"):
        agent.predict(np.array([np.nan], np.float32))


def _image_env():
    class Img(gym.Env):
        observation_space = gym.spaces.Box(0, 1, (4, 4))
        action_space = gym.spaces.Discrete(2)

    return Img()


def test_cli_run_json(tmp_path, capsys):
    rc = main(
        [
            "run",
            "--env",
            "eqagent/LineWorld-v0",
            "--total-timesteps",
            "60",
            "--eval-every",
            "30",
            "--eval-episodes",
            "1",
            "--tensorboard-log",
            str(tmp_path),
            "--json",
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("steps_to_threshold", "eval_mean", "eval_std", "wall_seconds", "ms_per_action"):
        assert key in out
    assert [e["step"] for e in out["evaluations"]] == [0, 30, 60]  # the pre-learning score, then every 30
    run = Path(out["run_dir"])
    for name in (
        "evaluations.npz",
        "best_model.safetensors",
        "learning_curve.png",
        "config.json",
        "progress.csv",
    ):
        assert (run / name).exists(), name


def test_sb3_callbacks_work_unchanged(tmp_path):
    """EvalCallback (+ StopTrainingOnRewardThreshold) and CheckpointCallback from SB3, in a CallbackList."""
    from stable_baselines3.common.callbacks import (
        CallbackList,
        CheckpointCallback,
        EvalCallback,
        StopTrainingOnRewardThreshold,
    )

    agent = EPAgent("CartPole-v1", seed=0, **TINY)
    stop = StopTrainingOnRewardThreshold(
        reward_threshold=5.0
    )  # any policy scores > 5: stops at the first eval
    evals = EvalCallback(gym.make("CartPole-v1"), eval_freq=100, n_eval_episodes=2, log_path=str(tmp_path / "eval"),
                         best_model_save_path=str(tmp_path / "best"), callback_on_new_best=stop, warn=False)  # fmt: skip
    ckpt = CheckpointCallback(save_freq=50, save_path=str(tmp_path / "ckpt"), name_prefix="ep")
    agent.learn(400, callback=CallbackList([evals, ckpt]))
    assert agent.num_timesteps == 100  # stopped at the first evaluation
    npz = np.load(tmp_path / "eval" / "evaluations.npz")
    assert npz["timesteps"].tolist() == [100]
    assert (tmp_path / "best" / "best_model.safetensors").exists()
    saved = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert saved == ["ep_100_steps.zip.safetensors", "ep_50_steps.zip.safetensors"]
    assert EPAgent.load(tmp_path / "ckpt" / "ep_50_steps.zip").num_timesteps == 50
    mean, _ = evaluate_policy(agent, gym.make("CartPole-v1"), n_eval_episodes=1, warn=False)
    assert mean > 0


def test_plain_callable_callback_stops_training():
    agent = EPAgent("eqagent/LineWorld-v0", seed=0, **TINY)
    agent.learn(100, callback=lambda loc, glob: loc["self"].num_timesteps < 10)
    assert agent.num_timesteps == 10


def test_defaults_are_derived_from_the_env_not_its_id():
    from eqagent.agents.config import agent_config_for_id, derived_defaults

    cart = agent_config_for_id("CartPole-v1")  # Discrete, 500-step episodes
    assert (cart.planner.horizon, cart.planner.candidates, cart.planner.iterations, cart.planner.replan_every) == (
        20, 128, 1, 2)  # fmt: skip
    assert cart.planner.termination_penalty is None and cart.learning_starts == 100
    pend = agent_config_for_id("Pendulum-v1")  # Box, 200-step episodes
    assert (pend.planner.candidates, pend.planner.iterations, pend.planner.elites, pend.planner.replan_every) == (
        256, 4, 32, 2)  # fmt: skip
    assert pend.world_model.updates_per_step == 4 and pend.learning_starts == 50
    # the same spaces under another name get the same config: nothing is keyed by the id
    env = gym.make("Pendulum-v1")
    assert derived_defaults(env.observation_space, env.action_space, 200) == derived_defaults(
        gym.spaces.Box(-1, 1, (3,)), gym.spaces.Box(-2, 2, (1,)), 200)  # fmt: skip
    # overrides win over what is derived
    assert agent_config_for_id("CartPole-v1", **{"planner.iterations": 3}).planner.iterations == 3


def test_open_loop_error_is_measured_every_error_check_every_steps(tmp_path):
    cut = {**TINY, "planner": {**TINY["planner"], "error_tolerance": 0.5}}
    agent = EPAgent(
        "eqagent/LineWorld-v0", seed=0, tensorboard_log=str(tmp_path), error_check_every=40, **cut
    )
    agent.learn(120)
    err = agent.world_model.open_loop_error
    assert err is not None and err.shape == (TINY["planner"]["horizon"],) and np.all(np.isfinite(err))
    run = next(tmp_path.iterdir())
    assert "planner/horizon" in (run / "progress.csv").read_text().splitlines()[0]
    # what the planner's horizon depends on is saved with the agent: a loaded agent predicts the same
    agent.save(tmp_path / "agent")
    loaded = EPAgent.load(tmp_path / "agent")
    np.testing.assert_array_equal(loaded.world_model.open_loop_error, err)
    obs = np.array([[0.3], [-0.7]], np.float32)
    assert loaded.planner.horizon() == agent.planner.horizon()
    assert np.array_equal(agent.predict(obs)[0], loaded.predict(obs)[0])
    off = EPAgent("eqagent/LineWorld-v0", seed=0, error_check_every=0, **cut).learn(120)
    assert off.world_model.open_loop_error is None
    # without a tolerance (the default) nothing is measured: the horizon is never cut
    assert EPAgent("eqagent/LineWorld-v0", seed=0, **TINY).learn(120).world_model.open_loop_error is None
    with pytest.raises(ValueError, match="error_check_every"):
        EPAgent("eqagent/LineWorld-v0", error_check_every=-1)


def test_termination_penalty_derived_from_the_reward_rate():
    import torch

    from eqagent.planning import CEMPlanner, PlannerConfig
    from eqagent.world_model import EPWorldModel

    env = gym.make("CartPole-v1")
    wm = EPWorldModel(env.observation_space, env.action_space)
    planner = CEMPlanner(wm, PlannerConfig(horizon=20, termination_penalty=None))
    assert planner.termination_penalty() == 0.0  # nothing seen yet
    wm.reward_norm.update(torch.ones(50, 1))  # +1 per step alive: ending forfeits it for the horizon
    assert planner.termination_penalty() == pytest.approx(20.0)
    wm.reward_norm.update(-3 * torch.ones(200, 1))  # costs: ending is not penalised
    assert planner.termination_penalty() == 0.0
    assert CEMPlanner(wm, PlannerConfig(termination_penalty=7.0)).termination_penalty() == 7.0


def test_default_agent_learns_an_env_with_odd_scales():
    """A user's env the defaults were never tuned on: observations in the thousands, actions in [−5, 20], rewards
    ×100. The default agent (no keyword arguments) keeps actions in the box and learns to return to the origin."""
    from gymnasium.wrappers import RescaleAction, TransformObservation, TransformReward
    from stable_baselines3.common.monitor import Monitor

    def make():
        env = gym.make("eqagent/LineWorld-v0", continuous=True)
        env = TransformObservation(env, lambda o: 1000.0 * o + 500.0,
                                   gym.spaces.Box(-1500.0, 2500.0, (1,), np.float32))  # fmt: skip
        env = TransformReward(env, lambda r: 100.0 * r)
        return Monitor(RescaleAction(env, np.float32(-5.0), np.float32(20.0)))

    def score(agent):  # the same ten seeded start states every time (an unseeded env made this test flaky)
        venv = DummyVecEnv([make])
        venv.seed(1)
        return evaluate_policy(agent, venv, n_eval_episodes=10)[0]

    agent = EPAgent(make(), seed=0)
    before = score(agent)
    agent.learn(300)
    after = score(agent)
    action, _ = agent.predict(np.array([[900.0]], np.float32), deterministic=True)
    assert agent.action_space.contains(action[0])
    # Per-step reward ×100, 30-step episodes: staying put scores ~1,470 on average, the optimum ~2,850 (≥ 2,550 on
    # every start). Trained agents score 2,750–2,800 on seeds 0–3; an untrained one anywhere from ~0 to ~2,500.
    assert after > 2600 and after > before, (before, after)


def test_background_evaluation_scores_as_in_line(tmp_path):
    """Snapshots evaluated in a background process: the same episodes and scores, the same files."""
    from functools import partial

    from eqagent.agents.evaluation import EvalHistoryCallback
    from eqagent.agents.run import make_eval_env

    env_id, histories = "eqagent/LineWorld-v0", {}
    for background in (False, True):
        agent = EPAgent(env_id, seed=0, tensorboard_log=str(tmp_path / str(background)), **TINY)
        factory = partial(make_eval_env, env_id, 0) if background else None
        cb = EvalHistoryCallback(make_eval_env(env_id, 0), 30, 3, files_to_run_dir=True, background=factory)
        agent.learn(90, callback=cb)
        histories[background] = [(e["step"], e["mean"], e["std"], e["learned"]) for e in cb.history]
        run = Path(agent.logger.get_dir())
        assert np.load(run / "evaluations.npz")["timesteps"].tolist() == [0, 30, 60, 90]
        assert (run / "best_model.safetensors").exists()
        assert "eval/mean_reward" in (run / "progress.csv").read_text().splitlines()[0]
        if background:
            assert not cb._snapshots.exists()  # the snapshots are removed
    assert histories[True] == histories[False]
    assert [h[3] for h in histories[True]] == [False, True, True, True]
