"""Probes of a user's bad inputs, hostile files and repeated calls (issue: reliability). Each failed before."""

import json
import math
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from eqagent.agents import EPAgent
from eqagent.agents.checkpoint import checkpoint_path
from eqagent.apps.cli import main
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from eqagent.optim import EPOptimizer

TINY = dict(
    world_model=dict(hidden=(16,), members=2),
    planner=dict(horizon=6, candidates=24, elites=4, iterations=2),
    learning_starts=20,
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    agent = EPAgent("CartPole-v1", seed=0, **TINY).learn(60)
    path = tmp_path_factory.mktemp("ckpt") / "agent"
    agent.save(path)
    return agent, path


def _obs(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.1, 0.1, size=(n, 4)).astype(np.float32)


# -------------------------------------------------------------------------------------------- deterministic predict
def test_predict_is_a_pure_function_of_weights_observation_and_seed(trained):
    agent, path = trained
    obs = _obs(20)
    first = [int(agent.predict(o)[0]) for o in obs]
    assert [int(agent.predict(obs[3])[0]) for _ in range(6)] == [
        first[3]
    ] * 6  # the same observation, six times
    assert agent.predict(obs)[0].tolist() == first  # a batch equals one at a time
    assert EPAgent.load(path).predict(obs)[0].tolist() == first  # and a loaded copy


def test_predict_warm_start_only_through_the_state_passed_in(trained):
    agent, _ = trained
    obs = _obs(3)
    a1, state = agent.predict(obs)
    a2, _ = agent.predict(obs, state=state)  # warm-started: may differ, but deterministically
    assert np.array_equal(agent.predict(obs, state=state)[0], a2)
    assert np.array_equal(agent.predict(obs, state=state, episode_start=np.ones(3, bool))[0], a1)
    with pytest.raises(ValueError, match="state must have shape"):
        agent.predict(obs, state=state[:2])


# -------------------------------------------------------------------------------------------------- checkpoints
def test_checkpoint_path_is_used_as_given(tmp_path):
    a = EPAgent("CartPole-v1", seed=0, **TINY)
    b = EPAgent("CartPole-v1", seed=1, **TINY)
    assert a.save(tmp_path / "run.seed0") == tmp_path / "run.seed0.safetensors"
    b.save(tmp_path / "run.seed1")
    assert EPAgent.load(tmp_path / "run.seed0").seed == 0
    assert EPAgent.load(tmp_path / "run.seed1.safetensors").seed == 1
    assert checkpoint_path("x.safetensors").name == "x.safetensors"
    assert not list(tmp_path.glob("*.tmp"))


def _rewrite(src, dst, **meta_changes):
    with safe_open(str(checkpoint_path(src)), framework="pt") as f:
        meta = dict(f.metadata())
    meta.update(meta_changes)
    save_file(
        load_file(str(checkpoint_path(src))),
        str(dst),
        metadata={k: v for k, v in meta.items() if v is not None},
    )
    return dst


def test_checkpoint_metadata_is_data_never_code(trained, tmp_path):
    _, path = trained
    sys.modules.pop("this", None)
    with pytest.raises(ValueError, match="names a module to import"):
        EPAgent.load(_rewrite(path, tmp_path / "a.safetensors", env_id="this:CartPole-v1"))
    assert "this" not in sys.modules
    with pytest.raises(ValueError, match="not a registered"):
        EPAgent.load(_rewrite(path, tmp_path / "b.safetensors", env_id="NoSuchEnv-v0"))
    hostile = _rewrite(path, tmp_path / "c.safetensors", preference="sys:exit", preference_kind="import")
    with pytest.raises(ValueError, match="trust_remote_code"):
        EPAgent.load(hostile)
    cfg = json.loads(safe_open(str(checkpoint_path(path)), framework="pt").metadata()["config"])
    cfg["preference"] = "sys:exit"  # even inside the config
    sneaky = _rewrite(path, tmp_path / "d.safetensors", config=json.dumps(cfg))
    agent = EPAgent.load(sneaky)  # the config's preference field is ignored; the metadata field decides
    assert agent.preference is None


def test_custom_preference_callable_must_be_passed_back(tmp_path):
    agent = EPAgent("CartPole-v1", seed=0, preference=lambda o: o[..., 2] ** 2, **TINY)
    agent.save(tmp_path / "p")
    with pytest.raises(ValueError, match="pass preference="):
        EPAgent.load(tmp_path / "p")
    assert EPAgent.load(tmp_path / "p", preference=lambda o: o[..., 2] ** 2).preference is not None


def test_corrupted_and_foreign_files_are_refused(trained, tmp_path):
    _, path = trained
    data = bytearray(checkpoint_path(path).read_bytes())
    data[-64:-32] = b"\xff" * 32  # overwrite tensor bytes (NaN patterns)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupted"):
        EPAgent.load(bad)
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(3)}, str(plain))  # a valid safetensors file without metadata
    with pytest.raises(ValueError, match="no metadata"):
        EPAgent.load(plain)
    nan = tmp_path / "nan.safetensors"
    tensors = load_file(str(checkpoint_path(path)))
    name = sorted(tensors)[0]
    tensors[name] = tensors[name].clone().fill_(math.nan)
    with safe_open(str(checkpoint_path(path)), framework="pt") as f:
        meta = dict(f.metadata())
    from eqagent.agents.checkpoint import _digest

    save_file(tensors, str(nan), metadata={**meta, "sha256": _digest(tensors)})
    with pytest.raises(ValueError, match=f"tensor '{name}' contains NaN"):
        EPAgent.load(nan)
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="not a readable"):
        EPAgent.load(tmp_path / "junk")
    with pytest.raises(FileNotFoundError):
        EPAgent.load(tmp_path / "missing")


