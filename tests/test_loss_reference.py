"""Reference values, worked out by hand, for the training and attack losses of the defenses.

The logits are chosen so every softmax is a vector of simple fractions:

    softmax([0, 0, ln 2])   = [1/4, 1/4, 1/2]        softmax([ln 3, 0, 0])   = [3/5, 1/5, 1/5]
    softmax([ln 2, 0, ln 3]) = [1/3, 1/6, 1/2]       softmax([0, ln 3, ln 2]) = [1/6, 1/2, 1/3]
    softmax([0, 0, 0])      = [1/3, 1/3, 1/3]        softmax([0, ln 2, ln 2]) = [1/5, 2/5, 2/5]

and CE(z, y) = -log softmax(z)_y. Papers followed: TRADES (Zhang et al., ICML 2019),
MART (Wang et al., ICLR 2020), HE (Pang et al., NeurIPS 2020), CAS (Bai et al., ICLR 2021).
"""

from __future__ import annotations

from math import log, sqrt

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from evalkit.attacks.losses import make_loss
from evalkit.defenses.aux_loss import make_head_loss
from evalkit.defenses.he import CosineHead, margin_logits
from evalkit.training.objectives import ObjectiveContext, _kl, _mart_terms

L2, L3 = log(2.0), log(3.0)
NAT = torch.tensor([[0.0, 0.0, L2], [L3, 0.0, 0.0]])  # p = [1/4, 1/4, 1/2], [3/5, 1/5, 1/5]
ADV = torch.tensor([[L2, 0.0, L3], [0.0, L3, L2]])  # p = [1/3, 1/6, 1/2], [1/6, 1/2, 1/3]
Y = torch.tensor([2, 0])

# KL(p_nat || p_adv) = sum_j p_nat_j * log(p_nat_j / p_adv_j), row by row:
#   row 1: 1/4 log((1/4)/(1/3)) + 1/4 log((1/4)/(1/6)) + 1/2 log((1/2)/(1/2))
#        = 1/4 log(3/4) + 1/4 log(3/2) + 0 = 1/4 log(9/8)                      ~= 0.029446
#   row 2: 3/5 log((3/5)/(1/6)) + 1/5 log((1/5)/(1/2)) + 1/5 log((1/5)/(1/3))
#        = 3/5 log(18/5) + 1/5 log(2/5) + 1/5 log(3/5)                          ~= 0.483137
KL_ROW1 = 0.25 * log(9 / 8)
KL_ROW2 = 0.6 * log(18 / 5) + 0.2 * log(2 / 5) + 0.2 * log(3 / 5)


def _ctx(beta: float) -> ObjectiveContext:
    return ObjectiveContext(objective="x", eps=0.0, steps=0, step_size=0.0, beta=beta)


def test_fractions_behind_the_logits():
    assert torch.allclose(
        F.softmax(NAT, 1), torch.tensor([[1 / 4, 1 / 4, 1 / 2], [3 / 5, 1 / 5, 1 / 5]])
    )
    assert torch.allclose(
        F.softmax(ADV, 1), torch.tensor([[1 / 3, 1 / 6, 1 / 2], [1 / 6, 1 / 2, 1 / 3]])
    )
    assert KL_ROW1 == pytest.approx(0.029446, abs=1e-6)
    assert KL_ROW2 == pytest.approx(0.483137, abs=1e-6)


def test_trades_kl_is_batchmean_kl_of_natural_to_adversarial():
    # TRADES: beta * KL(f(x) || f(x')), summed over classes, averaged over the batch (batchmean)
    expected = (KL_ROW1 + KL_ROW2) / 2  # ~= 0.256291
    assert _kl(ADV, NAT).item() == pytest.approx(expected, rel=1e-6)
    # the direction matters: KL(p_adv || p_nat) is a different number
    reverse = (
        (1 / 3) * log((1 / 3) / (1 / 4)) + (1 / 6) * log((1 / 6) / (1 / 4)) + 0.0,
        (1 / 6) * log((1 / 6) / (3 / 5))
        + (1 / 2) * log((1 / 2) / (1 / 5))
        + (1 / 3) * log((1 / 3) / (1 / 5)),
    )
    assert abs(sum(reverse) / 2 - expected) > 1e-2
    assert _kl(NAT, ADV).item() == pytest.approx(sum(reverse) / 2, rel=1e-6)


def test_trades_total_is_natural_ce_plus_beta_kl():
    # CE(f(x), y): row 1 -log(1/2) = log 2; row 2 -log(3/5) = log(5/3); mean over the batch
    ce_nat = (L2 + log(5 / 3)) / 2
    beta = 6.0
    total = F.cross_entropy(NAT, Y) + beta * _kl(ADV, NAT)
    assert total.item() == pytest.approx(ce_nat + beta * (KL_ROW1 + KL_ROW2) / 2, rel=1e-6)


