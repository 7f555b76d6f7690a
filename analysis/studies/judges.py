"""Verdicts from measured numbers, with intervals. The rules are in :mod:`analysis.studies.stats`
(``verdict``, ``at_most``, ``guard``, ``combine``); this module says, per claim, which effect is
measured, in which direction, and which guard applies.

Two layers:

* **pure judges** (``channels_findings``, ``cas_cifs_findings``, ``he_findings``,
  ``sap_findings``, ``pooling_findings``) take plain arrays — :class:`Points` (per-test-point
  values, one row per training seed), :class:`RunPoints` (one model's harness run) and
  :class:`Features` (per-image channel means) — and return one :class:`Finding` per claim. They
  read no files, so each rule has a unit test on constructed numbers.
* **file judges** (``judge_channels(ctx)`` etc., what the study catalog calls) read what the
  study's commands wrote and call the pure judges. Training seeds: when the context has
  ``run_dirs(key) -> list[Path]`` / ``analysis_dirs(name) -> list[Path]`` (one folder per seed,
  same test points), every seed is used; otherwise the single ``run_dir`` / ``analysis_dir``.
  With fewer than :data:`MIN_TRAINING_SEEDS` (3) seeds every verdict is reported inconclusive.

Intervals: differences of accuracies between two models are paired over test points (per-point
scores from the harness's ``examples.parquet``); when only counts were recorded they are
unpaired (independent bootstraps of the two counts, close to Newcombe's score interval).
Channel statistics are bootstrapped over images, jointly for all models (the channel study feeds
every model the same images). Several seeds are combined with
:func:`analysis.studies.stats.across_seeds`.

Every finding's ``numbers`` hold, per compared quantity, a display string
``estimate [lo, hi] (n=.., k seeds, method)`` and, under ``"intervals"``, the same as a dict.

Claims and rules (effect, direction, guard):

* channels — magnitude: ratio adversarial/natural mean channel magnitude (standard model) - 1 > 0.
  Uniformity: cross-fitted ``tail_share`` > 0 (standard model), guard: over 98% of channels
  active on average on natural and adversarial images (every activation-count measure is flat).
  AT closes (narrows) the magnitude gap: ``log r_std - |log r_AT|`` > 0, guard: the standard model's gap
  is not itself reproduced. AT keeps the uniformity gap: ``tail_share`` (AT) > 0, saturation
  guard. CAS less uniform than AT: entropy(AT) - entropy(AT+CAS) > 0 for adversarial and for
  natural counts (combined), guard: either model saturated (a saturated model's entropy is
  pinned near 1, which alone would decide the sign).
* cas-cifs — per base objective (AT, TRADES, MART) that was run: worst-case robust accuracy of
  base+plugin minus base > 0; the pairs are combined.
* he — worst case (AT+HE) - worst case (AT) > 0; CE-only overstatement (accuracy after the CE
  attacks FGSM and PGD minus the worst case) of AT+HE minus that of AT > 0.
* sap-eot (at the sweep's smallest eps, where the dense model is not yet at 0%) — SAP with
  EOT-1 minus dense > 0; "vanishes": the EOT drop (EOT-1 minus EOT-max) > 0 combined with
  ``at_most(SAP EOT-max - dense, 0.05)``; a residual above the margin alone makes it "not
  reproduced" (robustness still there did not vanish). Guard: the first claim is not reproduced.
* pooling — avg pooling: robust accuracy at the largest map minus at the smallest > 0. Max
  pooling: (avg gain) - (max gain) > 0 combined with ``at_most(max gain, 0.05)``, guard: the
  avg claim is not reproduced. Mechanism:
  relative drop of the avg-pooled feature change from the smallest to the largest map minus the
  same for max pooling > 0 (needs per-image changes; inconclusive without them).

No paper effect sizes are set (:data:`PAPER_EFFECTS`): none of the papers' own tables were
available offline, and numbers from CIFAR-10 would not transfer to Fashion-MNIST; the pure judges
take ``paper_effects`` to use them.

History: the first version (single seed, point estimates, a fixed 1-point gap) was replaced by
these rules after issue 11; its verdicts are not comparable.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analysis.channels import tail_share, tail_share_crossfit
from analysis.naming import file_slug
from analysis.studies import mechanisms
from analysis.studies.spec import Finding, StudyContext
from analysis.studies.stats import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    REPRODUCED,
    Interval,
    across_seeds,
    at_most,
    bootstrap,
    combine,
    difference,
    guard,
    nan_interval,
    proportion,
    verdict,
)
from evalkit.errors import EvalkitError

# when more than this share of channels is "activated" on every image (natural and adversarial),
# the count distribution is flat by construction and no count measure can tell the two apart
SATURATED_ACTIVE_FRACTION = 0.98
# "SAP's robustness vanishes": SAP under EOT at most this much above the dense model
SAP_VANISH_MARGIN = 0.05

# "does not hold for max pooling": its gain from the larger map is at most this
POOLING_MAX_MARGIN = 0.05
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
        if self.paired and other.paired and _aligned(self, other):
            return Points(np.clip(self.values - other.values, 0, 1), self.index, True)
        if self.n != other.n or self.seeds != other.seeds:
            raise ValueError("minus needs the same seeds and number of points")
        diff = self.values.sum(1) - other.values.sum(1)
        return Points.from_counts(list(np.clip(diff, 0, self.n)), self.n)


def _aligned(a: Points, b: Points) -> bool:
    if a.values.shape != b.values.shape:
        return False
    if a.index is None or b.index is None:
        return a.index is None and b.index is None
    return bool(np.array_equal(a.index, b.index))


def compare(a: Points, b: Points, *, seed: int = 0) -> Interval:
    """Interval of ``mean(a) - mean(b)``: paired bootstrap when both are per-point and aligned
    (same seeds, same test points), unpaired otherwise."""
    paired = a.paired and b.paired and _aligned(a, b)
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
        if all(p.paired for p in found) and all(_aligned(found[0], p) for p in found):
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


def _numbers(ivs: Mapping[str, Interval], **extra: Any) -> dict[str, Any]:
    """Display strings per quantity, the machine-readable intervals, then plain extras."""
    out: dict[str, Any] = {k: iv.text() for k, iv in ivs.items()}
    out.update(extra)
    out["intervals"] = {k: iv.to_dict() for k, iv in ivs.items()}
    return out


def _paper(paper_effects: Mapping[str, float | None] | None, key: str) -> float | None:
    return (paper_effects or PAPER_EFFECTS).get(key)


def _size_note(effect: Interval, paper: float | None, v: str) -> str:
    if paper is None or v != REPRODUCED or not effect.excludes(paper):
        return ""
    return f"; the effect differs from the paper's {paper:+.3g}"


def _seeded(stat_for: Any, per_seed: Sequence[Any], n: int, method: str, seed: int) -> Interval:
    """Bootstrap one statistic per seed (``stat_for(seed_data)`` gives the weight function) and
    combine the seeds."""
    ivs = [bootstrap(stat_for(d), n, seed=seed, method=method) for d in per_seed]
    return across_seeds(ivs)


def _finding(
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


def _r(x: float) -> float:
    return round(float(x), 4)


# ============================================================================ channels


def _norm_entropy(counts: np.ndarray) -> np.ndarray:
    """Row-wise normalised entropy of (m, C) counts (0 log 0 = 0); NaN for an all-zero row."""
    total = counts.sum(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = counts / total
        h = -np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0).sum(1)
    return np.where(total[:, 0] > 0, h / np.log(counts.shape[1]), np.nan)


def _active_fraction(a: np.ndarray) -> float:
    return float(a.mean())


def channels_findings(
    features: Mapping[str, Sequence[Features]],
    *,
    threshold: float = 0.01,
    frac: float = 0.5,
    labels: tuple[str, str, str] = ("std", "at", "at_cas"),
    paper_effects: Mapping[str, float | None] | None = None,
    seed: int = 0,
) -> list[Finding]:
    """The five CAS channel claims from per-image features.

    ``features[label]``: one :class:`Features` per training seed; ``labels`` name the standard,
    AT and AT+CAS models. All models' features must hold the same N images (the channel study
    uses one image set for all), which makes cross-model comparisons paired over images.
    """
    std_l, at_l, cas_l = labels
    for lab in labels:
        if not features.get(lab):
            raise EvalkitError(
                f"channel judge needs features of model {lab!r}; run the channels study"
            )
    k = len(features[std_l])
    if any(len(features[lab]) != k for lab in labels):
        raise EvalkitError("channel judge needs the same number of seeds for every model")
    n = len(features[std_l][0].nat)
    if any(len(f.nat) != n for lab in labels for f in features[lab]):
        raise EvalkitError("channel judge needs the same images for every model (same N)")
    seeds = list(range(k))
    act = {lab: [f.active(threshold) for f in features[lab]] for lab in labels}
    mag = {
        lab: [(f.nat.mean(1), f.adv.mean(1)) for f in features[lab]] for lab in labels
    }  # per-image mean over channels

    def mean_of(x: np.ndarray) -> Any:
        return lambda w: (w @ x) / w.sum(1)

    def ratio_of(lab: str, s: int) -> Any:
        m_nat, m_adv = mag[lab][s]
        return lambda w: (w @ m_adv) / (w @ m_nat)

    def ratio(lab: str) -> Interval:
        return _seeded(lambda s: ratio_of(lab, s), seeds, n, "bootstrap over images", seed)

    def magnitude(lab: str, which: int) -> Interval:
        return _seeded(lambda s: mean_of(mag[lab][s][which]), seeds, n, "bootstrap", seed)

    def tail(lab: str) -> Interval:
        def stat_for(s: int) -> Any:
            a_nat, a_adv = act[lab][s]
            return lambda w: tail_share_crossfit(a_nat, a_adv, frac=frac, weights=w)

        return _seeded(stat_for, seeds, n, "cross-fitted, bootstrap over images", seed)

    def entropy(lab: str, which: int) -> Interval:
        return _seeded(
            lambda s: lambda w: _norm_entropy(w @ act[lab][s][which]),
            seeds,
            n,
            "bootstrap over images",
            seed,
        )

    def entropy_gap(lab_a: str, lab_b: str, which: int) -> Interval:
        """entropy(lab_a) - entropy(lab_b), paired over images."""
        return _seeded(
            lambda s: (
                lambda w: (
                    _norm_entropy(w @ act[lab_a][s][which])
                    - _norm_entropy(w @ act[lab_b][s][which])
                )
            ),
            seeds,
            n,
            "paired bootstrap over images",
            seed,
        )

    def saturated(lab: str) -> bool:
        fr = [min(_active_fraction(a_n), _active_fraction(a_a)) for a_n, a_a in act[lab]]
        return float(np.mean(fr)) > SATURATED_ACTIVE_FRACTION

    def active_frac(lab: str, which: int) -> float:
        return _r(np.mean([_active_fraction(a[which]) for a in act[lab]]))

    def in_sample(lab: str) -> dict[str, float]:
        from analysis.channels import spearman

        ts, rho = [], []
        for a_nat, a_adv in act[lab]:
            cn, ca = a_nat.sum(0), a_adv.sum(0)
            ts.append(tail_share(cn, ca, frac))
            rho.append(spearman(cn, ca))
        return {
            f"{lab}_tail_share_in_sample": _r(np.mean(ts)),
            f"{lab}_spearman_counts": _r(np.nanmean(rho)) if np.isfinite(rho).any() else None,
        }

    out: list[Finding] = []

    def uniformity_finding(lab: str, claim: str, paper_key: str, note: str) -> bool:
        """Append the finding that ``lab``'s adversarial activations spread onto the natural
        tail (cross-fitted tail share > 0, guarded by saturation); return the saturation."""
        ts = tail(lab)
        p = _paper(paper_effects, paper_key)
        sat = saturated(lab)
        v = guard(verdict(ts, direction=+1, paper_effect=p), sat)
        out.append(
            _finding(
                claim,
                v,
                _numbers(
                    {
                        f"{lab}_tail_share": ts,
                        f"{lab}_entropy_natural": entropy(lab, 0),
                        f"{lab}_entropy_adversarial": entropy(lab, 1),
                    },
                    **{
                        f"{lab}_active_fraction_natural": active_frac(lab, 0),
                        f"{lab}_active_fraction_adversarial": active_frac(lab, 1),
                        f"{lab}_saturated": sat,
                    },
                    **in_sample(lab),
                ),
                note + _size_note(ts, p, v),
                effect=ts,
            )
        )
        return sat

    # 1. magnitude gap on the standard model
    r_std = ratio(std_l)
    eff1 = r_std.shift(-1.0)
    p1 = _paper(paper_effects, "channels.magnitude")
    v1 = verdict(eff1, direction=+1, paper_effect=p1)
    out.append(
        _finding(
            "adversarial examples activate channels with higher magnitude than natural ones (standard model)",
            v1,
            _numbers(
                {
                    f"{std_l}_mean_magnitude_natural": magnitude(std_l, 0),
                    f"{std_l}_mean_magnitude_adversarial": magnitude(std_l, 1),
                    f"{std_l}_ratio_adv_over_nat": r_std,
                }
            ),
            "effect = adversarial/natural mean channel magnitude - 1 on the same images; "
            "reproduced when its interval lies above 0" + _size_note(eff1, p1, v1),
            effect=eff1,
        )
    )

    # 2. uniformity on the standard model
    uniformity_finding(
        std_l,
        "adversarial examples activate channels more uniformly than natural ones (standard model)",
        "channels.uniformity",
        "tail_share = share of adversarial activations on the channels natural images use "
        f"least (the tail {frac:.0%} of the natural ranking) minus the natural share, ranked "
        "and measured on different halves of the images; reproduced when its interval lies "
        f"above 0; inconclusive whatever it shows when over {SATURATED_ACTIVE_FRACTION:.0%} "
        "of channels are active (saturated). Entropy and Spearman are shown, not judged",
    )

    # 3. AT closes the magnitude gap
    def closes_for(s: int) -> Any:
        sn, sa = mag[std_l][s]
        an, aa = mag[at_l][s]

        def stat(w: np.ndarray) -> np.ndarray:
            with np.errstate(invalid="ignore", divide="ignore"):
                g_std = np.log((w @ sa) / (w @ sn))
                g_at = np.log((w @ aa) / (w @ an))
            return g_std - np.abs(g_at)

        return stat

    closes = _seeded(closes_for, seeds, n, "paired bootstrap over images", seed)
    p3 = _paper(paper_effects, "channels.at_closes_magnitude")
    v3 = guard(verdict(closes, direction=+1, paper_effect=p3), v1 != REPRODUCED)
    out.append(
        _finding(
            "adversarial training closes the magnitude gap",
            v3,
            _numbers(
                {
                    "gap_closed_log": closes,
                    f"{std_l}_ratio_adv_over_nat": r_std,
                    f"{at_l}_ratio_adv_over_nat": ratio(at_l),
                    f"{at_l}_mean_magnitude_adversarial": magnitude(at_l, 1),
                }
            ),
            "effect = log(ratio standard) - |log(ratio AT)|, > 0 when AT's adversarial/natural "
            "magnitude gap is smaller than the standard model's; inconclusive when the standard "
            "model's gap is not itself reproduced" + _size_note(closes, p3, v3),
            effect=closes,
        )
    )

    # 4. AT keeps the uniformity gap
    sat_at = uniformity_finding(
        at_l,
        "adversarial training does not remove the uniformity gap",
        "channels.at_keeps_uniformity",
        "AT model: cross-fitted tail_share > 0 means adversarial activations still spread onto "
        "the natural tail; same saturation guard as the standard model",
    )

    # 5. CAS less uniform than AT
    gap_adv = entropy_gap(at_l, cas_l, 1)
    gap_nat = entropy_gap(at_l, cas_l, 0)
    p5 = _paper(paper_effects, "channels.cas_less_uniform")
    # either model saturated pins its entropy near 1 and fixes the sign of the gap: no verdict
    sat_either = sat_at or saturated(cas_l)
    v5 = guard(
        combine(
            [
                verdict(gap_adv, direction=+1, paper_effect=p5),
                verdict(gap_nat, direction=+1, paper_effect=p5),
            ]
        ),
        sat_either,
    )
    out.append(
        _finding(
            "CAS makes channel activation less uniform than plain AT",
            v5,
            _numbers(
                {
                    "entropy_at_minus_cas_adversarial": gap_adv,
                    "entropy_at_minus_cas_natural": gap_nat,
                    f"{at_l}_entropy_adversarial": entropy(at_l, 1),
                    f"{cas_l}_entropy_adversarial": entropy(cas_l, 1),
                },
                **{
                    f"{cas_l}_active_fraction_natural": active_frac(cas_l, 0),
                    f"{cas_l}_active_fraction_adversarial": active_frac(cas_l, 1),
                    "either_saturated": sat_either,
                },
            ),
            "effect = normalised entropy of activation counts, AT minus AT+CAS (> 0: CAS less "
            "uniform), on adversarial and on natural images, paired over images; reproduced when "
            "both are, partly when one is and the other is not reproduced; inconclusive when "
            "either model is saturated (its entropy is pinned near 1)",
            effect=gap_adv,
        )
    )
    return out


# ============================================================================ cas-cifs / he


def cas_cifs_findings(
    runs: Mapping[str, RunPoints],
    *,
    plugins: Sequence[str] = ("cas", "cifs"),
    bases: Sequence[str] = ("at", "trades", "mart"),
    paper_effects: Mapping[str, float | None] | None = None,
    seed: int = 0,
) -> list[Finding]:
    """One finding per plugin: does ``base_plugin`` beat ``base`` on worst-case robust accuracy,
    for every base in ``runs`` that has the plugin run too (``runs`` keyed ``at``, ``at_cas``...)."""
    out = []
    for plugin in plugins:
        pairs = [(b, f"{b}_{plugin}") for b in bases if b in runs and f"{b}_{plugin}" in runs]
        ivs: dict[str, Interval] = {}
        verdicts = []
        parts = []
        effects = []
        paper = _paper(paper_effects, f"cas_cifs.{plugin}")
        for base, key in pairs:
            eff = compare(runs[key].worst, runs[base].worst, seed=seed)
            v = verdict(eff, direction=+1, paper_effect=paper)
            verdicts.append(v)
            parts.append(f"{base}: {v}")
            ivs[f"{base}_clean"] = runs[base].clean.interval()
            ivs[f"{key}_clean"] = runs[key].clean.interval()
            ivs[f"{base}_worst_case"] = runs[base].worst.interval()
            ivs[f"{key}_worst_case"] = runs[key].worst.interval()
            ivs[f"{key}_minus_{base}_worst_case"] = eff
            effects.append(eff)
        out.append(
            _finding(
                f"{plugin.upper()} improves robust accuracy over its base objective under adaptive attacks",
                combine(verdicts),
                _numbers(ivs),
                "effect = worst-case robust accuracy (over the protocol's attacks, adaptive joint "
                "loss for the heads) of base+plugin minus base, paired over test points; per "
                f"pair: {', '.join(parts) or 'no pair was run'}; reproduced when every pair is",
                effect=effects[0] if len(effects) == 1 else None,
            )
        )
    return out


def he_findings(
    at: RunPoints,
    he: RunPoints,
    *,
    paper_effects: Mapping[str, float | None] | None = None,
    seed: int = 0,
) -> list[Finding]:
    """HE claims from the AT and AT+HE harness runs (same protocol and points)."""
    eff = compare(he.worst, at.worst, seed=seed)
    p1 = _paper(paper_effects, "he.worst_case")
    v1 = verdict(eff, direction=+1, paper_effect=p1)
    out = [
        _finding(
            "HE improves PGD-AT's worst-case robust accuracy under margin/DLR attacks",
            v1,
            _numbers(
                {
                    "at_clean": at.clean.interval(),
                    "at_he_clean": he.clean.interval(),
                    "at_worst_case": at.worst.interval(),
                    "at_he_worst_case": he.worst.interval(),
                    "at_he_minus_at_worst_case": eff,
                }
            ),
            "effect = worst-case robust accuracy (AT+HE) - (AT) over the protocol's attacks, paired "
            "over test points; reproduced when its interval lies above 0" + _size_note(eff, p1, v1),
            effect=eff,
        )
    ]
    ce_at, ce_he = at.ce_only(), he.ce_only()
    if ce_at is not None and ce_he is not None:
        over_at, over_he = ce_at.minus(at.worst), ce_he.minus(he.worst)
        eff2 = compare(over_he, over_at, seed=seed)
        p2 = _paper(paper_effects, "he.ce_overstates")
        v2 = verdict(eff2, direction=+1, paper_effect=p2)
        out.append(
            _finding(
                "CE-only PGD overstates HE's robustness more than plain AT's",
                v2,
                _numbers(
                    {
                        "at_ce_only": ce_at.interval(),
                        "at_he_ce_only": ce_he.interval(),
                        "at_overstatement": over_at.interval(),
                        "at_he_overstatement": over_he.interval(),
                        "at_he_minus_at_overstatement": eff2,
                    }
                ),
                "overstatement = accuracy after the CE attacks (FGSM, PGD) minus the worst case; "
                "effect = overstatement (AT+HE) - (AT), paired over test points"
                + _size_note(eff2, p2, v2),
                effect=eff2,
            )
        )
    return out


# ============================================================================ sap


def vanishes(
    drop: Interval, residual: Interval, margin: float, *, looked: bool
) -> tuple[str, str, str]:
    """The rule "the apparent robustness vanishes under the adaptive attack" (SAP under EOT,
    input transformations under BPDA): ``(verdict, drop verdict, residual verdict)``. The drop
    (non-adaptive minus adaptive) must lie above 0 and the residual (adaptive minus the
    undefended model) at most ``margin``; robustness still there did not vanish, whatever the
    drop; inconclusive unless the defense ``looked`` robust in the first place."""
    v_drop, v_res = verdict(drop, direction=+1), at_most(residual, margin)
    v = NOT_REPRODUCED if v_res == NOT_REPRODUCED else combine([v_drop, v_res])
    return guard(v, not looked), v_drop, v_res


def sap_findings(
    dense: Points,
    sap: Mapping[int, Points],
    *,
    eps: float,
    margin: float = SAP_VANISH_MARGIN,
    paper_effects: Mapping[str, float | None] | None = None,
    seed: int = 0,
    extra: Mapping[str, Any] | None = None,
) -> list[Finding]:
    """SAP claims at one eps: ``dense`` robust accuracy and SAP's per EOT sample count."""
    if not sap:
        raise EvalkitError("SAP judge needs SAP results for at least one EOT count")
    e_lo, e_hi = min(sap), max(sap)
    looks = compare(sap[e_lo], dense, seed=seed)
    p1 = _paper(paper_effects, "sap.looks_robust")
    v1 = verdict(looks, direction=+1, paper_effect=p1)
    drop = compare(sap[e_lo], sap[e_hi], seed=seed)
    residual = compare(sap[e_hi], dense, seed=seed)
    v2, v_drop, v_res = vanishes(drop, residual, margin, looked=v1 == REPRODUCED and e_lo != e_hi)
    ivs = {
        "dense_robust": dense.interval(),
        **{f"sap_robust_eot{e}": sap[e].interval() for e in sorted(sap)},
    }
    extra = dict(extra or {})
    return [
        _finding(
            "SAP looks more robust than the dense model under plain (single-sample) PGD",
            v1,
            _numbers({**ivs, f"sap_eot{e_lo}_minus_dense": looks}, eps=eps, **extra),
            f"eps {eps:g} (smallest of the sweep): effect = SAP robust accuracy with EOT-{e_lo} "
            "minus the dense model's, reproduced when its interval lies above 0"
            + _size_note(looks, p1, v1),
            effect=looks,
        ),
        _finding(
            "SAP's apparent robustness vanishes under EOT",
            v2,
            _numbers(
                {
                    **ivs,
                    f"sap_drop_eot{e_lo}_to_eot{e_hi}": drop,
                    f"sap_eot{e_hi}_minus_dense": residual,
                },
                eps=eps,
                drop_verdict=v_drop,
                residual_verdict=v_res,
            ),
            f"two parts: the drop EOT-{e_lo} -> EOT-{e_hi} is above 0, and SAP with EOT-{e_hi} is "
            f"at most {margin:.0%} above dense (interval below {margin:g}); combined, except that "
            "a residual significantly above the margin alone means not reproduced; "
            "inconclusive when SAP did not look robust in the first place",
            effect=residual,
        ),
    ]


