"""The EP world model: ``(obs, action) → (Δobs, reward, termination)``, learned online by Equilibrium Propagation.

An ensemble of ``M`` MLPs is one batched layer-wise prediction-error energy
(:class:`eqagent.energy.EnsembleMLPEnergy`): its free equilibrium is the forward pass, so imagination costs one
batched pass per imagined step, and learning is the engine's EP step (symmetric ±β nudged relaxations through
:func:`eqagent.ep.ep_gradients`, local updates written into ``.grad``, Adam).

Online flow (DESIGN, "the agent, one env step"): the planner's free-phase prediction for the chosen action is
kept; :meth:`EPWorldModel.observe` compares it with the real next frame (surprise), the
:class:`eqagent.surprise.SurpriseGate` turns the surprise into a learning-rate multiplier, and — unless the gate
is closed — one EP update on the new transition plus a bootstrapped replay minibatch follows. Replay is a
bounded ring buffer: memory stays flat over any run length. Normalisers update online and are saved with the
model.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from eqagent.adam import FusedAdam
from eqagent.buffers import ReplayBuffer, RunningNormalizer
from eqagent.costs import WorldModelCost
from eqagent.energy import EnsembleMLPEnergy
from eqagent.ep import EPConfig, ep_gradients
from eqagent.imagination import Imagination
from eqagent.surprise import SurpriseGate, SurpriseGateConfig
from eqagent.validation import check_finite_fields

__all__ = ["EPWorldModel", "ReplayBuffer", "RunningNormalizer", "WorldModelConfig", "WorldModelCost"]


@dataclass
class WorldModelConfig:
    """Settings of :class:`EPWorldModel`.

    Attributes:
        hidden: Hidden layer sizes of each member.
        members: Ensemble size (disagreement = the planner's epistemic signal).
        activation: Hidden activation (tanh, relu, sigmoid).
        learner: ``ep`` (Equilibrium Propagation) or ``bp`` (backprop through the same ensemble: the baseline).
        lr: Adam learning rate (multiplied by the gate).
        beta: EP nudging strength.
        settle_steps: EP nudged relaxation steps. One step's EP gradient is the closest to backprop's (2e-6
            relative; 6e-4 with 3) and the agent holds CartPole better with it; with the surprise gate on a random
            stream, 3 steps keep the gated model nearer the ungated one (``eqagent bench worldmodel``, which uses 3).
        batch_size: Transitions per member and update (the new one plus replay samples).
        replay_size: Replay capacity.
        updates_per_step: EP updates per observed step (when the gate is open).
        gate: Use the surprise gate (else every step updates at full lr).
        gate_config: Surprise-gate settings.
        forget_on_shift: When the mean surprise over the last ``shift_window`` steps reaches ``shift_z`` (a
            lasting change of the env, not a burst of odd frames), forget the replay older than that window, so
            stale transitions from the old physics stop pulling the model back.
        shift_z: Mean surprise (z-score) over the window that declares a shift.
        shift_window: Steps the mean surprise is taken over.
        shift_cooldown: Steps after a declared shift before another can be declared (while re-learning, the
            surprise stays high; the new physics' replay must not be forgotten again).
        term_weight: Weight of the termination cross-entropy.
        reward_scale_steps: The first this many rewards make ``first_reward_norm``: the spread of rewards before
            the agent has learned anything (its random warm-up acts then), the unit of the planner's novelty
            drive. Later rewards do not change it: a sparse reward, once found, does not inflate exploration.
        seed: Random seed (initialisation and replay sampling).
        imagine_backend: How imagined rollouts run: ``auto`` (the fused Triton rollout of
            :mod:`eqagent.kernels.triton_imagine` on CUDA when Triton is installed and the net has two hidden
            layers, torch otherwise), ``torch``, or ``triton`` (forced; on CPU it needs ``TRITON_INTERPRET=1``).
    """

    hidden: tuple[int, ...] = (64, 64)
    members: int = 5
    activation: str = "tanh"
    learner: str = "ep"
    lr: float = 1e-3
    beta: float = 0.01
    settle_steps: int = 1
    batch_size: int = 32
    replay_size: int = 20000
    updates_per_step: int = 1
    gate: bool = True
    gate_config: SurpriseGateConfig = field(default_factory=SurpriseGateConfig)
    forget_on_shift: bool = False
    shift_z: float = 2.0
    shift_window: int = 100
    shift_cooldown: int = 1000
    term_weight: float = 1.0
    reward_scale_steps: int = 100
    seed: int = 0
    imagine_backend: str = "auto"

    def __post_init__(self) -> None:
        check_finite_fields(self)
        self.hidden = tuple(int(n) for n in self.hidden)
        if len(self.hidden) < 1 or any(n < 1 for n in self.hidden):
            raise ValueError(f"hidden must list at least one positive layer size, got {self.hidden}")
        if self.learner not in ("ep", "bp"):
            raise ValueError(f"learner must be 'ep' or 'bp', got {self.learner!r}")
        if self.members < 1 or self.batch_size < 1 or self.updates_per_step < 0:
            raise ValueError("members and batch_size must be >= 1, updates_per_step >= 0")
        if not self.lr > 0 or not self.beta > 0 or self.settle_steps < 1 or self.replay_size < 1:
            raise ValueError(
                f"lr and beta must be > 0, settle_steps and replay_size >= 1, got {self.lr}, {self.beta}, "
                f"{self.settle_steps}, {self.replay_size}"
            )
        if self.imagine_backend not in ("auto", "torch", "triton"):
            raise ValueError(f"imagine_backend must be auto, torch or triton, got {self.imagine_backend!r}")
        if self.activation not in ("tanh", "relu", "sigmoid"):
            raise ValueError(f"activation must be tanh, relu or sigmoid, got {self.activation!r}")
        if self.term_weight < 0 or self.shift_z <= 0:
            raise ValueError(
                f"term_weight must be >= 0 and shift_z > 0, got {self.term_weight}, {self.shift_z}"
            )
        if self.reward_scale_steps < 1:
            raise ValueError(f"reward_scale_steps must be >= 1, got {self.reward_scale_steps}")
        if self.shift_window < 1 or self.shift_cooldown < 0:
            raise ValueError(
                f"shift_window must be >= 1 and shift_cooldown >= 0, got {self.shift_window}, {self.shift_cooldown}"
            )


def _space_dims(observation_space: spaces.Space, action_space: spaces.Space) -> tuple[int, int, bool]:
    """``(obs_dim, act_dim, discrete)`` of the spaces the world model supports; ``ValueError`` naming any other."""
    if not isinstance(observation_space, spaces.Box) or len(observation_space.shape) != 1:
        raise ValueError(f"the world model needs a 1-D Box observation space, got {observation_space}")
    if isinstance(action_space, spaces.Discrete):
        if int(action_space.start) != 0:
            raise ValueError(f"Discrete action spaces must start at 0, got {action_space}")
        return observation_space.shape[0], int(action_space.n), True
    if isinstance(action_space, spaces.Box) and len(action_space.shape) == 1:
        return observation_space.shape[0], action_space.shape[0], False
    raise ValueError(f"the world model needs a Discrete or 1-D Box action space, got {action_space}")


class EPWorldModel(nn.Module):
    """Ensemble world model of a Gymnasium env, learned online (see the module docstring).

    Args:
        observation_space: A 1-D ``Box``.
        action_space: ``Discrete`` or 1-D ``Box``.
        config: :class:`WorldModelConfig`.
        device: Where the ensemble, its normalisers and its updates live (the replay stays in host memory).
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        config: WorldModelConfig | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__()
        self.config = cfg = config or WorldModelConfig()
        self.obs_dim, self.act_dim, self.discrete = _space_dims(observation_space, action_space)
        self.action_space = action_space
        self.device = torch.device(device)
        if not self.discrete:
            low, high = action_space.low.astype(np.float32), action_space.high.astype(np.float32)
            if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
                raise ValueError("Box action spaces must be bounded")
            self.register_buffer("act_low", torch.from_numpy(low))
            self.register_buffer("act_high", torch.from_numpy(high))
        gen = torch.Generator().manual_seed(cfg.seed)
        self.in_dim, self.out_dim = self.obs_dim + self.act_dim, self.obs_dim + 2
        self.energy = EnsembleMLPEnergy(
            [self.in_dim, *cfg.hidden, self.out_dim], cfg.members, cfg.activation, generator=gen
        )
        self.cost = WorldModelCost(self.obs_dim, cfg.term_weight)
        self.obs_norm = RunningNormalizer(self.obs_dim)
        self.delta_norm = RunningNormalizer(self.obs_dim)
        self.reward_norm = RunningNormalizer(1)
        self.first_reward_norm = RunningNormalizer(1)
        self.to(self.device)
        self.optimizer = FusedAdam(self.energy.parameters(), lr=cfg.lr)
        self._params = list(self.energy.parameters())
        self.ep = EPConfig(beta=cfg.beta, symmetric=True, free_steps=0, nudged_steps=cfg.settle_steps)
        self.gate = SurpriseGate(cfg.gate_config)
        self.replay = ReplayBuffer(cfg.replay_size, self.obs_dim, self.act_dim)
        self.rng = np.random.default_rng(cfg.seed)
        self.updates = 0
        self.observed = 0
        self.terminations = 0  # transitions observed that ended their episode (not by a time limit)
        self.terminal_reward = 0.0  # the sum of those transitions' rewards (see ending_is_a_gain)
        self.shifts = 0  # shifts detected (replay forgotten)
        self._recent_surprise: deque[float] = deque(maxlen=cfg.shift_window)  # the shift detector's window
        self._since_shift = cfg.shift_cooldown
        self._imagination: Imagination | None = None
        self._stride = 1  # transitions per observe() call: one env's consecutive steps lie this far apart
        # the last measure_open_loop_error(): mean squared error k = 1 … H steps ahead (None: not measured)
        self.open_loop_error: np.ndarray | None = None

    # ------------------------------------------------------------------ encoding
    def encode_action(self, action) -> torch.Tensor:
        """One-hot (Discrete) or scaled to [−1, 1] (Box); shape ``(..., act_dim)``."""
        if self.discrete:
            return nn.functional.one_hot(self.action_indices(action), self.act_dim).float()
        a = action if torch.is_tensor(action) else torch.as_tensor(np.asarray(action))
        a = a.to(self.device).float()
        if a.shape[-1] != self.act_dim:
            raise ValueError(f"Box actions must have last dimension {self.act_dim}, got {tuple(a.shape)}")
        a = torch.maximum(torch.minimum(a, self.act_high), self.act_low)
        return 2 * (a - self.act_low) / (self.act_high - self.act_low).clamp_min(1e-8) - 1

    def action_indices(self, action) -> torch.Tensor:
        """Discrete actions as int64 indices on the model's device (``ValueError`` outside ``[0, n)``)."""
        if not torch.is_tensor(action):  # numpy: checked there, no device round trip
            arr = np.asarray(action)
            arr = (arr.round() if arr.dtype.kind == "f" else arr).astype(np.int64)
            if arr.size and (arr.min() < 0 or arr.max() >= self.act_dim):
                raise ValueError(
                    f"discrete actions must lie in [0, {self.act_dim}), got {arr.reshape(-1)[:5].tolist()}"
                )
            return torch.from_numpy(arr).to(self.device)
        a = action.to(self.device)
        if a.is_floating_point():
            a = a.round()
        a = a.long()
        if a.numel():
            lo, hi = torch.aminmax(a)
            if int(lo) < 0 or int(hi) >= self.act_dim:
                raise ValueError(
                    f"discrete actions must lie in [0, {self.act_dim}), got {a.flatten()[:5].tolist()}"
                )
        return a

    def _check_obs(self, obs) -> torch.Tensor:
        if not torch.is_tensor(obs):  # numpy: checked there (no host sync), then shared with torch
            arr = np.asarray(obs, dtype=np.float32)
            if arr.ndim == 0 or arr.shape[-1] != self.obs_dim:
                raise ValueError(f"observations must have last dimension {self.obs_dim}, got {arr.shape}")
            if not np.isfinite(arr).all():
                raise ValueError("observation contains NaN or inf")
            return torch.as_tensor(arr, device=self.device)
        o = obs.to(device=self.device, dtype=torch.float32)
        if o.dim() == 0 or o.shape[-1] != self.obs_dim:
            raise ValueError(f"observations must have last dimension {self.obs_dim}, got {tuple(o.shape)}")
        if not torch.isfinite(o).all():
            raise ValueError("observation contains NaN or inf")
        return o

    def model_input(self, obs: torch.Tensor, act_enc: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.obs_norm.normalize(obs).clamp(-10, 10), act_enc], dim=-1)

    # ------------------------------------------------------------------ prediction
    @torch.no_grad()
    def predict_members(self, obs, action) -> dict[str, torch.Tensor]:
        """Free-phase predictions of every member for a batch.

        Returns:
            ``next_obs`` ``(M, B, d)``, ``reward`` ``(M, B)``, ``term_prob`` ``(M, B)`` (denormalised), and the raw
            normalised output ``out`` ``(M, B, d + 2)``.
        """
        o = self._check_obs(obs).reshape(-1, self.obs_dim)
        return self._decode(o, self._predict_out(o, action))

    @torch.no_grad()
    def predict_out(self, obs, action) -> torch.Tensor:
        """The raw normalised free-phase output ``(M, B, d + 2)`` of :meth:`predict_members` alone (what learning
        keeps; nothing decoded)."""
        return self._predict_out(self._check_obs(obs).reshape(-1, self.obs_dim), action)

    def _predict_out(self, o: torch.Tensor, action) -> torch.Tensor:
        a = self.encode_action(action).reshape(o.shape[0], self.act_dim)
        return self.energy.feedforward(self.model_input(o, a))[-1]  # (M, B, d+2): the free equilibrium

    def _decode(self, o: torch.Tensor, out: torch.Tensor) -> dict[str, torch.Tensor]:
        d = self.obs_dim
        return {
            "out": out,
            "next_obs": o + self.delta_norm.denormalize(out[..., :d]),
            "reward": self.reward_norm.denormalize(out[..., d : d + 1])[..., 0],
            "term_prob": torch.sigmoid(out[..., d + 1]),
        }

    def decode_next_obs(self, obs: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The ensemble's mean next observation ``(B, d)`` from raw outputs ``out`` ``(M, B, d + 2)`` at ``obs``."""
        return obs + self.delta_norm.denormalize(out[..., : self.obs_dim]).mean(0)

    def ending_is_a_gain(self) -> bool:
        """Whether the transitions seen to end an episode (``terminated``, not a time limit) earned more, on
        average, than a step does: ``False`` until one was seen. Acrobot (0 at the goal, −1 per step) and
        MountainCar (+100 at the flag) end in a gain; CartPole and InvertedPendulum (a step earns +1, ending earns
        +1 or 0) do not."""
        if self.terminations == 0:
            return False
        ending, step = self.terminal_reward / self.terminations, float(self.reward_norm.mean[0])
        return ending > step + 1e-6 * max(1.0, abs(step))  # equal means (CartPole) read as no gain

    @torch.no_grad()
    def unsurprising(
        self, predicted: torch.Tensor, obs: torch.Tensor, z_max: float | None = None
    ) -> torch.Tensor:
        """Per row, whether ``obs`` is within what the surprise gate calls unsurprising of the ``predicted`` next
        observation: its normalised squared error, read as a z-score against the gate's statistics of log-error,
        is below ``z_max`` (default: the gate's own opening threshold); ``False`` while the gate's statistics are
        warming up, and for a ``NaN`` prediction."""
        gate = self.gate
        if gate.steps <= gate.config.warmup:
            return torch.zeros(obs.shape[0], dtype=torch.bool, device=obs.device)
        err = (((obs - predicted) / self.delta_norm.moments(obs.dtype)[1]) ** 2).mean(-1)
        z = (torch.log(err + gate.config.eps) - gate.mean) / max(gate.var, 1e-12) ** 0.5
        return z < (gate.config.z_open if z_max is None else z_max)

    @torch.no_grad()
    def predict(self, obs, action) -> dict[str, torch.Tensor]:
        """Ensemble-mean prediction ``next_obs (B, d)``, ``reward (B,)``, ``term_prob (B,)`` plus
        ``disagreement (B,)`` (mean variance of the members' normalised Δobs) and the per-member ``out``."""
        p = self.predict_members(obs, action)
        d = self.obs_dim
        return {
            "next_obs": p["next_obs"].mean(0),
            "reward": p["reward"].mean(0),
            "term_prob": p["term_prob"].mean(0),
            "disagreement": p["out"][..., :d].var(0, unbiased=False).mean(-1),
            "out": p["out"],
        }

    @torch.no_grad()
    def novelty(
        self, obs: torch.Tensor, references: int = 256, subtract_resolution: bool = False
    ) -> torch.Tensor:
        """How far observations ``(..., d)`` lie from what the agent has visited: the distance, in normalised
        units, to the nearest of ``references`` visited observations (evenly spaced over the replay, so the
        result is a function of the replay, not of a random draw). A state-visitation novelty: large where the
        model has no data, 0 before anything is stored.

        With ``subtract_resolution``, less the estimate's resolution, floored at 0: the median distance to the
        references of the visited observations halfway (in the replay) between two neighbouring references. That
        is what a few hundred references cannot tell apart from "visited": where the replay holds more states
        than references, a state just visited lies that far from them too. In a low-dimensional space the
        references pave what was visited densely and the resolution is small; in a high-dimensional one they are
        sparse and every state, visited or not, lies far from them (HalfCheetah's 17 dimensions: visited and
        imagined states alike ~3 normalised units from the nearest reference, docs/benchmarks.md, session 20)."""
        n = self.replay.size
        if n == 0:
            return torch.zeros(obs.shape[:-1], dtype=obs.dtype, device=obs.device)
        idx = np.unique(np.linspace(0, n - 1, min(n, references)).round().astype(np.int64))
        mid = np.setdiff1d((idx[:-1] + idx[1:]) // 2, idx) if subtract_resolution else idx[:0]
        rows = torch.from_numpy(self.replay.obs[np.concatenate([idx, mid])]).to(obs.device, obs.dtype)
        rows = self.obs_norm.normalize(rows)
        ref = rows[: len(idx)]  # (K, d)
        x = self.obs_norm.normalize(obs).reshape(-1, obs.shape[-1])  # (P, d)
        dist = torch.cdist(x, ref).amin(-1)  # (P,)
        if len(mid):  # visited states that are not references: the resolution
            dist = (dist - torch.cdist(rows[len(idx) :], ref).amin(-1).median()).clamp(min=0)
        return dist.reshape(obs.shape[:-1])

    @torch.no_grad()
    def imagine(
        self, obs, action_sequences, disagreement: bool = True, split: bool = False
    ) -> dict[str, torch.Tensor]:
        """Rolls every member forward from ``obs`` along each action sequence (one batched pass per step).

        Each imagined step is the free equilibrium of the energy (its feed-forward pass), computed for all
        candidates × members at once. The rollout runs in normalised-observation space with the normalisers and
        the input's action part folded into the weights (:class:`eqagent.imagination.Imagination`), so a step
        costs one batched matmul and one activation per layer; the result equals stepping
        :meth:`predict_members` (tested to 1e-5).

        Args:
            obs: A single observation ``(d,)`` (broadcast) or one per sequence ``(N, d)``.
            action_sequences: ``(N, H)`` discrete actions or ``(N, H, act_dim)`` Box actions.
            disagreement: Whether to compute the members' disagreement.
            split: The members share the sequences out: sequence ``i`` is imagined by member ``i // ⌈N / M⌉``
                alone (``M`` times less work; needs ``disagreement=False``). The member axis of the outputs is
                then 1: each sequence's own member.

        Returns:
            ``obs`` ``(M, N, H + 1, d)``, ``reward`` ``(M, N, H)``, ``term_prob`` ``(M, N, H)``,
            ``disagreement`` ``(N, H)`` (unless ``disagreement=False``: a caller that does not use it saves its
            computation), and ``first_out`` ``(M, N, d + 2)``: the raw free-phase output of the first
            step (what :meth:`observe` reuses as the kept prediction); with ``split``, ``M`` reads 1.
        """
        seq = (
            action_sequences
            if torch.is_tensor(action_sequences)
            else torch.as_tensor(np.asarray(action_sequences))
        )
        if seq.dim() < 2:
            raise ValueError(f"action_sequences must be (N, H) or (N, H, act_dim), got {tuple(seq.shape)}")
        n = seq.shape[0]
        # (N, H) indices (the rollout picks rows of a per-action table) or (N, H, A) encoded actions
        enc = self.action_indices(seq) if self.discrete else self.encode_action(seq)
        o = self._check_obs(obs)
        o = o.expand(n, self.obs_dim) if o.dim() == 1 else o
        if o.shape != (n, self.obs_dim):
            raise ValueError(f"obs must be ({self.obs_dim},) or ({n}, {self.obs_dim}), got {tuple(o.shape)}")
        if self._imagination is None:
            self._imagination = Imagination(self)
        return self._imagination.rollout(o, enc, disagreement, split)

    @torch.no_grad()
    def measure_open_loop_error(
        self, horizon: int, segments: int = 64, window: int = 1000
    ) -> np.ndarray | None:
        """How far ahead the model can be trusted: replays the actions of real trajectories open loop.

        From up to ``segments`` starts among the newest ``window`` transitions whose next ``horizon`` steps are one
        unbroken trajectory of one env (each step's next observation is the next step's observation), the
        members' mean imagined observations ``k = 1 … horizon`` steps ahead are compared with the real ones. The
        starts are drawn from a generator of their own (seeded by the model's seed and its step count), so
        measuring changes no other random stream.

        Returns:
            ``(horizon,)`` mean squared error per step ahead, in units of the observation spread (the observation
            normaliser's variance), also kept as :attr:`open_loop_error` (saved with the model); ``None`` (and
            nothing kept) while the replay holds no such trajectory.
        """
        if horizon < 1 or segments < 1 or window < 1:
            raise ValueError(
                f"horizon, segments and window must be >= 1, got {horizon}, {segments}, {window}"
            )
        rp, stride = self.replay, self._stride
        n = min(rp.size, window)
        span = (horizon - 1) * stride  # from a trajectory's first replay row to its last
        if n <= span:
            return None
        idx = rp.newest(n)  # oldest first; consecutive steps of one env lie ``stride`` apart
        # step i continues into step i + stride: its next observation is that step's observation
        joined = np.all(rp.next_obs[idx[:-stride]] == rp.obs[idx[stride:]], axis=1)
        steps = np.arange(horizon - 1) * stride
        starts = np.arange(n - span)
        if horizon > 1:
            ok = np.all(joined[starts[:, None] + steps], axis=1) if len(starts) else np.zeros(0, bool)
            starts = starts[ok]
        if not len(starts):
            return None
        gen = np.random.default_rng([self.config.seed, 7907, self.observed])
        starts = gen.choice(starts, size=min(segments, len(starts)), replace=False)
        rows = idx[starts[:, None] + np.arange(horizon) * stride]  # (S, H) replay rows of each trajectory
        obs = torch.from_numpy(rp.obs[rows[:, 0]]).to(self.device)  # (S, d)
        acts = torch.from_numpy(rp.act[rows]).to(self.device)  # (S, H, A) as encoded
        if self.discrete:
            acts = acts.argmax(-1)  # (S, H) indices
        if self._imagination is None:
            self._imagination = Imagination(self)
        imagined = self._imagination.rollout(obs, acts, disagreement=False)["obs"].mean(0)[:, 1:]  # (S, H, d)
        real = torch.from_numpy(rp.next_obs[rows]).to(self.device)  # (S, H, d)
        spread = self.obs_norm.moments(real.dtype)[1]
        err = (((imagined - real) / spread) ** 2).mean((0, 2)).cpu().numpy().astype(np.float64)
        # a diverged rollout is as untrustworthy as it gets: inf, never NaN (which no tolerance would cut)
        self.open_loop_error = np.where(np.isnan(err), np.inf, err)
        return self.open_loop_error

    # ------------------------------------------------------------------ learning
    def _targets(self, obs: torch.Tensor, next_obs: torch.Tensor, reward: torch.Tensor, term: torch.Tensor):
        return torch.cat(
            [
                self.delta_norm.normalize(next_obs - obs),
                self.reward_norm.normalize(reward[..., None]),
                term[..., None],
            ],
            dim=-1,
        )

    def prediction_errors(self, out: torch.Tensor, obs, next_obs, reward) -> torch.Tensor:
        """Squared error per transition ``(B,)`` of the ensemble-mean normalised Δobs and reward prediction
        ``out`` ``(M, B, d + 2)`` vs the real outcome."""
        o = self._check_obs(obs).reshape(-1, self.obs_dim)
        no = self._check_obs(next_obs).reshape(-1, self.obs_dim)
        return self._prediction_errors(out, o, no, reward)

    def _prediction_errors(
        self, out: torch.Tensor, o: torch.Tensor, no: torch.Tensor, reward
    ) -> torch.Tensor:
        """:meth:`prediction_errors` of checked ``(B, d)`` observations."""
        r = torch.as_tensor(np.asarray(reward), dtype=torch.float32, device=self.device).reshape(-1)
        tgt = self._targets(o, no, r, torch.zeros_like(r))[..., : self.obs_dim + 1]
        pred = out.mean(0)[..., : self.obs_dim + 1]
        return ((pred - tgt) ** 2).mean(-1)

    def observe(
        self, obs, action, next_obs, reward, terminated, prediction: torch.Tensor | None = None
    ) -> dict[str, float | bool]:
        """Learns from one real transition, or from one per env of a vector env (see the module docstring).

        Args:
            obs, action, next_obs, reward, terminated: The transition(s): ``(d,)``, action, ``(d,)``, float, bool;
                or ``E`` of each (leading dimension ``E``).
            prediction: The kept free-phase output ``(M, E, d + 2)`` for ``(obs, action)`` (e.g. from planning);
                computed here when ``None``.

        Every transition goes to the replay and the normalisers, and its error through the surprise gate; then at
        most ``updates_per_step`` updates run (if the gate is open for any of them), each on the newest
        transitions plus replay, at the largest gate multiplier.

        Returns:
            ``dict(error, surprise, gate, updated)`` (means over the ``E`` transitions; the gate's maximum).
        """
        o = self._check_obs(obs).reshape(-1, self.obs_dim)
        no = self._check_obs(next_obs).reshape(-1, self.obs_dim)
        e = o.shape[0]
        if no.shape[0] != e:
            raise ValueError(
                f"obs and next_obs must hold the same number of transitions, got {e} and {no.shape[0]}"
            )
        r = np.asarray(reward, dtype=np.float64).reshape(-1)
        t = np.asarray(terminated, dtype=bool).reshape(-1)
        if r.shape[0] != e or t.shape[0] != e:
            raise ValueError(f"expected {e} rewards and termination flags, got {r.shape[0]} and {t.shape[0]}")
        if not np.all(np.isfinite(r)):
            raise ValueError(f"reward must be finite, got {r.tolist()}")
        a = self.encode_action(action).reshape(e, self.act_dim)
        if prediction is None:
            prediction = self.predict_members(o, action)["out"]
        if self.observed > 0:
            errors = self._prediction_errors(prediction, o, no, r).cpu().numpy().astype(np.float64)
        else:
            errors = np.ones(e)  # nothing seen yet: no statistics to read the error against
        self.replay.add(o.cpu().numpy(), a.cpu().numpy(), no.cpu().numpy(), r, t)
        self._stride = e
        self.obs_norm.update(o)
        self.delta_norm.update(no - o)
        self.reward_norm.update(torch.as_tensor(r, device=self.device)[:, None])
        room = self.config.reward_scale_steps - int(self.first_reward_norm.count)
        if room > 0:
            self.first_reward_norm.update(torch.as_tensor(r, device=self.device)[:room, None])
        self.observed += e
        self.terminations += int(t.sum())
        self.terminal_reward += float(r[t].sum())
        gates, surprises = [], []
        for err in errors:
            g = self.gate(float(err)) if (self.config.gate or self.config.forget_on_shift) else 1.0
            gates.append(g if self.config.gate else 1.0)
            surprises.append(self.gate.last_surprise)
            if self.config.forget_on_shift:
                self._detect_shift()
        g = max(gates)
        updated = False
        if not (self.config.gate and self.gate.skip(g)):
            for _ in range(self.config.updates_per_step):
                self._update(lr_scale=g, newest=e)  # the loss is not read here: no host sync for it
                updated = True
        return {
            "error": float(errors.mean()),
            "surprise": float(np.mean(surprises)),
            "gate": g,
            "updated": updated,
        }

    def _detect_shift(self) -> None:
        """Declares a shift when the window's mean surprise reaches ``shift_z`` (see :class:`WorldModelConfig`)."""
        c, win = self.config, self._recent_surprise
        self._since_shift += 1
        if self.gate.steps <= self.gate.config.warmup:
            return  # the surprise statistics are not trusted yet
        win.append(self.gate.last_surprise)
        if (
            len(win) == c.shift_window
            and self._since_shift >= c.shift_cooldown
            and sum(win) / len(win) >= c.shift_z
        ):
            self.replay.keep_last(len(win))
            self.shifts += 1
            self._since_shift = 0
            win.clear()

    def update(self, lr_scale: float = 1.0, newest: int = 1) -> float:
        """One learning step on the ``newest`` transitions plus a bootstrapped replay minibatch per member; returns
        the batch-mean cost before the step (``nan`` with an empty replay)."""
        loss = self._update(lr_scale, newest)
        return loss() if callable(loss) else loss

    def _update(self, lr_scale: float = 1.0, newest: int = 1) -> float | Callable[[], float]:
        """:meth:`update`, its loss returned as a callable where reading it would cost a host sync."""
        cfg = self.config
        n = self.replay.size
        if n == 0:
            return float("nan")
        m, b = cfg.members, min(cfg.batch_size, n)
        k = max(1, min(newest, b))
        idx = self.rng.integers(0, n, size=(m, b))
        idx[:, :k] = self.replay.newest(k)  # the newest transitions, for every member
        o, a, no, r, t = (torch.from_numpy(v).to(self.device) for v in self.replay.sample(idx))
        x = self.model_input(o, a)  # (M, B, in)
        y = self._targets(o, no, r, t)
        if cfg.learner == "ep":
            step = ep_gradients(self.energy, self.cost, x, y, self.ep)
            grads = [step.grads[p] for p in self._params]  # each member's slice: its own batch-mean cost's
            loss = step.loss_value  # the cost has no parameters: reading it later gives the same value
        else:
            out = self.energy(x)
            lossv = self.cost.value(out, self.cost.check_target(y, out)).mean(-1).sum()
            grads = torch.autograd.grad(lossv, self._params)
            loss = float(lossv.detach()) / m
        self.optimizer.step(grads, lr_scale)
        self.updates += 1
        return loss

    # ------------------------------------------------------------------ persistence
    def get_extra_state(self) -> dict:
        # JSON data: a non-finite error (a diverged rollout) is kept as a large number
        err = None if self.open_loop_error is None else [min(float(x), 1e30) for x in self.open_loop_error]
        return {"gate": self.gate.state_dict(), "observed": self.observed, "updates": self.updates,
                "terminations": self.terminations, "terminal_reward": self.terminal_reward,
                "open_loop_error": err}  # fmt: skip

    def set_extra_state(self, state: dict) -> None:
        self.gate.load_state_dict(state["gate"])
        self.observed, self.updates = int(state["observed"]), int(state["updates"])
        terms = state.get("terminations", 0)  # absent in checkpoints written before it was kept
        if isinstance(terms, bool) or not isinstance(terms, int) or terms < 0:
            raise ValueError(f"terminations must be an integer >= 0, got {terms!r}")
        total = state.get("terminal_reward")  # absent before it was kept: the terminal statistics restart
        if total is None:
            terms, total = 0, 0.0
        elif isinstance(total, bool) or not isinstance(total, (int, float)) or not math.isfinite(total):
            raise ValueError(f"terminal_reward must be a finite number, got {total!r}")
        self.terminations, self.terminal_reward = terms, float(total)
        err = state.get("open_loop_error")  # absent in checkpoints written before it was kept
        if err is not None:
            ok = isinstance(err, list) and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x >= 0
                for x in err
            )
            if not ok or not err:
                raise ValueError("open_loop_error must be a non-empty list of finite numbers >= 0")
            err = np.asarray(err, dtype=np.float64)
        self.open_loop_error = err
