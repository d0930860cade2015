import gymnasium as gym
import numpy as np
import pytest
import torch

from eqagent.planning import CEMPlanner, PlannerConfig, expected_free_energy
from eqagent.world_model import EPWorldModel, WorldModelConfig


class LineWorld:
    """x' = x + 0.1·a (a = ±1 for Discrete(2), a ∈ [−1, 1] for Box), reward −|x'|, termination when |x'| > 1."""

    obs_dim, device = 1, torch.device("cpu")

    def __init__(self, discrete: bool, members: int = 2):
        self.discrete, self.act_dim, self.members = discrete, 2 if discrete else 1, members
        self.act_low, self.act_high = torch.tensor([-1.0]), torch.tensor([1.0])

    def decode_next_obs(self, obs, out):
        return out.mean(0)

    def _move(self, a):
        a = torch.as_tensor(a, dtype=torch.float32)
        return (2 * a - 1) if self.discrete else a[..., 0]

    def imagine(self, obs, seqs):
        n, h = seqs.shape[:2]
        x = torch.as_tensor(obs, dtype=torch.float32).reshape(n, 1)[:, 0].clone()
        xs, rs, ts = [x], [], []
        for t in range(h):
            x = x + 0.1 * self._move(seqs[:, t])
            xs.append(x)
            rs.append(-x.abs())
            ts.append((x.abs() > 1).float())
        m = self.members
        return {
            "obs": torch.stack(xs, 1)[None, ..., None].expand(m, n, h + 1, 1),
            "reward": torch.stack(rs, 1)[None].expand(m, n, h),
            "term_prob": torch.stack(ts, 1)[None].expand(m, n, h),
            "disagreement": torch.zeros(n, h),
            "first_out": torch.stack(xs[1:2], -1)[None].expand(m, n, 1),
        }


@pytest.mark.parametrize("candidates", [16, 64])  # 2^4 = 16: exact enumeration; 64 with H=8: CEM
def test_discrete_planner_moves_toward_the_reward(candidates):
    horizon = 4 if candidates == 16 else 8
    planner = CEMPlanner(LineWorld(True), PlannerConfig(horizon=horizon, candidates=candidates, elites=8))
    assert planner._enumerate == (candidates == 16)
    gen = torch.Generator().manual_seed(0)
    assert planner.plan(np.array([0.5]), generator=gen).action[0] == 0
    assert planner.plan(np.array([-0.5]), generator=gen).action[0] == 1
    both = planner.plan(np.array([[0.5], [-0.5]]), generator=gen)  # two envs in one call
    assert both.action.tolist() == [0, 1] and both.state.shape == (2, planner.state_size)


def test_box_planner_and_preference():
    wm = LineWorld(False)
    planner = CEMPlanner(wm, PlannerConfig(horizon=5, candidates=128, elites=16, iterations=4))
    res = planner.plan(np.array([0.5]), generator=torch.Generator().manual_seed(0))
    a = res.action[0]
    assert a.shape == (1,) and a[0] < -0.3
    assert float(res.prediction[0, 0, 0]) == pytest.approx(
        0.5 + 0.1 * float(a[0])
    )  # first step of the chosen seq
    prefer_08 = lambda obs: (obs[..., 0] - 0.8) ** 2  # noqa: E731
    planner = CEMPlanner(wm, PlannerConfig(horizon=5, candidates=128, elites=16, iterations=4), prefer_08)
    assert planner.plan(np.array([0.5]), generator=torch.Generator().manual_seed(0)).action[0][0] > 0.3


def _imagined(m: int, n: int, h: int, reward: float = 0.0) -> dict[str, torch.Tensor]:
    """An ``imagine``-shaped rollout of M members × N candidates × H steps (1-D observations)."""
    return {
        "obs": torch.zeros(m, n, h + 1, 1),
        "reward": torch.full((m, n, h), reward),
        "term_prob": torch.zeros(m, n, h),
        "disagreement": torch.zeros(n, h),
    }


