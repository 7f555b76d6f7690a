"""Gradient-masking diagnostics for plug-in defenses (CAS, CIFS, HE): plain vs adaptive.

A worst case over a protocol with adaptive attacks is honest, but it does not say *why* a
defense holds or falls. Under compaction each attack only sees the points the earlier ones left,
so a defense whose robustness exists only against plain attacks looks, in the waterfall, like
any other. This module runs the mechanism's test beside the protocol, on the same points and
without compaction:

* **plain vs adaptive**: the protocol's PGD (first CE PGD entry, else PGD-20 step eps/4 with
  random start) once plain and once per adaptive variant the model's own traits call for
  (joint loss with the auxiliary heads; gradients through the CIFS mask; the DLR loss for
  bounded logits; BPDA through declared non-differentiable steps), each on every clean-correct
  point among the first :data:`DIAG_N`. The paired
  gap (plain robust accuracy minus the adaptive one, Newcombe 95% interval) is the
  ``gradient_masking_suspected`` flag when it exceeds :data:`MASKING_GAP` and its interval
  excludes 0 (Athalye et al., ICML 2018: robustness that only plain gradients see is masking).
* **heads vs output** (CAS/CIFS): each head's clean accuracy and its agreement with the final
  prediction; for each attack, how often it changed the head's discrete mask selection (the
  argmax row of CAS, the top-2 pair of CIFS), which plain gradients cannot see.

Every candidate these attacks produce is an attack that ran: their records (kind
``diagnostic``) join the worst case like the Square probe's. Records carry what the summary
needs, so a resumed run gives the same diagnostics.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from evalkit.defenses.inspect import readouts, selection_changed
from evalkit.evaluation.budget import Budget
from evalkit.evaluation.intervals import clopper_pearson, paired_difference
from evalkit.evaluation.protocol import AttackPlan, ModelTraits, bpda_plan, default_pgd
from evalkit.evaluation.rundir import unit_key
from evalkit.evaluation.units import CostCounter, attack_unit
from evalkit.utils.seeding import derive_seed

DIAG_N = 500  # at most this many points per eps (the first ones evaluated)
MASKING_GAP = 0.02  # plain minus adaptive robust accuracy above this (and significant): flag
DIAG_BATCH = "diag"


def wanted(traits: ModelTraits) -> bool:
    """Whether the model's *own* traits call for diagnostics (a plug-in defense that an
    adaptive attack treats differently from a plain one)."""
    return (
        traits.aux_heads
        or traits.mask_gradients
        or traits.bounded_logits
        or traits.non_differentiable
    )


def diagnostic_plans(plans: list[AttackPlan], traits: ModelTraits) -> list[AttackPlan]:
    """Plain PGD and its adaptive variants for ``traits`` (empty when nothing is adaptive)."""
    if not wanted(traits):
        return []
    base = next(
        (
            p
            for p in plans
            if p.attack == "pgd" and p.loss == "ce" and not p.joint and not p.through_mask
        ),
        default_pgd(),
    )
    base = replace(base, adaptive=None, probe=False, diagnostic=True, joint=False)
    name = base.id.split("#")[0]
    out = [replace(base, id=f"diag:{name}", description=f"{base.description} (plain)")]
    if traits.aux_heads:
        out.append(
            replace(
                base,
                id=f"diag:{name}-joint",
                joint=True,
                adaptive=f"aux heads: joint loss beta={traits.beta:g}",
                description=f"{base.description} + beta*aux-head loss",
            )
        )
    if traits.mask_gradients:
        out.append(
            replace(
                base,
                id=f"diag:{name}-mask",
                joint=traits.aux_heads,
                through_mask=True,
                adaptive="CIFS: gradients through the mask",
                description=f"{base.description} through the CIFS mask",
            )
        )
    if traits.bounded_logits:
        loss = "dlr" if traits.num_classes >= 3 else "cw"
        out.append(
            replace(
                base,
                id=f"diag:{name}-{loss}",
                loss=loss,
                joint=traits.aux_heads,
                adaptive=f"bounded logits: {loss.upper()} loss",
                description=f"{base.description} on the {loss.upper()} loss",
            )
        )
    if traits.non_differentiable:  # declared steps: their BPDA backward (Athalye et al. 2018)
        copy = bpda_plan(replace(base, joint=traits.aux_heads))
        out.append(replace(copy, id=f"diag:{name}-bpda", diagnostic=True))
    return out


def _head_fields(model: nn.Module, clean: list[Any]) -> dict[str, Any]:
    """Whether the latest forward's heads chose another mask than on the clean pass."""
    adv = readouts(model)
    if not adv or len(adv) != len(clean):
        return {}
    return {
        "flipped": [
            selection_changed(c.selection, a.selection).cpu().tolist() for c, a in zip(clean, adv)
        ],
    }


