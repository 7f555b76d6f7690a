"""The RCM pooling claims, judged from the grid of avg/max-pooled models (:class:`PoolingModel`).

Rules (effect, direction, guard):

* avg pooling: robust accuracy at the largest map minus at the smallest > 0.
* max pooling: (avg gain) - (max gain) > 0 combined with ``at_most(max gain, 0.05)``, guard: the
  avg claim is not reproduced.
* mechanism: relative drop of the avg-pooled feature change from the smallest to the largest map
  minus the same for max pooling > 0 (needs per-image changes; inconclusive without them).

Pure functions: no file is read here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from analysis.studies.spec import Finding
from analysis.studies.stats import (
    INCONCLUSIVE,
    REPRODUCED,
    Interval,
    at_most,
    combine,
    difference,
    guard,
    nan_interval,
    verdict,
)
from analysis.studies.values import (
    PaperEffects,
    PoolingModel,
    aligned,
    compare,
    make_finding,
    numbers_dict,
    paper_value,
    seeded,
    size_note,
)
from evalkit.errors import EvalkitError

# "does not hold for max pooling": its gain from the larger map is at most this
POOLING_MAX_MARGIN = 0.05


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
    if all(p.paired for p in pts) and all(aligned(pts[0], p) for p in pts):
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


def _avg_gain_finding(
    avg: list[PoolingModel],
    ivs: dict[str, Interval],
    extra: dict[str, Any],
    paper_effects: PaperEffects,
    seed: int,
) -> tuple[Finding, Interval, str]:
    """Claim 1, larger maps help avg pooling; also returns the gain and verdict claim 2 uses."""
    if len(avg) >= 2:
        gain_avg = compare(avg[-1].robust, avg[0].robust, seed=seed)
        p1 = paper_value(paper_effects, "pooling.avg_gain")
        v1 = verdict(gain_avg, direction=+1, paper_effect=p1)
    else:
        gain_avg, v1, p1 = nan_interval(0, "needs two avg-pooled sizes"), INCONCLUSIVE, None
    found = make_finding(
        "larger feature maps before average pooling give higher robust accuracy",
        v1,
        numbers_dict({**ivs, "avg_gain_largest_minus_smallest": gain_avg}, **extra),
        "effect = robust accuracy of the avg-pooled model with the largest map minus the "
        "smallest, paired over test points when per-point results exist; Spearman over all "
        "sizes shown, not judged" + size_note(gain_avg, p1, v1),
        effect=gain_avg,
    )
    return found, gain_avg, v1


def _max_contrast_finding(
    avg: list[PoolingModel],
    mx: list[PoolingModel],
    gain_avg: Interval,
    v1: str,
    extra: dict[str, Any],
    paper_effects: PaperEffects,
    seed: int,
) -> Finding:
    """Claim 2, the same does not hold for max pooling (guarded by claim 1's verdict ``v1``)."""
    if len(avg) >= 2 and len(mx) >= 2:
        contrast = _gain_contrast(avg, mx, seed)
        gain_max = compare(mx[-1].robust, mx[0].robust, seed=seed)
        p2 = paper_value(paper_effects, "pooling.max_contrast")
        # "does not hold": max pooling gains clearly less than avg pooling, and at most a margin
        v_flat = at_most(gain_max, POOLING_MAX_MARGIN)
        v2 = guard(
            combine([verdict(contrast, direction=+1, paper_effect=p2), v_flat]), v1 != REPRODUCED
        )
    else:
        contrast = gain_max = nan_interval(0, "needs two sizes per pooling")
        v2 = INCONCLUSIVE
    return make_finding(
        "the same does not hold for max pooling",
        v2,
        numbers_dict(
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


def _mechanism_intervals(
    avg: list[PoolingModel], mx: list[PoolingModel], seed: int
) -> dict[str, Interval] | None:
    """The relative drops of the pooled feature change (avg, max, avg minus max), or None when
    per-image changes were not recorded for the smallest and largest maps."""
    have = [m.change_rel is not None for m in (avg[:1] + avg[-1:] + mx[:1] + mx[-1:])]
    if not (len(avg) >= 2 and len(mx) >= 2 and all(have)):
        return None
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
    mech = seeded(stat_for, list(range(k)), n, "paired bootstrap over images", seed)
    drop_avg = seeded(
        lambda s: _relative_drop(a_s[s], a_l[s]), list(range(k)), n, "bootstrap", seed
    )
    drop_max = seeded(
        lambda s: _relative_drop(m_s[s], m_l[s]), list(range(k)), n, "bootstrap", seed
    )
    return {
        "avg_relative_drop": drop_avg,
        "max_relative_drop": drop_max,
        "avg_minus_max_relative_drop": mech,
    }


def _mechanism_finding(
    avg: list[PoolingModel], mx: list[PoolingModel], paper_effects: PaperEffects, seed: int
) -> Finding:
    """Claim 3, the mechanism: the avg-pooled feature changes less with larger maps."""
    found = _mechanism_intervals(avg, mx, seed)
    if found is not None:
        mech_ivs = found
        p3 = paper_value(paper_effects, "pooling.mechanism")
        v3 = verdict(mech_ivs["avg_minus_max_relative_drop"], direction=+1, paper_effect=p3)
        note = ""
    else:
        v3, mech_ivs = INCONCLUSIVE, {}
        note = "; per-image pooled changes were not recorded, so no interval: inconclusive"
    return make_finding(
        "with larger maps the average-pooled feature changes less under attack, more so than with max pooling",
        v3,
        numbers_dict(mech_ivs),
        "relative drop = (change at the smallest map - change at the largest) / change at the "
        "smallest, change = mean ||pool(f(x')) - pool(f(x))|| / ||pool(f(x))|| over images; "
        "effect = avg drop minus max drop, paired over images" + note,
        effect=mech_ivs.get("avg_minus_max_relative_drop"),
    )


def pooling_findings(
    models: Mapping[str, PoolingModel],
    *,
    paper_effects: PaperEffects = None,
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
    gain, gain_avg, v1 = _avg_gain_finding(avg, ivs, extra, paper_effects, seed)
    contrast = _max_contrast_finding(avg, mx, gain_avg, v1, extra, paper_effects, seed)
    return [gain, contrast, _mechanism_finding(avg, mx, paper_effects, seed)]


__all__ = ["POOLING_MAX_MARGIN", "pooling_findings"]
