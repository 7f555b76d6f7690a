"""95% intervals of every proportion a run reports (evalkit/evaluation/intervals.py).

The exact interval is cross-checked against SciPy's own binomial test (an independent
implementation of Clopper-Pearson); both intervals' coverage is measured on constructed data
whose true accuracy is known: binomial outcomes for deterministic scoring, and per-point
probabilities drawn from a Beta distribution and scored from a finite number of draws for
Monte-Carlo scoring. Then the interval must reach the summary, the printed table and
EvalResult of a real run.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers import QUIET, one_thread

from evalkit.evaluation.intervals import (
    EFFECTIVE,
    EXACT,
    clopper_pearson,
    count_interval,
    score_interval,
)


@pytest.mark.parametrize(("k", "n"), [(0, 10), (1, 10), (5, 10), (10, 10), (42, 300), (127, 300)])
def test_exact_interval_matches_scipy_binomtest(k: int, n: int) -> None:
    from scipy.stats import binomtest

    ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    low, high = clopper_pearson(k, n)
    assert low == pytest.approx(ref.low, abs=1e-9) and high == pytest.approx(ref.high, abs=1e-9)
    iv = count_interval(k, n)
    assert (iv.low, iv.high, iv.method) == (low, high, EXACT)


def _coverage(draw, truth: float, trials: int, draws: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(trials):
        iv = score_interval(draw(rng), draws)
        hits += iv.low <= truth <= iv.high
    return hits / trials


@pytest.mark.parametrize(("n", "p"), [(30, 0.05), (64, 0.9), (100, 0.4), (300, 0.7)])
def test_exact_interval_covers_binomial_outcomes(n: int, p: float) -> None:
    cov = _coverage(lambda rng: (rng.random(n) < p).astype(float), p, 1500, 1, seed=n)
    # Clopper-Pearson never covers less than 95% (up to the simulation's own error, ~0.6
    # points at 1500 trials) and is conservative, most of all near 0 or 1 at small n
    assert 0.935 <= cov <= 0.995, cov


@pytest.mark.parametrize(
    ("n", "a", "b", "draws"),
    [(50, 1.0, 3.0, 5), (64, 0.5, 0.5, 10), (100, 2.0, 2.0, 20), (300, 200.0, 200.0, 20)],
)
def test_monte_carlo_interval_covers_the_mean_probability(
    n: int, a: float, b: float, draws: int
) -> None:
    """Each point is correct with its own probability p_i ~ Beta(a, b) and is scored from
    ``draws`` draws; the interval must cover E[p] = a / (a + b) about 95% of the time, from
    U-shaped (0.5, 0.5) to nearly homogeneous (200, 200) points, where the Monte-Carlo error is
    most of the variance and the binomial interval on n points would be far too wide."""
    truth = a / (a + b)

    def draw(rng: np.random.Generator) -> np.ndarray:
        return rng.binomial(draws, rng.beta(a, b, size=n)) / draws

    cov = _coverage(draw, truth, 1000, draws, seed=int(n * a))
    assert 0.93 <= cov <= 0.99, cov
    iv = score_interval(draw(np.random.default_rng(1)), draws)
    assert iv.method == EFFECTIVE and n <= iv.n_effective <= n * draws
    assert 0 < iv.mc_std_error <= iv.std_error


def test_binary_scores_give_the_exact_interval_whatever_the_draws() -> None:
    s = np.r_[np.ones(30), np.zeros(70)]
    for draws in (1, 20):
        iv = score_interval(s, draws)
        assert iv.method == EXACT and (iv.low, iv.high) == clopper_pearson(30, 100)
    empty = score_interval([], 1)
    assert math.isnan(empty.low) and empty.n == 0
    with pytest.raises(ValueError):
        score_interval([1.5], 1)


def test_a_run_carries_intervals_everywhere(capsys: pytest.CaptureFixture[str]) -> None:
    """summary.json, the printed table and EvalResult: clean, each attack, the worst case
    (also on all draws) and per class, each interval around its own estimate."""
    import evalkit
    from evalkit.data import load_split

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    split = load_split("fashion-mnist-mini", "test").first(48)
    with one_thread():
        res = evalkit.evaluate(
            net,
            (split.x, split.y),
            eps=["8/255", "2/255"],
            attacks=["fgsm", "pgd"],
            sanity=False,
            **{**QUIET, "echo": True},
        )
    s = res.summary
    assert s["intervals"]["method"] == EXACT and s["intervals"]["level"] == 0.95

    def inside(value: float, ci: list[float]) -> bool:
        return ci[0] <= value <= ci[1] and ci[0] < ci[1]

    assert inside(s["clean_accuracy"], s["clean_accuracy_ci"])
    assert tuple(s["clean_accuracy_ci"]) == clopper_pearson(s["n_clean_correct"], 48)
    for r in s["results"]:
        assert inside(r["robust_accuracy"], r["robust_accuracy_ci"])
    for w in s["worst_case"]:
        assert tuple(w["robust_accuracy_ci"]) == clopper_pearson(w["n_robust"], 48)
        assert inside(w["robust_accuracy_all_draws"], w["robust_accuracy_all_draws_ci"])
    for c in s["per_class"]:
        assert c["clean_accuracy_ci"][0] <= c["clean_accuracy"] <= c["clean_accuracy_ci"][1]
        assert set(c["robust_accuracy_ci"]) == {"8/255", "2/255"}
    assert res.robust_accuracy_ci == tuple(s["worst_case"][0]["robust_accuracy_ci"])
    assert res.clean_accuracy_ci == tuple(s["clean_accuracy_ci"])
    out = capsys.readouterr().out
    w = s["worst_case"][0]
    lo, hi = w["robust_accuracy_ci"]
    assert f"{100 * w['robust_accuracy']:.2f}% [{100 * lo:.1f}, {100 * hi:.1f}]" in out
    assert "[95% CI] clopper-pearson" in out
