"""The surprise gate ("dopamine"): prediction error → learning-rate multiplier.

Surprise is the world model's prediction error of the real next frame, read against running statistics of
its own history: ``z = (log e − μ) / σ`` with ``μ, σ`` exponential moving statistics of ``log e``. The gate is

    g = clip((z − z_open) / (z_full − z_open), 0, 1)

so it is 0 for errors at or below their usual level (nothing to learn: the update is skipped, saving compute and
protecting what was learned), and 1 for errors ``z_full`` standard deviations above it. The default ramp is
narrow (0.1 to 0.11): a step that is learned from is learned at the full rate. Scaling the rate down on mildly
surprising steps saves no compute and costs accuracy (``eqagent bench worldmodel``; figures in
docs/benchmarks.md). The statistics adapt slowly (``horizon`` steps), so the thresholds follow the model's accuracy as it
improves, while a lasting shift keeps the gate open long enough to re-learn. During ``warmup`` the gate is 1.

Learning progress also keeps the gate open: while a fast moving average of log-error (``progress_fast`` steps)
lies more than ``progress_threshold`` below a slow one (``progress_slow`` steps), the model is still improving
and every step is learned from; once the error has plateaued, only surprising steps are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["SurpriseGate", "SurpriseGateConfig"]


@dataclass
class SurpriseGateConfig:
    """Settings of the surprise gate.

    Attributes:
        z_open: Surprise (in running standard deviations of log-error) where the gate starts to open.
        z_full: Surprise where the gate is fully open.
        horizon: Time constant (steps) of the running statistics.
        warmup: Steps with the gate fully open before the statistics are trusted.
        min_gate: Multipliers below this count as closed: the update is skipped.
        eps: Floor of the error before the log.
        progress_fast: Time constant of the fast log-error average (learning progress).
        progress_slow: Time constant of the slow log-error average.
        progress_threshold: Fast-below-slow margin (nats) that counts as progress (``inf`` disables).
    """

    z_open: float = 0.1
    z_full: float = 0.11
    horizon: int = 500
    warmup: int = 500
    min_gate: float = 0.05
    eps: float = 1e-8
    progress_fast: int = 200
    progress_slow: int = 2000
    progress_threshold: float = 0.3

    def __post_init__(self) -> None:
        if not self.z_full > self.z_open:
            raise ValueError(f"z_full must exceed z_open, got {self.z_full} <= {self.z_open}")
        if self.horizon < 1 or self.warmup < 0:
            raise ValueError(f"horizon must be >= 1 and warmup >= 0, got {self.horizon}, {self.warmup}")
        if not 0 <= self.min_gate < 1:
            raise ValueError(f"min_gate must lie in [0, 1), got {self.min_gate}")


class SurpriseGate:
    """Turns prediction errors into learning-rate multipliers (see the module docstring).

    Attributes:
        steps: Errors seen.
        last_surprise: z-score of the last error.
        last_gate: Multiplier returned for the last error.
    """

    def __init__(self, config: SurpriseGateConfig | None = None) -> None:
        self.config = config or SurpriseGateConfig()
        self.steps = 0
        self.mean = 0.0
        self.var = 1.0
        self.last_surprise = 0.0
        self.last_gate = 1.0
        self.fast = 0.0
        self.slow = 0.0
        self.last_progress = 0.0

    def __call__(self, error: float) -> float:
        """Reads one prediction error, updates the statistics and returns the multiplier in [0, 1]."""
        if not math.isfinite(error) or error < 0:
            raise ValueError(f"prediction error must be finite and >= 0, got {error}")
        c = self.config
        x = math.log(error + c.eps)
        if self.steps == 0:
            self.mean, self.var = x, 1.0
        std = math.sqrt(max(self.var, 1e-12))
        z = (x - self.mean) / std
        if self.steps == 0:
            self.fast = self.slow = x
        self.fast += max(1.0 / (self.steps + 1), 1.0 / c.progress_fast) * (x - self.fast)
        self.slow += max(1.0 / (self.steps + 1), 1.0 / c.progress_slow) * (x - self.slow)
        self.last_progress = self.slow - self.fast
        if self.steps < c.warmup or self.last_progress > c.progress_threshold:
            g = 1.0
        else:
            g = min(1.0, max(0.0, (z - c.z_open) / (c.z_full - c.z_open)))
        # running statistics (the first steps weigh more so they settle quickly)
        a = max(1.0 / (self.steps + 1), 1.0 / c.horizon)
        d = x - self.mean
        self.mean += a * d
        self.var = (1 - a) * (self.var + a * d * d) if self.steps > 0 else 1.0
        self.steps += 1
        self.last_surprise, self.last_gate = z, g
        return g

    def skip(self, gate: float) -> bool:
        """Whether a multiplier is small enough to skip the update entirely."""
        return gate < self.config.min_gate

    def state_dict(self) -> dict[str, float]:
        return {"steps": self.steps, "mean": self.mean, "var": self.var, "fast": self.fast, "slow": self.slow}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.steps, self.mean, self.var = int(state["steps"]), float(state["mean"]), float(state["var"])
        self.fast, self.slow = float(state.get("fast", self.mean)), float(state.get("slow", self.mean))