def test_termination_risk_and_epistemic_terms():
    cfg = PlannerConfig(discount=1.0, termination_penalty=2.0, epistemic_weight=0.5)
    im = _imagined(2, 3, 4, reward=1.0)
    im["term_prob"][:, 1, 0] = 1.0  # candidate 1 dies at once
    im["disagreement"][2] = 1.0  # candidate 2 is uncertain: epistemic bonus
    g = expected_free_energy(im, cfg)
    assert g[0] == pytest.approx(-4.0)
    assert g[1] == pytest.approx(-1.0 + 2.0)
    assert g[2] == pytest.approx(-4.0 - 0.5)


def test_plans_with_the_ep_world_model():
    env = gym.make("CartPole-v1")
    wm = EPWorldModel(env.observation_space, env.action_space, WorldModelConfig(hidden=(16,), members=3))
    obs, _ = env.reset(seed=0)
    res = CEMPlanner(wm, PlannerConfig(horizon=5, candidates=32, elites=4)).plan(obs)
    assert res.action[0] in (0, 1) and res.prediction.shape == (3, 1, 6)
    # the kept prediction is the free phase the planner already ran for the chosen action
    torch.testing.assert_close(res.prediction, wm.predict_members(obs[None], res.action)["out"])
    penv = gym.make("Pendulum-v1")
    pwm = EPWorldModel(penv.observation_space, penv.action_space, WorldModelConfig(hidden=(16,), members=2))
    pres = CEMPlanner(pwm, PlannerConfig(horizon=4, candidates=16, elites=4)).plan(penv.reset(seed=0)[0])
    assert pres.action.shape == (1, 1) and -2.0 <= pres.action[0, 0] <= 2.0


def _split_spy(monkeypatch, env_id: str) -> tuple[EPWorldModel, np.ndarray, list[bool]]:
    """A 3-member world model for ``env_id``, a first observation, and the ``split`` flag of every ``imagine`` call
    (appended to the list as they happen)."""
    env = gym.make(env_id)
    wm = EPWorldModel(env.observation_space, env.action_space, WorldModelConfig(hidden=(16,), members=3))
    obs, _ = env.reset(seed=0)
    calls = []
    real = wm.imagine

    def spy(obs, seqs, disagreement=True, split=False):
        calls.append(split)
        return real(obs, seqs, disagreement, split)

    monkeypatch.setattr(wm, "imagine", spy)
    return wm, obs, calls


def test_split_members_share_the_candidates_out_and_keep_every_members_prediction(monkeypatch):
    """By default each candidate is imagined by one member; the kept prediction is still every member's free phase
    for the chosen action; with the disagreement counted (exploring) or ``split_members=False`` every member
    imagines every candidate."""
    wm, obs, calls = _split_spy(monkeypatch, "CartPole-v1")
    cfg = dict(horizon=6, candidates=32, elites=4, iterations=2)
    res = CEMPlanner(wm, PlannerConfig(**cfg)).plan(obs, generator=torch.Generator().manual_seed(0))
    assert calls == [True, True] and res.prediction.shape == (3, 1, 6)
    torch.testing.assert_close(res.prediction, wm.predict_members(obs[None], res.action)["out"])
    calls.clear()
    CEMPlanner(wm, PlannerConfig(**cfg, split_members=False)).plan(obs)
    CEMPlanner(wm, PlannerConfig(**cfg, epistemic_weight=1.0)).plan(obs)
    assert calls == [False] * 4
    calls.clear()
    CEMPlanner(wm, PlannerConfig(**cfg, epistemic_weight=1.0)).plan(obs, explore=False)  # not counted: split
    assert calls == [True, True]


