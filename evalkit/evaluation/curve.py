"""The whole robustness curve from one run: a minimum-norm attack (FMN, Pintor et al. 2021).

``evaluate(..., curve=True)`` (CLI ``--curve``) runs :func:`evalkit.attacks.fmn.fmn_min_norm`
once on every clean-correct point (no compaction: a point the fixed-eps attacks already broke
still needs its smallest breaking perturbation for the smaller eps), after the protocol's
fixed-eps attacks. Each point's smallest adversarial is scored like any candidate (Monte Carlo
for randomized models), which gives its *curve score* at every eps: the candidate's P(correct)
(capped by the clean one) once eps reaches its norm, the clean P(correct) before. Robust
accuracy at eps is the mean curve score, on a grid of :data:`GRID_POINTS` + 1 eps from 0 to the
largest budget (the budgets included), non-increasing by construction.

Every break counts: at each budget the curve attack also enters the protocol as plan
``fmn-<steps>`` whose candidate is the minimum-norm adversarial when it lies in the ball and the
clean input otherwise, so its breaks lower the worst case like any attack's. Where the curve and
the fixed-eps attacks disagree about a point at a budget, a flag says which found more:
``fixed_eps_attacks_missed_breaks`` (the fixed-eps attacks are weak there) or
``curve_above_fixed_eps`` (the minimum-norm attack is, so the curve between the budgets is an
upper bound). The attack uses the model's adaptive settings: EOT for randomized models, BPDA for
declared non-differentiable steps, gradients through CIFS masks, the joint loss (final margin
plus beta times the heads' margins) for auxiliary heads; iterates are judged on the final logits.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from evalkit.attacks.fmn import fmn_min_norm
from evalkit.defenses.context import bpda_gradients, gradients_through_masks
from evalkit.evaluation.budget import Budget
from evalkit.evaluation.protocol import AttackPlan, ModelTraits
from evalkit.evaluation.rundir import unit_key
from evalkit.evaluation.sanity import Flag, flag
from evalkit.evaluation.scoring import score
from evalkit.evaluation.units import CostCounter, build_loss
from evalkit.utils.seeding import derive_seed

CURVE_STEPS = 100  # Foolbox 3's FMN default
GRID_POINTS = 50
CURVE_KIND = "curve"


def curve_plan(steps: int, traits: ModelTraits, eot: int | None = None) -> AttackPlan:
    """The curve's attack plan: FMN-``steps`` on the CW margin, with EOT for randomized models
    (``eot`` samples, default 20) and the model's other adaptive settings (the joint loss for
    auxiliary heads: on the demo's AT+CAS model, FMN-100 left 27 of 300 points unbroken that
    the fixed-eps attacks broke without it, 7 with it)."""
    n_eot = eot if eot is not None else (20 if traits.random else 1)
    extra = f", EOT-{n_eot}" if n_eot > 1 else ""
    extra += ", BPDA" if traits.non_differentiable else ""
    extra += ", joint loss with the auxiliary heads" if traits.aux_heads else ""
    return AttackPlan(
        f"fmn-{int(steps)}",
        "fmn",
        "fmn",
        loss="cw",
        joint=traits.aux_heads,
        eot=n_eot,
        options={"steps": int(steps)},
        description=f"FMN-{int(steps)} minimum-norm (Pintor et al. 2021), once on every "
        f"clean-correct point: robust accuracy at every eps{extra}; its cost is in "
        "summary.curve.cost, its breaks count at each budget",
        through_mask=traits.mask_gradients,
        adaptive="robustness curve",
    )


def _batches(index: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [index[i : i + batch_size] for i in range(0, len(index), batch_size)]


def run_curve(
    model: nn.Module,
    fetch: Any,
    df: pd.DataFrame,
    plan: AttackPlan,
    norm: str,
    traits: ModelTraits,
    *,
    seed: int,
    draws: int,
    batch_size: int,
    device: torch.device,
    counter: CostCounter,
    records: dict[str, dict[str, Any]],
    record: Any,
) -> None:
    """FMN on every point with ``clean_p > 0`` of the examples table ``df``, in batches; each
    batch's record (kind ``curve``: min norms, the candidates' scores, its cost) is added to
    ``records`` and passed to ``record`` (resume skips batches already recorded). The model
    must be in attack mode."""
    alive = df.loc[df["clean_p"] > 0, "index"].to_numpy()
    for b, idx in enumerate(_batches(alive, batch_size)):
        key = unit_key("attack", f"{CURVE_KIND}{b}", plan.id, CURVE_KIND)
        if key in records:
            continue
        t0 = time.perf_counter()
        f0, b0 = counter.snapshot()
        x, y = (t.to(device) for t in fetch(torch.as_tensor(idx.copy(), dtype=torch.long)))
        unit_seed = derive_seed(seed, plan.id, CURVE_KIND, b)
        torch.manual_seed(unit_seed)
        with bpda_gradients(model, traits.non_differentiable):
            with gradients_through_masks(model, plan.through_mask):
                res = fmn_min_norm(
                    model,
                    x,
                    y,
                    norm=norm,
                    loss=build_loss(plan, traits.beta),
                    steps=int(plan.options.get("steps", CURVE_STEPS)),
                )
        torch.manual_seed(unit_seed + 1)
        s = score(model, res.x_adv, y, draws)
        f1, b1 = counter.snapshot()
        rec = {
            "key": key,
            "kind": CURVE_KIND,
            "attack": plan.id,
            "eps": CURVE_KIND,
            "batch": b,
            "index": [int(i) for i in idx],
            "min_norm": [float(v) if np.isfinite(v) else None for v in res.norm.cpu().tolist()],
            "pred": s.pred.cpu().tolist(),
            "margin": [None if m != m else m for m in s.margin.cpu().tolist()],
            "p": s.p_correct.cpu().tolist(),
            "nonfinite": int(s.nonfinite.sum()),
            "draws": s.draws,
            "fwd": f1 - f0,
            "bwd": b1 - b0,
            "time": time.perf_counter() - t0,
        }
        records[key] = rec
        record(rec)


def _curve_records(records: dict[str, dict[str, Any]], plan: AttackPlan) -> list[dict[str, Any]]:
    return sorted(
        (r for r in records.values() if r.get("kind") == CURVE_KIND and r["attack"] == plan.id),
        key=lambda r: r["batch"],
    )


def point_table(records: dict[str, dict[str, Any]], plan: AttackPlan) -> pd.DataFrame:
    """Per attacked point: ``index``, ``norm`` (its smallest adversarial's; inf: none found),
    ``p`` (that candidate's P(correct)), ``pred``, ``margin``."""
    rows: dict[str, list[Any]] = {"index": [], "norm": [], "p": [], "pred": [], "margin": []}
    for r in _curve_records(records, plan):
        rows["index"] += r["index"]
        rows["norm"] += [np.inf if v is None else v for v in r["min_norm"]]
        rows["p"] += r["p"]
        rows["pred"] += r["pred"]
        rows["margin"] += [np.nan if m is None else m for m in r["margin"]]
    return pd.DataFrame(rows).astype({"norm": float, "p": float, "margin": float})


def add_budget_records(
    records: dict[str, dict[str, Any]],
    df: pd.DataFrame,
    plan: AttackPlan,
    budgets: Sequence[Budget],
) -> None:
    """The curve attack as an ordinary plan at each budget (so its breaks count in the worst
    case): per point, the minimum-norm candidate where its norm is within eps, else the clean
    input (norm 0). Recomputed from the curve records, never persisted."""
    pts = point_table(records, plan)
    clean = df.set_index("index")
    for b in budgets:
        inside = (pts["norm"] <= b.value).to_numpy()
        idx = pts["index"].to_numpy()
        c = clean.loc[idx]
        clean_p = c["clean_p"].to_numpy(dtype=float)
        pred = np.where(inside, pts["pred"].to_numpy(), c["clean_pred"].to_numpy())
        margin = np.where(inside, pts["margin"].to_numpy(), c["clean_margin"].to_numpy())
        p = np.where(inside, np.minimum(pts["p"].to_numpy(), clean_p), clean_p)
        rec = {
            "key": unit_key("attack", CURVE_KIND, plan.id, b.label),
            "kind": "attack",
            "attack": plan.id,
            "eps": b.label,
            "batch": CURVE_KIND,
            "index": [int(i) for i in idx],
            "pred": pred.astype(int).tolist(),
            "margin": [None if m != m else float(m) for m in margin],
            "p": p.tolist(),
            "norm": np.where(inside, pts["norm"].to_numpy(), 0.0).tolist(),
            "violations": 0,
            "nonfinite": 0,
            "draws": 1,
            "fwd": 0,
            "bwd": 0,
            "time": 0.0,
        }
        records[rec["key"]] = rec


def curve_scores(df: pd.DataFrame, pts: pd.DataFrame, eps: float) -> np.ndarray:
    """Per row of ``df`` (sorted by index): the curve score at ``eps``."""
    clean_p = df["clean_p"].to_numpy(dtype=float)
    out = clean_p.copy()
    pos = {int(i): k for k, i in enumerate(df["index"].tolist())}
    for i, n, p in zip(pts["index"], pts["norm"], pts["p"]):
        if n <= eps:
            k = pos[int(i)]
            out[k] = min(out[k], float(p))
    return out


def summarize_curve(
    records: dict[str, dict[str, Any]],
    fixed_df: pd.DataFrame,
    plan: AttackPlan,
    budgets: Sequence[Budget],
) -> tuple[dict[str, Any], list[Flag], pd.DataFrame]:
    """(summary.json ``curve`` block, flags, per-point columns ``curve:norm``/``curve:p``).

    ``fixed_df`` is the examples table of the fixed-eps protocol alone (before the curve's
    plan joined it), so the comparison is the curve against the fixed-eps attacks."""
    pts = point_table(records, plan)
    recs = _curve_records(records, plan)
    top = max(b.value for b in budgets)
    grid = sorted({*np.linspace(0.0, top, GRID_POINTS + 1).tolist(), *(b.value for b in budgets)})
    n = len(fixed_df)
    acc = [float(curve_scores(fixed_df, pts, e).sum() / n) if n else float("nan") for e in grid]
    by_budget, flags = [], []
    for b in budgets:
        fixed = fixed_df[f"worst@{b.label}:score"].to_numpy(dtype=float)
        cur = curve_scores(fixed_df, pts, b.value)
        missed_fixed = int((cur < fixed - 1e-9).sum())
        missed_curve = int((fixed < cur - 1e-9).sum())
        row = {
            "eps": b.label,
            "eps_value": b.value,
            "curve": float(cur.sum() / n) if n else float("nan"),
            "fixed_eps_worst_case": float(fixed.sum() / n) if n else float("nan"),
            "worst_case": float(np.minimum(cur, fixed).sum() / n) if n else float("nan"),
            "points_only_curve_broke": missed_fixed,
            "points_only_fixed_eps_broke": missed_curve,
        }
        by_budget.append(row)
        if missed_fixed:
            flags.append(
                flag(
                    "fixed_eps_attacks_missed_breaks",
                    "warning",
                    f"at eps {b.label} the minimum-norm attack ({plan.id}) broke {missed_fixed} "
                    "points within the budget that every fixed-eps attack failed on (fixed-eps "
                    f"worst case {100 * row['fixed_eps_worst_case']:.1f}%, curve "
                    f"{100 * row['curve']:.1f}%): the fixed-eps attacks are weak there; these "
                    "breaks count in the worst case",
                    eps=b.label,
                    points=missed_fixed,
                )
            )
        if missed_curve:
            flags.append(
                flag(
                    "curve_above_fixed_eps",
                    "info",
                    f"at eps {b.label} the fixed-eps attacks broke {missed_curve} points the "
                    f"minimum-norm attack ({plan.id}) did not break within the budget (curve "
                    f"{100 * row['curve']:.1f}%, fixed-eps worst case "
                    f"{100 * row['fixed_eps_worst_case']:.1f}%): the curve is weak there, so "
                    "between the budgets it is an upper bound",
                    eps=b.label,
                    points=missed_curve,
                )
            )
    found = np.isfinite(pts["norm"].to_numpy()) if len(pts) else np.array([], dtype=bool)
    norms = pts["norm"].to_numpy()[found]
    block = {
        "attack": plan.id,
        "plan": plan.describe(),
        "norm": budgets[0].norm,
        "n_examples": n,
        "n_attacked": int(len(pts)),
        "n_found": int(found.sum()),
        "median_norm": float(np.median(norms)) if len(norms) else None,
        "eps": [float(e) for e in grid],
        "robust_accuracy": acc,
        "by_budget": by_budget,
        "cost": {
            "forward_passes": int(sum(r["fwd"] for r in recs)),
            "backward_passes": int(sum(r["bwd"] for r in recs)),
            "time_s": float(sum(r["time"] for r in recs)),
        },
        "meaning": "robust accuracy at eps from each point's smallest adversarial found by "
        "the minimum-norm attack (scored like any candidate); an upper bound on the true "
        "robust accuracy at every eps",
    }
    cols = fixed_df[["index"]].merge(
        pts[["index", "norm", "p"]].rename(columns={"norm": "curve:norm", "p": "curve:p"}),
        on="index",
        how="left",
    )
    return block, flags, cols