# ---------------------------------------------------------------------------------------------------- configs
@pytest.mark.parametrize(
    "override,match",
    [
        ({"world_model": {"lr": math.inf}}, "lr must be a finite"),
        ({"planner.termination_penalty": math.nan}, "termination_penalty must be a finite"),
        ({"planner.epistemic_weight": math.nan}, "epistemic_weight must be a finite"),
        ({"value": {"tau": math.inf}}, "tau must be a finite"),
        ({"learning_starts": -5}, "learning_starts must be >= 0"),
        ({"value_updates_per_step": -1}, "value_updates_per_step"),
        ({"planner.horizon": 2.5}, "horizon must be an integer"),
        ({"world_model.hidden": [16, "a"]}, "hidden must be an integer"),
    ],
)
def test_config_values_are_validated(override, match):
    with pytest.raises(ValueError, match=match):
        EPAgent("CartPole-v1", **override)


def test_optimizer_refuses_non_finite_settings():
    model = nn.Sequential(nn.Linear(3, 2))
    for kw in ({"lr": math.inf}, {"beta": math.nan}, {"weight_decay": math.inf}, {"betas": (0.9, math.nan)}):
        with pytest.raises(ValueError, match="finite"):
            EPOptimizer(model.parameters(), model=model, **kw)


# ------------------------------------------------------------------------------------------------- observations
def test_bad_observations_get_clear_errors(trained):
    agent, _ = trained
    with pytest.raises(ValueError, match=r"shape \(4,\) or \(n, 4\), got \(2, 3, 4\)"):
        agent.predict(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match=r"shape \(4,\) or \(n, 4\), got \(\)"):
        agent.predict(np.float32(0.5))
    with pytest.raises(ValueError, match="NaN or inf"):
        agent.predict(np.array([0, np.inf, 0, 0], np.float32))


# ------------------------------------------------------------------------------------------------------ the CLI
@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--env", "NoSuchEnv-v0"],
        ["run", "--env", "ALE/Pong-v5"],
        ["run", "--eval-every", "0"],
        ["run", "--eval-episodes", "0"],
        ["run", "--set", "planner.horizon=-3"],
        ["run", "--set", "nonsense"],
        ["run", "--total-timesteps", "ten"],
        ["bench", "nosuchbench"],
        ["compare", "--budgets", "ep:3"],
    ],
)
def test_cli_user_errors_are_one_line_and_exit_2(argv, capsys):
    assert main([*argv, "--tensorboard-log", ""]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("eqagent: error: "), err


def test_cli_json_is_valid_json_with_null_for_missing_figures(tmp_path, capsys):
    argv = ["run", "--env", "CartPole-v1", "--total-timesteps", "20", "--eval-freq", "20", "--n-eval-episodes", "1",
            "--set", "learning_starts=100", "--tensorboard-log", "", "--json"]  # fmt: skip
    assert main(argv) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    out = json.loads(line, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert out["ms_per_action"] is None  # nothing was planned: no figure, not NaN


def test_gymnasium_vector_env_is_accepted():
    venv = gym.make_vec("CartPole-v1", 2, vectorization_mode="sync")
    agent = EPAgent(venv, seed=0, **TINY).learn(40)
    assert agent.n_envs == 2 and agent.num_timesteps == 40
