"""Triton kernels against the torch path: on CPU through the interpreter (TRITON_INTERPRET=1, set in conftest
before triton loads), and on CUDA with the same tests when run with TRITON_INTERPRET=0 on a GPU machine
(scripts/device_bench.sh): ``DEV`` is where the kernel-vs-torch tests put their tensors."""

import os

import pytest
import torch

from eqagent.costs import MSECost
from eqagent.energy import Dynamics, EnergyNet
from eqagent.kernels import triton_relax
from eqagent.relax import settle

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
DEV = torch.device("cpu" if INTERPRETED or not torch.cuda.is_available() else "cuda")
pytestmark = pytest.mark.skipif(
    not triton_relax.HAS_TRITON or (not INTERPRETED and DEV.type != "cuda"),
    reason="needs triton (the interpreter, or CUDA)",
)
interpreter_only = pytest.mark.skipif(not INTERPRETED, reason="CPU tensors through the Triton interpreter")


def _ref(const, a, w1, b, w2, low, high, s=None, y=None, beta=0.0):
    d = const.clone()
    if a is not None:
        d = d + a @ w1
    if b is not None:
        d = d + b @ w2.transpose(-1, -2)
    if beta:
        d = d - beta * (s - y)
    return d.clamp(low, high)


U = 2.0**-24  # float32 unit roundoff


def _gamma(k: int) -> float:
    """Higham's γ_k = k·u / (1 − k·u): a float32 sum of k products has |error| ≤ γ_k · Σ|products|."""
    return k * U / (1 - k * U)


def _bound(const, a, w1, b, w2, s=None, beta=0.0):
    """Largest possible difference between two float32 evaluations of one fused layer update from the same inputs.

    Each evaluation of ``const + a·w1 + b·w2ᵀ − β(s − y)`` is a sum of K = k1 + k2 + 3 terms whose rounding error
    is at most γ_K times the sum of the terms' magnitudes (Higham, *Accuracy and Stability of Numerical
    Algorithms*, §3.1, whatever the order of the sum); two evaluations differ by at most twice that, and the clip
    is non-expansive. The bound is per element; its maximum is returned.
    """
    mag, k = const.abs(), 3
    if a is not None:
        mag, k = mag + a.abs() @ w1.abs(), k + a.shape[-1]
    if b is not None:
        mag, k = mag + b.abs() @ w2.abs().transpose(-1, -2), k + b.shape[-1]
    if beta:
        mag = mag + abs(beta) * s.abs() + 1.0
    return 2 * _gamma(k) * float(mag.max())


@pytest.mark.parametrize("batch,n,k1,k2", [(1, 5, 7, 3), (37, 33, 20, 17), (16, 16, 16, 16), (3, 70, 1, 40)])
def test_fused_layer_update_matches_torch(batch, n, k1, k2, gen):
    t = lambda *shape: torch.randn(*shape, generator=gen).to(DEV)  # noqa: E731
    const, a, w1, b, w2 = t(batch, n), t(batch, k1), t(k1, n), t(batch, k2), t(n, k2)
    s, y = t(batch, n), t(batch, n)
    for args in ((a, w1, b, w2), (a, w1, None, None), (None, None, b, w2)):
        for beta in (0.0, 0.3, -0.3):
            out = triton_relax.fused_layer_update(const, *args, 0.0, 1.0, state=s, target=y, beta=beta)
            tol = _bound(const, *args, s, beta)
            torch.testing.assert_close(out, _ref(const, *args, 0.0, 1.0, s, y, beta), atol=tol, rtol=0)
    inf = float("inf")
    out = triton_relax.fused_layer_update(const, a, w1, b, w2, -inf, inf)
    tol = _bound(const, a, w1, b, w2)
    torch.testing.assert_close(out, _ref(const, a, w1, b, w2, -inf, inf), atol=tol, rtol=0)