# ============================================================================ pooling


@dataclass
class PoolingModel:
    """One model of the pooling grid: pooling kind, map size, robust (and clean) points, and
    optionally the per-image relative change of the pooled feature (k, n) or (n,)."""

    pool: str
    map_size: float
    robust: Points
    clean: Points | None = None
    change_rel: np.ndarray | None = None


def _trend(points: list[tuple[float, float]]) -> float:
    """Spearman rank correlation of (map size, robust accuracy); 0 for fewer than 2 points."""
    if len(points) < 2:
        return 0.0
    xs, ys = np.array([p[0] for p in points]), np.array([p[1] for p in points])
    rx, ry = xs.argsort().argsort(), ys.argsort().argsort()
    if rx.std() == 0 or ry.std() == 0:
        return 0.0
    return float(np.corrcoef(rx, ry)[0, 1])


def _gain_contrast(models: list[PoolingModel], other: list[PoolingModel], seed: int) -> Interval:
    """(largest - smallest) of ``models`` minus the same of ``other`` (robust accuracy)."""
    a_lo, a_hi = models[0].robust, models[-1].robust
    b_lo, b_hi = other[0].robust, other[-1].robust
    pts = [a_hi, a_lo, b_hi, b_lo]
    if all(p.paired for p in pts) and all(_aligned(pts[0], p) for p in pts):
        x = a_hi.values - a_lo.values
        y = b_hi.values - b_lo.values
        return difference(x, y, paired=True, seed=seed)
    # unpaired: sum of the two gains' independent intervals' variances (normal approximation)
    ga, gb = compare(a_hi, a_lo, seed=seed), compare(b_hi, b_lo, seed=seed + 1)
    est = ga.estimate - gb.estimate
    half = math.hypot((ga.hi - ga.lo) / 2, (gb.hi - gb.lo) / 2)
    n = min(ga.n, gb.n)
    return Interval(
        est,
        est - half,
        est + half,
        n,
        "unpaired, gains' half-widths in quadrature",
        ga.level,
        max(ga.seeds, gb.seeds),
    )


