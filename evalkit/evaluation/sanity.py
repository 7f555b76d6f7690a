"""Cheap checks that an evaluation can be trusted (in the spirit of AutoAttack's checks.py).

Each check returns flags ``{"id", "severity", "message"}`` (severity ``info``, ``warning`` or
``error``). A warning does not stop the run: it tells the reader which number not to trust and
why. :func:`run_checks` orchestrates them within a budget: together the model-probing checks
cost at most :data:`BUDGET_SHARE` of the protocol's own attack propagations, sizing their sample
and iterations to fit; a check that cannot fit says so in a flag instead of vanishing. The Square
probe is an attack like any other: the points it breaks count in the worst case.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from evalkit.attacks.losses import AttackLoss
from evalkit.attacks.pgd import pgd
from evalkit.defenses.context import bpda_gradients
from evalkit.evaluation.budget import Budget
from evalkit.evaluation.protocol import AttackPlan, ModelTraits
from evalkit.evaluation.rundir import unit_key
from evalkit.evaluation.units import CostCounter, attack_unit, build_loss
from evalkit.utils.grad import gradients_on, usable_input
from evalkit.utils.seeding import derive_seed, make_generator

SANITY_N = 64  # at most this many examples for the gradient and huge-eps checks
SQUARE_N = 32  # at most this many white-box-robust examples given to the Square probe
SQUARE_QUERIES = 300  # at most this many Square queries per point
SQUARE_MIN_QUERIES = 50
BUDGET_SHARE = 0.25  # checks cost at most this share of the protocol's attack propagations
SHARES = {"gradients": 0.1, "huge_eps": 0.3, "square": 0.6}
HUGE_EPS = 0.5  # Linf: every image can reach mid-grey, so no honest model survives it

Flag = dict[str, Any]


def flag(fid: str, severity: str, message: str, **extra: Any) -> Flag:
    return {"id": fid, "severity": severity, "message": message, **extra}


def check_eps_monotone(summary: dict[str, Any]) -> list[Flag]:
    """Robust accuracy must not rise with eps (a bigger ball contains the smaller one)."""
    flags = []
    worst = sorted(summary["worst_case"], key=lambda w: w["eps_value"])
    for a, b in zip(worst, worst[1:]):
        if b["robust_accuracy"] > a["robust_accuracy"] + 1e-12:
            flags.append(
                flag(
                    "accuracy_not_falling_with_eps",
                    "warning",
                    f"worst-case robust accuracy rises from {100 * a['robust_accuracy']:.1f}% "
                    f"at eps {a['eps']} to {100 * b['robust_accuracy']:.1f}% at eps "
                    f"{b['eps']}: attacks are failing to optimise (gradient masking?)",
                )
            )
    return flags


def check_ball_violations(summary: dict[str, Any]) -> list[Flag]:
    """An attack that left the eps ball or [0, 1] is buggy; its outputs were projected."""
    bad = [r for r in summary["results"] if r.get("ball_violations")]
    return [
        flag(
            "attack_left_eps_ball",
            "error",
            f"{r['attack']} at eps {r['eps']} returned {r['ball_violations']} examples outside "
            "the eps ball or [0,1]; they were projected back (report this attack as buggy)",
        )
        for r in bad
    ]


def input_gradient(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: AttackLoss
) -> torch.Tensor | None:
    """``d loss / d x`` (x's shape), or None when the loss does not depend on ``x`` through
    autograd (a step computed in numpy or under ``no_grad``: the gradient is *missing*).
    Gradients are enabled here whatever the caller's context."""
    with gradients_on():
        xg = usable_input(x.detach()).clone().requires_grad_(True)
        value = loss(model, xg, usable_input(y)).sum()
        if not value.requires_grad:
            return None
        (grad,) = torch.autograd.grad(value, xg, allow_unused=True)
    return grad


def gradient_counts(grad: torch.Tensor) -> tuple[int, int]:
    """(points with a NaN/inf gradient entry, points whose gradient is exactly zero)."""
    flat = grad.flatten(1)
    return int((~torch.isfinite(flat)).any(1).sum()), int((flat == 0).all(1).sum())


def check_gradients(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: AttackLoss
) -> list[Flag]:
    """Zero or NaN input gradients at clean points make gradient attacks blind."""
    if not len(x):
        return []
    grad = input_gradient(model, x, y, loss)
    if grad is None:
        return [
            flag(
                "missing_gradients",
                "info",
                f"the input gradient is missing for all {len(x)} checked clean examples: only "
                "black-box attacks can run on this model (declare its non-differentiable step "
                "with evalkit.bpda for gradient attacks); the huge-eps PGD check was skipped",
            )
        ]
    nan, zero = gradient_counts(grad)
    flags = []
    if nan:
        flags.append(
            flag(
                "nan_gradients",
                "error",
                f"{nan}/{len(x)} clean examples have NaN/inf "
                "input gradients: gradient attacks cannot be trusted on this model",
            )
        )
    if zero:
        sev = "warning" if zero > 0.1 * len(x) else "info"
        flags.append(
            flag(
                "zero_gradients",
                sev,
                f"{zero}/{len(x)} clean examples have exactly "
                "zero input gradient (saturated softmax or masking): check the "
                "margin-loss and black-box numbers",
                fraction=zero / len(x),
            )
        )
    return flags


def check_huge_eps(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss: AttackLoss,
    num_classes: int,
    seed: int,
    steps: int = 20,
) -> list[Flag]:
    """PGD at Linf eps 0.5 must bring accuracy to chance or below; if not, gradients lie."""
    if not len(x):
        return []
    x_adv = pgd(
        model,
        x,
        y,
        HUGE_EPS,
        steps=steps,
        step_size=HUGE_EPS / 8,
        loss=loss,
        generator=make_generator(seed),
    )
    with torch.no_grad():
        acc = float((model(x_adv).argmax(1) == y).float().mean())
    chance = 1.0 / num_classes
    if acc > chance:
        return [
            flag(
                "accuracy_above_chance_at_huge_eps",
                "warning",
                f"PGD-{steps} at Linf eps {HUGE_EPS} leaves {100 * acc:.1f}% accuracy on {len(x)} "
                f"examples (chance {100 * chance:.1f}%): the attacks are not working on this "
                "model, so its robust accuracy is an overestimate",
                accuracy=acc,
            )
        ]
    return []


def check_square_in_suite(summary: dict[str, Any], square_ids: Sequence[str]) -> list[Flag]:
    """With compaction, a Square entry after the white-box attacks only sees their survivors."""
    flags = []
    for r in summary["results"]:
        if r["attack"] in square_ids and r["n_broken"] and summary.get("compaction"):
            flags.append(
                flag(
                    "black_box_beats_white_box",
                    "warning",
                    f"{r['attack']} broke {r['n_broken']} examples at eps {r['eps']} that "
                    "the white-box attacks before it failed on: gradient masking likely",
                )
            )
    return flags


def over_budget(check: str, need: int, have: int) -> Flag:
    return flag(
        "sanity_check_over_budget",
        "info",
        f"the {check} check did not run: even its smallest size needs {need:,} propagations and "
        f"its share of the sanity budget ({100 * BUDGET_SHARE:.0f}% of the protocol's attack "
        f"cost) is {have:,}; run a larger evaluation or check by hand",
        check=check,
    )


def randomness_flags(traits: ModelTraits, draws: int) -> list[Flag]:
    """Say how randomness was handled (scored over ``draws`` passes, EOT in every gradient)."""
    if traits.stochastic:
        return [
            flag(
                "randomness_detected",
                "info",
                "the model declares a stochastic defense: gradient attacks use EOT and every "
                f"candidate is scored over {draws} forward passes (Monte Carlo)",
            )
        ]
    if traits.random_detected:
        return [
            flag(
                "randomness_detected",
                "warning",
                "two forward passes on the same input differed although no module declares "
                f"randomness: EOT was turned on and candidates are scored over {draws} passes; "
                "check the model for dropout/noise left active at test",
            )
        ]
    return []


def nonfinite_flags(summary: dict[str, Any]) -> list[Flag]:
    """NaN/inf logits are never counted correct; say where they appeared."""
    n_clean = summary.get("nonfinite_clean_logits", 0)
    n_adv = sum(r.get("nonfinite_logits", 0) for r in summary["results"])
    if not (n_clean or n_adv):
        return []
    return [
        flag(
            "nonfinite_logits",
            "warning",
            f"the model produced NaN/inf logits on {n_clean} clean and {n_adv} adversarial "
            "inputs; those predictions were counted as wrong",
        )
    ]


def square_probe_plan(queries: int) -> AttackPlan:
    """The black-box probe: Square on white-box survivors; its breaks count in the worst case."""
    return AttackPlan(
        "square-probe",
        "square",
        "square",
        options={"n_queries": int(queries), "p_init": 0.8},
        white_box=False,
        uses_loss=False,
        probe=True,
        description=f"sanity probe: Square (black-box, {queries} queries) on white-box survivors",
    )


def _gradient_checks(
    model: nn.Module,
    fetch: Any,
    correct: Any,
    loss: AttackLoss,
    eot: int,
    budget: int,
    traits: ModelTraits,
    *,
    seed: int,
    draws: int,
    device: torch.device,
) -> list[Flag]:
    """The zero/NaN-gradient and huge-eps checks on clean-correct points, within their shares
    of ``budget``."""
    flags: list[Flag] = []
    # gradients: one forward+backward per EOT sample and point
    per = 2 * eot
    n = min(SANITY_N, len(correct), int(SHARES["gradients"] * budget) // per)
    if n >= 1:
        x, y = (t.to(device) for t in fetch(torch.as_tensor(correct[:n].copy())))
        torch.manual_seed(derive_seed(seed, "sanity"))
        flags += check_gradients(model, x, y, loss)
        if any(f["id"] == "missing_gradients" for f in flags):
            return flags
    else:
        flags.append(over_budget("gradient", per, int(SHARES["gradients"] * budget)))
    # huge eps: the largest of PGD-20/10/5 that fits on >= 8 points
    share = int(SHARES["huge_eps"] * budget)
    for steps in (20, 10, 5):
        per = 2 * steps * eot + draws
        n = min(SANITY_N, len(correct), share // per)
        if n >= min(8, len(correct)):
            x, y = (t.to(device) for t in fetch(torch.as_tensor(correct[:n].copy())))
            flags += check_huge_eps(
                model,
                x,
                y,
                loss,
                traits.num_classes,
                derive_seed(seed, "huge-eps"),
                steps=steps,
            )
            break
    else:
        flags.append(over_budget("huge-eps PGD", 8 * (10 * eot + draws), share))
    return flags


def protocol_base(proto: dict[str, Any]) -> int:
    """What the sanity budget is a share of: the protocol's propagations plus those PGD's cycle
    detection skipped (:func:`evalkit.attacks.pgd.cycle_savings`), so the shortcut, which only
    drops unbroken points, never shrinks the checks that look for masking on those points."""
    return int(proto["forward_passes"] + proto["backward_passes"] + proto.get("cycle_saved", 0))


def run_checks(
    model: nn.Module,
    fetch: Any,
    df: Any,
    summary: dict[str, Any],
    plans: Sequence[AttackPlan],
    budgets: Sequence[Budget],
    traits: ModelTraits,
    *,
    seed: int,
    draws: int,
    device: torch.device,
    counter: CostCounter,
    records: dict[str, dict[str, Any]],
    record: Any,
) -> tuple[list[Flag], list[AttackPlan], dict[str, Any]]:
    """Model-probing checks within :data:`BUDGET_SHARE` of the protocol's attack cost.

    ``fetch(index) -> (x, y)`` gives examples; ``df``/``summary`` are the protocol's results so
    far. Returns (flags, probe plans whose records were added, sanity cost block). The model must
    be in attack mode.
    """
    flags: list[Flag] = check_eps_monotone(summary)
    proto = summary["cost"]["protocol"]
    budget = int(BUDGET_SHARE * protocol_base(proto))
    f0, b0 = counter.snapshot()
    correct = df.loc[df["clean_p"] > 0, "index"].to_numpy()
    probes: list[AttackPlan] = []
    grad_plan = next((p for p in plans if p.uses_loss and p.joint), None) or next(
        (p for p in plans if p.uses_loss), None
    )
    eot = grad_plan.eot if grad_plan else (20 if traits.random else 1)
    loss = build_loss(grad_plan or AttackPlan("ce", "pgd", "pgd", eot=eot), traits.beta)
    with bpda_gradients(model, traits.non_differentiable):  # the gradients attacks use
        if len(correct):
            flags += _gradient_checks(
                model,
                fetch,
                correct,
                loss,
                eot,
                budget,
                traits,
                seed=seed,
                draws=draws,
                device=device,
            )
    square_ids = [
        p.id
        for i, p in enumerate(plans)
        if p.attack == "square" and any(q.white_box for q in plans[:i])
    ]
    if any(p.attack == "square" for p in plans):
        flags += check_square_in_suite(summary, square_ids)
    else:
        used = (counter.snapshot()[0] - f0) + (counter.snapshot()[1] - b0)
        left = max(budget - used, 0)
        for bud in budgets:
            share = left // len(budgets)
            alive = df.loc[df[f"worst@{bud.label}:score"] > 0, "index"].to_numpy()
            if not len(alive):
                continue
            # cost ~ n * (queries + init/final passes + draws scoring passes)
            n = min(SQUARE_N, len(alive))
            queries = min(SQUARE_QUERIES, share // n - draws - 3)
            if queries < SQUARE_MIN_QUERIES:
                n = min(n, share // (SQUARE_MIN_QUERIES + draws + 3))
                queries = SQUARE_MIN_QUERIES
            least = min(2, len(alive))
            if n < least:
                need = least * (SQUARE_MIN_QUERIES + draws + 3)
                flags.append(over_budget(f"Square probe at eps {bud.label}", need, share))
                continue
            plan = square_probe_plan(queries)
            if not any(p.id == plan.id for p in probes):  # one row per eps, not one per probe
                probes.append(plan)
            key = unit_key("attack", "probe", plan.id, bud.label)
            if key not in records:
                idx = torch.as_tensor(alive[:n].copy(), dtype=torch.long)
                x, y = (t.to(device) for t in fetch(idx))
                rec = attack_unit(
                    model,
                    x,
                    y,
                    idx,
                    plan,
                    bud,
                    "probe",
                    derive_seed(seed, "square", bud.label),
                    counter,
                    beta=traits.beta,
                    draws=draws,
                    num_classes=traits.num_classes,
                )
                records[key] = rec
                record(rec)
            rec = records[key]
            broken = sum(1 for p in rec["p"] if p < 1)
            if broken:
                flags.append(
                    flag(
                        "black_box_beats_white_box",
                        "warning",
                        f"Square (black-box, {queries} queries) broke {broken}/{len(rec['p'])} "
                        f"examples at eps {bud.label} that every white-box attack failed on: "
                        "gradient masking likely; these breaks are counted in the worst case",
                        broken=broken,
                    )
                )
    f1, b1 = counter.snapshot()
    probe_cost = sum(r["fwd"] + r["bwd"] for r in records.values() if r.get("kind") == "probe")
    spent = (f1 - f0) + (b1 - b0)
    spent = max(spent, probe_cost)
    base = protocol_base(proto)
    cost = {
        "forward_passes": int(f1 - f0),
        "backward_passes": int(b1 - b0),
        "propagations": int(spent),
        "budget": budget,
        "share_of_protocol": spent / base if base else 0.0,
        "limit_share": BUDGET_SHARE,
    }
    return flags, probes, cost
