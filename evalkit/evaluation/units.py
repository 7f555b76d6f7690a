"""Units of work: the clean pass over one batch, and one attack on one batch at one eps.

Each unit returns a plain-JSON record (global example indices, predictions, margins, the
probability of a correct prediction ``p`` (exact 0/1 for deterministic models, a Monte-Carlo
estimate over ``draws`` forward passes for randomized ones), perturbation norms, its own cost),
so records can be appended to disk, shipped between ranks and re-read on resume without changing
a single number.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn as nn

from evalkit.attacks.eot import eot_loss
from evalkit.attacks.losses import AttackLoss, make_loss
from evalkit.attacks.registry import get_attack
from evalkit.attacks.tracking import cycle_savings
from evalkit.defenses.context import gradients_through_masks
from evalkit.evaluation import adversarial
from evalkit.evaluation.budget import Budget
from evalkit.evaluation.protocol import AttackPlan
from evalkit.evaluation.rundir import unit_key
from evalkit.evaluation.scoring import Scores, score
from evalkit.utils.seeding import make_generator

BALL_TOL = 1e-5


class CostCounter:
    """Counts images forwarded through the model and backpropagated from its output.

    A forward hook adds the batch size; when the output needs a gradient, a tensor hook on it
    adds the batch size again when (and each time) the backward reaches it. Counts are in
    images, so they compare across batch sizes (k-step PGD costs k fwd + k bwd per image).
    """

    def __init__(self, model: nn.Module) -> None:
        self.forward = 0
        self.backward = 0
        self._handle = model.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        if not isinstance(output, torch.Tensor) or output.ndim == 0:
            return
        n = int(output.shape[0])
        self.forward += n
        if output.requires_grad:

            def count(grad: torch.Tensor) -> None:
                self.backward += n

            output.register_hook(count)

    def snapshot(self) -> tuple[int, int]:
        return self.forward, self.backward

    def close(self) -> None:
        self._handle.remove()


def perturbation_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    flat = delta.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


def project_valid(
    x: torch.Tensor, x_adv: torch.Tensor, eps: float, norm: str
) -> tuple[torch.Tensor, int]:
    """Force ``x_adv`` into the eps ball and [0, 1]; returns it and how many needed it.

    A correct attack never needs this; the count is recorded so a faulty attack is visible
    instead of producing an out-of-budget "success"."""
    delta = x_adv - x
    n = perturbation_norm(delta, norm)
    bad = (
        (n > eps * (1 + BALL_TOL) + BALL_TOL)
        | (x_adv.flatten(1).amin(1) < -BALL_TOL)
        | (x_adv.flatten(1).amax(1) > 1 + BALL_TOL)
    )
    if not bool(bad.any()):
        return x_adv, 0
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        delta = delta * (eps / n.clamp_min(1e-12)).clamp(max=1.0).view(-1, *([1] * (x.ndim - 1)))
    return (x + delta).clamp(0, 1), int(bad.sum())


def _scored(rec: dict[str, Any], s: Scores) -> dict[str, Any]:
    rec.update(
        pred=s.pred.cpu().tolist(),
        margin=[None if m != m else m for m in s.margin.cpu().tolist()],
        p=s.p_correct.cpu().tolist(),
        nonfinite=int(s.nonfinite.sum()),
        draws=s.draws,
    )
    return rec


def clean_unit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    index: torch.Tensor,
    batch: int,
    counter: CostCounter,
    seed: int,
    draws: int = 1,
) -> dict[str, Any]:
    """Predictions, margins and P(correct) over ``draws`` passes on the unperturbed batch."""
    t0 = time.perf_counter()
    f0, b0 = counter.snapshot()
    torch.manual_seed(seed)
    rec: dict[str, Any] = {
        "key": unit_key("clean", batch),
        "kind": "clean",
        "batch": batch,
        "index": index.tolist(),
        "label": y.cpu().tolist(),
    }
    _scored(rec, score(model, x, y, draws))
    f1, b1 = counter.snapshot()
    rec.update(fwd=f1 - f0, bwd=b1 - b0, time=time.perf_counter() - t0)
    return rec


def build_loss(plan: AttackPlan, beta: float) -> AttackLoss:
    """The plan's loss: CE/CW/DLR, plus aux heads when joint, averaged over EOT samples."""
    loss = make_loss(plan.loss, joint=plan.joint, beta=beta)
    return eot_loss(loss, plan.eot) if plan.eot > 1 else loss


