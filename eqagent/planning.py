"""Active-inference planning: imagine candidate action sequences with a world model, pick the lowest expected
free energy.

For candidate sequences ``π`` the world model's ensemble imagines ``H`` steps (one batched pass per step for all
envs × candidates × members). With ``alive_t = Π_{k<t}(1 − p_term,k)``:

    G(π) = − Σ_t γ^t alive_t · r̂_t                  (pragmatic: predicted reward, or −preference energy)
           + λ_term · Σ_t γ^t alive_t · p_term,t      (termination risk)
           − λ_epi · mean_t disagreement_t            (epistemic value: ensemble disagreement)
           − λ_nov · Σ_t γ^t alive_t · novelty_t     (epistemic value: distance to the nearest visited state)

averaged over the ensemble members that imagined π (by default one: the members share the candidates out,
``PlannerConfig.split_members``; all of them where the disagreement counts, and in an exploiting search where
ending an episode is a gain, ``PlannerConfig.exploit_members``); the two epistemic terms count only
while exploring (training; a deterministic prediction exploits), and λ_nov is in units of the spread of the first
(random warm-up) rewards. With a ``terminal_value`` ``V`` (e.g. :class:`eqagent.value.EPValueFunction`) the
pragmatic term also counts what lies past the horizon: ``− γ^H alive_H · V(ô_H)``. With a ``preference`` (an
energy over observations, lower = preferred) the pragmatic term is ``−Σ γ^t alive_t · (−preference(ô_{t+1}))``
(and the reward value is not used).
The planner returns the first action of the best sequence and the world model's free-phase prediction for it
(kept for learning, not recomputed).

Search: :class:`CEMPlanner` — exact enumeration for small discrete spaces (``n^H ≤ candidates``), else the
cross-entropy method over sequences (categorical for Discrete, Gaussian for Box actions). It plans for a batch of
observations (one per env) in one call. A call is a pure function of the world model, the observations, the warm
start passed in (``state``: the previous plan's distribution, shifted by one step) and the random generator: it
keeps nothing between calls, so the caller decides what carries over (an agent passes its training state; SB3's
``predict`` passes the recurrent ``state``).
"""

from __future__ import annotations

import inspect
import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from eqagent.validation import check_finite_fields

__all__ = ["CEMPlanner", "PlanResult", "Planner", "PlannerConfig", "expected_free_energy"]

