"""Intervals and verdict rules of analysis.studies.stats, against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.studies.stats import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    PARTLY,
    REPRODUCED,
    Interval,
    across_seeds,
    at_most,
    bootstrap,
    combine,
    guard,
    newcombe_diff,
    paired_bootstrap_diff,
    proportion,
    t_value,
    unpaired_bootstrap_diff,
    verdict,
    wilson,
    z_value,
)


def iv(lo: float, hi: float, est: float | None = None) -> Interval:
    return Interval((lo + hi) / 2 if est is None else est, lo, hi, 100, "test")


# ----------------------------------------------------------------------------- quantiles


def test_quantiles_match_tables():
    assert z_value(0.95) == pytest.approx(1.959964, abs=1e-6)
    # Student t, two-sided 95%: df 1, 2, 4, 9, 30 (standard tables)
    for df, q in ((1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (30, 2.0423)):
        assert t_value(df) == pytest.approx(q, abs=2e-4)
    assert t_value(4, 0.99) == pytest.approx(4.6041, abs=2e-4)
    with pytest.raises(ValueError):
        t_value(0)


# ----------------------------------------------------------------------------- proportions


def test_wilson_by_hand():
    z = z_value()
    # 0 of 10: lower bound 0, upper z^2 / (n + z^2)
    w = wilson(0, 10)
    assert (w.estimate, w.lo) == (0.0, 0.0)
    assert w.hi == pytest.approx(z * z / (10 + z * z), abs=1e-12)
    # 30 of 100 from the formula written out
    p, n = 0.3, 100
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    w = wilson(30, 100)
    assert (w.lo, w.hi) == (pytest.approx(centre - half), pytest.approx(centre + half))
    assert w.n == 100 and w.method == "wilson" and w.level == 0.95 and w.seeds == 1
    assert math.isnan(wilson(0, 0).estimate)
    with pytest.raises(ValueError):
        wilson(11, 10)


def test_newcombe_matches_the_published_example():
    # Newcombe (1998), method 10, example (a): 56/70 - 48/80 = 0.2000, interval 0.0524 to 0.3339
    d = newcombe_diff(56, 70, 48, 80)
    assert d.estimate == pytest.approx(0.2)
    assert d.lo == pytest.approx(0.0524, abs=1e-4)
    assert d.hi == pytest.approx(0.3339, abs=1e-4)


def test_proportion_of_monte_carlo_probabilities_uses_their_sum():
    p = np.full(40, 0.25)
    assert proportion(p).estimate == pytest.approx(0.25)
    assert proportion(p).hi == pytest.approx(wilson(10, 40).hi)
    with pytest.raises(ValueError):
        proportion([0.5, 1.5])


# ----------------------------------------------------------------------------- bootstrap


def test_paired_bootstrap_is_deterministic_and_tighter_than_unpaired_on_correlated_points():
    rng = np.random.default_rng(0)
    a = (rng.random(500) < 0.6).astype(float)
    b = a.copy()
    flip = rng.choice(500, 30, replace=False)  # b differs from a on 30 points only
    b[flip] = 1 - b[flip]
    p1, p2 = paired_bootstrap_diff(a, b), paired_bootstrap_diff(a, b)
    assert p1 == p2
    assert p1.estimate == pytest.approx(a.mean() - b.mean())
    u = unpaired_bootstrap_diff(a, b)
    assert u.estimate == pytest.approx(p1.estimate)
    assert (p1.hi - p1.lo) < 0.5 * (u.hi - u.lo)
    # identical values: a zero-width interval at 0
    z = paired_bootstrap_diff(a, a)
    assert (z.estimate, z.lo, z.hi) == (0.0, 0.0, 0.0)
    # the unpaired bootstrap of 0/1 values agrees with Newcombe's score interval
    nc = newcombe_diff(a.sum(), 500, b.sum(), 500)
    assert u.lo == pytest.approx(nc.lo, abs=0.01) and u.hi == pytest.approx(nc.hi, abs=0.01)
    with pytest.raises(ValueError):
        paired_bootstrap_diff(a, b[:-1])


def test_bootstrap_percentile_interval_of_a_mean_covers_the_normal_interval():
    x = np.arange(100, dtype=float)
    res = bootstrap(lambda w: (w @ x) / w.sum(1), 100, resamples=4000)
    se = x.std() / math.sqrt(100)
    assert res.estimate == pytest.approx(49.5)
    assert res.lo == pytest.approx(49.5 - 1.96 * se, abs=0.15 * se * 1.96)
    assert res.hi == pytest.approx(49.5 + 1.96 * se, abs=0.15 * se * 1.96)


def test_bootstrap_coverage_of_a_paired_difference():
    """95% intervals for a true difference of 0.1 cover it in about 95% of 200 samples."""
    rng = np.random.default_rng(1)
    hits = 0
    for rep in range(200):
        a = (rng.random(200) < 0.6).astype(float)
        b = (rng.random(200) < 0.5).astype(float)
        r = paired_bootstrap_diff(a, b, resamples=400, seed=rep)
        hits += r.lo <= 0.1 <= r.hi
    assert 0.88 <= hits / 200 <= 0.99


# ----------------------------------------------------------------------------- seeds


def test_across_seeds_by_hand():
    z = z_value()
    per = [Interval(e, e - 0.05, e + 0.05, 500, "x") for e in (0.50, 0.54, 0.58)]
    v1 = (0.05 / z) ** 2  # each seed's point variance
    spread = np.var([0.50, 0.54, 0.58], ddof=1)  # 0.0016
    # without per-point data the test-point noise is taken as fully shared (V_avg = V_1): the
    # seed part is the whole spread, and its df is Satterthwaite's
    res = across_seeds(per)
    var = v1 + spread / 3
    df = 2 * (var / (spread / 3)) ** 2
    half = t_value(df) * math.sqrt(var)
    assert res.estimate == pytest.approx(0.54)
    assert (res.lo, res.hi) == (pytest.approx(0.54 - half), pytest.approx(0.54 + half))
    assert res.seeds == 3 and res.n == 500
    # a smaller shared point SE: the seeds' own noise, 3 (V_1 - V_avg) / 2, leaves the spread
    v_avg = v1 / 3  # independent point noise: averaging 3 seeds divides it by 3
    own = 3 * (v1 - v_avg) / 2  # = V_1, i.e. 0.000651 < 0.0016
    seed_part = (spread - own) / 3
    var = v_avg + seed_part
    half = t_value(2 * (var / seed_part) ** 2) * math.sqrt(var)
    assert across_seeds(per, point_se=math.sqrt(v_avg)).hi == pytest.approx(0.54 + half)
    # seeds that agree exactly: no seed part, normal quantile, the shared point error only
    same = [Interval(0.5, 0.45, 0.55, 500, "x")] * 3
    iv = across_seeds(same, point_se=0.02)
    assert iv.hi - iv.estimate == pytest.approx(t_value(1000) * 0.02)
    # a point SE above the per-seed one is capped at it (V_avg <= V_1 by construction)
    assert across_seeds(same, point_se=1.0).hi == pytest.approx(across_seeds(same).hi)
    # one seed: unchanged
    assert across_seeds(per[:1]) == per[0]


def test_seed_arrays_widen_the_interval_when_seeds_disagree():
    rng = np.random.default_rng(2)
    same = (rng.random(400) < 0.6).astype(float)
    agree = np.stack([same, same, same])
    disagree = np.stack([same, (rng.random(400) < 0.4).astype(float), same])
    p_agree, p_dis = proportion(agree), proportion(disagree)
    assert p_agree.seeds == 3
    assert p_agree.estimate == pytest.approx(same.mean())
    assert (p_dis.hi - p_dis.lo) > 2 * (p_agree.hi - p_agree.lo)
    d = paired_bootstrap_diff(disagree, np.zeros_like(disagree))
    assert d.seeds == 3 and d.lo < d.estimate < d.hi


def test_three_seeds_of_one_model_are_no_wider_than_one_seed():
    """Three identical training runs carry no seed spread: the combined interval is one seed's
    (the earlier rule counted the point noise twice and made it 2-3 times wider)."""
    rng = np.random.default_rng(3)
    a = (rng.random(500) < 0.6).astype(float)
    b = (rng.random(500) < 0.5).astype(float)
    one = paired_bootstrap_diff(a, b)
    three = paired_bootstrap_diff(np.stack([a, a, a]), np.stack([b, b, b]))
    assert three.seeds == 3
    assert (three.hi - three.lo) == pytest.approx(one.hi - one.lo, rel=0.1)


@pytest.mark.slow
def test_seed_interval_coverage_in_simulated_studies():
    """150 simulated 3-seed studies (n = 500 points, true gain 0.04, seed sd 0.01): the paired
    interval covers the true gain about 95% of the time and is narrower than one seed's."""
    rng = np.random.default_rng(1)
    gain, covered, widths = 0.04, 0, []
    for _ in range(150):
        p = rng.beta(2, 2, 500)
        rows_a, rows_b = [], []
        for _ in range(3):
            pa = np.clip(p + gain + rng.normal(0, 0.01), 0, 1)
            rows_a.append((rng.random(500) < pa).astype(float))
            rows_b.append((rng.random(500) < p).astype(float))
        iv = paired_bootstrap_diff(np.array(rows_a), np.array(rows_b), resamples=500)
        covered += iv.lo <= gain <= iv.hi
        widths.append(iv.hi - iv.lo)
    assert 0.88 <= covered / 150 <= 0.995
    assert np.mean(widths) < 0.1  # one seed's interval at n = 500 is about 0.11 wide


