"""One mode context (issue 20): every place that sets a mode for a block gives each module its
own mode back, so a mixed model (one BatchNorm training, one frozen in eval) stays mixed, and
the public attacks put the model in eval mode themselves, so a direct call is safe.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from analysis.common import eval_mode
from evalkit.attacks import apgd, attack_mode, cw_inf, fgsm, pgd
from evalkit.defenses.sites import site_channels
from evalkit.models.wrap import probe_model
from evalkit.training.objectives import ObjectiveContext, craft, trades_loss
from evalkit.utils.mode import model_mode

pytestmark = pytest.mark.usefixtures("one_thread")


class Mixed(nn.Module):
    """conv-BN-conv-BN-linear; ``bn_a`` training, ``bn_b`` frozen (eval), the root training.

    Each forward records which BatchNorms were in train mode, so a test sees the mode the model
    was *run* in, not only the one it is left in."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_a, self.bn_a = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv_b, self.bn_b = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 3)
        self.seen: list[tuple[bool, bool]] = []
        self.train()
        self.bn_b.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append((self.bn_a.training, self.bn_b.training))
        h = torch.relu(self.bn_a(self.conv_a(x)))
        h = torch.relu(self.bn_b(self.conv_b(h)))
        return self.head(h.mean((2, 3)))


def _modes(model: nn.Module) -> dict[str, bool]:
    return {name: m.training for name, m in model.named_modules()}


MIXED = {"": True, "conv_a": True, "bn_a": True, "conv_b": True, "bn_b": False, "head": True}


@pytest.fixture
def model() -> Mixed:
    torch.manual_seed(0)
    m = Mixed()
    assert _modes(m) == MIXED
    return m


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(4, 1, 8, 8, generator=g), torch.tensor([0, 1, 2, 0])


def _ran_in_eval(model: Mixed) -> bool:
    return bool(model.seen) and all(s == (False, False) for s in model.seen)


def test_model_mode_restores_module_by_module(model):
    with model_mode(model, False):
        assert not any(_modes(model).values())
    assert _modes(model) == MIXED
    with pytest.raises(RuntimeError), model_mode(model, True):
        assert all(_modes(model).values())
        raise RuntimeError("restored on error too")
    assert _modes(model) == MIXED


def test_attack_mode_restores_modes_and_grad_flags(model):
    model.head.weight.requires_grad_(False)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    with attack_mode(model):
        assert not any(_modes(model).values())
        assert not any(p.requires_grad for p in model.parameters())
    assert _modes(model) == MIXED
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags


def test_outer_attack_mode_decides_for_nested_attacks(model, batch):
    """``training=None`` keeps the caller's modes, also for the attack called inside."""
    with attack_mode(model, training=None):
        pgd(model, *batch, 8 / 255, steps=2)
    assert model.seen and all(s == (True, False) for s in model.seen)
    assert _modes(model) == MIXED


@pytest.mark.parametrize(
    "attack",
    [
        lambda m, x, y: pgd(m, x, y, 8 / 255, steps=2),
        lambda m, x, y: fgsm(m, x, y, 8 / 255),
        lambda m, x, y: cw_inf(m, x, y, 8 / 255, steps=2),
        lambda m, x, y: apgd(m, x, y, eps=8 / 255, n_iter=2),
    ],
    ids=["pgd", "fgsm", "cw_inf", "apgd"],
)
def test_direct_attack_calls_run_in_eval_and_restore(model, batch, attack):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    attack(model, *batch)
    assert _ran_in_eval(model), model.seen
    assert _modes(model) == MIXED
    for k, v in model.state_dict().items():  # train-mode BN would have moved its statistics
        assert torch.equal(v, before[k]), k


def test_analysis_eval_mode(model, batch):
    with eval_mode(model):
        model(batch[0])
    assert _ran_in_eval(model)
    assert _modes(model) == MIXED


def _ctx(attack_bn: str) -> ObjectiveContext:
    return ObjectiveContext(
        objective="trades", eps=8 / 255, steps=2, step_size=2 / 255, beta=6.0, attack_bn=attack_bn
    )


def test_training_craft_eval_bn(model, batch):
    craft(model, *batch, _ctx("eval"), "ce", torch.Generator().manual_seed(0))
    assert _ran_in_eval(model)
    assert _modes(model) == MIXED


def test_training_craft_train_bn_keeps_the_trainers_modes(model, batch):
    craft(model, *batch, _ctx("train"), "ce", torch.Generator().manual_seed(0))
    assert model.seen and all(s == (True, False) for s in model.seen)
    assert _modes(model) == MIXED


def test_trades_natural_pass_restores(model, batch):
    trades_loss(model, model, *batch, _ctx("eval"), torch.Generator().manual_seed(0))
    assert _modes(model) == MIXED
    assert model.seen[0] == (False, False)  # p_nat under eval BN, as TRADES crafts
    assert model.seen[-1] == (True, False)  # the training forwards in the caller's modes


def test_probe_model(model, batch):
    _, k = probe_model(model, batch[0])
    assert k == 3
    assert _ran_in_eval(model)
    assert _modes(model) == MIXED


def test_site_channels(model):
    assert site_channels(model, ("bn_a", "conv_b")) == {"bn_a": 4, "conv_b": 4}
    assert _modes(model) == MIXED


def test_count_classes(model, batch):
    from evalkit.evaluation.inputs import count_classes

    assert count_classes(model, batch[0]) == 3
    assert _ran_in_eval(model)
    assert _modes(model) == MIXED
