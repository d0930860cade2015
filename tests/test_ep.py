import pytest
import torch
from eqagent.apps.gradcheck import GradCheckConfig, make_random_problem
from eqagent.apps.mnist import make_optimizer

from eqagent.classifier import EPClassifier
from eqagent.costs import CrossEntropyCost, MSECost
from eqagent.ep import EPConfig, ep_gradients, gradient_check, write_grads
from eqagent.relax import RelaxationDiverged

TINY = GradCheckConfig(sizes=(6, 8, 8, 4), batch=6, init_gain=0.4)


@pytest.mark.parametrize("cost", ["mse", "cross_entropy"])
def test_gradient_check_tiny_net(cost):
    cfg = GradCheckConfig(**{**TINY.__dict__, "cost": cost})
    net, c, x, t = make_random_problem(cfg, "sigmoid")
    res = gradient_check(net, c, x, t, beta=0.01, symmetric=True, mode="gradient", steps=20000)
    assert res.cosine_min >= 0.999
    assert res.rel_err_max <= 0.02


def test_gradient_check_hard_sigmoid_converges_as_beta_shrinks():
    net, c, x, t = make_random_problem(TINY, "hard_sigmoid")
    res = gradient_check(net, c, x, t, beta=1e-4, symmetric=True)
    assert res.cosine_min >= 0.999 and res.rel_err_max <= 0.02


def test_symmetric_nudging_is_less_biased_than_one_sided():
    net, c, x, t = make_random_problem(TINY, "sigmoid")
    kw = dict(mode="gradient", steps=20000)
    sym = gradient_check(net, c, x, t, beta=0.3, symmetric=True, **kw)
    one = gradient_check(net, c, x, t, beta=0.3, symmetric=False, **kw)
    assert sym.rel_err_max < 0.5 * one.rel_err_max


def test_train_twice_with_same_seed_gives_identical_weights():
    def train(seed):
        g = torch.Generator().manual_seed(seed)
        clf = EPClassifier(
            [10, 12, 3], 3, "cross_entropy", EPConfig(free_steps=5, nudged_steps=3), generator=g
        )
        opt = make_optimizer("adam", clf.parameters(), 1e-2)
        data = torch.Generator().manual_seed(123)
        for _ in range(5):
            x = torch.rand(8, 10, generator=data)
            clf.train_batch(x, torch.randint(0, 3, (8,), generator=data), opt)
        return [p.detach().clone() for p in clf.parameters()]

    a, b, c = train(0), train(0), train(1)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    assert not all(torch.equal(p, q) for p, q in zip(a, c))


def test_ep_step_writes_grads_and_rejects_bad_input(gen):
    net, c, x, t = make_random_problem(TINY, "hard_sigmoid")
    step = ep_gradients(net, c, x, t, EPConfig(beta=0.1))
    write_grads(step.grads)
    for p in net.trainable_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()
    assert len(step.nudged) == 2 and step.output.shape == (6, 4)
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        ep_gradients(net, c, bad, t)
    with pytest.raises(ValueError, match="shape"):
        ep_gradients(net, c, x, t[:, :3])
    ce = CrossEntropyCost(4, 3)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        ep_gradients(net, ce, x.float(), torch.full((6,), 5))


def test_ep_config_validation():
    with pytest.raises(ValueError, match="beta must be > 0"):
        EPConfig(beta=0.0)
    with pytest.raises(ValueError, match="finite"):
        EPConfig(beta=float("inf"))
    with pytest.raises(ValueError, match="tol"):
        EPConfig(tol=-1.0)


def test_diverging_phase_leaves_weights_untouched(gen):
    from eqagent.energy import EnergyNet

    net = EnergyNet([3, 6, 2], activation="identity", init_gain=8.0, generator=gen)
    before = [p.detach().clone() for p in net.parameters()]
    with pytest.raises(RelaxationDiverged):
        ep_gradients(
            net,
            MSECost(),
            torch.rand(4, 3),
            torch.rand(4, 2),
            EPConfig(mode="gradient", eps=0.9, free_steps=300),
        )
    assert all(torch.equal(p, q) for p, q in zip(before, net.parameters()))
    assert all(p.grad is None for p in net.parameters())
