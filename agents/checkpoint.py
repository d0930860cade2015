"""Agent checkpoints: safetensors weights + JSON metadata, written atomically, read as data.

* The path is used as given, with ``.safetensors`` appended unless it already ends so (``run.seed0`` →
  ``run.seed0.safetensors``; a suffix is never substituted).
* Writing: a temporary file in the target folder, flushed and ``fsync``-ed, renamed over the target (atomic on
  POSIX), then the folder is ``fsync``-ed.
* Reading: no pickle, nothing imported or called. The metadata must carry every field :func:`write` writes, a
  SHA-256 of the tensors is checked (a file with overwritten bytes is refused), and every tensor must be finite
  (the error names the tensor).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

__all__ = ["FORMAT", "checkpoint_path", "read", "write"]

FORMAT = "eqagent-agent/1"
_KEYS = ("format", "config", "extra", "env_id", "seed", "num_timesteps", "preference", "sha256")


def checkpoint_path(path: str | os.PathLike) -> Path:
    """The file a checkpoint saved at ``path`` lives in (``.safetensors`` appended unless present)."""
    p = Path(path)
    return p if p.name.endswith(".safetensors") else p.with_name(p.name + ".safetensors")


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def write(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> Path:
    """Writes ``tensors`` and string metadata atomically; returns the file written."""
    target = checkpoint_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta = {**meta, "format": FORMAT, "sha256": _digest(tensors)}
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return target


def read(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any], Path]:
    """Reads and verifies a checkpoint: ``(tensors, metadata with its JSON fields decoded, file)``.

    Raises:
        FileNotFoundError: neither ``path`` nor ``path.safetensors`` exists.
        ValueError: not an eqagent checkpoint, corrupted (checksum), or a tensor with NaN/inf.
    """
    p = Path(path)
    file = p if p.is_file() else checkpoint_path(p)
    if not file.is_file():
        raise FileNotFoundError(f"no checkpoint at {p} (nor {checkpoint_path(p)})")
    try:
        with safe_open(str(file), framework="pt") as f:
            meta = f.metadata()
        tensors = load_file(str(file))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{file} is not a readable safetensors file: {e}") from None
    if not meta:
        raise ValueError(f"{file} is not an eqagent checkpoint: it has no metadata")
    missing = [k for k in _KEYS if k not in meta]
    if missing:
        raise ValueError(f"{file} is not an eqagent checkpoint: metadata lacks {missing}")
    if meta["format"] != FORMAT:
        raise ValueError(f"{file}: unsupported checkpoint format {meta['format']!r} (expected {FORMAT!r})")
    if _digest(tensors) != meta["sha256"]:
        raise ValueError(f"{file} is corrupted: its tensors do not match the checksum written with them")
    for name, t in tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ValueError(f"{file}: tensor {name!r} contains NaN or inf")
    out: dict[str, Any] = dict(meta)
    for key in ("config", "extra"):
        try:
            out[key] = json.loads(meta[key])
        except json.JSONDecodeError as e:
            raise ValueError(f"{file}: metadata field {key!r} is not valid JSON ({e})") from None
        if not isinstance(out[key], dict):
            raise ValueError(f"{file}: metadata field {key!r} must be a JSON object")
    for key in ("seed", "num_timesteps"):
        try:
            out[key] = int(meta[key])
        except ValueError:
            raise ValueError(
                f"{file}: metadata field {key!r} must be an integer, got {meta[key]!r}"
            ) from None
    return tensors, out, file
