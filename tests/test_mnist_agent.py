import numpy as np
import torch
from eqagent.agents.mnist_agent import OnlineConfig, OnlineEPClassifier, ReplayBenchConfig, run_replay_bench

from tests.conftest import synthetic_digits

SMALL = dict(hidden=32, label_copies=2, batch_size=16, train_every=2, dreams_per_class=20, replay_per_class=4,
             free_steps=8, nudged_steps=4)  # fmt: skip


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
    """Class c lights bands c and c + 1 (mod 4) of an 8×8 image: classes share features, so they interfere."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=n)
    images = rng.integers(0, 60, size=(n, 8, 8))
    for i, c in enumerate(labels):
        for band in (c, (c + 1) % 4):
            images[i, 2 * band : 2 * band + 2] += 180
    return images.clip(0, 255).astype(np.uint8), labels.astype(np.int64)


def test_dream_replay_keeps_old_classes_alive():
    tr, te = _overlapping_digits(1200, 0), _overlapping_digits(200, 1)
    cfg = ReplayBenchConfig(tasks="01,23", steps_per_task=300)
    out = run_replay_bench(cfg, data=(*tr, *te), learner=OnlineConfig(**SMALL), num_classes=4)
    assert out["replay_accuracy"] > out["no_replay_accuracy"] + 0.2
    assert len(out["replay_tasks"]) == 2 and torch.isfinite(torch.tensor(out["replay_accuracy"]))
