"""Scoring: P(correct) per candidate, exact 0/1 for deterministic models and Monte Carlo over
``mc_draws`` passes for randomized ones; a point's robust score is the minimum over its clean
input and every candidate. Checked against values computed by hand and against a randomized toy
model whose per-point probabilities of a correct prediction are known by construction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import QUIET

from evalkit.evaluation import evaluate
from evalkit.evaluation.budget import Budget
from evalkit.evaluation.protocol import AttackPlan
from evalkit.evaluation.rundir import unit_key
from evalkit.evaluation.scoring import margins, mc_standard_error, score
from evalkit.evaluation.summary import per_example_table, robust_before, summarize

NAN, INF = float("nan"), float("inf")


pytestmark = pytest.mark.usefixtures("one_thread")


class Logits(nn.Module):
    """Returns its input, flattened, as logits (so a test writes the logits it wants)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


class Cycle(nn.Module):
    """Deterministic stand-in for a random model: call k returns ``table[k % len(table)]``."""

    def __init__(self, table: list[list[list[float]]]) -> None:
        super().__init__()
        self.table = [torch.tensor(t) for t in table]
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.table[self.calls % len(self.table)]
        self.calls += 1
        return out


# ------------------------------------------------------------------------ by hand


def test_margins_by_hand():
    z = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 1.0, -5.0]])
    y = torch.tensor([0, 0, 2])
    assert margins(z, y).tolist() == [1.0, -3.0, -6.0]


def test_exact_scores_by_hand_and_nonfinite_logits_are_wrong():
    """NaN logits argmax to class 0; a label-0 point must still score 0, and be flagged."""
    z = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [NAN, 0.0, 0.0], [INF, 0.0, 0.0]])
    y = torch.zeros(4, dtype=torch.long)
    assert z.argmax(1).tolist()[2] == 0  # the trap: NaN rows argmax to class 0
    s = score(Logits(), z, y, draws=1)
    assert s.p_correct.tolist() == [1.0, 0.0, 0.0, 0.0]
    assert s.pred.tolist() == [0, 1, -2, -2]  # -2: no finite logits
    assert s.margin[:2].tolist() == [1.0, -3.0] and s.margin[2:].isnan().all()
    assert s.nonfinite.tolist() == [False, False, True, True]
    assert s.draws == 1


def test_monte_carlo_scores_by_hand():
    """4 draws of a model cycling through known outputs: p is the fraction of correct draws,
    the prediction the most frequent class, the margin that of the mean logits."""
    a = [[3.0, 0.0], [0.0, 1.0], [0.0, 2.0]]
    b = [[0.0, 1.0], [0.0, 1.0], [NAN, 0.0]]
    model = Cycle([a, a, a, b])
    y = torch.tensor([0, 0, 1])
    s = score(model, torch.zeros(3, 1), y, draws=4)
    assert model.calls == 4
    assert s.p_correct.tolist() == [0.75, 0.0, 0.75]  # the NaN draw counts as wrong
    assert s.pred.tolist() == [0, 1, 1]
    # mean of the finite logits over all 4 draws (a non-finite draw contributes zeros), then
    # the margin; a point with any non-finite draw has margin NaN
    assert s.margin[0].item() == pytest.approx((9 / 4 - 0) - 1 / 4)
    assert s.margin[1].item() == pytest.approx(0 - 1)
    assert math.isnan(s.margin[2].item()) and s.nonfinite.tolist() == [False, False, True]


def test_mc_standard_error_by_hand():
    assert mc_standard_error([0.5, 0.5], 4) == pytest.approx(math.sqrt(2 * 0.25 / 4) / 2)
    assert mc_standard_error([1.0, 0.0, 1.0], 20) == 0.0
    assert mc_standard_error([0.5], 1) == 0.0  # one draw: exact semantics, no MC error
    assert mc_standard_error([], 20) == 0.0