def _step_bounds(net, s, free, beta, y):
    """Per-layer bound on the difference of two float32 evaluations of one fixed-point step from states ``s``.

    Odd layers first: layer l's drive ``b_l + s_{l−1} W_{l−1} + s_{l+1} W_lᵀ (− β(s_l − y))`` is a sum of K terms,
    so each evaluation is within γ_K·Σ|terms| of the exact value (the clip is non-expansive) and two evaluations
    within twice that. Even layers then read their odd neighbours' new states, which may already differ by the
    odd bound e: that adds at most (row sum of |W| over the odd neighbours)·e.
    """
    last = net.num_layers - 1
    out = {}
    with torch.no_grad():
        _fill_bounds(net, s, free, beta, y, last, out)
    return out


def _fill_bounds(net, s, free, beta, y, last, out):
    for parity in (1, 0):
        for l in (l for l in free if l % 2 == parity):
            mag, k, inherited = net.biases[l].abs().unsqueeze(0), 1, 0.0
            for j, k_w in ((l - 1, l - 1), (l + 1, l)):
                if 0 <= j <= last:
                    w = net.weights[k_w] if j < l else net.weights[k_w].transpose(0, 1)  # (n_j, n_l)
                    mag, k = mag + s[j].abs() @ w.abs(), k + net.sizes[j]
                    if j in out:  # a neighbour updated earlier in this step
                        inherited = max(inherited, float(w.abs().sum(0).max()) * out[j])
            if beta and l == last:
                mag, k = mag + abs(beta) * (s[l].abs() + y.abs()), k + 2
            out[l] = 2 * _gamma(k) * float(mag.max()) + inherited


@pytest.mark.parametrize("sizes", [(6, 10, 8, 4), (13, 33, 5)])
def test_relaxation_steps_with_triton_equal_torch(sizes, monkeypatch):
    """Every step of a free, a nudged and an output-clamped relaxation: the Triton dispatch from the torch path's
    states equals the torch step within :func:`_step_bounds`."""
    net = EnergyNet(list(sizes), generator=torch.Generator().manual_seed(1)).to(DEV)
    x = torch.rand(9, sizes[0], generator=torch.Generator().manual_seed(2)).to(DEV)
    y = torch.rand(9, sizes[-1], generator=torch.Generator().manual_seed(3)).to(DEV)
    calls = []
    real = triton_relax.fused_layer_update
    monkeypatch.setattr(triton_relax, "fused_layer_update", lambda *a, **k: calls.append(1) or real(*a, **k))
    last = len(sizes) - 1
    for clamped, beta in (((0,), 0.0), ((0,), 0.4), ((last,), 0.0)):
        free = tuple(l for l in range(len(sizes)) if l not in clamped)
        dyn = Dynamics(free=free, beta=beta, cost=MSECost() if beta else None, target=y if beta else None)
        s = net.feedforward(x)
        for _ in range(8):
            net.relax_backend = "torch"
            want = net.relax_step(s, dyn, net.relax_context(s, set(clamped)))
            net.relax_backend = "triton"
            got = net.relax_step(s, dyn, net.relax_context(s, set(clamped)))
            bounds = _step_bounds(net, [t.detach() for t in s], free, beta, y)
            for l in free:
                torch.testing.assert_close(got[l], want[l], atol=bounds[l], rtol=0)
            s = want
    assert calls  # the triton backend really ran the kernel


@pytest.mark.parametrize("sizes", [(6, 10, 8, 4), (13, 33, 5)])
def test_settle_dispatches_to_triton_and_stays_in_the_box(sizes):
    net = EnergyNet(list(sizes), generator=torch.Generator().manual_seed(1)).to(DEV)
    net.relax_backend = "triton"
    out = settle(net, net.feedforward(torch.rand(9, sizes[0], device=DEV)), steps=12).states
    assert all(((s >= 0) & (s <= 1)).all() for s in out[1:])