def _relative_drop(small: np.ndarray, large: np.ndarray) -> Any:
    def stat(w: np.ndarray) -> np.ndarray:
        s, lg = w @ small, w @ large
        with np.errstate(invalid="ignore", divide="ignore"):
            return (s - lg) / s

    return stat


def pooling_findings(
    models: Mapping[str, PoolingModel],
    *,
    paper_effects: Mapping[str, float | None] | None = None,
    seed: int = 0,
) -> list[Finding]:
    """The RCM pooling claims from the grid of avg/max-pooled models of several map sizes."""
    by_pool = {
        p: sorted((m for m in models.values() if m.pool == p), key=lambda m: m.map_size)
        for p in ("avg", "max")
    }
    avg, mx = by_pool["avg"], by_pool["max"]
    ivs: dict[str, Interval] = {}
    for label, m in models.items():
        ivs[f"{label}_robust"] = m.robust.interval()
    t_avg = _trend([(m.map_size, float(m.robust.values.mean())) for m in avg])
    t_max = _trend([(m.map_size, float(m.robust.values.mean())) for m in mx])
    extra = {
        "map_sizes": {label: m.map_size for label, m in models.items()},
        "spearman_avg": round(t_avg, 3),
        "spearman_max": round(t_max, 3),
    }
    out = []
    if len(avg) >= 2:
        gain_avg = compare(avg[-1].robust, avg[0].robust, seed=seed)
        p1 = _paper(paper_effects, "pooling.avg_gain")
        v1 = verdict(gain_avg, direction=+1, paper_effect=p1)
    else:
        gain_avg, v1, p1 = nan_interval(0, "needs two avg-pooled sizes"), INCONCLUSIVE, None
    out.append(
        _finding(
            "larger feature maps before average pooling give higher robust accuracy",
            v1,
            _numbers({**ivs, "avg_gain_largest_minus_smallest": gain_avg}, **extra),
            "effect = robust accuracy of the avg-pooled model with the largest map minus the "
            "smallest, paired over test points when per-point results exist; Spearman over all "
            "sizes shown, not judged" + _size_note(gain_avg, p1, v1),
            effect=gain_avg,
        )
    )
    if len(avg) >= 2 and len(mx) >= 2:
        contrast = _gain_contrast(avg, mx, seed)
        gain_max = compare(mx[-1].robust, mx[0].robust, seed=seed)
        p2 = _paper(paper_effects, "pooling.max_contrast")
        # "does not hold": max pooling gains clearly less than avg pooling, and at most a margin
        v_flat = at_most(gain_max, POOLING_MAX_MARGIN)
        v2 = guard(
            combine([verdict(contrast, direction=+1, paper_effect=p2), v_flat]), v1 != REPRODUCED
        )
    else:
        contrast = gain_max = nan_interval(0, "needs two sizes per pooling")
        v2 = INCONCLUSIVE
    out.append(
        _finding(
            "the same does not hold for max pooling",
            v2,
            _numbers(
                {
                    "avg_gain_largest_minus_smallest": gain_avg,
                    "max_gain_largest_minus_smallest": gain_max,
                    "avg_gain_minus_max_gain": contrast,
                },
                **extra,
            ),
            "two parts: effect = avg-pooling gain minus max-pooling gain (largest minus smallest "
            f"map) above 0, and the max-pooling gain at most {POOLING_MAX_MARGIN:g} (interval "
            "below it); combined; inconclusive when the avg-pooling claim is not reproduced "
            "(nothing to contrast)",
            effect=contrast,
        )
    )
    have = [m.change_rel is not None for m in (avg[:1] + avg[-1:] + mx[:1] + mx[-1:])]
    if len(avg) >= 2 and len(mx) >= 2 and all(have):
        arrays = [
            np.atleast_2d(np.asarray(m.change_rel, dtype=float))
            for m in (avg[0], avg[-1], mx[0], mx[-1])
        ]
        n = arrays[0].shape[1]
        if any(a.shape != arrays[0].shape for a in arrays):
            raise EvalkitError("pooling judge needs per-image changes on the same images")
        a_s, a_l, m_s, m_l = arrays

        def stat_for(s: int) -> Any:
            fa, fm = _relative_drop(a_s[s], a_l[s]), _relative_drop(m_s[s], m_l[s])
            return lambda w: fa(w) - fm(w)

        k = a_s.shape[0]
        mech = _seeded(stat_for, list(range(k)), n, "paired bootstrap over images", seed)
        drop_avg = _seeded(
            lambda s: _relative_drop(a_s[s], a_l[s]), list(range(k)), n, "bootstrap", seed
        )
        drop_max = _seeded(
            lambda s: _relative_drop(m_s[s], m_l[s]), list(range(k)), n, "bootstrap", seed
        )
        p3 = _paper(paper_effects, "pooling.mechanism")
        v3 = verdict(mech, direction=+1, paper_effect=p3)
        mech_ivs = {
            "avg_relative_drop": drop_avg,
            "max_relative_drop": drop_max,
            "avg_minus_max_relative_drop": mech,
        }
        note = ""
    else:
        v3, mech_ivs = INCONCLUSIVE, {}
        note = "; per-image pooled changes were not recorded, so no interval: inconclusive"
    out.append(
        _finding(
            "with larger maps the average-pooled feature changes less under attack, more so than with max pooling",
            v3,
            _numbers(mech_ivs),
            "relative drop = (change at the smallest map - change at the largest) / change at the "
            "smallest, change = mean ||pool(f(x')) - pool(f(x))|| / ||pool(f(x))|| over images; "
            "effect = avg drop minus max drop, paired over images" + note,
            effect=mech_ivs.get("avg_minus_max_relative_drop"),
        )
    )
    return out