def run_diagnostics(
    model: nn.Module,
    fetch: Any,
    df: pd.DataFrame,
    plans: list[AttackPlan],
    budgets: list[Budget],
    traits: ModelTraits,
    *,
    seed: int,
    draws: int,
    batch_size: int,
    device: torch.device,
    counter: CostCounter,
    records: dict[str, dict[str, Any]],
    record: Any,
) -> list[AttackPlan]:
    """Run the diagnostic plans (model in attack mode) and add their records; returns them.

    ``df`` is the protocol's per-example table (clean outcomes); ``fetch(index) -> (x, y)``.
    One record per population batch holds the heads' clean predictions (kind
    ``diagnostic_heads``); one per attack, eps and batch of clean-correct points the attack's
    candidates and the heads' decisions on them (kind ``diagnostic``)."""
    diag = diagnostic_plans(plans, traits)
    if not diag:
        return []
    first = df.sort_values("index").head(DIAG_N)
    population = first["index"].to_numpy()
    alive = set(first.loc[first["clean_p"] > 0, "index"].tolist())
    for start in range(0, len(population), batch_size):
        chunk = population[start : start + batch_size]
        key = f"heads|clean|{DIAG_BATCH}{start}"
        if key not in records:
            x, _ = fetch(torch.as_tensor(chunk.copy(), dtype=torch.long))
            with torch.no_grad():
                model(x.to(device))
            rec = {
                "key": key,
                "kind": "diagnostic_heads",
                "index": chunk.tolist(),
                "head_pred": [r.logits.argmax(1).cpu().tolist() for r in readouts(model)],
                "fwd": len(chunk),
                "bwd": 0,
            }
            records[key] = rec
            record(rec)
        idx = torch.as_tensor([i for i in chunk.tolist() if i in alive], dtype=torch.long)
        if not len(idx):
            continue
        x, y = (t.to(device) for t in fetch(idx))
        clean_reads: list[Any] | None = None
        for bud in budgets:
            for plan in diag:
                key = unit_key("attack", f"{DIAG_BATCH}{start}", plan.id, bud.label)
                if key in records:
                    continue
                if clean_reads is None:
                    with torch.no_grad():
                        model(x)
                    clean_reads = readouts(model)
                rec = attack_unit(
                    model,
                    x,
                    y,
                    idx,
                    plan,
                    bud,
                    f"{DIAG_BATCH}{start}",
                    derive_seed(seed, "diagnostic", plan.id, bud.label, start),
                    counter,
                    beta=traits.beta,
                    draws=draws,
                    num_classes=traits.num_classes,
                    observe=lambda reads=clean_reads: _head_fields(model, reads),
                )
                records[key] = rec
                record(rec)
    return diag


def _by_point(recs: list[dict[str, Any]], field: str) -> dict[int, Any]:
    out: dict[int, Any] = {}
    for r in recs:
        for k, i in enumerate(r["index"]):
            out[i] = [h[k] for h in r[field]] if field != "p" else r[field][k]
    return out


