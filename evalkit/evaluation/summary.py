"""From unit records to per-example outcomes, the summary numbers, examples.parquet and the
printed table. Pure functions of the records, so a resumed, sharded or uninterrupted run that
holds the same records produces the same summary.

Scoring (see :mod:`evalkit.evaluation.scoring`): every record carries ``p``, the probability
that the model classifies that candidate correctly (0/1 for deterministic models, a Monte-Carlo
estimate for randomized ones). A point's *robust score* at one eps is the minimum of ``p`` over
its clean input and every candidate of every attack that ran on it, sanity probes included, so
any break at any iterate of any attack counts. Robust accuracy is the mean robust score;
"all draws" counts the points whose score is 1 (correct on every draw of every candidate).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from evalkit.evaluation.budget import Budget
from evalkit.evaluation.diagnostics import format_diagnostics
from evalkit.evaluation.intervals import count_interval, interval_block, score_interval
from evalkit.evaluation.protocol import AttackPlan
from evalkit.evaluation.rundir import unit_key
from evalkit.evaluation.scoring import mc_standard_error


def robust_before(
    records: dict[str, dict[str, Any]],
    batch: int,
    plans: Sequence[AttackPlan],
    upto: int,
    eps_label: str,
    compaction: bool,
) -> dict[int, bool]:
    """Per example of ``batch``: still worth attacking before attack number ``upto``.

    A point is alive while its running robust score is above 0: clean ``p > 0`` and, with
    compaction, ``p > 0`` on every earlier attack's candidate (a randomized point that some draws
    still classify correctly keeps being attacked)."""
    clean = records[unit_key("clean", batch)]
    alive = {i: p > 0 for i, p in zip(clean["index"], clean["p"])}
    if not compaction:
        return alive
    for plan in plans[:upto]:
        rec = records[unit_key("attack", batch, plan.id, eps_label)]
        for i, p in zip(rec["index"], rec["p"]):
            if p <= 0:
                alive[i] = False
    return alive


def _by_attack(records: dict[str, dict[str, Any]]) -> dict[tuple[str, str], list[dict]]:
    out: dict[tuple[str, str], list[dict]] = {}
    for r in records.values():
        if r.get("kind") in ("attack", "probe", "diagnostic"):
            out.setdefault((r["attack"], r["eps"]), []).append(r)
    return out


def per_example_table(
    records: dict[str, dict[str, Any]],
    plans: Sequence[AttackPlan],
    budgets: Sequence[Budget],
    compaction: bool,
    class_names: Sequence[str] = (),
) -> pd.DataFrame:
    """One row per example.

    Columns: ``index``, ``label``, ``clean_pred``, ``clean_margin``, ``clean_p`` (P(correct)),
    ``clean_correct`` (p == 1); per attack and eps ``<id>@<eps>:pred`` (-1: not attacked; -2: no
    finite logits), ``:margin``, ``:norm``, ``:p`` (NaN: not attacked) and ``:score`` (the robust
    score after this attack: cumulative under compaction, else this attack alone with the clean
    input); per eps ``worst@<eps>:score``, ``worst@<eps>:robust`` (score == 1) and
    ``worst@<eps>:broken_by`` (the first candidate, ``clean`` or an attack id, at which the score
    reached its final value; empty when robust).
    """
    clean_recs = sorted(
        (r for r in records.values() if r.get("kind") == "clean"), key=lambda r: r["batch"]
    )
    cols: dict[str, list[Any]] = {
        "index": [],
        "label": [],
        "clean_pred": [],
        "clean_margin": [],
        "clean_p": [],
    }
    for rec in clean_recs:
        cols["index"] += rec["index"]
        cols["label"] += rec["label"]
        cols["clean_pred"] += rec["pred"]
        cols["clean_margin"] += [np.nan if m is None else m for m in rec["margin"]]
        cols["clean_p"] += rec["p"]
    df = pd.DataFrame(cols)
    df["clean_margin"] = df["clean_margin"].astype(float)
    df["clean_p"] = df["clean_p"].astype(float)
    df["clean_correct"] = df["clean_p"] >= 1.0
    pos = {i: k for k, i in enumerate(df["index"].tolist())}
    n = len(df)
    grouped = _by_attack(records)
    clean_p = df["clean_p"].to_numpy()
    out: dict[str, Any] = {}  # all attack columns at once (one concat, no fragmented frame)
    for b in budgets:
        running = clean_p.copy()
        broken_by = np.where(clean_p < 1.0, "clean", "").astype(object)
        for plan in plans:
            pred = np.full(n, -1, dtype=np.int64)
            margin = np.full(n, np.nan)
            norm = np.full(n, np.nan)
            p = np.full(n, np.nan)
            for rec in grouped.get((plan.id, b.label), []):
                where = [pos[i] for i in rec["index"]]
                if where:
                    pred[where] = rec["pred"]
                    margin[where] = [np.nan if m is None else m for m in rec["margin"]]
                    norm[where] = rec["norm"]
                    p[where] = rec["p"]
            attacked = ~np.isnan(p)
            lowered = attacked & (p < running)
            broken_by[lowered] = plan.id
            running = np.where(attacked, np.minimum(running, np.nan_to_num(p, nan=1.0)), running)
            prefix = f"{plan.id}@{b.label}"
            out[f"{prefix}:pred"] = pred
            out[f"{prefix}:margin"] = margin
            out[f"{prefix}:norm"] = norm
            out[f"{prefix}:p"] = p
            if compaction:
                out[f"{prefix}:score"] = running.copy()
            else:
                out[f"{prefix}:score"] = np.where(attacked, np.minimum(clean_p, p), clean_p)
        out[f"worst@{b.label}:score"] = running
        out[f"worst@{b.label}:robust"] = running >= 1.0
        out[f"worst@{b.label}:broken_by"] = np.where(running >= 1.0, "", broken_by).astype(str)
    df = pd.concat([df, pd.DataFrame(out, index=df.index)], axis=1)
    if class_names:
        df.insert(
            2,
            "label_name",
            [class_names[k] if k < len(class_names) else str(k) for k in df["label"]],
        )
    return df.sort_values("index", kind="stable").reset_index(drop=True)


def _frac(k: float, n: int) -> float:
    return float(k) / n if n else float("nan")


def _ci(scores: Any, draws: int) -> list[float]:
    """``[low, high]`` of the 95% interval of ``mean(scores)`` (:mod:`.intervals`)."""
    return score_interval(np.asarray(scores, dtype=float), draws).bounds


def _cost(recs: list[dict[str, Any]]) -> dict[str, Any]:
    """Passes the records spent, and those PGD's cycle detection did not need to
    (:func:`evalkit.attacks.pgd.cycle_savings`)."""
    return {
        "forward_passes": int(sum(r.get("fwd", 0) for r in recs)),
        "backward_passes": int(sum(r.get("bwd", 0) for r in recs)),
        "cycle_saved": int(sum(r.get("cycle_saved", 0) for r in recs)),
        "time_s": float(sum(r.get("time", 0.0) for r in recs)),
    }


def summarize(
    df: pd.DataFrame,
    records: dict[str, dict[str, Any]],
    plans: Sequence[AttackPlan],
    budgets: Sequence[Budget],
    compaction: bool,
    num_classes: int,
    class_names: Sequence[str] = (),
    draws: int = 1,
) -> dict[str, Any]:
    """The numeric part of summary.json (scoring, results, worst_case, per_class, cost)."""
    n = len(df)
    labels = df["label"].to_numpy()
    clean_p = df["clean_p"].to_numpy()
    results = []
    for b in budgets:
        for plan in plans:
            prefix = f"{plan.id}@{b.label}"
            p = df[f"{prefix}:p"].to_numpy()
            attacked = ~np.isnan(p)
            score = df[f"{prefix}:score"].to_numpy()
            recs = [
                r
                for r in records.values()
                if r.get("attack") == plan.id and r.get("eps") == b.label
            ]
            norms = df.loc[attacked, f"{prefix}:norm"]
            results.append(
                {
                    "attack": plan.id,
                    "eps": b.label,
                    "eps_value": b.value,
                    "norm": b.norm,
                    "robust_accuracy": _frac(score.sum(), n),
                    "robust_accuracy_ci": _ci(score, draws),
                    "n_robust": int((score >= 1.0).sum()),
                    "n_attacked": int(attacked.sum()),
                    "n_broken": int((attacked & (p < 1.0)).sum()),
                    "cumulative": compaction,
                    "probe": plan.probe,
                    "diagnostic": plan.diagnostic,
                    "loss": plan.loss,
                    "joint": plan.joint,
                    "eot": plan.eot,
                    "through_mask": plan.through_mask,
                    "white_box": plan.white_box,
                    "adaptive": plan.adaptive,
                    "max_norm": float(norms.max()) if len(norms) else 0.0,
                    "ball_violations": int(sum(r.get("violations", 0) for r in recs)),
                    "nonfinite_logits": int(sum(r.get("nonfinite", 0) for r in recs)),
                    "forward_passes": int(sum(r["fwd"] for r in recs)),
                    "backward_passes": int(sum(r["bwd"] for r in recs)),
                    "details": next((r["details"] for r in recs if r.get("details")), None),
                }
            )
    worst = []
    for b in budgets:
        score = df[f"worst@{b.label}:score"].to_numpy()
        by = df[f"worst@{b.label}:broken_by"]
        interval = score_interval(score, draws)
        worst.append(
            {
                "eps": b.label,
                "eps_value": b.value,
                "norm": b.norm,
                "robust_accuracy": _frac(score.sum(), n),
                "robust_accuracy_ci": interval.bounds,
                "std_error": interval.std_error,
                "n_robust": int((score >= 1.0).sum()),
                "robust_accuracy_all_draws": _frac(int((score >= 1.0).sum()), n),
                "robust_accuracy_all_draws_ci": count_interval(int((score >= 1.0).sum()), n).bounds,
                "mc_std_error": mc_standard_error(score.tolist(), draws),
                "broken_by": {k: int(v) for k, v in by[by != ""].value_counts().items()},
            }
        )
    per_class = []
    for c in range(num_classes):
        sel = labels == c
        m = int(sel.sum())
        per_class.append(
            {
                "class": c,
                "name": class_names[c] if c < len(class_names) else str(c),
                "n": m,
                "clean_accuracy": _frac(clean_p[sel].sum(), m),
                "clean_accuracy_ci": _ci(clean_p[sel], draws),
                "robust_accuracy": {
                    b.label: _frac(df.loc[sel, f"worst@{b.label}:score"].sum(), m) for b in budgets
                },
                "robust_accuracy_ci": {
                    b.label: _ci(df.loc[sel, f"worst@{b.label}:score"], draws) for b in budgets
                },
            }
        )
    all_recs = list(records.values())
    clean = _cost([r for r in all_recs if r.get("kind") == "clean"])
    protocol = _cost([r for r in all_recs if r.get("kind") == "attack"])
    probes = _cost([r for r in all_recs if r.get("kind") == "probe"])
    diagnostics = _cost(
        [r for r in all_recs if r.get("kind") in ("diagnostic", "diagnostic_heads")]
    )
    return {
        "n_examples": n,
        "n_clean_correct": int((clean_p >= 1.0).sum()),
        "clean_accuracy": _frac(clean_p.sum(), n),
        "clean_accuracy_ci": _ci(clean_p, draws),
        "clean_accuracy_all_draws": _frac(int((clean_p >= 1.0).sum()), n),
        "clean_accuracy_all_draws_ci": count_interval(int((clean_p >= 1.0).sum()), n).bounds,
        "clean_mc_std_error": mc_standard_error(clean_p.tolist(), draws),
        "nonfinite_clean_logits": int(
            sum(r.get("nonfinite", 0) for r in all_recs if r.get("kind") == "clean")
        ),
        "scoring": scoring_block(draws),
        "intervals": interval_block(draws),
        "results": results,
        "worst_case": worst,
        "per_class": per_class,
        "cost": {
            "forward_passes": clean["forward_passes"]
            + protocol["forward_passes"]
            + probes["forward_passes"]
            + diagnostics["forward_passes"],
            "backward_passes": clean["backward_passes"]
            + protocol["backward_passes"]
            + probes["backward_passes"]
            + diagnostics["backward_passes"],
            "attack_time_s": protocol["time_s"] + probes["time_s"] + diagnostics["time_s"],
            "clean": clean,
            "protocol": protocol,
            "sanity_probes": probes,
            "diagnostics": diagnostics,
        },
    }


def scoring_block(draws: int) -> dict[str, Any]:
    """What ``p`` and robust accuracy mean in this run (summary.json ``scoring``)."""
    if draws <= 1:
        return {
            "semantics": "exact",
            "draws": 1,
            "description": "deterministic model: one forward pass per candidate; a point is "
            "robust if its clean input and every candidate of every attack (best iterate, "
            "sanity probes included) are classified correctly",
        }
    return {
        "semantics": "monte-carlo",
        "draws": draws,
        "description": f"randomized model: each candidate is classified {draws} times; p = "
        "fraction of correct draws; a point's robust score is the minimum p over its clean "
        "input and every candidate of every attack; robust accuracy is the mean score; "
        "'all draws' counts points correct on every draw of every candidate",
    }


def _with_ci(value: Any, ci: Any) -> str:
    """``42.33% [36.7, 48.1]`` (or just ``42.33%`` when the run recorded no interval)."""
    text = f"{100 * value:.2f}%" if value is not None else "n/a"
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci:
        text += f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
    return text


def format_table(summary: dict[str, Any]) -> str:
    """The table printed at the end of a run: every accuracy with its 95% interval."""
    mc = summary.get("scoring", {}).get("semantics") == "monte-carlo"
    clean = "clean accuracy: " + _with_ci(
        summary["clean_accuracy"], summary.get("clean_accuracy_ci")
    )
    if mc:
        clean += (
            f" (Monte-Carlo over {summary['scoring']['draws']} draws, MC s.e. "
            f"{100 * summary['clean_mc_std_error']:.2f}; correct on all draws: "
            f"{100 * summary['clean_accuracy_all_draws']:.2f}%)"
        )
    else:
        clean += f"  ({summary['n_clean_correct']}/{summary['n_examples']})"
    lines = [clean]
    head = "cumulative robust acc (compaction)" if summary.get("compaction") else "robust acc"
    head += " [95% CI]"
    lines.append(f"{'attack':<24}{'eps':<10}{head:>46}{'attacked':>10}{'broken':>8}")
    for r in summary["results"]:
        name = r["attack"] + (" (probe)" if r.get("probe") else "")
        if r.get("diagnostic"):
            continue  # printed in their own block, with intervals
        acc = _with_ci(r["robust_accuracy"], r.get("robust_accuracy_ci"))
        lines.append(f"{name:<24}{r['eps']:<10}{acc:>46}{r['n_attacked']:>10}{r['n_broken']:>8}")
    for w in summary["worst_case"]:
        extra = f"  (all draws {100 * w['robust_accuracy_all_draws']:.2f}%)" if mc else ""
        acc = _with_ci(w["robust_accuracy"], w.get("robust_accuracy_ci"))
        lines.append(f"{'worst case':<24}{w['eps']:<10}{acc:>46}{extra}")
    lines += format_diagnostics(summary.get("diagnostics"))
    block = summary.get("intervals")
    if isinstance(block, dict):
        lines.append(
            f"[95% CI] {block.get('method')}: n = {summary['n_examples']} test points "
            "(docs/protocol.md, Intervals)"
        )
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
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    return obj