# ============================================================================ file layer


def _json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def _seeds(findings: list[Finding], ctx: StudyContext) -> list[Finding]:
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


def _run_dirs(ctx: StudyContext, key: str) -> list[Path]:
    fn = getattr(ctx, "run_dirs", None)
    return [Path(p) for p in fn(key)] if callable(fn) else [ctx.run_dir(key)]


def _analysis_dirs(ctx: StudyContext, name: str) -> list[Path]:
    fn = getattr(ctx, "analysis_dirs", None)
    return [Path(p) for p in fn(name)] if callable(fn) else [ctx.analysis_dir(name)]


def worst_case(summary: dict[str, Any]) -> float:
    """Worst-case robust accuracy at the study's (first) eps."""
    return float(summary["worst_case"][0]["robust_accuracy"])


def _one_run(run_dir: Path) -> tuple[dict[str, Any], dict[str, np.ndarray] | None]:
    """(counts, per-point columns or None) of one harness run at its first eps.

    Per point, the harness's robust *score* (``<id>@<eps>:score``, ``worst@<eps>:score``,
    ``clean_p``: P(correct), 0/1 for deterministic models) is used when present, else the 0/1
    ``:robust`` / ``clean_correct`` columns of older runs. Counts are ``accuracy * n`` (the mean
    score, which may be fractional for randomized models)."""
    summary = _json(run_dir / "summary.json")
    eps = summary["worst_case"][0]["eps"]
    n = int(summary["n_examples"])
    counts = {
        "n": n,
        "clean": float(summary["clean_accuracy"]) * n,
        "worst": float(summary["worst_case"][0]["robust_accuracy"]) * n,
        "attacks": {
            str(r["attack"]): float(r["robust_accuracy"]) * n
            for r in summary["results"]
            if r["eps"] == eps and not r.get("probe", False)
        },
    }
    path = run_dir / "examples.parquet"
    if not path.exists():
        return counts, None
    import pandas as pd

    df = pd.read_parquet(path)
    if "index" not in df.columns:
        return counts, None
    df = df.sort_values("index", kind="stable")

    def col(prefix: str, old: str) -> str | None:
        for c in (f"{prefix}:score", f"{prefix}:robust", old):
            if c in df.columns:
                return c
        return None

    clean = "clean_p" if "clean_p" in df.columns else col("clean", "clean_correct")
    worst = col(f"worst@{eps}", f"worst@{eps}:robust")
    attacks = {a: col(f"{a}@{eps}", f"{a}@{eps}:robust") for a in counts["attacks"]}
    if clean is None or worst is None or any(c is None for c in attacks.values()):
        return counts, None
    points = {
        "index": df["index"].to_numpy(),
        "clean": df[clean].to_numpy(dtype=float),
        "worst": df[worst].to_numpy(dtype=float),
        **{f"attack:{a}": df[c].to_numpy(dtype=float) for a, c in attacks.items()},
    }
    return counts, points


