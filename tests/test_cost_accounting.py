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


def test_the_forecast_is_the_mean_with_jeffreys_pseudo_points():
    """Hand-computed (Jeffreys' half pseudo-points): clean pass 100 propagations, 40 points to
    attack, upper bound 50 per point. After a batch of 10 attacked points costing 300: per point
    (300 + 25) / (10 + 1) = 29.5454..., so expected = 100 + 300 + 29.5454... * 30 = 1286.36 ->
    1286; after the next 10 for 200 more: (500 + 25) / 21 = 25, expected = 100 + 500 + 25 * 20
    = 1100."""
    from evalkit.evaluation.engine import _Progress

    seen = []
    bar = _Progress(10_000, False, seen.append, bound_per_point=50)
    bar.spent(100)
    bar.expect(40)
    bar.spent(300)
    bar.finished(10, 300)
    bar.spent(200)
    bar.finished(10, 200)
    bar.close()
    assert [(f.expected, f.spent, f.points_done) for f in seen] == [
        (1286, 400, 10),
        (1100, 600, 20),
    ]


def test_a_run_says_and_keeps_its_forecast(ev_ckpt, capsys):
    s = evaluate(ev_ckpt, attacks="pgd", eps="0.1", n=96, batch_size=32, seed=0, progress=False)
    out = capsys.readouterr().out
    est = s.summary["cost"]["estimate"]
    actual = sum(
        s.summary["cost"][k]["forward_passes"] + s.summary["cost"][k]["backward_passes"]
        for k in ("clean", "protocol")
    )
    assert f"~{est['expected']:,} propagations" in out and "planned cost: at most" in out
    assert est["from_points"] < est["points"] and est["upper_bound"] >= actual
    assert 0.5 < est["expected"] / actual < 2, (est, actual)
