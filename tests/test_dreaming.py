import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from eqagent.dreaming import DreamerConfig, DreamerNet, DreamRunConfig, dream_grid, run_dream, train_judge
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
