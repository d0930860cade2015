"""``eqagent bench worldmodel --env ID``: the online EP world model vs backprop, the surprise gate, and a shift.

On a random-policy stream of ``steps`` transitions (fixed seed), side by side:

* ``nmse_ep`` / ``nmse_bp`` / ``ratio`` — one-step normalised MSE of Δobs on held-out transitions (another
  seed) of the EP world model and of the same ensemble trained online by backprop (Adam), same stream, replay and
  batches; ``open_loop_ep`` / ``open_loop_bp`` — the same after 10 open-loop steps with the real actions;
* ``gate_skip_fraction`` / ``gated_error_increase`` — over the stationary second half: the fraction of steps
  whose update the gate skipped, and the held-out error of the gated model relative to the ungated one;
* ``shift_detect_steps`` / ``recovery_steps`` — on the physics-shift wrapper (shift at mid-stream): steps until
  the surprise is ≥ 3× its pre-shift median, and until the error (mean over a 200-step window) is back within
  20% of its pre-shift level;
* ``updates_per_second`` of the online EP learner.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import eqagent.envs  # noqa: F401  (registers the shift envs)
import gymnasium as gym
import numpy as np
import torch

from eqagent.world_model import EPWorldModel, WorldModelConfig

__all__ = ["WorldModelBenchConfig", "run_worldmodel_bench"]

SHIFT_IDS = {"CartPole-v1": "eqagent/CartPoleShift-v0", "Pendulum-v1": "eqagent/PendulumShift-v0"}


@dataclass
class WorldModelBenchConfig:
    """Settings of ``eqagent bench worldmodel``.

    Attributes:
        env: Gymnasium id (CartPole-v1 or Pendulum-v1 have shift variants).
        steps: Length of the random-policy training stream.
        test_steps: Held-out transitions (another seed).
        eval_every: Held-out evaluation period (steps).
        horizon: Open-loop horizon.
        members: Ensemble size.
        hidden: Hidden sizes.
        settle_steps: EP nudged relaxation steps of the world models (3: issue 4's protocol; the agent's world
            model takes 1, with which the gated model's error rises more, see docs/benchmarks.md).
        seed: Stream seed.
        skip_shift: Leave out the shift experiment.
        forget_on_shift: The gated models forget old replay on a detected shift (see ``WorldModelConfig``).
        shift_window: Steps of the shift detector's mean surprise (see ``WorldModelConfig``).
        threads: torch CPU threads (0: default).
    """

    env: str = "CartPole-v1"
    steps: int = 20000
    test_steps: int = 2000
    eval_every: int = 1000
    horizon: int = 10
    members: int = 5
    hidden: tuple[int, ...] = (64, 64)
    settle_steps: int = 3
    seed: int = 0
    skip_shift: bool = False
    forget_on_shift: bool = True
    shift_window: int = 100
    threads: int = 0


def random_stream(env: gym.Env, n: int, seed: int) -> list[tuple]:
    """``n`` transitions ``(obs, action, next_obs, reward, terminated, episode_id, info)`` of a random policy."""
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    out, ep = [], 0
    for _ in range(n):
        a = env.action_space.sample()
        nxt, r, term, trunc, info = env.step(a)
        out.append((obs, a, nxt, float(r), bool(term), ep, info))
        obs = nxt
        if term or trunc:
            obs, _ = env.reset()
            ep += 1
    return out


class _Evaluator:
    def __init__(self, test: list[tuple], horizon: int) -> None:
        self.obs = np.array([t[0] for t in test], np.float32)
        self.act = np.array([t[1] for t in test])
        self.next = np.array([t[2] for t in test], np.float32)
        self.var = (self.next - self.obs).var(0) + 1e-12
        eps = np.array([t[5] for t in test])
        terms = np.array([t[4] for t in test])
        starts = [
            i
            for i in range(0, len(test) - horizon, 5)
            if eps[i] == eps[i + horizon - 1] and not terms[i : i + horizon - 1].any()
        ]
        self.starts = np.array(starts[:200], dtype=int)
        self.horizon = horizon
        self.obs_var = self.obs.var(0) + 1e-12

    def nmse(self, wm: EPWorldModel) -> float:
        pred = wm.predict(self.obs, self.act)["next_obs"].numpy()
        return float(np.mean(((pred - self.next) ** 2).mean(0) / self.var))

    def open_loop(self, wm: EPWorldModel) -> float:
        if len(self.starts) == 0:
            return float("nan")
        seqs = np.stack([self.act[s : s + self.horizon] for s in self.starts])
        out = wm.imagine(torch.from_numpy(self.obs[self.starts]), seqs)
        pred = out["obs"].mean(0)[:, -1].numpy()  # (N, d) after H steps
        true = self.next[self.starts + self.horizon - 1]
        return float(np.mean(((pred - true) ** 2).mean(0) / self.obs_var))


def _train(stream, wm: EPWorldModel, ev: _Evaluator, eval_every: int, half: int):
    curve, skipped_second, errors = [], 0, []
    t0 = time.perf_counter()
    for i, (o, a, no, r, term, _, _) in enumerate(stream):
        info = wm.observe(o, a, no, r, term)
        errors.append(info["error"])
        if i >= half and not info["updated"]:
            skipped_second += 1
        if (i + 1) % eval_every == 0:
            curve.append((i + 1, ev.nmse(wm)))
    seconds = time.perf_counter() - t0
    return curve, skipped_second / max(1, len(stream) - half), np.array(errors), seconds


def run_worldmodel_bench(cfg: WorldModelBenchConfig) -> dict:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    env = gym.make(cfg.env)
    stream = random_stream(env, cfg.steps, cfg.seed)
    test = random_stream(gym.make(cfg.env), cfg.test_steps, cfg.seed + 1000)
    ev = _Evaluator(test, cfg.horizon)
    half = cfg.steps // 2

    def model(learner: str, gate: bool) -> EPWorldModel:
        wcfg = WorldModelConfig(hidden=tuple(cfg.hidden), members=cfg.members, learner=learner, gate=gate,
                                settle_steps=cfg.settle_steps,
                                seed=cfg.seed, forget_on_shift=gate and cfg.forget_on_shift,
                                shift_window=cfg.shift_window)  # fmt: skip
        return EPWorldModel(env.observation_space, env.action_space, wcfg)

    out: dict = {"env": cfg.env, "steps": cfg.steps}
    results = {}
    for name, learner, gate in (("ep", "ep", False), ("bp", "bp", False), ("gated", "ep", True)):
        wm = model(learner, gate)
        curve, skip, _, secs = _train(stream, wm, ev, cfg.eval_every, half)
        results[name] = (wm, curve, skip, secs)
        out[f"nmse_{name}"] = curve[-1][1]
        out[f"open_loop_{name}"] = ev.open_loop(wm)
        out[f"curve_{name}"] = curve
        out[f"updates_per_second_{name}"] = wm.updates / secs
    out["ratio"] = out["nmse_ep"] / out["nmse_bp"]
    out["updates_per_second"] = out.pop("updates_per_second_ep")
    second = lambda c: float(np.mean([v for s, v in c if s > half]))  # noqa: E731
    out["gate_skip_fraction"] = results["gated"][2]
    out["shifts_detected_stationary"] = results["gated"][0].shifts
    out["gated_error_increase"] = second(results["gated"][1]) / second(results["ep"][1]) - 1.0

    if not cfg.skip_shift and cfg.env in SHIFT_IDS:
        shift_env = gym.make(SHIFT_IDS[cfg.env], shift_step=half)
        s_stream = random_stream(shift_env, cfg.steps, cfg.seed)
        wm = model("ep", True)
        _, _, errors, _ = _train(s_stream, wm, _Evaluator(test[:10], 1), cfg.steps + 1, half)
        pre = errors[half - 1000 : half]
        base = float(np.median(pre))
        post = errors[half:]
        hits = np.nonzero(post >= 3 * base)[0]
        out["shift_detect_steps"] = int(hits[0]) + 1 if len(hits) else None
        win = 200
        level = float(np.mean(pre))
        smooth = np.convolve(post, np.ones(win) / win, mode="valid")
        rec = np.nonzero(smooth <= 1.2 * level)[0]
        out["recovery_steps"] = int(rec[0]) + win if len(rec) else None
        out["pre_shift_error"] = level
        out["post_shift_error_peak"] = float(post[:50].max())
        out["shifts_detected"] = wm.shifts
    return out
