"""An EP classifier that learns online from ``eqagent/MNISTClassify-v0``, with dream replay.

Each env step the agent labels the image (free phase, image clamped), the env reveals the true label
(``info["label"]``), and the revealed label nudges the label layer: an EP update of the :class:`DreamerNet` on the
newest image plus recent ones, its learning rate set by the same :class:`~eqagent.surprise.SurpriseGate` as the
world model's (prediction error = the free-phase cost of the newest image).

Against catastrophic forgetting in class-incremental streams, :meth:`OnlineEPClassifier.start_task` dreams images
of every class seen so far; those dreams, labelled, are replayed next to the new task's images in every update
(generative replay). Three ways to dream (``OnlineConfig.dreams``):

* ``"autoencoder"`` (default): a second EP net, :class:`~eqagent.dreaming.DreamAutoencoder` (``image – code``),
  learns to reconstruct every batch the classifier sees (the new task's images and the replayed dreams). At each
  task start a :class:`~eqagent.dreaming.CodeBank` is fitted to its codes of the finished task's images, the old
  classes' mixtures are refitted to its codes of their previous dreams, and the dreams are the images it decodes
  from codes sampled per class. Its codes keep stroke width and slant, which the classifier's hidden layer drops.
* ``"codes"``: the classifier net itself also learns to reconstruct images from its first hidden layer
  (``DreamerConfig.recon_weight``); at each task start a :class:`~eqagent.dreaming.CodeBank` is fitted to the
  hidden codes of the finished task's images (per class: a mixture of Gaussians, each a k-means cluster's mean and
  leading principal directions), the old classes' mixtures are refitted to the codes of their previous dreams
  under the current net, and the dreams are the images relaxed from codes sampled per class (hidden layer clamped,
  image free). Varied dreams, but thinner and more alike than real digits.
* ``"label"``: the label clamped, image and hidden free, relaxed from a noisy top-down start (class prototypes).

:class:`OnlineGenerativeClassifier` (``OnlineConfig.classifier="generative"``, the default of ``eqagent bench
replay``) does not need replay: a :class:`~eqagent.dreaming.GenerativeEPClassifier` (one EP autoencoder per
class, label = the class of lowest reconstruction energy) learns each revealed image into its own class's net,
under that class's surprise gate, so learning new classes leaves the old classes' nets untouched.

``eqagent bench replay``: split-MNIST (5 tasks of 2 classes) learned online through the env by the chosen learner
(generative, or discriminative with dream replay), and beside it the discriminative net without replay
(fine-tuning, the forgetting baseline), same stream.
"""

from __future__ import annotations

import copy
import time
from collections import deque
from dataclasses import dataclass, field, replace

import eqagent.envs  # noqa: F401  (registers eqagent ids)
import gymnasium as gym
import numpy as np
import torch

from eqagent.dreaming import CodeBank, DreamAutoencoder, DreamerConfig, DreamerNet, GenerativeEPClassifier
from eqagent.surprise import SurpriseGate, SurpriseGateConfig

__all__ = [
    "OnlineConfig",
    "OnlineEPClassifier",
    "OnlineGenerativeClassifier",
    "ReplayBenchConfig",
    "make_online_learner",
    "run_replay_bench",
]