def test_exploiting_search_scores_with_every_member_where_ending_is_a_gain(monkeypatch):
    """``exploit_members="auto"``: an exploiting search imagines every candidate with every member (and runs
    ``exploit_iterations``) once the world model has seen episodes end with more reward than a step earns (the
    termination penalty derived); exploring searches, envs whose endings earn what a step earns or less, and envs
    never seen to end keep the split."""
    wm, obs, calls = _split_spy(monkeypatch, "Acrobot-v1")
    cfg = PlannerConfig(horizon=6, candidates=32, elites=4, iterations=1, exploit_iterations=3,
                        termination_penalty=None)  # fmt: skip
    planner = CEMPlanner(wm, cfg)

    def searches(explore: bool) -> list[bool]:
        calls.clear()
        planner.plan(obs, generator=torch.Generator().manual_seed(0), explore=explore)
        return list(calls)

    o2 = obs[None].repeat(4, 0)
    wm.observe(o2, np.zeros(4, np.int64), o2, -np.ones(4), np.zeros(4, bool))  # costs, no ending yet
    assert not planner.exploits_with_all_members() and searches(False) == [True]
    ends = np.array([True, False, False, False])
    wm.observe(o2, np.zeros(4, np.int64), o2, -np.ones(4), ends)  # an ending that costs what a step costs
    assert wm.terminations == 1 and not planner.exploits_with_all_members() and searches(False) == [True]
    wm.observe(o2, np.zeros(4, np.int64), o2, np.array([0.0, -1, -1, -1]), ends)  # Acrobot's goal: 0, not −1
    assert wm.terminations == 2 and planner.exploits_with_all_members()
    assert searches(False) == [False] * 3  # every member, exploit_iterations
    assert searches(True) == [True]  # training keeps the split (and its iterations)
    res = planner.plan(obs, generator=torch.Generator().manual_seed(0), explore=False)
    torch.testing.assert_close(res.prediction, wm.predict_members(obs[None], res.action)["out"])
    planner.cfg.exploit_members = "split"
    assert searches(False) == [True]
    planner.cfg.exploit_members = "auto"
    wm.observe(o2, np.zeros(4, np.int64), o2, 5 * np.ones(4), np.zeros(4, bool))  # a step now earns more
    assert wm.terminal_reward / wm.terminations < float(wm.reward_norm.mean) and searches(False) == [True]
    wm.observe(o2, np.zeros(4, np.int64), o2, np.array([100.0, 1, 1, 1]), ends)  # MountainCar's flag: +100
    assert planner.termination_penalty() > 0 and searches(False) == [False] * 3
    planner.cfg.exploit_members = "all"
    assert searches(False) == [False] * 3
    planner.cfg.exploit_iterations = None
    assert searches(False) == [False]
    fixed = CEMPlanner(wm, PlannerConfig(horizon=6, candidates=32, elites=4, termination_penalty=0.0))
    assert not fixed.exploits_with_all_members()  # a penalty set by hand: no derived rule to read


def test_bad_config():
    with pytest.raises(ValueError, match="elites"):
        PlannerConfig(candidates=4, elites=8)
    with pytest.raises(ValueError, match="discount"):
        PlannerConfig(discount=0.0)
    with pytest.raises(ValueError, match="termination_penalty must be a finite"):
        PlannerConfig(termination_penalty=float("nan"))
    with pytest.raises(ValueError, match="init_std"):
        PlannerConfig(init_std=0.0)
    with pytest.raises(ValueError, match="exploit_init_std"):
        PlannerConfig(exploit_init_std=1.5)
    with pytest.raises(ValueError, match="exploit_members"):
        PlannerConfig(exploit_members="some")
    with pytest.raises(ValueError, match="exploit_iterations"):
        PlannerConfig(exploit_iterations=0)


