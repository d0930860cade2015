"""MNIST classification as a Gymnasium environment (the warm-up task)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from eqagent.data import load_mnist

__all__ = ["MNISTClassifyEnv"]


class MNISTClassifyEnv(gym.Env):
    """Label one handwritten digit per step.

    ## Description
    Each step shows one image; the action is the predicted label. The true label is revealed in ``info`` after
    acting, so a learner can be nudged toward it (online supervised learning as an env). Images are drawn in a
    random order (``self.np_random``) from the chosen split, optionally restricted to a class subset (for
    class-incremental streams: change ``classes`` with ``reset(options={"classes": (...)})``).

    ## Observation Space
    ``Box(0, 1, (side·side,), float32)``: the flattened image (784 for MNIST), pixels / 255.

    ## Action Space
    ``Discrete(num_classes)``: the predicted label.

    ## Rewards
    1 if the action equals the image's label, else 0.

    ## Starting State
    A random image of the split and class subset.

    ## Episode End
    Truncated after ``episode_length`` images. Never terminated.

    ## Info
    ``info["label"]`` (after ``step``): the label of the image just classified; ``info["index"]``: its index in the
    split; ``info["next_index"]``: the index of the returned observation. ``reset`` returns ``info["next_index"]``.

    Args:
        split: ``"train"`` or ``"test"``.
        classes: Class subset (``None``: all).
        episode_length: Images per episode.
        root: Directory of the MNIST IDX files (``None``: eqagent's default lookup).
        download: Fetch missing files from the public mirrors.
        images: Injected images ``(N, H, W)`` or ``(N, D)``, ``uint8`` (0..255) or float in [0, 1] (tests);
            overrides ``root``.
        labels: Injected labels ``(N,)`` (with ``images``).
        num_classes: Size of the action space.
    """

    metadata: ClassVar[dict] = {"render_modes": []}

    def __init__(
        self,
        split: str = "train",
        classes: Sequence[int] | None = None,
        episode_length: int = 100,
        root: str | None = None,
        download: bool = False,
        images: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        num_classes: int = 10,
    ) -> None:
        if episode_length < 1:
            raise ValueError(f"episode_length must be >= 1, got {episode_length}")
        if (images is None) != (labels is None):
            raise ValueError("pass both images and labels, or neither")
        if images is None:
            images, labels = load_mnist(root, split=split, download=download)
        images, labels = np.asarray(images), np.asarray(labels).astype(np.int64)
        if len(images) != len(labels) or len(images) == 0:
            raise ValueError(f"need as many labels as images (> 0), got {len(images)} and {len(labels)}")
        flat = images.reshape(len(images), -1)
        x = flat.astype(np.float32) / 255.0 if flat.dtype == np.uint8 else flat.astype(np.float32)
        if x.min() < 0 or x.max() > 1:
            raise ValueError("float images must lie in [0, 1]")
        if labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(f"labels must lie in [0, {num_classes}), got {labels.min()}..{labels.max()}")
        self.x, self.y = x, labels
        self.num_classes = int(num_classes)
        self.episode_length = int(episode_length)
        self.observation_space = spaces.Box(0.0, 1.0, (x.shape[1],), np.float32)
        self.action_space = spaces.Discrete(self.num_classes)
        self._pool = self._select(classes)
        self._idx = 0
        self._t = 0

    def _select(self, classes: Sequence[int] | None) -> np.ndarray:
        if classes is None:
            return np.arange(len(self.y))
        cls = [int(c) for c in classes]
        bad = [c for c in cls if not 0 <= c < self.num_classes]
        if bad or not cls:
            raise ValueError(
                f"classes must be a non-empty subset of 0..{self.num_classes - 1}, got {list(classes)}"
            )
        pool = np.flatnonzero(np.isin(self.y, cls))
        if len(pool) == 0:
            raise ValueError(f"no images of classes {cls} in this split")
        return pool

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if options and "classes" in options:
            self._pool = self._select(options["classes"])
        self._t = 0
        self._idx = int(self.np_random.choice(self._pool))
        return self.x[self._idx].copy(), {"next_index": self._idx}

    def step(self, action):
        if not self.action_space.contains(int(np.asarray(action).reshape(()))):
            raise ValueError(f"action must be a label in [0, {self.num_classes}), got {action}")
        label = int(self.y[self._idx])
        info = {"label": label, "index": self._idx}
        reward = float(int(np.asarray(action).reshape(())) == label)
        self._t += 1
        truncated = self._t >= self.episode_length
        self._idx = int(self.np_random.choice(self._pool))
        info["next_index"] = self._idx
        return self.x[self._idx].copy(), reward, False, truncated, info
