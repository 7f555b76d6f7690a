"""Dataset registry and array files."""

from pathlib import Path

import numpy as np
import pytest
import torch

from evalkit.data import DATASETS, iterate_batches, load_array_file, load_split
from evalkit.errors import DataError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "fashion-mnist"


def test_bundled_subset_is_real_and_balanced():
    tr, te = load_split("fashion-mnist-mini", "train"), load_split("fashion-mnist-mini", "test")
    assert tr.x.shape == (5000, 1, 28, 28) and te.x.shape == (1000, 1, 28, 28)
    assert tr.x.dtype == torch.uint8
    assert torch.equal(te.y.bincount(), torch.full((10,), 100))
    assert tr.x.float().std() > 50  # real images, not blanks


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_each_dataset_resolves_or_fails_with_one_line(name, tmp_path):
    root = SHARED if name == "fashion-mnist" and SHARED.exists() else tmp_path
    try:
        data = load_split(name, "test", root=root)
    except DataError as exc:
        msg = str(exc)
        assert "\n" not in msg and ("--download" in msg or "--data-root" in msg)
        return
    assert len(data) > 0 and data.x.ndim == 4


def test_unknown_dataset_lists_known():
    with pytest.raises(DataError, match="known: .*cifar10"):
        load_split("imagenet21k")


@pytest.mark.parametrize("layout", ["nchw_uint8", "nhwc_uint8", "nchw_float"])
def test_array_files(tmp_path, layout):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(6, 3, 8, 8), dtype=np.uint8)
    if layout == "nhwc_uint8":
        arr = x.transpose(0, 2, 3, 1)
    elif layout == "nchw_float":
        arr = x.astype(np.float32) / 255
    else:
        arr = x
    np.savez(tmp_path / "d.npz", x=arr, y=np.arange(6))
    data = load_array_file(tmp_path / "d.npz")
    assert data.shape == (3, 8, 8)
    assert torch.allclose(data.float_batch(slice(None)), torch.from_numpy(x).float() / 255)


def test_array_file_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_array_file(tmp_path / "none.npz")
    np.savez(tmp_path / "bad.npz", x=np.full((2, 1, 4, 4), 3.0), y=np.zeros(2))
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        load_array_file(tmp_path / "bad.npz")
    np.savez(tmp_path / "nokey.npz", images=np.zeros((2, 1, 4, 4)))
    with pytest.raises(DataError, match="'x' and 'y'"):
        load_array_file(tmp_path / "nokey.npz")


def test_augmented_batches_keep_shape_and_range():
    data = load_split("fashion-mnist-mini", "test").first(64)
    gen = torch.Generator().manual_seed(0)
    (_, x, y), *_ = list(iterate_batches(data, 64, augment=True, generator=gen))
    assert x.shape == (64, 1, 28, 28) and 0 <= x.min() and x.max() <= 1