@pytest.mark.parametrize("init_std", [0.05, 0.1])
def test_box_search_starts_at_init_std_of_the_action_range(monkeypatch, init_std):
    """A cold Box search draws its first candidates around the middle of the range with std init_std · range."""
    planner = CEMPlanner(
        LineWorld(False), PlannerConfig(horizon=5, candidates=256, elites=16, init_std=init_std)
    )
    seen = []
    score = planner._score
    monkeypatch.setattr(
        planner, "_score", lambda obs, seqs, **k: seen.append(seqs.clone()) or score(obs, seqs, **k)
    )
    planner.plan(np.array([0.5]), generator=torch.Generator().manual_seed(0))
    first = seen[0]  # (E, C, H, A): the first iteration's candidates
    assert float(first.mean()) == pytest.approx(0.0, abs=0.05)
    assert float(first.std()) == pytest.approx(init_std * 2.0, rel=0.1)  # the range [-1, 1] spans 2
    mean, std = torch.as_tensor(planner.cold_state(1))[0, : 2 * 5].reshape(5, 2).T
    assert torch.all(mean == 0) and torch.allclose(std, torch.full((5,), init_std * 2.0))
    seen.clear()
    planner.cfg.exploit_init_std = 2 * init_std  # the exploiting searches' own first spread
    planner.plan(np.array([0.5]), generator=torch.Generator().manual_seed(0), explore=False)
    assert float(seen[0].std()) == pytest.approx(2 * init_std * 2.0, rel=0.1)
    seen.clear()
    planner.plan(np.array([0.5]), generator=torch.Generator().manual_seed(0), explore=True)
    assert float(seen[0].std()) == pytest.approx(init_std * 2.0, rel=0.1)


def test_terminal_value_counts_past_the_horizon_weighted_by_survival():
    h = 4
    imagined = _imagined(2, 3, h)
    imagined["obs"][:, 1, h] = 1.0  # candidate 1 ends in a state worth 5 more
    imagined["term_prob"][:, 2, 0] = 1.0  # candidate 2 dies at once: its end state counts for nothing
    cfg = PlannerConfig(horizon=h, discount=0.9, termination_penalty=0.0)
    g = expected_free_energy(imagined, cfg, terminal_value=lambda o: 2.0 + 5.0 * o[..., 0])
    torch.testing.assert_close(g, torch.tensor([-2.0, -7.0, 0.0]) * 0.9**h)
    no_value = expected_free_energy(imagined, cfg)
    torch.testing.assert_close(no_value, torch.zeros(3))


def test_plan_reuse_when_unsurprised_and_at_most_replan_every():
    class Calm(LineWorld):
        calls = 0

        def imagine(self, obs, seqs):
            Calm.calls += 1
            return super().imagine(obs, seqs)

        def unsurprising(self, predicted, obs, z_max=None):
            return torch.ones(obs.shape[0], dtype=torch.bool)

        def predict_members(self, obs, action):
            x = torch.as_tensor(obs, dtype=torch.float32)[:, 0] + 0.1 * self._move(action)
            return {"out": x[None, :, None].expand(self.members, -1, 1)}

    planner = CEMPlanner(Calm(True), PlannerConfig(horizon=6, candidates=16, elites=4, replan_every=3))
    gen = torch.Generator().manual_seed(0)
    first = planner.plan(np.array([0.5]), generator=gen)
    searches = Calm.calls
    assert not first.reused[0]
    second = planner.plan(np.array([0.4]), first.state, gen)
    third = planner.plan(np.array([0.3]), second.state, gen)
    assert second.reused[0] and third.reused[0] and Calm.calls == searches  # two steps of the same plan
    assert second.action[0] == first.sequence[0, 1] and third.action[0] == first.sequence[0, 2]
    fourth = planner.plan(np.array([0.2]), third.state, torch.Generator().manual_seed(1))
    assert not fourth.reused[0] and Calm.calls > searches  # replan_every reached: a search
    again = planner.plan(np.array([0.2]), third.state, torch.Generator().manual_seed(1))
    assert np.array_equal(again.state, fourth.state)  # a pure function of its inputs


