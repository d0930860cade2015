"""``eqagent sweep``: a hyperparameter search over any agent config field on Ray Tune, seeds as a dimension.

Every trial is one (config, seed): it trains :class:`~eqagent.agents.EPAgent` with the evaluation protocol of
``eqagent run`` (:class:`~eqagent.agents.evaluation.EvalHistoryCallback`) and reports each evaluation to Tune
(``env_steps``, ``eval_mean``, ``auc``, ``steps_held``) and to TensorBoard (the agent's SB3 logger, in the trial's
folder). Search and early stopping are Tune's plug-ins:

* ``search="grid"``: every combination of the ``choice`` values (Tune's ``grid_search``) × the seeds;
* ``search="random"`` / ``"tpe"``: ``samples`` configs from Optuna's random or TPE sampler (Tune's
  ``OptunaSearch``), each repeated over the seeds by Tune's ``Repeater`` (the searcher learns from the mean over
  seeds);
* ``scheduler="asha"``: Tune's ASHA stops trials whose curve so far (``auc``) trails the others' at the same env
  step.

Outputs in ``out/name`` (next to Tune's own experiment files): ``sweep_trials.csv`` (one row per trial),
``sweep_summary.md`` / ``.csv`` (one row per config: median and min–max over seeds, ranked by ``metric``),
``sweep_curves.png`` (mean and min–max over seeds of the best configs) and ``best_config.json`` (the best
config's complete agent config: ``eqagent run --config out/name/best_config.json``).

Fault tolerance: a trial that raises is retried ``max_failures`` times and then reported (its error in the table),
never fatal to the sweep; a killed trial worker is a failure like any other. An interrupted sweep (Ctrl-C, a
killed driver) continues with ``resume=True`` from Tune's experiment checkpoint: finished trials are kept, trials
that were running restart.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from eqagent.agents.sweep_results import config_rows, trial_rows, write_outputs

from eqagent.configs import apply_overrides, config_to_dict, parse_assignment

__all__ = ["SearchDimension", "SweepConfig", "parse_dimension", "run_sweep", "sweep_trial"]

KINDS = ("choice", "uniform", "loguniform", "int", "logint")
_META = ("seed", "__trial_index__")  # trial config keys that are not agent config fields


@dataclass(frozen=True)
class SearchDimension:
    """One searched field: ``kind`` among :data:`KINDS` and its ``values`` (``choice``) or ``(low, high)``."""

    field: str
    kind: str
    values: tuple[Any, ...]

    def tune_domain(self, grid: bool) -> Any:
        """The Tune search-space object of this dimension."""
        from ray import tune

        if grid:
            if self.kind != "choice":
                raise ValueError(f"grid search takes choice:... values, {self.field} is {self.kind}")
            return tune.grid_search(list(self.values))
        lo, hi = self.values[:2]
        return {
            "choice": lambda: tune.choice(list(self.values)),
            "uniform": lambda: tune.uniform(lo, hi),
            "loguniform": lambda: tune.loguniform(lo, hi),
            "int": lambda: tune.randint(int(lo), int(hi) + 1),  # Tune's upper bound is exclusive
            "logint": lambda: tune.lograndint(int(lo), int(hi) + 1),
        }[self.kind]()

    def contains(self, value: Any) -> bool:
        if self.kind == "choice":
            return value in self.values
        lo, hi = self.values
        if self.kind in ("int", "logint") and (isinstance(value, bool) or not float(value).is_integer()):
            return False
        return isinstance(value, (int, float)) and lo <= value <= hi


def parse_dimension(text: str) -> SearchDimension:
    """``"planner.horizon=choice:10,15,20"`` / ``"world_model.lr=loguniform:1e-4,3e-3"`` → a dimension."""
    key, sep, spec = text.partition("=")
    kind, colon, args = spec.partition(":")
    kind = kind.strip().lower()
    if not sep or not key.strip() or not colon or kind not in KINDS:
        raise ValueError(
            f"expected FIELD=KIND:ARGS with KIND in {', '.join(KINDS)} (e.g. planner.horizon=choice:10,15,20), "
            f"got {text!r}"
        )
    values = tuple(parse_assignment(f"v={a.strip()}")[1] for a in args.split(",") if a.strip())
    if kind == "choice":
        if not values or len(set(map(repr, values))) != len(values):
            raise ValueError(f"{key}: choice needs distinct values, got {args!r}")
    else:
        ok = len(values) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if not ok or not all(math.isfinite(v) for v in values) or not values[0] < values[1]:
            raise ValueError(f"{key}: {kind} needs two finite numbers LOW,HIGH with LOW < HIGH, got {args!r}")
        if kind.startswith("log") and values[0] <= 0:
            raise ValueError(f"{key}: {kind} needs LOW > 0, got {values[0]}")
        if kind in ("int", "logint") and not all(float(v).is_integer() for v in values):
            raise ValueError(f"{key}: {kind} needs integer bounds, got {args!r}")
    return SearchDimension(key.strip(), kind, values)


@dataclass
class SweepConfig:
    """Settings of ``eqagent sweep``.

    Attributes:
        env: Gymnasium id.
        space: Searched agent config fields, ``FIELD=KIND:ARGS`` each, KIND one of ``choice:A,B,...``,
            ``uniform:LOW,HIGH``, ``loguniform:LOW,HIGH``, ``int:LOW,HIGH`` (inclusive), ``logint:LOW,HIGH``
            (e.g. ``planner.horizon=choice:10,15,20 world_model.lr=loguniform:1e-4,3e-3``). ``grid`` takes choices.
        search: ``grid`` (every combination), ``random`` or ``tpe`` (Optuna's samplers through Tune's
            ``OptunaSearch``).
        samples: Configs drawn by ``random`` / ``tpe`` (each run with every seed); ``grid`` runs each point once.
        seeds: Seeds per config (0 … seeds − 1): one trial per (config, seed).
        include_default: Make the agent's default config the first point searched when it lies in the space.
        metric: The search's objective, per config the median over seeds: ``steps`` (the first evaluation from
            which the threshold is held; not held counts as ``total_timesteps + eval_freq``; lower is better) or
            ``auc`` (the mean evaluation return over the run; higher is better).
        scheduler: ``fifo`` (every trial runs its budget) or ``asha`` (early stopping on ``auc`` at equal env steps).
        search_seed: Seed of the search algorithm's sampler.
        total_timesteps: Env steps per trial.
        eval_freq: Evaluation period in env steps (also ``--eval-every``).
        n_eval_episodes: Deterministic episodes per evaluation (also ``--eval-episodes``).
        set: Agent config overrides ``FIELD=VALUE`` applied to every trial (the search's fields on top).
        out: Folder of sweeps; this one is ``out/name``.
        name: Name of the sweep (its folder and Tune experiment).
        resume: Continue the interrupted sweep ``out/name`` from Tune's experiment checkpoint (finished trials kept,
            running ones restarted); its settings must be the ones it was started with.
        address: Empty for embedded Ray on this machine; ``auto`` or ``HOST:PORT`` to join a cluster.
        cpus: CPUs of embedded Ray (0: every core); each trial uses one CPU and one torch thread.
        max_concurrent: Trials at once (0: as many as Ray has CPUs).
        max_failures: Retries of a trial that fails (raises or loses its worker) before it is reported failed.
        verbose: Tune's console output (0 silent, 1 status table, 2 with trial results).
    """

    env: str = "CartPole-v1"
    space: tuple[str, ...] = ()
    search: str = "tpe"
    samples: int = 8
    seeds: int = 3
    include_default: bool = True
    metric: str = "steps"
    scheduler: str = "fifo"
    search_seed: int = 0
    total_timesteps: int = 3000
    eval_freq: int = field(default=500, metadata={"aliases": ("--eval-every",)})
    n_eval_episodes: int = field(default=5, metadata={"aliases": ("--eval-episodes",)})
    set: tuple[str, ...] = ()
    out: str = "sweeps"
    name: str = "sweep"
    resume: bool = False
    address: str = ""
    cpus: int = 0
    max_concurrent: int = 0
    max_failures: int = 1
    verbose: int = 1

    def __post_init__(self) -> None:
        if self.search not in ("grid", "random", "tpe"):
            raise ValueError(f"search must be grid, random or tpe, got {self.search!r}")
        if self.metric not in ("steps", "auc"):
            raise ValueError(f"metric must be steps or auc, got {self.metric!r}")
        if self.scheduler not in ("fifo", "asha"):
            raise ValueError(f"scheduler must be fifo or asha, got {self.scheduler!r}")
        for name in ("samples", "seeds", "total_timesteps", "eval_freq", "n_eval_episodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("cpus", "max_concurrent", "max_failures"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.eval_freq > self.total_timesteps:
            raise ValueError(
                f"eval_freq ({self.eval_freq}) must not exceed total_timesteps ({self.total_timesteps})"
            )
        if not self.name or os.sep in self.name or self.name in (".", ".."):
            raise ValueError(f"name must be a plain folder name, got {self.name!r}")
        if not self.space:
            raise ValueError(
                "space is empty: give at least one FIELD=KIND:ARGS (e.g. planner.horizon=choice:10,20)"
            )

    def dimensions(self) -> list[SearchDimension]:
        dims = [parse_dimension(s) for s in self.space]
        fields = [d.field for d in dims]
        if len(set(fields)) != len(fields):
            raise ValueError(f"a field is searched twice: {fields}")
        ranged = [d.field for d in dims if d.kind != "choice"]
        if self.search == "grid" and ranged:
            raise ValueError(f"grid search takes choice:... values; {ranged} are ranges (use random or tpe)")
        return dims

    def fixed(self) -> dict[str, Any]:
        return dict(parse_assignment(s) for s in self.set)

    def penalty(self) -> int:
        """``steps_held`` of a trial that never holds the threshold: one evaluation beyond the budget."""
        return self.total_timesteps + self.eval_freq


# ---------------------------------------------------------------------------------------------------------------
# One trial (runs in a Ray worker)
def _trial_metrics(history: list[dict], threshold: float | None, penalty: int) -> dict[str, Any]:
    """What a trial reports after each evaluation (numbers only: Tune's schedulers compare them)."""
    from eqagent.agents.evaluation import summarize

    s = summarize(history, threshold)
    held, first = s["steps_to_threshold_held"], s["steps_to_threshold"]
    return {
        "env_steps": int(history[-1]["step"]),
        "eval_mean": float(history[-1]["mean"]),
        "auc": float(np.mean([e["mean"] for e in history])),
        "steps_held": int(penalty if held is None else held),
        "steps_first": int(penalty if first is None else first),
        "held": held is not None,
    }


def sweep_trial(config: dict[str, Any], settings: dict[str, Any]) -> None:
    """Tune's trainable: one agent, one seed; reports every evaluation, writes ``evaluations.json``."""
    import torch
    from eqagent.agents.ep_agent import EPAgent
    from eqagent.agents.evaluation import EvalHistoryCallback
    from eqagent.agents.run import make_eval_env
    from ray import tune

    torch.set_num_threads(1)
    seed = int(config.get("seed", config.get("__trial_index__", 0)))
    overrides = {**settings["fixed"], **{k: v for k, v in config.items() if k not in _META}}
    trial_dir = Path(tune.get_context().get_trial_dir())
    env_id, threshold, penalty = settings["env"], settings["threshold"], settings["penalty"]

    class Report(EvalHistoryCallback):
        def _evaluate(self) -> bool:
            cont = super()._evaluate()
            tune.report(_trial_metrics(self.history, threshold, penalty))
            return cont

    agent = EPAgent(env_id, seed=seed, tensorboard_log=str(trial_dir), **overrides)
    callback = Report(make_eval_env(env_id, seed), settings["eval_freq"], settings["n_eval_episodes"])
    agent.learn(settings["total_timesteps"], callback=callback, tb_log_name="tensorboard")
    (trial_dir / "evaluations.json").write_text(json.dumps({"seed": seed, "config": overrides,
                                                             "evaluations": callback.history}))  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# The driver
def _get(cfg_dict: dict[str, Any], path: str) -> Any:
    node: Any = cfg_dict
    for part in path.split("."):
        node = node[part]
    return node


def _search(cfg: SweepConfig, dims: list[SearchDimension], defaults: dict[str, Any]) -> tuple[dict, Any, int]:
    """Tune's ``param_space``, search algorithm and ``num_samples`` for ``cfg``."""
    from ray import tune

    if cfg.search == "grid":
        from ray.tune.search import BasicVariantGenerator

        space = {d.field: d.tune_domain(grid=True) for d in dims}
        space["seed"] = tune.grid_search(list(range(cfg.seeds)))
        return space, BasicVariantGenerator(random_state=cfg.search_seed), 1
    import optuna
    from ray.tune.search import Repeater
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = (optuna.samplers.TPESampler if cfg.search == "tpe" else optuna.samplers.RandomSampler)(
        seed=cfg.search_seed
    )
    in_space = all(d.contains(defaults[d.field]) for d in dims)
    points = [dict(defaults)] if cfg.include_default and in_space else None
    metric, mode = ("steps_held", "min") if cfg.metric == "steps" else ("auc", "max")
    searcher = OptunaSearch(metric=metric, mode=mode, sampler=sampler, points_to_evaluate=points)
    space = {d.field: d.tune_domain(grid=False) for d in dims}
    return space, Repeater(searcher, repeat=cfg.seeds), cfg.samples * cfg.seeds


def _sweep_settings(cfg: SweepConfig) -> dict[str, Any]:
    """What defines a sweep (compared on ``resume``) and what each trial needs."""
    from eqagent.agents.run import reward_threshold

    return {
        "env": cfg.env, "space": list(cfg.space), "search": cfg.search, "samples": cfg.samples, "seeds": cfg.seeds,
        "include_default": cfg.include_default, "metric": cfg.metric, "scheduler": cfg.scheduler,
        "search_seed": cfg.search_seed, "total_timesteps": cfg.total_timesteps, "eval_freq": cfg.eval_freq,
        "n_eval_episodes": cfg.n_eval_episodes, "fixed": cfg.fixed(), "threshold": reward_threshold(cfg.env),
        "penalty": cfg.penalty(),
    }  # fmt: skip


def _validate(cfg: SweepConfig, dims: list[SearchDimension]) -> dict[str, Any]:
    """Checks the env, every fixed value and every end of every range against the agent config before Ray
    starts; returns the default value of each searched field (the config a plain ``EPAgent(env)`` gets, with
    ``set`` applied)."""
    from eqagent.agents.config import agent_config_for_id
    from eqagent.agents.envs import check_env_id
    from eqagent.agents.run import reward_threshold

    check_env_id(cfg.env)
    if cfg.metric == "steps" and reward_threshold(cfg.env) is None:
        raise ValueError(f"{cfg.env} has no reward threshold: use metric auc")
    base = agent_config_for_id(cfg.env, **cfg.fixed())
    for d in dims:
        for v in d.values:  # every choice, or both bounds
            apply_overrides(base, {d.field: v})
    base_dict = config_to_dict(base)
    return {d.field: _get(base_dict, d.field) for d in dims}


def _experiment(cfg: SweepConfig, exp: Path, trainable: Any, settings: dict, dims, defaults) -> Any:
    """A new Tune experiment, or the interrupted one at ``exp`` when ``cfg.resume``."""
    from ray import tune

    saved_path = exp / "sweep_settings.json"
    if cfg.resume:
        if not tune.Tuner.can_restore(str(exp)) or not saved_path.exists():
            raise ValueError(f"nothing to resume at {exp}: no sweep was started there")
        saved = json.loads(saved_path.read_text())
        changed = sorted(k for k in settings if json.dumps(settings[k]) != json.dumps(saved.get(k)))
        if changed:
            raise ValueError(
                f"--resume continues the sweep as it was started; these settings differ: {changed}"
            )
        return tune.Tuner.restore(str(exp), trainable, resume_unfinished=True, resume_errored=False,
                                  restart_errored=False)  # fmt: skip
    if exp.exists() and any(exp.iterdir()):
        raise ValueError(f"{exp} already holds a sweep: pass --resume to continue it, or another --name")
    exp.mkdir(parents=True, exist_ok=True)
    saved_path.write_text(json.dumps(settings, indent=1))
    space, search_alg, num_samples = _search(cfg, dims, defaults)
    scheduler = None
    if cfg.scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler

        scheduler = ASHAScheduler(time_attr="env_steps", metric="auc", mode="max", max_t=cfg.total_timesteps,
                                  grace_period=max(cfg.eval_freq, cfg.total_timesteps // 4), reduction_factor=2)  # fmt: skip
    tune_config = tune.TuneConfig(search_alg=search_alg, scheduler=scheduler, num_samples=num_samples,
                                  max_concurrent_trials=cfg.max_concurrent or None,
                                  trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}")  # fmt: skip
    run_config = tune.RunConfig(name=cfg.name, storage_path=str(exp.parent), verbose=cfg.verbose,
                                failure_config=tune.FailureConfig(max_failures=cfg.max_failures))  # fmt: skip
    return tune.Tuner(trainable, param_space=space, tune_config=tune_config, run_config=run_config)


def run_sweep(cfg: SweepConfig) -> dict[str, Any]:
    """Runs (or resumes) the sweep and writes its tables, curves and best config; returns the figures."""
    dims = cfg.dimensions()
    defaults = _validate(cfg, dims)
    settings = _sweep_settings(cfg)
    # Tune saves its experiment state at most this often (seconds): trials here last tens of seconds, and a
    # killed driver should lose little; the state is a small JSON file
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    from eqagent.agents.cluster import init_ray

    init_ray(cfg.address, cfg.cpus, quiet=cfg.verbose < 2)
    from ray import tune

    exp = Path(cfg.out).resolve() / cfg.name
    trainable = tune.with_resources(tune.with_parameters(sweep_trial, settings=settings), {"cpu": 1})
    tuner = _experiment(cfg, exp, trainable, settings, dims, defaults)
    t0 = time.perf_counter()
    grid = tuner.fit()
    wall = time.perf_counter() - t0
    trials = trial_rows(grid, dims, cfg)
    configs = config_rows(trials, dims, defaults, cfg)
    files = write_outputs(exp, trials, configs, dims, cfg, settings)
    best = next((c for c in configs if c["complete"]), None)
    default = next((c for c in configs if c["default"]), None)
    return {
        "env": cfg.env, "experiment": str(exp), "trials": len(trials),
        "trials_failed": sum(t["status"] == "error" for t in trials),
        "trials_stopped_early": sum(t["status"] == "stopped" for t in trials),
        "wall_seconds": wall, "trial_seconds_sum": float(sum(t["time_s"] for t in trials)),
        "best": _public(best), "default": _public(default), "configs": [_public(c) for c in configs], **files,
    }  # fmt: skip


def _public(row: dict | None) -> dict | None:
    return None if row is None else {k: v for k, v in row.items() if not k.startswith("_")}