Preference = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class PlannerConfig:
    """Settings of the planner.

    Attributes:
        horizon: Imagined steps H.
        candidates: Sequences scored per CEM iteration (per env).
        iterations: CEM iterations (1 = random shooting).
        elites: Sequences the distribution is refitted to.
        discount: γ.
        termination_penalty: λ_term, weight of the predicted termination risk; ``None``: derived from the
            rewards seen, ``max(0, mean reward per step) · horizon`` (ending an episode forfeits at least the
            per-step reward for the rest of the horizon; 0 where rewards are costs, e.g. −1 per step).
        epistemic_weight: λ_epi, weight of the ensemble disagreement (exploration bonus).
        novelty_weight: Weight of the imagined states' novelty (distance, in normalised units, to the nearest
            visited state: :meth:`EPWorldModel.novelty`), counted per imagined step like a reward, in units of the
            standard deviation of the first rewards seen, i.e. under the random warm-up (λ_nov = novelty_weight ·
            σ_r, ``EPWorldModel.first_reward_norm``: scale-free, and a sparse reward found later does not inflate
            it; an env whose rewards never vary, e.g. CartPole's +1, gets no novelty drive). Used only while
            exploring (training), not by deterministic predictions.
        novelty_resolution: Count only the novelty beyond the estimate's resolution (``subtract_resolution`` of
            :meth:`EPWorldModel.novelty`): the distance to the nearest reference less the median distance of the
            visited states between references, floored at 0. Off by default: it takes most of the drive off a
            17-dimensional HalfCheetah and keeps Pendulum's, but MountainCar held its threshold on fewer seeds
            with it and HalfCheetah still trains better with no drive at all (docs/benchmarks.md, session 20).
        smoothing: Weight of the old distribution when refitting (0: none).
        min_std: Floor of the Gaussian std (Box actions, in units of the action range).
        init_std: Std of each search's first Gaussian (Box actions, in units of the action range), around the
            middle of the range (cold) or the previous plan's mean shifted by one step (warm).
        exploit_init_std: ``init_std`` of the searches that exploit (``explore=False``: deterministic predictions,
            evaluation); ``None``: ``init_std``. Narrower than the exploring searches' by default (a quarter of the
            range, PETS' choice): an exploiting search looks for the best action the model knows, and a first
            Gaussian half the range wide puts many candidates at the range's ends, whose first steps the model
            often cannot tell apart (InvertedPendulum: evaluation episodes of 3 steps after a first action of −3,
            docs/benchmarks.md, session 16).
        exploit_members: Which members score the candidates of an exploiting search (``explore=False``):
            ``split`` (as ``split_members`` says, as in training), ``all`` (every member imagines every candidate,
            G their mean), or ``auto``: ``all`` where ending an episode is a gain — the termination penalty is
            derived (``termination_penalty = None``) and the world model has seen episodes end with more reward,
            on average, than a step earns (:meth:`~eqagent.world_model.EPWorldModel.ending_is_a_gain`: Acrobot's
            goal, MountainCar's flag) — else ``split``. There the return hangs on reaching an ending the model
            predicts, and a candidate that one member alone imagines ending is the split search's favourite: a
            hallucinated ending (Acrobot, MountainCar: docs/benchmarks.md, sessions 15–18). Training keeps the
            split (its optimism explores).
        exploit_iterations: CEM iterations of an exploiting search that uses every member (``exploit_members``);
            ``None``: ``iterations``.
        replan_every: Search at least every this many steps; in between, an env whose last step the world model
            predicted unsurprisingly takes the next action of its previous plan (1: search at every step).
        reuse_z: "Unsurprising" for ``replan_every``: the step's prediction error below this many standard
            deviations of the surprise gate's log-error statistics above their mean.
        error_tolerance: How far ahead imagination is trusted: the rollout stops (and the terminal value is
            read) before the first step ahead at which the world model's measured open-loop error
            (:meth:`~eqagent.world_model.EPWorldModel.measure_open_loop_error`: mean squared error in units of the
            observation spread) exceeds this, never below 2 steps; ``horizon`` is the most. 0: always
            ``horizon``. Until a measurement exists, ``horizon``.
        split_members: The ensemble members share the candidates out, each candidate imagined by one member
            (:meth:`~eqagent.world_model.EPWorldModel.imagine` with ``split=True``; as PETS' trajectory sampling
            with one model per candidate): ``M`` times less imagined work per search, and the members' differing
            predictions spread the candidates' scores the way the model is unsure. ``False``: every member
            imagines every candidate and G is their mean. Where G counts the disagreement (``epistemic_weight``
            while exploring) every member imagines every candidate regardless. Deterministic predictions split
            too (the policy evaluated is the one trained, less its exploration terms), except where
            ``exploit_members`` says otherwise.
    """

    horizon: int = 15
    candidates: int = 128
    iterations: int = 3
    elites: int = 16
    discount: float = 0.99
    termination_penalty: float | None = 10.0
    epistemic_weight: float = 0.0
    novelty_weight: float = 3.0
    novelty_resolution: bool = False
    smoothing: float = 0.1
    min_std: float = 0.05
    init_std: float = 0.5
    exploit_init_std: float | None = 0.25
    exploit_members: str = "auto"
    exploit_iterations: int | None = None
    replan_every: int = 1
    reuse_z: float = 1.0
    error_tolerance: float = 0.0
    split_members: bool = True

    def __post_init__(self) -> None:
        check_finite_fields(self)
        if self.horizon < 2 or self.candidates < 1 or self.iterations < 1 or self.replan_every < 1:
            raise ValueError("horizon must be >= 2, candidates, iterations and replan_every >= 1")
        if self.exploit_members not in ("auto", "split", "all"):
            raise ValueError(f"exploit_members must be auto, split or all, got {self.exploit_members!r}")
        if self.exploit_iterations is not None and self.exploit_iterations < 1:
            raise ValueError(f"exploit_iterations must be >= 1 or None, got {self.exploit_iterations}")
        if not 1 <= self.elites <= self.candidates:
            raise ValueError(f"elites must lie in [1, candidates], got {self.elites}")
        if not 0 < self.discount <= 1:
            raise ValueError(f"discount must lie in (0, 1], got {self.discount}")
        if not 0 <= self.smoothing < 1:
            raise ValueError(f"smoothing must lie in [0, 1), got {self.smoothing}")
        penalty = 0.0 if self.termination_penalty is None else self.termination_penalty
        if penalty < 0 or self.epistemic_weight < 0 or self.novelty_weight < 0 or not 0 < self.min_std <= 1:
            raise ValueError(
                "termination_penalty, epistemic_weight and novelty_weight must be >= 0, min_std in (0, 1]"
            )
        if self.error_tolerance < 0:
            raise ValueError(f"error_tolerance must be >= 0, got {self.error_tolerance}")
        if not 0 < self.init_std <= 1 or not (
            self.exploit_init_std is None or 0 < self.exploit_init_std <= 1
        ):
            raise ValueError(
                f"init_std and exploit_init_std must lie in (0, 1], got {self.init_std}, {self.exploit_init_std}"
            )