# ----------------------------------------------------------------------------- verdicts


@pytest.mark.parametrize(
    ("lo", "hi", "direction", "paper", "expected"),
    [
        (0.01, 0.05, +1, None, REPRODUCED),
        (-0.05, -0.01, +1, None, NOT_REPRODUCED),
        (-0.01, 0.02, +1, None, INCONCLUSIVE),
        (0.0, 0.05, +1, None, INCONCLUSIVE),  # touching zero does not exclude it
        (-0.05, 0.0, +1, None, INCONCLUSIVE),  # nor sit on the wrong side
        (-0.01, 0.02, +1, 0.10, NOT_REPRODUCED),  # excludes the paper's effect
        (-0.01, 0.02, +1, 0.015, INCONCLUSIVE),  # the paper's effect is inside
        (0.01, 0.03, +1, 0.10, REPRODUCED),  # right direction, smaller: reproduced first
        (-0.05, -0.01, -1, None, REPRODUCED),
        (0.01, 0.05, -1, None, NOT_REPRODUCED),
        (-0.02, 0.01, -1, -0.1, NOT_REPRODUCED),
        (float("nan"), 0.05, +1, None, INCONCLUSIVE),
    ],
)
def test_verdict_table(lo, hi, direction, paper, expected):
    assert verdict(iv(lo, hi), direction=direction, paper_effect=paper) == expected


