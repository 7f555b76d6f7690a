"""The SAP (stochastic activation pruning) claims, and the "vanishes under the adaptive attack"
rule that the BPDA study (:mod:`analysis.studies.bpda`) shares.

Rules, at the sweep's smallest eps (where the dense model is not yet at 0%): SAP with EOT-1
minus dense > 0; "vanishes": the EOT drop (EOT-1 minus EOT-max) > 0 combined with
``at_most(SAP EOT-max - dense, 0.05)``; a residual above the margin alone makes it "not
reproduced" (robustness still there did not vanish). Guard: the first claim is not reproduced.
Pure functions: no file is read here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from analysis.studies.spec import Finding
from analysis.studies.stats import (
    NOT_REPRODUCED,
    REPRODUCED,
    Interval,
    at_most,
    combine,
    guard,
    verdict,
)
from analysis.studies.values import (
    Points,
    compare,
    make_finding,
    numbers_dict,
    paper_value,
    size_note,
)
from evalkit.errors import EvalkitError

# "SAP's robustness vanishes": SAP under EOT at most this much above the dense model
SAP_VANISH_MARGIN = 0.05


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
    p1 = paper_value(paper_effects, "sap.looks_robust")
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
        make_finding(
            "SAP looks more robust than the dense model under plain (single-sample) PGD",
            v1,
            numbers_dict({**ivs, f"sap_eot{e_lo}_minus_dense": looks}, eps=eps, **extra),
            f"eps {eps:g} (smallest of the sweep): effect = SAP robust accuracy with EOT-{e_lo} "
            "minus the dense model's, reproduced when its interval lies above 0"
            + size_note(looks, p1, v1),
            effect=looks,
        ),
        make_finding(
            "SAP's apparent robustness vanishes under EOT",
            v2,
            numbers_dict(
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


__all__ = ["SAP_VANISH_MARGIN", "sap_findings", "vanishes"]
