import copy

import pytest
import torch
from torch import nn

from eqagent.energy import SequentialEnergy
from eqagent.optim import EPOptimizer, Muon, newton_schulz, recommended


def _model(seed=0, act=nn.ReLU):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 16), act(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 4))


def _batch(seed=1, n=32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 4, generator=g), torch.randint(0, 4, (n,), generator=g)


def _after_steps(steps=3, seed=0, **kw):
    model = _model(seed)
    opt = EPOptimizer(model.parameters(), model=model, **{"lr": 1e-2, **kw})
    x, y = _batch()
    for _ in range(steps):
        opt.step(x=x, target=y)
    return model, opt


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("act", [nn.ReLU, nn.Tanh, nn.Sigmoid, nn.Hardtanh, nn.Identity])
def test_ep_grad_matches_autograd_for_each_activation(act):
    model = _model(act=act)
    x, y = _batch()
    ref = copy.deepcopy(model)
    nn.functional.cross_entropy(ref(x), y).backward()
    opt = EPOptimizer(model.parameters(), model=model, beta=0.01, settle_steps=5, lr=1e-9)
    opt.step(x=x, target=y)
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.cosine_similarity(p.grad.flatten(), q.grad.flatten(), dim=0) >= 0.99


def test_free_equilibrium_is_the_forward_pass():
    model = _model()
    x, _ = _batch()
    energy = SequentialEnergy(model)
    states = energy.feedforward(x)
    torch.testing.assert_close(states[-1], model(x).detach())
    assert float(energy.energy(states).detach().abs().max()) == 0.0


def test_training_reduces_the_loss_and_inference_is_model_forward():
    model, opt = _after_steps(steps=0)
    x, y = _batch()
    first = opt.step(x=x, target=y)
    for _ in range(60):
        last = opt.step(x=x, target=y)
    assert last < 0.5 * first
    assert float(nn.functional.cross_entropy(model(x), y)) < 0.5 * first


def test_accepts_flat_and_image_shaped_inputs():
    model = _model()
    opt = EPOptimizer(model.parameters(), model=model)
    x, y = _batch()
    opt.step(x=x, target=y)
    opt.step(x=x.reshape(32, 12), target=y)


@pytest.mark.parametrize(
    "option,a,b",
    [
        ("lr", 1e-2, 1e-1),
        ("beta", 0.05, 0.8),
        ("settle_steps", 1, 4),
        ("loss", "cross_entropy", "mse"),
        ("symmetric", True, False),
        ("update", "sgd", "adam"),
        ("update", "adam", "muon"),
        ("momentum", 0.0, 0.9),
        ("weight_decay", 0.0, 0.1),
        ("mode", "fixed_point", "gradient"),
        ("spectral_norm", None, 0.5),
        ("betas", (0.9, 0.999), (0.5, 0.9)),
    ],
)
def test_every_option_has_an_effect(option, a, b):
    base = {"beta": 0.5, "settle_steps": 3, "update": "sgd" if option == "momentum" else "adam"}
    if option == "update":
        base.pop("update")
    ma, _ = _after_steps(**{**base, option: a})
    mb, _ = _after_steps(**{**base, option: b})
    assert not torch.allclose(_params(ma), _params(mb))


def test_spectral_norm_bound_holds():
    model, _ = _after_steps(spectral_norm=0.5, lr=0.1)
    for p in model.parameters():
        if p.dim() == 2:
            assert torch.linalg.matrix_norm(p.detach(), ord=2) <= 0.5 + 1e-5


def test_newton_schulz_orthogonalises():
    g = torch.randn(16, 8)
    o = newton_schulz(g, steps=10)
    s = torch.linalg.svdvals(o)
    assert s.min() > 0.5 and s.max() < 1.3
    with pytest.raises(ValueError, match="2-D"):
        newton_schulz(torch.randn(3))