@dataclass
class OnlineConfig:
    """Settings of the online learners (:func:`make_online_learner`).

    Attributes:
        classifier: ``"generative"`` (:class:`OnlineGenerativeClassifier`: one EP autoencoder per class, no
            replay needed; it uses ``class_hidden``, ``lr``, ``batch_size``, ``recent``, ``train_every``,
            ``gate`` and ``seed``) or ``"discriminative"`` (:class:`OnlineEPClassifier`: a dreamer net, with
            dream replay in the replay run; every other field).
        class_hidden: Code size of each class's autoencoder (generative): small enough that a class's net does
            not reconstruct the other digits as well as its own.
        hidden: Hidden size of the dreamer net.
        label_copies: Units per label.
        free_steps: Free-phase relaxation steps.
        nudged_steps: Nudged-phase relaxation steps.
        lr: Adam learning rate (times the gate).
        batch_size: Real images per update (the newest plus recent ones; generative: recent ones of its class).
        recent: Capacity of the recent-image buffer.
        train_every: Env steps per update.
        gate: Use the surprise gate.
        replay_per_class: Dreams per old class in every update (once old classes exist): old classes are replayed
            as often as each new class is seen (``batch_size`` real images cover the current task's classes).
        dreams_per_class: Dreams generated per old class at each task start.
        dreams: How to dream: ``"autoencoder"`` (decode codes sampled from per-class Gaussian mixtures over a
            separate EP autoencoder's codes), ``"codes"`` (the same over the classifier's hidden layer, decoded by
            the classifier net) or ``"label"`` (clamp the label, relax from a noisy start); see the module
            docstring.
        recon_weight: Weight of the classifier's image-reconstruction EP step; ``None``: 2 for ``"codes"`` (which
            needs it > 0), 0 otherwise.
        dream_weight: Weight of the label-clamped (dream-direction) EP step; ``None``: 1 for ``"label"`` dreams
            (which need it), 0 otherwise (the other dreams do not use that pathway, and training it costs accuracy:
            65.4% vs 61.8% in ``eqagent bench replay`` with ``"codes"``, see docs/benchmarks.md).
        code_rank: Principal directions per cluster of the code mixtures.
        code_components: Clusters (Gaussians) per class of the code mixtures (:class:`~eqagent.dreaming.CodeBank`).
        ae_hidden: Code size of the ``"autoencoder"`` dreams' :class:`~eqagent.dreaming.DreamAutoencoder`.
        ae_lr: Its Adam learning rate. It learns from every batch (``train_every``), not gated by surprise: a
            gated autoencoder barely trains on an easy first task, and its dreams of those classes decay.
        dream_noise: Noise on the label dreams' starting states (variety).
        seed: Seed.
    """

    classifier: str = "generative"
    class_hidden: int = 200
    hidden: int = 500
    label_copies: int = 10
    free_steps: int = 20
    nudged_steps: int = 8
    lr: float = 1e-3
    batch_size: int = 32
    recent: int = 1000
    train_every: int = 4
    gate: bool = True
    replay_per_class: int = 16
    dreams_per_class: int = 500
    dreams: str = "autoencoder"
    recon_weight: float | None = None
    dream_weight: float | None = None
    code_rank: int = 10
    code_components: int = 20
    ae_hidden: int = 1000
    ae_lr: float = 3e-4
    dream_noise: float = 0.3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.classifier not in ("generative", "discriminative"):
            raise ValueError(f"classifier must be 'generative' or 'discriminative', got {self.classifier!r}")
        for name in ("class_hidden", "hidden", "batch_size", "recent", "train_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (np.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be finite and > 0, got {self.lr}")
        if self.dreams not in ("autoencoder", "codes", "label"):
            raise ValueError(f"dreams must be 'autoencoder', 'codes' or 'label', got {self.dreams!r}")
        if self.recon_weight is None:
            self.recon_weight = 2.0 if self.dreams == "codes" else 0.0
        if not self.recon_weight >= 0:
            raise ValueError(f"recon_weight must be >= 0, got {self.recon_weight}")
        if self.ae_hidden < 1 or not self.ae_lr > 0:
            raise ValueError(f"ae_hidden must be >= 1 and ae_lr > 0, got {self.ae_hidden} and {self.ae_lr}")
        if self.dreams == "codes" and not self.recon_weight > 0:
            raise ValueError("dreams='codes' needs recon_weight > 0 (the codes are decoded by that pathway)")
        if self.code_rank < 0 or self.code_components < 1:
            raise ValueError(f"code_rank must be >= 0 and code_components >= 1, got {self.code_rank} and "
                             f"{self.code_components}")  # fmt: skip
        if self.dream_weight is None:
            self.dream_weight = 1.0 if self.dreams == "label" else 0.0
        if self.dreams == "label" and not self.dream_weight > 0:
            raise ValueError("dreams='label' needs dream_weight > 0 (label dreams are trained by that step)")


