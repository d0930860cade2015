"""``eqagent compare``: the EP agent side by side with Stable-Baselines3 on one env, one protocol for all.

Every algorithm trains on the same seeds and step budget (SB3 with the rl-baselines3-zoo settings of
:mod:`eqagent.agents.zoo`, the EP agent with its preset) and is evaluated the same way, EvalCallback-style: every
``eval_every`` env steps, ``eval_episodes`` deterministic episodes on a separate Monitor-wrapped env
(:func:`stable_baselines3.common.evaluation.evaluate_policy`). Runs go to worker processes (one torch thread each).

Outputs in ``out``: ``evaluations_{env}.csv`` (every evaluation), ``summary_{env}.md`` (one table row per algorithm),
``curves_{env}.png`` (mean and min–max band over seeds vs env steps, threshold line) and ``summary_{env}.json``;
TensorBoard runs ``{env}__{algo}__{seed}__{time}_1`` under ``logdir`` with the same tags for every algorithm
(``eval/mean_reward``, ``rollout/ep_rew_mean``, ``rollout/ep_len_mean``, ``time/fps``).
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import eqagent.envs  # noqa: F401  (registers eqagent ids)
import gymnasium as gym
import numpy as np
from eqagent.agents.run import reward_threshold
from eqagent.agents.zoo import ZOO, zoo_hyperparams

__all__ = ["CompareConfig", "run_compare", "summarize"]

SB3_ALGOS = ("ppo", "dqn", "sac")


@dataclass
class CompareConfig:
    """Settings of ``eqagent compare``.

    Attributes:
        env: Gymnasium id.
        algos: Comma-separated algorithms among ``ep`` and the SB3 ones (``ppo``, ``dqn``, ``sac``); empty: ``ep``
            plus every SB3 algorithm the zoo tunes for the env that fits its action space.
        seeds: Number of seeds (0 … seeds − 1).
        total_timesteps: Env steps per run (every algorithm).
        budgets: Per-algorithm overrides of ``total_timesteps``, ``algo=N`` comma-separated (e.g. ``ep=3000``).
        eval_every: Evaluation period in env steps.
        eval_episodes: Deterministic episodes per evaluation.
        logdir: Root of the TensorBoard runs (empty: none).
        out: Directory of the CSV, markdown, PNG and JSON outputs.
        workers: Parallel processes (0: one per CPU core).
        progress_bar: A progress bar per run.
    """

    env: str = "CartPole-v1"
    algos: str = ""
    seeds: int = 3
    total_timesteps: int = 10000
    budgets: str = ""
    eval_every: int = 1000
    eval_episodes: int = 10
    logdir: str = "runs"
    out: str = "compare"
    workers: int = 0
    progress_bar: bool = True

    def __post_init__(self) -> None:
        if self.seeds < 1 or self.total_timesteps < 1 or self.eval_every < 1 or self.eval_episodes < 1:
            raise ValueError("seeds, total_timesteps, eval_every and eval_episodes must be >= 1")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")

    def algo_list(self) -> list[str]:
        if self.algos.strip():
            algos = [a.strip().lower() for a in self.algos.split(",") if a.strip()]
        else:
            kind = type(gym.make(self.env).action_space).__name__
            fits = {"ppo": True, "dqn": kind == "Discrete", "sac": kind == "Box"}
            algos = ["ep", *[a for a in SB3_ALGOS if self.env in ZOO[a] and fits[a]]]
        bad = [a for a in algos if a != "ep" and a not in SB3_ALGOS]
        if bad:
            raise ValueError(f"unknown algorithm(s) {bad}; choose from ep, {', '.join(SB3_ALGOS)}")
        if len(set(algos)) != len(algos):
            raise ValueError(f"algorithms listed twice: {algos}")
        return algos

    def budget(self, algo: str) -> int:
        for item in filter(None, (s.strip() for s in self.budgets.split(","))):
            name, sep, value = item.partition("=")
            if not sep or not value.strip().isdigit() or int(value) < 1:
                raise ValueError(f"budgets must read algo=N with N >= 1, got {item!r}")
            if name.strip().lower() == algo:
                return int(value)
        return self.total_timesteps


# ---------------------------------------------------------------------------------------------------------------
# One run (executed in a worker process)
def _slug(env_id: str) -> str:
    """An env id usable in file names (``eqagent/LineWorld-v0`` → ``eqagent_LineWorld-v0``)."""
    return env_id.replace("/", "_")


def _schedule(value):
    """The zoo's ``"lin_X"`` → SB3's linear schedule from X to 0; numbers pass through."""
    if isinstance(value, str):
        if not value.startswith("lin_"):
            raise ValueError(f"unsupported schedule {value!r} (only lin_X)")
        start = float(value[4:])
        return lambda progress_remaining: progress_remaining * start
    return value


def _make_sb3(algo: str, env_id: str, seed: int, tensorboard_log: str | None = None):
    """An SB3 model with the zoo settings, and the eval env (synced normalisation when the zoo normalises)."""
    from stable_baselines3 import DQN, PPO, SAC
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    hp, _ = zoo_hyperparams(algo, env_id)
    n_envs = int(hp.pop("n_envs", 1))
    normalize = bool(hp.pop("normalize", False))
    for key in ("learning_rate", "clip_range"):
        if key in hp:
            hp[key] = _schedule(hp[key])
    venv = make_vec_env(env_id, n_envs=n_envs, seed=seed)
    eval_env = DummyVecEnv([lambda: Monitor(gym.make(env_id))])
    if normalize:
        venv = VecNormalize(venv, gamma=hp.get("gamma", 0.99))
        eval_env = VecNormalize(eval_env, training=False, norm_reward=False)
    eval_env.seed(seed + 10_000)
    cls = {"ppo": PPO, "dqn": DQN, "sac": SAC}[algo]
    model = cls("MlpPolicy", venv, seed=seed, verbose=0, tensorboard_log=tensorboard_log, **hp)
    return model, eval_env


def _summary_of_evals(evals: list[dict], threshold: float | None, budget: int) -> dict:
    steps = [e["step"] for e in evals]
    hits = [threshold is not None and e["mean"] >= threshold for e in evals]
    first = next((s for s, h in zip(steps, hits) if h), None)
    held = None
    for i in range(2, len(hits)):
        if hits[i] and hits[i - 1] and hits[i - 2]:
            held = steps[i]
            break
    final = evals[-1] if evals else {"mean": math.nan, "std": math.nan}
    return {"steps_to_threshold": first, "steps_to_threshold_3": held, "final_mean": final["mean"],
            "final_std": final["std"], "budget": budget}  # fmt: skip


def run_one(algo: str, env_id: str, seed: int, budget: int, cfg: dict, position: int = 0) -> dict:
    """Trains one algorithm for one seed with periodic evaluation; returns its evaluations and timings."""
    import torch
    from stable_baselines3.common.evaluation import evaluate_policy

    torch.set_num_threads(1)
    c = CompareConfig(**cfg)
    name = f"{_slug(env_id)}__{algo}__{seed}__{int(time.time())}"
    threshold = reward_threshold(env_id)
    evals: list[dict] = []
    eval_seconds = [0.0]
    t_start = time.perf_counter()
    bar = None
    if c.progress_bar:
        from tqdm import tqdm

        bar = tqdm(total=budget, desc=f"{algo} seed {seed}", position=position, leave=True)

    def evaluate(model, eval_env, step: int, logger) -> None:
        t0 = time.perf_counter()
        if hasattr(eval_env, "obs_rms") and hasattr(model, "get_vec_normalize_env"):
            from stable_baselines3.common.vec_env import sync_envs_normalization

            sync_envs_normalization(model.get_env(), eval_env)
        mean, std = evaluate_policy(model, eval_env, n_eval_episodes=c.eval_episodes, deterministic=True)
        eval_seconds[0] += time.perf_counter() - t0
        evals.append({"step": step, "mean": float(mean), "std": float(std)})
        logger.record("eval/mean_reward", float(mean))
        logger.record("eval/std_reward", float(std))
        infos = getattr(model, "ep_info_buffer", None)  # SB3 logs these only at its own dumps (per rollout)
        if infos:
            logger.record("rollout/ep_rew_mean", float(np.mean([i["r"] for i in infos])))
            logger.record("rollout/ep_len_mean", float(np.mean([i["l"] for i in infos])))
            logger.record("time/fps", step / max(time.perf_counter() - t_start - eval_seconds[0], 1e-9))
        logger.dump(step)

    if algo == "ep":
        from eqagent.agents.ep_agent import EPAgent
        from stable_baselines3.common.monitor import Monitor

        agent = EPAgent(env_id, tensorboard_log=c.logdir or None, seed=seed)
        eval_env = Monitor(gym.make(env_id))
        eval_env.reset(seed=seed + 10_000)

        def ep_callback(local: dict) -> bool:
            if bar is not None:
                bar.update(1)
            if agent.num_timesteps % c.eval_every == 0:
                plans, secs = agent.plans, agent.plan_seconds
                evaluate(agent, eval_env, agent.num_timesteps, agent.logger)
                agent.plans, agent.plan_seconds = plans, secs
                agent.planner.reset()
            return True

        agent.learn(budget, callback=ep_callback, tb_log_name=name)
        run_dir = agent.logger.run_dir
    else:
        from stable_baselines3.common.callbacks import BaseCallback

        model, eval_env = _make_sb3(algo, env_id, seed, c.logdir or None)

        class _Eval(BaseCallback):
            def __init__(self) -> None:
                super().__init__()
                self.next_eval = c.eval_every
                self.last = 0

            def _on_step(self) -> bool:
                if bar is not None:
                    bar.update(min(self.num_timesteps, budget) - self.last)
                self.last = min(self.num_timesteps, budget)
                while self.num_timesteps >= self.next_eval and self.next_eval <= budget:
                    evaluate(self.model, eval_env, self.next_eval, self.logger)
                    self.next_eval += c.eval_every
                return self.num_timesteps < budget

        model.learn(budget, callback=_Eval(), tb_log_name=name)
        run_dir = Path(model.logger.dir) if model.logger.dir else None
    wall = time.perf_counter() - t_start
    if bar is not None:
        bar.close()
    train_seconds = max(wall - eval_seconds[0], 1e-9)
    return {"algo": algo, "env": env_id, "seed": seed, "evaluations": evals, "wall_seconds": wall,
            "train_seconds": train_seconds, "env_steps_per_second": budget / train_seconds,
            "run_dir": str(run_dir) if run_dir else None,
            **_summary_of_evals(evals, threshold, budget)}  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# Aggregation and outputs
def _median_steps(values: list) -> float:
    """Median of steps where ``None`` (not reached) counts as above the budget (``inf``)."""
    return float(np.median([math.inf if v is None else v for v in values]))


def _med(values: list, budget: int) -> str:
    """``median (min–max)`` of steps, unreached seeds shown as ``> budget``."""
    if not values:
        return "—"
    keyed = [math.inf if v is None else v for v in values]
    fmt = lambda v: f"> {budget:,}" if math.isinf(v) else f"{int(v):,}"  # noqa: E731
    return f"{fmt(_median_steps(values))} ({fmt(min(keyed))}–{fmt(max(keyed))})"


def summarize(runs: list[dict], threshold: float | None) -> dict[str, dict]:
    """Per-algorithm summary over seeds (JSON-ready)."""
    out: dict[str, dict] = {}
    for algo in dict.fromkeys(r["algo"] for r in runs):
        rs = [r for r in runs if r["algo"] == algo]
        budget = rs[0]["budget"]
        reached = [r["steps_to_threshold"] for r in rs]
        held = [r["steps_to_threshold_3"] for r in rs]
        finals = np.array([r["final_mean"] for r in rs], dtype=float)

        def median_or_none(v: list) -> float | None:
            m = _median_steps(v)
            return None if math.isinf(m) else m

        out[algo] = {
            "seeds": len(rs),
            "budget": budget,
            "threshold": threshold,
            "steps_to_threshold": reached,
            "steps_to_threshold_median": median_or_none(reached),
            "steps_to_threshold_3": held,
            "steps_to_threshold_3_median": median_or_none(held),
            "final_mean": float(finals.mean()),
            "final_std": float(finals.std()),
            "wall_seconds_median": float(np.median([r["wall_seconds"] for r in rs])),
            "env_steps_per_second_median": float(np.median([r["env_steps_per_second"] for r in rs])),
            "table": {
                "steps_to_threshold": _med(reached, budget) if threshold is not None else "— (no threshold)",
                "steps_to_threshold_3": _med(held, budget) if threshold is not None else "— (no threshold)",
            },
        }
    return out


def _markdown(env_id: str, summary: dict[str, dict], cfg: CompareConfig) -> str:
    thr = next(iter(summary.values()))["threshold"]
    lines = [
        f"### {env_id} ({'no reward threshold' if thr is None else f'threshold {thr:g}'}; {cfg.seeds} seeds; "
        f"eval every {cfg.eval_every:,} steps, "
        f"{cfg.eval_episodes} deterministic episodes)",
        "",
        "| algorithm | budget | steps to threshold, median (min–max) | steps to 3 evals in a row ≥ threshold, "
        "median (min–max) | final eval, mean ± std over seeds | wall s (median) | env steps/s (median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for algo, s in summary.items():
        lines.append(
            f"| {algo} | {s['budget']:,} | {s['table']['steps_to_threshold']} | {s['table']['steps_to_threshold_3']} "
            f"| {s['final_mean']:.1f} ± {s['final_std']:.1f} | {s['wall_seconds_median']:.0f} "
            f"| {s['env_steps_per_second_median']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def _plot(env_id: str, runs: list[dict], threshold: float | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for algo in dict.fromkeys(r["algo"] for r in runs):
        curves = [{e["step"]: e["mean"] for e in r["evaluations"]} for r in runs if r["algo"] == algo]
        steps = sorted(set().union(*curves))
        vals = [[c[s] for c in curves if s in c] for s in steps]
        mean = [float(np.mean(v)) for v in vals]
        ax.plot(steps, mean, marker="o", ms=3, label=f"{algo} ({len(curves)} seeds)")
        ax.fill_between(steps, [min(v) for v in vals], [max(v) for v in vals], alpha=0.2)
    if threshold is not None:
        ax.axhline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:g}")
    ax.set_xlabel("env steps")
    ax.set_ylabel("eval mean return")
    ax.set_title(env_id)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_compare(cfg: CompareConfig) -> dict:
    """Runs every (algorithm, seed) of ``cfg`` and writes the outputs; returns the per-algorithm summary."""
    gym.spec(cfg.env)  # unknown ids fail here, before any worker starts
    algos = cfg.algo_list()
    kind = type(gym.make(cfg.env).action_space).__name__
    if "dqn" in algos and kind != "Discrete":
        raise ValueError(f"dqn needs a Discrete action space; {cfg.env} has {kind}")
    if "sac" in algos and kind != "Box":
        raise ValueError(f"sac needs a Box action space; {cfg.env} has {kind}")
    jobs = [(a, s) for a in algos for s in range(cfg.seeds)]
    workers = min(len(jobs), cfg.workers or os.cpu_count() or 1)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    args = asdict(cfg)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        futures = [
            pool.submit(run_one, a, cfg.env, s, cfg.budget(a), args, i % workers)
            for i, (a, s) in enumerate(jobs)
        ]
        runs = [f.result() for f in futures]
    threshold = reward_threshold(cfg.env)
    with open(out / f"evaluations_{_slug(cfg.env)}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["env", "algo", "seed", "step", "eval_mean", "eval_std"])
        for r in runs:
            for e in r["evaluations"]:
                w.writerow([r["env"], r["algo"], r["seed"], e["step"], e["mean"], e["std"]])
    summary = summarize(runs, threshold)
    (out / f"summary_{_slug(cfg.env)}.md").write_text(_markdown(cfg.env, summary, cfg))
    _plot(cfg.env, runs, threshold, out / f"curves_{_slug(cfg.env)}.png")
    result = {"env": cfg.env, "algos": summary, "seconds": time.perf_counter() - t0,
              "runs": [{k: v for k, v in r.items() if k != "evaluations"} for r in runs]}  # fmt: skip
    (out / f"summary_{_slug(cfg.env)}.json").write_text(json.dumps(result, indent=1, default=float))
    return result
