import math

import pytest
import torch

from eqagent.energy import EnergyNet, get_activation


def _states(net, batch, gen):
    return [
        net.activations[l].project(torch.rand(batch, n, generator=gen, dtype=torch.float64))
        for l, n in enumerate(net.sizes)
    ]


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "hard_sigmoid", "identity"])
def test_grad_state_matches_autograd(activation, gen):
    net = EnergyNet([5, 7, 4], activation=activation, dtype=torch.float64, generator=gen, input_bias=True)
    states = [s * 0.98 + 0.01 for s in _states(net, 3, gen)]  # inside the box: ρ differentiable
    s = [t.clone().requires_grad_(True) for t in states]
    auto = torch.autograd.grad(net.energy(s).sum(), s)
    for l in range(3):
        torch.testing.assert_close(net.grad_state(states, l), auto[l])


def test_param_grads_match_autograd_and_diff(gen):
    net = EnergyNet([5, 7, 6, 3], activation="sigmoid", dtype=torch.float64, generator=gen)
    a, b = _states(net, 4, gen), _states(net, 4, gen)
    b[0] = a[0]  # clamped input shared between the two states
    params = net.trainable_parameters()
    auto = torch.autograd.grad(net.energy(a).mean(), params)
    closed = net.energy_param_grads(a)
    for p, g in zip(params, auto):
        torch.testing.assert_close(closed[p], g)
    diff = net.energy_param_grad_diff(a, b)
    gb = net.energy_param_grads(b)
    for p in params:
        torch.testing.assert_close(diff[p], closed[p] - gb[p])


def test_ensemble_members_are_independent_nets(gen):
    ens = EnergyNet([4, 6, 3], members=3, generator=gen)
    x = torch.rand(5, 4, generator=gen)
    states = ens.feedforward(x)
    assert states[1].shape == (3, 5, 6)
    e = ens.energy(states)
    for m in range(3):
        single = EnergyNet([4, 6, 3])
        with torch.no_grad():
            for ws, we in zip(single.weights, ens.weights):
                ws.copy_(we[m])
            for bs, be in zip(single.biases, ens.biases):
                bs.copy_(be[m])
        torch.testing.assert_close(single.energy([s[m] for s in states]), e[m])


def test_bad_inputs_raise_clear_errors(gen):
    with pytest.raises(ValueError, match="at least 2 layers"):
        EnergyNet([3])
    with pytest.raises(ValueError, match="positive"):
        EnergyNet([3, 0])
    with pytest.raises(ValueError, match="unknown activation"):
        EnergyNet([3, 2], activation="relu6")
    net = EnergyNet([3, 2], generator=gen)
    with pytest.raises(ValueError, match="last dimension 3"):
        net.feedforward(torch.zeros(4, 5))
    with pytest.raises(ValueError, match="NaN or inf"):
        net.feedforward(torch.tensor([[0.0, math.nan, 1.0]]))
    ens = EnergyNet([3, 2], members=2)
    with pytest.raises(ValueError, match=r"\(2, B, 3\)"):
        ens.feedforward(torch.zeros(3, 4, 3))


def test_activation_boxes():
    hs = get_activation("hard_sigmoid")
    s = torch.tensor([-1.0, 0.5, 2.0])
    assert hs.project(s).tolist() == [0.0, 0.5, 1.0]
    assert get_activation("sigmoid").project(s) is s
