"""``eqagent suite``: the default EP agent (no keyword arguments) on a suite of envs against the best SB3 algorithm.

Every env runs the EP agent with its defaults and every SB3 algorithm its action space allows (PPO; DQN for
``Discrete``; SAC for ``Box``; rl-baselines3-zoo settings where the zoo tunes the pair, SB3's defaults otherwise)
with the evaluation protocol of ``eqagent compare`` (:func:`eqagent.agents.compare.run_one`): evaluation before
training and every ``eval_freq`` env steps, deterministic episodes on a separate env. SB3 algorithms get the zoo's
budget capped at 50,000 steps (:data:`eqagent.agents.zoo.ZOO_TIMESTEPS`).

"Steps to threshold" is **held**: the first evaluation from which every later one (at least two more) stays at or
above the threshold. An SB3 algorithm that never holds it counts as holding it at its budget (``sb3_reached``
false); the best SB3 algorithm is the one with the lowest median over seeds. HalfCheetah has no threshold: the
figure there is the final evaluation after 50,000 steps, EP's against SAC's.

SB3 runs can be cached (``sb3_cache``): one JSON file per (env, algorithm, seed, budget, evaluation protocol),
holding the run's evaluations and the date it ran; a later suite reuses it instead of training again.

Outputs in ``out``: ``suite.json`` (``{"envs": {ID: {"ep_steps", "sb3_steps", "sb3_algo", "sb3_reached",
"ep_final", "sb3_final", ...}}}``, and per algorithm each seed's held steps and evaluation curve), ``suite.md``
(one row per env) and ``suite_curves.png`` (every env's curves).
"""

from __future__ import annotations

import datetime
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SUITE", "SuiteConfig", "SuiteEnv", "run_suite"]

SB3_CAP = 50_000


@dataclass(frozen=True)
class SuiteEnv:
    """One env of the suite: its threshold (``None``: compare final returns), the EP agent's budget and the
    evaluation period."""

    threshold: float | None
    ep_budget: int
    eval_freq: int


SUITE: dict[str, SuiteEnv] = {
    "CartPole-v1": SuiteEnv(475.0, 3_000, 500),
    "Acrobot-v1": SuiteEnv(-100.0, 5_000, 500),
    "Pendulum-v1": SuiteEnv(-200.0, 3_000, 500),
    "MountainCarContinuous-v0": SuiteEnv(90.0, 10_000, 1_000),
    "InvertedPendulum-v5": SuiteEnv(950.0, 5_000, 500),
    "HalfCheetah-v5": SuiteEnv(None, 50_000, 5_000),
}


@dataclass
class SuiteConfig:
    """Settings of ``eqagent suite``.

    Attributes:
        envs: Comma-separated env ids of :data:`SUITE` (empty: all).
        seeds: Seeds per algorithm and env (0 … seeds − 1).
        n_eval_episodes: Deterministic episodes per evaluation (also ``--eval-episodes``).
        budget_scale: Multiplies every budget, EP's and SB3's (at least one evaluation period; 1 for the
            figures, e.g. 0.1 for a quick look).
        sb3: Also train the SB3 algorithms (``--no-sb3``: the EP agent only, ``sb3_*`` null).
        ep: Also train the EP agent (``--no-ep``: the SB3 runs only, ``ep_*`` null — e.g. to fill
            ``--sb3-cache`` ahead of the EP runs).
        sb3_cache: Folder of cached SB3 runs (empty: none); reused, and each fresh SB3 run is written to it as
            soon as it finishes (an interrupted suite keeps the runs it completed).
        out: Folder of the outputs.
        tensorboard_log: Root of the TensorBoard runs (empty: none; also ``--logdir``).
        workers: Parallel processes (0: one per CPU core).
        backend: ``process`` (a local pool) or ``ray`` (Ray tasks; ``pip install 'eqagent[ray]'``).
        address: With ``backend="ray"``: empty for embedded Ray, ``auto`` or ``HOST:PORT`` for a cluster.
    """

    envs: str = ""
    seeds: int = 3
    n_eval_episodes: int = field(default=10, metadata={"aliases": ("--eval-episodes",)})
    budget_scale: float = 1.0
    sb3: bool = True
    ep: bool = True
    sb3_cache: str = ""
    out: str = "suite"
    tensorboard_log: str = field(default="", metadata={"aliases": ("--logdir",)})
    workers: int = 0
    backend: str = "process"
    address: str = ""

    def __post_init__(self) -> None:
        if self.seeds < 1 or self.n_eval_episodes < 1 or self.workers < 0:
            raise ValueError("seeds and n_eval_episodes must be >= 1, workers >= 0")
        if not (math.isfinite(self.budget_scale) and self.budget_scale > 0):
            raise ValueError(f"budget_scale must be a positive number, got {self.budget_scale}")
        if not (self.sb3 or self.ep):
            raise ValueError("nothing to run: --no-sb3 and --no-ep together")
        if self.backend not in ("process", "ray"):
            raise ValueError(f"backend must be 'process' or 'ray', got {self.backend!r}")

    def env_list(self) -> list[str]:
        envs = [e.strip() for e in self.envs.split(",") if e.strip()] or list(SUITE)
        unknown = [e for e in envs if e not in SUITE]
        if unknown:
            raise ValueError(f"not in the suite: {unknown}; the suite: {', '.join(SUITE)}")
        return envs


