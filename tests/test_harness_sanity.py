"""Sanity checks: each must stay silent on an honest model and fire on a model built to fool
gradient attacks (gradients cut by a detach, or outputs that change on every call); together
they stay within their budget, and a check that cannot fit says so."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from helpers import QUIET

from evalkit.attacks.eot import is_model_random
from evalkit.attacks.losses import make_loss
from evalkit.checkpoint import load_model
from evalkit.data import load_split
from evalkit.evaluation import evaluate
from evalkit.evaluation import sanity as S
from evalkit.evaluation.protocol import ModelTraits

pytestmark = pytest.mark.usefixtures("one_thread")


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
    return model, x[ok][:64], y[ok][:64]


def test_gradient_check(honest):
    model, x, y = honest
    assert S.check_gradients(model, x[:32], y[:32], make_loss("ce")) == []
    flags = S.check_gradients(Detached(model), x[:32], y[:32], make_loss("ce"))
    assert [f["id"] for f in flags] == ["zero_gradients"] and flags[0]["severity"] == "warning"


def test_huge_eps_check(honest):
    model, x, y = honest
    x, y = x[:32], y[:32]
    assert S.check_huge_eps(model, x, y, make_loss("ce"), 10, seed=0) == []
    flags = S.check_huge_eps(Detached(model), x, y, make_loss("ce"), 10, seed=0)
    assert flags and flags[0]["id"] == "accuracy_above_chance_at_huge_eps"
    assert flags[0]["accuracy"] > 0.1


def test_square_probe_beats_masked_white_box_and_counts(honest):
    """Every white-box attack fails on the masked model; the Square probe does not, and its
    breaks are counted in the worst case (issue 10: they used to be a warning only)."""
    model, x, y = honest
    result = evaluate(
        Detached(model), (x, y), attacks="fgsm,pgd", eps="24/255", seed=0, shattered="run", **QUIET
    )
    summary, df = result.summary, result.examples
    ids = [f["id"] for f in summary["flags"]]
    assert "black_box_beats_white_box" in ids and "zero_gradients" in ids
    probe = [r for r in summary["results"] if r["attack"] == "square-probe"]
    assert len(probe) == 1 and probe[0]["probe"] is True and probe[0]["n_broken"] > 0
    by_probe = df["worst@24/255:broken_by"] == "square-probe"
    assert int(by_probe.sum()) == probe[0]["n_broken"]
    assert (df.loc[by_probe, "square-probe@24/255:p"] == 0).all()
    white = next(r for r in summary["results"] if r["attack"] == "pgd-20")
    assert summary["worst_case"][0]["n_robust"] == white["n_robust"] - probe[0]["n_broken"]
    assert summary["worst_case"][0]["broken_by"]["square-probe"] == probe[0]["n_broken"]


def test_randomness_probe():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()
    x = torch.rand(4, 1, 28, 28)
    assert not is_model_random(net, x)
    assert is_model_random(Noisy(net), x)


def test_randomness_and_nonfinite_flags():
    assert S.randomness_flags(ModelTraits(), 1) == []
    declared = S.randomness_flags(ModelTraits(stochastic=True), 20)
    assert declared[0]["id"] == "randomness_detected" and declared[0]["severity"] == "info"
    found = S.randomness_flags(ModelTraits(random_detected=True), 20)
    assert found[0]["severity"] == "warning" and "20 passes" in found[0]["message"]
    clean = {"nonfinite_clean_logits": 0, "results": [{"nonfinite_logits": 0}]}
    assert S.nonfinite_flags(clean) == []
    bad = {"nonfinite_clean_logits": 2, "results": [{"nonfinite_logits": 1}]}
    flag = S.nonfinite_flags(bad)[0]
    assert flag["id"] == "nonfinite_logits" and "counted as wrong" in flag["message"]


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


def test_ball_violation_check():
    summary = {"results": [{"attack": "x", "eps": "8/255", "ball_violations": 3}]}
    assert S.check_ball_violations(summary)[0]["severity"] == "error"
    assert S.check_ball_violations({"results": [{"ball_violations": 0}]}) == []


def test_sanity_flags_in_a_real_run(ev_ckpt):
    """End to end with sanity on: an honest model gets no warnings, the run records the checks'
    cost within its share, and the probe's budget is respected."""
    result = evaluate(ev_ckpt, attacks="fgsm,pgd", eps="8/255", n=48, batch_size=24, **QUIET)
    summary = result.summary
    assert summary["protocol"]["sanity"] is True
    assert [f for f in summary["flags"] if f["severity"] != "info"] == []
    cost = summary["cost"]["sanity"]
    assert cost["limit_share"] == S.BUDGET_SHARE == 0.25
    assert 0 < cost["propagations"] and cost["share_of_protocol"] <= 0.25
    proto = summary["cost"]["protocol"]
    assert cost["propagations"] <= 0.25 * (proto["forward_passes"] + proto["backward_passes"])


def test_a_check_that_cannot_fit_says_so(ev_ckpt):
    """A protocol too cheap to pay for the checks gets an info flag per check, not silence."""
    summary = evaluate(ev_ckpt, attacks="fgsm", eps="8/255", n=4, batch_size=4, **QUIET).summary
    over = [f for f in summary["flags"] if f["id"] == "sanity_check_over_budget"]
    assert over, summary["flags"]
    assert {f["check"] for f in over} <= {"gradient", "huge-eps PGD", "Square probe"}
    assert all("did not run" in f["message"] for f in over)
    assert summary["cost"]["sanity"]["share_of_protocol"] <= 0.25


def test_no_sanity_records_that_it_was_off(ev_ckpt):
    summary = evaluate(ev_ckpt, attacks="fgsm", n=8, sanity=False, **QUIET).summary
    assert summary["protocol"]["sanity"] is False
    assert summary["cost"]["sanity"]["propagations"] == 0
    assert not [r for r in summary["results"] if r["probe"]]


def test_each_probe_is_one_result_per_eps(ev_ckpt):
    """The Square probe runs once per eps and appears once per eps in results and the table."""
    result = evaluate(ev_ckpt, attacks="pgd,cw", eps="2/255,8/255", n=48, batch_size=16, **QUIET)
    summary = result.summary
    pairs = [(r["attack"], r["eps"]) for r in summary["results"]]
    assert len(pairs) == len(set(pairs)), pairs
    probes = [r for r in summary["results"] if r["probe"]]
    assert sorted(r["eps"] for r in probes) == ["2/255", "8/255"]
    table = repr(result)
    assert table.count("square-probe (probe)") == 2
