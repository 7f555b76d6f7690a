"""The summary's cost total is every pass through the model (issue 21): checked against a count
made outside evalkit, by a wrapper module whose forward counts images and whose output passes
through an autograd function that counts the images of every backward reaching it."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from helpers import QUIET

from evalkit import evaluate


class _CountBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, box):
        ctx.box = box
        return z.view_as(z)

    @staticmethod
    def backward(ctx, grad):
        ctx.box["bwd"] += int(grad.shape[0])
        return grad, None


class Counted(nn.Module):
    """``inner`` with an outside count of image forwards and backwards."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.box = {"fwd": 0, "bwd": 0}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.box["fwd"] += int(x.shape[0])
        z = self.inner(x)
        return _CountBackward.apply(z, self.box) if torch.is_grad_enabled() else z


@pytest.mark.parametrize(
    "kw",
    [
        {"attacks": "fgsm,pgd", "n": 40, "batch_size": 16},
        {"preset": "fast", "n": 24},
        {"attacks": "pgd", "n": 24, "sanity": False, "curve": True},
    ],
    ids=["fgsm-pgd-sanity", "fast", "pgd-curve"],
)
def test_the_cost_total_is_every_pass_through_the_model(ev_ckpt, kw):
    from evalkit.checkpoint import load_model

    inner, _ = load_model(ev_ckpt)
    model = Counted(inner)
    s = evaluate(model, "fashion-mnist-mini", eps="0.1", seed=0, **QUIET, **kw).summary
    cost = s["cost"]
    assert (cost["forward_passes"], cost["backward_passes"]) == (
        model.box["fwd"],
        model.box["bwd"],
    )
    un = cost["unrecorded"]
    assert un["setup"]["forward_passes"] > 0 and un["timing"]["backward_passes"] > 0
    parts = ("setup", "timing", "checks")
    assert sum(un[k]["forward_passes"] for k in parts) == un["forward_passes"]
    recorded = cost["clean"]["forward_passes"] + cost["protocol"]["forward_passes"]
    assert recorded + un["forward_passes"] <= cost["forward_passes"]
