"""Active-inference planning: imagine candidate action sequences with a world model, pick the lowest expected
free energy.

For candidate sequences ``π`` the world model's ensemble imagines ``H`` steps (one batched pass per step for all
candidates × members). With ``alive_t = Π_{k<t}(1 − p_term,k)``:

    G(π) = − Σ_t γ^t alive_t · r̂_t                  (pragmatic: predicted reward, or −preference energy)
           + λ_term · Σ_t γ^t alive_t · p_term,t      (termination risk)
           − λ_epi · mean_t disagreement_t            (epistemic value: ensemble disagreement)

averaged over ensemble members. With a ``terminal_value`` ``V`` (e.g. :class:`eqagent.value.EPValueFunction`) the
pragmatic term also counts what lies past the horizon: ``− γ^H alive_H · V(ô_H)``. With a ``preference`` (an
energy over observations, lower = preferred) the pragmatic term is ``−Σ γ^t alive_t · (−preference(ô_{t+1}))``
(and the reward value is not used). The planner returns the first action of the best
sequence and the world model's free-phase prediction for it (kept for learning, not recomputed).

Search: :class:`CEMPlanner` — exact enumeration for small discrete spaces (``n^H ≤ candidates``), else the
cross-entropy method over sequences (categorical for Discrete, Gaussian for Box actions), warm-started from the
previous step's distribution shifted by one.
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["CEMPlanner", "PlanResult", "Planner", "PlannerConfig", "expected_free_energy"]

Preference = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class PlannerConfig:
    """Settings of the planner.

    Attributes:
        horizon: Imagined steps H.
        candidates: Sequences scored per CEM iteration.
        iterations: CEM iterations (1 = random shooting).
        elites: Sequences the distribution is refitted to.
        discount: γ.
        termination_penalty: λ_term, weight of the predicted termination risk.
        epistemic_weight: λ_epi, weight of the ensemble disagreement (exploration bonus).
        smoothing: Weight of the old distribution when refitting (0: none).
        min_std: Floor of the Gaussian std (Box actions, in units of the action range).
        seed: Seed of the candidate sampler.
    """

    horizon: int = 15
    candidates: int = 256
    iterations: int = 3
    elites: int = 32
    discount: float = 0.99
    termination_penalty: float = 1.0
    epistemic_weight: float = 0.0
    smoothing: float = 0.1
    min_std: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        if self.horizon < 1 or self.candidates < 1 or self.iterations < 1:
            raise ValueError("horizon, candidates and iterations must be >= 1")
        if not 1 <= self.elites <= self.candidates:
            raise ValueError(f"elites must lie in [1, candidates], got {self.elites}")
        if not 0 < self.discount <= 1:
            raise ValueError(f"discount must lie in (0, 1], got {self.discount}")
        if not 0 <= self.smoothing < 1:
            raise ValueError(f"smoothing must lie in [0, 1), got {self.smoothing}")


@dataclass
class PlanResult:
    """Outcome of one planning call.

    Attributes:
        action: First action of the best sequence (int for Discrete, array for Box).
        free_energy: Its expected free energy G.
        prediction: The world model's free-phase output for ``(obs, action)``, ``(M, 1, out)`` (kept for learning).
        sequence: The best sequence.
    """

    action: int | np.ndarray
    free_energy: float
    prediction: torch.Tensor | None
    sequence: np.ndarray


def expected_free_energy(
    imagined: dict[str, torch.Tensor],
    cfg: PlannerConfig,
    preference: Preference | None = None,
    terminal_value: Preference | None = None,
) -> torch.Tensor:
    """``G`` per candidate, shape ``(N,)``, from :meth:`EPWorldModel.imagine`'s output (see the module docstring)."""
    term = imagined["term_prob"].clamp(0, 1)  # (M, N, H)
    alive = torch.cumprod(torch.cat([torch.ones_like(term[..., :1]), 1 - term], -1), -1)  # (M, N, H + 1)
    h = term.shape[-1]
    disc = cfg.discount ** torch.arange(h + 1, dtype=term.dtype)
    tail = 0.0
    if preference is None and terminal_value is not None:
        tail = (disc[h] * alive[..., h] * terminal_value(imagined["obs"][:, :, h])).mean(0)  # (N,)
    alive, disc = alive[..., :h], disc[:h]
    if preference is None:
        value = imagined["reward"]
    else:
        value = -preference(imagined["obs"][:, :, 1:])  # (M, N, H)
        if value.shape != term.shape:
            raise ValueError(f"preference must return one energy per imagined state {tuple(term.shape)}, got "
                             f"{tuple(value.shape)}")  # fmt: skip
    pragmatic = (disc * alive * value).sum(-1).mean(0)
    risk = (disc * alive * term).sum(-1).mean(0)
    epistemic = imagined["disagreement"].mean(-1)
    return -(pragmatic + tail) + cfg.termination_penalty * risk - cfg.epistemic_weight * epistemic


