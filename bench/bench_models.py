"""What several benches share: the quick PGD-AT model they measure on and its test points."""

from __future__ import annotations

import torch
import torch.nn as nn

import evalkit
from evalkit.checkpoint import load_model
from evalkit.data import load_split


def quick_at_model(
    ckpt: str | None, n: int, eps: float, device: torch.device, tmp: str
) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """``ckpt`` loaded (or, when None, a smallcnn PGD-AT-trained for three quick epochs on the
    bundled data into ``tmp``) and the first ``n`` bundled test points on ``device``."""
    path = ckpt or evalkit.train(
        dataset="fashion-mnist-mini",
        arch="smallcnn",
        defense="at",
        epochs=3,
        eps=eps,
        attack_steps=5,
        out=f"{tmp}/model",
        progress=False,
        device=str(device),
    )
    model, _ = load_model(path, device=device)
    split = load_split("fashion-mnist-mini", "test").first(n)
    x = split.float_batch(torch.arange(len(split))).to(device)
    return model, x, split.y.to(device)
