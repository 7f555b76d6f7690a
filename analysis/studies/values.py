"""The typed values every study judge takes, and the helpers they share to state a finding.

The judges (:mod:`analysis.studies.judge_channels` and its siblings) read no files: they get
:class:`Points` (per-test-point values, one row per training seed), :class:`RunPoints` (one
model's harness run), :class:`Features` (per-image channel means) and :class:`PoolingModel`
(one model of the pooling grid), built by :mod:`analysis.studies.rundirs` or, in the unit tests,
from constructed numbers. Kept apart from the judges so that the judges, the file readers and
:mod:`analysis.studies.mechanisms` / :mod:`analysis.studies.bpda` share one definition.

Every finding's ``numbers`` hold, per compared quantity, a display string
``estimate [lo, hi] (n=.., k seeds, method)`` and, under ``"intervals"``, the same as a dict
(:func:`numbers_dict`). Claims about trained models need :data:`MIN_TRAINING_SEEDS` seeds
(:func:`apply_seed_rule`).

No paper effect sizes are set (:data:`PAPER_EFFECTS`): none of the papers' own tables were
available offline, and numbers from CIFAR-10 would not transfer to Fashion-MNIST; the pure judges
take ``paper_effects`` to use them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analysis.studies.spec import Finding, StudyContext
from analysis.studies.stats import (
    INCONCLUSIVE,
    REPRODUCED,
    Interval,
    across_seeds,
    bootstrap,
    difference,
    proportion,
)

# claims about trained models are judged across at least this many training seeds
MIN_TRAINING_SEEDS = 3

# paper effect sizes per claim id (same units and sign as the measured effect); None = unknown
PAPER_EFFECTS: dict[str, float | None] = {
    "channels.magnitude": None,
    "channels.uniformity": None,
    "channels.at_closes_magnitude": None,
    "channels.at_keeps_uniformity": None,
    "channels.cas_less_uniform": None,
    "cas_cifs.cas": None,
    "cas_cifs.cifs": None,
    "he.worst_case": None,
    "he.ce_overstates": None,
    "sap.looks_robust": None,
    "sap.vanishes": None,
    "pooling.avg_gain": None,
    "pooling.max_contrast": None,
    "pooling.mechanism": None,
}


# per-claim paper effect sizes a caller may pass instead of PAPER_EFFECTS
PaperEffects = Mapping[str, float | None] | None


# ============================================================================ inputs


@dataclass
class Points:
    """Per-test-point values of one quantity (e.g. "robust under the worst case") for one model.

    ``values``: (k, n) in [0, 1], one row per training seed (0/1 correctness, or Monte-Carlo
    probabilities); a (n,) array is one seed. ``index``: (n,) test-point ids, the same for every
    row. ``paired=False`` marks values rebuilt from counts (:meth:`from_counts`): their order
    carries no point identity, so comparisons with them are unpaired.
    """

    values: np.ndarray
    index: np.ndarray | None = None
    paired: bool = True

    def __post_init__(self) -> None:
        v = np.asarray(self.values, dtype=float)
        if v.ndim == 1:
            v = v[None, :]
        if v.ndim != 2 or v.shape[1] == 0:
            raise ValueError(f"Points need shape (n,) or (seeds, n) with n > 0, not {v.shape}")
        if not np.isfinite(v).all() or (v < 0).any() or (v > 1).any():
            raise ValueError("Points values must be finite and in [0, 1]")
        self.values = v
        if self.index is not None:
            self.index = np.asarray(self.index)
            if self.index.shape != (v.shape[1],):
                raise ValueError(f"index has shape {self.index.shape}, values {v.shape}")

    @classmethod
    def from_counts(cls, successes: int | Sequence[float], n: int) -> Points:
        """Values rebuilt from counts (one per seed): ``successes`` ones then zeros; unpaired."""
        ks = [successes] if np.isscalar(successes) else list(successes)
        ks = [round(float(k), 9) for k in ks]  # accuracy * n carries float noise
        rows = []
        for k in ks:
            if not 0 <= k <= n:
                raise ValueError(f"count {k} outside [0, {n}]")
            whole = int(math.floor(k))
            row = np.zeros(n)
            row[:whole] = 1.0
            if whole < n:
                row[whole] = float(k) - whole
            rows.append(row)
        return cls(np.array(rows), None, paired=False)

    @property
    def seeds(self) -> int:
        return int(self.values.shape[0])

    @property
    def n(self) -> int:
        return int(self.values.shape[1])

    def interval(self) -> Interval:
        """The mean (an accuracy) with its interval (Wilson; across seeds when k > 1)."""
        return proportion(self.values)

    def minus(self, other: Points) -> Points:
        """Per-point ``self - other`` for nested events (e.g. CE-robust minus worst-case robust,
        which is in [0, 1] since the worst case is the stricter); counts when unpaired."""
        if self.paired and other.paired and aligned(self, other):
            return Points(np.clip(self.values - other.values, 0, 1), self.index, True)
        if self.n != other.n or self.seeds != other.seeds:
            raise ValueError("minus needs the same seeds and number of points")
        diff = self.values.sum(1) - other.values.sum(1)
        return Points.from_counts(list(np.clip(diff, 0, self.n)), self.n)


def aligned(a: Points, b: Points) -> bool:
    """Same seeds, points and test-point ids, so per-point differences pair the same points."""
    if a.values.shape != b.values.shape:
        return False
    if a.index is None or b.index is None:
        return a.index is None and b.index is None
    return bool(np.array_equal(a.index, b.index))


def compare(a: Points, b: Points, *, seed: int = 0) -> Interval:
    """Interval of ``mean(a) - mean(b)``: paired bootstrap when both are per-point and aligned
    (same seeds, same test points), unpaired otherwise."""
    paired = a.paired and b.paired and aligned(a, b)
    if not paired and a.seeds != b.seeds:
        raise ValueError(f"cannot compare {a.seeds} seeds with {b.seeds}")
    return difference(a.values, b.values, paired=paired, seed=seed)


@dataclass
class RunPoints:
    """One model's harness results: clean correctness, worst-case robustness and, per attack id,
    the robustness after that attack (cumulative under compaction), all on the same points."""

    clean: Points
    worst: Points
    attacks: dict[str, Points] = field(default_factory=dict)

    def ce_only(self, prefixes: Sequence[str] = ("fgsm", "pgd")) -> Points | None:
        """Robust after the CE-loss attacks only (ids starting with ``prefixes``): the per-point
        minimum over them; from counts, the last one (the harness's cumulative waterfall)."""
        found = [p for k, p in self.attacks.items() if k.lower().startswith(tuple(prefixes))]
        if not found:
            return None
        if all(p.paired for p in found) and all(aligned(found[0], p) for p in found):
            return Points(np.min([p.values for p in found], axis=0), found[0].index, True)
        return found[-1]


@dataclass
class Features:
    """Per-image spatial-mean activations ``(N, C)`` at one layer, natural and adversarial
    (the same N images in the same order), for one model and one seed."""

    nat: np.ndarray
    adv: np.ndarray

    def __post_init__(self) -> None:
        self.nat = np.asarray(self.nat, dtype=float)
        self.adv = np.asarray(self.adv, dtype=float)
        if self.nat.ndim != 2 or self.nat.shape != self.adv.shape or len(self.nat) < 2:
            raise ValueError(
                f"Features need two (N, C) arrays of one shape, N >= 2; got "
                f"{self.nat.shape} and {self.adv.shape}"
            )

    def active(self, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """0/1 activation indicators (N, C), natural and adversarial (see channels.activated)."""

        def act(f: np.ndarray) -> np.ndarray:
            return (f > threshold * f.max(1, keepdims=True)).astype(float)

        return act(self.nat), act(self.adv)


# ============================================================================ helpers


def numbers_dict(ivs: Mapping[str, Interval], **extra: Any) -> dict[str, Any]:
    """Display strings per quantity, the machine-readable intervals, then plain extras."""
    out: dict[str, Any] = {k: iv.text() for k, iv in ivs.items()}
    out.update(extra)
    out["intervals"] = {k: iv.to_dict() for k, iv in ivs.items()}
    return out


def paper_value(paper_effects: PaperEffects, key: str) -> float | None:
    """The paper's effect size for claim ``key`` (``paper_effects``, else :data:`PAPER_EFFECTS`)."""
    return (paper_effects or PAPER_EFFECTS).get(key)


def size_note(effect: Interval, paper: float | None, v: str) -> str:
    """The explanation's note when a reproduced effect's interval excludes the paper's size."""
    if paper is None or v != REPRODUCED or not effect.excludes(paper):
        return ""
    return f"; the effect differs from the paper's {paper:+.3g}"


def seeded(stat_for: Any, per_seed: Sequence[Any], n: int, method: str, seed: int) -> Interval:
    """Bootstrap one statistic per seed (``stat_for(seed_data)`` gives the weight function) and
    combine the seeds."""
    ivs = [bootstrap(stat_for(d), n, seed=seed, method=method) for d in per_seed]
    return across_seeds(ivs)


def make_finding(
    claim: str,
    verdict_: str,
    numbers: dict[str, Any],
    explanation: str,
    effect: Interval | None = None,
) -> Finding:
    """A :class:`Finding` whose ``effect`` / ``interval`` are the judged effect's (when finite)."""
    f = Finding(claim, verdict_, numbers, explanation)
    if effect is not None and effect.finite:
        f.effect = round(float(effect.estimate), 6)
        f.interval = (round(float(effect.lo), 6), round(float(effect.hi), 6))
    return f


def round4(x: float) -> float:
    """A plain number shown beside the intervals (not judged), to 4 decimals."""
    return round(float(x), 4)


@dataclass
class PoolingModel:
    """One model of the pooling grid: pooling kind, map size, robust (and clean) points, and
    optionally the per-image relative change of the pooled feature (k, n) or (n,)."""

    pool: str
    map_size: float
    robust: Points
    clean: Points | None = None
    change_rel: np.ndarray | None = None


def apply_seed_rule(findings: list[Finding], ctx: StudyContext) -> list[Finding]:
    """Record the training seeds the file judges pooled (``ctx.seeds``, else ``[ctx.seed]``);
    with fewer than :data:`MIN_TRAINING_SEEDS` every verdict is inconclusive: each claim is about
    trained models, and one training run's luck is not a finding."""
    seeds = [int(s) for s in (getattr(ctx, "seeds", None) or (ctx.seed,))]
    for f in findings:
        f.seeds = seeds
        if len(seeds) < MIN_TRAINING_SEEDS and f.verdict != INCONCLUSIVE:
            f.explanation += (
                f"; judged {f.verdict!r} on {len(seeds)} training seed(s), reported as "
                f"inconclusive (claims about training need >= {MIN_TRAINING_SEEDS} seeds)"
            )
            f.verdict = INCONCLUSIVE
    return findings