class Planner(ABC):
    """Abstract planner.

    Contract: ``plan(obs)`` returns a :class:`PlanResult` for one observation using only the world model's
    ``imagine(obs, sequences)`` (whose ``first_out`` is the free-phase output of each sequence's first step); ``reset()`` forgets warm starts (call it at
    episode starts). Planners hold no env reference, so agents can swap them.
    """

    @abstractmethod
    def plan(self, obs: np.ndarray) -> PlanResult: ...

    def reset(self) -> None:  # noqa: B027 - optional hook
        """Forget warm starts."""


class CEMPlanner(Planner):
    """Enumeration / CEM planner over action sequences (see the module docstring).

    Args:
        world_model: An object with ``imagine``, ``discrete``, ``act_dim`` and, for Box
            actions, ``act_low``/``act_high`` (an :class:`eqagent.world_model.EPWorldModel`).
        config: :class:`PlannerConfig`.
        preference: Optional energy over observations ``(..., d) → (...)`` (lower = preferred).
        terminal_value: Optional value of observations ``(..., d) → (...)`` in reward units, counted past the
            horizon (ignored with a preference).
    """

    def __init__(
        self,
        world_model,
        config: PlannerConfig | None = None,
        preference: Preference | None = None,
        terminal_value: Preference | None = None,
    ):
        self.wm = world_model
        self.cfg = config or PlannerConfig()
        self.preference = preference
        self.terminal_value = terminal_value
        self.rng = np.random.default_rng(self.cfg.seed)
        self._dist: tuple[np.ndarray, np.ndarray] | np.ndarray | None = None
        n, h = self.wm.act_dim, self.cfg.horizon
        self._enumerate = self.wm.discrete and n**h <= self.cfg.candidates
        if self._enumerate:
            self._all = np.array(list(itertools.product(range(n), repeat=h)), dtype=np.int64)

    def reset(self) -> None:
        self._dist = None

    def _score(self, obs: np.ndarray, seqs: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
        """Expected free energy per sequence and the first step's free-phase outputs ``(M, N, out)``."""
        imagined = self.wm.imagine(obs, seqs)
        g = expected_free_energy(imagined, self.cfg, self.preference, self.terminal_value)
        return g.numpy(), imagined["first_out"]

    def plan(self, obs: np.ndarray) -> PlanResult:
        obs = np.asarray(obs, dtype=np.float32)
        self._best = (None, math.inf, None)  # (sequence, G, first-step output) over all scored candidates
        if self._enumerate:
            self._consider(self._all, *self._score(obs, self._all))
        elif self.wm.discrete:
            self._cem_discrete(obs)
        else:
            self._cem_box(obs)
        seq, g_best, pred = self._best
        action = int(seq[0]) if self.wm.discrete else seq[0].astype(np.float32)
        return PlanResult(action=action, free_energy=g_best, prediction=pred, sequence=seq)

    def _consider(self, seqs: np.ndarray, g: np.ndarray, first_out: torch.Tensor) -> np.ndarray:
        """Keeps the best sequence so far (with its kept prediction); returns ``argsort(g)``."""
        order = np.argsort(g)
        i = int(order[0])
        if g[i] < self._best[1]:
            self._best = (seqs[i].copy(), float(g[i]), first_out[:, i : i + 1].clone())
        return order

    def _cem_discrete(self, obs: np.ndarray) -> None:
        c, n, h = self.cfg, self.wm.act_dim, self.cfg.horizon
        probs = np.full((h, n), 1.0 / n)
        if isinstance(self._dist, np.ndarray):  # warm start: shift by one, uniform at the end
            probs[:-1] = 0.5 * self._dist[1:] + 0.5 / n
        for _ in range(c.iterations):
            cum = probs.cumsum(-1)
            u = self.rng.random((c.candidates, h, 1))
            seqs = (u > cum[None]).sum(-1).clip(0, n - 1)
            if self._best[0] is not None:
                seqs[0] = self._best[0]
            order = self._consider(seqs, *self._score(obs, seqs))
            elite = seqs[order[: c.elites]]
            freq = np.stack([(elite == a).mean(0) for a in range(n)], -1)
            probs = c.smoothing * probs + (1 - c.smoothing) * freq
        self._dist = probs

    def _cem_box(self, obs: np.ndarray) -> None:
        c, h = self.cfg, self.cfg.horizon
        low = self.wm.act_low.numpy()
        high = self.wm.act_high.numpy()
        span = high - low
        mean = np.tile((low + high) / 2, (h, 1))
        std = np.tile(span / 2, (h, 1))
        if isinstance(self._dist, tuple):
            mean[:-1] = self._dist[0][1:]
        for _ in range(c.iterations):
            seqs = np.clip(mean + std * self.rng.standard_normal((c.candidates, h, len(low))), low, high)
            seqs = seqs.astype(np.float32)
            if self._best[0] is not None:
                seqs[0] = self._best[0]
            order = self._consider(seqs, *self._score(obs, seqs))
            elite = seqs[order[: c.elites]]
            mean = c.smoothing * mean + (1 - c.smoothing) * elite.mean(0)
            std = np.maximum(c.smoothing * std + (1 - c.smoothing) * elite.std(0), c.min_std * span)
        self._dist = (mean, std)
