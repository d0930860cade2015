"""``eqagent bench speed``: the EP agent and SB3 PPO side by side, in one process, one torch thread each.

Both learn the env from scratch under the evaluation protocol of ``eqagent run`` / ``compare``
(:class:`~eqagent.agents.evaluation.EvalHistoryCallback`: every ``eval_freq`` env steps, ``n_eval_episodes``
deterministic episodes; only evaluations after the first learning update count). Reported (medians over the
seeds; a figure a run cannot reach is ``null``):

* ``ep_ms_per_step`` / ``ppo_ms_per_step`` — training milliseconds per env step (evaluation excluded);
* ``ep_plan_ms`` — planning milliseconds per training action;
* ``ep_steps_to_threshold`` / ``ppo_steps_to_threshold`` — env steps to the first evaluation ≥ threshold;
* ``ep_wall_to_threshold_s`` / ``ppo_wall_to_threshold_s`` — training seconds to that evaluation;
* ``wall_ratio`` — EP / PPO of those seconds (the medians' ratio);
* ``vec_speedup_8`` — the EP agent's training env steps per second with 8 vectorised envs over 1 (steady state:
  timed after ``learning_starts``, same number of env steps).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import gymnasium as gym
import torch
from eqagent.agents.compare import make_sb3
from eqagent.agents.ep_agent import EPAgent
from eqagent.agents.evaluation import EvalHistoryCallback, summarize
from eqagent.agents.run import make_eval_env, reward_threshold

__all__ = ["SpeedBenchConfig", "run_speed_bench"]


@dataclass
class SpeedBenchConfig:
    """Settings of ``eqagent bench speed``.

    Attributes:
        env: Gymnasium id.
        seeds: Seeds 0 … seeds − 1 for both algorithms.
        ep_budget: Env steps of each EP run.
        ppo_budget: Env steps of each PPO run (rl-zoo settings).
        eval_freq: Evaluation period in env steps.
        n_eval_episodes: Deterministic episodes per evaluation.
        vec_steps: Env steps timed for the vectorised-env speed-up.
        vec_warmup: Env steps per env before that timing starts (after ``learning_starts``).
        threads: torch CPU threads (one, as the issue's figures).
    """

    env: str = "CartPole-v1"
    seeds: int = 3
    ep_budget: int = 3000
    ppo_budget: int = 30000
    eval_freq: int = 500
    n_eval_episodes: int = 10
    vec_steps: int = 800
    vec_warmup: int = 100
    threads: int = 1

    def __post_init__(self) -> None:
        if (
            min(
                self.seeds,
                self.ep_budget,
                self.ppo_budget,
                self.eval_freq,
                self.n_eval_episodes,
                self.vec_steps,
            )
            < 1
        ):
            raise ValueError("seeds, budgets, eval_freq, n_eval_episodes and vec_steps must be >= 1")


def _median(values: list) -> float | None:
    """Median of the reached values; ``None`` unless a majority of the runs reached it."""
    reached = [v for v in values if v is not None]
    if len(reached) * 2 <= len(values):
        return None
    return statistics.median([v if v is not None else float("inf") for v in values])


def _train(model, env_id: str, seed: int, budget: int, cfg: SpeedBenchConfig) -> dict:
    eval_env = make_eval_env(env_id, seed)
    cb = EvalHistoryCallback(eval_env, cfg.eval_freq, cfg.n_eval_episodes, budget=budget)
    t0 = time.perf_counter()
    model.learn(budget, callback=cb)
    train = cb.train_seconds(time.perf_counter())
    return {"train_seconds": train, "steps": model.num_timesteps, "history": cb.history,
            **summarize(cb.history, reward_threshold(env_id)), "wall": time.perf_counter() - t0}  # fmt: skip


def _steps_per_second(env_id: str, n_envs: int, steps: int, warmup: int, seed: int) -> float:
    env = gym.make_vec(env_id, n_envs, vectorization_mode="sync") if n_envs > 1 else env_id
    agent = EPAgent(env, seed=seed)
    warm = agent.config.learning_starts + warmup * n_envs
    agent.learn(warm)
    t0 = time.perf_counter()
    agent.learn(steps, reset_num_timesteps=False)
    return steps / (time.perf_counter() - t0)


def run_speed_bench(cfg: SpeedBenchConfig) -> dict:
    torch.set_num_threads(cfg.threads)
    threshold = reward_threshold(cfg.env)
    ep_runs, ppo_runs = [], []
    for seed in range(cfg.seeds):
        agent = EPAgent(cfg.env, seed=seed)
        run = _train(agent, cfg.env, seed, cfg.ep_budget, cfg)
        run["plan_ms"] = agent.ms_per_action
        ep_runs.append(run)
        model, _ = make_sb3("ppo", cfg.env, seed)
        ppo_runs.append(_train(model, cfg.env, seed, cfg.ppo_budget, cfg))
    sps1 = _steps_per_second(cfg.env, 1, cfg.vec_steps, cfg.vec_warmup, 0)
    sps8 = _steps_per_second(cfg.env, 8, cfg.vec_steps, cfg.vec_warmup, 0)
    ep_wall = _median([r["train_seconds_to_threshold"] for r in ep_runs])
    ppo_wall = _median([r["train_seconds_to_threshold"] for r in ppo_runs])
    per_run = [{"algo": algo, "seed": i, **{k: v for k, v in r.items() if k != "history"},
                "evaluations": r["history"]}
               for algo, runs in (("ep", ep_runs), ("ppo", ppo_runs)) for i, r in enumerate(runs)]  # fmt: skip
    return {
        "env": cfg.env,
        "threshold": threshold,
        "threads": cfg.threads,
        "ep_ms_per_step": statistics.median(1e3 * r["train_seconds"] / r["steps"] for r in ep_runs),
        "ep_plan_ms": statistics.median(r["plan_ms"] for r in ep_runs),
        "ppo_ms_per_step": statistics.median(1e3 * r["train_seconds"] / r["steps"] for r in ppo_runs),
        "ep_steps_to_threshold": _median([r["steps_to_threshold"] for r in ep_runs]),
        "ppo_steps_to_threshold": _median([r["steps_to_threshold"] for r in ppo_runs]),
        "ep_steps_to_threshold_held": _median([r["steps_to_threshold_held"] for r in ep_runs]),
        "ep_wall_to_threshold_s": ep_wall,
        "ppo_wall_to_threshold_s": ppo_wall,
        "wall_ratio": ep_wall / ppo_wall if ep_wall is not None and ppo_wall else None,
        "ep_steps_per_second_1": sps1,
        "ep_steps_per_second_8": sps8,
        "vec_speedup_8": sps8 / sps1,
        "runs": per_run,
    }
