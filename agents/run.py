"""``eqagent run``: train :class:`EPAgent` on a Gym id with periodic deterministic evaluation."""

from __future__ import annotations

import time
from dataclasses import dataclass

import eqagent.envs  # noqa: F401  (registers eqagent ids)
import gymnasium as gym
from eqagent.agents.ep_agent import EPAgent
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

__all__ = ["THRESHOLDS", "RunConfig", "reward_threshold", "run_agent"]

THRESHOLDS = {"CartPole-v1": 475.0, "Pendulum-v1": -200.0}


def reward_threshold(env_id: str) -> float | None:
    """The solved-threshold of ``env_id``: :data:`THRESHOLDS` (the issues' figures), else the registry's."""
    return THRESHOLDS.get(env_id, getattr(gym.spec(env_id), "reward_threshold", None))


@dataclass
class RunConfig:
    """Settings of ``eqagent run``.

    Attributes:
        env: Gymnasium id.
        total_timesteps: Env steps of training.
        seed: Random seed.
        preference: Shipped preference name, ``module:callable``, or empty (learned reward and termination only).
        eval_every: Evaluation period in env steps.
        eval_episodes: Deterministic episodes per evaluation (on a separate, Monitor-wrapped env).
        tensorboard_log: Root of TensorBoard runs (empty: none).
        progress_bar: Show a progress bar.
        threads: torch CPU threads (0: default).
    """

    env: str = "CartPole-v1"
    total_timesteps: int = 3000
    seed: int = 0
    preference: str = ""
    eval_every: int = 500
    eval_episodes: int = 10
    tensorboard_log: str = "runs"
    progress_bar: bool = False
    threads: int = 0


def run_agent(cfg: RunConfig) -> dict:
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    agent = EPAgent(cfg.env, tensorboard_log=cfg.tensorboard_log or None, seed=cfg.seed,
                    preference=cfg.preference or None)  # fmt: skip
    eval_env = Monitor(gym.make(cfg.env))
    eval_env.reset(seed=cfg.seed + 10_000)
    threshold = reward_threshold(cfg.env)
    evals: list[dict] = []

    def callback(local: dict) -> bool:
        if agent.num_timesteps % cfg.eval_every == 0:
            plans, secs = agent.plans, agent.plan_seconds  # evaluation latency is not training latency
            mean, std = evaluate_policy(
                agent, eval_env, n_eval_episodes=cfg.eval_episodes, deterministic=True
            )
            agent.plans, agent.plan_seconds = plans, secs
            agent.planner.reset()
            evals.append({"step": agent.num_timesteps, "mean": float(mean), "std": float(std)})
            agent.logger.record("eval/mean_reward", float(mean))
            agent.logger.dump(agent.num_timesteps)
        return True

    t0 = time.perf_counter()
    agent.learn(
        cfg.total_timesteps,
        callback=callback,
        progress_bar=cfg.progress_bar,
        tb_log_name=f"EPAgent_{cfg.env}",
    )
    wall = time.perf_counter() - t0
    hits = [e["step"] for e in evals if threshold is not None and e["mean"] >= threshold]
    final = evals[-1] if evals else {"mean": float("nan"), "std": float("nan")}
    return {
        "env": cfg.env,
        "seed": cfg.seed,
        "preference": cfg.preference,
        "threshold": threshold,
        "steps_to_threshold": hits[0] if hits else None,
        "eval_mean": final["mean"],
        "eval_std": final["std"],
        "evaluations": evals,
        "wall_seconds": wall,
        "ms_per_action": agent.ms_per_action,
        "run_dir": str(agent.logger.run_dir) if agent.logger.run_dir else None,
    }