def _plans() -> list[AttackPlan]:
    return [AttackPlan("a1", "pgd", "pgd"), AttackPlan("a2", "pgd", "pgd")]


def _records() -> dict[str, dict]:
    """4 points in one batch: clean p = (1, 1, 0.5, 0); attack a1 then a2 on the points alive
    (p > 0) after a1."""
    recs = {
        unit_key("clean", 0): {
            "key": unit_key("clean", 0),
            "kind": "clean",
            "batch": 0,
            "index": [0, 1, 2, 3],
            "label": [0, 1, 0, 1],
            "pred": [0, 1, 0, 0],
            "margin": [1.0, 2.0, 0.1, -1.0],
            "p": [1.0, 1.0, 0.5, 0.0],
        }
    }

    def attack(pid: str, index: list[int], p: list[float]) -> None:
        key = unit_key("attack", 0, pid, "e")
        recs[key] = {
            "key": key,
            "kind": "attack",
            "attack": pid,
            "eps": "e",
            "batch": 0,
            "index": index,
            "pred": [0] * len(index),
            "margin": [0.0] * len(index),
            "norm": [0.01] * len(index),
            "p": p,
            "fwd": 10,
            "bwd": 10,
        }

    attack("a1", [0, 1, 2], [0.8, 1.0, 0.9])
    attack("a2", [0, 1, 2], [0.9, 0.0, 0.2])
    return recs


def test_robust_score_is_the_minimum_over_candidates_by_hand():
    plans, budgets = _plans(), [Budget("e", 0.1, "linf")]
    recs = _records()
    df = per_example_table(recs, plans, budgets, compaction=True)
    # point 0: min(1, .8, .9) = .8 (a1 broke it first); point 1: a2 broke it; point 2: min(.5,
    # .9, .2) = .2 (clean was lower than a1, then a2 lowered it); point 3: wrong when clean
    assert df["worst@e:score"].tolist() == pytest.approx([0.8, 0.0, 0.2, 0.0])
    assert df["worst@e:broken_by"].tolist() == ["a1", "a2", "a2", "clean"]
    assert df["worst@e:robust"].tolist() == [False, False, False, False]
    assert df["a1@e:score"].tolist() == pytest.approx([0.8, 1.0, 0.5, 0.0])  # cumulative
    assert np.isnan(df.loc[3, "a1@e:p"]) and df.loc[3, "a1@e:pred"] == -1  # never attacked
    assert df["clean_correct"].tolist() == [True, True, False, False]
    numbers = summarize(df, recs, plans, budgets, True, 2, draws=10)
    assert numbers["clean_accuracy"] == pytest.approx(2.5 / 4)
    assert numbers["clean_accuracy_all_draws"] == pytest.approx(2 / 4)
    worst = numbers["worst_case"][0]
    assert worst["robust_accuracy"] == pytest.approx(1.0 / 4)
    assert worst["robust_accuracy_all_draws"] == 0.0 and worst["n_robust"] == 0
    assert worst["mc_std_error"] == pytest.approx(math.sqrt((0.8 * 0.2 + 0.2 * 0.8) / 10) / 4)
    assert worst["broken_by"] == {"a2": 2, "a1": 1, "clean": 1}
    assert numbers["scoring"]["semantics"] == "monte-carlo"
    assert numbers["cost"]["protocol"]["forward_passes"] == 20
    # without compaction each attack's score is its own minimum with the clean input
    df = per_example_table(recs, plans, budgets, compaction=False)
    assert df["a2@e:score"].tolist() == pytest.approx([0.9, 0.0, 0.2, 0.0])
    assert df["a1@e:score"].tolist() == pytest.approx([0.8, 1.0, 0.5, 0.0])


def test_compaction_keeps_points_some_draws_still_classify_correctly():
    """A randomized point leaves the waterfall only when its estimate reaches 0."""
    recs = _records()
    plans = _plans()
    assert robust_before(recs, 0, plans, 0, "e", True) == {0: True, 1: True, 2: True, 3: False}
    assert robust_before(recs, 0, plans, 2, "e", True) == {0: True, 1: False, 2: True, 3: False}
    assert robust_before(recs, 0, plans, 2, "e", False) == {0: True, 1: True, 2: True, 3: False}


