import gzip

import numpy as np
import pytest

from eqagent.data import MNIST_FILES, load_mnist, read_idx, write_idx
from tests.conftest import synthetic_digits


def _write_split(d, split, n):
    images, labels = synthetic_digits(n, side=28)
    img, lab = MNIST_FILES[split]
    write_idx(d / img, images)
    write_idx(d / lab, labels.astype(np.uint8))
    return images, labels


def test_round_trip_and_load(tmp_path):
    images, labels = _write_split(tmp_path, "train", 20)
    _write_split(tmp_path, "test", 5)
    x, y = load_mnist(tmp_path, "train")
    assert x.shape == (20, 28, 28) and x.dtype == np.uint8 and y.dtype == np.int64
    assert np.array_equal(x, images) and np.array_equal(y, labels)
    assert load_mnist(tmp_path, "test")[0].shape == (5, 28, 28)


def test_uncompressed_files_are_read(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a-idx3-ubyte", arr)
    assert np.array_equal(read_idx(tmp_path / "a-idx3-ubyte"), arr)


def test_missing_files_name_directory_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte.gz") as e:
        load_mnist(tmp_path, "test")
    assert str(tmp_path.resolve()) in str(e.value)
    with pytest.raises(ValueError, match="split"):
        load_mnist(tmp_path, "validation")


def test_corrupt_files_raise(tmp_path):
    p = tmp_path / "bad.gz"
    p.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x05ab"))
    with pytest.raises(ValueError, match="payload"):
        read_idx(p)
    q = tmp_path / "bad2"
    q.write_bytes(b"hello world")
    with pytest.raises(ValueError, match="magic"):
        read_idx(q)
