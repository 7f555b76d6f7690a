"""From unit records to per-example outcomes, the summary numbers, examples.parquet and the
printed table. Pure functions of the records, so a resumed, sharded or uninterrupted run that
holds the same records produces the same summary."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from evalkit.evaluation.protocol import AttackPlan
from evalkit.evaluation.rundir import unit_key


def robust_before(
    records: dict[str, dict[str, Any]],
    batch: int,
    plans: Sequence[AttackPlan],
    upto: int,
    eps_label: str,
    compaction: bool,
) -> dict[int, bool]:
    """Per example of ``batch``: still robust before attack number ``upto``.

    With compaction it is clean-correct and unbroken by attacks ``0..upto-1``; without it,
    clean-correct only (every attack sees every correctly classified point)."""
    clean = records[unit_key("clean", batch)]
    alive = {i: p == y for i, p, y in zip(clean["index"], clean["pred"], clean["label"])}
    if not compaction:
        return alive
    label = dict(zip(clean["index"], clean["label"]))
    for plan in plans[:upto]:
        rec = records[unit_key("attack", batch, plan.id, eps_label)]
        for i, p in zip(rec["index"], rec["pred"]):
            if p != label[i]:
                alive[i] = False
    return alive


def per_example_table(
    records: dict[str, dict[str, Any]],
    n_batches: int,
    plans: Sequence[AttackPlan],
    eps_labels: Sequence[str],
    compaction: bool,
    class_names: Sequence[str] = (),
) -> pd.DataFrame:
    """One row per example: index, label, clean prediction/margin, and per attack and eps the
    adversarial prediction (-1 when the point was not attacked), margin, perturbation norm and
    whether the point is still robust after that attack (cumulative under compaction)."""
    cols: dict[str, list[Any]] = {"index": [], "label": [], "clean_pred": [], "clean_margin": []}
    clean_recs = [records[unit_key("clean", b)] for b in range(n_batches)]
    for rec in clean_recs:
        cols["index"] += rec["index"]
        cols["label"] += rec["label"]
        cols["clean_pred"] += rec["pred"]
        cols["clean_margin"] += rec["margin"]
    df = pd.DataFrame(cols)
    df["clean_correct"] = df["clean_pred"] == df["label"]
    pos = {i: k for k, i in enumerate(df["index"].tolist())}
    n = len(df)
    for eps in eps_labels:
        worst = df["clean_correct"].to_numpy().copy()
        for plan in plans:
            pred = np.full(n, -1, dtype=np.int64)
            margin = np.full(n, np.nan)
            norm = np.full(n, np.nan)
            for b in range(n_batches):
                rec = records[unit_key("attack", b, plan.id, eps)]
                where = [pos[i] for i in rec["index"]]
                if where:
                    pred[where] = rec["pred"]
                    margin[where] = rec["margin"]
                    norm[where] = rec["norm"]
            broken = (pred != -1) & (pred != df["label"].to_numpy())
            prefix = f"{plan.id}@{eps}"
            df[f"{prefix}:pred"] = pred
            df[f"{prefix}:margin"] = margin
            df[f"{prefix}:norm"] = norm
            if compaction:
                worst = worst & ~broken
                df[f"{prefix}:robust"] = worst.copy()
            else:
                df[f"{prefix}:robust"] = df["clean_correct"].to_numpy() & ~broken
                worst = worst & ~broken
        df[f"worst@{eps}:robust"] = worst
    if class_names:
        df.insert(
            2,
            "label_name",
            [class_names[k] if k < len(class_names) else str(k) for k in df["label"]],
        )
    return df.sort_values("index", kind="stable").reset_index(drop=True)


def _frac(k: int, n: int) -> float:
    return float(k) / n if n else float("nan")


def summarize(
    df: pd.DataFrame,
    records: dict[str, dict[str, Any]],
    plans: Sequence[AttackPlan],
    eps_list: Sequence[tuple[str, float]],
    compaction: bool,
    num_classes: int,
    class_names: Sequence[str] = (),
) -> dict[str, Any]:
    """The numeric part of summary.json (results, worst_case, per_class, counts, cost)."""
    n = len(df)
    n_clean = int(df["clean_correct"].sum())
    results = []
    for eps_label, eps in eps_list:
        for plan in plans:
            prefix = f"{plan.id}@{eps_label}"
            attacked = int((df[f"{prefix}:pred"] != -1).sum())
            broken = int(
                ((df[f"{prefix}:pred"] != -1) & (df[f"{prefix}:pred"] != df["label"])).sum()
            )
            robust = int(df[f"{prefix}:robust"].sum())
            recs = [
                r
                for r in records.values()
                if r.get("attack") == plan.id and r.get("eps") == eps_label
            ]
            norms = df.loc[df[f"{prefix}:pred"] != -1, f"{prefix}:norm"]
            results.append(
                {
                    "attack": plan.id,
                    "eps": eps_label,
                    "eps_value": eps,
                    "robust_accuracy": _frac(robust, n),
                    "n_robust": robust,
                    "n_attacked": attacked,
                    "n_broken": broken,
                    "cumulative": compaction,
                    "loss": plan.loss,
                    "joint": plan.joint,
                    "eot": plan.eot,
                    "white_box": plan.white_box,
                    "adaptive": plan.adaptive,
                    "max_norm": float(norms.max()) if len(norms) else 0.0,
                    "ball_violations": int(sum(r.get("violations", 0) for r in recs)),
                    "forward_passes": int(sum(r["fwd"] for r in recs)),
                    "backward_passes": int(sum(r["bwd"] for r in recs)),
                }
            )
    worst = []
    for eps_label, eps in eps_list:
        k = int(df[f"worst@{eps_label}:robust"].sum())
        worst.append(
            {"eps": eps_label, "eps_value": eps, "robust_accuracy": _frac(k, n), "n_robust": k}
        )
    per_class = []
    for c in range(num_classes):
        sel = df["label"] == c
        m = int(sel.sum())
        entry = {
            "class": c,
            "name": class_names[c] if c < len(class_names) else str(c),
            "n": m,
            "clean_accuracy": _frac(int(df.loc[sel, "clean_correct"].sum()), m),
            "robust_accuracy": {
                e: _frac(int(df.loc[sel, f"worst@{e}:robust"].sum()), m) for e, _ in eps_list
            },
        }
        per_class.append(entry)
    fwd = int(sum(r["fwd"] for r in records.values()))
    bwd = int(sum(r["bwd"] for r in records.values()))
    return {
        "n_examples": n,
        "n_clean_correct": n_clean,
        "clean_accuracy": _frac(n_clean, n),
        "results": results,
        "worst_case": worst,
        "per_class": per_class,
        "cost": {
            "forward_passes": fwd,
            "backward_passes": bwd,
            "attack_time_s": float(sum(r.get("time", 0.0) for r in records.values())),
        },
    }


def format_table(summary: dict[str, Any]) -> str:
    """The table printed at the end of a run."""
    lines = [
        f"clean accuracy: {100 * summary['clean_accuracy']:.2f}%  "
        f"({summary['n_clean_correct']}/{summary['n_examples']})"
    ]
    head = "cumulative robust acc (compaction)" if summary.get("compaction") else "robust acc"
    lines.append(f"{'attack':<22}{'eps':<10}{head:>36}{'attacked':>10}{'broken':>8}")
    for r in summary["results"]:
        lines.append(
            f"{r['attack']:<22}{r['eps']:<10}{100 * r['robust_accuracy']:>35.2f}%"
            f"{r['n_attacked']:>10}{r['n_broken']:>8}"
        )
    for w in summary["worst_case"]:
        lines.append(f"{'worst case':<22}{w['eps']:<10}{100 * w['robust_accuracy']:>35.2f}%")
    for f in summary.get("flags", []):
        lines.append(f"[{f['severity']}] {f['id']}: {f['message']}")
    return "\n".join(lines)


def json_safe(obj: Any) -> Any:
    """NaN/inf -> None so summary.json is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj
