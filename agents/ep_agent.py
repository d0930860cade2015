"""``EPAgent``: an online EP world model + an active-inference planner + the surprise gate, SB3-style.

One env step (DESIGN): the planner imagines candidate sequences with the world model for every env of the vector
env in one batched call and returns each env's action with the lowest expected free energy together with the
free-phase prediction for it; after ``env.step`` the world model observes the real transitions (surprise → gate →
EP update) reusing that prediction.

The agent fits Stable-Baselines3's tooling: it trains on an SB3 ``VecEnv`` (a single env, an env id or a
Gymnasium vector env is converted), ``learn`` takes SB3 callbacks (``EvalCallback``, ``CheckpointCallback``,
``StopTrainingOnRewardThreshold``, lists, plain callables) and logs through SB3's ``Logger``, and ``predict`` has
SB3's signature, so ``evaluate_policy`` works. Where SB3 assumes a policy network, the planner takes its place:
there is no ``policy`` attribute; ``predict`` plans.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from eqagent.agents import checkpoint
from eqagent.agents.config import EPAgentConfig, agent_config
from eqagent.agents.envs import as_vec_env, check_env_id
from eqagent.agents.preferences import describe_preference, resolve_preference
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, ConvertCallback
from stable_baselines3.common.logger import HParam, Logger
from stable_baselines3.common.utils import configure_logger, safe_mean
from stable_baselines3.common.vec_env import VecEnv

from eqagent.configs import config_to_dict
from eqagent.planning import CEMPlanner, PlanResult
from eqagent.value import EPValueFunction
from eqagent.world_model import EPWorldModel

__all__ = ["EPAgent"]

MaybeCallback = BaseCallback | list[BaseCallback] | Callable[[dict[str, Any], dict[str, Any]], bool] | None


class EPAgent:
    """An Equilibrium-Propagation agent for Gymnasium envs with 1-D Box observations.

    Args:
        env: An env id, a ``gym.Env``, a Gymnasium vector env or an SB3 ``VecEnv``.
        config: An :class:`~eqagent.agents.config.EPAgentConfig` (or a dict of its fields); ``None``: the defaults
            with what :func:`~eqagent.agents.config.derived_defaults` takes from the env's spaces and episode length.
        tensorboard_log: Root directory of TensorBoard runs (``None``: no logs), as in SB3.
        seed: Seed of the world model, value, planner, env resets and random warm-up actions.
        verbose: 0 silent, 1 SB3's stdout log.
        device: ``"cpu"`` (default) or a CUDA device for the world model, value and planner.
        preference: A shipped preference name for the env, a callable ``(..., d) → (...)`` (lower = preferred),
            or ``"module:callable"`` (imported only with ``trust_remote_code=True``).
        trust_remote_code: Allow ``preference`` / a checkpoint's env id to name code to import.
        **overrides: Config fields by path: ``planner={"horizon": 25}``, ``learning_starts=50``,
            ``**{"world_model.lr": 3e-4}``.
    """

    def __init__(
        self,
        env: str | gym.Env | VecEnv,
        config: EPAgentConfig | dict | None = None,
        *,
        tensorboard_log: str | None = None,
        seed: int | None = None,
        verbose: int = 0,
        device: str | torch.device = "cpu",
        preference: Any = None,
        trust_remote_code: bool = False,
        **overrides: Any,
    ) -> None:
        self.seed = 0 if seed is None else int(seed)
        self.env, self.env_id = as_vec_env(env, trust_remote_code=trust_remote_code)
        self.n_envs = self.env.num_envs
        self.observation_space, self.action_space = self.env.observation_space, self.env.action_space
        if isinstance(preference, str):
            overrides["preference"] = preference
        elif preference is not None:
            overrides["preference"] = ""  # a callable is not config data
        spec = self.env.get_attr("spec", [0])[0]
        steps = getattr(spec, "max_episode_steps", None)
        cfg = agent_config(self.observation_space, self.action_space, steps, config, **overrides)
        self.preference = resolve_preference(
            preference if callable(preference) else (cfg.preference or None), self.env_id, trust_remote_code
        )
        self.config = cfg
        self.verbose, self.tensorboard_log = verbose, tensorboard_log
        self.device = torch.device(device)
        self.world_model = EPWorldModel(
            self.observation_space, self.action_space, replace(cfg.world_model, seed=self.seed), self.device
        )
        vcfg = replace(cfg.value, seed=self.seed)
        self.value = EPValueFunction(self.world_model, vcfg) if cfg.terminal_value else None
        self.planner = CEMPlanner(self.world_model, cfg.planner, self.preference, terminal_value=self.value)
        self.num_timesteps = 0
        self._train_gen = torch.Generator(self.device).manual_seed(self.seed)
        self._stochastic_gen = torch.Generator(self.device).manual_seed(self.seed + 1)
        self.action_space.seed(self.seed)
        self.env.seed(self.seed)
        self._last_obs: np.ndarray | None = None
        self._plan_state: np.ndarray | None = None
        self._logger: Logger | None = None
        self._custom_logger = False
        self.ep_info_buffer: deque = deque(maxlen=100)
        self._episode_num = 0
        self.plan_seconds, self.plans = 0.0, 0

    # ------------------------------------------------------------------ SB3 surface
    def get_env(self) -> VecEnv:
        """The training vector env (SB3's callbacks read ``num_envs`` and wrappers from it)."""
        return self.env

    def get_vec_normalize_env(self) -> None:
        """No ``VecNormalize``: the world model normalises observations itself."""
        return None

    @property
    def logger(self) -> Logger:
        """SB3's ``Logger`` of the current run (configured by :meth:`learn` unless set by :meth:`set_logger`)."""
        if self._logger is None:
            self._logger = self._folderless_logger()
        return self._logger

    def _folderless_logger(self) -> Logger:
        """No log folder (SB3's ``configure(None)`` would make a temporary one): stdout only when verbose."""
        from stable_baselines3.common.logger import HumanOutputFormat

        return Logger(None, [HumanOutputFormat(sys.stdout)] if self.verbose else [])

    def set_logger(self, logger: Logger) -> None:
        """Uses ``logger`` (SB3's ``configure(...)``) instead of configuring one at each ``learn``."""
        self._logger, self._custom_logger = logger, True

    @property
    def _n_updates(self) -> int:
        """Learning updates so far (world model and value), as SB3 algorithms count theirs."""
        return self.world_model.updates + (self.value.updates if self.value is not None else 0)

    @property
    def ms_per_action(self) -> float:
        """Mean planning time per training env step (ms)."""
        return 1e3 * self.plan_seconds / self.plans if self.plans else float("nan")

    # ------------------------------------------------------------------ acting
    def _check_obs(self, observation: Any) -> np.ndarray:
        d = self.world_model.obs_dim
        obs = np.asarray(observation, dtype=np.float32)
        if obs.ndim == 0 or obs.shape[-1] != d or obs.ndim > 2:
            raise ValueError(f"observation must have shape ({d},) or (n, {d}), got {obs.shape}")
        if not np.all(np.isfinite(obs)):
            raise ValueError("observation contains NaN or inf")
        return obs

    def _obs_generator(self, obs_row: np.ndarray) -> torch.Generator:
        """The planner's randomness for one observation: a function of the seed and the observation only."""
        digest = hashlib.blake2b(
            obs_row.tobytes(), digest_size=8, key=self.seed.to_bytes(8, "little", signed=True)
        )
        return torch.Generator(self.device).manual_seed(int.from_bytes(digest.digest(), "little") >> 1)

    def predict(
        self,
        observation: np.ndarray,
        state: np.ndarray | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """SB3's signature: plans for one observation ``(d,)`` or a batch ``(n, d)``; returns ``(actions, state)``.

        With ``deterministic=True`` the action is a pure function of the weights, the observation, the seed and
        the ``state`` passed in: each observation is planned on its own with randomness drawn from (seed,
        observation), and the only warm start is ``state`` (the previous call's returned plan, as SB3's
        ``evaluate_policy`` passes it back; rows with ``episode_start`` start cold), and the plan exploits (no
        exploration terms in its expected free energy). ``deterministic=False`` draws from the agent's running
        generator instead and explores as in training.
        """
        obs = self._check_obs(observation)
        single = obs.ndim == 1
        batch = obs[None] if single else obs
        n = batch.shape[0]
        if state is not None:
            state = np.asarray(state, dtype=np.float32)
            expected = (n, self.planner.state_size)
            if state.shape != expected:
                raise ValueError(
                    f"state must have shape {expected} (as predict returned it), got {state.shape}"
                )
        starts = np.zeros(n, bool) if episode_start is None else np.asarray(episode_start, bool).reshape(n)
        actions, states = [], []
        for i, row in enumerate(batch):
            warm = None if state is None or starts[i] else state[i : i + 1]
            gen = self._obs_generator(row) if deterministic else self._stochastic_gen
            res = self.planner.plan(row[None], warm, gen, explore=not deterministic)
            actions.append(res.action[0])
            states.append(res.state[0])
        out = np.stack(actions)
        return (out[0] if single else out), np.stack(states)

    def _plan(self, obs: np.ndarray) -> PlanResult:
        t0 = time.perf_counter()
        res = self.planner.plan(obs, self._plan_state, self._train_gen)
        self.plan_seconds += time.perf_counter() - t0
        self.plans += 1
        self._plan_state = res.state
        return res

    # ------------------------------------------------------------------ learning
    def _setup_logger(self, tb_log_name: str, reset_num_timesteps: bool) -> None:
        if self._custom_logger:
            return
        if not self.tensorboard_log:
            self._logger = self._folderless_logger()
            return
        logger = configure_logger(self.verbose, self.tensorboard_log, tb_log_name, reset_num_timesteps)
        if logger.get_dir():  # a TensorBoard run folder: add the CSV progress file as SB3's `configure` would
            from stable_baselines3.common.logger import make_output_format

            logger.output_formats.append(make_output_format("csv", logger.get_dir()))
        self._logger = logger

    def _log_config(self) -> None:
        """The full config: as ``config.json`` beside the logs, TensorBoard text and HParams."""
        cfg = {"env_id": self.env_id, "seed": self.seed, "n_envs": self.n_envs, **config_to_dict(self.config)}
        text = json.dumps(cfg, indent=1)
        folder = self.logger.get_dir()
        if folder:
            (Path(folder) / "config.json").write_text(text)
        flat = {}

        def walk(prefix: str, node: Any) -> None:
            for k, v in node.items():
                if isinstance(v, dict):
                    walk(f"{prefix}{k}.", v)
                else:
                    flat[prefix + k] = v if isinstance(v, (int, float, str, bool)) else str(v)

        walk("", cfg)
        metrics = {"eval/mean_reward": 0.0, "rollout/ep_rew_mean": 0.0}
        self.logger.record("hparams", HParam(flat, metrics), exclude=("stdout", "log", "json", "csv"))
        self.logger.record("config", "```\n" + text + "\n```", exclude=("stdout", "log", "json", "csv"))
        self.logger.dump(self.num_timesteps)

    def _init_callback(self, callback: MaybeCallback, progress_bar: bool) -> BaseCallback:
        if isinstance(callback, list):
            callback = CallbackList(callback)
        if callback is None:
            callback = CallbackList([])
        elif not isinstance(callback, BaseCallback):
            callback = ConvertCallback(callback)
        if progress_bar:
            from eqagent.agents.evaluation import ProgressBar

            callback = CallbackList([callback, ProgressBar()])
        callback.init_callback(self)
        return callback

    def learn(
        self,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "EPAgent",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> EPAgent:
        """Acts and learns online for ``total_timesteps`` env steps (summed over the vector env's envs).

        Args:
            total_timesteps: Env steps.
            callback: SB3 callback(s) (a ``BaseCallback``, a list of them, or a callable ``(locals, globals) →
                bool``), called after every vector step; returning ``False`` stops training.
            log_interval: Episodes between log dumps.
            tb_log_name: TensorBoard run name (``{tb_log_name}_{N}`` under ``tensorboard_log``).
            reset_num_timesteps: Start the step counter at 0 (else continue the previous run's count and log).
            progress_bar: Show a progress bar (tqdm) that also moves during evaluations.
        """
        if isinstance(total_timesteps, bool) or not isinstance(total_timesteps, (int, np.integer)):
            raise ValueError(f"total_timesteps must be an integer, got {total_timesteps!r}")
        if total_timesteps < 1 or log_interval < 1:
            raise ValueError(
                f"total_timesteps and log_interval must be >= 1, got {total_timesteps}, {log_interval}"
            )
        if reset_num_timesteps:
            self.num_timesteps, self._episode_num = 0, 0
            self.ep_info_buffer.clear()
        else:
            total_timesteps += self.num_timesteps
        self._total_timesteps = total_timesteps
        self._setup_logger(tb_log_name, reset_num_timesteps)
        if reset_num_timesteps or self._last_obs is None:
            self._last_obs = self._check_obs(self.env.reset())
            self._plan_state = None
        self._log_config()
        callback = self._init_callback(callback, progress_bar)
        callback.on_training_start(locals(), globals())
        callback.on_rollout_start()
        self._t_start, self._steps_at_start = time.perf_counter(), self.num_timesteps
        episodes_since_dump = 0
        while self.num_timesteps < total_timesteps:
            obs = self._last_obs
            if self.num_timesteps < self.config.learning_starts:
                actions = np.array([self.action_space.sample() for _ in range(self.n_envs)])
                prediction = None
            else:
                res = self._plan(obs)
                actions, prediction = res.action, res.prediction
                self.logger.record_mean("planner/free_energy", float(res.free_energy.mean()))
                self.logger.record_mean("planner/reused", float(res.reused.mean()))
            new_obs, rewards, dones, infos = self.env.step(actions)
            real_next = np.array(new_obs, dtype=np.float32, copy=True)
            terminated = np.zeros(self.n_envs, bool)
            for i, done in enumerate(dones):
                if done:
                    real_next[i] = infos[i]["terminal_observation"]
                    terminated[i] = not infos[i].get("TimeLimit.truncated", False)
            info = self.world_model.observe(
                obs, actions, real_next, rewards, terminated, prediction=prediction
            )
            for key in ("surprise", "gate", "error", "updated"):
                self.logger.record_mean(
                    f"world_model/{'gate_lr' if key == 'gate' else key}", float(info[key])
                )
            if self.value is not None:
                for _ in range(self.config.value_updates_per_step):
                    self.logger.record_mean("value/td_loss", self.value.update())
            self._check_open_loop_error()
            self.num_timesteps += self.n_envs
            self._last_obs = self._check_obs(new_obs)
            if dones.any() and self._plan_state is not None:  # a new episode plans from a cold start
                self._plan_state = self._plan_state.copy()
                self._plan_state[dones] = self.planner.cold_state(int(dones.sum()))
            for i, done in enumerate(dones):
                if done:
                    self._episode_num += 1
                    episodes_since_dump += 1
                    if "episode" in infos[i]:
                        self.ep_info_buffer.append(infos[i]["episode"])
            callback.update_locals(locals())
            if not callback.on_step():
                break
            if episodes_since_dump >= log_interval:
                self._dump_logs()
                episodes_since_dump = 0
        callback.on_rollout_end()
        self._dump_logs()
        callback.on_training_end()
        return self

    def _check_open_loop_error(self) -> None:
        """Every ``error_check_every`` env steps (when the planner cuts its horizon by the model's error), measures
        how far ahead the world model can be trusted."""
        every, cfg = self.config.error_check_every, self.config.planner
        if not every or cfg.error_tolerance <= 0 or self.num_timesteps < self.config.learning_starts:
            return
        if (self.num_timesteps + self.n_envs) // every > self.num_timesteps // every:
            self.world_model.measure_open_loop_error(cfg.horizon)
            self.logger.record("planner/horizon", self.planner.horizon())

    def _dump_logs(self) -> None:
        if self.ep_info_buffer:
            self.logger.record("rollout/ep_rew_mean", safe_mean([e["r"] for e in self.ep_info_buffer]))
            self.logger.record("rollout/ep_len_mean", safe_mean([e["l"] for e in self.ep_info_buffer]))
        elapsed = max(time.perf_counter() - self._t_start, 1e-9)
        self.logger.record("time/fps", int((self.num_timesteps - self._steps_at_start) / elapsed))
        self.logger.record("time/episodes", self._episode_num, exclude="tensorboard")
        self.logger.record("time/total_timesteps", self.num_timesteps, exclude="tensorboard")
        if self.plans:
            self.logger.record("planner/latency_ms", self.ms_per_action)
        self.logger.record("world_model/updates", self.world_model.updates)
        self.logger.dump(self.num_timesteps)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Writes the agent to ``path`` + ``.safetensors`` (weights, normalisers; JSON metadata) atomically.

        Returns the file written. The planner keeps no state between calls and the training RNG streams are not
        saved: a loaded agent predicts exactly as the saved one; continued training draws fresh randomness.
        """
        state = self.world_model.state_dict()
        extra = state.pop("_extra_state", {})
        if self.value is not None:
            state.update({f"value.{k}": v for k, v in self.value.state_dict().items()})
            extra["value_updates"] = self.value.updates
        kind, name = describe_preference(self.preference, self.config.preference)
        meta = {
            "config": json.dumps(config_to_dict(self.config)),
            "extra": json.dumps(extra),
            "env_id": self.env_id or "",
            "seed": str(self.seed),
            "num_timesteps": str(self.num_timesteps),
            "preference": name,
            "preference_kind": kind,
        }
        return checkpoint.write(path, state, meta)

    @classmethod
    def load(
        cls,
        path: str | Path,
        env: str | gym.Env | VecEnv | None = None,
        *,
        preference: Any = None,
        trust_remote_code: bool = False,
        **kwargs: Any,
    ) -> EPAgent:
        """Restores an agent saved by :meth:`save` (no pickle: safetensors + JSON, verified; see
        :mod:`eqagent.agents.checkpoint`).

        The checkpoint's env id must be a registered Gymnasium id and its preference a shipped name, unless
        ``trust_remote_code=True``; a checkpoint saved with a custom preference callable needs ``preference=``.
        ``kwargs`` go to the constructor (``tensorboard_log``, ``device``, ``verbose``).
        """
        tensors, meta, file = checkpoint.read(path)
        if env is None:
            if not meta["env_id"]:
                raise ValueError(f"{file} was saved without an env id: pass env=")
            env = check_env_id(meta["env_id"], trust_remote_code, what=f"{file}: env id")
        kind = meta.get("preference_kind", "none")
        if preference is None:
            if kind == "callable":
                raise ValueError(f"{file} was saved with a custom preference callable ({meta['preference']}): "
                                 "pass preference= to load")  # fmt: skip
            if kind == "import" and not trust_remote_code:
                raise ValueError(f"{file} names preference code to import ({meta['preference']!r}); pass "
                                 "preference= or trust_remote_code=True")  # fmt: skip
            preference = meta["preference"] or None
        cfg = EPAgentConfig.from_dict({**meta["config"], "preference": ""})
        agent = cls(
            env, cfg, seed=meta["seed"], preference=preference, trust_remote_code=trust_remote_code, **kwargs
        )
        extra = meta["extra"]
        if agent.value is not None:
            agent.value.load_state_dict(
                {k[6:]: tensors.pop(k) for k in list(tensors) if k.startswith("value.")}
            )
            agent.value.updates = int(extra.pop("value_updates", 0))
        tensors["_extra_state"] = extra
        try:
            agent.world_model.load_state_dict(tensors)
        except (RuntimeError, KeyError, TypeError) as e:
            raise ValueError(f"{file} does not match the agent its config describes: {e}") from None
        agent.num_timesteps = meta["num_timesteps"]
        return agent