def test_novelty_term_counts_only_while_exploring():
    cfg = PlannerConfig(discount=1.0, termination_penalty=0.0, epistemic_weight=0.5)
    im = _imagined(2, 3, 4, reward=1.0)
    im["obs"][:, 1, 1:] = 2.0  # candidate 1 goes where nothing was visited
    im["disagreement"][2] = 1.0
    novelty = lambda obs: obs[..., 0].abs()  # noqa: E731  (N, H, d) -> (N, H)
    g = expected_free_energy(im, cfg, novelty=novelty, novelty_weight=0.25)
    assert g.tolist() == pytest.approx([-4.0, -4.0 - 0.25 * 4 * 2.0, -4.0 - 0.5])
    exploit = expected_free_energy(im, cfg, novelty=novelty, novelty_weight=0.25, explore=False)
    assert exploit.tolist() == pytest.approx([-4.0, -4.0, -4.0])


def test_world_model_novelty_is_the_distance_to_the_nearest_visited_state():
    env = gym.make("Pendulum-v1")
    wm = EPWorldModel(env.observation_space, env.action_space, WorldModelConfig(hidden=(8,), members=2))
    far = torch.tensor([[0.0, 0.0, 5.0]])
    assert float(wm.novelty(far)[0]) == 0.0  # nothing visited yet
    obs, _ = env.reset(seed=0)
    for _ in range(120):
        a = env.action_space.sample()
        nxt, r, term, trunc, _ = env.step(a)
        wm.observe(obs, a, nxt, r, term)
        obs = nxt
    visited = torch.from_numpy(wm.replay.obs[:10])
    # all 120 visited states are references (cdist's matmul form: ~1e-3 of rounding)
    torch.testing.assert_close(wm.novelty(visited), torch.zeros(10), atol=1e-2, rtol=0)
    ref = wm.obs_norm.normalize(torch.from_numpy(wm.replay.obs[: wm.replay.size]))
    expected = torch.cdist(wm.obs_norm.normalize(far), ref).amin()
    assert float(wm.novelty(far)[0]) == pytest.approx(float(expected), abs=1e-2)
    assert wm.novelty(far.expand(2, 3, 3)).shape == (2, 3)
    # the planner weighs it in units of the rewards' spread (0 while rewards never varied)
    planner = CEMPlanner(wm, PlannerConfig(novelty_weight=2.0))
    first = wm.first_reward_norm
    assert float(first.count) == 100  # the first reward_scale_steps rewards only
    sigma = float((first.m2 / first.count).sqrt())
    assert planner.novelty_weight() == pytest.approx(2.0 * sigma) and sigma > 0
    assert CEMPlanner(wm, PlannerConfig(novelty_weight=0.0)).novelty_weight() == 0.0