class OnlineEPClassifier:
    """Online EP learner for a classification env (see the module docstring).

    Args:
        num_pixels: Observation size.
        num_classes: Action space size.
        config: :class:`OnlineConfig`.
    """

    def __init__(self, num_pixels: int, num_classes: int, config: OnlineConfig | None = None) -> None:
        self.config = c = config or OnlineConfig()
        torch.manual_seed(c.seed)
        self.model = DreamerNet(num_pixels, num_classes,
                                DreamerConfig(hidden=(c.hidden,), label_copies=c.label_copies, free_steps=c.free_steps,
                                              nudged_steps=c.nudged_steps, recon_weight=c.recon_weight,
                                              dream_weight=c.dream_weight,
                                              seed=c.seed))  # fmt: skip
        self.num_classes = num_classes
        self.optimizer = torch.optim.Adam(self.model.net.trainable_parameters(), lr=c.lr)
        self.gate = SurpriseGate(SurpriseGateConfig(warmup=200))
        self.recent: deque[tuple[np.ndarray, int]] = deque(maxlen=c.recent)
        self.rng = np.random.default_rng(c.seed)
        self.seen: set[int] = set()
        self.dreams: tuple[torch.Tensor, torch.Tensor] | None = None
        self.ae: DreamAutoencoder | None = None
        if c.dreams == "autoencoder":
            self.ae = DreamAutoencoder(num_pixels, c.ae_hidden, seed=c.seed + 2)
            self.ae_optimizer = torch.optim.Adam(self.ae.net.trainable_parameters(), lr=c.ae_lr)
        self.bank = CodeBank(c.code_rank, components=c.code_components, seed=c.seed)
        self.steps = self.updates = 0
        self._last: tuple[np.ndarray, torch.Tensor] | None = None

    def predict(self, obs: np.ndarray) -> int:
        x = np.asarray(obs, dtype=np.float32).reshape(-1)
        if not np.isfinite(x).all():
            raise ValueError("observation contains NaN or inf")
        scores = self.model.logits(torch.from_numpy(x)[None])
        self._last = (x, scores)
        return int(scores.argmax(-1)[0])

    def start_task(self, replay: bool) -> None:
        """Called when a new task begins: with ``replay``, every class seen so far is dreamt (see the module
        docstring); the dreams are replayed until the next task begins."""
        c = self.config
        recent = list(self.recent)
        self.recent.clear()
        if not replay or not self.seen:
            return
        frozen = None if c.dreams == "autoencoder" else copy.deepcopy(self.model)  # the dreaming net, frozen
        labels = torch.tensor(sorted(self.seen)).repeat_interleave(c.dreams_per_class)
        gen = torch.Generator().manual_seed(c.seed + len(self.seen))
        if c.dreams in ("codes", "autoencoder"):
            coder = self.ae if c.dreams == "autoencoder" else frozen
            # old classes: refit to their last dreams' codes under the current net
            if self.dreams is not None:
                self.bank.fit(torch.cat([coder.codes(x) for x in self.dreams[0].split(500)]), self.dreams[1])
            # the finished task's classes: fitted to its real images' codes
            if recent:
                x = torch.from_numpy(np.stack([r[0] for r in recent]))
                self.bank.fit(
                    torch.cat([coder.codes(b) for b in x.split(500)]), torch.tensor([r[1] for r in recent])
                )
            imgs = torch.cat([coder.decode(self.bank.sample(lb, generator=gen)) for lb in labels.split(500)])
        else:
            imgs = torch.cat(
                [frozen.dream(lb, noise=c.dream_noise, generator=gen) for lb in labels.split(500)]
            )
        self.dreams = (imgs, labels)

    def observe(self, obs: np.ndarray, label: int) -> dict:
        """Learns from one revealed label; returns ``dict(error, gate, updated)``."""
        c = self.config
        x = np.asarray(obs, dtype=np.float32).reshape(-1)
        self.recent.append((x, int(label)))
        self.seen.add(int(label))
        self.steps += 1
        if self._last is not None and np.array_equal(self._last[0], x):
            scores = self._last[1]  # the free phase run by predict() for this image: reused
        else:
            scores = self.model.logits(torch.from_numpy(x)[None])
        target = torch.nn.functional.one_hot(torch.tensor([int(label)]), self.num_classes).float()
        err = float(((scores - target) ** 2).sum())  # prediction error of the revealed label
        g = self.gate(err) if c.gate else 1.0
        skip = bool(c.gate and self.gate.skip(g))
        if self.steps % c.train_every or (skip and self.ae is None):
            return {"error": err, "gate": g, "updated": False}
        idx = self.rng.integers(0, len(self.recent), size=c.batch_size - 1)
        batch = [self.recent[-1]] + [self.recent[i] for i in idx]
        xb = torch.from_numpy(np.stack([b[0] for b in batch]))
        yb = torch.tensor([b[1] for b in batch])
        if self.dreams is not None and c.replay_per_class:
            n_old = len(torch.unique(self.dreams[1]))
            j = torch.from_numpy(self.rng.integers(0, len(self.dreams[1]), size=c.replay_per_class * n_old))
            xb = torch.cat([xb, self.dreams[0][j]])
            yb = torch.cat([yb, self.dreams[1][j]])
        if self.ae is not None:  # the generator learns from every batch (see ``OnlineConfig.ae_lr``)
            self.ae.train_batch(xb, self.ae_optimizer)
        if skip:
            return {"error": err, "gate": g, "updated": False}
        self.model.train_batch(xb, yb, self.optimizer, lr_scale=g)
        self.updates += 1
        return {"error": err, "gate": g, "updated": True}


