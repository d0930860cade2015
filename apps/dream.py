"""``eqagent dream``: train the dreaming classifier on MNIST, dream a 10×k grid, score it with a backprop judge."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from eqagent.apps.logging import log_image, run_logger
from torch import nn

from eqagent.data import load_mnist_splits
from eqagent.dreaming import DreamerConfig, DreamerNet

__all__ = ["DreamRunConfig", "dream_grid", "run_dream", "train_judge"]


@dataclass
class DreamRunConfig:
    """Settings of ``eqagent dream``.

    Attributes:
        epochs: Training epochs of the dreamer (EP, both directions).
        per_class: Dreams per label in the grid (k of the 10×k grid).
        noise: Std of the noise on the dreams' starting states (variety).
        batch_size: Minibatch size.
        lr: Adam learning rate.
        label_copies: Units per label (see :class:`DreamerConfig`).
        dream_weight: Weight of the dream-direction gradient.
        hidden: Hidden size of the dreamer.
        judge_epochs: Epochs of the independent backprop judge (MLP 784-256-10).
        train_limit: Use only the first N training images (0: all).
        data_dir: MNIST directory (empty: eqagent's default lookup).
        download: Download missing MNIST files.
        out: Path of the PNG grid.
        tensorboard_log: Root of TensorBoard runs (empty: none).
        threads: torch CPU threads (0: default).
        seed: Seed.
    """

    epochs: int = 1
    per_class: int = 10
    noise: float = 0.3
    batch_size: int = 32
    lr: float = 1e-3
    label_copies: int = 10
    dream_weight: float = 1.0
    hidden: int = 500
    judge_epochs: int = 2
    train_limit: int = 0
    data_dir: str = ""
    download: bool = False
    out: str = "dreams.png"
    tensorboard_log: str = "runs"
    threads: int = 0
    seed: int = 0


def dream_grid(images: torch.Tensor, rows: int, side: int) -> torch.Tensor:
    """Tiles ``(rows·k, side²)`` images into one ``(rows·side, k·side)`` picture (row r = label r)."""
    k = len(images) // rows
    return images.reshape(rows, k, side, side).permute(0, 2, 1, 3).reshape(rows * side, k * side)


def train_judge(x: torch.Tensor, y: torch.Tensor, num_classes: int, epochs: int, seed: int) -> nn.Module:
    """An independent backprop MLP classifier (784-256-10, Adam) that scores the dreams."""
    gen = torch.Generator().manual_seed(seed + 99)
    torch.manual_seed(seed + 99)
    judge = nn.Sequential(nn.Linear(x.shape[1], 256), nn.ReLU(), nn.Linear(256, num_classes))
    opt = torch.optim.Adam(judge.parameters(), lr=1e-3)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), 128):
            idx = perm[i : i + 128]
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(judge(x[idx]), y[idx]).backward()
            opt.step()
    return judge.eval()


def run_dream(cfg: DreamRunConfig, data: tuple | None = None) -> dict:
    """Trains a :class:`DreamerNet` and a backprop judge on MNIST, dreams a 10×k grid, scores it.

    Args:
        cfg: Settings.
        data: Optional ``(train_images, train_labels, test_images, test_labels)`` (uint8, square images) instead
            of the MNIST files (tests).
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    tr_x, tr_y, te_x, te_y = (
        data if data is not None else load_mnist_splits(cfg.data_dir or None, cfg.download)
    )
    if cfg.train_limit:
        tr_x, tr_y = tr_x[: cfg.train_limit], tr_y[: cfg.train_limit]
    x = torch.from_numpy(tr_x.reshape(len(tr_x), -1).astype(np.float32) / 255.0)
    y = torch.from_numpy(tr_y)
    xt = torch.from_numpy(te_x.reshape(len(te_x), -1).astype(np.float32) / 255.0)
    yt = torch.from_numpy(te_y)
    torch.manual_seed(cfg.seed)
    num_classes = 10
    model = DreamerNet(x.shape[1], num_classes, DreamerConfig(hidden=(cfg.hidden,), dream_weight=cfg.dream_weight,
                                                     label_copies=cfg.label_copies, seed=cfg.seed))  # fmt: skip
    opt = torch.optim.Adam(model.net.trainable_parameters(), lr=cfg.lr)
    logger = run_logger(cfg.tensorboard_log, "EPDreamer")
    gen = torch.Generator().manual_seed(cfg.seed)
    step = 0
    for _ in range(cfg.epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            losses = model.train_batch(x[idx], y[idx], opt)
            step += len(idx)
            for k, v in losses.items():
                logger.record_mean(f"train/{k}_cost", v)
            if (i // cfg.batch_size) % 200 == 0:
                logger.dump(step)
    test_acc = float((model.predict(xt) == yt).float().mean())
    judge = train_judge(x, y, num_classes, cfg.judge_epochs, cfg.seed)
    with torch.no_grad():
        judge_acc = float((judge(xt).argmax(-1) == yt).float().mean())
        labels = torch.arange(num_classes).repeat_interleave(cfg.per_class)
        dreams = model.dream(labels, noise=cfg.noise, generator=torch.Generator().manual_seed(cfg.seed + 5))
        dream_pred = judge(dreams).argmax(-1)
    dream_acc = float((dream_pred == labels).float().mean())
    side = math.isqrt(x.shape[1])
    if side * side != x.shape[1]:
        raise ValueError(f"images must be square to tile, got {x.shape[1]} pixels")
    grid = dream_grid(dreams, num_classes, side).clamp(0, 1)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.imsave(out, grid.numpy(), cmap="gray", vmin=0, vmax=1)
    logger.record("dream/accuracy", dream_acc)
    logger.record("eval/test_accuracy", test_acc)
    logger.dump(step)
    log_image(logger, "dream/grid", grid.numpy(), step)
    logger.close()
    per_label = [float((dream_pred[labels == c] == c).float().mean()) for c in range(num_classes)]
    return {"dream_accuracy": dream_acc, "dream_accuracy_per_label": per_label, "judge_test_accuracy": judge_acc,
            "dreamer_test_accuracy": test_acc, "png": str(out), "dreams": len(labels),
            "seconds": time.perf_counter() - t0,
            "run_dir": logger.get_dir()}  # fmt: skip
