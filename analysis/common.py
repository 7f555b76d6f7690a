"""Pieces every study shares: named models, batched adversarial crafting and accuracy.

Attacks always run with the model in eval mode (BN running statistics, CAS/CIFS test-time
masks) and restore the caller's mode afterwards; CAS/CIFS models are attacked with the adaptive
joint loss (final CE + 2 x mean CE of the auxiliary heads), as the seed papers evaluate them.
"""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from tqdm import tqdm

from evalkit.attacks import AttackLoss, make_loss, pgd
from evalkit.attacks.mode import attack_mode
from evalkit.checkpoint import CheckpointMeta
from evalkit.defenses.context import has_aux_heads
from evalkit.utils.mode import model_mode
from evalkit.utils.seeding import derive_seed, make_generator

# the CAS activation-analysis recipe (the paper's own setting): PGD-20, eps 8/255, step 0.003, random start
PAPER_STEPS = 20
PAPER_STEP_SIZE = 0.003


@dataclass
class ModelEntry:
    """A model under study with a short label for plots and tables."""

    label: str
    model: nn.Module
    meta: CheckpointMeta | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """What ``analysis.json`` records about this model."""
        out: dict[str, Any] = {"label": self.label, **self.info}
        if self.meta is not None:
            out.update(
                path=self.meta.path,
                arch=self.meta.arch,
                arch_kwargs=self.meta.arch_kwargs,
                defense=self.meta.defense,
                dataset=self.meta.dataset,
                epoch=self.meta.epoch,
            )
        return out


def model_label(path: str | Path, meta: CheckpointMeta | None = None) -> str:
    """A short label: the file stem, or the run folder when the file is ``checkpoint.pt``."""
    p = Path(path)
    if p.is_dir():
        return p.name
    stem = p.stem
    if stem in ("checkpoint", "model", "best", "last") and p.parent.name:
        stem = p.parent.name
    return stem


def unique_labels(labels: list[str]) -> list[str]:
    """Make labels distinct by appending ``-2``, ``-3`` to repeats."""
    seen: dict[str, int] = {}
    out = []
    for lab in labels:
        seen[lab] = seen.get(lab, 0) + 1
        out.append(lab if seen[lab] == 1 else f"{lab}-{seen[lab]}")
    return out


def eval_mode(model: nn.Module) -> AbstractContextManager[nn.Module]:
    """``model`` in eval mode for the block, each module's mode restored after
    (:func:`evalkit.attacks.mode.model_mode`: a mixed-mode model stays mixed)."""
    return model_mode(model, False)


def attack_loss_for(model: nn.Module, loss: str = "ce") -> AttackLoss:
    """The adaptive loss: joint with the auxiliary heads when the model has them."""
    return make_loss(loss, joint=has_aux_heads(model))


def progress(iterable: Any, desc: str, total: int | None = None, enabled: bool = True) -> Any:
    """A tqdm bar on stderr (disabled when ``enabled`` is False, e.g. in tests)."""
    return tqdm(iterable, desc=desc, total=total, file=sys.stderr, leave=False, disable=not enabled)


def batches(n: int, batch_size: int) -> list[slice]:
    """Consecutive slices covering ``range(n)``."""
    return [slice(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


def craft_adversarial(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    steps: int = PAPER_STEPS,
    step_size: float = PAPER_STEP_SIZE,
    loss: AttackLoss | None = None,
    batch_size: int = 128,
    seed: int = 0,
    tag: str = "pgd",
    device: torch.device | str = "cpu",
    show_progress: bool = True,
) -> torch.Tensor:
    """PGD (Linf, random start) adversarial versions of ``x``, batch by batch, on the CPU out.

    Each batch draws its random start from ``derive_seed(seed, tag, batch)`` so results do not
    depend on the batch size order of other studies.
    """
    loss_fn = loss if loss is not None else attack_loss_for(model)
    out = []
    with attack_mode(model):  # eval mode, no weight gradients; restored afterwards
        for i, sl in enumerate(
            progress(batches(len(x), batch_size), f"PGD-{steps} {tag}", enabled=show_progress)
        ):
            gen = make_generator(derive_seed(seed, tag, i))
            xb, yb = x[sl].to(device), y[sl].to(device)
            adv = pgd(
                model, xb, yb, eps, steps=steps, step_size=step_size, loss=loss_fn, generator=gen
            )
            out.append(adv.cpu())
    return torch.cat(out) if out else x.clone()


@torch.no_grad()
def predict(
    model: nn.Module,
    x: torch.Tensor,
    *,
    batch_size: int = 256,
    samples: int = 1,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Predicted classes; ``samples > 1`` averages the softmax of that many forward passes
    (the Monte-Carlo prediction stochastic defenses such as SAP are scored with)."""
    preds = []
    with eval_mode(model):
        for sl in batches(len(x), batch_size):
            xb = x[sl].to(device)
            prob = sum(torch.softmax(model(xb), 1) for _ in range(max(1, samples)))
            preds.append(prob.argmax(1).cpu())
    return torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kw: Any) -> float:
    """Fraction of ``x`` classified as ``y``."""
    if len(y) == 0:
        return float("nan")
    return float((predict(model, x, **kw) == y).float().mean())
