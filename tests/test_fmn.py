"""The minimum-norm attack (FMN, Pintor et al. 2021) and the robustness curve it gives.

Cross-checks: Linf against Foolbox's ``LInfFMNAttack`` (same algorithm and defaults), L2 against
Foolbox's DDN (an independent minimum-norm algorithm); the curve against fixed-eps PGD on the
same small model, its monotonicity, and every break counting in the worst case.
"""

from __future__ import annotations

import foolbox as fb
import numpy as np
import pytest
import torch
from helpers import QUIET

import evalkit
from evalkit.attacks.fmn import fmn_min_norm
from evalkit.attacks.pgd import pgd
from evalkit.evaluation.curve import curve_plan
from evalkit.evaluation.estimate import plan_cost
from evalkit.evaluation.protocol import ModelTraits

pytestmark = pytest.mark.usefixtures("one_thread")


def _correct(model, x, y):
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    return x[ok], y[ok]


def _foolbox_norms(model, x, y, attack, norm):
    adv, _, _ = attack(
        fb.PyTorchModel(model, bounds=(0, 1)), x, fb.criteria.Misclassification(y), epsilons=None
    )
    d = (adv - x).flatten(1)
    n = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    with torch.no_grad():
        found = model(adv).argmax(1) != y
    return torch.where(found, n, torch.full_like(n, float("inf")))


def test_linf_fmn_matches_foolbox_fmn(atk_model, atk_data):
    x, y = _correct(atk_model, *atk_data)
    ours = fmn_min_norm(atk_model, x, y, norm="linf", steps=30)
    theirs = _foolbox_norms(atk_model, x, y, fb.attacks.LInfFMNAttack(steps=30), "linf")
    assert bool(ours.found.all()) and bool(torch.isfinite(theirs).all())
    assert torch.allclose(ours.norm, theirs, rtol=1e-3, atol=1e-4)
    with torch.no_grad():  # what it returns is adversarial at the norm it reports
        assert bool((atk_model(ours.x_adv).argmax(1) != y).all())
    d = (ours.x_adv - x).flatten(1).abs().amax(1)
    assert torch.allclose(d, ours.norm) and ours.x_adv.min() >= 0 and ours.x_adv.max() <= 1


def test_l2_fmn_is_at_least_as_small_as_foolbox_ddn(atk_model, atk_data):
    x, y = _correct(atk_model, *atk_data)
    ours = fmn_min_norm(atk_model, x, y, norm="l2", steps=50)
    theirs = _foolbox_norms(atk_model, x, y, fb.attacks.DDNAttack(steps=50), "l2")
    assert bool(ours.found.all())
    assert float(ours.norm.median()) <= 1.02 * float(theirs.median())
    assert float((ours.norm <= 1.1 * theirs).float().mean()) >= 0.9


def test_curve_is_monotone_and_agrees_with_fixed_eps_pgd(atk_model, atk_data):
    x, y = atk_data
    budgets = [0.02, 0.05, 0.1]
    result = evalkit.evaluate(
        atk_model, (x, y), eps=budgets, preset="pgd", curve=True, curve_steps=50, **QUIET
    )
    s, df = result.summary, result.examples
    curve = s["curve"]
    acc = np.array(curve["robust_accuracy"])
    assert curve["eps"][0] == 0.0 and acc[0] == pytest.approx(s["clean_accuracy"])
    assert (np.diff(acc) <= 1e-12).all() and max(curve["eps"]) == pytest.approx(0.1)
    assert {0.02, 0.05, 0.1} <= {round(e, 12) for e in curve["eps"]}
    # the curve from norms equals the per-point column it came from
    norms = df["curve:norm"].to_numpy()
    for e, a in zip(curve["eps"], acc):
        held = (df["clean_p"] == 1) & ~(norms <= e)
        assert a == pytest.approx(held.mean())
    # against an independent fixed-eps PGD-50 at each budget: within 3 points either way
    xs, ys = _correct(atk_model, x, y)
    for row, eps in zip(curve["by_budget"], budgets):
        adv = pgd(
            atk_model,
            xs,
            ys,
            eps,
            steps=50,
            keep_best=True,
            generator=torch.Generator().manual_seed(0),
        )
        with torch.no_grad():
            pgd_acc = float((atk_model(adv).argmax(1) == ys).sum()) / len(y)
        assert abs(row["curve"] - pgd_acc) <= 3 / len(y), (eps, row, pgd_acc)
        # every break counts: the worst case is at most both the curve and the fixed attacks
        worst = next(w for w in s["worst_case"] if w["eps_value"] == pytest.approx(eps))
        assert worst["robust_accuracy"] == pytest.approx(row["worst_case"])
        assert row["worst_case"] <= min(row["curve"], row["fixed_eps_worst_case"]) + 1e-12
    assert s["cost"]["curve"]["forward_passes"] > 0


def test_curve_breaks_count_and_disagreement_is_flagged(atk_model, atk_data):
    """FGSM alone is a weak fixed-eps attack: the curve breaks points it missed, these count in
    the worst case, and the flag names the budget."""
    x, y = atk_data
    s = evalkit.evaluate(
        atk_model,
        (x, y),
        eps=0.1,
        attacks="fgsm",
        curve=True,
        curve_steps=50,
        sanity=False,
        **QUIET,
    ).summary
    row = s["curve"]["by_budget"][0]
    assert row["points_only_curve_broke"] > 0
    assert s["worst_case"][0]["robust_accuracy"] == pytest.approx(row["worst_case"])
    assert s["worst_case"][0]["robust_accuracy"] < row["fixed_eps_worst_case"]
    flag = next(f for f in s["flags"] if f["id"] == "fixed_eps_attacks_missed_breaks")
    assert flag["eps"] == "0.1" and flag["points"] == row["points_only_curve_broke"]


def test_curve_cost_is_stated_and_kept(atk_model, atk_data):
    plan = curve_plan(40, ModelTraits())
    assert plan_cost(plan, draws=1) == (40 + 1 + 1, 40)
    assert plan_cost(curve_plan(40, ModelTraits(stochastic=True)), draws=5) == (
        40 * 20 + 1 + 5,
        800,
    )
    x, y = atk_data
    s = evalkit.evaluate(
        atk_model,
        (x, y),
        eps=0.05,
        attacks="fgsm",
        curve=True,
        curve_steps=40,
        sanity=False,
        **QUIET,
    ).summary
    attacked = s["curve"]["n_attacked"]
    # steps forward+backward, one forward on the last iterate, one scoring forward per point
    assert s["cost"]["curve"]["forward_passes"] == attacked * 42
    assert s["cost"]["curve"]["backward_passes"] == attacked * 40


def test_report_lists_the_curve_budgets_by_increasing_eps():
    """summary.json keeps the protocol's budget order (the demo's headline 8/255 first); the
    report's table is read as a curve, so it lists the budgets from the smallest eps up."""
    from types import SimpleNamespace

    from reports.curve import curve_context

    rows = [
        {"eps": lab, "eps_value": v, "curve": 0.5, "fixed_eps_worst_case": 0.5, "worst_case": 0.5}
        for lab, v in (("8/255", 8 / 255), ("2/255", 2 / 255), ("4/255", 4 / 255))
    ]
    run = SimpleNamespace(summary={"curve": {"by_budget": rows, "attack": "fmn-100"}})
    ctx = curve_context(run)
    assert [r["eps"] for r in ctx["rows"]] == ["2/255", "4/255", "8/255"]