def load_run_points(run_dirs: Sequence[Path]) -> RunPoints:
    """:class:`RunPoints` from one harness run folder per seed (per-point when every seed has
    ``examples.parquet`` on the same test points, else from the counts in ``summary.json``)."""
    loaded = [_one_run(Path(d)) for d in run_dirs]
    if not loaded:
        raise EvalkitError("no run folders to judge")
    counts = [c for c, _ in loaded]
    points = [p for _, p in loaded]
    attacks = list(counts[0]["attacks"])
    if all(p is not None for p in points) and all(
        np.array_equal(p["index"], points[0]["index"])
        for p in points  # type: ignore[index]
    ):
        idx = points[0]["index"]  # type: ignore[index]

        def stack(key: str) -> Points:
            return Points(np.stack([p[key] for p in points]), idx, True)  # type: ignore[index]

        return RunPoints(stack("clean"), stack("worst"), {a: stack(f"attack:{a}") for a in attacks})
    n = counts[0]["n"]
    if any(c["n"] != n for c in counts):
        raise EvalkitError("seeds of one model were evaluated on different numbers of points")
    return RunPoints(
        Points.from_counts([c["clean"] for c in counts], n),
        Points.from_counts([c["worst"] for c in counts], n),
        {a: Points.from_counts([c["attacks"].get(a, 0) for c in counts], n) for a in attacks},
    )