class OnlineGenerativeClassifier:
    """Online generative EP learner for a classification env (see the module docstring).

    Each revealed label trains that class's autoencoder (every ``train_every`` steps, on the newest image plus
    recent images of its class, kept only until the task ends), its learning rate set by that class's own
    :class:`~eqagent.surprise.SurpriseGate` (prediction error = the class net's reconstruction energy of the
    newest image). Labels are chosen among the classes seen so far.

    Args:
        num_pixels: Observation size.
        num_classes: Action space size.
        config: :class:`OnlineConfig` (``classifier="generative"``).
    """

    def __init__(self, num_pixels: int, num_classes: int, config: OnlineConfig | None = None) -> None:
        self.config = c = config or OnlineConfig()
        torch.manual_seed(c.seed)
        self.model = GenerativeEPClassifier(num_pixels, num_classes, hidden=c.class_hidden, seed=c.seed)
        self.num_classes = num_classes
        self.optimizers = [
            torch.optim.Adam(self.model.class_parameters(k), lr=c.lr) for k in range(num_classes)
        ]
        self.gates = [SurpriseGate(SurpriseGateConfig(warmup=200)) for _ in range(num_classes)]
        self.recent: list[deque[np.ndarray]] = [deque(maxlen=c.recent) for _ in range(num_classes)]
        self.rng = np.random.default_rng(c.seed)
        self.seen: list[int] = []
        self.steps = self.updates = 0
        self._last: tuple[np.ndarray, dict[int, float]] | None = None  # predict()'s image and energies

    def predict(self, obs: np.ndarray) -> int:
        x = np.asarray(obs, dtype=np.float32).reshape(-1)
        if not np.isfinite(x).all():
            raise ValueError("observation contains NaN or inf")
        if not self.seen:
            return 0
        energies = self.model.energies(torch.from_numpy(x)[None], self.seen)[0]  # (K,)
        self._last = (x, dict(zip(self.seen, energies.tolist(), strict=True)))
        return self.seen[int(energies.argmin())]

    def start_task(self, replay: bool) -> None:
        """Called when a new task begins: the recent images are dropped (no image outlives its task); nothing is
        replayed (``replay`` is accepted for the common learner interface and has no effect)."""
        for buf in self.recent:
            buf.clear()

    def observe(self, obs: np.ndarray, label: int) -> dict:
        """Learns from one revealed label; returns ``dict(error, gate, updated)``."""
        c = self.config
        label = int(label)
        if not 0 <= label < self.num_classes:
            raise ValueError(f"label {label} outside [0, {self.num_classes})")
        x = np.asarray(obs, dtype=np.float32).reshape(-1)
        self.recent[label].append(x)
        if label not in self.seen:
            self.seen.append(label)
        self.steps += 1
        last = self._last
        if last is not None and label in last[1] and np.array_equal(last[0], x):
            err = last[1][label]  # the energy predict() already computed for this image
        else:
            err = float(self.model.energies(torch.from_numpy(x)[None], [label])[0, 0])
        g = self.gates[label](err) if c.gate else 1.0
        if self.steps % c.train_every or (c.gate and self.gates[label].skip(g)):
            return {"error": err, "gate": g, "updated": False}
        buf = self.recent[label]
        idx = self.rng.integers(0, len(buf), size=c.batch_size - 1)
        xb = torch.from_numpy(np.stack([x] + [buf[i] for i in idx]))
        self.model.train_class(label, xb, self.optimizers[label], lr_scale=g)
        self.updates += 1
        return {"error": err, "gate": g, "updated": True}