def test_novelty_subtracts_what_the_references_cannot_resolve():
    env = gym.make("Pendulum-v1")
    wm = EPWorldModel(env.observation_space, env.action_space, WorldModelConfig(hidden=(8,), members=2))
    obs, _ = env.reset(seed=0)
    env.action_space.seed(0)
    for _ in range(600):  # more visited states than the 256 references
        a = env.action_space.sample()
        nxt, r, term, trunc, _ = env.step(a)
        wm.observe(obs, a, nxt, r, term)
        obs = nxt if not (term or trunc) else env.reset(seed=1)[0]
    n = wm.replay.size
    idx = np.unique(np.linspace(0, n - 1, 256).round().astype(np.int64))
    mid = np.setdiff1d((idx[:-1] + idx[1:]) // 2, idx)
    assert len(mid) > 100
    norm = wm.obs_norm.normalize
    ref = norm(torch.from_numpy(wm.replay.obs[idx]))
    resolution = torch.cdist(norm(torch.from_numpy(wm.replay.obs[mid])), ref).amin(-1).median()
    assert float(resolution) > 0
    far = torch.tensor([[0.0, 0.0, 5.0]])
    raw = torch.cdist(norm(far), ref).amin()
    assert float(wm.novelty(far)[0]) == pytest.approx(float(raw), abs=1e-2)  # the default: the raw distance
    floored = float(wm.novelty(far, subtract_resolution=True)[0])
    assert floored == pytest.approx(float(raw - resolution), abs=1e-2)
    # the visited states between references: half lie within the resolution (novelty 0; 0.4: rounding margin)
    between = wm.novelty(torch.from_numpy(wm.replay.obs[mid]), subtract_resolution=True)
    assert float((between == 0).float().mean()) >= 0.4 and bool((between >= 0).all())
    # the planner passes the option on
    imagined = far.expand(1, 2, 3)  # (N, H, d)
    for flag, expected in ((False, raw), (True, raw - resolution)):
        planner = CEMPlanner(wm, PlannerConfig(novelty_resolution=flag))
        assert float(planner._novelty()(imagined)[0, 0]) == pytest.approx(float(expected), abs=1e-2)


def test_constant_rewards_give_no_novelty_drive():
    env = gym.make("CartPole-v1")  # +1 every step
    wm = EPWorldModel(env.observation_space, env.action_space, WorldModelConfig(hidden=(8,), members=2))
    obs, _ = env.reset(seed=0)
    for _ in range(30):
        a = env.action_space.sample()
        nxt, r, term, trunc, _ = env.step(a)
        wm.observe(obs, a, nxt, r, term)
        obs = nxt if not (term or trunc) else env.reset()[0]
    planner = CEMPlanner(wm, PlannerConfig())
    assert planner.cfg.novelty_weight > 0 and planner.novelty_weight() == 0.0


def test_horizon_is_cut_where_the_measured_model_error_exceeds_the_tolerance():
    wm = LineWorld(False)
    imagine, seen = wm.imagine, []

    def spy(obs, seqs):
        seen.append(seqs.shape[1])
        return imagine(obs, seqs)

    wm.imagine = spy
    cfg = PlannerConfig(horizon=6, candidates=32, elites=4, iterations=2, error_tolerance=0.5)
    planner = CEMPlanner(wm, cfg)
    assert planner.horizon() == 6  # nothing measured: the full horizon
    wm.open_loop_error = np.array([0.01, 0.1, 0.3, 0.6, 0.9, 1.2])  # k = 1 … 6 steps ahead
    assert planner.horizon() == 3
    res = planner.plan(np.array([0.5]), generator=torch.Generator().manual_seed(0))
    assert seen == [3, 3] and res.sequence.shape == (1, 6, 1)  # 6 steps planned, the first 3 imagined
    assert res.action[0][0] < 0  # still toward the reward
    wm.open_loop_error = np.full(6, 0.9)
    assert planner.horizon() == 2  # never below 2
    wm.open_loop_error = np.full(9, 0.1)
    assert planner.horizon() == 6  # never beyond the horizon
    wm.open_loop_error = np.full(6, 0.9)
    assert CEMPlanner(wm, PlannerConfig(horizon=6, error_tolerance=0.0)).horizon() == 6  # 0: never cut
    with pytest.raises(ValueError, match="error_tolerance"):
        PlannerConfig(error_tolerance=-1.0)


def test_derived_termination_penalty_counts_the_steps_imagined():
    env = gym.make("CartPole-v1")
    wm = EPWorldModel(env.observation_space, env.action_space, WorldModelConfig(hidden=(8,), members=2))
    wm.reward_norm.update(torch.ones(50, 1))
    planner = CEMPlanner(wm, PlannerConfig(horizon=20, termination_penalty=None, error_tolerance=0.5))
    assert planner.termination_penalty() == pytest.approx(20.0)
    wm.open_loop_error = np.linspace(0.0, 1.0, 20)  # first above 0.5 at index 10: 10 steps trusted
    assert planner.horizon() == 10 and planner.termination_penalty() == pytest.approx(10.0)
