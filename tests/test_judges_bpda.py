"""The ``bpda`` study's judge (analysis/studies/bpda.py) on constructed numbers and on run
folders written by the harness itself."""

from __future__ import annotations

import numpy as np
import pytest
from test_judges import N, bern, nested

from analysis.studies.bpda import TRANSFORMS, bpda_findings, claims, judge_bpda
from analysis.studies.spec import StudyContext
from analysis.studies.stats import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED
from analysis.studies.values import Points, RunPoints

IDX = np.arange(N)


def run(plain: np.ndarray, worst: np.ndarray) -> RunPoints:
    """A harness run: plain PGD-20 first (its row is that attack alone), then the BPDA copy."""
    clean = np.maximum(plain, bern(0.85, seed=9))
    return RunPoints(
        Points(clean, IDX),
        Points(worst, IDX),
        {"pgd-20": Points(plain, IDX), "pgd-20-bpda": Points(worst, IDX)},
    )


def test_looks_robust_then_vanishes_is_reproduced_for_each_transformation():
    dense = run(bern(0.02), bern(0.02))
    broken = nested(bern(0.02), 0.01, seed=3)  # BPDA leaves one point above dense
    looking = np.maximum(bern(0.78, seed=1), broken)
    out = bpda_findings(dense, {p: run(looking, broken) for p, _ in TRANSFORMS}, eps=0.1)
    assert [f.claim for f in out] == claims() and len(out) == 2 * len(TRANSFORMS)
    assert all(f.verdict == REPRODUCED for f in out)
    assert out[0].effect == pytest.approx(looking.mean() - 0.02)
    assert out[1].numbers["drop_verdict"] == out[1].numbers["residual_verdict"] == REPRODUCED


def test_real_robustness_under_bpda_is_not_reproduced_and_no_apparent_one_is_inconclusive():
    dense = run(bern(0.1), bern(0.1))
    plain = np.maximum(bern(0.8, seed=1), bern(0.1))
    holds = nested(bern(0.1), 0.4, seed=2)  # 40 points above dense under BPDA
    out = bpda_findings(dense, {"jpeg": run(plain, np.minimum(holds, plain))}, eps=0.1)
    assert [f.verdict for f in out] == [REPRODUCED, NOT_REPRODUCED]
    assert out[1].numbers["drop_verdict"] == REPRODUCED
    # plain PGD already breaks it as much as the dense model: "vanishes" cannot be judged
    flat = bpda_findings(dense, {"bitdepth": run(bern(0.1), bern(0.1))}, eps=0.1)
    assert [f.verdict for f in flat] == [INCONCLUSIVE, INCONCLUSIVE]


def test_file_judge_reads_harness_runs_and_needs_three_seeds(tmp_path, atk_model, atk_data):
    """Runs written by evalkit.evaluate: the dense model and the same model behind each
    transformation at two eps; with one seed every verdict is reported inconclusive."""
    from helpers import QUIET

    import evalkit

    x, y = atk_data
    ctx = StudyContext(out=tmp_path, models_dir=tmp_path / "models", scale=None, device="cpu")
    common = dict(preset="pgd", eps=["0.1", "0.05"], **QUIET)
    evalkit.evaluate(atk_model, (x, y), out=ctx.run_dir("std_dense"), **common)
    for part, _ in TRANSFORMS:
        evalkit.evaluate(atk_model, (x, y), defense=part, out=ctx.run_dir(f"std_{part}"), **common)
    out = judge_bpda(ctx)
    assert [f.claim for f in out] == claims()
    assert all(f.verdict == INCONCLUSIVE and f.seeds == [0] for f in out)
    assert "judged 'reproduced' on 1 training seed(s)" in out[0].explanation
    assert out[0].numbers["eps"] == 0.1 and "jpeg_eps0.05_plain_pgd" in out[0].numbers
