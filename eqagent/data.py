"""MNIST IDX loading: a directory of the four standard ``.gz`` files, downloaded from public mirrors when online.

Files: ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``,
``t10k-labels-idx1-ubyte.gz`` (uncompressed copies without ``.gz`` are read too).

The directory is, in order: the ``root`` argument; ``$EQAGENT_MNIST_DIR``; ``./data/mnist``;
``../shared/data/mnist``; ``~/.cache/eqagent/mnist`` (the download target).
"""

from __future__ import annotations

import gzip
import os
import struct
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

__all__ = [
    "MNIST_FILES",
    "MNIST_MIRRORS",
    "default_mnist_dir",
    "download_mnist",
    "load_mnist",
    "load_mnist_splits",
    "read_idx",
    "write_idx",
]

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _candidates() -> list[Path]:
    out = []
    env = os.environ.get("EQAGENT_MNIST_DIR")
    if env:
        out.append(Path(env))
    out += [Path("data/mnist"), Path("../shared/data/mnist"), Path.home() / ".cache" / "eqagent" / "mnist"]
    return out


def _has_files(d: Path) -> bool:
    return all(_find(d, name) is not None for pair in MNIST_FILES.values() for name in pair)


def _find(d: Path, name: str) -> Path | None:
    for p in (d / name, d / name.removesuffix(".gz")):
        if p.is_file():
            return p
    return None


def default_mnist_dir() -> Path:
    """The first candidate directory holding all four files, else the download cache directory."""
    cands = _candidates()
    for d in cands:
        if _has_files(d):
            return d
    return cands[-1]


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads one IDX file, gzip-compressed or not (told apart by the gzip magic bytes).

    Raises:
        ValueError: the file is not a well-formed IDX file.
    """
    path = Path(path)
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise ValueError(f"{path} is a corrupt gzip file: {e}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path} is truncated (header)")
    shape = struct.unpack(">" + "I" * ndim, data[4:header])
    dtype = np.dtype(_DTYPES[data[2]])
    count = int(np.prod(shape)) if shape else 1
    if len(data) - header != count * dtype.itemsize:
        raise ValueError(
            f"{path}: payload has {len(data) - header} bytes, header says {count * dtype.itemsize}"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Writes ``array`` (uint8) as an IDX file, gzip-compressed when the name ends in ``.gz`` (for tests/tools)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    payload = (
        bytes([0, 0, 0x08, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape) + array.tobytes()
    )
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(payload)


def _fetch(url: str, dest: Path, timeout: float) -> None:
    """Downloads ``url`` to ``dest`` through a temporary file, checks it parses, then renames it into place."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".")
    try:
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=timeout) as r:
            f.write(r.read())
        read_idx(tmp)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def download_mnist(
    root: str | os.PathLike, mirrors: tuple[str, ...] = MNIST_MIRRORS, timeout: float = 30.0
) -> Path:
    """Downloads the missing MNIST files into ``root`` (atomically, trying each mirror in turn).

    Raises:
        RuntimeError: no mirror could be reached for some file.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for pair in MNIST_FILES.values():
        for name in pair:
            if _find(root, name) is not None:
                continue
            errors = []
            for mirror in mirrors:
                try:
                    _fetch(mirror + name, root / name, timeout)
                    break
                except (urllib.error.URLError, OSError, ValueError, TimeoutError) as e:
                    errors.append(f"{mirror}: {e}")
            else:
                raise RuntimeError(f"could not download {name} into {root}: " + "; ".join(errors))
    return root


def load_mnist(
    root: str | os.PathLike | None = None, split: str = "train", download: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Loads an MNIST split.

    Args:
        root: Directory of the IDX files (``None``: :func:`default_mnist_dir`).
        split: ``"train"`` (60k) or ``"test"`` (10k).
        download: Fetch missing files from the public mirrors.

    Returns:
        ``(images, labels)``: ``uint8`` array ``(N, 28, 28)`` and ``int64`` array ``(N,)``.

    Raises:
        ValueError: unknown split, or images and labels of different lengths.
        FileNotFoundError: the files are absent (the message names the directory and the files).
    """
    if split not in MNIST_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    d = Path(root) if root is not None else default_mnist_dir()
    img_name, lab_name = MNIST_FILES[split]
    if download and (_find(d, img_name) is None or _find(d, lab_name) is None):
        download_mnist(d)
    img_path, lab_path = _find(d, img_name), _find(d, lab_name)
    if img_path is None or lab_path is None:
        missing = [n for n, p in ((img_name, img_path), (lab_name, lab_path)) if p is None]
        raise FileNotFoundError(
            f"MNIST {split} files {missing} not found in {d.resolve()}; put the standard IDX .gz files there, "
            f"set EQAGENT_MNIST_DIR, or pass download=True (--download) when online"
        )
    images, labels = read_idx(img_path), read_idx(lab_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"bad MNIST arrays in {d}: images {images.shape}, labels {labels.shape}")
    return images, labels.astype(np.int64)


def load_mnist_splits(
    root: str | os.PathLike | None = None, download: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(train_images, train_labels, test_images, test_labels)`` (see :func:`load_mnist`)."""
    return (*load_mnist(root, "train", download), *load_mnist(root, "test", download))