def test_muon_standalone_steps():
    w = nn.Parameter(torch.randn(6, 4))
    b = nn.Parameter(torch.zeros(6))
    opt = Muon([w, b], lr=0.1)
    w.grad, b.grad = torch.ones_like(w), torch.ones_like(b)
    before = w.detach().clone()
    opt.step()
    assert not torch.equal(before, w) and float(b.abs().sum()) > 0


def test_recommended_preset_and_scheduler():
    model = _model()
    opt = recommended(model, lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    x, y = _batch()
    opt.step(x=x, target=y)
    sched.step()
    assert opt.inner.param_groups[0]["lr"] == pytest.approx(5e-3)
    state = opt.state_dict()
    opt.load_state_dict(state)


def test_bad_arguments_raise_clear_errors():
    model = _model()
    params = model.parameters
    with pytest.raises(ValueError, match="beta must be > 0"):
        EPOptimizer(params(), model=model, beta=0)
    with pytest.raises(ValueError, match="unknown loss"):
        EPOptimizer(params(), model=model, loss="hinge")
    with pytest.raises(ValueError, match="unknown update"):
        EPOptimizer(params(), model=model, update="lion")
    with pytest.raises(ValueError, match="spectral_norm"):
        EPOptimizer(params(), model=model, spectral_norm=-1.0)
    with pytest.raises(ValueError, match="belong to model"):
        EPOptimizer([nn.Parameter(torch.zeros(2))], model=model)
    with pytest.raises(ValueError, match="Dropout"):
        bad = nn.Sequential(nn.Linear(3, 4), nn.Dropout(), nn.Linear(4, 2))
        EPOptimizer(bad.parameters(), model=bad)
    with pytest.raises(ValueError, match="Conv2d"):
        bad = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 2))
        EPOptimizer(bad.parameters(), model=bad)
    opt = EPOptimizer(params(), model=model)
    x, y = _batch()
    with pytest.raises(ValueError, match=r"\(32,\)"):
        opt.step(x=x, target=y[:5])
    with pytest.raises(ValueError, match="must be"):
        opt.step(x=torch.rand(32, 5), target=y)
    mse = EPOptimizer(params(), model=model, loss="mse")
    with pytest.raises(ValueError, match="shape"):
        mse.step(x=x, target=torch.rand(32, 3))
    with pytest.raises(ValueError, match="needs x= and target="):
        opt.step(x=x)
    with pytest.raises(TypeError, match="closure"):
        opt.step(lambda: 0.0)


def test_only_given_parameters_are_updated():
    model = _model()
    head = model[-1]
    frozen = [p.detach().clone() for p in model[1].parameters()]
    opt = EPOptimizer(head.parameters(), model=model, lr=0.1)
    x, y = _batch()
    opt.step(x=x, target=y)
    assert all(torch.equal(a, b) for a, b in zip(frozen, model[1].parameters()))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_tensors():
    model = _model().cuda()
    opt = recommended(model)
    x, y = _batch()
    opt.step(x=x.cuda(), target=y.cuda())


def test_fused_adam_writes_torch_adams_weights():
    """FusedAdam (the world model's and the value's optimizer) is torch.optim.Adam's arithmetic, bit for bit,
    with a learning-rate scale per step."""
    from eqagent.adam import FusedAdam

    gen = torch.Generator().manual_seed(0)
    shapes = [(2, 3, 4), (2, 4), (2, 4, 1)]
    a = [nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
    b = [nn.Parameter(p.detach().clone()) for p in a]
    ref = torch.optim.Adam(a, lr=1e-2, fused=True)
    ours = FusedAdam(b, lr=1e-2)
    for step in range(5):
        grads = [torch.randn(s, generator=gen) for s in shapes]
        scale = 0.5 + step / 4
        for group in ref.param_groups:
            group["lr"] = 1e-2 * scale
        for p, g in zip(a, grads):
            p.grad = g.clone()
        ref.step()
        ours.step(grads, lr_scale=scale)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    with pytest.raises(ValueError, match="expected 3 gradients"):
        ours.step(grads[:2])