def test_auto_backend_uses_torch_on_cpu():
    net = EnergyNet([3, 4, 2])
    assert net._backend(net.feedforward(torch.rand(2, 3))) == "torch"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_auto_dispatch_matches_torch():  # pragma: no cover - GPU only
    net = EnergyNet([20, 64, 64, 7]).cuda()
    x = torch.rand(256, 20, device="cuda")
    net.relax_backend = "torch"
    ref = settle(net, net.feedforward(x), steps=20).states
    net.relax_backend = "auto"
    out = settle(net, net.feedforward(x), steps=20).states
    for a, b in zip(ref, out):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_relax_bench_reports_every_figure_on_cpu():
    from eqagent.apps.bench.relax import RelaxBenchConfig, relax_flops, run_relax_bench

    out = run_relax_bench(RelaxBenchConfig(steps=2, repeats=1, compile=False, device="cpu"))
    assert out["device"] == "cpu" and out["matmul_gflops"] > 0
    for name, case in (("world_model", ([8, 64, 64, 7], 5120)), ("mnist", ([784, 500, 10], 256))):
        res = out[name]
        assert res["flops"] == relax_flops(*case, 2)
        assert res["torch_eager_seconds"] > 0 and res["products_only_seconds"] > 0
        assert res["ratio_to_matmul"] > 0 and res["triton"].startswith("not measured")
    assert out["cpu_ratio_to_matmul"] == max(out[n]["ratio_to_matmul"] for n in ("world_model", "mnist"))


# ---------------------------------------------------------------------------------------------------------------
# The fused imagined rollout (eqagent.kernels.triton_imagine)
def _rollout_inputs(m, n, h, d, k1, k2, gen, gain=1.0):
    """Random rollout inputs with weights scaled like a trained world model's (small Δz per step)."""
    t = lambda *shape, s=1.0: (s * torch.randn(*shape, generator=gen)).to(DEV)  # noqa: E731
    o = d + 2
    return (t(m, n, d), t(m, h, n, k1), t(m, d, k1, s=0.5 * gain), t(m, k1, k2, s=gain * k1**-0.5), t(m, 1, k2),
            t(m, k2, o, s=0.1 * gain * k2**-0.5), t(m, 1, o, s=0.05))  # fmt: skip


@pytest.mark.parametrize(
    "m,n,h,d,k1,k2,act",
    [(5, 128, 20, 4, 64, 64, "sigmoid"), (3, 37, 5, 3, 32, 48, "relu"), (1, 1, 1, 17, 16, 20, "sigmoid"),
     (2, 50, 15, 11, 64, 64, "relu")],
)  # fmt: skip
def test_fused_rollout_matches_the_torch_loop_within_the_float32_bound(m, n, h, d, k1, k2, act, gen):
    from eqagent.imagination import Imagination
    from eqagent.kernels import triton_imagine

    # ReLU units pass errors on at slope 1 (σ at ¼): smaller weights keep the worst-case bound informative
    z0, a, w1, w2, b2, w3, b3 = _rollout_inputs(m, n, h, d, k1, k2, gen, gain=0.25 if act == "relu" else 1.0)
    squash = torch.relu if act == "relu" else torch.sigmoid
    want_zs, want_out = Imagination._loop(z0, a, w1, [(w2, b2), (w3, b3)], squash)
    zs, outs = triton_imagine.fused_rollout(z0, a, w1, w2, b2, w3, b3, act)
    assert zs.shape == (m, n, h + 1, d) and outs.shape == (h, m, n, d + 2)
    e_zs, e_out = triton_imagine.rollout_error_bound(z0, a, w1, w2, b2, w3, b3, act)
    # two float32 evaluations are each within the bound of exact arithmetic; 1e-30 covers an exact-zero bound
    assert float(e_zs.max()) < 1e-2 * (1 + float(want_zs.abs().max()))  # the bound is not vacuous
    assert ((zs - want_zs).abs().double() <= 2 * e_zs + 1e-30).all()
    assert ((outs - want_out).abs().double() <= 2 * e_out + 1e-30).all()
    assert torch.equal(zs[:, :, 0], z0)


