"""Intervals for the studies' numbers, and the verdict rules (the one place they live).

Every compared number is an :class:`Interval` (estimate, lo, hi, n, method, level, seeds). The
methods, all at ``level`` = 0.95 unless asked otherwise:

* :func:`wilson` — a proportion ``k / n`` (Wilson score interval, Wilson 1927). Accepts a
  fractional ``k`` (a sum of Monte-Carlo probabilities in [0, 1]).
* :func:`newcombe_diff` — difference of two proportions known only as counts on independent
  samples (Newcombe 1998, method 10: the hybrid score interval built from two Wilson intervals).
* :func:`paired_bootstrap_diff` — ``mean(a) - mean(b)`` for per-point values (0/1 correctness or
  [0, 1] probabilities) of two models on the *same* test points: percentile bootstrap over
  points, resampling the pairs together (``resamples`` = 2000, fixed ``seed``).
* :func:`unpaired_bootstrap_diff` — the same on different (or unaligned) points: ``a`` and ``b``
  resampled independently.
* :func:`bootstrap` — any statistic of per-point data given as a function of bootstrap weights.
* :func:`across_seeds` — several training seeds. Each seed gives an estimate ``e_s`` (with its
  own point-level interval); the combined estimate is the mean ``ē``. The seeds are evaluated on
  the same test points, so ``Var(ē) = σ²_seed / k + V_avg``: the spread between training runs
  over ``k``, plus ``V_avg``, the test-point sampling variance of ``ē`` (bootstrap of the
  seed-averaged per-point values; it is shared by the seeds and does not shrink with ``k``).
  ``σ²_seed`` is estimated as ``var(e_s) - k (V_1 - V_avg) / (k - 1)`` (at least 0), where
  ``V_1`` is the mean per-seed point variance: the sample variance of the ``e_s`` also holds
  each seed's own, unshared test-point noise, which ``V_avg`` already counts. The interval is
  ``ē ± t(df) sqrt(σ²_seed / k + V_avg)`` with Satterthwaite's ``df = (k - 1) (total / seed
  part)²`` (``k - 1`` when the seed part dominates, normal when it is 0). Without per-point
  arrays ``V_avg = V_1`` (noise fully shared, the wider bound). In a simulation of 200 studies
  (n = 500, 3 seeds, true gain 0.04, seed sd 0.01) this gave 92% coverage; the earlier
  ``t(k-1) sqrt(var(e_s)/k + V_avg)`` counted the point noise twice and was 2-3 times wider than
  one seed's interval. With one seed the point-level interval is returned unchanged
  (``seeds=1``); the judges call a claim about training with fewer than
  :data:`~analysis.studies.values.MIN_TRAINING_SEEDS` seeds inconclusive.

Verdict rules (:func:`verdict`, :func:`at_most`, :func:`guard`, :func:`combine`):

* ``verdict(effect, direction=±1, paper_effect=None)``: **reproduced** when the interval of the
  effect excludes zero on the claimed side (``lo > 0`` for ``+1``, ``hi < 0`` for ``-1``);
  otherwise **not reproduced** when it lies entirely on the wrong side of zero (``hi < 0`` for
  ``+1``; an interval touching zero does not count) or, when the paper's effect size is given,
  excludes it; otherwise **inconclusive**. Checked in that order: an effect significantly in the
  claimed direction but smaller than the paper's is "reproduced" (the claims are directional) and
  the judge's text says it is smaller. A NaN bound gives "inconclusive".
* ``at_most(value, bound)``, for claims that a quantity *vanishes* (is at most ``bound``):
  reproduced when ``hi <= bound``, not reproduced when ``lo > bound``, else inconclusive.
* ``guard(v, triggered)``: a guard (saturated measure, missing precondition) turns *any* verdict
  into "inconclusive" — a successful one as well as a failed one.
* ``combine(vs)``: for a claim judged in several parts (pairs of models, two measures):
  all reproduced -> reproduced; all not reproduced -> not reproduced; some reproduced and some not
  reproduced -> "partly"; anything else (an inconclusive part) -> inconclusive.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from statistics import NormalDist
from typing import Any

import numpy as np

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive"
PARTLY = "partly"

RESAMPLES = 2000
LEVEL = 0.95
SEED = 0
SATTERTHWAITE_MAX_DF = 1000.0  # past this the t quantile is the normal one to 3 decimals


@dataclass(frozen=True)
class Interval:
    """An estimate with its ``level`` confidence interval ``[lo, hi]``.

    ``n`` is the number of test points (images) behind it, ``seeds`` the number of training
    seeds, ``method`` a short name of how the interval was computed.
    """

    estimate: float
    lo: float
    hi: float
    n: int
    method: str
    level: float = LEVEL
    seeds: int = 1

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("estimate", "lo", "hi"):
            v = d[key]
            d[key] = None if not math.isfinite(v) else round(float(v), 6)
        return d

    def text(self, digits: int = 3) -> str:
        """``0.608 [0.565, 0.650] (n=500, 1 seed, wilson)``."""
        seeds = f"{self.seeds} seed" + ("s" if self.seeds != 1 else "")
        return (
            f"{self.estimate:.{digits}f} [{self.lo:.{digits}f}, {self.hi:.{digits}f}] "
            f"(n={self.n}, {seeds}, {self.method})"
        )

    def shift(self, by: float) -> Interval:
        """The interval of ``value + by`` (e.g. a ratio minus 1)."""
        return replace(self, estimate=self.estimate + by, lo=self.lo + by, hi=self.hi + by)

    def excludes(self, value: float) -> bool:
        """True when ``value`` lies outside ``[lo, hi]`` (False for a NaN bound)."""
        if not (math.isfinite(self.lo) and math.isfinite(self.hi)):
            return False
        return value < self.lo or value > self.hi

    @property
    def finite(self) -> bool:
        return all(math.isfinite(v) for v in (self.estimate, self.lo, self.hi))


def nan_interval(n: int, method: str, level: float = LEVEL, seeds: int = 1) -> Interval:
    """An interval for a number that could not be measured (every field NaN but ``n``)."""
    nan = float("nan")
    return Interval(nan, nan, nan, n, method, level, seeds)


# ----------------------------------------------------------------------------- quantiles


def z_value(level: float = LEVEL) -> float:
    """Two-sided standard-normal quantile: 1.96 for 0.95."""
    _check_level(level)
    return NormalDist().inv_cdf((1 + level) / 2)


def _t_cdf_pos(x: float, df: int) -> float:
    """P(0 <= T <= x) for Student's t with ``df`` degrees of freedom, by Simpson's rule."""
    if x <= 0:
        return 0.0
    m = 4000  # even; the density is smooth, error << 1e-9 on the range used
    t = np.linspace(0.0, x, m + 1)
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    f = np.exp(log_c - (df + 1) / 2 * np.log1p(t * t / df))
    w = np.ones(m + 1)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    return float((x / m) / 3 * (w * f).sum())


def t_value(df: float, level: float = LEVEL) -> float:
    """Two-sided Student-t quantile: ``t_value(2) == 4.303``, ``t_value(9) == 2.262``."""
    _check_level(level)
    if df < 1:
        raise ValueError(f"t quantile needs df >= 1, not {df}")
    target = level / 2  # P(0 <= T <= q)
    lo, hi = 0.0, 1.0
    while _t_cdf_pos(hi, df) < target:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_cdf_pos(mid, df) < target else (lo, mid)
    return (lo + hi) / 2


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), not {level}")


# ----------------------------------------------------------------------------- proportions


def wilson(successes: float, n: int, *, level: float = LEVEL) -> Interval:
    """Wilson score interval for a proportion ``successes / n`` (NaN interval when ``n == 0``)."""
    if n <= 0:
        return nan_interval(0, "wilson", level)
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n]; got {successes} of {n}")
    z = z_value(level)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    lo = 0.0 if successes == 0 else max(0.0, centre - half)  # exact at the ends
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return Interval(p, lo, hi, int(n), "wilson", level)


def newcombe_diff(k1: float, n1: int, k2: float, n2: int, *, level: float = LEVEL) -> Interval:
    """``k1/n1 - k2/n2`` for independent samples known only by their counts (Newcombe hybrid
    score interval). ``n`` of the result is ``min(n1, n2)``."""
    if n1 <= 0 or n2 <= 0:
        return nan_interval(0, "newcombe", level)
    a, b = wilson(k1, n1, level=level), wilson(k2, n2, level=level)
    d = a.estimate - b.estimate
    lo = d - math.sqrt((a.estimate - a.lo) ** 2 + (b.hi - b.estimate) ** 2)
    hi = d + math.sqrt((a.hi - a.estimate) ** 2 + (b.estimate - b.lo) ** 2)
    return Interval(d, lo, hi, int(min(n1, n2)), "newcombe", level)


# ----------------------------------------------------------------------------- bootstrap


def bootstrap_weights(
    n: int, resamples: int = RESAMPLES, seed: int = SEED, chunk: int = 250
) -> Iterator[np.ndarray]:
    """Blocks of bootstrap weights, each (m, n) float: how often each point is drawn in a
    resample of size ``n`` with replacement (rows sum to ``n``); ``resamples`` rows in all."""
    rng = np.random.default_rng(seed)
    done = 0
    while done < resamples:
        m = min(chunk, resamples - done)
        idx = rng.integers(0, n, size=(m, n))
        flat = (np.arange(m)[:, None] * n + idx).ravel()
        w = np.bincount(flat, minlength=m * n).reshape(m, n).astype(float)
        done += m
        yield w


def bootstrap(
    stat: Callable[[np.ndarray], np.ndarray],
    n: int,
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
    method: str = "bootstrap",
) -> Interval:
    """Percentile bootstrap over ``n`` points of a statistic given as a function of weights.

    ``stat(W)`` takes weights ``W`` of shape (m, n) (multiplicities of each point; all ones for
    the estimate) and returns the m values of the statistic, so it can be vectorised, e.g.
    ``lambda w: w @ x / w.sum(1)`` for a mean. NaN resamples are dropped; when more than half
    are NaN the interval is NaN.
    """
    _check_level(level)
    if n <= 0:
        return nan_interval(0, method, level)
    est = float(np.asarray(stat(np.ones((1, n))), dtype=float).reshape(-1)[0])
    vals = np.concatenate(
        [
            np.asarray(stat(w), dtype=float).reshape(-1)
            for w in bootstrap_weights(n, resamples, seed)
        ]
    )
    vals = vals[np.isfinite(vals)]
    if len(vals) < resamples / 2:
        return Interval(est, float("nan"), float("nan"), n, method, level)
    q = (1 - level) / 2
    lo, hi = np.quantile(vals, [q, 1 - q])
    return Interval(est, float(lo), float(hi), n, method, level)


def bootstrap_se(
    stat: Callable[[np.ndarray], np.ndarray],
    n: int,
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> float:
    """Bootstrap standard error of a statistic (same ``stat`` convention as :func:`bootstrap`)."""
    vals = np.concatenate(
        [
            np.asarray(stat(w), dtype=float).reshape(-1)
            for w in bootstrap_weights(n, resamples, seed)
        ]
    )
    vals = vals[np.isfinite(vals)]
    return float(vals.std(ddof=1)) if len(vals) > 1 else float("nan")


def _mean_stat(x: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    return lambda w: (w @ x) / w.sum(1)


def _as_seeds(values: Any, name: str = "values") -> np.ndarray:
    """(k, n) float array from (n,) or (k, n) input, values checked finite."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (n,) or (seeds, n), not {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} holds NaN or inf")
    return arr


