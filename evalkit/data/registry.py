"""Dataset registry: name -> shape, classes, normalization and a loader.

torchvision's datasets are used as they are (``download=True`` only when the user asks with
``--download``), so online users get the real download path. Offline, Fashion-MNIST is read
from ``--data-root`` or from Debian's ``/usr/share/datasets/fashion-mnist`` when present, and
``fashion-mnist-mini`` is always available from inside the package.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from evalkit.data.arrays import ArraySplit
from evalkit.data.idx import read_idx_pair
from evalkit.errors import DataError

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_ROOT = Path(os.environ.get("EVALKIT_DATA", Path.home() / ".cache" / "evalkit" / "data"))


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset."""

    name: str
    num_classes: int
    in_channels: int
    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool  # crop+flip is the field's default for this set
    loader: Callable[[str, Path | None, bool], ArraySplit] = field(repr=False, compare=False)
    class_names: tuple[str, ...] = ()


FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


def _bundled(split: str, root: Path | None, download: bool) -> ArraySplit:
    ref = resources.files("evalkit.data") / "bundled" / "fashion_mnist_mini.npz"
    with resources.as_file(ref) as path, np.load(path) as z:
        key = "train" if split == "train" else "test"
        return ArraySplit(torch.from_numpy(z[f"x_{key}"]), torch.from_numpy(z[f"y_{key}"]))


def _fashion_mnist(split: str, root: Path | None, download: bool) -> ArraySplit:
    prefix = "train" if split == "train" else "t10k"
    candidates = (
        [root]
        if root is not None
        else [DEFAULT_ROOT / "FashionMNIST" / "raw", DEBIAN_FASHION_MNIST]
    )
    for cand in candidates:
        try:
            x, y = read_idx_pair(Path(cand), prefix)
            return ArraySplit(torch.from_numpy(x.copy())[:, None], torch.from_numpy(y))
        except DataError:
            continue
    return _torchvision("FashionMNIST", split, root, download)


def _torchvision(cls_name: str, split: str, root: Path | None, download: bool) -> ArraySplit:
    import torchvision.datasets as tvd

    root = Path(root) if root is not None else DEFAULT_ROOT
    cls = getattr(tvd, cls_name)
    kwargs = {"split": split} if cls_name == "SVHN" else {"train": split == "train"}
    try:
        ds = cls(str(root), download=download, **kwargs)
    except RuntimeError as exc:
        hint = (
            "add --download to fetch it (needs internet)"
            if not download
            else "check your connection"
        )
        raise DataError(
            f"{cls_name} not found under {root}: {exc} ({hint}, or pass --data-root DIR)"
        ) from None
    data = ds.data
    x = torch.as_tensor(np.asarray(data))
    if x.ndim == 3:
        x = x[:, None]
    elif x.shape[-1] == 3:  # CIFAR stores NHWC
        x = x.permute(0, 3, 1, 2)
    labels = getattr(ds, "targets", None)
    if labels is None:
        labels = ds.labels
    return ArraySplit(x.contiguous(), torch.as_tensor(np.asarray(labels)).long())


def _tv(name: str) -> Callable[[str, Path | None, bool], ArraySplit]:
    return lambda split, root, download: _torchvision(name, split, root, download)


DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in [
        DatasetInfo(
            "fashion-mnist-mini", 10, 1, 28, (0.2860,), (0.3530,), False, _bundled, FASHION_CLASSES
        ),
        DatasetInfo(
            "fashion-mnist", 10, 1, 28, (0.2860,), (0.3530,), False, _fashion_mnist, FASHION_CLASSES
        ),
        DatasetInfo("mnist", 10, 1, 28, (0.1307,), (0.3081,), False, _tv("MNIST")),
        DatasetInfo(
            "cifar10",
            10,
            3,
            32,
            (0.4914, 0.4822, 0.4465),
            (0.2470, 0.2435, 0.2616),
            True,
            _tv("CIFAR10"),
            CIFAR10_CLASSES,
        ),
        DatasetInfo(
            "cifar100",
            100,
            3,
            32,
            (0.5071, 0.4865, 0.4409),
            (0.2673, 0.2564, 0.2762),
            True,
            _tv("CIFAR100"),
        ),
        DatasetInfo(
            "svhn", 10, 3, 32, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), True, _tv("SVHN")
        ),
    ]
}


def dataset_info(name: str) -> DatasetInfo:
    """Look up a dataset by name, listing the known ones on a miss."""
    try:
        return DATASETS[name.lower()]
    except KeyError:
        raise DataError(f"unknown dataset {name!r} (known: {', '.join(DATASETS)})") from None


def load_split(
    name: str, split: str = "test", root: str | Path | None = None, download: bool = False
) -> ArraySplit:
    """Load ``train`` or ``test`` of a registered dataset as arrays."""
    if split not in ("train", "test"):
        raise DataError(f"split must be train or test, not {split!r}")
    info = dataset_info(name)
    return info.loader(split, Path(root) if root else None, download)
