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


@pytest.mark.parametrize("sizes", [(6, 10, 8, 4), (13, 33, 5)])
def test_relaxation_with_triton_equals_torch(sizes):
    torch.manual_seed(0)
    net = EnergyNet(list(sizes), generator=torch.Generator().manual_seed(1))
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
