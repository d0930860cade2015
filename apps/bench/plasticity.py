"""``eqagent bench plasticity``: plastic vs non-plastic RNN on pattern completion (N=50, k=3), and memory vs N."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from eqagent.plasticity import PatternTask, PlasticRNN, bit_error, pattern_episode_batch

__all__ = ["PlasticityBenchConfig", "autograd_bytes", "run_plasticity_bench", "train_pattern_net"]


@dataclass
class PlasticityBenchConfig:
    """Settings of ``eqagent bench plasticity``.

    Attributes:
        n: Bits per pattern.
        k: Patterns per episode.
        episodes: Training episodes of each net (batches of ``batch`` episodes).
        batch: Episodes per gradient step.
        lr: Adam learning rate.
        eta: Initial Hebbian rate (learned).
        seeds: Number of seeds (the median is reported).
        eval_episodes: Held-out episodes for the final bit error.
        memory_sizes: N for the memory measurement.
        threads: torch CPU threads (0: default).
    """

    n: int = 50
    k: int = 3
    episodes: int = 2000
    batch: int = 10
    lr: float = 3e-3
    eta: float = 0.01
    seeds: int = 3
    eval_episodes: int = 1000
    memory_sizes: tuple[int, ...] = (50, 100, 200)
    threads: int = 0


def train_pattern_net(
    plastic: bool, task: PatternTask, episodes: int, batch: int, lr: float, eta: float, seed: int
) -> PlasticRNN:
    """Trains a (non-)plastic net on ``episodes`` episodes by BPTT (MSE of the last output to the pattern)."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    net = PlasticRNN(task.n, plastic=plastic, eta=eta)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(max(1, episodes // batch)):
        x, y = pattern_episode_batch(task, batch, rng)
        out = net(torch.from_numpy(x))[-1]
        loss = ((out - torch.from_numpy(y)) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net


@torch.no_grad()
def evaluate(net: PlasticRNN, task: PatternTask, episodes: int, seed: int = 12345) -> float:
    x, y = pattern_episode_batch(task, episodes, np.random.default_rng(seed))
    return float(bit_error(net(torch.from_numpy(x))[-1], torch.from_numpy(y)))


def autograd_bytes(n: int, task: PatternTask, plastic: bool = True, batch: int = 1) -> int:
    """Bytes autograd keeps for the backward pass of one episode batch (the training memory, O(T·B·N²))."""
    net = PlasticRNN(n, plastic=plastic)
    x, _ = pattern_episode_batch(
        PatternTask(n, task.k, task.show_steps, task.gap_steps, task.rounds, task.query_steps),
        batch,
        np.random.default_rng(0),
    )
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = net(torch.from_numpy(x))[-1]
    del out
    return int(sum(seen.values()))


def run_plasticity_bench(cfg: PlasticityBenchConfig) -> dict:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    task = PatternTask(cfg.n, cfg.k)
    t0 = time.perf_counter()
    plastic_err, rnn_err, eta = [], [], []
    for seed in range(cfg.seeds):
        net = train_pattern_net(True, task, cfg.episodes, cfg.batch, cfg.lr, cfg.eta, seed)
        plastic_err.append(evaluate(net, task, cfg.eval_episodes))
        eta.append(float(net.eta.detach()))
        rnn = train_pattern_net(False, task, cfg.episodes, cfg.batch, cfg.lr, cfg.eta, seed)
        rnn_err.append(evaluate(rnn, task, cfg.eval_episodes))
    seconds = time.perf_counter() - t0
    mem = {str(n): autograd_bytes(n, task) for n in cfg.memory_sizes}
    return {
        "bit_error_plastic": float(np.median(plastic_err)),
        "bit_error_rnn": float(np.median(rnn_err)),
        "bit_error_plastic_per_seed": plastic_err,
        "bit_error_rnn_per_seed": rnn_err,
        "learned_eta": eta,
        "episodes": cfg.episodes,
        "seeds": cfg.seeds,
        "seconds": seconds,
        "peak_memory_bytes": mem,
        "memory_note": "bytes autograd saves for backward over one episode (batch 1); O(T·N²)",
    }