@dataclass
class PlanResult:
    """Outcome of one planning call for ``E`` observations.

    Attributes:
        action: First action of each env's best sequence: ``(E,)`` int64 (Discrete) or ``(E, A)`` float32 (Box).
        free_energy: Its expected free energy G, ``(E,)``.
        prediction: The world model's free-phase output for ``(obs, action)``, ``(M, E, out)`` (kept for learning).
        sequence: The best sequences, ``(E, H)`` or ``(E, H, A)``.
        state: What the next call starts from, ``(E, state_size)`` float32 (see :meth:`CEMPlanner.plan`).
        reused: Which envs took the next step of their previous plan instead of a search, ``(E,)``.
    """

    action: np.ndarray
    free_energy: np.ndarray
    prediction: torch.Tensor
    sequence: np.ndarray
    state: np.ndarray
    reused: np.ndarray


def expected_free_energy(
    imagined: dict[str, torch.Tensor],
    cfg: PlannerConfig,
    preference: Preference | None = None,
    terminal_value: Preference | None = None,
    termination_penalty: float | None = None,
    novelty: Preference | None = None,
    novelty_weight: float = 0.0,
    explore: bool = True,
) -> torch.Tensor:
    """``G`` per candidate, shape ``(N,)``, from :meth:`EPWorldModel.imagine`'s output (see the module docstring).

    ``termination_penalty`` overrides ``cfg.termination_penalty`` (the planner passes the derived value when the
    config's is ``None``). ``novelty`` maps imagined observations ``(N, H, d)`` to their novelty ``(N, H)``,
    weighted by ``novelty_weight`` (λ_nov in reward units). With ``explore=False`` both exploration terms
    (disagreement and novelty) are left out."""
    if termination_penalty is None:
        termination_penalty = cfg.termination_penalty
    if termination_penalty is None:
        raise ValueError("termination_penalty is None (derived): pass the value derived from the rewards")
    term = imagined["term_prob"].clamp(0, 1)  # (M, N, H)
    alive = torch.cumprod(torch.cat([torch.ones_like(term[..., :1]), 1 - term], -1), -1)  # (M, N, H + 1)
    h = term.shape[-1]
    disc = cfg.discount ** torch.arange(h + 1, dtype=term.dtype, device=term.device)
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
    g = -(pragmatic + tail) + termination_penalty * risk
    if not explore:
        return g
    if cfg.epistemic_weight:
        g = g - cfg.epistemic_weight * imagined["disagreement"].mean(-1)
    if novelty is not None and novelty_weight > 0:
        nov = novelty(imagined["obs"][:, :, 1:].mean(0))  # (N, H): the members' mean imagined states
        g = g - novelty_weight * (disc * alive.mean(0) * nov).sum(-1)
    return g


