import numpy as np
import pytest
import torch
from eqagent.agents.mnist_agent import OnlineConfig, OnlineEPClassifier, ReplayBenchConfig, run_replay_bench

from tests.conftest import synthetic_digits

SMALL = dict(hidden=32, label_copies=2, batch_size=16, train_every=2, dreams_per_class=20, replay_per_class=4,
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
