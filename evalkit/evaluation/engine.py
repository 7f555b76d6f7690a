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
import time
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
    planned: int = 0,
    forecast: Callable[[Forecast], None] | None = None,
) -> dict[str, Record]:
    """Run the clean pass and every (budget, plan) on ``batches`` (default: all); return records.

    ``records`` holds units already done (resume); each new unit is added to it and passed to
    ``record`` (e.g. an append-only log) as soon as it completes. The model must already be in
    attack mode (:func:`evalkit.attacks.attack_mode`).

    Batches run one after another, each through its clean pass and every (budget, plan) in
    order (a unit's inputs depend only on the earlier units of its batch, so the order changes
    no result). After each batch the propagations spent per point so far give the expected total
    (:class:`Forecast`), which the progress bar (counted in propagations, starting from the
    ``planned`` upper bound) takes as its total, and which is handed to ``forecast``.
    """
    records = records if records is not None else {}
    n = len(examples)
    bs = settings.batch_size
    owned = list(batches) if batches is not None else list(range(n_batches(n, bs)))

    def keep(rec: Record) -> None:
        records[rec["key"]] = rec
        if record is not None:
            record(rec)

    def attacked(b: int) -> bool:
        return all(
            unit_key("attack", b, p.id, bud.label) in records for bud in budgets for p in plans
        )

    bound = max(planned - n * settings.draws, 0) / max(n, 1)  # attack upper bound per point
    meter = _Progress(planned, settings.progress, forecast, bound)
    try:
        for b in owned:  # the clean pass of every batch first: it says who will be attacked
            if unit_key("clean", b) in records:
                meter.spent(_batch_passes(records, b, "clean"), resumed=True)
                continue
            idx = batch_index(b, n, bs)
            x, y = (t.to(device) for t in examples.fetch(idx))
            meter.note("clean")
            before = sum(counter.snapshot())
            keep(
                clean_unit(
                    model, x, y, idx, b, counter, seed_of(settings, "clean", b), settings.draws
                )
            )
            meter.spent(sum(counter.snapshot()) - before)
        first = budgets[0].label if budgets else ""
        weight = {
            b: sum(robust_before(records, b, plans, 0, first, settings.compaction).values())
            for b in owned
        }
        meter.expect(sum(weight.values()))
        for b in owned:  # batches a resumed run finished count as spent
            if attacked(b):
                meter.finished(weight[b], _batch_passes(records, b, "attack"), resumed=True)
        for b in owned:
            if attacked(b):
                continue
            for bud in budgets:
                for k, plan in enumerate(plans):
                    if unit_key("attack", b, plan.id, bud.label) in records:
                        continue
                    alive = robust_before(records, b, plans, k, bud.label, settings.compaction)
                    idx = torch.tensor([i for i, ok in alive.items() if ok], dtype=torch.long)
                    x, y = (t.to(device) for t in examples.fetch(idx))
                    meter.note(f"{plan.id} @ {bud.label}: {len(idx)} points")
                    before = sum(counter.snapshot())
                    rec = attack_unit(
                        model,
                        x,
                        y,
                        idx,
                        plan,
                        bud,
                        b,
                        seed_of(settings, plan.id, bud.label, b),
                        counter,
                        beta=traits.beta,
                        draws=settings.draws,
                        num_classes=traits.num_classes,
                    )
                    keep(rec)
                    meter.spent(sum(counter.snapshot()) - before)
            meter.finished(weight[b], _batch_passes(records, b, "attack"))
    finally:
        meter.close()
    return records


def seed_of(settings: Settings, *parts: object) -> int:
    """The seed of one unit: the run's seed and the unit's name."""
    return derive_seed(settings.seed, *parts)


@dataclass(frozen=True)
class Forecast:
    """The expected propagations of the protocol (clean pass and attacks, every owned batch):
    what was spent, plus the attack propagations per attacked point of the finished batches
    (with Jeffreys' half pseudo-points: one surviving at the plan's upper bound, one breaking
    at no cost) times the points still to attack (points the clean pass got wrong cost
    nothing)."""

    expected: int
    spent: int
    points_done: int
    points: int
    seconds: float = 0.0  # the time this process has spent so far
    own_spent: int = 0  # the propagations this process spent in that time (a resume's are not)

    def expected_seconds(self, fallback_rate: float) -> float:
        """The run's expected time: what this process spent, plus what is left at its rate
        (``fallback_rate`` seconds per propagation before it has spent any)."""
        rate = self.seconds / self.own_spent if self.own_spent else fallback_rate
        return self.seconds + max(self.expected - self.spent, 0) * rate


def _batch_passes(records: dict[str, Record], b: int, kind: str) -> int:
    """Propagations the records of ``kind`` (``clean`` or ``attack``) of batch ``b`` spent."""
    return sum(
        int(r.get("fwd", 0)) + int(r.get("bwd", 0))
        for r in records.values()
        if r.get("batch") == b and r.get("kind") == kind
    )


class _Progress:
    """The protocol's progress bar in propagations, its total the running forecast."""

    def __init__(
        self,
        planned: int,
        enabled: bool,
        forecast: Callable[[Forecast], None] | None,
        bound_per_point: float = 0.0,
    ) -> None:
        self.points, self.points_done, self.clean, self.attacks = 0, 0, 0, 0
        self.forecast, self.bound = forecast, float(bound_per_point)
        self.t0 = time.perf_counter()
        self.total_spent = self.own_spent = 0
        self.bar = tqdm(
            total=max(int(planned), 1),
            unit="prop",
            unit_scale=True,
            desc="protocol",
            file=sys.stderr,
            disable=not enabled,
            dynamic_ncols=True,
        )

    def note(self, text: str) -> None:
        self.bar.set_postfix_str(text)

    def spent(self, passes: int, *, resumed: bool = False) -> None:
        """``passes`` more spent (``resumed``: by an earlier process, from its records)."""
        self.total_spent += max(int(passes), 0)  # kept here: a disabled bar counts nothing
        if not resumed:
            self.own_spent += max(int(passes), 0)
        self.bar.update(max(int(passes), 0))

    def expect(self, points: int) -> None:
        """The clean pass is over (all spent so far): ``points`` will be attacked."""
        self.points, self.clean = points, self.total_spent

    def finished(self, points: int, passes: int, *, resumed: bool = False) -> None:
        """A batch whose ``points`` were attacked for ``passes``: refresh the forecast."""
        self.points_done += points
        self.attacks += passes
        if resumed:
            self.spent(passes, resumed=True)
        if not self.points_done:
            return
        # Jeffreys' prior on "the point survives every attack": the finished points plus half
        # a pseudo-point that survives (costing the upper bound) and half one that breaks at
        # once (costing nothing). Where survivors are rare (a standard model) the few in the
        # batches still to come dominate the cost, and a first batch without one would
        # otherwise forecast none. (Laplace's whole pseudo-points overshot 1.48x on the bench's
        # standard model under aa-fast, whose upper bound is about 200x its cost:
        # bench/results/estimate_accuracy.json.)
        per_point = (self.attacks + 0.5 * self.bound) / (self.points_done + 1)
        rest = per_point * max(self.points - self.points_done, 0)
        expected = int(round(self.clean + self.attacks + rest))
        self.bar.total = max(expected, self.total_spent, 1)
        self.bar.refresh()
        if self.forecast is not None and not resumed:
            spent = self.clean + self.attacks
            elapsed = time.perf_counter() - self.t0
            self.forecast(
                Forecast(expected, spent, self.points_done, self.points, elapsed, self.own_spent)
            )

    def close(self) -> None:
        self.bar.close()