class Planner(ABC):
    """Abstract planner.

    Contract: ``plan(obs, state, generator, explore)`` returns a :class:`PlanResult` for a batch of observations
    ``(E, d)`` using only the world model's ``imagine(obs, sequences)`` (whose ``first_out`` is the free-phase
    output of each sequence's first step). It keeps nothing between calls: ``state`` (``None`` for a cold start)
    carries the warm start, ``generator`` the randomness, ``explore`` whether exploration terms count (training)
    or not (deterministic predictions). Planners hold no env reference, so agents can swap them.
    """

    @abstractmethod
    def plan(
        self,
        obs: np.ndarray | torch.Tensor,
        state: np.ndarray | None = None,
        generator: torch.Generator | None = None,
        explore: bool = True,
    ) -> PlanResult: ...


class CEMPlanner(Planner):
    """Enumeration / CEM planner over action sequences (see the module docstring).

    Args:
        world_model: An object with ``imagine``, ``discrete``, ``act_dim``, ``obs_dim``, ``device`` and, for Box
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
        self._explore = True  # set by each plan() call
        self._exploit_all = False  # an exploiting call that scores with every member (set by plan())
        # a world model whose imagine() can leave the disagreement out (when G does not count it)
        imagine_args = inspect.signature(world_model.imagine).parameters
        self._can_skip_disagreement = "disagreement" in imagine_args
        self._can_split = self._can_skip_disagreement and "split" in imagine_args
        n, h = self.wm.act_dim, self.cfg.horizon
        self._enumerate = self.wm.discrete and n**h <= self.cfg.candidates
        if self._enumerate:
            self._all = torch.tensor(list(itertools.product(range(n), repeat=h)), dtype=torch.long)
        # the state carried between calls, per env: [distribution (H, K) | best sequence (H, A) | predicted next
        # observation (d) | its G (1) | plans reused in a row (1)], each aligned with the action just taken
        self._k = n if self.wm.discrete else 2 * n
        self._a = 1 if self.wm.discrete else n
        self.state_size = h * self._k + h * self._a + self.wm.obs_dim + 2

    @property
    def device(self) -> torch.device:
        return torch.device(getattr(self.wm, "device", "cpu"))

    def horizon(self) -> int:
        """The steps imagined: ``horizon``, cut by ``error_tolerance`` where the world model's last measured
        open-loop error (``open_loop_error``, per step ahead) first exceeds it (at least 2)."""
        h, tol = self.cfg.horizon, self.cfg.error_tolerance
        err = getattr(self.wm, "open_loop_error", None) if tol > 0 else None
        if err is None:
            return h
        over = np.flatnonzero(np.asarray(err[:h]) > tol)
        return h if not len(over) else min(h, max(2, int(over[0])))

    def termination_penalty(self) -> float:
        """λ_term: the config's, or (``None``) ``max(0, mean reward per step) · H`` (``H`` the steps imagined,
        :meth:`horizon`) from the world model's running reward statistics (``reward_norm.mean``; 0 for a world
        model without them)."""
        if self.cfg.termination_penalty is not None:
            return self.cfg.termination_penalty
        norm = getattr(self.wm, "reward_norm", None)
        rate = float(norm.mean) if norm is not None else 0.0
        return max(0.0, rate) * self.horizon()

    def novelty_weight(self) -> float:
        """λ_nov in reward units: ``novelty_weight · σ_r``, σ_r the spread of the world model's first rewards
        (``first_reward_norm``: before anything was learned; 0 for a world model without them)."""
        norm = getattr(self.wm, "first_reward_norm", None)
        if not self.cfg.novelty_weight or norm is None or float(norm.count) < 2:
            return 0.0
        # without the normaliser's floor: constant rewards give 0
        sigma = float((norm.m2 / norm.count).sqrt())
        return self.cfg.novelty_weight * sigma

    def _novelty(self) -> Preference | None:
        """The world model's novelty of observations ``(N, H, d)`` as ``novelty_resolution`` says (``None``: a
        world model without one)."""
        novelty = getattr(self.wm, "novelty", None)
        if novelty is None or not self.cfg.novelty_resolution:
            return novelty
        return lambda obs: novelty(obs, subtract_resolution=True)

    def _cold_dist(self, e: int) -> torch.Tensor:
        h, n = self.cfg.horizon, self.wm.act_dim
        if self.wm.discrete:
            return torch.full((e, h, n), 1.0 / n, device=self.device)
        low, high = self.wm.act_low, self.wm.act_high
        return torch.cat([(low + high) / 2, self.cfg.init_std * (high - low)]).expand(e, h, 2 * n).clone()

    def cold_state(self, e: int) -> np.ndarray:
        """The state of an env without a previous plan ``(E, state_size)``: the cold distribution (uniform over
        the actions, or centred on the action box with half its span as std), no best sequence, no prediction."""
        dist = self._cold_dist(e).reshape(e, -1)
        rest = torch.zeros(e, self.cfg.horizon * self._a + self.wm.obs_dim + 2, device=self.device)
        rest[:, self.cfg.horizon * self._a : -2] = math.nan  # no predicted observation: nothing to reuse
        return torch.cat([dist, rest], 1).cpu().numpy()

    def _unpack(self, state: torch.Tensor):
        e, h, d = state.shape[0], self.cfg.horizon, self.wm.obs_dim
        i = h * self._k
        j = i + h * self._a
        best = state[:, i:j].reshape(e, h, self._a)
        best = best[..., 0].round().long() if self.wm.discrete else best
        return state[:, :i].reshape(e, h, self._k), best, state[:, j : j + d], state[:, -2], state[:, -1]

    def _pack(self, dist, best, pred, g, age) -> np.ndarray:
        e = dist.shape[0]
        best = best.float().reshape(e, -1)
        parts = [dist.reshape(e, -1), best, pred, g[:, None], age[:, None].float()]
        return torch.cat(parts, 1).cpu().numpy().astype(np.float32)

    def _splits(self) -> bool:
        """Whether this call's searches imagine each candidate with one member (see ``split_members``)."""
        return (
            self.cfg.split_members
            and self._can_split
            and not (self._explore and self.cfg.epistemic_weight)
            and not self._exploit_all
        )

    def exploits_with_all_members(self) -> bool:
        """Whether an exploiting search (``explore=False``) scores with every member (``exploit_members``)."""
        mode = self.cfg.exploit_members
        if mode != "auto":
            return mode == "all"
        gain = getattr(self.wm, "ending_is_a_gain", None)
        return self.cfg.termination_penalty is None and gain is not None and gain()

    def _iterations(self) -> int:
        if self._exploit_all and self.cfg.exploit_iterations is not None:
            return self.cfg.exploit_iterations
        return self.cfg.iterations

    def _score(self, obs: torch.Tensor, seqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """G ``(E, C)`` and the first step's free-phase outputs ``(M, E, C, out)`` of sequences ``(E, C, H[, A])``
        (``M`` = 1 where the members split the candidates)."""
        e, c = seqs.shape[:2]
        flat_obs = obs[:, None].expand(e, c, obs.shape[-1]).reshape(e * c, -1)
        h = self.horizon()  # the steps imagined; the sequences' later steps are planned, not scored, yet
        seqs_flat = (seqs if h == seqs.shape[2] else seqs[:, :, :h]).reshape(e * c, h, *seqs.shape[3:])
        if (self._explore and self.cfg.epistemic_weight) or not self._can_skip_disagreement:
            imagined = self.wm.imagine(flat_obs, seqs_flat)
        elif self._splits():  # one member per candidate
            imagined = self.wm.imagine(flat_obs, seqs_flat, disagreement=False, split=True)
        else:  # the disagreement is not counted: not computed
            imagined = self.wm.imagine(flat_obs, seqs_flat, disagreement=False)
        g = expected_free_energy(
            imagined, self.cfg, self.preference, self.terminal_value, self.termination_penalty(),
            self._novelty(), self.novelty_weight(), self._explore,
        )  # fmt: skip
        first = imagined["first_out"]
        return g.view(e, c), first.view(first.shape[0], e, c, first.shape[-1])

    def plan(
        self,
        obs: np.ndarray | torch.Tensor,
        state: np.ndarray | None = None,
        generator: torch.Generator | None = None,
        explore: bool = True,
    ) -> PlanResult:
        """Plans for observations ``(E, d)`` (or one ``(d,)``) from ``state`` (``(E, state_size)``, as the previous
        call returned it; ``None``: cold). An env whose previous plan is younger than ``replan_every`` steps and
        whose observation the world model did not find surprising (:meth:`~eqagent.world_model.EPWorldModel.
        unsurprising`) takes the next action of that plan without a search. With ``explore=False`` the
        exploration terms of G (disagreement, novelty) are left out: the plan exploits what the model knows."""
        self._explore = bool(explore)
        self._exploit_all = not self._explore and self.exploits_with_all_members()
        obs = torch.as_tensor(np.asarray(obs, dtype=np.float32) if not torch.is_tensor(obs) else obs)
        obs = obs.to(self.device, torch.float32).reshape(-1, self.wm.obs_dim)  # (E, d)
        e = obs.shape[0]
        warm = state is not None
        if warm:
            state = torch.as_tensor(np.asarray(state, dtype=np.float32), device=self.device)
            if state.shape != (e, self.state_size):
                raise ValueError(
                    f"planner state must have shape {(e, self.state_size)}, got {tuple(state.shape)}"
                )
        else:
            state = torch.as_tensor(self.cold_state(e), device=self.device)
        dist, prev_best, prev_pred, prev_g, age = self._unpack(state)
        reuse = torch.zeros(e, dtype=torch.bool, device=self.device)
        if warm and self.cfg.replan_every > 1 and hasattr(self.wm, "unsurprising"):
            reuse = (age < self.cfg.replan_every - 1) & self.wm.unsurprising(prev_pred, obs, self.cfg.reuse_z)
        seq = torch.roll(prev_best, -1, dims=1)  # reused rows: the previous plan, one step on
        seq[:, -1] = seq[:, -2]
        g = prev_g.clone()
        new_dist = torch.roll(dist, -1, dims=1)
        new_dist[:, -1] = self._cold_dist(1)[0, -1]
        pred = torch.empty(0)
        rows = (~reuse).nonzero()[:, 0]
        if len(rows):
            best = _Best(len(rows))
            warm_rows = (dist[rows], prev_best[rows]) if warm else None
            if self._enumerate:
                seqs = self._all.to(self.device).expand(len(rows), *self._all.shape)
                best.consider(seqs, *self._score(obs[rows], seqs))
                planned = self._cold_dist(len(rows))
            elif self.wm.discrete:
                planned = self._cem_discrete(obs[rows], warm_rows, generator, best)
            else:
                planned = self._cem_box(obs[rows], warm_rows, generator, best)
            seq[rows], g[rows], new_dist[rows] = best.seq, best.g.to(g), planned
            # the kept prediction is every member's: a split search imagined the first action with one
            pred = self._kept(obs[rows], best.seq[:, 0]) if self._splits() else best.pred
        first = seq[:, 0]
        if bool(reuse.any()):  # the kept prediction of a reused plan's action: one free phase
            reused = self._kept(obs[reuse], first[reuse])
            out = reused.new_empty(reused.shape[0], e, reused.shape[-1])
            out[:, reuse] = reused
            if len(rows):
                out[:, rows] = pred
        else:
            out = pred
        next_obs = self.wm.decode_next_obs(obs, out)  # (E, d): the ensemble's mean prediction
        new_age = torch.where(reuse, age + 1, torch.zeros_like(age))
        seq_np = seq.cpu().numpy()
        action = seq_np[:, 0].astype(np.int64) if self.wm.discrete else seq_np[:, 0].astype(np.float32)
        return PlanResult(action=action, free_energy=g.cpu().numpy(), prediction=out, sequence=seq_np,
                          state=self._pack(new_dist, seq, next_obs, g, new_age),
                          reused=reuse.cpu().numpy())  # fmt: skip

    def _kept(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Every member's free-phase output ``(M, B, out)`` for ``(obs, action)``: the prediction kept for learning."""
        if hasattr(self.wm, "predict_out"):  # the raw output alone
            return self.wm.predict_out(obs, action)
        return self.wm.predict_members(obs, action)["out"]

    def _elites(self, obs, seqs: torch.Tensor, best: _Best, start: torch.Tensor | None) -> torch.Tensor:
        """Puts the best sequence so far (or the warm start's) in as candidate 0, scores ``seqs`` ``(E, C, …)``,
        keeps the best, and returns the indices of the elites ``(E, k)``."""
        if best.seq is not None:
            seqs[:, 0] = best.seq
        elif start is not None:
            seqs[:, 0] = start
        g, first = self._score(obs, seqs)
        best.consider(seqs, g, first)
        return g.topk(self.cfg.elites, dim=1, largest=False).indices

    def _cem_discrete(self, obs, warm, gen, best: _Best) -> torch.Tensor:
        c, n, h = self.cfg, self.wm.act_dim, self.cfg.horizon
        e = obs.shape[0]
        probs = torch.full((e, h, n), 1.0 / n, device=self.device)
        start = None
        if warm is not None:  # warm start: shift by one, uniform at the end; the previous best plan competes
            probs[:, :-1] = 0.5 * warm[0][:, 1:] + 0.5 / n
            start = torch.roll(
                warm[1], -1, dims=1
            )  # (E, H): the previous best plan shifted, last step repeated
        for _ in range(self._iterations()):
            u = torch.rand(e, c.candidates, h, 1, generator=gen, device=self.device)
            seqs = (u > probs.cumsum(-1)[:, None]).sum(-1).clamp_max(n - 1)  # (E, C, H)
            top = self._elites(obs, seqs, best, start)[..., None].expand(-1, -1, h)
            freq = torch.nn.functional.one_hot(seqs.gather(1, top), n).float().mean(1)  # (E, H, n)
            probs = c.smoothing * probs + (1 - c.smoothing) * freq
        return probs

    def _cem_box(self, obs, warm, gen, best: _Best) -> torch.Tensor:
        c, h, a = self.cfg, self.cfg.horizon, self.wm.act_dim
        e = obs.shape[0]
        low, high = self.wm.act_low, self.wm.act_high
        span = high - low
        mean = ((low + high) / 2).expand(e, h, a).clone()
        init = (
            self.cfg.init_std
            if self._explore or self.cfg.exploit_init_std is None
            else self.cfg.exploit_init_std
        )
        std = (init * span).expand(e, h, a).clone()
        start = None
        if warm is not None:  # the previous plan's mean shifted by one; its best sequence competes
            mean[:, :-1] = warm[0][:, 1:, :a]
            start = torch.roll(warm[1], -1, dims=1)
        for _ in range(self._iterations()):
            noise = torch.randn(e, c.candidates, h, a, generator=gen, device=self.device)
            seqs = torch.maximum(torch.minimum(mean[:, None] + std[:, None] * noise, high), low)
            idx = self._elites(obs, seqs, best, start)[..., None, None].expand(-1, -1, h, a)
            elite = seqs.gather(1, idx)  # (E, k, H, A)
            mean = c.smoothing * mean + (1 - c.smoothing) * elite.mean(1)
            spread = elite.std(1, unbiased=False)
            std = torch.maximum(c.smoothing * std + (1 - c.smoothing) * spread, c.min_std * span)
        return torch.cat([mean, std], -1)


class _Best:
    """Each env's best sequence so far, its G and its kept first-step prediction."""

    def __init__(self, e: int) -> None:
        self.seq: torch.Tensor | None = None
        self.g = torch.full((e,), math.inf)
        self.pred: torch.Tensor | None = None

    def consider(self, seqs: torch.Tensor, g: torch.Tensor, first: torch.Tensor) -> None:
        """``seqs`` ``(E, C, ...)``, ``g`` ``(E, C)``, ``first`` ``(M, E, C, out)``."""
        e = seqs.shape[0]
        rows = torch.arange(e, device=g.device)
        gmin, i = g.min(1)
        cand_seq, cand_pred = seqs[rows, i], first[:, rows, i]  # (E, ...), (M, E, out)
        if self.seq is None:
            self.seq, self.g, self.pred = cand_seq.clone(), gmin, cand_pred.clone()
            return
        better = gmin < self.g.to(g.device)
        self.seq[better] = cand_seq[better]
        self.g = torch.where(better, gmin, self.g.to(g.device))
        self.pred[:, better] = cand_pred[:, better]