def _interval(k: float, n: int) -> dict[str, Any]:
    """A count's share with its exact (Clopper-Pearson) interval, as the rest of the summary."""
    if n <= 0:
        return {"value": None, "low": None, "high": None, "n": 0}
    low, high = clopper_pearson(k, n)
    return {"value": k / n if n else None, "low": low, "high": high, "n": n}


def summarize_diagnostics(
    df: pd.DataFrame,
    records: dict[str, dict[str, Any]],
    diag: list[AttackPlan],
    budgets: list[Budget],
) -> dict[str, Any] | None:
    """The ``diagnostics`` block of summary.json (None when none ran); pure in the records.

    Per eps: the population (clean-correct among the first :data:`DIAG_N`), each attack's
    independent robust accuracy with its Wilson interval, each adaptive variant's paired gap
    to the plain attack (and the adaptive worst), the masking verdict, and per head its clean
    accuracy, agreement with the output and each attack's selection-flip rate."""
    if not diag:
        return None
    first = df.sort_values("index").head(DIAG_N)
    population = len(first)
    label = dict(zip(first["index"], first["label"]))
    final_clean = dict(zip(first["index"], first["clean_pred"]))
    correct = {i for i, p in zip(first["index"], first["clean_p"]) if p >= 1.0}
    plain, adaptive = diag[0], diag[1:]
    out_eps = []
    for bud in budgets:
        recs = {
            p.id: [
                r
                for r in records.values()
                if r.get("kind") == "diagnostic" and r["attack"] == p.id and r["eps"] == bud.label
            ]
            for p in diag
        }
        scores = {pid: _by_point(rs, "p") for pid, rs in recs.items()}
        order = list(first["index"])

        def ok(pid: str, i: int, scores: dict[str, dict[int, Any]] = scores) -> bool:
            return i in correct and scores[pid].get(i, 0.0) >= 1.0

        attacks = {
            p.id: {
                "description": p.description,
                "adaptive": p.adaptive,
                "robust_accuracy": _interval(sum(ok(p.id, i) for i in order), population),
            }
            for p in diag
        }
        plain_ok = [ok(plain.id, i) for i in order]
        gaps = {}
        for p in adaptive:
            d, low, high = paired_difference(plain_ok, [ok(p.id, i) for i in order])
            gaps[p.id] = {"gap": d, "low": low, "high": high}
        worst_ok = [all(ok(p.id, i) for p in adaptive) for i in order]
        d, low, high = paired_difference(plain_ok, worst_ok)
        suspected = bool(d > MASKING_GAP and low > 0)
        heads = _heads_block(records, recs, order, label, final_clean, diag)
        out_eps.append(
            {
                "eps": bud.label,
                "attacks": attacks,
                "gaps": gaps,
                "gap_worst": {"gap": d, "low": low, "high": high},
                "gradient_masking_suspected": suspected,
                "heads": heads,
            }
        )
    return {
        "population": population,
        "n_clean_correct": len(correct),
        "plain": plain.id,
        "adaptive": [p.id for p in adaptive],
        "threshold": MASKING_GAP,
        "rule": (
            f"gradient masking is suspected when plain {plain.description} leaves more points "
            f"robust than its adaptive versions by more than {100 * MASKING_GAP:g} points and the "
            "paired 95% interval (Newcombe) excludes 0; every attack runs independently on the "
            f"same points (the first {DIAG_N} evaluated), and its breaks count in the worst case"
        ),
        "per_eps": out_eps,
    }