def judge_cas_cifs(ctx: StudyContext) -> list[Finding]:
    runs = {}
    for key in (
        "at",
        "trades",
        "mart",
        "at_cas",
        "trades_cas",
        "mart_cas",
        "at_cifs",
        "trades_cifs",
        "mart_cifs",
    ):
        dirs = _run_dirs(ctx, key)
        if dirs and all((d / "summary.json").exists() for d in dirs):
            runs[key] = load_run_points(dirs)
    return mechanisms.cas_cifs(_seeds(cas_cifs_findings(runs, seed=ctx.seed), ctx), ctx)


def judge_he(ctx: StudyContext) -> list[Finding]:
    found = he_findings(
        load_run_points(_run_dirs(ctx, "at")),
        load_run_points(_run_dirs(ctx, "at_he")),
        seed=ctx.seed,
    )
    return mechanisms.he(_seeds(found, ctx), ctx)


def load_features(
    analysis_dirs: Sequence[Path], labels: Sequence[str]
) -> tuple[dict[str, list[Features]], float]:
    """Per label, one :class:`Features` per seed folder (``features_<label>.npz``), and the
    activation threshold the study used."""
    feats: dict[str, list[Features]] = {lab: [] for lab in labels}
    threshold = 0.01
    for d in analysis_dirs:
        doc = _json(Path(d) / "analysis.json")
        threshold = float(doc.get("params", {}).get("threshold", threshold))
        for lab in labels:
            path = Path(d) / f"features_{file_slug(lab)}.npz"
            if not path.exists():
                raise EvalkitError(f"{path} is missing; rerun the channels study")
            with np.load(path) as z:
                feats[lab].append(Features(z["natural"], z["adversarial"]))
    return feats, threshold


def judge_channels(ctx: StudyContext) -> list[Finding]:
    labels = ("std", "at", "at_cas")
    feats, threshold = load_features(_analysis_dirs(ctx, "channels"), labels)
    found = channels_findings(feats, threshold=threshold, labels=labels, seed=ctx.seed)
    return mechanisms.channels(_seeds(found, ctx), ctx)


def _sap_points(d: Path) -> tuple[Any, int, Any]:
    import pandas as pd

    doc = _json(d / "analysis.json")
    n = int(doc.get("params", {}).get("n_examples", 0))
    table = pd.read_csv(d / "sap_eot.csv")
    pts = d / "sap_eot_points.parquet"
    return table, n, (pd.read_parquet(pts) if pts.exists() else None)


def judge_sap(ctx: StudyContext) -> list[Finding]:
    """Judged on the standard-trained checkpoint at the smallest eps of the sweep: at larger
    budgets the dense model is at 0% and SAP cannot look robust at all."""
    loaded = [_sap_points(d) for d in _analysis_dirs(ctx, "sap-eot")]
    std0 = loaded[0][0][loaded[0][0]["checkpoint"] == "std"]
    eps = float(std0["eps"].min())
    eots = sorted(int(e) for e in std0.loc[std0["model"] == "sap", "eot"].unique())

    def pick(model: str, eot: int) -> Points:
        rows, per_point = [], []
        for table, n, pts in loaded:
            sel = (
                (table["checkpoint"] == "std")
                & (table["model"] == model)
                & (table["eps"] == eps)
                & (table["eot"] == eot)
            )
            acc = float(table.loc[sel, "robust_accuracy"].iloc[0])
            rows.append((round(acc * n), n))
            if pts is not None:
                s = (
                    (pts["checkpoint"] == "std")
                    & (pts["model"] == model)
                    & (pts["eps"] == eps)
                    & (pts["eot"] == eot)
                )
                sub = pts.loc[s].sort_values("index")
                per_point.append((sub["index"].to_numpy(), sub["correct"].to_numpy(dtype=float)))
        if len(per_point) == len(loaded) and all(
            np.array_equal(i, per_point[0][0]) for i, _ in per_point
        ):
            return Points(np.stack([v for _, v in per_point]), per_point[0][0], True)
        return Points.from_counts([k for k, _ in rows], rows[0][1])

    extra: dict[str, Any] = {}
    for e in sorted(set(std0["eps"]) - {eps}):
        rows = std0[std0["eps"] == e]
        extra[f"eps{e:g}_dense"] = _r(rows[rows["model"] == "dense"]["robust_accuracy"].iloc[0])
        sap_e = rows[rows["model"] == "sap"].set_index("eot")["robust_accuracy"]
        extra[f"eps{e:g}_sap_eot{eots[0]}"] = _r(sap_e.loc[eots[0]])
        extra[f"eps{e:g}_sap_eot{eots[-1]}"] = _r(sap_e.loc[eots[-1]])
    found = sap_findings(
        pick("dense", _dense_eot(std0, eps)),
        {e: pick("sap", e) for e in eots},
        eps=eps,
        seed=ctx.seed,
        extra=extra,
    )
    return mechanisms.sap(_seeds(found, ctx))


