"""``eqagent bench optim``: the EP optimizer on MNIST vs Adam with backprop, same model, data order and init."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from eqagent.data import load_mnist_splits
from eqagent.optim import EPOptimizer

__all__ = ["OptimBenchConfig", "run_optim_bench"]


@dataclass
class OptimBenchConfig:
    """Settings of ``eqagent bench optim``.

    Attributes:
        epochs: Training epochs of each method.
        batch_size: Mini-batch size.
        lr: Learning rate of both (Adam).
        beta: EP nudging strength.
        settle_steps: EP nudged relaxation steps.
        update: EP update rule (sgd, adam, muon).
        check_beta: β of the gradient check against autograd.
        seed: Random seed.
        data_dir: MNIST directory (empty: default search).
        train_limit: First N training images (0: all).
        test_limit: First N test images (0: all).
        threads: torch CPU threads (0: default).
        normalize: Standardise pixels with the MNIST mean/std (0.1307, 0.3081) for both methods.
    """

    epochs: int = 3
    batch_size: int = 64
    lr: float = 1e-3
    beta: float = 0.01
    settle_steps: int = 3
    update: str = "adam"
    check_beta: float = 0.01
    seed: int = 0
    data_dir: str = ""
    train_limit: int = 0
    test_limit: int = 0
    threads: int = 0
    normalize: bool = True


def make_mlp(seed: int) -> nn.Sequential:
    """The issue's model: Flatten, Linear(784, 256), ReLU, Linear(256, 10)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(-1) == y).float().mean())


def run_optim_bench(cfg: OptimBenchConfig, data=None) -> dict:
    """Runs the gradient check and the two trainings; returns the figures."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    tr_x, tr_y, te_x, te_y = data if data is not None else load_mnist_splits(cfg.data_dir or None)
    lim = cfg.train_limit or len(tr_x)
    xtr = torch.from_numpy(tr_x[:lim].astype(np.float32) / 255.0)  # (N, 28, 28): the model flattens
    ytr = torch.from_numpy(tr_y[:lim]).long()
    tl = cfg.test_limit or len(te_x)
    xte = torch.from_numpy(te_x[:tl].astype(np.float32) / 255.0)
    yte = torch.from_numpy(te_y[:tl]).long()
    if cfg.normalize:
        xtr, xte = (xtr - 0.1307) / 0.3081, (xte - 0.1307) / 0.3081

    # gradient check on one batch at small beta
    model = make_mlp(cfg.seed)
    opt = EPOptimizer(
        model.parameters(), model=model, lr=1e-3, beta=cfg.check_beta, settle_steps=cfg.settle_steps
    )
    xb, yb = xtr[: cfg.batch_size], ytr[: cfg.batch_size]
    ref = copy.deepcopy(model)
    nn.functional.cross_entropy(ref(xb), yb).backward()
    opt.step(x=xb, target=yb)
    cos = {}
    for (n, p), q in zip(model.named_parameters(), ref.parameters()):
        cos[n] = float(torch.cosine_similarity(p.grad.flatten(), q.grad.flatten(), dim=0))

    ep_model, bp_model = make_mlp(cfg.seed), make_mlp(cfg.seed)
    ep_opt = EPOptimizer(
        ep_model.parameters(),
        model=ep_model,
        lr=cfg.lr,
        beta=cfg.beta,
        settle_steps=cfg.settle_steps,
        update=cfg.update,
    )
    bp_opt = torch.optim.Adam(bp_model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    ep_t, bp_t, hist = [], [], []
    for epoch in range(1, cfg.epochs + 1):
        perm = torch.randperm(len(xtr), generator=gen)
        t0 = time.perf_counter()
        for i in range(0, len(xtr), cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            ep_opt.step(x=xtr[idx], target=ytr[idx])
        ep_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for i in range(0, len(xtr), cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            bp_opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(bp_model(xtr[idx]), ytr[idx]).backward()
            bp_opt.step()
        bp_t.append(time.perf_counter() - t0)
        hist.append(
            {
                "epoch": epoch,
                "ep_test_accuracy": _accuracy(ep_model, xte, yte),
                "adam_test_accuracy": _accuracy(bp_model, xte, yte),
            }
        )
    return {
        "grad_cosine": cos,
        "grad_cosine_min": min(cos.values()),
        "ep_test_accuracy": hist[-1]["ep_test_accuracy"],
        "adam_test_accuracy": hist[-1]["adam_test_accuracy"],
        "ep_seconds_per_epoch": float(np.mean(ep_t)),
        "adam_seconds_per_epoch": float(np.mean(bp_t)),
        "time_ratio": float(np.mean(ep_t) / np.mean(bp_t)),
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "history": hist,
    }
