"""``eqagent compare``: the EP agent side by side with Stable-Baselines3 on one env, one protocol for all.

Every algorithm trains on the same seeds and step budget (SB3 with the rl-baselines3-zoo settings of
:mod:`eqagent.agents.zoo`, the EP agent with its defaults) and is evaluated the same way, by SB3's
``EvalCallback`` (:class:`~eqagent.agents.evaluation.EvalHistoryCallback`): before training, then every
``eval_freq`` env steps, ``n_eval_episodes`` deterministic episodes on a separate Monitor-wrapped env. Steps to
the threshold count only evaluations after the algorithm's first learning update; the pre-learning score is
reported apart. Runs go to worker processes (one torch thread each), or with ``backend="ray"`` to Ray tasks
on this machine or a cluster (same outputs).

Outputs in ``out``: ``evaluations_{env}.csv`` (every evaluation), ``summary_{env}.md`` (one table row per algorithm),
``curves_{env}.png`` (mean and min–max band over seeds vs env steps, threshold line) and ``summary_{env}.json``;
TensorBoard runs ``{env}__{algo}__{seed}__{time}_1`` under ``logdir`` with the same tags for every algorithm
(``eval/mean_reward``, ``eval/mean_ep_length``, ``rollout/ep_rew_mean``, ``rollout/ep_len_mean``, ``time/fps``).
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import eqagent.envs  # noqa: F401  (registers eqagent ids)
import gymnasium as gym
import numpy as np
from eqagent.agents.envs import check_env_id
from eqagent.agents.ep_agent import EPAgent
from eqagent.agents.evaluation import EvalHistoryCallback, format_steps, median_steps, plot_curves
from eqagent.agents.evaluation import summarize as summarize_evals
from eqagent.agents.run import make_eval_env, reward_threshold
from eqagent.agents.zoo import ZOO, zoo_hyperparams
from stable_baselines3.common.callbacks import BaseCallback

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
        eval_freq: Evaluation period in env steps (also ``--eval-every``).
        n_eval_episodes: Deterministic episodes per evaluation (also ``--eval-episodes``).
        tensorboard_log: Root of the TensorBoard runs (empty: none; also ``--logdir``).
        out: Directory of the CSV, markdown, PNG and JSON outputs.
        workers: Parallel processes (0: one per CPU core); with ``backend="ray"`` embedded, Ray's CPUs.
        progress_bar: A progress bar per run (``process`` backend only).
        backend: ``process`` (a local process pool, the default) or ``ray`` (one Ray task per run, one CPU each;
            needs ``pip install 'eqagent[ray]'``).
        address: With ``backend="ray"``: empty for embedded Ray on this machine, ``auto`` or ``HOST:PORT`` to
            join a running cluster (:mod:`eqagent.agents.cluster`).
    """

    env: str = "CartPole-v1"
    algos: str = ""
    seeds: int = 3
    total_timesteps: int = 10000
    budgets: str = ""
    eval_freq: int = field(default=1000, metadata={"aliases": ("--eval-every",)})
    n_eval_episodes: int = field(default=10, metadata={"aliases": ("--eval-episodes",)})
    tensorboard_log: str = field(default="runs", metadata={"aliases": ("--logdir",)})
    out: str = "compare"
    workers: int = 0
    progress_bar: bool = True
    backend: str = "process"
    address: str = ""

    def __post_init__(self) -> None:
        if self.seeds < 1 or self.total_timesteps < 1 or self.eval_freq < 1 or self.n_eval_episodes < 1:
            raise ValueError("seeds, total_timesteps, eval_freq and n_eval_episodes must be >= 1")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.backend not in ("process", "ray"):
            raise ValueError(f"backend must be 'process' or 'ray', got {self.backend!r}")
        if self.address and self.backend != "ray":
            raise ValueError("address joins a Ray cluster: it needs backend='ray'")

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


def make_sb3(algo: str, env_id: str, seed: int, tensorboard_log: str | None = None):
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


def run_one(algo: str, env_id: str, seed: int, budget: int, cfg: dict, position: int = 0) -> dict:
    """Trains one algorithm for one seed with the evaluation protocol of
    :class:`~eqagent.agents.evaluation.EvalHistoryCallback`; returns its evaluations, timings and figures."""
    import torch

    torch.set_num_threads(1)
    c = CompareConfig(**cfg)
    name = f"{_slug(env_id)}__{algo}__{seed}__{int(time.time())}"
    t_start = time.perf_counter()
    if algo == "ep":
        model = EPAgent(env_id, tensorboard_log=c.tensorboard_log or None, seed=seed)
        eval_env = make_eval_env(env_id, seed)
    else:
        model, eval_env = make_sb3(algo, env_id, seed, c.tensorboard_log or None)
    eval_cb = EvalHistoryCallback(eval_env, c.eval_freq, c.n_eval_episodes, budget=budget)
    callbacks: list = [eval_cb]
    if c.progress_bar:
        callbacks.append(_PositionedBar(budget, f"{algo} seed {seed}", position))
    model.learn(budget, callback=callbacks, tb_log_name=name)
    wall = time.perf_counter() - t_start
    train_seconds = max(wall - eval_cb.eval_seconds, 1e-9)
    run_dir = model.logger.get_dir()
    return {"algo": algo, "env": env_id, "seed": seed, "evaluations": eval_cb.history, "wall_seconds": wall,
            "train_seconds": train_seconds, "env_steps_per_second": model.num_timesteps / train_seconds,
            "budget": budget, "run_dir": run_dir,
            **summarize_evals(eval_cb.history, reward_threshold(env_id))}  # fmt: skip