def run_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    plan: AttackPlan,
    budget: Budget,
    *,
    seed: int,
    beta: float,
    deterministic: bool,
    num_classes: int,
    details: dict[str, Any] | None = None,
) -> torch.Tensor:
    """Run one plan on (x, y) and return its candidate ``x_adv`` (best iterate where the attack
    is iterative; per-point early exit only for deterministic models, where one misclassified
    forward pass is a certain break). ``details`` receives what an attack reports it ran
    (AutoAttack: sub-attacks, skipped ones with reasons, EOT per sub-attack)."""
    spec = get_attack(plan.attack)
    options = plan.resolved_options(budget.value, budget.norm)
    if spec.iterative:
        options.setdefault("keep_best", True)
        options.setdefault("early_stop", deterministic)
    if details is not None and spec.options is not None and "report" in spec.options:
        options["report"] = details
    own_loss = options.pop("loss", None)  # attacks with their own losses name them (apgd "dlr")
    torch.manual_seed(seed)  # stochastic models and attacks that use the global RNG
    with gradients_through_masks(model, plan.through_mask):
        x_adv = spec.run(
            model,
            x,
            y,
            eps=budget.value,
            norm=budget.norm,
            loss=build_loss(plan, beta) if plan.uses_loss else own_loss,
            generator=make_generator(seed),
            **options,
        )
    x_adv = x_adv.detach().to(x.device, x.dtype)
    if x_adv.shape != x.shape:
        raise RuntimeError(
            f"attack {plan.id} returned shape {tuple(x_adv.shape)} for input {tuple(x.shape)}"
        )
    return x_adv


def attack_unit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    index: torch.Tensor,
    plan: AttackPlan,
    budget: Budget,
    batch: int | str,
    seed: int,
    counter: CostCounter,
    *,
    beta: float,
    draws: int,
    num_classes: int,
    observe: Any = None,
) -> dict[str, Any]:
    """Attack the given examples (already compacted by the caller) and score the candidate
    over ``draws`` forward passes. ``observe()``, called right after the scoring passes (so the
    model's modules still hold what they decided on the candidate), returns extra plain-JSON
    fields for the record (the masking diagnostics read the heads' selections this way)."""
    t0 = time.perf_counter()
    f0, b0 = counter.snapshot()
    rec: dict[str, Any] = {
        "key": unit_key("attack", batch, plan.id, budget.label),
        "kind": "probe" if plan.probe else "diagnostic" if plan.diagnostic else "attack",
        "attack": plan.id,
        "eps": budget.label,
        "batch": batch,
        "index": index.tolist(),
        "pred": [],
        "margin": [],
        "p": [],
        "norm": [],
        "violations": 0,
        "nonfinite": 0,
        "draws": draws,
    }
    saved = [0]
    if len(index):
        details: dict[str, Any] = {}
        with cycle_savings() as saved:
            x_adv = run_attack(
                model,
                x,
                y,
                plan,
                budget,
                seed=seed,
                beta=beta,
                deterministic=draws == 1,
                num_classes=num_classes,
                details=details,
            )
        if details:
            rec["details"] = details
        x_adv, violations = project_valid(x, x_adv, budget.value, budget.norm)
        torch.manual_seed(seed + 1)
        _scored(rec, score(model, x_adv, y, draws))
        if observe is not None:
            rec.update(observe())
        adversarial.offer(rec, x_adv)  # kept only under save_adversarial
        rec.update(
            norm=perturbation_norm(x_adv - x, budget.norm).cpu().tolist(), violations=violations
        )
    f1, b1 = counter.snapshot()
    rec.update(fwd=f1 - f0, bwd=b1 - b0, time=time.perf_counter() - t0, cycle_saved=saved[0])
    return rec
