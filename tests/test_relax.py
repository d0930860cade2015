import pytest
import torch

from eqagent.costs import MSECost
from eqagent.energy import EnergyNet
from eqagent.ep import EPConfig, ep_gradients
from eqagent.relax import RelaxationDiverged, settle


def _net(gen, activation="hard_sigmoid", gain=0.8, sizes=(6, 10, 8, 4)):
    return EnergyNet(list(sizes), activation=activation, generator=gen, init_gain=gain, dtype=torch.float64)


@pytest.mark.parametrize(
    "activation,mode",
    [("hard_sigmoid", "gradient"), ("sigmoid", "gradient"), ("hard_sigmoid", "fixed_point")],
)
def test_energy_decreases_monotonically(activation, mode, gen):
    net = _net(gen, activation)
    x = torch.rand(8, 6, generator=gen, dtype=torch.float64)
    states = net.zero_states(8)
    states[0] = x
    energies = [net.energy(states).sum().item()]
    for _ in range(60):
        states = settle(net, states, clamped=(0,), steps=1, mode=mode, eps=0.2).states
        energies.append(net.energy(states).sum().item())
    diffs = torch.tensor(energies).diff()
    assert (diffs <= 1e-10).all(), energies
    assert energies[-1] < energies[0]


def test_clamped_layers_never_move(gen):
    net = _net(gen)
    x = torch.rand(5, 6, generator=gen, dtype=torch.float64)
    states = net.feedforward(x)
    y = torch.rand(5, 4, generator=gen, dtype=torch.float64)
    states[3] = y
    for mode in ("fixed_point", "gradient"):
        out = settle(net, states, clamped=(0, -1), steps=30, mode=mode).states
        assert torch.equal(out[0], x) and torch.equal(out[3], y)
        assert not torch.equal(out[1], states[1])
    # the same net "dreams": clamp the output, free the input
    out = settle(net, states, clamped=(3,), steps=30).states
    assert torch.equal(out[3], y) and not torch.equal(out[0], x)


def test_both_forms_reach_the_same_equilibrium(gen):
    net = _net(gen, gain=0.5)
    x = torch.rand(4, 6, generator=gen, dtype=torch.float64)
    init = net.feedforward(x)
    a = settle(net, init, steps=500, mode="fixed_point", tol=1e-12)
    b = settle(net, init, steps=20000, mode="gradient", eps=0.3, tol=1e-13)
    assert a.converged and b.converged
    assert a.steps < b.steps
    for sa, sb in zip(a.states, b.states):
        torch.testing.assert_close(sa, sb, atol=1e-9, rtol=0)


def test_stops_on_convergence_and_warm_start_helps(gen):
    net = _net(gen, gain=0.5)
    x = torch.rand(4, 6, generator=gen, dtype=torch.float64)
    cold = net.zero_states(4)
    cold[0] = x
    r1 = settle(net, cold, steps=1000, tol=1e-10)
    assert r1.converged and r1.steps < 1000 and r1.residual < 1e-10
    r2 = settle(net, r1.states, steps=1000, tol=1e-10)
    assert r2.steps <= 2


def test_divergence_is_detected_not_returned(gen):
    net = EnergyNet([3, 5, 2], activation="identity", generator=gen, dtype=torch.float64, init_gain=6.0)
    x = torch.rand(2, 3, generator=gen, dtype=torch.float64)
    states = net.feedforward(x)
    with pytest.raises(RelaxationDiverged, match="diverged"):
        settle(net, states, steps=500, mode="gradient", eps=0.9)
    bad = [s.clone() for s in states]
    bad[1][0, 0] = float("inf")
    with pytest.raises(RelaxationDiverged):
        settle(net, bad, steps=1)


def test_bad_arguments(gen):
    net = _net(gen)
    st = net.feedforward(torch.rand(2, 6, generator=gen, dtype=torch.float64))
    with pytest.raises(ValueError, match="unknown relaxation mode"):
        settle(net, st, mode="euler")
    with pytest.raises(ValueError, match="every layer is clamped"):
        settle(net, st, clamped=range(4))
    with pytest.raises(ValueError, match="needs both cost and target"):
        settle(net, st, beta=0.1)
    with pytest.raises(ValueError, match="expected 4 state tensors"):
        settle(net, st[:2])
    smooth = _net(gen, "sigmoid")
    with pytest.raises(ValueError, match="mode='gradient'"):
        settle(smooth, smooth.feedforward(st[0]), mode="fixed_point")


def test_learning_builds_no_autograd_graph(gen):
    """Memory of a step cannot grow with T: no tensor is saved for backward, whatever the number of steps."""
    net = _net(gen)
    x = torch.rand(4, 6, generator=gen, dtype=torch.float64)
    y = torch.rand(4, 4, generator=gen, dtype=torch.float64)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        step = ep_gradients(net, MSECost(), x, y, EPConfig(free_steps=200, nudged_steps=200))
    assert saved == []
    assert all(not s.requires_grad for s in step.free.states)
    assert all(not g.requires_grad for g in step.grads.values())


def _reference_fixed_point(net, states, clamped, steps, beta=0.0, cost=None, target=None):
    """The textbook loop: odd layers, then even layers, each ``s_l ← Π(drive_l [− β ∂C/∂s_l])``."""
    s = [net.project(l, v) if l not in clamped else v for l, v in enumerate(states)]
    free = [l for l in range(net.num_layers) if l not in clamped]
    last = net.num_layers - 1
    for _ in range(steps):
        for l in [l for l in free if l % 2 == 1] + [l for l in free if l % 2 == 0]:
            d = net.drive(s, l)
            if beta and l == last:
                d = d - beta * cost.grad_state(s[l], target)
            s[l] = net.project(l, d)
    return s


@pytest.mark.parametrize(
    "sizes,clamped,beta",
    [((6, 10, 8, 4), (0,), 0.0), ((6, 10, 8, 4), (0,), 0.5), ((5, 7, 3), (0, 2), 0.0), ((6, 10, 8, 4), (3,), 0.0),
     ((6, 10, 8, 4), (1,), -0.3), ((9, 1), (0,), 0.0)],
)  # fmt: skip
def test_fixed_point_matches_the_textbook_loop(gen, sizes, clamped, beta):
    """The feature-major fixed-point path equals ``clip(drive)`` layer by layer (any clamp pattern, nudged, a
    layer whose neighbours are all clamped, batch 1)."""
    net = EnergyNet(list(sizes), generator=gen, dtype=torch.float64)
    batch = 1 if sizes == (9, 1) else 5
    lead = (batch,)
    states = [torch.rand(*lead, n, generator=gen, dtype=torch.float64) * 1.4 - 0.2 for n in sizes]
    cost = MSECost() if beta else None
    target = torch.rand(*lead, sizes[-1], generator=gen, dtype=torch.float64) if beta else None
    got = settle(net, states, clamped=clamped, steps=7, beta=beta, cost=cost, target=target).states
    want = _reference_fixed_point(net, states, set(clamped), 7, beta, cost, target)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        torch.testing.assert_close(g, w, atol=1e-12, rtol=0)