def make_online_learner(
    num_pixels: int, num_classes: int, config: OnlineConfig | None = None
) -> OnlineEPClassifier | OnlineGenerativeClassifier:
    """The online learner ``config.classifier`` names."""
    config = config or OnlineConfig()
    cls = OnlineGenerativeClassifier if config.classifier == "generative" else OnlineEPClassifier
    return cls(num_pixels, num_classes, config)


@dataclass
class ReplayBenchConfig:
    """Settings of ``eqagent bench replay``.

    Attributes:
        tasks: Class pairs, ``"01,23,45,67,89"``.
        steps_per_task: Env steps (images) per task.
        data_dir: MNIST directory (empty: default lookup).
        download: Download missing MNIST files.
        threads: torch CPU threads (0: default).
        learner: The online learners' settings (:class:`OnlineConfig`; its seed is this config's).
        seed: Seed.
    """

    tasks: str = "01,23,45,67,89"
    steps_per_task: int = 2000
    data_dir: str = ""
    download: bool = False
    threads: int = 0
    learner: OnlineConfig = field(default_factory=OnlineConfig)
    seed: int = 0

    def learner_config(self) -> OnlineConfig:
        """The learners' :class:`OnlineConfig` with this bench's seed."""
        return replace(self.learner, seed=self.seed)


def _stream(
    cfg: ReplayBenchConfig,
    learner: OnlineEPClassifier | OnlineGenerativeClassifier,
    replay: bool,
    env_kwargs: dict,
) -> list[dict]:
    env = gym.make("eqagent/MNISTClassify-v0", episode_length=cfg.steps_per_task, **env_kwargs)
    log = []
    for k, task in enumerate(cfg.tasks.split(",")):
        classes = [int(ch) for ch in task]
        learner.start_task(replay)
        obs, _ = env.reset(seed=cfg.seed + k, options={"classes": classes})
        rewards = []
        for _ in range(cfg.steps_per_task):
            obs_next, r, _, trunc, info = env.step(learner.predict(obs))
            learner.observe(obs, info["label"])
            rewards.append(r)
            obs = obs_next
            if trunc:
                break
        log.append({"task": task, "online_accuracy": float(np.mean(rewards)), "updates": learner.updates})
    return log


def run_replay_bench(
    cfg: ReplayBenchConfig,
    data: tuple | None = None,
    learner: OnlineConfig | None = None,
    num_classes: int = 10,
) -> dict:
    """Class-incremental split-MNIST through the env: the chosen learner (``replay_*`` figures: the generative
    classifier, or the discriminative net with dream replay) and the discriminative net without replay
    (``no_replay_*``: fine-tuning), same stream.

    Args:
        cfg: Settings.
        data: Optional ``(train_images, train_labels, test_images, test_labels)`` instead of the MNIST files.
        learner: Learner settings (default: ``cfg.learner_config()``).
        num_classes: Labels of the data.
    """
    from eqagent.data import load_mnist_splits

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    if data is None:
        tr_x, tr_y, te_x, te_y = load_mnist_splits(cfg.data_dir or None, cfg.download)
    else:
        tr_x, tr_y, te_x, te_y = data
    xt = torch.from_numpy(te_x.reshape(len(te_x), -1).astype(np.float32) / 255.0)
    yt = torch.from_numpy(np.asarray(te_y))
    learner = learner or cfg.learner_config()
    out: dict = {"classifier": learner.classifier}
    # the forgetting baseline is always the discriminative net without replay (fine-tuning)
    runs = (("replay", True, learner), ("no_replay", False, replace(learner, classifier="discriminative")))
    for name, replay, config in runs:
        agent = make_online_learner(xt.shape[1], num_classes, config)
        log = _stream(cfg, agent, replay, dict(images=tr_x, labels=tr_y, num_classes=num_classes))
        pred = agent.model.predict(xt)
        out[f"{name}_accuracy"] = float((pred == yt).float().mean())
        out[f"{name}_per_class"] = [float((pred[yt == c] == c).float().mean()) for c in range(num_classes)]
        out[f"{name}_tasks"] = log
    out["seconds"] = time.perf_counter() - t0
    return out
