"""The HE (hypersphere embedding) claims, judged from the AT and AT+HE harness runs.

Rules: worst case (AT+HE) - worst case (AT) > 0; CE-only overstatement (accuracy after the CE
attacks FGSM and PGD minus the worst case) of AT+HE minus that of AT > 0. Both paired over test
points (unpaired when only counts were recorded). Pure functions: no file is read here.
"""

from __future__ import annotations

from collections.abc import Mapping

from analysis.studies.spec import Finding
from analysis.studies.stats import verdict
from analysis.studies.values import (
    RunPoints,
    compare,
    make_finding,
    numbers_dict,
    paper_value,
    size_note,
)


def he_findings(
    at: RunPoints,
    he: RunPoints,
    *,
    paper_effects: Mapping[str, float | None] | None = None,
    seed: int = 0,
) -> list[Finding]:
    """HE claims from the AT and AT+HE harness runs (same protocol and points)."""
    eff = compare(he.worst, at.worst, seed=seed)
    p1 = paper_value(paper_effects, "he.worst_case")
    v1 = verdict(eff, direction=+1, paper_effect=p1)
    out = [
        make_finding(
            "HE improves PGD-AT's worst-case robust accuracy under margin/DLR attacks",
            v1,
            numbers_dict(
                {
                    "at_clean": at.clean.interval(),
                    "at_he_clean": he.clean.interval(),
                    "at_worst_case": at.worst.interval(),
                    "at_he_worst_case": he.worst.interval(),
                    "at_he_minus_at_worst_case": eff,
                }
            ),
            "effect = worst-case robust accuracy (AT+HE) - (AT) over the protocol's attacks, paired "
            "over test points; reproduced when its interval lies above 0" + size_note(eff, p1, v1),
            effect=eff,
        )
    ]
    ce_at, ce_he = at.ce_only(), he.ce_only()
    if ce_at is not None and ce_he is not None:
        over_at, over_he = ce_at.minus(at.worst), ce_he.minus(he.worst)
        eff2 = compare(over_he, over_at, seed=seed)
        p2 = paper_value(paper_effects, "he.ce_overstates")
        v2 = verdict(eff2, direction=+1, paper_effect=p2)
        out.append(
            make_finding(
                "CE-only PGD overstates HE's robustness more than plain AT's",
                v2,
                numbers_dict(
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
                + size_note(eff2, p2, v2),
                effect=eff2,
            )
        )
    return out


__all__ = ["he_findings"]
