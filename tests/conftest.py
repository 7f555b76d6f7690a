"""Shared pytest fixtures. Helpers add theirs with a per-area prefix (``atk_`` = attacks).
Plain helper functions shared by several test files are in ``helpers.py``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import one_thread as _one_thread


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One torch thread for the test (see :func:`helpers.one_thread`); a file applies it to all
    its tests with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    with _one_thread():
        yield


def _atk_tiny_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 5, stride=2, padding=2),
        nn.ReLU(),
        nn.Conv2d(8, 16, 5, stride=2, padding=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 7 * 7, 10),
    )


@pytest.fixture(scope="session")
def atk_model() -> nn.Module:
    """A tiny conv net trained for one pass over 1500 bundled Fashion-MNIST images (well under
    a second on one core; ~70% test accuracy), in eval mode. Attack tests share it."""
    from evalkit.data import iterate_batches, load_split

    with _one_thread():  # this net is too small to gain from threads; avoids contention
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = _atk_tiny_net()
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        gen = torch.Generator().manual_seed(0)
        split = load_split("fashion-mnist-mini", "train").first(1500)
        for _, x, y in iterate_batches(split, 100, shuffle=True, generator=gen):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="session")
def atk_data() -> tuple[torch.Tensor, torch.Tensor]:
    """The first 64 bundled Fashion-MNIST test images (float in [0, 1], 1x28x28) and labels."""
    from evalkit.data import load_split

    split = load_split("fashion-mnist-mini", "test").first(64)
    x = split.float_batch(torch.arange(len(split.y)))
    return x, torch.as_tensor(split.y)


@pytest.fixture(scope="session")
def atk_smallcnn() -> nn.Module:
    """evalkit's ``smallcnn`` (width 4, BatchNorm, random init) for 1x28x28 inputs, eval mode."""
    from evalkit.models import build_model

    with torch.random.fork_rng():
        torch.manual_seed(1)
        model = build_model(
            "smallcnn", num_classes=10, in_channels=1, mean=(0.286,), std=(0.353,), width=4
        )
    return model.eval()


@pytest.fixture(scope="session")
def ev_ckpt(tmp_path_factory) -> str:
    """An evalkit checkpoint of a small trained ``smallcnn`` (width 8, strides 2222, ~70% on the
    bundled test set after 40 SGD steps; a few seconds on one core). Harness tests share it."""
    from evalkit.checkpoint import save_checkpoint
    from evalkit.data import dataset_info, iterate_batches, load_split
    from evalkit.models import build_model

    info = dataset_info("fashion-mnist-mini")
    with _one_thread():
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = build_model(
                "smallcnn",
                num_classes=10,
                in_channels=1,
                mean=info.mean,
                std=info.std,
                width=8,
                strides="2222",
            )
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        split = load_split("fashion-mnist-mini", "train").first(64 * 40)
        model.train()
        for _, x, y in iterate_batches(
            split, 64, shuffle=True, generator=torch.Generator().manual_seed(0)
        ):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    path = tmp_path_factory.mktemp("ev_ckpt") / "checkpoint.pt"
    save_checkpoint(
        path, model.eval(), dataset="fashion-mnist-mini", input_size=28, defense="standard"
    )
    return str(path)
