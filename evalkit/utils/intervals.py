"""Confidence intervals for accuracies measured on n test points.

Used wherever one number is compared with another inside a single run (a head against its
model's output, a plain attack against its adaptive version), so a flag rests on a difference
larger than the test points' own noise, not on a point estimate.

* :func:`wilson`: the Wilson score interval of a proportion (Wilson 1927), which keeps its
  coverage near 0 and 1 where the normal approximation does not.
* :func:`paired_difference`: the difference of two proportions measured on the *same* points,
  Newcombe's hybrid score interval (Newcombe 1998, "Improved confidence intervals for the
  difference between binomial proportions based on paired data", method 10), built from the
  two Wilson intervals and the correlation of the paired outcomes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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
