import numpy as np
import pytest
import torch
from eqagent.apps.dream import DreamRunConfig, dream_grid, run_dream, train_judge
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from eqagent.dreaming import CodeBank, DreamAutoencoder, DreamerConfig, DreamerNet
from eqagent.ep import ep_gradients
from tests.conftest import synthetic_digits

SMALL = dict(hidden=(32,), free_steps=10, nudged_steps=5, dream_steps=15, label_copies=3)


def _data(n, seed=0):
    images, labels = synthetic_digits(n, num_classes=4, side=8, seed=seed)
    return torch.from_numpy(images.reshape(n, -1) / 255.0).float(), torch.from_numpy(labels)


def test_mirror_shares_weights_and_carries_the_dream_gradient():
    m = DreamerNet(64, 4, DreamerConfig(**SMALL))
    rev = m._rev[0]
    assert rev.sizes == [12, 32, 64]
    with torch.no_grad():
        m.net.weights[0].add_(1.0)  # an in-place update of the classifier is seen by the mirror
    torch.testing.assert_close(rev.weights[1], m.net.weights[0].T)
    x, y = _data(16)
    grads, losses = m.gradients(x, y)
    gen = ep_gradients(rev, m.cost, m._onehot(y), x, m.ep)
    cls = ep_gradients(m.net, m.cost, x, m._onehot(y), m.ep)
    torch.testing.assert_close(
        grads[m.net.weights[0]], cls.grads[m.net.weights[0]] + gen.grads[rev.weights[1]].T
    )
    torch.testing.assert_close(grads[m.net.biases[0]], gen.grads[rev.biases[2]])
    assert set(losses) == {"classify", "dream"}


def test_dreams_of_a_trained_net_are_recognised_by_an_independent_judge():
    torch.manual_seed(0)
    x, y = _data(800)
    m = DreamerNet(64, 4, DreamerConfig(**SMALL))
    opt = torch.optim.Adam(m.net.trainable_parameters(), lr=3e-3)
    for _ in range(3):
        for i in range(0, len(x), 32):
            m.train_batch(x[i : i + 32], y[i : i + 32], opt)
    xt, yt = _data(200, seed=1)
    assert (m.predict(xt) == yt).float().mean() > 0.9
    judge = train_judge(x, y, 4, epochs=3, seed=0)
    labels = torch.arange(4).repeat_interleave(5)
    dreams = m.dream(labels, noise=0.2, generator=torch.Generator().manual_seed(0))
    assert dreams.shape == (20, 64) and 0 <= dreams.min() and dreams.max() <= 1
    assert (judge(dreams).argmax(-1) == labels).float().mean() >= 0.9
    untrained = DreamerNet(64, 4, DreamerConfig(**SMALL)).dream(labels)
    assert (judge(untrained).argmax(-1) == labels).float().mean() < 0.9  # the test can fail


def test_dream_grid_layout():
    imgs = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(6, 4)  # 2 labels × 3 dreams of 2×2
    g = dream_grid(imgs, 2, 2)
    assert g.shape == (4, 6)
    torch.testing.assert_close(g[:2, 2:4], imgs[1].reshape(2, 2))  # label 0, dream 1


def test_run_dream_end_to_end(tmp_path):
    tr = synthetic_digits(300, num_classes=10, side=10, seed=0)
    te = synthetic_digits(100, num_classes=10, side=10, seed=1)
    cfg = DreamRunConfig(per_class=2, hidden=32, label_copies=2, judge_epochs=1, out=str(tmp_path / "d.png"),
                         tensorboard_log=str(tmp_path / "runs"))  # fmt: skip
    out = run_dream(cfg, data=(*tr, *te))
    assert (tmp_path / "d.png").stat().st_size > 100 and 0 <= out["dream_accuracy"] <= 1
    acc = EventAccumulator(out["run_dir"])
    acc.Reload()
    assert "dream/grid" in acc.Tags()["images"] and "dream/accuracy" in acc.Tags()["scalars"]


def test_code_bank_samples_follow_each_class_gaussian():
    gen = torch.Generator().manual_seed(0)
    a = 0.3 + 0.05 * torch.randn(400, 6, generator=gen)
    b = 0.7 + 0.1 * torch.randn(400, 6, generator=gen)
    codes, labels = torch.cat([a, b]).clamp(0, 1), torch.tensor([0] * 400 + [3] * 400)
    bank = CodeBank(rank=6)
    bank.fit(codes, labels)
    assert bank.classes == [0, 3]
    s = bank.sample(torch.tensor([3] * 2000 + [0] * 2000), generator=gen)
    assert s.shape == (4000, 6) and s.min() >= 0 and s.max() <= 1
    assert torch.allclose(s[:2000].mean(0), codes[400:].mean(0), atol=0.02)
    assert torch.allclose(s[2000:].std(0), codes[:400].std(0), rtol=0.15)
    mean_only = CodeBank(rank=0)
    mean_only.fit(codes, labels)
    assert torch.allclose(mean_only.sample(torch.tensor([0, 0])), codes[:400].mean(0).expand(2, 6))
    with pytest.raises(ValueError, match="no codes fitted for classes \\[1\\]"):
        bank.sample(torch.tensor([1]))
    with pytest.raises(ValueError, match="NaN"):
        bank.fit(torch.full((2, 6), float("nan")), torch.tensor([0, 0]))