def test_fused_rollout_rejects_inconsistent_shapes(gen):
    from eqagent.kernels import triton_imagine

    z0, a, w1, w2, b2, w3, b3 = _rollout_inputs(2, 8, 3, 4, 16, 16, gen)
    with pytest.raises(ValueError, match="inconsistent shapes"):
        triton_imagine.fused_rollout(z0, a[..., :8], w1, w2, b2, w3, b3)
    with pytest.raises(ValueError, match="sigmoid and relu"):
        triton_imagine.fused_rollout(z0, a, w1, w2, b2, w3, b3, "tanh")


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_world_model_imagines_through_the_kernel_when_asked(activation, monkeypatch):
    """``imagine_backend="triton"``: the planner's rollout runs in the kernel, and the imagined observations equal
    the torch path's within the bound of the kernel's own inputs (scaled back to observation units)."""
    import gymnasium as gym

    from eqagent.kernels import triton_imagine
    from eqagent.world_model import EPWorldModel, WorldModelConfig

    env = gym.make("CartPole-v1")
    models = {b: EPWorldModel(env.observation_space, env.action_space,
                              WorldModelConfig(activation=activation, imagine_backend=b), DEV) for b in ("torch", "triton")}  # fmt: skip
    models["triton"].load_state_dict(models["torch"].state_dict())
    obs = torch.randn(6, 4, device=DEV)
    seqs = torch.randint(0, 2, (6, 12), device=DEV)
    captured = []
    real = triton_imagine.fused_rollout
    monkeypatch.setattr(triton_imagine, "fused_rollout", lambda *a: captured.append(a) or real(*a))
    std = models["torch"].obs_norm.std.double()
    for split in (False, True):  # every member × sequence, and the members sharing the sequences out
        captured.clear()
        got = models["triton"].imagine(obs, seqs, disagreement=not split, split=split)
        want = models["torch"].imagine(obs, seqs, disagreement=not split, split=split)
        assert len(captured) == 1
        e_zs, _ = triton_imagine.rollout_error_bound(*captured[0])
        if split:  # each sequence's own member's bound, in the sequences' order
            e_zs = e_zs.reshape(1, -1, *e_zs.shape[2:])[:, : seqs.shape[0]]
        bound = (
            2 * e_zs * std + 2 * 2.0**-24 * want["obs"].abs().double() + 1e-30
        )  # + the rescale's own rounding
        assert ((got["obs"] - want["obs"]).abs().double() <= bound).all()
    assert models["torch"]._imagination.backend(obs.device) == "torch"


def test_auto_imagine_backend_is_torch_on_cpu_and_for_other_depths():
    import gymnasium as gym

    from eqagent.world_model import EPWorldModel, WorldModelConfig

    env = gym.make("CartPole-v1")
    wm = EPWorldModel(env.observation_space, env.action_space, WorldModelConfig())
    wm.imagine(torch.zeros(1, 4), torch.zeros(1, 3, dtype=torch.long))
    assert wm._imagination.backend(torch.device("cpu")) == "torch"
    deep = EPWorldModel(
        env.observation_space,
        env.action_space,
        WorldModelConfig(hidden=(32, 32, 32), imagine_backend="triton"),
    )
    with pytest.raises(RuntimeError, match="two hidden layers"):
        deep.imagine(torch.zeros(1, 4), torch.zeros(1, 3, dtype=torch.long))


def test_imagine_bench_reports_eager_and_nulls_what_cpu_cannot_measure():
    from eqagent.apps.bench.imagine import ImagineBenchConfig, run_imagine_bench

    out = run_imagine_bench(
        ImagineBenchConfig(candidates="16,32", horizon=3, repeats=1, compile=False, device="cpu")
    )
    assert out["device"] == "cpu" and set(out["cases"]) == {"16", "32"}
    for case in out["cases"].values():
        assert case["eager_seconds"] > 0 and case["dispatch"] == "torch"
        assert (
            case["triton_seconds"] is None
            and case["cuda_graph_seconds"] is None
            and case["triton_speedup"] is None
        )
    assert any("CUDA only" in n for n in out["notes"])
    with pytest.raises(ValueError, match="candidates"):
        ImagineBenchConfig(candidates="16,x")


