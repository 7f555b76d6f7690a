"""In-memory image arrays, array files (.npz/.pt) and the batch iterator.

Images are kept as stored (uint8 stays uint8, 4x smaller) and turned into float [0, 1]
per batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from evalkit.errors import DataError


@dataclass
class ArraySplit:
    """Images ``x`` (N,C,H,W; uint8 0-255 or float 0-1) and labels ``y`` (N,) int64."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.ndim != 4:
            raise DataError(
                f"images must be 4-D (N,C,H,W or N,H,W,C), got shape {tuple(self.x.shape)}"
            )
        if self.y.ndim != 1 or self.y.shape[0] != self.x.shape[0]:
            raise DataError(
                f"labels must be 1-D with one per image: {tuple(self.y.shape)} vs {self.x.shape[0]} images"
            )

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.x.shape[1:])  # type: ignore[return-value]

    def subset(self, index: torch.Tensor | np.ndarray | slice) -> ArraySplit:
        """A view/copy holding only ``index``."""
        return ArraySplit(self.x[index], self.y[index])

    def first(self, n: int | None) -> ArraySplit:
        """The first ``n`` examples (all when ``n`` is None)."""
        return self if n is None or n >= len(self) else self.subset(slice(0, n))

    def of_class(self, k: int) -> ArraySplit:
        """Only the examples whose label is ``k``."""
        return self.subset(torch.nonzero(self.y == k).flatten())

    def float_batch(self, index: torch.Tensor | slice) -> torch.Tensor:
        """Images at ``index`` as float32 in [0, 1]."""
        return to_float01(self.x[index])


def to_float01(x: torch.Tensor) -> torch.Tensor:
    """uint8 0-255 or float 0-1 to float32 0-1."""
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    return x.float()


def _as_nchw(x: torch.Tensor) -> torch.Tensor:
    if x.ndim == 3:  # N,H,W grey
        return x[:, None]
    if x.ndim != 4:
        raise DataError(f"images must be N,C,H,W or N,H,W,C, got shape {tuple(x.shape)}")
    if x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
        x = x.permute(0, 3, 1, 2)
    return x.contiguous()


def load_array_file(path: str | Path) -> ArraySplit:
    """Read ``.npz`` or ``.pt`` holding ``x`` and ``y`` (uint8 0-255 or float 0-1; NCHW or NHWC)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file not found: {path} (check the --data path)")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                keys = set(z.files)
                if not {"x", "y"} <= keys:
                    raise DataError(f"{path} needs arrays 'x' and 'y'; it has {sorted(keys)}")
                x, y = torch.from_numpy(z["x"]), torch.from_numpy(z["y"])
        elif path.suffix == ".pt":
            obj = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(obj, dict) or not {"x", "y"} <= set(obj):
                raise DataError(f"{path} must hold a dict with tensors 'x' and 'y'")
            x, y = torch.as_tensor(obj["x"]), torch.as_tensor(obj["y"])
        else:
            raise DataError(f"unsupported data file {path.name} (use .npz or .pt with keys x, y)")
    except DataError:
        raise
    except Exception as exc:  # corrupt zip, bad pickle, ...
        raise DataError(f"cannot read data file {path}: {type(exc).__name__}: {exc}") from None
    x = _as_nchw(x)
    if x.dtype != torch.uint8:
        x = x.float()
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > 1:
            raise DataError(
                f"float images in {path} must lie in [0, 1] (found {lo:.3g}..{hi:.3g}); store uint8 0-255 or divide by 255"
            )
    return ArraySplit(x, y.long().flatten())


def random_crop_flip(x: torch.Tensor, pad: int, flip: bool, gen: torch.Generator) -> torch.Tensor:
    """Standard CIFAR augmentation on a float batch: zero-pad, random crop, random h-flip."""
    n, _, h, w = x.shape
    if pad:
        padded = F.pad(x, (pad, pad, pad, pad))
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
        rows = (dy[:, None] + torch.arange(h)[None]).long()
        cols = (dx[:, None] + torch.arange(w)[None]).long()
        x = padded[
            torch.arange(n)[:, None, None, None],
            torch.arange(x.shape[1])[None, :, None, None],
            rows[:, None, :, None],
            cols[:, None, None, :],
        ]
    if flip:
        mask = torch.rand(n, generator=gen) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x


def iterate_batches(
    data: ArraySplit,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    augment: bool = False,
    pad: int = 4,
    indices: torch.Tensor | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield ``(index, x_float01, y)`` batches on the CPU; ``indices`` restricts to a shard."""
    gen = generator or torch.Generator().manual_seed(0)
    order = indices if indices is not None else torch.arange(len(data))
    if shuffle:
        order = order[torch.randperm(len(order), generator=gen)]
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        x = data.float_batch(idx)
        if augment:
            x = random_crop_flip(x, pad, True, gen)
        yield idx, x, data.y[idx]
