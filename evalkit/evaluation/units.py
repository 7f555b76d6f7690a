"""Units of work: the clean pass over one batch, and one attack on one batch at one eps.

Each unit returns a plain-JSON record (global example indices, predictions, margins,
perturbation norms, its own cost), so records can be appended to disk, shipped between ranks
and re-read on resume without changing a single number.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from evalkit.attacks.losses import AttackLoss, make_loss
from evalkit.evaluation.compat import eot_loss
from evalkit.evaluation.protocol import AttackPlan
from evalkit.evaluation.rundir import unit_key
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


def margins(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``z_y - max_{j != y} z_j``: positive when correct, its size is the confidence."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.clone()
    other.scatter_(1, y[:, None], float("-inf"))
    return true - other.max(1).values


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


def clean_unit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    index: torch.Tensor,
    batch: int,
    counter: CostCounter,
    seed: int,
) -> dict[str, Any]:
    """Predictions and margins on the unperturbed batch."""
    t0 = time.perf_counter()
    f0, b0 = counter.snapshot()
    torch.manual_seed(seed)
    with torch.no_grad():
        logits = model(x)
    f1, b1 = counter.snapshot()
    return {
        "key": unit_key("clean", batch),
        "kind": "clean",
        "batch": batch,
        "index": index.tolist(),
        "label": y.cpu().tolist(),
        "pred": logits.argmax(1).cpu().tolist(),
        "margin": margins(logits, y).cpu().tolist(),
        "fwd": f1 - f0,
        "bwd": b1 - b0,
        "time": time.perf_counter() - t0,
    }


def build_loss(plan: AttackPlan, beta: float) -> AttackLoss:
    """The plan's loss: CE/CW/DLR, plus aux heads when joint, averaged over EOT samples."""
    loss = make_loss(plan.loss, joint=plan.joint, beta=beta)
    return eot_loss(loss, plan.eot) if plan.eot > 1 else loss


def attack_unit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    index: torch.Tensor,
    plan: AttackPlan,
    fn: Callable[..., torch.Tensor],
    eps_label: str,
    eps: float,
    norm: str,
    batch: int,
    seed: int,
    counter: CostCounter,
    beta: float,
) -> dict[str, Any]:
    """Attack the given examples (already compacted by the caller) and record the outcome."""
    t0 = time.perf_counter()
    f0, b0 = counter.snapshot()
    rec: dict[str, Any] = {
        "key": unit_key("attack", batch, plan.id, eps_label),
        "kind": "attack",
        "attack": plan.id,
        "eps": eps_label,
        "batch": batch,
        "index": index.tolist(),
        "pred": [],
        "margin": [],
        "norm": [],
        "violations": 0,
    }
    if len(index):
        torch.manual_seed(seed)  # stochastic models and attacks that use the global RNG
        gen = make_generator(seed)
        x_adv = fn(
            model,
            x,
            y,
            eps,
            norm=norm,
            loss=build_loss(plan, beta),
            generator=gen,
            **plan.resolved_options(eps, norm),
        )
        x_adv = x_adv.detach().to(x.device, x.dtype)
        if x_adv.shape != x.shape:
            raise RuntimeError(
                f"attack {plan.id} returned shape {tuple(x_adv.shape)} for input {tuple(x.shape)}"
            )
        x_adv, violations = project_valid(x, x_adv, eps, norm)
        with torch.no_grad():
            logits = model(x_adv)
        rec.update(
            pred=logits.argmax(1).cpu().tolist(),
            margin=margins(logits, y).cpu().tolist(),
            norm=perturbation_norm(x_adv - x, norm).cpu().tolist(),
            violations=violations,
        )
    f1, b1 = counter.snapshot()
    rec.update(fwd=f1 - f0, bwd=b1 - b0, time=time.perf_counter() - t0)
    return rec