def sb3_algos(env_id: str) -> list[str]:
    """The SB3 algorithms ``env_id``'s action space allows: PPO, and DQN (Discrete) or SAC (Box)."""
    import gymnasium as gym

    env = gym.make(env_id)
    discrete = isinstance(env.action_space, gym.spaces.Discrete)
    env.close()
    return ["ppo", "dqn"] if discrete else ["ppo", "sac"]


def sb3_budget(algo: str, env_id: str) -> int:
    """The zoo's ``n_timesteps`` for the pair, capped at 50,000 (the cap where the zoo does not tune it)."""
    from eqagent.agents.zoo import ZOO_TIMESTEPS

    return min(ZOO_TIMESTEPS.get(algo, {}).get(env_id, SB3_CAP), SB3_CAP)


def _cache_file(
    cache: Path, algo: str, env_id: str, seed: int, budget: int, eval_freq: int, episodes: int
) -> Path:
    return (
        cache / f"{env_id.replace('/', '_')}__{algo}__seed{seed}__{budget}__every{eval_freq}x{episodes}.json"
    )


def _jobs(cfg: SuiteConfig) -> list[dict[str, Any]]:
    jobs = []
    for env_id in cfg.env_list():
        spec = SUITE[env_id]
        algos = ([("ep", spec.ep_budget)] if cfg.ep else []) + (
            [(a, sb3_budget(a, env_id)) for a in sb3_algos(env_id)] if cfg.sb3 else []
        )
        for algo, full in algos:
            budget = max(spec.eval_freq, round(full * cfg.budget_scale))
            for seed in range(cfg.seeds):
                jobs.append(
                    {"algo": algo, "env": env_id, "seed": seed, "budget": budget, "eval_freq": spec.eval_freq}
                )
    return jobs