# ------------------------------------------------- a model with known probabilities

K_CLASSES = 4


class Coin(nn.Module):
    """A randomized classifier with known per-point P(correct).

    Input (N, 1, 4, 4) in [0, 1]: pixel (0, 0, 0) holds ``q``, pixel (0, 0, 1) holds the class
    ``c / (K - 1)``. Each forward draws ``u ~ U(0, 1)`` per point from torch's global RNG and
    predicts ``c`` when ``u < q``, else ``c + 1 mod K``; so P(correct | label c) = q exactly.
    Its logits have zero input gradient, so attacks leave the input unchanged and every
    candidate is again correct with probability q.
    """

    stochastic = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = x[:, 0, 0, 0]
        c = (x[:, 0, 0, 1] * (K_CLASSES - 1)).round().long()
        u = torch.rand(q.shape, device=x.device)
        pred = torch.where(u < q, c, (c + 1) % K_CLASSES)
        return 4.0 * F.one_hot(pred, K_CLASSES).float() + 0.0 * x.flatten(1).sum(1, keepdim=True)


def _coin_data(n: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    q = torch.linspace(0.0, 1.0, n)
    y = torch.arange(n) % K_CLASSES
    x = torch.zeros(n, 1, 4, 4)
    x[:, 0, 0, 0] = q
    x[:, 0, 0, 1] = y.float() / (K_CLASSES - 1)
    return x, y, q


def test_monte_carlo_estimates_match_known_probabilities():
    """Per point, |p - q| <= 4 standard errors sqrt(q (1 - q) / K) of K draws (a one-draw
    scorer gives |p - q| = 0.5 at q = 0.5, beyond 4 s.e. = 0.32 for K = 40, so it fails);
    the mean within 4 s.e. of the mean; q = 0 and q = 1 exact."""
    draws = 40
    x, y, q = _coin_data()
    result = evaluate(
        Coin(),
        (x, y),
        attacks="fgsm",
        eot=2,
        mc_draws=draws,
        sanity=False,
        seed=3,
        shattered="run",
        **QUIET,
    )
    summary, df = result.summary, result.examples
    assert summary["scoring"]["semantics"] == "monte-carlo"
    assert summary["scoring"]["draws"] == draws and summary["protocol"]["mc_draws"] == draws
    p = torch.tensor(df["clean_p"].to_numpy(), dtype=torch.float64)
    qd = q.double()
    se = (qd * (1 - qd) / draws).sqrt()
    assert ((p - qd).abs() <= 4 * se + 1e-9).all(), (p - qd).abs().max()
    assert p[0] == 0.0 and p[-1] == 1.0
    assert ((p * draws).round() - p * draws).abs().max() < 1e-6  # multiples of 1/K
    # the mean: clean accuracy is mean q within 4 s.e. of the mean of n independent estimates
    se_mean = math.sqrt(float((qd * (1 - qd) / draws).sum())) / len(q)
    assert abs(summary["clean_accuracy"] - float(q.mean())) <= 4 * se_mean
    assert 0.5 * se_mean <= summary["clean_mc_std_error"] <= 1.5 * se_mean
    assert summary["clean_accuracy_all_draws"] == pytest.approx(float((p == 1).double().mean()))
    assert df["clean_correct"].tolist() == (p == 1).tolist()
    # the attack's candidate (unchanged input) is scored over K fresh draws too; the robust
    # score is the minimum of the two estimates, and points at p = 0 were never attacked
    adv = torch.tensor(df["fgsm@8/255:p"].to_numpy(), dtype=torch.float64)
    attacked = ~adv.isnan()
    assert attacked.tolist() == (p > 0).tolist()
    assert ((adv[attacked] - qd[attacked]).abs() <= 4 * se[attacked] + 1e-9).all()
    worst = torch.tensor(df["worst@8/255:score"].to_numpy(), dtype=torch.float64)
    expected = torch.where(attacked, torch.minimum(p, adv.nan_to_num(1.0)), p)
    assert torch.equal(worst, expected)
    assert summary["worst_case"][0]["robust_accuracy"] == pytest.approx(float(worst.mean()))
    assert summary["worst_case"][0]["robust_accuracy"] < summary["clean_accuracy"]


def test_randomness_is_detected_without_a_declaration():
    """A random model that declares nothing is found by the probe and still scored by MC."""

    class Undeclared(Coin):
        stochastic = False

    x, y, _ = _coin_data(16)
    summary = evaluate(
        Undeclared(),
        (x, y),
        attacks="fgsm",
        eot=1,
        mc_draws=8,
        sanity=False,
        shattered="run",
        **QUIET,
    ).summary
    assert summary["traits"]["random_detected"] is True
    assert summary["scoring"]["semantics"] == "monte-carlo" and summary["scoring"]["draws"] == 8
    flag = next(f for f in summary["flags"] if f["id"] == "randomness_detected")
    assert flag["severity"] == "warning"


def test_deterministic_models_keep_exact_scores():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x = torch.rand(24, 1, 4, 4)
    with torch.no_grad():
        pred = net(x).argmax(1)
    y = torch.where(torch.arange(24) % 3 == 0, (pred + 1) % 3, pred)  # every 3rd point wrong
    result = evaluate(net, (x, y), attacks="fgsm", mc_draws=50, sanity=False, **QUIET)
    summary, df = result.summary, result.examples
    assert summary["scoring"]["semantics"] == "exact" and summary["scoring"]["draws"] == 1
    assert summary["protocol"]["mc_draws"] == 1
    assert df["clean_p"].tolist() == (pred == y).double().tolist()
    assert summary["clean_accuracy"] == pytest.approx(16 / 24)
    assert summary["clean_mc_std_error"] == 0.0
    assert summary["cost"]["clean"]["forward_passes"] == 24  # one pass, not 50


def test_sap_clean_accuracy_equals_the_mean_over_draws(ev_ckpt):
    """Issue 10 acceptance: SAP on a trained small CNN, the reported clean accuracy equals an
    independent mean over 20 draws within the Monte-Carlo error of both estimates."""
    from evalkit.attacks.mode import attack_mode
    from evalkit.checkpoint import load_model
    from evalkit.data import load_split

    draws, n = 20, 64
    result = evaluate(
        ev_ckpt, attacks="fgsm", n=n, eot=2, mc_draws=draws, defense="sap", sanity=False, **QUIET
    )
    model, _ = load_model(ev_ckpt, defense="sap")
    data = load_split("fashion-mnist-mini", "test").first(n)
    x = data.float_batch(slice(0, n))
    torch.manual_seed(123)
    with attack_mode(model), torch.no_grad():
        correct = torch.stack([model(x).argmax(1) == data.y for _ in range(draws)]).double()
    p_ref = correct.mean(0)
    assert 0 < float(p_ref.mean()) < 1 and ((p_ref > 0) & (p_ref < 1)).any()  # really random
    p = torch.tensor(result.examples["clean_p"].to_numpy(), dtype=torch.float64)
    var = (p_ref * (1 - p_ref) / draws).sum() + (p * (1 - p) / draws).sum()
    tol = 4 * math.sqrt(float(var)) / n + 1e-9
    assert abs(result.summary["clean_accuracy"] - float(p_ref.mean())) <= tol
    summary = result.summary
    assert summary["scoring"]["semantics"] == "monte-carlo"
    assert summary["clean_accuracy_all_draws"] <= summary["clean_accuracy"]
    assert summary["clean_accuracy_all_draws"] == pytest.approx(float((p == 1).double().mean()))
