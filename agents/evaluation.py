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
import time
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback

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
        **kwargs: Passed to ``EvalCallback`` (``log_path``, ``best_model_save_path``, ``callback_on_new_best``...).
    """

    def __init__(self, eval_env, eval_every: int, n_eval_episodes: int = 10, evaluate_at_start: bool = True,
                 files_to_run_dir: bool = False, budget: int | None = None, **kwargs: Any) -> None:  # fmt: skip
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
        if self.num_timesteps < self._next or (self.budget is not None and self._next > self.budget):
            return not over
        while self._next <= self.num_timesteps:
            self._next += self.eval_every
        return self._evaluate() and not over


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
