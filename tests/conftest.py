import os

# The Triton interpreter must be chosen before triton is imported anywhere (CPU-only machines).
os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np
import pytest
import torch

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def synthetic_digits(
    n: int, num_classes: int = 4, side: int = 8, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Tiny MNIST-like data: each class lights one band of a side×side image, plus noise (uint8)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=n)
    images = rng.integers(0, 60, size=(n, side, side))
    rows = side // num_classes
    for i, c in enumerate(labels):
        images[i, c * rows : (c + 1) * rows, :] += 180
    return images.clip(0, 255).astype(np.uint8), labels.astype(np.int64)
