"""95% intervals for every proportion a run reports: clean accuracy, each attack's robust
accuracy and the worst case (overall and per class).

What the interval covers: the accuracy the model would have on the *population* the test points
were drawn from (a new sample of the same size would land elsewhere), plus, for a randomized
model, the Monte-Carlo noise of scoring each point from a finite number of draws.

* **Deterministic scoring** (every score is 0 or 1): ``k`` robust points of ``n`` is a binomial
  count and the interval is the exact Clopper-Pearson one (Clopper & Pearson, Biometrika 1934):
  ``[B(a/2; k, n-k+1), B(1-a/2; k+1, n-k)]`` with ``B`` the beta quantile. It never covers less
  than the nominal level (it is conservative for small ``n``).
* **Monte-Carlo scoring** (randomized models; scores in [0, 1], each the minimum over candidates
  of ``#correct draws / draws``): the observed scores carry both the spread between points and
  each point's Monte-Carlo error, so the variance of their mean is estimated by their spread,
  ``V = mean((s_i - m)^2) / n``. The interval is Clopper-Pearson on the *effective* sample size
  ``n_eff = m (1 - m) / V`` (kept within ``[n, n * draws]``, see :func:`score_interval`) with
  ``k_eff = m n_eff`` successes: Korn & Graubard's interval for a proportion estimated with a
  design effect (Survey Methodology 24(2), 1998), here the design effect of scoring by draws.
  For 0/1 scores ``n_eff = n`` and it is exactly the deterministic interval. The Monte-Carlo
  part of ``V`` (``sum s_i (1 - s_i) / (draws - 1) / n^2``, unbiased per point) is reported
  beside it as ``mc_std_error``; it is not the bias of taking a minimum over noisy candidates
  (that bias only lowers the estimate).

Coverage on constructed data (binomial outcomes, and Beta-distributed per-point probabilities
scored from draws) is checked in ``tests/test_intervals.py``.

Comparisons inside one run (a head against its model's output, a plain attack against its
adaptive version, on the same points) use :func:`paired_difference`, Newcombe's hybrid score
interval for paired proportions (Newcombe 1998, "Improved confidence intervals for the
difference between binomial proportions based on paired data", method 10), built from two
:func:`wilson` intervals (Wilson 1927) and the correlation of the paired outcomes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

LEVEL = 0.95
EXACT = "clopper-pearson"
EFFECTIVE = "clopper-pearson-effective-n"


@dataclass(frozen=True)
class Interval:
    """An estimated proportion with its ``level`` interval ``[low, high]`` (all in [0, 1]).

    ``n`` is the number of points, ``n_effective`` the sample size the interval was computed
    with (``n`` for deterministic scoring), ``std_error`` the standard error of the estimate and
    ``mc_std_error`` its Monte-Carlo part (0 for deterministic scoring)."""

    estimate: float
    low: float
    high: float
    level: float
    method: str
    n: int
    n_effective: float
    std_error: float
    mc_std_error: float = 0.0

    @property
    def bounds(self) -> list[float]:
        """``[low, high]`` (what summary.json stores as ``*_ci``)."""
        return [self.low, self.high]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return format_interval(self.estimate, self.low, self.high)


def format_interval(estimate: float, low: float, high: float, digits: int = 1) -> str:
    """``42.3% [36.7, 48.1]``: the estimate and its interval in percent."""
    if any(v is None or v != v for v in (estimate, low, high)):
        return "n/a"
    return f"{100 * estimate:.{digits}f}% [{100 * low:.{digits}f}, {100 * high:.{digits}f}]"


def clopper_pearson(k: float, n: float, level: float = LEVEL) -> tuple[float, float]:
    """Exact binomial interval for ``k`` successes of ``n`` (``k``, ``n`` may be fractional:
    the beta quantiles are defined for any positive parameters). NaN bounds when ``n <= 0``."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n <= 0:
        return math.nan, math.nan
    if not -1e-9 <= k <= n + 1e-9:
        raise ValueError(f"k must be in [0, n]; got {k} of {n}")
    from scipy.special import betaincinv  # a few ms; scipy.stats would cost ~0.5 s

    k = min(max(float(k), 0.0), float(n))
    alpha = 1.0 - level
    low = 0.0 if k <= 0 else float(betaincinv(k, n - k + 1, alpha / 2))
    high = 1.0 if k >= n else float(betaincinv(k + 1, n - k, 1 - alpha / 2))
    return low, high


