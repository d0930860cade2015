import json
from pathlib import Path

import numpy as np
import pytest
from eqagent.apps.cli import main
from eqagent.apps.mnist import MNISTConfig, train_mnist

from eqagent.data import MNIST_FILES, default_mnist_dir, write_idx
from tests.conftest import synthetic_digits


def _data(n_train=512, n_test=128):
    tr = synthetic_digits(n_train, seed=0)
    te = synthetic_digits(n_test, seed=1)
    return tr[0], tr[1], te[0], te[1]


def test_ep_classifier_learns_toy_digits(tmp_path):
    cfg = MNISTConfig(
        hidden=(32,), epochs=3, batch_size=16, lr=3e-3, tensorboard_log=str(tmp_path), verbose=False
    )
    summary, clf = train_mnist(cfg, data=_data())
    assert summary["history"][0]["test_error"] <= 0.2
    assert summary["test_error"] <= 0.05
    assert summary["bp_test_error"] <= 0.05
    assert summary["seconds_per_epoch"] > 0 and summary["bp_seconds_per_epoch"] > 0
    assert list(Path(summary["run_dir"]).glob("events.out.tfevents.*"))
    assert (Path(summary["run_dir"]) / "progress.csv").exists()


def test_mse_cost_also_trains(tmp_path):
    cfg = MNISTConfig(
        hidden=(32,),
        epochs=2,
        batch_size=16,
        lr=1e-3,
        beta=1.0,
        cost="mse",
        compare_bp=False,
        tensorboard_log="",
        verbose=False,
    )
    summary, _ = train_mnist(cfg, data=_data())
    assert summary["test_error"] <= 0.05


def test_config_validation():
    with pytest.raises(ValueError, match="optimizer"):
        MNISTConfig(optimizer="lion")
    with pytest.raises(ValueError, match="lr"):
        MNISTConfig(lr=0)


def test_cli_mnist_json(tmp_path, capsys):
    for split, n in (("train", 256), ("test", 64)):
        images, labels = synthetic_digits(n, side=28, seed=n)
        write_idx(tmp_path / MNIST_FILES[split][0], images)
        write_idx(tmp_path / MNIST_FILES[split][1], labels.astype(np.uint8))
    rc = main(
        [
            "mnist",
            "--json",
            "--data-dir",
            str(tmp_path),
            "--epochs",
            "1",
            "--hidden",
            "16",
            "--tensorboard-log",
            "",
            "--batch-size",
            "16",
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("test_error", "epochs", "seconds_per_epoch", "bp_seconds_per_epoch"):
        assert key in out


def test_cli_reports_missing_data(tmp_path, capsys):
    rc = main(["mnist", "--json", "--data-dir", str(tmp_path / "nothing"), "--epochs", "1"])
    assert rc == 2
    assert "not found" in capsys.readouterr().err


def test_cli_gradcheck_json(capsys):
    rc = main(["gradcheck", "--json", "--sizes", "6", "8", "8", "4", "--batch", "4"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["cosine_min"] >= 0.999 and out["rel_err_max"] <= 0.02
    assert out["one_sided_rel_err_max"] > out["rel_err_max"]


@pytest.mark.slow
@pytest.mark.skipif(not (default_mnist_dir() / MNIST_FILES["test"][0]).exists(), reason="MNIST files absent")
def test_real_mnist_one_epoch_reaches_96_percent():
    summary, _ = train_mnist(MNISTConfig(epochs=1, compare_bp=False, tensorboard_log="", verbose=False))
    assert summary["test_accuracy"] >= 0.96


def test_relaxation_viewer_writes_gif_png_and_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = MNISTConfig(hidden=(16,), epochs=1, batch_size=16, free_steps=4, nudged_steps=3, compare_bp=False,
                      tensorboard_log=str(tmp_path / "runs"), verbose=False, show_relaxation=3,
                      relaxation_out=str(tmp_path / "relax"))  # fmt: skip
    summary, _ = train_mnist(cfg, data=_data(128, 8))
    rel = summary["relaxation"]
    assert rel["frames"] == 1 + 4 + 3 and rel["index"] == 3
    from PIL import Image

    with Image.open(rel["gif"]) as gif:
        assert gif.n_frames == 8
    assert Path(rel["png"]).stat().st_size > 1000
    acc = EventAccumulator(summary["run_dir"], size_guidance={"images": 0})
    acc.Reload()
    assert len(acc.Images("relaxation/step")) == 8


def test_trace_relaxation_free_energy_decreases_and_nudge_lowers_cost():
    import torch
    from eqagent.apps.viewer import trace_relaxation

    from eqagent.classifier import EPClassifier
    from eqagent.ep import EPConfig

    torch.manual_seed(0)
    clf = EPClassifier([64, 32, 4], 4, "mse", EPConfig(beta=1.0, free_steps=10, nudged_steps=5),
                       generator=torch.Generator().manual_seed(0))  # fmt: skip
    x = torch.rand(1, 64)
    frames = trace_relaxation(clf.net, clf.cost, x, clf.target(torch.tensor([2])), clf.ep)
    free = [f["energy"] for f in frames if f["phase"] == "free"]
    assert all(b <= a + 1e-5 for a, b in zip(free[1:], free[2:]))  # block-coordinate descent: monotone
    nudged = [f for f in frames if f["phase"] == "nudged"]
    assert nudged[-1]["cost"] < frames[10]["cost"]  # the nudge pulls the output toward the target