def proportion(
    values: Any,
    *,
    level: float = LEVEL,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> Interval:
    """Mean of per-point values in [0, 1] (0/1 correctness or Monte-Carlo probabilities).

    ``values`` of shape (n,): Wilson interval on their sum. Shape (k, n), one row per training
    seed on the same points: :func:`across_seeds` of the per-seed Wilson intervals, with the
    point-level error from the bootstrap of the seed-averaged values.
    """
    arr = _as_seeds(values)
    if ((arr < 0) | (arr > 1)).any():
        raise ValueError("proportion needs values in [0, 1]")
    n = arr.shape[1]
    per_seed = [wilson(float(row.sum()), n, level=level) for row in arr]
    return _pool_seeds(per_seed, arr, resamples=resamples, seed=seed, level=level)


def paired_bootstrap_diff(
    a: Any,
    b: Any,
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
) -> Interval:
    """``mean(a) - mean(b)`` for two models' values on the same points, pairs resampled together.

    ``a``, ``b``: (n,) or (k, n) — k training seeds of each model, point j the same test point
    in every row (across seeds it is :func:`across_seeds` with the bootstrap error of the
    seed-averaged per-point difference).
    """
    x, y = _as_seeds(a, "a"), _as_seeds(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"paired arrays need the same shape, got {x.shape} and {y.shape}")
    d = x - y
    n = d.shape[1]
    per_seed = [
        bootstrap(
            _mean_stat(row),
            n,
            resamples=resamples,
            seed=seed,
            level=level,
            method="paired bootstrap",
        )
        for row in d
    ]
    return _pool_seeds(per_seed, d, resamples=resamples, seed=seed, level=level)


def _pool_seeds(
    per_seed: list[Interval], values: np.ndarray, *, resamples: int, seed: int, level: float
) -> Interval:
    """The one seed's interval, or :func:`across_seeds` of ``per_seed`` (one interval per row
    of ``values``, shape (k, n)) with the point-level error from the bootstrap of the
    seed-averaged per-point values."""
    if len(per_seed) == 1:
        return per_seed[0]
    mean = values.mean(0)
    se = bootstrap_se(_mean_stat(mean), len(mean), resamples=resamples, seed=seed)
    return across_seeds(per_seed, point_se=se, level=level)


def unpaired_bootstrap_diff(
    a: Any,
    b: Any,
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
) -> Interval:
    """``mean(a) - mean(b)`` for values on different points, each resampled independently.

    ``a``: (n_a,) or (k, n_a); ``b``: (n_b,) or (k, n_b), the same k. ``n`` of the result is
    ``min(n_a, n_b)``.
    """
    x, y = _as_seeds(a, "a"), _as_seeds(b, "b")
    if len(x) != len(y):
        raise ValueError(f"a and b need the same number of seeds, got {len(x)} and {len(y)}")

    def one(xa: np.ndarray, yb: np.ndarray, s: int) -> tuple[float, np.ndarray]:
        ma = np.concatenate([(w @ xa) / len(xa) for w in bootstrap_weights(len(xa), resamples, s)])
        mb = np.concatenate(
            [(w @ yb) / len(yb) for w in bootstrap_weights(len(yb), resamples, s + 1)]
        )
        return float(xa.mean() - yb.mean()), ma - mb

    q = (1 - level) / 2
    n = int(min(x.shape[1], y.shape[1]))
    per_seed = []
    for row_a, row_b in zip(x, y):
        est, dist = one(row_a, row_b, seed)
        lo, hi = np.quantile(dist, [q, 1 - q])
        per_seed.append(Interval(est, float(lo), float(hi), n, "unpaired bootstrap", level))
    if len(per_seed) == 1:
        return per_seed[0]
    _, dist = one(x.mean(0), y.mean(0), seed)
    return across_seeds(per_seed, point_se=float(dist.std(ddof=1)), level=level)


def difference(
    a: Any,
    b: Any,
    *,
    paired: bool,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
) -> Interval:
    """:func:`paired_bootstrap_diff` when ``paired``, else :func:`unpaired_bootstrap_diff`."""
    fn = paired_bootstrap_diff if paired else unpaired_bootstrap_diff
    return fn(a, b, resamples=resamples, seed=seed, level=level)


# ----------------------------------------------------------------------------- seeds


def across_seeds(
    per_seed: Sequence[Interval],
    *,
    point_se: float | None = None,
    level: float = LEVEL,
) -> Interval:
    """Combine one interval per training seed (method in the module docstring).

    ``point_se``: the test-point standard error of the seed mean when known (bootstrap of the
    seed-averaged per-point values); default the per-seed standard error (test-point noise
    fully shared by the seeds, the conservative bound).
    """
    ivs = list(per_seed)
    if not ivs:
        raise ValueError("across_seeds needs at least one interval")
    if len(ivs) == 1:
        return ivs[0]
    k = len(ivs)
    est = np.array([iv.estimate for iv in ivs], dtype=float)
    n = int(min(iv.n for iv in ivs))
    method = f"mean of {k} seeds, seed + point variance, Satterthwaite t"
    if not np.isfinite(est).all():
        return nan_interval(n, method, level, k)
    z = z_value(ivs[0].level)
    v_one = float(np.mean([((iv.hi - iv.lo) / (2 * z)) ** 2 for iv in ivs]))
    v_avg = v_one if point_se is None else min(float(point_se) ** 2, v_one)
    # the spread of the e_s holds the seeds' own test-point noise too; take it out once
    own_noise = k * (v_one - v_avg) / (k - 1)
    seed_part = max(0.0, float(est.var(ddof=1)) - own_noise) / k
    var = v_avg + seed_part
    df = SATTERTHWAITE_MAX_DF if seed_part <= 0 else (k - 1) * (var / seed_part) ** 2
    half = t_value(min(df, SATTERTHWAITE_MAX_DF), level) * math.sqrt(var)
    m = float(est.mean())
    return Interval(m, m - half, m + half, n, method, level, k)


# ----------------------------------------------------------------------------- verdicts


def verdict(effect: Interval, *, direction: int, paper_effect: float | None = None) -> str:
    """The verdict on a directional claim about ``effect`` (rules in the module docstring).

    ``direction``: +1 when the claim is that the effect is positive, -1 negative.
    ``paper_effect``: the paper's effect size in the same units and sign convention, if known.
    """
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, not {direction}")
    if paper_effect is not None and paper_effect * direction <= 0:
        raise ValueError(
            f"paper effect {paper_effect:+g} is not on the claimed side (direction {direction:+d})"
        )
    lo, hi = effect.lo, effect.hi
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return INCONCLUSIVE
    if (direction > 0 and lo > 0) or (direction < 0 and hi < 0):
        return REPRODUCED
    if (direction > 0 and hi < 0) or (direction < 0 and lo > 0):
        return NOT_REPRODUCED
    if paper_effect is not None and effect.excludes(paper_effect):
        return NOT_REPRODUCED
    return INCONCLUSIVE


def at_most(value: Interval, bound: float) -> str:
    """Verdict on "the quantity is at most ``bound``" (a quantity that vanishes)."""
    if not (math.isfinite(value.lo) and math.isfinite(value.hi)):
        return INCONCLUSIVE
    if value.hi <= bound:
        return REPRODUCED
    if value.lo > bound:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def guard(v: str, triggered: bool) -> str:
    """``inconclusive`` when the guard is triggered, whatever the verdict; else ``v``."""
    return INCONCLUSIVE if triggered else v


def combine(verdicts: Sequence[str]) -> str:
    """One verdict from the verdicts of a claim's parts (rule in the module docstring)."""
    vs = list(verdicts)
    if not vs:
        return INCONCLUSIVE
    if all(v == REPRODUCED for v in vs):
        return REPRODUCED
    if all(v == NOT_REPRODUCED for v in vs):
        return NOT_REPRODUCED
    if set(vs) <= {REPRODUCED, NOT_REPRODUCED, PARTLY}:
        return PARTLY
    return INCONCLUSIVE


__all__ = [
    "INCONCLUSIVE",
    "Interval",
    "NOT_REPRODUCED",
    "PARTLY",
    "REPRODUCED",
    "across_seeds",
    "at_most",
    "bootstrap",
    "bootstrap_se",
    "bootstrap_weights",
    "combine",
    "difference",
    "guard",
    "nan_interval",
    "newcombe_diff",
    "paired_bootstrap_diff",
    "proportion",
    "t_value",
    "unpaired_bootstrap_diff",
    "verdict",
    "wilson",
    "z_value",
]
