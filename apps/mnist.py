"""``eqagent mnist``: the MNIST warm-up, Scellier's 784-500-10 energy net trained with EP, side by side with backprop.

``train_mnist(MNISTConfig())`` trains the EP classifier (:class:`eqagent.classifier.EPClassifier`: symmetric
nudging, local updates written into ``.grad``, Adam or SGD), times each epoch, optionally trains the same-size MLP
by backprop on the same batches (``compare_bp``), and returns the summary figures (``test_error``,
``seconds_per_epoch``, ``bp_seconds_per_epoch`` ...).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from eqagent.apps.logging import run_logger
from torch import nn

from eqagent.classifier import EPClassifier
from eqagent.data import load_mnist_splits
from eqagent.ep import EPConfig

__all__ = ["MNISTConfig", "make_optimizer", "run_mnist", "train_mnist"]


@dataclass
class MNISTConfig:
    """Settings of ``eqagent mnist``.

    Attributes:
        hidden: Hidden layer sizes (Scellier's net: one layer of 500).
        epochs: Training epochs.
        batch_size: Mini-batch size.
        lr: Learning rate.
        lr_decay: Multiplicative learning-rate decay per epoch (cosine-free, simple).
        optimizer: ``adam`` or ``sgd``.
        beta: Nudging strength.
        symmetric: Symmetric ±β nudging.
        free_steps: Free-phase relaxation steps (warm-started by a feed-forward sweep).
        nudged_steps: Steps of each nudged phase.
        cost: ``cross_entropy`` (784-500 energy net, 500→10 readout; Laborieux et al. 2021) or ``mse``
            (Scellier's 10-unit output layer in the energy vs one-hot; use beta=1 as Scellier did: an output
            unit whose drive is below −β stays at 0 in both nudged phases and stops learning).
        compare_bp: Also train the same-size MLP by backprop (Adam) and time it.
        seed: Random seed.
        data_dir: Directory of the MNIST IDX files (empty: the default search, see eqagent.data).
        download: Download missing files from the public mirrors.
        train_limit: Use only the first N training images (0: all).
        test_limit: Use only the first N test images (0: all).
        threads: torch CPU threads (0: leave torch's default).
        tensorboard_log: Root directory of TensorBoard runs (empty: no logs).
        device: torch device.
        verbose: Print one line per epoch.
        show_relaxation: After training, render the relaxation (free, then nudged) of this test image index as
            ``{relaxation_out}.gif``/``.png`` and TensorBoard images (-1: off).
        relaxation_out: Path prefix of the relaxation GIF and PNG strip.
    """

    hidden: tuple[int, ...] = (500,)
    epochs: int = 25
    batch_size: int = 32
    lr: float = 1e-3
    lr_decay: float = 0.9
    optimizer: str = "adam"
    beta: float = 0.5
    symmetric: bool = True
    free_steps: int = 15
    nudged_steps: int = 8
    cost: str = "cross_entropy"
    compare_bp: bool = True
    seed: int = 0
    data_dir: str = ""
    download: bool = False
    train_limit: int = 0
    test_limit: int = 0
    threads: int = 0
    tensorboard_log: str = "runs"
    device: str = "cpu"
    verbose: bool = True
    show_relaxation: int = -1
    relaxation_out: str = "relaxation"

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.cost not in ("mse", "cross_entropy"):
            raise ValueError(f"cost must be 'mse' or 'cross_entropy', got {self.cost!r}")
        if any(h < 1 for h in self.hidden):
            raise ValueError(f"hidden sizes must be >= 1, got {self.hidden}")


def make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    """``adam`` or ``sgd`` (momentum 0.9) over ``params``."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    raise ValueError(f"unknown optimizer {name!r}")


def _to_tensors(
    images: np.ndarray, labels: np.ndarray, limit: int, device
) -> tuple[torch.Tensor, torch.Tensor]:
    if limit:
        images, labels = images[:limit], labels[:limit]
    x = torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255.0).to(device)
    return x, torch.from_numpy(labels).long().to(device)


def _bp_mlp(sizes: list[int], generator: torch.Generator) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = nn.Linear(a, b)
        bound = (6.0 / (a + b)) ** 0.5
        with torch.no_grad():
            lin.weight.uniform_(-bound, bound, generator=generator)
            lin.bias.zero_()
        layers.append(lin)
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def train_mnist(
    cfg: MNISTConfig,
    data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> tuple[dict, EPClassifier]:
    """Trains the EP classifier (and the backprop baseline); returns the summary figures and the classifier.

    Args:
        cfg: Settings.
        data: Optional ``(train_images, train_labels, test_images, test_labels)`` (uint8 images ``(N, 28, 28)`` or
            ``(N, D)``); loaded from ``cfg.data_dir`` when ``None``.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    tr_x, tr_y, te_x, te_y = (
        data if data is not None else load_mnist_splits(cfg.data_dir or None, cfg.download)
    )
    device = torch.device(cfg.device)
    xtr, ytr = _to_tensors(tr_x, tr_y, cfg.train_limit, device)
    xte, yte = _to_tensors(te_x, te_y, cfg.test_limit, device)
    num_classes = int(max(int(ytr.max()), int(yte.max())) + 1)
    num_classes = max(num_classes, 10) if data is None else num_classes
    in_dim = xtr.shape[1]
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    ep = EPConfig(
        beta=cfg.beta, symmetric=cfg.symmetric, free_steps=cfg.free_steps, nudged_steps=cfg.nudged_steps
    )
    out_dim = num_classes if cfg.cost == "mse" else cfg.hidden[-1]
    sizes = [in_dim, *cfg.hidden] + ([out_dim] if cfg.cost == "mse" else [])
    clf = EPClassifier(sizes, num_classes, cfg.cost, ep, generator=gen, device=device)
    opt = make_optimizer(cfg.optimizer, clf.parameters(), cfg.lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, cfg.lr_decay)

    bp = bp_opt = bp_sched = None
    if cfg.compare_bp:
        bp = _bp_mlp([in_dim, *cfg.hidden, num_classes], gen).to(device)
        bp_opt = torch.optim.Adam(bp.parameters(), lr=cfg.lr)
        bp_sched = torch.optim.lr_scheduler.ExponentialLR(bp_opt, cfg.lr_decay)

    logger = None
    if cfg.tensorboard_log:
        logger = run_logger(cfg.tensorboard_log, "EPClassifier")
    ep_times, bp_times, history = [], [], []
    n = len(xtr)
    for epoch in range(1, cfg.epochs + 1):
        perm = torch.randperm(n, generator=gen).to(device)
        t0 = time.perf_counter()
        losses = []
        for i in range(0, n, cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            losses.append(clf.train_batch(xtr[idx], ytr[idx], opt))
        ep_times.append(time.perf_counter() - t0)
        sched.step()
        test_err = float((clf.predict(xte) != yte).float().mean())
        rec = {"epoch": epoch, "train_loss": float(np.mean(losses)), "test_error": test_err}
        if bp is not None:
            t0 = time.perf_counter()
            for i in range(0, n, cfg.batch_size):
                idx = perm[i : i + cfg.batch_size]
                bp_opt.zero_grad(set_to_none=True)
                nn.functional.cross_entropy(bp(xtr[idx]), ytr[idx]).backward()
                bp_opt.step()
            bp_times.append(time.perf_counter() - t0)
            bp_sched.step()
            with torch.no_grad():
                rec["bp_test_error"] = float((bp(xte).argmax(-1) != yte).float().mean())
        history.append(rec)
        if logger is not None:
            logger.record("train/loss", rec["train_loss"])
            logger.record("eval/test_error", test_err)
            logger.record("time/seconds_per_epoch", ep_times[-1])
            if bp is not None:
                logger.record("eval/bp_test_error", rec["bp_test_error"])
                logger.record("time/bp_seconds_per_epoch", bp_times[-1])
            logger.dump(epoch)
        if cfg.verbose:
            extra = (
                f" bp_test_error={rec['bp_test_error']:.4f} bp_s={bp_times[-1]:.1f}" if bp is not None else ""
            )
            print(
                f"epoch {epoch}/{cfg.epochs} loss={rec['train_loss']:.4f} test_error={test_err:.4f} "
                f"s={ep_times[-1]:.1f}{extra}",
                flush=True,
            )
    relaxation = None
    if cfg.show_relaxation >= 0:
        from eqagent.apps.viewer import render_relaxation, trace_relaxation

        i = cfg.show_relaxation
        if i >= len(xte):
            raise ValueError(f"show_relaxation index {i} is beyond the {len(xte)} test images")
        frames = trace_relaxation(clf.net, clf.cost, xte[i : i + 1], clf.target(yte[i : i + 1]), clf.ep)
        relaxation = {
            "index": i,
            "label": int(yte[i]),
            **render_relaxation(frames, cfg.relaxation_out, logger),
        }
    if logger is not None:
        logger.close()
    summary = {
        "test_error": history[-1]["test_error"],
        "test_accuracy": 1.0 - history[-1]["test_error"],
        "epochs": cfg.epochs,
        "seconds_per_epoch": float(np.mean(ep_times)),
        "train_size": n,
        "test_size": len(xte),
        "history": history,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
    }
    if bp is not None:
        summary["bp_test_error"] = history[-1]["bp_test_error"]
        summary["bp_seconds_per_epoch"] = float(np.mean(bp_times))
        summary["ep_bp_time_ratio"] = summary["seconds_per_epoch"] / summary["bp_seconds_per_epoch"]
    if logger is not None:
        summary["run_dir"] = logger.get_dir()
    if relaxation is not None:
        summary["relaxation"] = relaxation
    return summary, clf


def run_mnist(cfg: MNISTConfig) -> dict:
    """``eqagent mnist``: :func:`train_mnist`'s summary figures."""
    return train_mnist(cfg)[0]
