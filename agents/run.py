"""``eqagent run``: train :class:`EPAgent` on a Gym id with periodic deterministic evaluation (SB3's
``EvalCallback``, through :class:`~eqagent.agents.evaluation.EvalHistoryCallback`)."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import gymnasium as gym
from eqagent.agents.config import read_config_file
from eqagent.agents.envs import check_env_id
from eqagent.agents.ep_agent import EPAgent
from eqagent.agents.evaluation import EvalHistoryCallback, plot_curves, summarize
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

from eqagent.configs import parse_assignment

__all__ = ["THRESHOLDS", "RunConfig", "make_eval_env", "plot_curve", "reward_threshold", "run_agent"]

THRESHOLDS = {"Pendulum-v1": -200.0}


def reward_threshold(env_id: str) -> float | None:
    """The solved-threshold of ``env_id``: :data:`THRESHOLDS` (the issues' figures), else the registry's."""
    return THRESHOLDS.get(env_id, getattr(gym.spec(env_id), "reward_threshold", None))


def make_eval_env(env_id: str, seed: int) -> DummyVecEnv:
    """The evaluation env of every run: one Monitor-wrapped env, its first reset seeded ``seed + 10_000``."""
    env = DummyVecEnv([lambda: Monitor(gym.make(env_id))])
    env.seed(seed + 10_000)
    return env


@dataclass
class RunConfig:
    """Settings of ``eqagent run``.

    Attributes:
        env: Gymnasium id.
        total_timesteps: Env steps of training.
        seed: Random seed.
        n_envs: Vectorised copies of the env (planned for in one batched call).
        device: ``cpu`` or a CUDA device.
        preference: Shipped preference name (empty: learned reward and termination only).
        eval_freq: Evaluation period in env steps (also ``--eval-every``).
        n_eval_episodes: Deterministic episodes per evaluation (also ``--eval-episodes``).
        tensorboard_log: Root of TensorBoard runs (empty: none); the run's config, evaluations, best model and
            learning-curve PNG go to its run folder.
        progress_bar: Show a progress bar.
        eval_background: Evaluate in a background process while training goes on (snapshots of the agent, the
            same episodes and scores as in-line evaluation; it uses a second core, and training then defaults to
            one thread fewer than the cores).
        threads: torch CPU threads (0: default).
        set: Agent config overrides ``FIELD=VALUE`` (e.g. ``planner.horizon=25 world_model.lr=3e-4``).
        config: A JSON/YAML file of agent config fields (``--set`` applies on top).
        save: Save the trained agent to this path (``.safetensors`` appended).
        load: Continue training an agent saved at this path (its saved config; no ``--set``/``--config``).
    """

    env: str = "CartPole-v1"
    total_timesteps: int = 3000
    seed: int = 0
    n_envs: int = 1
    device: str = "cpu"
    preference: str = ""
    eval_freq: int = field(default=500, metadata={"aliases": ("--eval-every",)})
    n_eval_episodes: int = field(default=10, metadata={"aliases": ("--eval-episodes",)})
    tensorboard_log: str = "runs"
    progress_bar: bool = False
    eval_background: bool = True
    threads: int = 0
    set: tuple[str, ...] = ()
    config: str = ""
    save: str = ""
    load: str = ""

    def __post_init__(self) -> None:
        if self.total_timesteps < 1 or self.eval_freq < 1 or self.n_eval_episodes < 1 or self.n_envs < 1:
            raise ValueError(
                f"total_timesteps, eval_freq, n_eval_episodes and n_envs must be >= 1, got {self.total_timesteps}, "
                f"{self.eval_freq}, {self.n_eval_episodes}, {self.n_envs}"
            )
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, got {self.threads}")
        if self.load and (self.set or self.config):
            raise ValueError("--load continues the saved agent with its saved config: drop --set/--config")


def plot_curve(history: list[dict], threshold: float | None, path: Path, title: str) -> Path:
    """The run's evaluation curve (mean ± std over its evaluation episodes) as a PNG."""
    steps = [e["step"] for e in history]
    mean = [e["mean"] for e in history]
    std = [0.0 if math.isnan(e["std"]) else e["std"] for e in history]
    band = ([m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)])
    plot_curves({"eval mean return (± std)": (steps, mean, *band)}, threshold, path, title)
    return path


def run_agent(cfg: RunConfig) -> dict:
    """Trains (or continues) an agent with periodic evaluation; returns the run's figures."""
    import torch

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    elif cfg.eval_background:  # leave a core to the evaluator
        torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
    check_env_id(cfg.env)
    env = gym.make_vec(cfg.env, cfg.n_envs, vectorization_mode="sync") if cfg.n_envs > 1 else cfg.env
    log = cfg.tensorboard_log or None
    if cfg.load:
        agent = EPAgent.load(cfg.load, env=env, tensorboard_log=log, device=cfg.device)
    else:
        overrides = read_config_file(cfg.config) if cfg.config else {}
        overrides.update(parse_assignment(item) for item in cfg.set)
        if cfg.preference:
            overrides["preference"] = cfg.preference
        agent = EPAgent(env, tensorboard_log=log, seed=cfg.seed, device=cfg.device, **overrides)
    threshold = reward_threshold(cfg.env)
    background = partial(make_eval_env, cfg.env, cfg.seed) if cfg.eval_background else None
    eval_cb = EvalHistoryCallback(make_eval_env(cfg.env, cfg.seed), cfg.eval_freq, cfg.n_eval_episodes,
                                  files_to_run_dir=True, background=background)  # fmt: skip
    start = agent.num_timesteps
    t0 = time.perf_counter()
    agent.learn(cfg.total_timesteps, callback=eval_cb, progress_bar=cfg.progress_bar, tb_log_name=f"EPAgent_{cfg.env.replace('/', '_')}",
                reset_num_timesteps=not cfg.load)  # fmt: skip
    wall = time.perf_counter() - t0
    run_dir = agent.logger.get_dir()
    png = None
    if run_dir:
        png = str(plot_curve(eval_cb.history, threshold, Path(run_dir) / "learning_curve.png", cfg.env))
    saved = str(agent.save(cfg.save)) if cfg.save else None
    train = max(wall - eval_cb.eval_seconds, 1e-9)
    steps = agent.num_timesteps - start
    summary = summarize(eval_cb.history, threshold)
    return {
        "env": cfg.env,
        "seed": agent.seed,
        "n_envs": agent.n_envs,
        **summary,
        "eval_mean": summary["final_mean"],
        "eval_std": summary["final_std"],
        "evaluations": eval_cb.history,
        "wall_seconds": wall,
        "train_seconds": train,
        "ms_per_step": 1e3 * train / max(steps, 1),
        "ms_per_action": agent.ms_per_action,
        "run_dir": run_dir,
        "learning_curve": png,
        "saved": saved,
    }
