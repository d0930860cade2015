"""The applications' run logs: Stable-Baselines3's ``Logger`` (the one the agent uses), in a run folder.

``run_logger(root, name)`` writes TensorBoard events and ``progress.csv`` into ``root/{name}_{N}`` (SB3's run
naming), or nothing when ``root`` is empty; ``log_image`` adds a TensorBoard image (not to the CSV).
"""

from __future__ import annotations

import os

import numpy as np
from stable_baselines3.common.logger import Image, Logger, configure
from stable_baselines3.common.utils import get_latest_run_id

__all__ = ["log_image", "run_logger"]

_NOT_TABULAR = ("stdout", "log", "json", "csv")


def run_logger(root: str | os.PathLike | None, name: str) -> Logger:
    """SB3's ``Logger`` writing TensorBoard + CSV into a new ``root/{name}_{N}`` (``root`` empty: no output)."""
    if not root:
        return Logger(None, [])
    folder = os.path.join(root, f"{name}_{get_latest_run_id(str(root), name) + 1}")
    return configure(folder, ["tensorboard", "csv"])


def log_image(logger: Logger, tag: str, image: np.ndarray, step: int, dataformats: str = "HW") -> None:
    """Writes one TensorBoard image ``tag`` at ``step``."""
    logger.record(tag, Image(image, dataformats), exclude=_NOT_TABULAR)
    logger.dump(step)
