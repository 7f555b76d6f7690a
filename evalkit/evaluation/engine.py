"""The engine: run an attack protocol on a model and examples; knows nothing of files or flags.

Work is cut into *units*: the clean pass over one batch, and one attack at one budget on one
batch. Under compaction (the default, as AutoAttack does) an attack only receives the points of
its batch whose running robust score is still above 0, so per-attack numbers form the
cumulative "waterfall" and the last one equals the worst case. Every unit is seeded by
``derive_seed(seed, attack, eps, batch)`` and handed to ``record`` as it completes; the caller
(:mod:`evalkit.evaluation.api`) persists records, which makes resume and ``torchrun`` sharding
produce the same numbers as one uninterrupted process.

Randomized models (``draws > 1``) are scored by Monte Carlo: every candidate is classified
``draws`` times (see :mod:`evalkit.evaluation.scoring`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn as nn
from tqdm import tqdm

from evalkit.evaluation.budget import Budget
from evalkit.evaluation.protocol import AttackPlan, ModelTraits
from evalkit.evaluation.rundir import unit_key
from evalkit.evaluation.summary import robust_before
from evalkit.evaluation.units import CostCounter, attack_unit, clean_unit
from evalkit.utils.seeding import derive_seed

Record = dict[str, Any]


class Examples(Protocol):
    """What the engine evaluates: ``len()`` points, fetched by global index."""

    def __len__(self) -> int: ...

    def fetch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)`` for the given indices: x float in [0, 1] (N, C, H, W), y long (N,)."""
        ...


@dataclass
class TensorExamples:
    """:class:`Examples` over in-memory tensors (x uint8 0-255 or float 0-1, NCHW; y int)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def fetch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xb = self.x[index]
        xb = xb.float().div(255.0) if xb.dtype == torch.uint8 else xb.float()
        return xb, self.y[index].long()


@dataclass(frozen=True)
class Settings:
    """How the engine runs (never what it measures): batch size, seed, compaction, MC draws."""

    batch_size: int = 128
    seed: int = 0
    compaction: bool = True
    draws: int = 1
    progress: bool = True


def n_batches(n: int, batch_size: int) -> int:
    return (n + batch_size - 1) // batch_size


def batch_index(b: int, n: int, batch_size: int) -> torch.Tensor:
    return torch.arange(b * batch_size, min((b + 1) * batch_size, n))


def run_protocol(
    model: nn.Module,
    examples: Examples,
    plans: Sequence[AttackPlan],
    budgets: Sequence[Budget],
    *,
    traits: ModelTraits,
    settings: Settings,
    device: torch.device,
    counter: CostCounter,
    records: dict[str, Record] | None = None,
    record: Callable[[Record], None] | None = None,
    batches: Sequence[int] | None = None,
) -> dict[str, Record]:
    """Run the clean pass and every (budget, plan) on ``batches`` (default: all); return records.

    ``records`` holds units already done (resume); each new unit is added to it and passed to
    ``record`` (e.g. an append-only log) as soon as it completes. The model must already be in
    attack mode (:func:`evalkit.attacks.attack_mode`).
    """
    records = records if records is not None else {}
    n = len(examples)
    bs = settings.batch_size
    owned = list(batches) if batches is not None else list(range(n_batches(n, bs)))

    def keep(rec: Record) -> None:
        records[rec["key"]] = rec
        if record is not None:
            record(rec)

    total = len(owned) * (1 + len(plans) * len(budgets))
    done = sum(1 for b in owned if unit_key("clean", b) in records) + sum(
        1
        for bud in budgets
        for p in plans
        for b in owned
        if unit_key("attack", b, p.id, bud.label) in records
    )
    bar = tqdm(
        total=total,
        initial=done,
        unit="unit",
        desc="protocol",
        file=sys.stderr,
        disable=not settings.progress,
        dynamic_ncols=True,
    )
    try:
        for b in owned:
            if unit_key("clean", b) in records:
                continue
            idx = batch_index(b, n, bs)
            x, y = (t.to(device) for t in examples.fetch(idx))
            bar.set_postfix_str("clean")
            seed = derive_seed(settings.seed, "clean", b)
            keep(clean_unit(model, x, y, idx, b, counter, seed, settings.draws))
            bar.update(1)
        for bud in budgets:
            for k, plan in enumerate(plans):
                for b in owned:
                    if unit_key("attack", b, plan.id, bud.label) in records:
                        continue
                    alive = robust_before(records, b, plans, k, bud.label, settings.compaction)
                    idx = torch.tensor([i for i, ok in alive.items() if ok], dtype=torch.long)
                    x, y = (t.to(device) for t in examples.fetch(idx))
                    bar.set_postfix_str(f"{plan.id} @ {bud.label}: {len(idx)} points")
                    rec = attack_unit(
                        model,
                        x,
                        y,
                        idx,
                        plan,
                        bud,
                        b,
                        derive_seed(settings.seed, plan.id, bud.label, b),
                        counter,
                        beta=traits.beta,
                        draws=settings.draws,
                        num_classes=traits.num_classes,
                    )
                    keep(rec)
                    bar.update(1)
    finally:
        bar.close()
    return records