def score_interval(
    scores: Sequence[float] | np.ndarray, draws: int = 1, level: float = LEVEL
) -> Interval:
    """The interval of ``mean(scores)``: per-point robust (or clean) scores in [0, 1] from
    ``draws`` forward passes per candidate (see the module docstring for the method).

    ``n_effective`` is kept within ``[n, n * draws]``: never narrower than ``n * draws``
    independent Bernoulli trials (all a run observed), and never wider than ``n`` Bernoulli
    points, which bounds the variance of any mean of [0, 1] scores. NaN interval for no points.
    """
    s = np.asarray(scores, dtype=float)
    s = s[np.isfinite(s)]
    n = int(s.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, level, EXACT, 0, 0.0, math.nan)
    if np.any((s < -1e-9) | (s > 1 + 1e-9)):
        raise ValueError("scores must lie in [0, 1]")
    s = s.clip(0.0, 1.0)
    m = float(s.mean())
    binary = bool(np.all((s == 0.0) | (s == 1.0)))
    if draws <= 1 or binary:
        low, high = clopper_pearson(m * n, n, level)
        se = math.sqrt(m * (1 - m) / n)
        return Interval(m, low, high, level, EXACT, n, float(n), se)
    spread = float(((s - m) ** 2).mean())
    var = spread / n
    mc_se = math.sqrt(float((s * (1 - s)).sum()) / (draws - 1)) / n
    n_eff = float(n) if var <= 0 or m * (1 - m) <= 0 else m * (1 - m) / var
    n_eff = min(max(n_eff, float(n)), float(n * draws))
    low, high = clopper_pearson(m * n_eff, n_eff, level)
    return Interval(m, low, high, level, EFFECTIVE, n, n_eff, math.sqrt(var), mc_se)


def count_interval(k: int, n: int, level: float = LEVEL) -> Interval:
    """Clopper-Pearson interval of ``k / n`` for a plain count (e.g. points correct on all
    draws)."""
    if n <= 0:
        return Interval(math.nan, math.nan, math.nan, level, EXACT, 0, 0.0, math.nan)
    m = k / n
    low, high = clopper_pearson(k, n, level)
    return Interval(m, low, high, level, EXACT, n, float(n), math.sqrt(m * (1 - m) / n))


def interval_block(draws: int, level: float = LEVEL) -> dict[str, Any]:
    """What the ``*_ci`` entries of summary.json mean (summary.json ``intervals``)."""
    if draws <= 1:
        method, how = (
            EXACT,
            (
                "exact binomial (Clopper-Pearson) interval of k robust points of n; covers the "
                "accuracy on the population the test points were drawn from"
            ),
        )
    else:
        method, how = (
            EFFECTIVE,
            (
                f"Clopper-Pearson on the effective sample size n_eff = m(1-m)/V, V the variance of "
                f"the mean score estimated from the scores' spread (point sampling and the "
                f"Monte-Carlo error of {draws} draws per candidate together; Korn & Graubard 1998); "
                "mc_std_error is the Monte-Carlo part"
            ),
        )
    return {"level": level, "method": method, "description": how}


__all__ = [
    "EFFECTIVE",
    "EXACT",
    "LEVEL",
    "Interval",
    "clopper_pearson",
    "count_interval",
    "format_interval",
    "interval_block",
    "score_interval",
]


Z95 = 1.959963984540054


def wilson(k: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of ``k`` successes in ``n`` trials, clipped to [0, 1].

    ``n == 0`` gives ``(nan, nan)``. ``k`` may be fractional (a mean of scores in [0, 1])."""
    if n <= 0:
        return float("nan"), float("nan")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(max(p * (1 - p) / n + z * z / (4 * n * n), 0.0)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_difference(
    a: Sequence[bool], b: Sequence[bool], z: float = Z95
) -> tuple[float, float, float]:
    """Estimate and 95% interval of ``mean(a) - mean(b)`` for paired 0/1 outcomes.

    ``a[i]`` and ``b[i]`` are two outcomes on the same point (e.g. robust under the plain and
    under the adaptive attack). Returns ``(difference, low, high)``; ``(nan, nan, nan)`` for
    no points. Raises ValueError when the lengths differ."""
    if len(a) != len(b):
        raise ValueError(f"paired outcomes need equal lengths, got {len(a)} and {len(b)}")
    n = len(a)
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    both = sum(1 for x, y in zip(a, b) if x and y)
    only_a = sum(1 for x, y in zip(a, b) if x and not y)
    only_b = sum(1 for x, y in zip(a, b) if y and not x)
    neither = n - both - only_a - only_b
    pa, pb = (both + only_a) / n, (both + only_b) / n
    la, ua = wilson(both + only_a, n, z)
    lb, ub = wilson(both + only_b, n, z)
    margins = (both + only_a) * (neither + only_b) * (both + only_b) * (neither + only_a)
    phi = 0.0
    if margins > 0:
        phi = (both * neither - only_a * only_b) / math.sqrt(margins)
    d = pa - pb
    low = d - math.sqrt(max((pa - la) ** 2 - 2 * phi * (pa - la) * (ub - pb) + (ub - pb) ** 2, 0.0))
    high = d + math.sqrt(
        max((ua - pa) ** 2 - 2 * phi * (ua - pa) * (pb - lb) + (pb - lb) ** 2, 0.0)
    )
    return d, max(-1.0, low), min(1.0, high)