def test_code_bank_mixture_keeps_each_mode_of_a_class():
    gen = torch.Generator().manual_seed(0)
    lo = 0.2 + 0.02 * torch.randn(300, 5, generator=gen)
    hi = 0.8 + 0.02 * torch.randn(100, 5, generator=gen)
    codes, labels = torch.cat([lo, hi]).clamp(0, 1), torch.zeros(400, dtype=torch.long)
    mix = CodeBank(rank=2, components=2, seed=0)
    mix.fit(codes, labels)
    s = mix.sample(torch.zeros(4000, dtype=torch.long), generator=gen)  # (4000, 5)
    near_lo = ((s - 0.2).abs() < 0.1).all(1).float().mean()
    near_hi = ((s - 0.8).abs() < 0.1).all(1).float().mean()
    assert abs(near_lo - 0.75) < 0.03 and abs(near_hi - 0.25) < 0.03  # both modes, in their proportions
    one = CodeBank(rank=2, components=1)
    one.fit(codes, labels)
    s1 = one.sample(torch.zeros(4000, dtype=torch.long), generator=gen)
    assert ((s1 - 0.2).abs() < 0.1).all(1).float().mean() < 0.5  # one Gaussian smears the modes together
    few = CodeBank(rank=3, components=10)
    few.fit(codes[:3], labels[:3])  # fewer codes than clusters: one cluster per code
    assert few.sample(torch.zeros(7, dtype=torch.long), generator=gen).shape == (7, 5)
    with pytest.raises(ValueError, match="components"):
        CodeBank(components=0)


def test_reconstruction_gradient_is_the_decoders_autograd_gradient():
    cfg = DreamerConfig(hidden=(16,), dream_weight=0.0, beta=0.01, free_steps=30, nudged_steps=30, seed=0)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(8, 12, generator=gen)
    labels = torch.arange(8) % 3
    plain = DreamerNet(12, 3, cfg)
    both = DreamerNet(12, 3, DreamerConfig(**{**cfg.__dict__, "recon_weight": 1.0}))
    both.load_state_dict(plain.state_dict())
    g_plain, _ = plain.gradients(x, labels)
    g_both, losses = both.gradients(x, labels)
    w, b = both.net.weights[0], both.net.biases[0]
    rec_w = g_both[w] - g_plain.get(plain.net.weights[0], 0)
    rec_b = g_both[b] - g_plain.get(plain.net.biases[0], 0)
    # autograd: the decoder's output is clip(W h + b) at the clamped perception code h
    h = both.codes(x)
    wt, bt = w.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    out = (h @ wt.T + bt).clamp(0, 1)
    both.cost.value(out, x).mean().backward()
    assert losses["recon"] > 0
    for ep, ag in ((rec_w, wt.grad), (rec_b, bt.grad)):
        cos = torch.nn.functional.cosine_similarity(ep.flatten(), ag.flatten(), dim=0)
        assert cos > 0.999 and torch.allclose(ep, ag, atol=1e-3, rtol=0.02)


def test_decode_reconstructs_images_after_training_the_reconstruction():
    images, labels = synthetic_digits(300, num_classes=4, side=8, seed=0)
    x = torch.from_numpy(images.reshape(300, -1).astype(np.float32) / 255.0)
    y = torch.from_numpy(labels)
    net = DreamerNet(
        64, 4, DreamerConfig(hidden=(32,), recon_weight=1.0, free_steps=10, nudged_steps=4, seed=0)
    )
    before = float(((net.decode(net.codes(x)) - x) ** 2).mean())
    opt = torch.optim.Adam(net.net.trainable_parameters(), lr=3e-3)
    for _ in range(3):
        for i in range(0, 300, 20):
            net.train_batch(x[i : i + 20], y[i : i + 20], opt)
    after = float(((net.decode(net.codes(x)) - x) ** 2).mean())
    assert after < 0.5 * before
    with pytest.raises(ValueError, match="codes"):
        net.decode(torch.zeros(2, 31))


def test_autoencoder_gradient_is_the_decoders_autograd_gradient():
    ae = DreamAutoencoder(12, 16, beta=0.01, nudged_steps=30, seed=0)
    x = torch.rand(8, 12, generator=torch.Generator().manual_seed(1))
    grads, loss = ae.gradients(x)
    w, b = ae.net.weights[0], ae.net.biases[0]  # (12, 16), (12,)
    h = ae.codes(x)  # (8, 16): the clamped code, Π(xW + b_code)
    assert torch.allclose(h, (x @ w.detach() + ae.net.biases[1].detach()).clamp(0, 1))
    wt, bt = w.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    ae.cost.value((h @ wt.T + bt).clamp(0, 1), x).mean().backward()
    assert loss > 0 and set(grads) == {w, b}
    for ep, ag in ((grads[w], wt.grad), (grads[b], bt.grad)):
        cos = torch.nn.functional.cosine_similarity(ep.flatten(), ag.flatten(), dim=0)
        assert cos > 0.999 and torch.allclose(ep, ag, atol=1e-3, rtol=0.02)


def test_autoencoder_learns_to_reconstruct_and_rejects_bad_input():
    x, _ = _data(300)
    ae = DreamAutoencoder(64, 48, seed=0)
    before = float(((ae.decode(ae.codes(x)) - x) ** 2).mean())
    opt = torch.optim.Adam(ae.net.trainable_parameters(), lr=3e-3)
    for _ in range(3):
        for i in range(0, 300, 20):
            ae.train_batch(x[i : i + 20], opt)
    after = float(((ae.decode(ae.codes(x)) - x) ** 2).mean())
    assert after < 0.3 * before
    with pytest.raises(ValueError, match="images must be"):
        ae.codes(torch.zeros(2, 63))
    with pytest.raises(ValueError, match="NaN"):
        ae.train_batch(torch.full((2, 64), float("nan")), opt)
    with pytest.raises(ValueError, match="codes"):
        ae.decode(torch.zeros(2, 47))
    with pytest.raises(ValueError, match="hidden"):
        DreamAutoencoder(64, 0)
