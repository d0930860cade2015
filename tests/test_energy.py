import math

import pytest
import torch

from eqagent.energy import Dynamics, EnergyNet, get_activation


def _states(net, batch, gen):
    return [
        net.activations[l].project(torch.rand(batch, n, generator=gen, dtype=torch.float64))
        for l, n in enumerate(net.sizes)
    ]


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "hard_sigmoid", "identity"])
def test_gradient_step_follows_the_energy_gradient(activation, gen):
    """One gradient-dynamics step moves every free layer by −ε ∂E/∂s (autograd), inside the box."""
    net = EnergyNet([5, 7, 4], activation=activation, dtype=torch.float64, generator=gen, input_bias=True)
    states = [s * 0.98 + 0.01 for s in _states(net, 3, gen)]  # inside the box: ρ differentiable
    s = [t.clone().requires_grad_(True) for t in states]
    auto = torch.autograd.grad(net.energy(s).sum(), s)
    eps = 1e-3
    dyn = Dynamics(free=(1, 2), mode="gradient", eps=eps)
    new = net.relax_step(states, dyn, net.relax_context(states, {0}))
    assert new[0] is states[0]
    for l in (1, 2):
        torch.testing.assert_close(new[l], states[l] - eps * auto[l])


def test_param_grad_diff_matches_autograd(gen):
    net = EnergyNet([5, 7, 6, 3], activation="sigmoid", dtype=torch.float64, generator=gen)
    a, b = _states(net, 4, gen), _states(net, 4, gen)
    b[0] = a[0]  # clamped input shared between the two states
    params = net.trainable_parameters()
    auto = torch.autograd.grad(net.energy(a).mean() - net.energy(b).mean(), params)
    diff = net.energy_param_grad_diff(a, b)
    for p, g in zip(params, auto):
        torch.testing.assert_close(diff[p], g)


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
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        net.feedforward(torch.zeros(3, 4, 3))


def test_activation_boxes():
    hs = get_activation("hard_sigmoid")
    s = torch.tensor([-1.0, 0.5, 2.0])
    assert hs.project(s).tolist() == [0.0, 0.5, 1.0]
    assert get_activation("sigmoid").project(s) is s


def test_prediction_errors_kept_from_the_step_equal_recomputed(gen):
    from eqagent.costs import MSECost
    from eqagent.energy import EnsembleMLPEnergy
    from eqagent.relax import settle

    net = EnsembleMLPEnergy([3, 8, 8, 2], members=2, generator=gen, dtype=torch.float64)
    x = torch.rand(2, 5, 3, generator=gen, dtype=torch.float64)
    y = torch.rand(2, 5, 2, generator=gen, dtype=torch.float64)
    out = settle(net, net.feedforward(x), beta=0.3, cost=MSECost(), target=y, steps=2).states
    kept = net.errors(out)
    net._last_errors = None
    fresh = net.errors(out)
    for a, b in zip(kept[0][1:] + kept[1][1:], fresh[0][1:] + fresh[1][1:]):
        torch.testing.assert_close(
            a if a is not None else torch.ones(()), b if b is not None else torch.ones(())
        )
    with torch.no_grad():
        net.weights[1].add_(0.1)  # the kept errors are stale once a parameter changes
    moved = net.errors(out)
    assert not torch.allclose(moved[0][2], kept[0][2])
