"""Sanity checks: each must stay silent on an honest model and fire on a model built to fool
gradient attacks (gradients cut by a detach, or outputs that change on every call)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from evalkit.attacks.losses import make_loss
from evalkit.attacks.registry import ATTACKS
from evalkit.checkpoint import load_model
from evalkit.data import load_split
from evalkit.evaluation import sanity as S
from evalkit.evaluation.compat import is_model_random


class Detached(nn.Module):
    """Same predictions as ``inner`` but no input gradient: the textbook gradient masker."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x).detach() + (0.0 * x).flatten(1).sum(1, keepdim=True)


class Noisy(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) + 0.5 * torch.randn(x.shape[0], 10)


@pytest.fixture(scope="module")
def honest(ev_ckpt):
    model, _ = load_model(ev_ckpt)
    data = load_split("fashion-mnist-mini", "test").first(200)
    x, y = data.float_batch(slice(0, 200)), data.y
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    return model, x[ok][:32], y[ok][:32]


def test_gradient_check(honest):
    model, x, y = honest
    assert S.check_gradients(model, x, y, make_loss("ce")) == []
    flags = S.check_gradients(Detached(model), x, y, make_loss("ce"))
    assert [f["id"] for f in flags] == ["zero_gradients"] and flags[0]["severity"] == "warning"


def test_huge_eps_check(honest):
    model, x, y = honest
    assert S.check_huge_eps(model, x, y, make_loss("ce"), 10, seed=0) == []
    flags = S.check_huge_eps(Detached(model), x, y, make_loss("ce"), 10, seed=0)
    assert flags and flags[0]["id"] == "accuracy_above_chance_at_huge_eps"
    assert flags[0]["accuracy"] > 0.1


def test_square_beats_masked_white_box(honest):
    model, x, y = honest
    masked = Detached(model)
    # every white-box attack fails on the masked model; Square (queries only) does not
    flags = S.check_square(
        masked, x[:12], y[:12], "24/255", 24 / 255, "linf", seed=0, registry=ATTACKS, n_queries=100
    )
    assert flags and flags[0]["id"] == "black_box_beats_white_box"


def test_randomness_probe():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()
    x = torch.rand(4, 1, 28, 28)
    assert not is_model_random(net, x)
    assert is_model_random(Noisy(net), x)


def test_eps_monotone_check():
    ok = {
        "worst_case": [
            {"eps": "8/255", "eps_value": 8 / 255, "n_robust": 3, "robust_accuracy": 0.3},
            {"eps": "4/255", "eps_value": 4 / 255, "n_robust": 5, "robust_accuracy": 0.5},
        ]
    }
    assert S.check_eps_monotone(ok) == []
    bad = {
        "worst_case": [
            {**ok["worst_case"][0], "n_robust": 6, "robust_accuracy": 0.6},
            ok["worst_case"][1],
        ]
    }
    assert S.check_eps_monotone(bad)[0]["id"] == "accuracy_not_falling_with_eps"


def test_sanity_flags_in_a_real_run(ev_ckpt, monkeypatch):
    """End to end with sanity on: an honest model gets no warnings, and the run records it."""
    from evalkit.evaluation import EvalConfig, evaluate

    monkeypatch.setattr(S, "SQUARE_QUERIES", 50)  # keep the Square probe cheap in tests
    monkeypatch.setattr(S, "SQUARE_N", 8)
    summary = evaluate(
        EvalConfig(
            ckpt=ev_ckpt,
            attacks="fgsm",
            eps="8/255",
            n=24,
            batch_size=24,
            progress=False,
            echo=False,
        )
    )
    assert summary["protocol"]["sanity"] is True
    assert [f for f in summary["flags"] if f["severity"] != "info"] == []