def test_mart_terms_by_hand():
    # BCE(p(x'), y) = -log p_y(x') - log(1.0001 - max_{k != y} p_k(x'))   (official constants)
    #   row 1, y = 2: p_y = 1/2; top class IS y, runner-up = class 0 with 1/3
    #   row 2, y = 0: p_y = 1/6; top class 1 (wrong) with 1/2 is the runner-up
    ce_adv = (-log(1 / 2) - log(1 / 6)) / 2  # = (log 2 + log 6) / 2
    margin = (-log(1.0001 - 1 / 3) - log(1.0001 - 1 / 2)) / 2
    # weight = 1 - p_y(x) on the NATURAL example: row 1 p_2 = 1/2, row 2 p_0 = 3/5
    w = torch.tensor([1.0000001 - 1 / 2, 1.0000001 - 3 / 5])
    beta = 6.0
    kl_weighted = (KL_ROW1 * w[0].item() + KL_ROW2 * w[1].item()) / 2
    expected = ce_adv + margin + beta * kl_weighted  # ~= 1.242453 + 0.549131 + 0.623933
    got = _mart_terms(_ctx(beta), ADV, NAT, Y, w).item()
    assert got == pytest.approx(expected, rel=1e-5)
    assert expected == pytest.approx(2.415518, abs=1e-5)


def test_he_cosine_logits_and_margin_by_hand():
    # features f1 = (3, 4) (norm 5), f2 = (1, 0); class weights w0 = (1, 0), w1 = (0, 2),
    # w2 = (1, 1). cos(f1, w) = (3/5, 8/10, 7/(5 sqrt 2)); cos(f2, w) = (1, 0, 1/sqrt 2)
    s, m = 10.0, 0.2
    head = CosineHead(2, 3, s)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]))
    feat = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    cos = torch.tensor([[3 / 5, 4 / 5, 7 / (5 * sqrt(2))], [1.0, 0.0, 1 / sqrt(2)]])
    logits = head(feat)
    assert torch.allclose(logits, s * cos, atol=1e-5)
    assert logits.abs().max() <= s + 1e-5  # bounded logits: |s cos| <= s
    # HE training logits: s * (cos_y - m) on the true class, s * cos_j elsewhere
    y = torch.tensor([1, 2])
    he = margin_logits(logits, y, {"he_s": s, "he_m": m})
    expected = torch.tensor(
        [[6.0, 10 * (4 / 5 - 0.2), 10 * 7 / (5 * sqrt(2))], [10.0, 0.0, 10 * (1 / sqrt(2) - 0.2)]]
    )
    assert torch.allclose(he, expected, atol=1e-5)
    # the HE loss is CE on those: row 1 logsumexp(6, 6, 9.8995) - 6; row 2 ... - 5.0711
    rows = [log(sum(torch.exp(expected[i]).tolist())) - expected[i, y[i]].item() for i in range(2)]
    assert F.cross_entropy(he, y).item() == pytest.approx(sum(rows) / 2, rel=1e-5)


class _Head(nn.Module):
    """Stands for a CAS block: records fixed auxiliary-head logits."""

    has_aux_head = True

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.aux_logits = logits


class _FixedModel(nn.Module):
    """Final logits FINAL whatever the input; two CAS-style heads with NAT and ADV logits."""

    def __init__(self) -> None:
        super().__init__()
        self.h1, self.h2 = _Head(NAT), _Head(ADV)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return FINAL.clone()


FINAL = torch.tensor([[0.0, 0.0, 0.0], [0.0, L2, L2]])  # p = [1/3, 1/3, 1/3], [1/5, 2/5, 2/5]


def test_cas_joint_attack_loss_by_hand():
    # per example: CE(final) + beta * mean_l CE(head_l), beta = 2
    #   row 1 (y = 2): log 3 + 2 * (log 2 + log 2) / 2 = log 3 + 2 log 2 = log 12
    #   row 2 (y = 0): log 5 + 2 * (log(5/3) + log 6) / 2 = log 5 + log 10 = log 50
    loss = make_loss("ce", joint=True, beta=2.0)
    got = loss(_FixedModel(), torch.zeros(2, 1, 1, 1), Y)
    assert torch.allclose(got, torch.tensor([log(12.0), log(50.0)]), atol=1e-5)
    plain = make_loss("ce")(_FixedModel(), torch.zeros(2, 1, 1, 1), Y)
    assert torch.allclose(plain, torch.tensor([L3, log(5.0)]), atol=1e-5)


def test_cas_joint_training_loss_by_hand():
    # CAS: CE(final) + beta * (1/L) sum_l CE(head_l), each CE a batch mean, beta = 2
    #   CE(final) = (log 3 + log 5) / 2 = log(15) / 2
    #   heads: ((log 2 + log 5/3) / 2 + (log 2 + log 6) / 2) / 2 = log(2 * 5/3 * 2 * 6) / 4
    #        = log(40) / 4;  times beta = 2 -> log(40) / 2
    #   total = (log 15 + log 40) / 2 = log(600) / 2 ~= 3.198465
    model = _FixedModel()
    final = model(torch.zeros(2))
    extra = make_head_loss("cas_beta")(model, final, Y, {"cas_beta": 2.0})
    assert extra.item() == pytest.approx(log(40.0) / 2, rel=1e-6)
    total = F.cross_entropy(final, Y) + extra
    assert total.item() == pytest.approx(log(600.0) / 2, rel=1e-6)
