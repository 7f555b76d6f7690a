"""Judge of the ``bpda`` study: input transformations under plain PGD and under BPDA.

Athalye, Carlini & Wagner (ICML 2018, §5) broke Guo et al.'s input transformations (ICLR 2018:
JPEG compression, bit-depth reduction, ...) with BPDA: the transformation's zero or missing
gradient makes it look robust to a plain gradient attack, and attacking through it with the
identity backward takes the robustness away. Per transformation, on the standard-trained model
at the scale's eps (two claims each, the same rules as the ``sap-eot`` study's):

* *looks robust*: robust accuracy of transformation + model after the plain PGD-20 (the
  protocol's first attack, so its row is that attack alone) minus the undefended model's after
  the same attack > 0;
* *vanishes under BPDA*: :func:`analysis.studies.judge_sap.vanishes` (the SAP study's rule) on the
  drop from that plain number to the transformed model's worst case (plain PGD-20, its BPDA
  copy and the Square probe; every break counts) and on the residual, worst case
  (transformed) - worst case (undefended), against the margin; guard: the first claim is not
  reproduced.

Differences are paired over test points and combined over training seeds with the shared
rules of :mod:`analysis.studies.stats` (through :func:`analysis.studies.values.compare`); fewer
than 3 seeds make every verdict inconclusive. The margin is the SAP study's
(:data:`analysis.studies.judge_sap.SAP_VANISH_MARGIN`, 5 points).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from analysis.studies.judge_sap import SAP_VANISH_MARGIN, vanishes
from analysis.studies.rundirs import load_run_points, seed_run_dirs
from analysis.studies.spec import Finding, StudyContext
from analysis.studies.stats import REPRODUCED, verdict
from analysis.studies.values import (
    RunPoints,
    apply_seed_rule,
    compare,
    make_finding,
    numbers_dict,
    paper_value,
    round4,
    size_note,
)

#: (defense part, what the claims call it), in claim order
TRANSFORMS: tuple[tuple[str, str], ...] = (
    ("jpeg", "JPEG compression"),
    ("bitdepth", "bit-depth reduction"),
)
PLAIN_ATTACK = "pgd-20"
DENSE_KEY = "std_dense"


def run_key(part: str) -> str:
    """The run folder key of the standard model evaluated with the transformation ``part``."""
    return f"std_{part}"


def claims() -> list[str]:
    """The study's claims, in the order :func:`bpda_findings` returns them."""
    out = []
    for _, label in TRANSFORMS:
        out.append(f"{label} looks more robust than the undefended model under plain PGD")
        out.append(f"{label}'s apparent robustness vanishes under BPDA")
    return out


def bpda_findings(
    dense: RunPoints,
    transformed: Mapping[str, RunPoints],
    *,
    eps: float,
    plain: str = PLAIN_ATTACK,
    margin: float = SAP_VANISH_MARGIN,
    paper_effects: Mapping[str, float | None] | None = None,
    seed: int = 0,
    extra: Mapping[str, Any] | None = None,
) -> list[Finding]:
    """Two findings per transformation in :data:`TRANSFORMS` present in ``transformed``
    (harness runs of the same model and points: ``dense`` without, each value with it)."""
    out: list[Finding] = []
    dense_plain = dense.attacks[plain]
    for part, label in TRANSFORMS:
        if part not in transformed:
            continue
        run = transformed[part]
        looks = compare(run.attacks[plain], dense_plain, seed=seed)
        p1 = paper_value(paper_effects, f"bpda.{part}.looks_robust")
        v1 = verdict(looks, direction=+1, paper_effect=p1)
        drop = compare(run.attacks[plain], run.worst, seed=seed)
        residual = compare(run.worst, dense.worst, seed=seed)
        v2, v_drop, v_res = vanishes(drop, residual, margin, looked=v1 == REPRODUCED)
        ivs = {
            "dense_plain_pgd": dense_plain.interval(),
            "dense_worst_case": dense.worst.interval(),
            f"{part}_clean": run.clean.interval(),
            f"{part}_plain_pgd": run.attacks[plain].interval(),
            f"{part}_worst_case_bpda": run.worst.interval(),
        }
        more = {k: v for k, v in (extra or {}).items() if k.startswith((f"{part}_", "dense_"))}
        out.append(
            make_finding(
                claims()[len(out)],
                v1,
                numbers_dict({**ivs, f"{part}_minus_dense_plain_pgd": looks}, eps=eps, **more),
                f"eps {eps:g}: effect = robust accuracy after the plain {plain.upper()} with "
                f"{label} minus the undefended model's after the same attack, paired over test "
                "points; reproduced when its interval lies above 0" + size_note(looks, p1, v1),
                effect=looks,
            )
        )
        out.append(
            make_finding(
                claims()[len(out)],
                v2,
                numbers_dict(
                    {
                        **ivs,
                        f"{part}_drop_plain_to_bpda": drop,
                        f"{part}_bpda_minus_dense": residual,
                    },
                    eps=eps,
                    drop_verdict=v_drop,
                    residual_verdict=v_res,
                    **more,
                ),
                f"two parts: the drop from the plain {plain.upper()} to the worst case with its "
                "BPDA copy (identity backward) is above 0, and that worst case is at most "
                f"{margin:.0%} above the undefended model's (interval below {margin:g}); "
                "combined, except that a residual significantly above the margin alone means "
                f"not reproduced; inconclusive when {label} did not look robust in the first "
                "place",
                effect=residual,
            )
        )
    return out


def _second_eps(run_dirs: Sequence[Path], prefix: str) -> dict[str, float]:
    """Plain-PGD and worst-case robust accuracy at the runs' second eps (mean over seeds), for
    the record: at a budget below the quantisation step a transformation can hold for real."""
    plain, worst, eps = [], [], None
    for d in run_dirs:
        s = json.loads((Path(d) / "summary.json").read_text())
        if len(s["worst_case"]) < 2:
            return {}
        eps = s["worst_case"][1]["eps"]
        rows = {r["attack"]: r for r in s["results"] if r["eps"] == eps}
        plain.append(float(rows[PLAIN_ATTACK]["robust_accuracy"]))
        worst.append(float(s["worst_case"][1]["robust_accuracy"]))
    return {
        f"{prefix}_eps{eps}_plain_pgd": round4(sum(plain) / len(plain)),
        f"{prefix}_eps{eps}_worst_case": round4(sum(worst) / len(worst)),
    }


def judge_bpda(ctx: StudyContext) -> list[Finding]:
    """Reads the runs ``std_dense`` and ``std_<part>`` (one per training seed)."""
    dense_dirs = seed_run_dirs(ctx, DENSE_KEY)
    dense = load_run_points(dense_dirs)
    transformed, extra = {}, {}
    for part, _ in TRANSFORMS:
        dirs = seed_run_dirs(ctx, run_key(part))
        transformed[part] = load_run_points(dirs)
        extra.update(_second_eps(dirs, part))
    summary = json.loads((dense_dirs[0] / "summary.json").read_text())
    eps = float(summary["worst_case"][0]["eps_value"])
    extra.update(_second_eps(dense_dirs, "dense"))
    return apply_seed_rule(
        bpda_findings(dense, transformed, eps=eps, seed=ctx.seed, extra=extra), ctx
    )
