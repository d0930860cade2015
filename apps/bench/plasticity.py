"""``eqagent bench plasticity``: plastic vs non-plastic RNN on pattern completion, learning curve and memory.

The default is the small task (N = 50 bits, k = 3 patterns); ``--bits 1000 --patterns 5`` is Miconi et al.'s
(2018) scale: 1,000-bit patterns, 5 per episode, each shown twice, recalled from a copy with half its bits zeroed,
by a 1,000-neuron plastic RNN.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from eqagent.plasticity import PatternTask, PlasticRNN, bit_error, pattern_episode_batch

__all__ = ["PlasticityBenchConfig", "autograd_bytes", "evaluate", "run_plasticity_bench", "train_pattern_net"]


@dataclass
class PlasticityBenchConfig:
    """Settings of ``eqagent bench plasticity``.

    Attributes:
        n: Bits per pattern (and neurons of the net).
        k: Patterns per episode.
        episodes: Training episodes of each net (batches of ``batch`` episodes).
        batch: Episodes per gradient step.
        lr: Adam learning rate of α, η and the biases.
        base_width: Adam's rate for ``W`` is ``lr · min(1, base_width / n)``: an Adam step moves every entry
            of the ``n × n`` matrix by about the rate, so the change of ``x W`` grows with ``n`` (the μP rule for
            hidden weights); ``lr`` was chosen at n = 50. At n = 1000 a full-rate ``W`` drowns the recalled
            pattern (bit error back up to 7.7% after 5.5%, exploratory).
        eta: Initial Hebbian rate (learned).
        alpha: Plasticity coefficients: "neuron" (α_ij = p_i q_j, implicit trace, O(T·N) state per episode) or
            "connection" (one α per synapse, explicit (N, N) trace per episode and step).
        alpha_init: Scale of the initial α (mean zero: the untrained net does not recall; see PlasticRNN).
        seeds: Number of seeds (the median is reported).
        eval_episodes: Held-out episodes for the final bit error.
        curve_every: Training episodes between points of the learning curve (each on 100 held-out episodes);
            0: no curve.
        memory_sizes: N for the memory measurement; empty: n/4, n/2 and n.
        threads: torch CPU threads (0: default).
    """

    n: int = field(default=50, metadata={"aliases": ("--bits",)})
    k: int = field(default=3, metadata={"aliases": ("--patterns",)})
    episodes: int = 2000
    batch: int = 5
    lr: float = 1e-3
    base_width: int = 50
    eta: float = 0.01
    alpha: str = "neuron"
    alpha_init: float = 0.01
    seeds: int = 3
    eval_episodes: int = 1000
    curve_every: int = 200
    memory_sizes: tuple[int, ...] = ()
    threads: int = 0

    def __post_init__(self) -> None:
        for name in ("n", "k", "episodes", "batch", "seeds", "eval_episodes", "base_width"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n < 2:
            raise ValueError(f"n must be >= 2 (half the query's bits are zeroed), got {self.n}")
        if not (np.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be finite and > 0, got {self.lr}")
        if self.alpha not in ("neuron", "connection"):
            raise ValueError(f"alpha must be 'neuron' or 'connection', got {self.alpha!r}")
        if not (np.isfinite(self.alpha_init) and self.alpha_init >= 0):
            raise ValueError(f"alpha_init must be finite and >= 0, got {self.alpha_init}")
        if self.curve_every < 0 or self.threads < 0 or any(m < 1 for m in self.memory_sizes):
            raise ValueError("curve_every and threads must be >= 0 and memory_sizes >= 1")

    @property
    def task(self) -> PatternTask:
        return PatternTask(self.n, self.k)

    def make_net(self, plastic: bool, n: int | None = None) -> PlasticRNN:
        n = self.n if n is None else n
        return PlasticRNN(n, plastic=plastic, eta=self.eta, alpha=self.alpha, alpha_init=self.alpha_init)

    @property
    def w_lr(self) -> float:
        return self.lr * min(1.0, self.base_width / self.n)


def train_pattern_net(
    plastic: bool,
    task: PatternTask,
    episodes: int,
    batch: int,
    lr: float,
    eta: float,
    seed: int,
    net: PlasticRNN | None = None,
    curve_every: int = 0,
    curve: list[tuple[int, float]] | None = None,
    w_lr: float | None = None,
) -> PlasticRNN:
    """Trains a (non-)plastic net on ``episodes`` episodes by BPTT (MSE of the last output to the pattern).

    ``net`` defaults to ``PlasticRNN(task.n, plastic, eta)``. With ``curve_every`` > 0 the held-out bit error on
    100 episodes after every ``curve_every`` training episodes is appended to ``curve`` as (episodes, error).
    ``w_lr`` is Adam's rate for ``W`` (default ``lr``).
    """
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    if net is None:
        net = PlasticRNN(task.n, plastic=plastic, eta=eta)
    rest = [p for name, p in net.named_parameters() if name != "w"]
    opt = torch.optim.Adam([{"params": [net.w], "lr": lr if w_lr is None else w_lr}, {"params": rest}], lr=lr)
    seen = 0
    for _ in range(max(1, episodes // batch)):
        x, y = pattern_episode_batch(task, batch, rng)
        out = net(torch.from_numpy(x))[-1]
        loss = ((out - torch.from_numpy(y)) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        before, seen = seen, seen + batch
        if curve is not None and curve_every and seen // curve_every > before // curve_every:
            curve.append((seen, evaluate(net, task, 100)))
    return net


@torch.no_grad()
def evaluate(net: PlasticRNN, task: PatternTask, episodes: int, seed: int = 12345, chunk: int = 100) -> float:
    """Bit error of the last output on ``episodes`` held-out episodes (always the same ones for a seed)."""
    x, y = pattern_episode_batch(task, episodes, np.random.default_rng(seed))
    errors = [
        float(bit_error(net(torch.from_numpy(x[:, i : i + chunk]))[-1], torch.from_numpy(y[i : i + chunk])))
        * len(y[i : i + chunk])
        for i in range(0, episodes, chunk)
    ]
    return sum(errors) / episodes


def autograd_bytes(
    n: int, task: PatternTask, plastic: bool = True, batch: int = 1, alpha: str = "connection"
) -> int:
    """Bytes autograd keeps for the backward pass of one episode batch (the training memory).

    With ``alpha="connection"`` that is O(T·B·N²) (a trace per step); with ``"neuron"`` O(N²) for ``W`` plus
    O(T²·B·N) for the activity histories.
    """
    net = PlasticRNN(n, plastic=plastic, alpha=alpha)
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
    task = cfg.task
    t0 = time.perf_counter()
    plastic_err, rnn_err, eta, curves, train_s = [], [], [], [], []
    for seed in range(cfg.seeds):
        curve: list[tuple[int, float]] = []
        t1 = time.perf_counter()
        net = train_pattern_net(
            True, task, cfg.episodes, cfg.batch, cfg.lr, cfg.eta, seed,
            net=_seeded(cfg, True, seed), curve_every=cfg.curve_every, curve=curve, w_lr=cfg.w_lr,
        )  # fmt: skip
        train_s.append(time.perf_counter() - t1)
        plastic_err.append(evaluate(net, task, cfg.eval_episodes))
        eta.append(float(net.eta.detach()))
        curves.append(curve)
        rnn = train_pattern_net(
            False,
            task,
            cfg.episodes,
            cfg.batch,
            cfg.lr,
            cfg.eta,
            seed,
            net=_seeded(cfg, False, seed),
            w_lr=cfg.w_lr,
        )
        rnn_err.append(evaluate(rnn, task, cfg.eval_episodes))
    seconds = time.perf_counter() - t0
    sizes = cfg.memory_sizes or tuple(sorted({max(2, cfg.n // 4), max(2, cfg.n // 2), cfg.n}))
    mem = {str(n): autograd_bytes(n, task, alpha=cfg.alpha) for n in sizes}
    return {
        "bits": cfg.n,
        "patterns": cfg.k,
        "alpha": cfg.alpha,
        "bit_error_plastic": float(np.median(plastic_err)),
        "bit_error_plastic_untrained": evaluate(_seeded(cfg, True, 0), task, cfg.eval_episodes),
        "bit_error_rnn": float(np.median(rnn_err)),
        "bit_error_plastic_per_seed": plastic_err,
        "bit_error_rnn_per_seed": rnn_err,
        "curve_plastic_per_seed": curves,
        "learned_eta": eta,
        "episodes": cfg.episodes,
        "seeds": cfg.seeds,
        "seconds": seconds,
        "train_seconds_plastic_per_seed": train_s,
        "peak_memory_bytes": mem,
        "memory_per_episode_bytes": mem.get(str(cfg.n)) or autograd_bytes(cfg.n, task, alpha=cfg.alpha),
        "memory_per_episode_bytes_rnn": autograd_bytes(cfg.n, task, plastic=False),
        "memory_note": f"bytes autograd saves for backward over one episode (batch 1), alpha={cfg.alpha}",
    }


def _seeded(cfg: PlasticityBenchConfig, plastic: bool, seed: int) -> PlasticRNN:
    torch.manual_seed(seed)
    return cfg.make_net(plastic)
