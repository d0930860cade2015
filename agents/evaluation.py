"""The one evaluation protocol of ``eqagent run``, ``compare``, ``bench speed`` and ``suite``, built on SB3's
``EvalCallback``.

:class:`EvalHistoryCallback` is an ``EvalCallback`` (it writes ``evaluations.npz``, the best model, and
``eval/mean_reward`` / ``eval/mean_ep_length`` like SB3's) that also evaluates once before training (the
pre-learning score), evaluates every ``eval_every`` *env steps* whatever the number of envs, records each
evaluation with whether any learning update had happened before it, and can keep a progress bar moving while it
evaluates. :func:`summarize` turns that history into the figures the issues name:

* ``steps_to_threshold`` — the first evaluation after the first learning update at or above the threshold (an
  untrained policy that happens to score well is not learning);
* ``steps_to_threshold_held`` — the first evaluation from which every later one (at least two more) stays at or
  above the threshold: skill that is held, not a peak that falls back;
* ``pre_learning_mean`` — the score before any learning update.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback
from stable_baselines3.common.evaluation import evaluate_policy

__all__ = ["EvalHistoryCallback", "ProgressBar", "format_steps", "median_steps", "plot_curves", "summarize"]


class ProgressBar(BaseCallback):
    """A plain ``tqdm`` bar over the training steps; :meth:`note` shows what is happening between steps."""

    def __init__(self) -> None:
        super().__init__()
        self.pbar = None

    def _on_training_start(self) -> None:
        from tqdm import tqdm

        self.pbar = tqdm(total=self.locals["total_timesteps"] - self.model.num_timesteps, unit="step")
        self.model._progress = self

    def _on_step(self) -> bool:
        self.pbar.update(self.training_env.num_envs)
        self.pbar.set_postfix_str("")
        return True

    def note(self, text: str) -> None:
        if self.pbar is not None:
            self.pbar.set_postfix_str(text, refresh=True)

    def _on_training_end(self) -> None:
        self.pbar.close()
        self.model._progress = None


class EvalHistoryCallback(EvalCallback):
    """SB3's ``EvalCallback`` with the protocol above (see the module docstring).

    Args:
        eval_env: The evaluation env (wrapped in a ``DummyVecEnv`` as SB3 does).
        eval_every: Env steps between evaluations (counted in env steps whatever the number of envs).
        n_eval_episodes: Deterministic episodes per evaluation.
        evaluate_at_start: Also evaluate before any training step.
        files_to_run_dir: Write ``evaluations.npz`` and ``best_model`` into the model's log folder (when it has
            one and ``log_path`` / ``best_model_save_path`` are not given).
        budget: Stop training once this many env steps are done, evaluating at most up to it (SB3 algorithms
            collect whole rollouts and would overrun a budget); ``None``: the ``learn`` call's own.
        background: A picklable factory of the evaluation env (e.g. ``functools.partial(make_eval_env, id,
            seed)``, building the same env as ``eval_env``): evaluate in one background process while training
            goes on. Each evaluation is of a snapshot of the model at its step (``model.save``, loaded by the
            worker with ``type(model).load``), on the worker's env, built once and kept across evaluations as
            ``eval_env`` would be: the same episodes and scores as in-line. Results are recorded as they arrive
            (history, ``evaluations.npz``, ``eval/*`` logged at the snapshot's step, the best model); training waits
            for the pending ones at its end. ``callback_on_new_best`` / ``callback_after_eval`` run when a result
            arrives, so a stop they ask for comes later than in-line. ``None``: evaluate in-line (SB3's way).
        **kwargs: Passed to ``EvalCallback`` (``log_path``, ``best_model_save_path``, ``callback_on_new_best``...).
    """

    def __init__(self, eval_env, eval_every: int, n_eval_episodes: int = 10, evaluate_at_start: bool = True,
                 files_to_run_dir: bool = False, budget: int | None = None,
                 background: Callable[[], Any] | None = None, **kwargs: Any) -> None:  # fmt: skip
        if eval_every < 1 or n_eval_episodes < 1:
            raise ValueError(
                f"eval_every and n_eval_episodes must be >= 1, got {eval_every}, {n_eval_episodes}"
            )
        kwargs.setdefault("verbose", 0)
        super().__init__(eval_env, n_eval_episodes=n_eval_episodes, eval_freq=1, warn=False, **kwargs)
        self.budget = budget
        self.eval_every = eval_every
        self.evaluate_at_start = evaluate_at_start
        self.files_to_run_dir = files_to_run_dir
        self.history: list[dict[str, Any]] = []
        self.eval_seconds = 0.0
        self._next = eval_every
        self._episode = 0
        self._rewards: list[float] = []
        self.background = background
        self._pool: ProcessPoolExecutor | None = None
        self._pending: deque[tuple[dict[str, Any], Path, Future]] = deque()
        self._snapshots: Path | None = None

    def _init_callback(self) -> None:
        folder = self.logger.get_dir() if self.files_to_run_dir else None
        if folder:
            if self.log_path is None:
                self.log_path = os.path.join(folder, "evaluations")
            if self.best_model_save_path is None:
                self.best_model_save_path = folder
        super()._init_callback()

    def _learned(self) -> bool:
        return int(getattr(self.model, "_n_updates", 0)) > 0

    def _log_success_callback(self, locals_: dict[str, Any], globals_: dict[str, Any]) -> None:
        super()._log_success_callback(locals_, globals_)
        self._rewards = locals_[
            "episode_rewards"
        ]  # the list evaluate_policy fills (complete when it returns)
        if locals_.get("done"):
            self._episode += 1
        bar = getattr(self.model, "_progress", None)
        if bar is not None:
            bar.note(f"evaluating: episode {self._episode + 1}/{self.n_eval_episodes}")

    def _evaluate(self) -> bool:
        if self.background is not None:
            return self._submit()
        t0 = time.perf_counter()
        trained = self.train_seconds(t0)  # before this evaluation's own time is counted
        self._episode, self._rewards = 0, []
        infos = getattr(
            self.model, "ep_info_buffer", None
        )  # SB3 logs these only at its own dumps (per rollout)
        if infos:
            self.logger.record("rollout/ep_rew_mean", float(np.mean([i["r"] for i in infos])))
            self.logger.record("rollout/ep_len_mean", float(np.mean([i["l"] for i in infos])))
            self.logger.record("time/fps", int(self.num_timesteps / max(self.train_seconds(t0), 1e-9)))
        cont = super()._on_step()  # eval_freq is 1: SB3's EvalCallback evaluates at every call it gets
        self.eval_seconds += time.perf_counter() - t0
        self.history.append({
            "step": int(self.num_timesteps), "mean": float(self.last_mean_reward),
            "std": float(np.std(self._rewards)) if len(self._rewards) else math.nan,
            "learned": self._learned(), "train_seconds": trained,
        })  # fmt: skip
        return cont

    # ------------------------------------------------------------------ background evaluation
    def _submit(self) -> bool:
        """Saves a snapshot of the model and queues its evaluation in the background process."""
        t0 = time.perf_counter()
        entry = {
            "step": int(self.num_timesteps),
            "learned": self._learned(),
            "train_seconds": self.train_seconds(t0),
        }
        if self._pool is None:
            self._snapshots = Path(tempfile.mkdtemp(prefix="eqagent-eval-"))
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=get_context("spawn"),
                initializer=_worker_init,
                initargs=(
                    self.background,
                    torch.get_num_threads(),
                ),  # the threads in-line evaluation would use
            )
            weakref.finalize(self, _close_pool, self._pool, self._snapshots)
        written = self.model.save(self._snapshots / f"step_{entry['step']}")
        file = Path(written) if written else self._snapshots / f"step_{entry['step']}.zip"  # SB3's save: None
        future = self._pool.submit(_worker_evaluate, type(self.model), str(file), self.n_eval_episodes)
        self._pending.append((entry, file, future))
        self.eval_seconds += time.perf_counter() - t0
        return self._collect(block=False)

    def _collect(self, block: bool) -> bool:
        """Records the finished evaluations in order (all pending ones when ``block``); ``False`` if a callback
        asked to stop training."""
        cont = True
        t0 = time.perf_counter()
        bar = getattr(self.model, "_progress", None)
        if block and self._pending and bar is not None:
            bar.note(f"waiting for {len(self._pending)} background evaluation(s)")
        while self._pending and (block or self._pending[0][2].done()):
            entry, file, future = self._pending.popleft()
            rewards, lengths = future.result()
            cont = self._record(entry, file, rewards, lengths) and cont
        if block:
            self.eval_seconds += time.perf_counter() - t0
        return cont

    def _record(self, entry: dict[str, Any], file: Path, rewards: list[float], lengths: list[int]) -> bool:
        """What SB3's ``EvalCallback`` does after an evaluation, for a snapshot's result."""
        step = entry["step"]
        if self.log_path is not None:
            self.evaluations_timesteps.append(step)
            self.evaluations_results.append(rewards)
            self.evaluations_length.append(lengths)
            np.savez(self.log_path, timesteps=self.evaluations_timesteps, results=self.evaluations_results,
                     ep_lengths=self.evaluations_length)  # fmt: skip
        mean_reward = float(np.mean(rewards))
        self.last_mean_reward = mean_reward
        logger = self.logger  # logged at the snapshot's step, without what training has recorded since
        pending = [dict(d) for d in (logger.name_to_value, logger.name_to_count, logger.name_to_excluded)]
        for d in (logger.name_to_value, logger.name_to_count, logger.name_to_excluded):
            d.clear()
        logger.record("eval/mean_reward", mean_reward)
        logger.record("eval/mean_ep_length", float(np.mean(lengths)))
        logger.record("time/total_timesteps", step, exclude="tensorboard")
        logger.dump(step)
        for d, saved in zip((logger.name_to_value, logger.name_to_count, logger.name_to_excluded), pending):
            d.update(saved)
        cont = True
        if mean_reward > self.best_mean_reward:
            if self.best_model_save_path is not None:
                best = Path(self.best_model_save_path) / ("best_model" + file.suffix)
                tmp = best.with_name(best.name + ".tmp")
                shutil.copyfile(file, tmp)
                os.replace(tmp, best)
            self.best_mean_reward = mean_reward
            if self.callback_on_new_best is not None:
                cont = self.callback_on_new_best.on_step()
        if self.callback is not None:
            cont = cont and self._on_event()
        file.unlink(missing_ok=True)
        self.history.append({"step": step, "mean": mean_reward, "std": float(np.std(rewards)),
                             "learned": entry["learned"], "train_seconds": entry["train_seconds"]})  # fmt: skip
        return cont

    def _on_training_end(self) -> None:
        if self.background is not None and self._pool is not None:
            self._collect(block=True)
            _close_pool(self._pool, self._snapshots, wait=True)
            self._pool = None
        super()._on_training_end()

    def train_seconds(self, now: float | None = None) -> float:
        """Seconds spent training so far (evaluations excluded)."""
        now = time.perf_counter() if now is None else now
        return max(now - self._t_start - self.eval_seconds, 0.0)

    def _on_training_start(self) -> None:
        self._t_start = time.perf_counter()
        super()._on_training_start()
        if self.evaluate_at_start and not self.history:
            self.num_timesteps = self.model.num_timesteps
            self._evaluate()

    def _on_step(self) -> bool:
        over = self.budget is not None and self.num_timesteps >= self.budget
        if self._pending and not self._collect(block=False):
            return False
        if self.num_timesteps < self._next or (self.budget is not None and self._next > self.budget):
            return not over
        while self._next <= self.num_timesteps:
            self._next += self.eval_every
        return self._evaluate() and not over


_WORKER: dict[str, Any] = {}


def _worker_init(make_env: Callable[[], Any], threads: int) -> None:
    """The background evaluator's process: the training process's torch threads (so its float rounding is that of
    in-line evaluation), its own evaluation env (kept across evaluations)."""
    torch.set_num_threads(threads)
    _WORKER["env"] = make_env()


def _worker_evaluate(cls: type, file: str, n_episodes: int) -> tuple[list[float], list[int]]:
    """Loads a snapshot and evaluates it as ``EvalCallback`` does (deterministic episodes)."""
    model = cls.load(file)
    rewards, lengths = evaluate_policy(
        model,
        _WORKER["env"],
        n_eval_episodes=n_episodes,
        deterministic=True,
        return_episode_rewards=True,
        warn=False,
    )
    return [float(r) for r in rewards], [int(n) for n in lengths]


def _close_pool(pool: ProcessPoolExecutor, folder: Path | None, wait: bool = False) -> None:
    """Stops the worker (``wait``: until it has exited; else queued evaluations are cancelled) and removes the
    snapshots' folder."""
    pool.shutdown(wait=wait, cancel_futures=True)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


def summarize(history: list[dict[str, Any]], threshold: float | None) -> dict[str, Any]:
    """Figures of an evaluation history (see the module docstring); ``None`` for a figure not reached."""
    learned = [e for e in history if e["learned"]]
    pre = [e for e in history if not e["learned"]]
    hits = [threshold is not None and e["mean"] >= threshold for e in learned]
    first_eval = next((e for e, h in zip(learned, hits) if h), None)
    first = first_eval["step"] if first_eval else None
    held = None
    for i in range(len(learned)):
        if len(learned) - i >= 3 and all(hits[i:]):
            held = learned[i]["step"]
            break
    final = history[-1] if history else {"mean": math.nan, "std": math.nan}
    return {
        "threshold": threshold,
        "steps_to_threshold": first,
        "train_seconds_to_threshold": first_eval.get("train_seconds") if first_eval else None,
        "steps_to_threshold_held": held,
        "pre_learning_mean": pre[-1]["mean"] if pre else None,
        "final_mean": final["mean"],
        "final_std": final["std"],
    }


def median_steps(values: list) -> float:
    """Median of per-seed steps where ``None`` (not reached) counts as beyond the budget (``inf``)."""
    return float(np.median([math.inf if v is None else v for v in values]))


def format_steps(values: list, budget: int) -> str:
    """``median (min–max)`` of per-seed steps, unreached seeds shown as ``> budget``."""
    if not values:
        return "—"
    keyed = [math.inf if v is None else v for v in values]
    fmt = lambda v: f"> {budget:,}" if math.isinf(v) else f"{int(v):,}"  # noqa: E731
    return f"{fmt(median_steps(values))} ({fmt(min(keyed))}–{fmt(max(keyed))})"


def plot_curves(
    curves: dict[str, tuple[list[float], list[float], list[float], list[float]]],
    threshold: float | None,
    path,
    title: str,
) -> None:
    """One PNG of evaluation curves: per label ``(steps, mean, low, high)`` drawn as a line and a band, with the
    threshold as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, (steps, mean, low, high) in curves.items():
        ax.plot(steps, mean, marker="o", ms=3, label=label)
        ax.fill_between(steps, low, high, alpha=0.2)
    if threshold is not None:
        ax.axhline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:g}")
    ax.set_xlabel("env steps")
    ax.set_ylabel("eval mean return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
