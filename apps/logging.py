"""TensorBoard + CSV logger with SB3-compatible tags (``rollout/ep_rew_mean``, ``time/fps``, ...).

``record(key, value)`` accumulates values; ``dump(step)`` writes their means to TensorBoard (if a log dir was
given) and appends a row to ``progress.csv``. Run directories are named ``{name}_{N}`` like SB3's.
"""

from __future__ import annotations

import csv
import os
import re
from collections import defaultdict
from pathlib import Path

__all__ = ["Logger", "next_run_dir"]


def next_run_dir(log_root: str | os.PathLike, name: str) -> Path:
    """``log_root/name_N`` with N one more than the largest existing (SB3's naming)."""
    root = Path(log_root)
    root.mkdir(parents=True, exist_ok=True)
    pat = re.compile(re.escape(name) + r"_(\d+)$")
    ids = [int(m.group(1)) for p in root.iterdir() if (m := pat.match(p.name))]
    return root / f"{name}_{max(ids, default=0) + 1}"


class Logger:
    """Scalar (and image) logger writing TensorBoard events and a CSV file.

    Args:
        run_dir: Directory of this run (created); ``None`` logs nothing to disk (values stay queryable).
        tensorboard: Write TensorBoard event files.
    """

    def __init__(self, run_dir: str | os.PathLike | None, tensorboard: bool = True) -> None:
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self._values: dict[str, list[float]] = defaultdict(list)
        self.last: dict[str, float] = {}
        self._writer = None
        self._csv_keys: list[str] | None = None
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(log_dir=str(self.run_dir))

    def record(self, key: str, value: float) -> None:
        """Accumulates ``value`` under ``key`` until the next :meth:`dump` (the mean is written)."""
        self._values[key].append(float(value))

    def add_image(self, tag: str, image, step: int, dataformats: str = "HW") -> None:
        """Writes an image (array in ``dataformats``) to TensorBoard."""
        if self._writer is not None:
            self._writer.add_image(tag, image, step, dataformats=dataformats)

    def dump(self, step: int) -> dict[str, float]:
        """Writes the means of the recorded values at ``step`` and returns them."""
        row = {k: sum(v) / len(v) for k, v in self._values.items() if v}
        self._values.clear()
        self.last.update(row)
        if self._writer is not None:
            for k, v in row.items():
                self._writer.add_scalar(k, v, step)
            self._writer.flush()
        if self.run_dir is not None and row:
            path = self.run_dir / "progress.csv"
            keys = sorted(set(self._csv_keys or []) | set(row))
            rows = []
            if path.exists() and keys != self._csv_keys:
                with open(path, newline="") as f:
                    rows = list(csv.DictReader(f))
            mode = "w" if (rows or not path.exists() or keys != self._csv_keys) else "a"
            with open(path, mode, newline="") as f:
                w = csv.DictWriter(f, fieldnames=["step", *keys])
                if mode == "w":
                    w.writeheader()
                    for r in rows:
                        w.writerow(r)
                w.writerow({"step": step, **row})
            self._csv_keys = keys
        return row

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