def test_autotuner_keeps_the_fastest_per_key_and_evicts_the_oldest():
    from eqagent.kernels.autotune import ShapeAutotuner

    now = [0.0]
    calls = {"slow": 0, "fast": 0}

    def work(name, seconds):
        def fn():
            calls[name] += 1
            now[0] += seconds

        return fn

    tuner = ShapeAutotuner(repeats=3, max_entries=2, clock=lambda: now[0])
    cands = {"slow": work("slow", 3.0), "fast": work("fast", 1.0)}
    assert tuner.choose("a", cands) == "fast"
    assert calls == {"slow": 4, "fast": 4}  # one warm-up and three timed calls each
    assert tuner.timings["a"] == {"slow": 3.0, "fast": 1.0}
    assert tuner.choose("a", cands) == "fast" and calls == {"slow": 4, "fast": 4}  # cached: nothing re-timed
    tuner.choose("b", cands)
    tuner.choose("c", {"slow": work("slow", 0.5), "fast": work("fast", 1.0)})
    assert list(tuner.cache) == ["b", "c"] and tuner.cache["c"] == "slow"
    with pytest.raises(ValueError):
        tuner.choose("d", {})


@interpreter_only
def test_relax_autotune_times_both_steps_once_per_shape(monkeypatch):
    from eqagent.kernels import autotune

    tuner = autotune.ShapeAutotuner(repeats=1)
    monkeypatch.setattr(autotune, "AUTOTUNER", tuner)
    net = EnergyNet([6, 10, 4], generator=torch.Generator().manual_seed(1))
    s = net.feedforward(torch.rand(5, 6))
    choice = net._autotuned(s, {0})
    assert choice in ("torch", "triton") and len(tuner.cache) == 1
    (key,) = tuner.cache
    assert key[:3] == ("relax", (6, 10, 4), (5,)) and set(tuner.timings[key]) == {"torch", "triton"}
    assert net._autotuned(s, {0}) == choice and len(tuner.cache) == 1


@interpreter_only
def test_imagine_autotune_runs_the_chosen_backend(monkeypatch):
    import gymnasium as gym

    from eqagent.imagination import Imagination
    from eqagent.kernels import autotune
    from eqagent.world_model import EPWorldModel, WorldModelConfig

    tuner = autotune.ShapeAutotuner(repeats=1)
    monkeypatch.setattr(autotune, "AUTOTUNER", tuner)
    monkeypatch.setattr(Imagination, "backend", lambda self, device: "autotune")  # as on CUDA with Triton
    env = gym.make("CartPole-v1")
    wm = EPWorldModel(env.observation_space, env.action_space, WorldModelConfig())
    ref = EPWorldModel(env.observation_space, env.action_space, WorldModelConfig(imagine_backend="torch"))
    ref.load_state_dict(wm.state_dict())
    g = torch.Generator().manual_seed(0)
    obs, seqs = torch.randn(7, 4, generator=g), torch.randint(0, 2, (7, 5), generator=g)
    got = wm.imagine(obs, seqs)
    (key,) = tuner.cache
    assert wm._imagination.last_backend == tuner.cache[key] and set(tuner.timings[key]) == {"torch", "triton"}
    if tuner.cache[key] == "torch":  # the same loop: the same numbers (the kernel's accuracy is tested above)
        assert torch.equal(got["obs"], ref.imagine(obs, seqs)["obs"])
    else:
        assert got["obs"].shape == (5, 7, 6, 4) and torch.isfinite(got["obs"]).all()
