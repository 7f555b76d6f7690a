"""Build the bundled offline subset of Fashion-MNIST shipped inside the package.

Run once by maintainers: ``python -m evalkit.data.make_bundled SRC_DIR``, where SRC_DIR holds the
original idx gz files (e.g. /usr/share/datasets/fashion-mnist). The subset is class-balanced and
chosen with a fixed seed so it is reproducible from the public files.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from evalkit.data.idx import read_idx_pair

N_TRAIN_PER_CLASS = 500
N_TEST_PER_CLASS = 100
SEED = 20261128


def balanced_subset(y: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``per_class`` random examples of every class, sorted."""
    picks = [rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in np.unique(y)]
    return np.sort(np.concatenate(picks))


def build(src: Path, out: Path) -> None:
    rng = np.random.default_rng(SEED)
    xtr, ytr = read_idx_pair(src, "train")
    xte, yte = read_idx_pair(src, "t10k")
    itr = balanced_subset(ytr, N_TRAIN_PER_CLASS, rng)
    ite = balanced_subset(yte, N_TEST_PER_CLASS, rng)
    np.savez_compressed(
        out,
        x_train=xtr[itr][:, None],
        y_train=ytr[itr].astype(np.int64),
        x_test=xte[ite][:, None],
        y_test=yte[ite].astype(np.int64),
        train_index=itr,
        test_index=ite,
    )


if __name__ == "__main__":
    src = Path(sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist")
    build(src, Path(__file__).with_name("bundled") / "fashion_mnist_mini.npz")
