"""Exact cycle detection for fixed-step PGD (issue 21): the shortcut returns what the run
without it returns, bit for bit, and costs fewer propagations where cycles occur.

The expected trajectory of the linear model is worked out by hand below; the trained-model
tests compare against the same PGD with the shortcut off (the reference for *exactness*; PGD
itself is cross-checked against torchattacks in tests/test_attacks.py).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from evalkit.attacks import attack_mode
from evalkit.attacks.pgd import CYCLE_DEPTH, pgd
from evalkit.checkpoint import load_model
from evalkit.data import load_split
from evalkit.errors import EvalkitError
from evalkit.evaluation.units import CostCounter
from evalkit.utils.seeding import make_generator


def _counted(model, *args, **kw) -> tuple[torch.Tensor, int]:
    counter = CostCounter(model)
    try:
        with attack_mode(model):
            out = pgd(model, *args, **kw)
    finally:
        counter.close()
    return out, counter.forward + counter.backward


class TwoClassLinear(nn.Module):
    """logits = (1, w . x): for label 0 the CE gradient's sign on the input is sign(w)."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x.flatten(1) * self.w).sum(1)
        return torch.stack([torch.ones_like(z), z], 1)


def test_a_linear_models_point_leaves_when_it_reaches_the_corner():
    """Hand-computed: x = 0.5 everywhere, label 0, w = (1, -1, 1, -1) * 0.01, eps = 0.1,
    step 0.04, no random start. Each step moves every pixel 0.04 along sign(w) until it
    reaches x +/- eps: x_1 = 0.5 +/- 0.04, x_2 = 0.5 +/- 0.08, x_3 = x_4 = ... = 0.5 +/- 0.1
    (a corner; w . x <= 0.008 < 1, so the point is never broken). The run with cycle detection
    sees x_4 == x_3 after step 4 and stops: 4 gradient steps + 1 last forward instead of 10 + 1,
    i.e. 4 fwd + 4 bwd + 1 fwd = 9 propagations instead of 21."""
    w = torch.tensor([1.0, -1.0, 1.0, -1.0]) * 0.01
    model = TwoClassLinear(w)
    x = torch.full((1, 4), 0.5)
    y = torch.zeros(1, dtype=torch.long)
    kw = dict(steps=10, step_size=0.04, random_start=False, early_stop=True)
    off, cost_off = _counted(model, x, y, 0.1, cycles=0, **kw)
    on, cost_on = _counted(model, x, y, 0.1, cycles=CYCLE_DEPTH, **kw)
    corner = torch.tensor([[0.6, 0.4, 0.6, 0.4]])
    assert torch.allclose(off, corner, atol=1e-7) and torch.equal(on, off)
    assert (cost_off, cost_on) == (21, 9)


def test_a_two_cycle_returns_the_iterate_the_last_step_would_reach():
    """Hand-computed period 2: logit_1 = -100 (x - 0.53)^2, logit_0 = 0, label 0, so the loss
    ascends toward x = 0.53 and never breaks the point (logit_1 <= 0). From x_0 = 0.5 with step
    1/16 (exact in binary): x_1 = 0.5625, x_2 = 0.5 = x_0, x_3 = x_1, ... The iterate after 6
    steps is 0.5 and after 7 steps 0.5625; the shortcut must return the right one for each
    parity, after 2 gradient steps instead of 6 or 7."""

    class Pull(nn.Module):
        def forward(self, x):
            z = -((x.flatten(1) - 0.53) ** 2).sum(1) * 100
            return torch.stack([torch.zeros_like(z), z], 1)

    model = Pull()
    x = torch.full((1, 1), 0.5)
    y = torch.zeros(1, dtype=torch.long)
    for steps, last in ((6, 0.5), (7, 0.5625)):
        kw = dict(steps=steps, step_size=1 / 16, random_start=False, early_stop=True)
        off, cost_off = _counted(model, x, y, 0.125, cycles=0, **kw)
        on, cost_on = _counted(model, x, y, 0.125, cycles=CYCLE_DEPTH, **kw)
        assert off.item() == last and torch.equal(on, off), (steps, on, off)
        assert (cost_off, cost_on) == (2 * steps + 1, 2 * 2 + 1)