def _heads_block(
    records: dict[str, dict[str, Any]],
    recs: dict[str, list[dict[str, Any]]],
    order: list[int],
    label: dict[int, int],
    final_clean: dict[int, int],
    diag: list[AttackPlan],
) -> list[dict[str, Any]]:
    """Per head: clean accuracy and agreement with the output over the whole population, and
    each attack's selection-flip rate over the points it attacked."""
    clean_recs = [r for r in records.values() if r.get("kind") == "diagnostic_heads"]
    clean_pred = _by_point(clean_recs, "head_pred")
    points = [i for i in order if i in clean_pred]
    if not points or not clean_pred[points[0]]:
        return []
    heads = []
    for h in range(len(clean_pred[points[0]])):
        pred = np.array([clean_pred[i][h] for i in points])
        lab = np.array([label[i] for i in points])
        fin = np.array([final_clean[i] for i in points])
        flips = {}
        for p in diag:
            flipped = _by_point(recs[p.id], "flipped")
            got = [bool(flipped[i][h]) for i in points if i in flipped]
            flips[p.id] = _interval(sum(got), len(got))
        heads.append(
            {
                "head": h,
                "clean_accuracy": _interval(int((pred == lab).sum()), len(points)),
                "output_clean_accuracy": _interval(int((fin == lab).sum()), len(points)),
                "agreement_with_output": _interval(int((pred == fin).sum()), len(points)),
                "selection_flip": flips,
            }
        )
    return heads


def masking_flags(block: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The ``gradient_masking_suspected`` flag(s) of a diagnostics block."""
    if not block:
        return []
    flags = []
    for e in block["per_eps"]:
        if not e["gradient_masking_suspected"]:
            continue
        g = e["gap_worst"]
        plain = e["attacks"][block["plain"]]["robust_accuracy"]["value"]
        flags.append(
            {
                "id": "gradient_masking_suspected",
                "severity": "warning",
                "message": (
                    f"at eps {e['eps']} plain {block['plain'].removeprefix('diag:')} leaves "
                    f"{100 * plain:.1f}% robust but its adaptive versions only "
                    f"{100 * (plain - g['gap']):.1f}% (gap {100 * g['gap']:+.1f} points, 95% "
                    f"[{100 * g['low']:+.1f}, {100 * g['high']:+.1f}], threshold "
                    f"{100 * block['threshold']:g}): the defense hides its gradient from plain "
                    "attacks; trust only adaptive numbers (the worst case includes them)"
                ),
                "eps": e["eps"],
                "gap": g["gap"],
            }
        )
    return flags


def _pct(iv: dict[str, Any]) -> str:
    if iv.get("value") is None:
        return "n/a"
    return f"{100 * iv['value']:.1f}% [{100 * iv['low']:.1f}, {100 * iv['high']:.1f}]"


def format_diagnostics(block: dict[str, Any] | None) -> list[str]:
    """Lines for the printed table: each attack independently, the gap, the heads."""
    if not block:
        return []
    lines = [
        f"masking diagnostics (independent attacks on the same {block['population']} points, "
        "95% intervals):"
    ]
    for e in block["per_eps"]:
        for pid, a in e["attacks"].items():
            tag = f"  [{a['adaptive']}]" if a["adaptive"] else "  [plain]"
            lines.append(
                f"  {pid.removeprefix('diag:'):<22}{e['eps']:<10}{_pct(a['robust_accuracy'])}{tag}"
            )
        g = e["gap_worst"]
        verdict = "gradient masking suspected" if e["gradient_masking_suspected"] else "no masking"
        lines.append(
            f"  plain - adaptive gap {100 * g['gap']:+.1f} points [{100 * g['low']:+.1f}, "
            f"{100 * g['high']:+.1f}] (threshold {100 * block['threshold']:g}): {verdict}"
        )
        for h in e["heads"]:
            flips = ", ".join(
                f"{pid.removeprefix('diag:')} {_pct(iv)}" for pid, iv in h["selection_flip"].items()
            )
            lines.append(
                f"  head {h['head']}: clean {_pct(h['clean_accuracy'])} vs output "
                f"{_pct(h['output_clean_accuracy'])}; agrees with output "
                f"{_pct(h['agreement_with_output'])}; selection flipped by {flips}"
            )
    return lines
