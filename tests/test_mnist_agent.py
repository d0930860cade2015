import numpy as np
import pytest
import torch
from eqagent.agents.mnist_agent import (
    OnlineConfig,
    OnlineEPClassifier,
    OnlineGenerativeClassifier,
    ReplayBenchConfig,
    make_online_learner,
    run_replay_bench,
)

from eqagent.dreaming import GenerativeEPClassifier
from tests.conftest import synthetic_digits

SMALL = dict(classifier="discriminative",
             hidden=32, label_copies=2, batch_size=16, train_every=2, dreams_per_class=20, replay_per_class=4,
             free_steps=8, nudged_steps=4, ae_hidden=32, ae_lr=3e-3)  # fmt: skip
NO_GATE = dict(SMALL, gate=False)


def test_online_learner_learns_from_revealed_labels_and_gate_saves_updates():
    images, labels = synthetic_digits(400, num_classes=4, side=8, seed=0)
    x = images.reshape(400, -1).astype(np.float32) / 255.0
    agent = OnlineEPClassifier(64, 4, OnlineConfig(**SMALL))
    hits = []
    for i in range(400):
        hits.append(agent.predict(x[i]) == labels[i])
        info = agent.observe(x[i], int(labels[i]))
        assert set(info) == {"error", "gate", "updated"}
    assert np.mean(hits[:10]) <= 0.5 and np.mean(hits[-100:]) > 0.9
    assert agent.updates < 200  # the gate skipped the unsurprising steps once the labels were predicted well