@pytest.fixture(scope="module")
def trained(ev_ckpt):
    model, _ = load_model(ev_ckpt)
    split = load_split("fashion-mnist-mini", "test").first(96)
    return model, split.float_batch(torch.arange(len(split))), split.y


@pytest.mark.parametrize("steps", [40, 41])
def test_cycle_detection_is_bit_identical_on_a_trained_model(trained, steps):
    """Per point, the returned iterate with cycle detection equals the one without it, and the
    run costs strictly fewer propagations (else the test would prove nothing)."""
    model, x, y = trained
    kw = dict(steps=steps, step_size=0.03, early_stop=True)
    off, cost_off = _counted(model, x, y, 0.06, generator=make_generator(3), cycles=0, **kw)
    on, cost_on = _counted(model, x, y, 0.06, generator=make_generator(3), **kw)  # default on
    assert torch.equal(on, off)
    assert cost_on < cost_off, (cost_on, cost_off)
    full, _ = _counted(
        model,
        x,
        y,
        0.06,
        generator=make_generator(3),
        steps=steps,
        step_size=0.03,
        keep_best=True,
        cycles=0,
    )
    with torch.no_grad():
        held_on, held_full = model(on).argmax(1) == y, model(full).argmax(1) == y
    assert torch.equal(held_on, held_full) and bool(held_on.any())
    assert torch.equal(on[held_on], full[held_full])  # unbroken points: the same last iterate


def test_cycle_detection_with_restarts_and_cw_loss(trained):
    model, x, y = trained
    kw = dict(steps=30, step_size=0.03, early_stop=True, restarts=2, loss="cw")
    off, cost_off = _counted(model, x, y, 0.06, generator=make_generator(5), cycles=0, **kw)
    on, cost_on = _counted(model, x, y, 0.06, generator=make_generator(5), cycles=4, **kw)
    assert torch.equal(on, off) and cost_on < cost_off


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_targeted_and_l2_runs_are_unchanged(trained, norm):
    """Targeted (the loss descends, success = the target) and L2 runs: the shortcut changes no
    iterate; the default leaves it off for L2 (its steps practically never repeat a state)."""
    model, x, y = trained
    target = (y + 1) % 10
    kw = dict(steps=40, step_size=0.03 if norm == "linf" else 0.5, norm=norm, early_stop=True)
    eps = 0.06 if norm == "linf" else 1.5
    off, _ = _counted(
        model, x, target, eps, generator=make_generator(1), cycles=0, targeted=True, **kw
    )
    on, _ = _counted(
        model, x, target, eps, generator=make_generator(1), cycles=8, targeted=True, **kw
    )
    assert torch.equal(on, off)
    default, _ = _counted(model, x, y, eps, generator=make_generator(1), **kw)
    plain, _ = _counted(model, x, y, eps, generator=make_generator(1), cycles=0, **kw)
    assert torch.equal(default, plain)


def test_the_default_is_on_only_for_long_linf_runs(trained):
    from evalkit.attacks.pgd import CYCLE_MIN_STEPS

    model, x, y = trained
    kw = dict(step_size=0.03, early_stop=True)
    short_default, c1 = _counted(
        model, x, y, 0.06, generator=make_generator(2), steps=CYCLE_MIN_STEPS - 1, **kw
    )
    short_off, c2 = _counted(
        model, x, y, 0.06, generator=make_generator(2), steps=CYCLE_MIN_STEPS - 1, cycles=0, **kw
    )
    assert torch.equal(short_default, short_off) and c1 == c2


def test_cycle_detection_refuses_a_stochastic_model_and_bad_depths():
    model = TwoClassLinear(torch.ones(4))
    x, y = torch.full((2, 4), 0.5), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="cycles must be >= 0"):
        pgd(model, x, y, 0.1, cycles=-1)
    model.stochastic = True  # what SAP declares (evalkit.defenses.context)
    with pytest.raises(EvalkitError, match="deterministic model"):
        pgd(model, x, y, 0.1, cycles=4)
    pgd(model, x, y, 0.1, keep_best=True)  # keep_best alone stays allowed (no shortcut)
