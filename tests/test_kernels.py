"""Triton kernels on CPU through the interpreter (TRITON_INTERPRET=1 is set in conftest before triton loads)."""

import os

import pytest
import torch

from eqagent.costs import MSECost
from eqagent.energy import EnergyNet
from eqagent.ep import EPConfig, ep_gradients
from eqagent.kernels import triton_relax
from eqagent.relax import settle

pytestmark = pytest.mark.skipif(
    not triton_relax.HAS_TRITON or os.environ.get("TRITON_INTERPRET") != "1",
    reason="needs triton (interpreter)",
)


def _ref(const, a, w1, b, w2, low, high, s=None, y=None, beta=0.0):
    d = const.clone()
    if a is not None:
        d = d + a @ w1
    if b is not None:
        d = d + b @ w2.transpose(-1, -2)
    if beta:
        d = d - beta * (s - y)
    return d.clamp(low, high)


@pytest.mark.parametrize("batch,n,k1,k2", [(1, 5, 7, 3), (37, 33, 20, 17), (16, 16, 16, 16), (3, 70, 1, 40)])
@pytest.mark.parametrize("members", [None, 3])
def test_fused_layer_update_matches_torch(batch, n, k1, k2, members, gen):
    lead = () if members is None else (members,)
    t = lambda *shape: torch.randn(*lead, *shape, generator=gen)  # noqa: E731
    const, a, w1, b, w2 = t(batch, n), t(batch, k1), t(k1, n), t(batch, k2), t(n, k2)
    s, y = t(batch, n), t(batch, n)
    for args in ((a, w1, b, w2), (a, w1, None, None), (None, None, b, w2)):
        for beta in (0.0, 0.3, -0.3):
            out = triton_relax.fused_layer_update(const, *args, 0.0, 1.0, state=s, target=y, beta=beta)
            torch.testing.assert_close(out, _ref(const, *args, 0.0, 1.0, s, y, beta), atol=1e-5, rtol=0)
    inf = float("inf")
    out = triton_relax.fused_layer_update(const, a, w1, b, w2, -inf, inf)
    torch.testing.assert_close(out, _ref(const, a, w1, b, w2, -inf, inf), atol=1e-5, rtol=0)


@pytest.mark.parametrize("members", [None, 4])
@pytest.mark.parametrize("sizes", [(6, 10, 8, 4), (13, 33, 5)])
def test_relaxation_with_triton_equals_torch(members, sizes):
    torch.manual_seed(0)
    net = EnergyNet(list(sizes), members=members, generator=torch.Generator().manual_seed(1))
    x = torch.rand(9, sizes[0])
    y = torch.rand(9, sizes[-1])
    results = {}
    for backend in ("torch", "triton"):
        net.relax_backend = backend
        free = settle(net, net.feedforward(x), steps=12)
        nudged = settle(
            net,
            free.states,
            steps=6,
            beta=0.4,
            target=MSECost().check_target(y, free.states[-1]),
            cost=MSECost(),
        )
        dream = settle(net, free.states, clamped=(len(sizes) - 1,), steps=6)  # output clamped, input free
        results[backend] = (free.states, nudged.states, dream.states)
    for a, b in zip(results["torch"], results["triton"]):
        for sa, sb in zip(a, b):
            torch.testing.assert_close(sa, sb, atol=1e-5, rtol=0)


def test_ep_gradients_with_triton_equal_torch():
    net = EnergyNet([8, 12, 5], generator=torch.Generator().manual_seed(2))
    x, y = torch.rand(6, 8), torch.rand(6, 5)
    grads = {}
    for backend in ("torch", "triton"):
        net.relax_backend = backend
        grads[backend] = ep_gradients(net, MSECost(), x, y, EPConfig(free_steps=10, nudged_steps=5)).grads
    for p in grads["torch"]:
        torch.testing.assert_close(grads["torch"][p], grads["triton"][p], atol=1e-5, rtol=1e-4)


def test_auto_backend_uses_torch_on_cpu():
    net = EnergyNet([3, 4, 2])
    assert net._backend(net.feedforward(torch.rand(2, 3))) == "torch"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_auto_dispatch_matches_torch():  # pragma: no cover - GPU only
    net = EnergyNet([20, 64, 64, 7], members=5).cuda()
    x = torch.rand(256, 20, device="cuda")
    net.relax_backend = "torch"
    ref = settle(net, net.feedforward(x), steps=20).states
    net.relax_backend = "auto"
    out = settle(net, net.feedforward(x), steps=20).states
    for a, b in zip(ref, out):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "sizes,members,batch,clamped,beta",
    [((8, 64, 64, 7), 5, 33, (0,), 0.0), ((8, 64, 64, 7), 5, 33, (0,), 0.4), ((8, 64, 64, 7), None, 1, (0, 3), 0.0),
     ((5, 17, 3), 2, 40, (0,), -0.3), ((5, 17, 3), None, 1, (0,), 0.0), ((6, 130, 4), None, 3, (0,), 0.0)],
)  # fmt: skip
def test_persistent_kernel_equals_torch(sizes, members, batch, clamped, beta, monkeypatch):
    """All T steps in one launch (world-model sizes, odd sizes, batch 1, ensembles, free / nudged / output clamped)
    equal the torch path; nets it cannot hold on chip fall back to the per-layer kernel."""
    net = EnergyNet(list(sizes), members=members, generator=torch.Generator().manual_seed(3))
    lead = (batch,) if members is None else (members, batch)
    x = torch.rand(batch, sizes[0], generator=torch.Generator().manual_seed(4))
    init = net.feedforward(x)
    if 3 in clamped:
        init[3] = torch.rand(*lead, sizes[3], generator=torch.Generator().manual_seed(5))
    kw = {}
    if beta:
        kw = dict(
            beta=beta,
            cost=MSECost(),
            target=torch.rand(*lead, sizes[-1], generator=torch.Generator().manual_seed(6)),
        )
    calls = []
    real = triton_relax.persistent_relax
    monkeypatch.setattr(triton_relax, "persistent_relax", lambda *a, **k: calls.append(1) or real(*a, **k))
    out = {}
    for backend in ("torch", "triton"):
        net.relax_backend = backend
        out[backend] = settle(net, init, clamped=clamped, steps=15, **kw).states
    assert len(calls) == (0 if max(sizes) > triton_relax.PERSISTENT_MAX_WIDTH else 1)
    for a, b in zip(out["torch"], out["triton"]):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_relax_bench_reports_every_figure_on_cpu():
    from eqagent.bench.relax import RelaxBenchConfig, relax_flops, run_relax_bench

    out = run_relax_bench(RelaxBenchConfig(steps=2, repeats=1, compile=False, device="cpu"))
    assert out["device"] == "cpu" and out["matmul_gflops"] > 0
    for name, case in (("world_model", ([8, 64, 64, 7], 5, 1024)), ("mnist", ([784, 500, 10], None, 256))):
        res = out[name]
        assert res["flops"] == relax_flops(*case, 2)
        assert res["torch_eager_seconds"] > 0 and res["products_only_seconds"] > 0
        assert res["ratio_to_matmul"] > 0 and res["triton"].startswith("not measured")
    assert out["cpu_ratio_to_matmul"] == max(out[n]["ratio_to_matmul"] for n in ("world_model", "mnist"))
