"""Reader for the original MNIST-style idx files (gzipped or not)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from evalkit.errors import DataError


def read_idx(path: Path) -> np.ndarray:
    """Read one idx file into a NumPy array (uint8 data only, as MNIST-family files are)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 8:
        raise DataError(f"{path} is not an idx uint8 file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(dims)):
        raise DataError(
            f"{path} is truncated ({arr.size} values, header says {int(np.prod(dims))})"
        )
    return arr.reshape(dims)


def find_idx(root: Path, stem: str) -> Path | None:
    """Find ``stem`` (e.g. ``train-images-idx3-ubyte``) gzipped or plain under ``root``."""
    for name in (stem + ".gz", stem):
        for cand in (root / name, root / "raw" / name, root / "FashionMNIST" / "raw" / name):
            if cand.exists():
                return cand
    return None


def read_idx_pair(root: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N,28,28) and labels (N,) for ``prefix`` ``train`` or ``t10k``."""
    img = find_idx(Path(root), f"{prefix}-images-idx3-ubyte")
    lab = find_idx(Path(root), f"{prefix}-labels-idx1-ubyte")
    if img is None or lab is None:
        raise DataError(
            f"Fashion-MNIST files {prefix}-images-idx3-ubyte(.gz) / {prefix}-labels-idx1-ubyte(.gz) "
            f"not found under {root} (pass --data-root DIR holding them)"
        )
    return read_idx(img), read_idx(lab).astype(np.int64)