def _overlapping_digits(n, seed):
    """8×8 images whose classes share bands: 0 = band A, 1 = band B, 2 = A + B, 3 = A + B + C. Learning 2 and 3
    (both containing A and B) with "not 0, not 1" targets erodes what recognised 0 and 1."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=n)
    images = rng.integers(0, 60, size=(n, 8, 8))
    bands = {0: (0,), 1: (1,), 2: (0, 1), 3: (0, 1, 2)}
    for i, c in enumerate(labels):
        for band in bands[int(c)]:
            images[i, 2 * band : 2 * band + 2] += 180
    return images.clip(0, 255).astype(np.uint8), labels.astype(np.int64)


@pytest.mark.parametrize("dreams", ["autoencoder", "codes", "label"])
def test_dream_replay_keeps_old_classes_alive(dreams):
    tr, te = _overlapping_digits(1200, 0), _overlapping_digits(200, 1)
    cfg = ReplayBenchConfig(tasks="01,23", steps_per_task=300)
    out = run_replay_bench(
        cfg, data=(*tr, *te), learner=OnlineConfig(**NO_GATE, dreams=dreams), num_classes=4
    )
    assert out["replay_accuracy"] > out["no_replay_accuracy"] + 0.1  # measured: 1.00 vs 0.845
    assert len(out["replay_tasks"]) == 2 and torch.isfinite(torch.tensor(out["replay_accuracy"]))


def test_online_config_rejects_bad_dream_settings():
    with pytest.raises(ValueError, match="dreams must be"):
        OnlineConfig(dreams="noise")
    with pytest.raises(ValueError, match="recon_weight > 0"):
        OnlineConfig(dreams="codes", recon_weight=0.0)
    with pytest.raises(ValueError, match="dream_weight > 0"):
        OnlineConfig(dreams="label", dream_weight=0.0)
    with pytest.raises(ValueError, match="code_components"):
        OnlineConfig(code_components=0)
    with pytest.raises(ValueError, match="ae_hidden"):
        OnlineConfig(ae_lr=0.0)
    with pytest.raises(ValueError, match="recon_weight must be"):
        OnlineConfig(recon_weight=-1.0)
    assert OnlineConfig(dreams="label").dream_weight == 1.0 and OnlineConfig().dream_weight == 0.0
    assert OnlineConfig(dreams="codes").recon_weight == 2.0 and OnlineConfig().recon_weight == 0.0


@pytest.mark.parametrize("dreams", ["autoencoder", "codes"])
def test_code_dreams_cover_every_old_class_and_are_varied(dreams):
    images, labels = synthetic_digits(600, num_classes=4, side=8, seed=0)
    x = images.reshape(600, -1).astype(np.float32) / 255.0
    agent = OnlineEPClassifier(64, 4, OnlineConfig(**NO_GATE, dreams=dreams))
    for cls in ((0, 1), (2, 3)):
        agent.start_task(replay=True)
        for i in np.flatnonzero(np.isin(labels, cls))[:150]:
            agent.observe(x[i], int(labels[i]))
    agent.start_task(replay=True)
    imgs, lab = agent.dreams
    assert sorted(torch.unique(lab).tolist()) == [0, 1, 2, 3] and imgs.shape == (4 * 20, 64)
    assert agent.bank.classes == [0, 1, 2, 3]
    means = torch.stack(
        [torch.from_numpy(x[labels == c]).mean(0) for c in range(4)]
    )  # (4, 64) real class means
    nearest = torch.cdist(imgs, means).argmin(-1)
    assert float((nearest == lab).float().mean()) > 0.9  # each dream looks like its class...
    for c in range(4):  # ...and they differ (sampled codes, not one image per class)
        assert float(imgs[lab == c].std(0).mean()) > 0.005


def test_generative_classifier_labels_by_lowest_energy_and_classes_do_not_interfere():
    images, labels = synthetic_digits(800, num_classes=4, side=8, seed=0)
    x = torch.from_numpy(images.reshape(800, -1).astype(np.float32) / 255.0)
    y = torch.from_numpy(labels)
    model = GenerativeEPClassifier(64, 4, hidden=8, seed=0)
    opts = [torch.optim.Adam(model.class_parameters(c), lr=3e-3) for c in range(4)]
    before = [p.detach().clone() for p in model.class_parameters(0)]
    for c in (1, 2, 3):  # classes 1-3 learn; class 0's net must not move
        for _ in range(60):
            model.train_class(c, x[:600][y[:600] == c][:32], opts[c])
    assert all(torch.equal(a, b) for a, b in zip(before, model.class_parameters(0), strict=True))
    for _ in range(60):
        model.train_class(0, x[:600][y[:600] == 0][:32], opts[0])
    e = model.energies(x[600:])  # (200, 4)
    assert e.shape == (200, 4) and torch.equal(model.predict(x[600:]), e.argmin(1))
    assert float((model.predict(x[600:]) == y[600:]).float().mean()) > 0.9
    only = model.predict(x[600:], classes=[2, 3])
    assert set(only.tolist()) <= {2, 3}


def test_generative_train_class_scales_the_rate_and_rejects_bad_input():
    model = GenerativeEPClassifier(16, 2, hidden=4, seed=0)
    opt = torch.optim.Adam(model.class_parameters(1), lr=1e-2)
    before = [p.detach().clone() for p in model.class_parameters(1)]
    model.train_class(1, torch.rand(8, 16), opt, lr_scale=0.0)
    assert all(torch.equal(a, b) for a, b in zip(before, model.class_parameters(1), strict=True))
    assert opt.param_groups[0]["lr"] == 1e-2  # restored after the step
    with pytest.raises(ValueError, match="lr_scale"):
        model.train_class(1, torch.rand(8, 16), opt, lr_scale=float("nan"))
    with pytest.raises(ValueError, match="class 2"):
        model.train_class(2, torch.rand(8, 16), opt)
    with pytest.raises(ValueError, match=r"images must be \(B, 16\)"):
        model.energies(torch.rand(8, 15))
    with pytest.raises(ValueError, match="NaN"):
        model.predict(torch.full((2, 16), float("nan")))


def test_generative_learner_does_not_forget_in_the_replay_bench():
    tr, te = _overlapping_digits(1200, 0), _overlapping_digits(200, 1)
    cfg = ReplayBenchConfig(tasks="01,23", steps_per_task=300)
    learner = OnlineConfig(classifier="generative", class_hidden=8, batch_size=16, train_every=2, lr=3e-3)
    out = run_replay_bench(cfg, data=(*tr, *te), learner=learner, num_classes=4)
    assert out["classifier"] == "generative"
    assert out["replay_accuracy"] > 0.9 and out["replay_accuracy"] > out["no_replay_accuracy"] + 0.05
    assert min(out["replay_per_class"]) > 0.8  # the first task's classes survive the second task


def test_generative_learner_predicts_among_seen_classes_and_checks_labels():
    agent = make_online_learner(64, 4, OnlineConfig(class_hidden=8))
    assert isinstance(agent, OnlineGenerativeClassifier)
    images, labels = synthetic_digits(40, num_classes=4, side=8, seed=0)
    x = images.reshape(40, -1).astype(np.float32) / 255.0
    assert agent.predict(x[0]) == 0  # nothing seen yet
    agent.observe(x[0], 2)
    assert agent.predict(x[1]) == 2  # the only class seen
    with pytest.raises(ValueError, match="label 7"):
        agent.observe(x[1], 7)
    with pytest.raises(ValueError, match="classifier must be"):
        OnlineConfig(classifier="bayes")