class _PositionedBar(BaseCallback):
    """One tqdm bar per parallel run (``position`` keeps them on separate lines)."""

    def __init__(self, total: int, desc: str, position: int) -> None:
        super().__init__()
        self.total, self.desc, self.position, self.pbar = total, desc, position, None

    def _on_training_start(self) -> None:
        from tqdm import tqdm

        self.pbar = tqdm(total=self.total, desc=self.desc, position=self.position, leave=True)

    def _on_step(self) -> bool:
        self.pbar.update(min(self.num_timesteps, self.total) - self.pbar.n)
        return True

    def _on_training_end(self) -> None:
        self.pbar.close()


# ---------------------------------------------------------------------------------------------------------------
# Aggregation and outputs
def summarize(runs: list[dict], threshold: float | None) -> dict[str, dict]:
    """Per-algorithm summary over seeds (JSON-ready)."""
    out: dict[str, dict] = {}
    for algo in dict.fromkeys(r["algo"] for r in runs):
        rs = [r for r in runs if r["algo"] == algo]
        budget = rs[0]["budget"]
        reached = [r["steps_to_threshold"] for r in rs]
        held = [r["steps_to_threshold_held"] for r in rs]
        finals = np.array([r["final_mean"] for r in rs], dtype=float)
        pre = [r["pre_learning_mean"] for r in rs if r.get("pre_learning_mean") is not None]

        def median_or_none(v: list) -> float | None:
            m = median_steps(v)
            return None if math.isinf(m) else m

        out[algo] = {
            "seeds": len(rs),
            "budget": budget,
            "threshold": threshold,
            "steps_to_threshold": reached,
            "steps_to_threshold_median": median_or_none(reached),
            "steps_to_threshold_held": held,
            "steps_to_threshold_held_median": median_or_none(held),
            "pre_learning_mean": float(np.mean(pre)) if pre else None,
            "final_mean": float(finals.mean()),
            "final_std": float(finals.std()),
            "wall_seconds_median": float(np.median([r["wall_seconds"] for r in rs])),
            "env_steps_per_second_median": float(np.median([r["env_steps_per_second"] for r in rs])),
            "table": {
                "steps_to_threshold": format_steps(reached, budget)
                if threshold is not None
                else "— (no threshold)",
                "steps_to_threshold_held": format_steps(held, budget)
                if threshold is not None
                else "— (no threshold)",
            },
        }
    return out


def _markdown(env_id: str, summary: dict[str, dict], cfg: CompareConfig) -> str:
    thr = next(iter(summary.values()))["threshold"]
    lines = [
        f"### {env_id} ({'no reward threshold' if thr is None else f'threshold {thr:g}'}; {cfg.seeds} seeds; "
        f"eval every {cfg.eval_freq:,} steps, {cfg.n_eval_episodes} deterministic episodes)",
        "",
        "| algorithm | budget | steps to threshold (after learning), median (min–max) | steps to threshold held "
        "(every later eval ≥ threshold), median (min–max) | pre-learning score | final eval, mean ± std over seeds "
        "| wall s (median) | env steps/s (median) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for algo, s in summary.items():
        pre = "—" if s["pre_learning_mean"] is None else f"{s['pre_learning_mean']:.1f}"
        lines.append(
            f"| {algo} | {s['budget']:,} | {s['table']['steps_to_threshold']} | {s['table']['steps_to_threshold_held']} "
            f"| {pre} | {s['final_mean']:.1f} ± {s['final_std']:.1f} | {s['wall_seconds_median']:.0f} "
            f"| {s['env_steps_per_second_median']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def _plot(env_id: str, runs: list[dict], threshold: float | None, path: Path) -> None:
    curves = {}
    for algo in dict.fromkeys(r["algo"] for r in runs):
        per_seed = [{e["step"]: e["mean"] for e in r["evaluations"]} for r in runs if r["algo"] == algo]
        steps = sorted(set().union(*per_seed))
        vals = [[c[s] for c in per_seed if s in c] for s in steps]
        curves[f"{algo} ({len(per_seed)} seeds)"] = (steps, [float(np.mean(v)) for v in vals],
                                                     [min(v) for v in vals], [max(v) for v in vals])  # fmt: skip
    plot_curves(curves, threshold, path, env_id)


def _run_on_ray(cfg: CompareConfig, jobs: list[tuple[str, int]]) -> list[dict]:
    """The runs as Ray tasks (one CPU each), in job order; paths made absolute for workers elsewhere."""
    from eqagent.agents.cluster import run_tasks

    args = asdict(cfg)
    args.update(progress_bar=False, tensorboard_log=str(Path(cfg.tensorboard_log).resolve()) if cfg.tensorboard_log else "",
                backend="process", address="")  # fmt: skip
    return run_tasks(
        run_one, [(a, cfg.env, s, cfg.budget(a), args) for a, s in jobs], cfg.address, cfg.workers
    )


def run_compare(cfg: CompareConfig) -> dict:
    """Runs every (algorithm, seed) of ``cfg`` and writes the outputs; returns the per-algorithm summary."""
    check_env_id(cfg.env)  # unknown ids fail here, before any worker starts
    algos = cfg.algo_list()
    kind = type(gym.make(cfg.env).action_space).__name__
    if "dqn" in algos and kind != "Discrete":
        raise ValueError(f"dqn needs a Discrete action space; {cfg.env} has {kind}")
    if "sac" in algos and kind != "Box":
        raise ValueError(f"sac needs a Box action space; {cfg.env} has {kind}")
    jobs = [(a, s) for a in algos for s in range(cfg.seeds)]
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    args = asdict(cfg)
    t0 = time.perf_counter()
    if cfg.backend == "ray":
        runs = _run_on_ray(cfg, jobs)
    else:
        workers = min(len(jobs), cfg.workers or os.cpu_count() or 1)
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
