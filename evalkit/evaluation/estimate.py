"""What a protocol will cost, said before it runs.

Counts are *upper bounds* in image propagations (one image through the model forward, or one
image's backward from the output), assuming every point survives every attack: compaction and
early exit only lower them. A short timed probe (one forward+backward on a small batch) turns
them into a time estimate on the machine at hand. AutoAttack sub-attack budgets are
pyautoattack's defaults (APGD 100 iterations; APGD-T and FAB-T 9 targets; Square 5000 queries).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn as nn

from evalkit.evaluation.budget import Budget
from evalkit.evaluation.protocol import AttackPlan

_AA_PER_POINT = {  # (forward, backward) per point and restart, pyautoattack defaults
    "apgd-ce": (100, 100),
    "apgd-dlr": (100, 100),
    "apgd-t": (900, 900),
    "fab": (200, 100),
    "fab-t": (1800, 900),
    "square": (5000, 0),
}
_AA_VERSIONS = {
    "standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
    "plus": ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"),
    "rand": ("apgd-ce", "apgd-dlr"),
}


def plan_cost(plan: AttackPlan, draws: int = 1) -> tuple[int, int]:
    """Upper bound of (forward, backward) propagations per point for one plan."""
    o = plan.options
    eot = max(plan.eot, int(o.get("eot_iter", 1) or 1))
    if plan.attack == "fgsm":
        fwd, bwd = eot, eot
    elif plan.attack in ("pgd", "cw", "cw_inf"):
        steps = int(o.get("steps", 10)) * int(o.get("restarts", 1))
        fwd, bwd = steps * eot + 1, steps * eot
    elif plan.attack == "cw_l2":
        steps = int(o.get("steps", 100)) * int(o.get("binary_search_steps", 5))
        fwd, bwd = steps, steps
    elif plan.attack == "apgd":
        it = int(o.get("n_iter", 100)) * int(o.get("n_restarts", 1))
        fwd, bwd = it * eot + 1, it * eot
    elif plan.attack in ("apgd-t", "apgd-ce-t"):
        it = int(o.get("n_iter", 100)) * int(o.get("n_restarts", 1))
        it *= int(o.get("n_target_classes", 9)) + (plan.attack == "apgd-ce-t")
        fwd, bwd = it * eot + 1, it * eot
    elif plan.attack == "autoattack":
        version = o.get("version", "standard")
        subs = o.get("attacks") or _AA_VERSIONS.get(version, ())
        fwd = bwd = 0
        for sub in subs:
            f, b = _AA_PER_POINT.get(sub, (0, 0))
            if sub.startswith("apgd"):
                scale = int(o.get("n_iter", 100)) / 100 * int(o.get("n_restarts", 1))
                f, b = int(f * scale), int(b * scale)
            if sub == "square":
                f = int(o.get("n_queries", 5000))
            e = eot if sub != "square" else 1
            fwd, bwd = fwd + f * e, bwd + b * e
    elif plan.attack == "square":
        fwd, bwd = int(o.get("n_queries", 5000)), 0
    elif plan.attack == "fmn":  # steps x (fwd + bwd) per EOT sample, one forward on the last
        steps = int(o.get("steps", 100))
        fwd, bwd = steps * eot + 1, steps * eot
    elif plan.attack == "bpda":  # the wrapped attack's cost: BPDA changes only the backward
        inner = {k: v for k, v in o.items() if k != "attack"}
        return plan_cost(replace(plan, attack=str(o.get("attack", "pgd")), options=inner), draws)
    else:  # foolbox and user attacks: unknown
        return 0, 0
    return fwd + draws, bwd


@dataclass
class CostEstimate:
    """Planned propagations (upper bound) and the time they would take at the probed rate."""

    forward: int
    backward: int
    seconds_per_propagation: float
    per_plan: dict[str, tuple[int, int]]

    @property
    def seconds(self) -> float:
        return (self.forward + self.backward) * self.seconds_per_propagation

    def line(self) -> str:
        mins = self.seconds / 60
        return (
            f"planned cost: at most {self.forward:,} forward + {self.backward:,} backward image "
            f"propagations (~{mins:.1f} min at the probed rate; compaction and early exit "
            "usually make it far less)"
        )


def probe_rate(model: nn.Module, x: torch.Tensor, repeats: int = 3) -> float:
    """Seconds per image propagation: the fastest of ``repeats`` timed forward+backward passes
    on ``x`` after a warm-up (the minimum, because other load on the machine only adds time)."""
    if not len(x):
        return 0.0
    xg = x.detach().clone().requires_grad_(True)
    best = float("inf")
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        out = model(xg)
        (grad,) = torch.autograd.grad(out.float().logsumexp(1).sum(), xg)
        if grad.is_cuda:
            torch.cuda.synchronize()
        if i:  # the first pass warms up
            best = min(best, time.perf_counter() - t0)
    return best / (2 * len(x))


def estimate(
    plans: Sequence[AttackPlan],
    budgets: Sequence[Budget],
    n_points: int,
    draws: int,
    seconds_per_propagation: float,
) -> CostEstimate:
    """Upper-bound cost of the whole protocol on ``n_points`` (clean pass included)."""
    per_plan = {p.id: plan_cost(p, draws) for p in plans}
    fwd = n_points * draws + sum(f for f, _ in per_plan.values()) * n_points * len(budgets)
    bwd = sum(b for _, b in per_plan.values()) * n_points * len(budgets)
    return CostEstimate(fwd, bwd, seconds_per_propagation, per_plan)
