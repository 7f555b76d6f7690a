"""Masking diagnostics: a model whose prediction is decided by a selection plain gradients
cannot see gets the flag; a plain model does not; the numbers are independent of compaction
and their breaks count in the worst case."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn as nn
from helpers import QUIET, one_thread

import evalkit
from evalkit.evaluation.diagnostics import MASKING_GAP, diagnostic_plans
from evalkit.evaluation.intervals import paired_difference, wilson
from evalkit.evaluation.protocol import ModelTraits


class SelectedByArgmax(nn.Module):
    """A CAS-like head decides the output through its argmax alone.

    The head is a linear classifier of the flattened input; the final logits are ``10 *
    one_hot(argmax(head))`` plus a term with zero gradient, so plain CE gradients of the output
    are exactly 0 everywhere (plain PGD only has its random start) while the joint loss moves
    the head and, through the argmax, the prediction."""

    has_aux_head = True

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.head = nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            self.head.weight.copy_(w)
            self.head.bias.copy_(-0.5 * w.sum(1))  # decide on the mean pixel against 0.5
        self.aux_logits: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.head(x.flatten(1))
        self.aux_logits = z
        pick = torch.nn.functional.one_hot(z.argmax(1), z.shape[1]).float()
        return 10.0 * pick + 0.0 * z

    def readout(self):
        z = self.aux_logits
        return z, z.argmax(1, keepdim=True), self.head.weight[z.argmax(1)]


def _separable_data(n: int = 96, seed: int = 0):
    """Two classes of 1x4x4 images a unit direction separates with margin 0.15 in Linf terms."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.full((n, 1, 4, 4), 0.5)
    sign = (2 * y - 1).float().view(-1, 1, 1, 1)
    x = x + sign * (0.15 + 0.05 * torch.rand(n, 1, 1, 1, generator=g))
    w = torch.stack([-torch.ones(16), torch.ones(16)])  # class 1 iff mean pixel > 0.5
    return x.clamp(0, 1), y, w


def evaluate_shattered(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    """The output's own gradient is zero by construction: run the blind plain attacks anyway
    (``shattered="run"``) so the diagnostics can show what only the joint loss sees."""
    return evalkit.evaluate(
        model, (x, y), eps="0.3", preset="pgd", n=len(y), shattered="run", **QUIET
    )


def test_selection_model_is_flagged_and_every_break_counts():
    x, y, w = _separable_data()
    model = SelectedByArgmax(w)
    with one_thread():
        r = evaluate_shattered(model, x, y)
    d = r.diagnostics
    assert d is r.summary["diagnostics"]
    e = d["per_eps"][0]
    plain = e["attacks"][d["plain"]]["robust_accuracy"]["value"]
    joint = e["attacks"][d["adaptive"][0]]["robust_accuracy"]["value"]
    # eps 0.3 > margin 0.2: the joint loss pushes every point across; zero plain gradients
    # leave all of them robust (the random start alone cannot cross a 0.15 margin on 16 pixels)
    assert plain == 1.0 and joint == 0.0
    assert e["gradient_masking_suspected"] is True
    assert e["gap_worst"]["low"] > MASKING_GAP
    flags = {f["id"] for f in r.summary["flags"]}
    assert "gradient_masking_suspected" in flags
    # the head decides the output: it agrees on every point, and only the joint attack flips it
    head = e["heads"][0]
    assert head["agreement_with_output"]["value"] == 1.0
    assert head["selection_flip"][d["adaptive"][0]]["value"] == 1.0
    assert head["selection_flip"][d["plain"]]["value"] == 0.0
    # the protocol's own joint PGD also breaks them all: the worst case is 0 either way
    assert r.robust_accuracy == 0.0


def test_diagnostic_breaks_join_the_worst_case():
    """A break only a diagnostic attack found lowers the worst case and is attributed to it."""
    from evalkit.evaluation.budget import Budget
    from evalkit.evaluation.protocol import default_pgd
    from evalkit.evaluation.summary import per_example_table

    plan = default_pgd()
    diag = diagnostic_plans([plan], ModelTraits(aux_heads=True))[1]
    bud = Budget("0.1", 0.1, "linf")
    common = {"margin": [1.0, 1.0], "norm": [0.1, 0.1], "index": [0, 1], "eps": "0.1"}
    records = {
        "clean|0": {
            "kind": "clean",
            "batch": 0,
            "index": [0, 1],
            "label": [0, 1],
            "pred": [0, 1],
            "margin": [1.0, 1.0],
            "p": [1.0, 1.0],
        },
        "a": {**common, "kind": "attack", "attack": plan.id, "pred": [0, 1], "p": [1.0, 1.0]},
        "d": {**common, "kind": "diagnostic", "attack": diag.id, "pred": [1, 1], "p": [0.0, 1.0]},
    }
    df = per_example_table(records, [plan, diag], [bud], compaction=True)
    assert df["worst@0.1:robust"].tolist() == [False, True]
    assert df["worst@0.1:broken_by"].tolist() == [diag.id, ""]


def test_plain_model_runs_no_diagnostics_unless_asked(atk_model, atk_data):
    x, y = atk_data
    with one_thread():
        r = evalkit.evaluate(atk_model, (x, y), eps="0.05", preset="pgd", n=32, **QUIET)
        assert r.summary["diagnostics"] is None
        forced = evalkit.evaluate(
            atk_model, (x, y), eps="0.05", preset="pgd", n=32, diagnostics=True, **QUIET
        )
    assert forced.summary["diagnostics"] is None  # nothing adaptive to compare with


def test_diagnostic_plans_follow_the_traits():
    plain = ModelTraits()
    assert diagnostic_plans([], plain) == []
    ids = [p.id for p in diagnostic_plans([], ModelTraits(aux_heads=True, mask_gradients=True))]
    assert ids == ["diag:pgd-20", "diag:pgd-20-joint", "diag:pgd-20-mask"]
    he = diagnostic_plans([], ModelTraits(bounded_logits=True, num_classes=2))
    assert [p.loss for p in he] == ["ce", "cw"]  # DLR needs 3 classes


def test_wilson_and_paired_difference_by_hand():
    # Wilson for 8/10 (textbook value 0.4902, 0.9433)
    low, high = wilson(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    # the paired interval's coverage, by simulation of correlated paired outcomes
    rng = random.Random(1)
    for pa, pb, rho, n in ((0.7, 0.62, 0.8, 150), (0.6, 0.4, 0.0, 80)):
        hits = 0
        for _ in range(600):
            a, b = [], []
            for _ in range(n):
                u = rng.random()
                a.append(u < pa)
                b.append(u < pb if rng.random() < rho else rng.random() < pb)
            _, lo, hi = paired_difference(a, b)
            hits += lo <= pa - pb <= hi
        assert 0.91 <= hits / 600 <= 0.985
    same = [True, False] * 20
    d, lo, hi = paired_difference(same, same)
    assert d == 0 and lo <= 0 <= hi
    with pytest.raises(ValueError):
        paired_difference([True], [True, False])
