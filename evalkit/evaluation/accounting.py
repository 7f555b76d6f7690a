"""Every propagation a run spends, counted once: the summary's cost total is the count an
outside observer of the model would make.

The attack records (clean pass, protocol units, sanity probes, diagnostics, the curve) each
carry the propagations they spent, which survive a resume. What no record holds is counted here:
the setup checks (class count, randomness and gradient checks on a probe batch), the timing
probe behind the cost estimate, and the parts of the sanity checks that run outside an attack
record. One :class:`~evalkit.evaluation.units.CostCounter` on the model, attached as soon as the
model is loaded and kept to the end, sees all of them; the records' own passes are subtracted
from it, so nothing is counted twice.

On a fresh single-process run ``cost.forward_passes`` and ``cost.backward_passes`` therefore
equal what a forward hook on the model counts from the moment :func:`evalkit.evaluate` receives
it (``tests/test_cost_accounting.py`` checks it against such a hook). A resumed run adds the
records of earlier processes, not their setup and timing passes; under ``torchrun`` the other
ranks' setup passes are not included (each rank repeats the same checks).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn

from evalkit.evaluation.units import CostCounter


@dataclass
class PassMeter:
    """The run-long counter and the passes of the phases that write no record."""

    counter: CostCounter
    setup: tuple[int, int] = (0, 0)
    timing: tuple[int, int] = (0, 0)
    resumed: frozenset[str] = field(default_factory=frozenset)
    planned: int = 0  # the plan's upper bound (clean pass + attacks), in propagations
    rate: float = 0.0  # seconds per propagation, from the timing probe
    forecast: dict[str, Any] | None = None  # the first forecast after a finished batch

    def estimate_block(self) -> dict[str, Any]:
        """summary.json ``cost.estimate``: what was said before and during the run."""
        block: dict[str, Any] = {
            "upper_bound": int(self.planned),
            "seconds_per_propagation": self.rate,
            "expected": None,
        }
        if self.forecast is not None:
            block.update(self.forecast)
        return block

    @classmethod
    def on(cls, model: nn.Module) -> PassMeter:
        return cls(CostCounter(model))

    def snapshot(self) -> tuple[int, int]:
        return self.counter.snapshot()

    def close(self) -> None:
        self.counter.close()


def _passes(part: Mapping[str, Any]) -> tuple[int, int]:
    return int(part.get("fwd", 0)), int(part.get("bwd", 0))


def _part(fwd: int, bwd: int) -> dict[str, int]:
    return {"forward_passes": int(fwd), "backward_passes": int(bwd)}


def complete_cost(
    cost: dict[str, Any],
    records: Mapping[str, Mapping[str, Any]],
    own: Mapping[str, Mapping[str, Any]],
    meter: PassMeter,
) -> dict[str, Any]:
    """``cost`` (summary.json's block) with the total made whole.

    ``records``: every record of the run (all ranks, resumed ones included); ``own``: the
    records this process wrote on this rank (their passes are inside ``meter``'s count).
    Adds ``unrecorded`` (setup, timing and the rest outside records) and sets
    ``forward_passes``/``backward_passes`` to records + unrecorded.
    """
    in_records = [_passes(r) for r in records.values()]
    fwd_rec, bwd_rec = sum(f for f, _ in in_records), sum(b for _, b in in_records)
    mine = [_passes(r) for k, r in own.items() if k not in meter.resumed]
    fwd_own, bwd_own = sum(f for f, _ in mine), sum(b for _, b in mine)
    fwd_all, bwd_all = meter.snapshot()
    fwd_un, bwd_un = max(fwd_all - fwd_own, 0), max(bwd_all - bwd_own, 0)
    (fs, bs), (ft, bt) = meter.setup, meter.timing
    out = dict(cost)
    out["unrecorded"] = {
        **_part(fwd_un, bwd_un),
        "setup": _part(fs, bs),
        "timing": _part(ft, bt),
        "checks": _part(max(fwd_un - fs - ft, 0), max(bwd_un - bs - bt, 0)),
    }
    out["forward_passes"] = fwd_rec + fwd_un
    out["backward_passes"] = bwd_rec + bwd_un
    out["estimate"] = meter.estimate_block()
    return out
