import eqagent.envs  # noqa: F401
import gymnasium as gym
import numpy as np
import pytest
import torch
from eqagent.agents.worldmodel_bench import WorldModelBenchConfig, random_stream, run_worldmodel_bench

from eqagent.surprise import SurpriseGate, SurpriseGateConfig
from eqagent.world_model import EPWorldModel, ReplayBuffer, RunningNormalizer, WorldModelConfig

SMALL = dict(hidden=(16, 16), members=3, batch_size=16)


def _nmse(wm, test):
    o = np.array([t[0] for t in test])
    a = np.array([t[1] for t in test])
    no = np.array([t[2] for t in test])
    p = wm.predict(o, a)["next_obs"].numpy()
    return float(np.mean(((p - no) ** 2).mean(0) / (no - o).var(0)))


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_online_learning_reduces_error(env_id):
    env = gym.make(env_id)
    stream = random_stream(env, 600, 0)
    test = random_stream(gym.make(env_id), 300, 1)
    wm = EPWorldModel(env.observation_space, env.action_space, WorldModelConfig(gate=False, lr=3e-3, **SMALL))
    before = _nmse(wm, test)
    for o, a, no, r, term, _, _ in stream:
        wm.observe(o, a, no, r, term)
    assert _nmse(wm, test) < 0.3 * before
    assert wm.updates == 600


def test_ep_and_backprop_learners_agree():
    env = gym.make("CartPole-v1")
    stream = random_stream(env, 300, 0)
    test = random_stream(gym.make("CartPole-v1"), 300, 1)
    errs = {}
    for learner in ("ep", "bp"):
        wm = EPWorldModel(
            env.observation_space, env.action_space, WorldModelConfig(gate=False, learner=learner, **SMALL)
        )
        for o, a, no, r, term, _, _ in stream:
            wm.observe(o, a, no, r, term)
        errs[learner] = _nmse(wm, test)
    assert errs["ep"] == pytest.approx(errs["bp"], rel=0.1)


def test_gate_closes_on_a_constant_stream_and_opens_on_a_shift():
    gate = SurpriseGate(SurpriseGateConfig(warmup=50, horizon=200))
    rng = np.random.default_rng(0)
    gates = [gate(float(e)) for e in rng.lognormal(np.log(1e-3), 0.3, size=600)]
    assert np.mean([gate.skip(g) for g in gates[300:]]) >= 0.4
    assert gate(0.1) == 1.0  # a 100x error jump: fully open
    with pytest.raises(ValueError, match="finite"):
        gate(float("nan"))


def test_imagine_shapes_and_disagreement():
    env = gym.make("Pendulum-v1")
    wm = EPWorldModel(env.observation_space, env.action_space, WorldModelConfig(**SMALL))
    obs, _ = env.reset(seed=0)
    seqs = np.random.default_rng(0).uniform(-2, 2, size=(7, 4, 1)).astype(np.float32)
    out = wm.imagine(obs, seqs)
    assert out["obs"].shape == (3, 7, 5, 3) and out["reward"].shape == (3, 7, 4)
    assert out["term_prob"].shape == (3, 7, 4) and out["disagreement"].shape == (7, 4)
    assert (out["disagreement"] > 0).all()
    torch.testing.assert_close(out["obs"][:, :, 0], torch.as_tensor(obs).expand(3, 7, 3))


@pytest.mark.parametrize("env_id,activation", [("CartPole-v1", "tanh"), ("Pendulum-v1", "tanh"),
                                               ("Pendulum-v1", "relu"), ("CartPole-v1", "sigmoid")])  # fmt: skip