def _run_job(job: dict[str, Any], cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """One run through compare's protocol (in a worker)."""
    from eqagent.agents.compare import CompareConfig, run_one

    compare_cfg = CompareConfig(env=job["env"], seeds=1, total_timesteps=job["budget"], eval_freq=job["eval_freq"],
                                n_eval_episodes=cfg_dict["n_eval_episodes"], tensorboard_log=cfg_dict["tensorboard_log"],
                                progress_bar=False)  # fmt: skip
    run = run_one(job["algo"], job["env"], job["seed"], job["budget"], asdict(compare_cfg))
    run["date"] = datetime.date.today().isoformat()
    return run


def run_suite(cfg: SuiteConfig) -> dict[str, Any]:
    """Runs (or reuses cached SB3 runs for) every job of the suite; writes and returns the figures."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(cfg.sb3_cache) if cfg.sb3_cache else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    cfg_dict = asdict(cfg)
    if cfg.tensorboard_log:
        cfg_dict["tensorboard_log"] = str(Path(cfg.tensorboard_log).resolve())
    runs, todo = [], []
    for job in _jobs(cfg):
        path = None
        if cache is not None and job["algo"] != "ep":
            path = _cache_file(cache, job["algo"], job["env"], job["seed"], job["budget"], job["eval_freq"],
                               cfg.n_eval_episodes)  # fmt: skip
            if path.exists():
                runs.append({**json.loads(path.read_text()), "cached": True})
                continue
        todo.append((job, path))
    t0 = time.perf_counter()

    def finished(i: int, run: dict) -> None:  # each fresh SB3 run is cached as soon as it finishes
        run["cached"] = False
        path = todo[i][1]
        if path is not None:
            _write_atomic(path, json.dumps(run, default=float))

    runs.extend(_execute(cfg, [j for j, _ in todo], cfg_dict, finished))
    result = {"envs": {env_id: _env_figures(env_id, [r for r in runs if r["env"] == env_id])
                       for env_id in cfg.env_list()},
              "seeds": cfg.seeds, "seconds": time.perf_counter() - t0}  # fmt: skip
    (out / "suite.json").write_text(json.dumps(result, indent=1, default=float))
    (out / "suite.md").write_text(_markdown(result))
    _plot(runs, out / "suite_curves.png")
    result["files"] = [str(out / n) for n in ("suite.json", "suite.md", "suite_curves.png")]
    return result


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _execute(cfg: SuiteConfig, jobs: list[dict], cfg_dict: dict, finished) -> list[dict]:
    """Runs the jobs; ``finished(i, run)`` is called in the driver as each one completes. Returns the runs in job
    order."""
    if not jobs:
        return []
    if cfg.backend == "ray":
        from eqagent.agents.cluster import run_tasks

        runs = run_tasks(_run_job, [(j, cfg_dict) for j in jobs], cfg.address, cfg.workers)
        for i, run in enumerate(runs):
            finished(i, run)
        return runs
    workers = min(len(jobs), cfg.workers or os.cpu_count() or 1)
    out: list = [None] * len(jobs)
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(_run_job, job, cfg_dict): i for i, job in enumerate(jobs)}
        for future in as_completed(futures):
            i = futures[future]
            out[i] = future.result()
            finished(i, out[i])
    return out


def _env_figures(env_id: str, runs: list[dict]) -> dict[str, Any]:
    """The issue's figures for one env from its runs (medians over seeds)."""
    from eqagent.agents.evaluation import median_steps

    spec = SUITE[env_id]
    by_algo: dict[str, list[dict]] = {}
    for r in sorted(runs, key=lambda r: r["seed"]):  # per-seed lists in seed order
        by_algo.setdefault(r["algo"], []).append(r)
    per_algo = {}
    for algo, rs in by_algo.items():
        held = [r["steps_to_threshold_held"] for r in rs]
        budget = rs[0]["budget"]
        counted = [budget if h is None else h for h in held] if algo != "ep" else held
        med = median_steps(counted)
        per_algo[algo] = {
            "budget": budget, "steps_held": held, "steps_median": None if math.isinf(med) else med,
            "reached": all(h is not None for h in held), "final": float(np.median([r["final_mean"] for r in rs])),
            "cached": any(r.get("cached") for r in rs), "dates": sorted({r.get("date", "") for r in rs} - {""}),
            # per seed, the evaluations behind the figures: [[step, mean return], ...]
            "curves": [[[e["step"], e["mean"]] for e in r["evaluations"]] for r in rs],
        }  # fmt: skip
    ep = per_algo.get("ep", {})
    sb3 = {a: v for a, v in per_algo.items() if a != "ep"}
    if spec.threshold is None:  # HalfCheetah: final returns, EP against SAC
        best = "sac" if "sac" in sb3 else next(iter(sb3), None)
    else:
        best = min(
            sb3, key=lambda a: (sb3[a]["steps_median"] is None, sb3[a]["steps_median"] or 0), default=None
        )
    row = {
        "threshold": spec.threshold, "ep_steps": ep.get("steps_median"), "ep_final": ep.get("final"),
        "ep_budget": ep.get("budget"), "sb3_algo": best,
        "sb3_steps": sb3[best]["steps_median"] if best else None, "sb3_final": sb3[best]["final"] if best else None,
        "sb3_reached": sb3[best]["reached"] if best else None, "sb3_budget": sb3[best]["budget"] if best else None,
        "sb3_dates": sb3[best]["dates"] if best else [], "algos": per_algo,
    }  # fmt: skip
    if spec.threshold is not None and row["ep_steps"] is not None and row["sb3_steps"]:
        row["ep_over_sb3"] = row["ep_steps"] / row["sb3_steps"]
    else:
        row["ep_over_sb3"] = None
    return row


def _markdown(result: dict) -> str:
    fmt = lambda v: "—" if v is None else (f"{v:,.0f}" if abs(v) >= 100 else f"{v:.1f}")  # noqa: E731
    lines = [
        f"### Suite ({result['seeds']} seeds; steps to threshold held, median over seeds)",
        "",
        "| env | threshold | EP steps | EP final | best SB3 | SB3 steps | SB3 final | EP / SB3 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for env_id, r in result["envs"].items():
        sb3_steps = fmt(r["sb3_steps"]) + (
            "" if r["sb3_reached"] or r["sb3_algo"] is None else " (not held: budget)"
        )
        ratio = "—" if r["ep_over_sb3"] is None else f"{r['ep_over_sb3']:.2f}"
        lines.append(f"| {env_id} | {fmt(r['threshold'])} | {fmt(r['ep_steps'])} | {fmt(r['ep_final'])} "
                     f"| {r['sb3_algo'] or '—'} | {sb3_steps} | {fmt(r['sb3_final'])} | {ratio} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def _plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = list(dict.fromkeys(r["env"] for r in runs))
    if not envs:
        return
    cols = min(3, len(envs))
    rows = math.ceil(len(envs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, env_id in zip(axes.flat, envs):
        for algo in dict.fromkeys(r["algo"] for r in runs if r["env"] == env_id):
            per_seed = [{e["step"]: e["mean"] for e in r["evaluations"]} for r in runs
                        if r["env"] == env_id and r["algo"] == algo]  # fmt: skip
            steps = sorted(set().union(*per_seed))
            vals = [[c[s] for c in per_seed if s in c] for s in steps]
            ax.plot(steps, [np.mean(v) for v in vals], marker="o", ms=2, label=algo)
            ax.fill_between(steps, [min(v) for v in vals], [max(v) for v in vals], alpha=0.2)
        if SUITE[env_id].threshold is not None:
            ax.axhline(SUITE[env_id].threshold, color="k", ls="--", lw=1)
        ax.set_xscale("symlog", linthresh=1000)
        ax.set_title(env_id)
        ax.set_xlabel("env steps")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(envs) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