def _dense_eot(std: Any, eps: float) -> int:
    rows = std[(std["model"] == "dense") & (std["eps"] == eps)]
    return int(rows["eot"].min())


def judge_pooling(ctx: StudyContext) -> list[Finding]:
    """Reads ``analysis.json`` scalars (robust accuracy, n) and, when present, per-model
    ``points_<label>.npz`` (keys ``index``, ``robust``, ``clean``, ``change_rel``)."""
    dirs = _analysis_dirs(ctx, "pooling")
    docs = [_json(d / "analysis.json") for d in dirs]
    labels = list(docs[0]["scalars"])
    models: dict[str, PoolingModel] = {}
    for lab in labels:
        rows = [doc["scalars"][lab] for doc in docs]
        ns = [int(doc.get("params", {}).get("n_examples", 0)) for doc in docs]
        arrays = []
        for d in dirs:
            p = d / f"points_{file_slug(lab)}.npz"
            arrays.append(dict(np.load(p)) if p.exists() else None)
        if all(a is not None and "robust" in a for a in arrays):
            idx = arrays[0].get("index")  # type: ignore[union-attr]
            robust = Points(np.stack([a["robust"] for a in arrays]), idx, True)  # type: ignore[index]
        else:
            robust = Points.from_counts(
                [round(r["robust_accuracy"] * n) for r, n in zip(rows, ns)], ns[0]
            )
        change = None
        if all(a is not None and "change_rel" in a for a in arrays):
            change = np.stack([a["change_rel"] for a in arrays])  # type: ignore[index]
        models[lab] = PoolingModel(
            rows[0]["pool"], float(rows[0]["map_size"]), robust, None, change
        )
    per_label = {lab: [doc["scalars"][lab] for doc in docs] for lab in labels}
    found = _seeds(pooling_findings(models, seed=ctx.seed), ctx)
    return mechanisms.pooling(found, per_label, models, seed=ctx.seed)


__all__ = [
    "Features",
    "PAPER_EFFECTS",
    "Points",
    "PoolingModel",
    "RunPoints",
    "SATURATED_ACTIVE_FRACTION",
    "cas_cifs_findings",
    "channels_findings",
    "compare",
    "he_findings",
    "judge_cas_cifs",
    "judge_channels",
    "judge_he",
    "judge_pooling",
    "judge_sap",
    "load_features",
    "load_run_points",
    "pooling_findings",
    "sap_findings",
    "worst_case",
]
