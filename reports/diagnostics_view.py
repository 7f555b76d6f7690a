"""The report's view of what a plug-in defense measured about itself: the masking diagnostics of
the evaluation (plain vs adaptive attacks run independently on the same points, the heads'
agreement with the output, how often attacks flip the mask selection) and the checkpoint's
training health. Both are computed by evalkit (``summary.json["diagnostics"]``,
``summary.json["model"]["health"]``); this module only lays them out."""

from __future__ import annotations

from typing import Any

from reports.runs import RunData
from reports.tables import Cell, Table


def _ci(iv: dict[str, Any] | None) -> str:
    if not iv or iv.get("value") is None:
        return "—"
    return f"{100 * iv['value']:.1f} [{100 * iv['low']:.1f}, {100 * iv['high']:.1f}]"


def _gap(g: dict[str, Any]) -> str:
    return f"{100 * g['gap']:+.1f} [{100 * g['low']:+.1f}, {100 * g['high']:+.1f}]"


def diagnostics_context(run: RunData) -> dict[str, Any] | None:
    """Rows for the masking-diagnostics table of one run (None when none ran)."""
    block = run.summary.get("diagnostics")
    if not isinstance(block, dict) or not block.get("per_eps"):
        return None
    per_eps = []
    for e in block["per_eps"]:
        attacks = [
            {
                "id": pid.removeprefix("diag:"),
                "kind": a.get("adaptive") or "plain",
                "robust": _ci(a.get("robust_accuracy")),
                "gap": _gap(e["gaps"][pid]) if pid in e.get("gaps", {}) else "",
            }
            for pid, a in e["attacks"].items()
        ]
        heads = [
            {
                "head": h["head"],
                "clean": _ci(h["clean_accuracy"]),
                "output": _ci(h["output_clean_accuracy"]),
                "agreement": _ci(h["agreement_with_output"]),
                "flips": [
                    (pid.removeprefix("diag:"), _ci(iv)) for pid, iv in h["selection_flip"].items()
                ],
            }
            for h in e.get("heads", [])
        ]
        verdict = (
            "gradient masking suspected"
            if e["gradient_masking_suspected"]
            else "below the threshold or not significant"
        )
        attack_table = Table(
            [f"attack @ eps {e['eps']}", "kind", "robust % [95% CI]", "plain − this, points"],
            [
                [a["id"], a["kind"], Cell(a["robust"], num=True), Cell(a["gap"], num=True)]
                for a in attacks
            ]
            + [["plain − strongest adaptive", verdict, "", Cell(_gap(e["gap_worst"]), num=True)]],
            css="diagnostics-table",
            num={2, 3},
            row_css=[""] * len(attacks) + ["worst"],
        )
        head_table = (
            Table(
                ["head", "head clean %", "output clean %", "agrees with output %"]
                + [f"selection changed by {pid} %" for pid, _ in heads[0]["flips"]],
                [
                    [str(h["head"]), h["clean"], h["output"], h["agreement"]]
                    + [v for _, v in h["flips"]]
                    for h in heads
                ],
                css="heads-table",
                num=set(range(1, 4 + len(heads[0]["flips"]))),
            )
            if heads
            else None
        )
        per_eps.append({"attacks": attack_table, "heads": head_table})
    return {
        "population": block.get("population"),
        "threshold": 100 * float(block.get("threshold", 0)),
        "rule": block.get("rule", ""),
        "per_eps": per_eps,
    }


def health_context(run: RunData) -> dict[str, Any] | None:
    """The checkpoint's training health (plug-in defenses), or None when not measured."""
    health = run.model.get("health")
    if not isinstance(health, dict) or not health.get("status"):
        return None
    return {
        "status": str(health["status"]),
        "epoch": health.get("epoch"),
        "reasons": [str(r) for r in health.get("reasons") or []],
        "sites": ", ".join(str(s) for s in health.get("sites") or []),
    }