def test_verdict_rejects_bad_direction():
    with pytest.raises(ValueError):
        verdict(iv(0.1, 0.2), direction=0)
    # a paper effect on the other side of the claim is a typo in the table, not a verdict
    with pytest.raises(ValueError, match="claimed side"):
        verdict(iv(0.1, 0.2), direction=+1, paper_effect=-0.05)


def test_at_most_guard_and_combine():
    assert at_most(iv(-0.02, 0.04), 0.05) == REPRODUCED
    assert at_most(iv(0.06, 0.20), 0.05) == NOT_REPRODUCED
    assert at_most(iv(-0.02, 0.09), 0.05) == INCONCLUSIVE
    # guards act both ways
    assert guard(REPRODUCED, True) == INCONCLUSIVE
    assert guard(NOT_REPRODUCED, True) == INCONCLUSIVE
    assert guard(REPRODUCED, False) == REPRODUCED
    assert combine([REPRODUCED, REPRODUCED]) == REPRODUCED
    assert combine([NOT_REPRODUCED, NOT_REPRODUCED]) == NOT_REPRODUCED
    assert combine([REPRODUCED, NOT_REPRODUCED]) == PARTLY
    assert combine([REPRODUCED, INCONCLUSIVE]) == INCONCLUSIVE
    assert combine([]) == INCONCLUSIVE


def test_interval_text_and_dict():
    w = wilson(30, 100)
    assert w.text().startswith("0.300 [0.219, 0.396] (n=100, 1 seed, wilson)")
    d = w.to_dict()
    assert d["n"] == 100 and d["seeds"] == 1 and d["level"] == 0.95 and d["lo"] < 0.3 < d["hi"]
    assert w.shift(-0.3).estimate == pytest.approx(0.0)
    assert w.excludes(0.5) and not w.excludes(0.3)
