"""Cheap checks that an evaluation can be trusted (in the spirit of AutoAttack's checks.py).

Each check returns flags ``{"id", "severity", "message"}`` (severity ``info``, ``warning`` or
``error``). They run on a few examples (``SANITY_N``) so they cost seconds, and all but the
randomness probe are skipped with ``--no-sanity``. A warning does not stop the run: it tells
the reader which number not to trust and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from evalkit.attacks.losses import AttackLoss
from evalkit.attacks.pgd import pgd
from evalkit.utils.seeding import make_generator

SANITY_N = 64  # examples used by the model-probing checks
SQUARE_N = 32  # white-box-robust examples given to the Square check
SQUARE_QUERIES = 300
HUGE_EPS = 0.5  # Linf: every image can reach mid-grey, so no honest model survives it

Flag = dict[str, Any]


def flag(fid: str, severity: str, message: str, **extra: Any) -> Flag:
    return {"id": fid, "severity": severity, "message": message, **extra}


def check_eps_monotone(summary: dict[str, Any]) -> list[Flag]:
    """Robust accuracy must not rise with eps (a bigger ball contains the smaller one)."""
    flags = []
    worst = sorted(summary["worst_case"], key=lambda w: w["eps_value"])
    for a, b in zip(worst, worst[1:]):
        if b["n_robust"] > a["n_robust"]:
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


def check_gradients(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: AttackLoss
) -> list[Flag]:
    """Zero or NaN input gradients at clean points make gradient attacks blind."""
    if not len(x):
        return []
    xg = x.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(model, xg, y).sum(), xg)
    flat = grad.flatten(1)
    nan = int((~torch.isfinite(flat)).any(1).sum())
    zero = int((flat == 0).all(1).sum())
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
) -> list[Flag]:
    """PGD at Linf eps 0.5 must bring accuracy to chance or below; if not, gradients lie."""
    if not len(x):
        return []
    x_adv = pgd(
        model,
        x,
        y,
        HUGE_EPS,
        steps=20,
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
                f"PGD-20 at Linf eps {HUGE_EPS} leaves {100 * acc:.1f}% accuracy on {len(x)} "
                f"examples (chance {100 * chance:.1f}%): the attacks are not working on this "
                "model, so its robust accuracy is an overestimate",
                accuracy=acc,
            )
        ]
    return []


def check_square(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps_label: str,
    eps: float,
    norm: str,
    seed: int,
    registry: dict[str, Any],
    n_queries: int = SQUARE_QUERIES,
) -> list[Flag]:
    """Run black-box Square on examples every white-box attack failed on; any success means
    the white-box attacks were misled (gradient masking)."""
    spec = registry.get("square")
    if spec is None or norm not in getattr(spec, "norms", ("linf",)) or not len(x):
        return []
    opts = dict(spec.defaults)
    if "n_queries" in opts:
        opts["n_queries"] = min(int(opts["n_queries"]), int(n_queries))
    x_adv = spec.fn(model, x, y, eps, norm=norm, loss="ce", generator=make_generator(seed), **opts)
    with torch.no_grad():
        broken = int((model(x_adv.to(x.device)).argmax(1) != y).sum())
    if broken:
        return [
            flag(
                "black_box_beats_white_box",
                "warning",
                f"Square (black-box) broke {broken}/{len(x)} examples at eps {eps_label} that "
                "all white-box attacks failed on: gradient masking likely, trust the "
                "black-box number",
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