def test_imagine_equals_stepping_the_free_phase(env_id, activation):
    """The fused rollout (normalisers and tanh folded into the weights) is the step-by-step free phase."""
    env = gym.make(env_id)
    cfg = WorldModelConfig(**{**SMALL, "hidden": (16, 8), "activation": activation})
    wm = EPWorldModel(env.observation_space, env.action_space, cfg)
    obs, _ = env.reset(seed=0)
    for _ in range(60):  # non-trivial normaliser statistics and weights
        a = env.action_space.sample()
        nxt, r, term, trunc, _ = env.step(a)
        wm.observe(obs, a, nxt, float(r), term)
        obs = nxt if not (term or trunc) else env.reset()[0]
    rng = np.random.default_rng(1)
    if wm.discrete:
        seqs = rng.integers(0, wm.act_dim, size=(6, 5))
    else:
        seqs = rng.uniform(-2, 2, size=(6, 5, 1)).astype(np.float32)
    out = wm.imagine(obs, seqs)
    cur = torch.as_tensor(obs).expand(cfg.members, 6, wm.obs_dim)
    for t in range(5):
        a = torch.as_tensor(seqs[:, t]).expand(cfg.members, *seqs[:, t].shape)
        x = wm.model_input(cur, wm.encode_action(a))
        ref = wm._decode(cur, wm.energy(x))
        if t == 0:
            torch.testing.assert_close(out["first_out"], ref["out"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out["reward"][:, :, t], ref["reward"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out["term_prob"][:, :, t], ref["term_prob"], atol=1e-5, rtol=1e-5)
        d = ref["out"][..., : wm.obs_dim]
        torch.testing.assert_close(
            out["disagreement"][:, t], d.var(0, unbiased=False).mean(-1), atol=1e-5, rtol=1e-4
        )
        cur = ref["next_obs"]
        torch.testing.assert_close(out["obs"][:, :, t + 1], cur, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_split_imagine_gives_each_sequence_its_own_members_rollout(env_id):
    """``split=True``: sequence ``i`` is imagined by member ``i // ⌈N / M⌉`` alone, exactly as that member imagines
    it in the full rollout (7 sequences, 3 members: blocks of 3, the last padded)."""
    env = gym.make(env_id)
    wm = EPWorldModel(env.observation_space, env.action_space, WorldModelConfig(**SMALL))
    obs, _ = env.reset(seed=0)
    for _ in range(40):  # non-trivial normalisers and weights
        a = env.action_space.sample()
        nxt, r, term, trunc, _ = env.step(a)
        wm.observe(obs, a, nxt, float(r), term)
        obs = nxt if not (term or trunc) else env.reset()[0]
    rng = np.random.default_rng(2)
    n, h = 7, 5
    seqs = (
        rng.integers(0, 2, size=(n, h)) if wm.discrete else rng.uniform(-2, 2, (n, h, 1)).astype(np.float32)
    )
    starts = torch.as_tensor(obs) + 0.1 * torch.randn(
        n, wm.obs_dim, generator=torch.Generator().manual_seed(0)
    )
    full = wm.imagine(starts, seqs, disagreement=False)
    split = wm.imagine(starts, seqs, disagreement=False, split=True)
    owner = torch.arange(n) // 3
    for key in ("obs", "reward", "term_prob", "first_out"):
        assert split[key].shape == (1, *full[key].shape[1:]), key
        torch.testing.assert_close(split[key][0], full[key][owner, torch.arange(n)], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="disagreement"):
        wm.imagine(starts, seqs, split=True)


def test_replay_memory_is_bounded():
    env = gym.make("CartPole-v1")
    wm = EPWorldModel(env.observation_space, env.action_space, WorldModelConfig(replay_size=50, **SMALL))
    for o, a, no, r, term, _, _ in random_stream(env, 120, 0):
        wm.observe(o, a, no, r, term)
    assert wm.replay.size == 50 and wm.replay.obs.shape[0] == 50


def test_replay_keep_last_keeps_the_newest_in_order():
    rb = ReplayBuffer(5, 1, 1)
    for i in range(8):  # wraps around: holds 3..7
        rb.add([i], [0], [i + 1], float(i), 0.0)
    rb.keep_last(3)
    assert rb.size == 3 and rb.pos == 3
    np.testing.assert_array_equal(rb.reward[:3], [5, 6, 7])
    rb.add([9], [0], [10], 9.0, 0.0)
    np.testing.assert_array_equal(rb.reward[:4], [5, 6, 7, 9])


def test_a_lasting_surprise_forgets_the_old_replay():
    env = gym.make("CartPole-v1")
    cfg = WorldModelConfig(
        **SMALL, forget_on_shift=True, shift_window=20, gate_config=SurpriseGateConfig(warmup=100)
    )
    wm = EPWorldModel(env.observation_space, env.action_space, cfg)
    stream = random_stream(env, 700, 0)
    for o, a, no, r, term, _, _ in stream[:600]:
        wm.observe(o, a, no, r, term)
    assert wm.shifts == 0 and wm.replay.size == 600  # a stationary stream: nothing forgotten
    for o, a, no, r, term, _, _ in stream[600:]:
        wm.observe(o, a, no * 3.0 - 1.0, r, term)  # new "physics": every next frame far from the old law
    # one shift declared: the old-physics replay is gone, but for the detector's last window of 20
    assert wm.shifts == 1 and wm.replay.size <= 100 + 20


def test_state_dict_round_trip_keeps_normalisers_and_predictions():
    env = gym.make("CartPole-v1")
    cfg = WorldModelConfig(**SMALL)
    wm = EPWorldModel(env.observation_space, env.action_space, cfg)
    for o, a, no, r, term, _, _ in random_stream(env, 50, 0):
        wm.observe(o, a, no, r, term)
    wm2 = EPWorldModel(env.observation_space, env.action_space, cfg)
    wm2.load_state_dict(wm.state_dict())
    o = np.zeros((2, 4), np.float32)
    torch.testing.assert_close(wm.predict(o, [0, 1])["next_obs"], wm2.predict(o, [0, 1])["next_obs"])
    assert wm2.observed == 50 and float(wm2.obs_norm.count) == 50


def test_normalizer_matches_numpy():
    x = torch.randn(100, 3) * 4 + 2
    n = RunningNormalizer(3)
    for chunk in x.split(7):
        n.update(chunk)
    torch.testing.assert_close(n.mean.float(), x.mean(0), atol=1e-5, rtol=0)
    torch.testing.assert_close(n.std.float(), x.std(0, unbiased=False), atol=1e-4, rtol=0)


def test_bad_spaces_and_inputs_raise():
    box = gym.spaces.Box(-1, 1, (3,))
    with pytest.raises(ValueError, match="1-D Box observation"):
        EPWorldModel(gym.spaces.Box(-1, 1, (2, 2)), gym.spaces.Discrete(2))
    with pytest.raises(ValueError, match="Discrete or 1-D Box action"):
        EPWorldModel(box, gym.spaces.MultiBinary(3))
    wm = EPWorldModel(box, gym.spaces.Discrete(2), WorldModelConfig(**SMALL))
    with pytest.raises(ValueError, match="NaN"):
        wm.observe(np.array([0, np.nan, 0]), 0, np.zeros(3), 0.0, False)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        wm.predict(np.zeros((1, 3)), [5])
    with pytest.raises(ValueError, match="last dimension 3"):
        wm.predict(np.zeros((1, 4)), [0])


def test_bench_runs_at_tiny_size():
    out = run_worldmodel_bench(
        WorldModelBenchConfig(steps=400, test_steps=200, eval_every=100, members=2, hidden=(8,))
    )
    for key in (
        "nmse_ep",
        "nmse_bp",
        "ratio",
        "open_loop_ep",
        "gate_skip_fraction",
        "gated_error_increase",
        "shift_detect_steps",
        "recovery_steps",
        "updates_per_second",
    ):
        assert key in out


def test_value_forward_is_the_energy_free_phase():
    from eqagent.value import EPValueFunction, ValueConfig

    env = gym.make("CartPole-v1")
    wm = EPWorldModel(env.observation_space, env.action_space, WorldModelConfig(**SMALL))
    for o, a, no, r, term, _, _ in random_stream(env, 50, 0):
        wm.observe(o, a, no, r, term)
    v = EPValueFunction(wm, ValueConfig(hidden=(8, 8), members=2))
    for _ in range(5):
        v.update()
    obs = torch.randn(3, 7, 4)
    ref = v.energy(v._input(obs.reshape(-1, 4))).mean(0)[:, 0].reshape(3, 7) * v._scale()
    torch.testing.assert_close(v(obs), ref)
    # pessimism: the members' mean less k times their spread (lower where they disagree)
    members = v.energy(v._input(obs.reshape(-1, 4)))[..., 0]  # (M, B)
    v.config.pessimism = 2.0
    want = (members.mean(0) - 2.0 * members.std(0, unbiased=False)).reshape(3, 7) * v._scale()
    torch.testing.assert_close(v(obs), want)
    assert bool((v(obs) <= ref + 1e-6).all())
    with pytest.raises(ValueError, match="pessimism"):
        ValueConfig(pessimism=-1.0)


def test_one_nudged_step_gives_the_backprop_gradient():
    """The world model's EP step with one fixed-point nudged step matches autograd's gradient of its cost (docs:
    2e-6 relative in float32; asserted 1e-4, far above float32 rounding), closer than with three steps."""
    from eqagent.costs import WorldModelCost
    from eqagent.energy import EnsembleMLPEnergy
    from eqagent.ep import EPConfig, ep_gradients

    net = EnsembleMLPEnergy([6, 64, 64, 6], 5, "tanh", generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(5, 32, 6, generator=gen), torch.randn(5, 32, 6, generator=gen)
    y[..., 5] = (y[..., 5] > 0).float()  # termination targets
    cost = WorldModelCost(4)
    out = net(x)
    exact = torch.autograd.grad(
        cost.value(out, cost.check_target(y, out)).mean(-1).sum(), list(net.parameters())
    )

    def rel_err(steps: int) -> float:
        grads = ep_gradients(net, cost, x, y, EPConfig(beta=0.01, free_steps=0, nudged_steps=steps)).grads
        return max(float((grads[p] - g).norm() / g.norm()) for p, g in zip(net.parameters(), exact))

    one, three = rel_err(1), rel_err(3)
    assert one < 1e-4 and one < three


@torch.no_grad()
def _open_loop_reference(wm, stream, horizon):
    """Mean normalised squared error k = 1 … horizon steps ahead (of the members' mean) over every start whose next
    ``horizon`` steps lie in one episode of ``stream``, stepping each member's free phase open loop."""
    errs = []
    for i in range(len(stream) - horizon + 1):
        if len({stream[i + k][5] for k in range(horizon)}) > 1:
            continue  # the trajectory breaks: an episode ended inside it
        m = wm.config.members
        cur = torch.as_tensor(stream[i][0], dtype=torch.float32).expand(m, 1, wm.obs_dim)  # each member's own
        row = []
        for k in range(horizon):
            a = torch.as_tensor(np.asarray(stream[i + k][1])).expand(m, 1, *np.shape(stream[i + k][1]))
            cur = wm._decode(cur, wm.energy(wm.model_input(cur, wm.encode_action(a))))["next_obs"]
            real = torch.as_tensor(stream[i + k][2], dtype=torch.float32)
            row.append((((cur.mean(0)[0] - real) / wm.obs_norm.moments()[1]) ** 2).mean())
        errs.append(torch.stack(row))
    return torch.stack(errs).mean(0)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_open_loop_error_replays_real_trajectories(env_id):
    env = gym.make(env_id)
    wm = EPWorldModel(env.observation_space, env.action_space, WorldModelConfig(**SMALL))
    stream = random_stream(env, 80, 0)
    for o, a, no, r, term, _, _ in stream:
        wm.observe(o, a, no, r, term)
    # segments >= the number of starts: every start is used, so the mean equals the reference's
    err = wm.measure_open_loop_error(4, segments=1000)
    assert err.shape == (4,) and np.all(err >= 0)
    np.testing.assert_allclose(err, _open_loop_reference(wm, stream, 4).numpy(), rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(wm.open_loop_error, err)
    # kept with the model, as data
    wm2 = EPWorldModel(env.observation_space, env.action_space, WorldModelConfig(**SMALL))
    wm2.load_state_dict(wm.state_dict())
    np.testing.assert_array_equal(wm2.open_loop_error, err)
    for bad in (["os.system"], [float("nan")], [-1.0], []):
        with pytest.raises(ValueError, match="open_loop_error"):
            wm2.set_extra_state({**wm.get_extra_state(), "open_loop_error": bad})
    wm.open_loop_error = np.array([0.1, np.inf])  # a diverged rollout: saved as a large number, still cut
    wm2.set_extra_state(wm.get_extra_state())
    assert wm2.open_loop_error[1] >= 1e30


def test_open_loop_error_follows_each_env_of_a_vector_env():
    """Two envs' transitions interleaved in the replay: each trajectory is followed within its own env."""
    env = gym.make("CartPole-v1")
    streams = [random_stream(gym.make("CartPole-v1"), 60, s) for s in (0, 1)]
    wm = EPWorldModel(env.observation_space, env.action_space, WorldModelConfig(**SMALL))
    for a, b in zip(*streams):
        wm.observe(*(np.stack([a[j], b[j]]) for j in range(5)))
    err = wm.measure_open_loop_error(3, segments=1000)
    # the same model, fed nothing more: its reference is the mean over both envs' starts, weighted by their number
    refs, counts = [], []
    for s in streams:
        n = sum(len({s[i + k][5] for k in range(3)}) == 1 for i in range(len(s) - 2))
        refs.append(_open_loop_reference(wm, s, 3) * n)
        counts.append(n)
    np.testing.assert_allclose(err, (sum(refs) / sum(counts)).numpy(), rtol=1e-4, atol=1e-7)


def test_open_loop_error_needs_a_long_enough_trajectory():
    env = gym.make("CartPole-v1")
    wm = EPWorldModel(env.observation_space, env.action_space, WorldModelConfig(**SMALL))
    assert wm.measure_open_loop_error(3) is None  # empty replay
    for o, a, no, r, term, _, _ in random_stream(env, 40, 0):
        wm.observe(o, a, no, r, term)
    assert wm.measure_open_loop_error(500) is None and wm.open_loop_error is None
    with pytest.raises(ValueError, match="horizon"):
        wm.measure_open_loop_error(0)


def test_terminations_are_counted_and_kept_as_checked_data():
    env = gym.make("CartPole-v1")
    wm = EPWorldModel(env.observation_space, env.action_space, WorldModelConfig(hidden=(8,), members=2))
    o = np.zeros((3, 4), np.float32)
    wm.observe(o, np.zeros(3, np.int64), o, np.ones(3), np.array([True, False, True]))
    assert wm.terminations == 2 and wm.terminal_reward == 2.0
    assert not wm.ending_is_a_gain()  # CartPole: ending earns what a step earns
    wm.observe(o, np.zeros(3, np.int64), o, np.array([7.0, 1.0, 1.0]), np.array([True, False, False]))
    assert wm.terminations == 3 and wm.terminal_reward == 9.0 and wm.ending_is_a_gain()  # 9 / 3 > 12 / 6
    state = wm.get_extra_state()
    other = EPWorldModel(env.observation_space, env.action_space, WorldModelConfig(hidden=(8,), members=2))
    other.set_extra_state(state)
    assert (other.terminations, other.terminal_reward) == (3, 9.0)
    del state["terminal_reward"]  # written before the terminal rewards were kept: the statistics restart
    other.set_extra_state(state)
    assert (other.terminations, other.terminal_reward) == (0, 0.0)
    del state["terminations"]  # written before the count was kept
    other.set_extra_state(state)
    assert other.terminations == 0
    state = wm.get_extra_state()
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="terminations"):
            other.set_extra_state({**state, "terminations": bad})
    for bad in (float("nan"), float("inf"), True, "2"):
        with pytest.raises(ValueError, match="terminal_reward"):
            other.set_extra_state({**state, "terminal_reward": bad})
