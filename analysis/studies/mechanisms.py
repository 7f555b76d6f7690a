"""Which mechanism stands behind a verdict: training health and masking diagnostics, per model
and pooled over the training seeds.

A verdict says *whether* a plug-in beats its base; this module says *why* it can be trusted or
what broke, from what each run measured about itself:

* the checkpoint's training health (:mod:`evalkit.training.health`): did the plug-in train, or
  did a head become the classifier, the output collapse, a mask select nothing;
* the evaluation's masking diagnostics (:mod:`evalkit.evaluation.diagnostics`): plain vs
  adaptive PGD run independently on the same points (``examples.parquet`` columns
  ``diag:<id>@<eps>:p``), the heads' agreement with the output and the selection-flip rates.

The gap between plain and adaptive robust accuracy is pooled over seeds with the study
statistics (:func:`analysis.studies.values.compare`: paired bootstrap over points, combined
over seeds), so the mechanism's numbers carry intervals like the verdicts they explain.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analysis.studies.rundirs import load_run_points
from analysis.studies.spec import StudyContext
from analysis.studies.stats import Interval
from analysis.studies.values import Points, compare
from evalkit.evaluation.diagnostics import MASKING_GAP


@dataclass
class Mechanism:
    """What one model's runs (one per seed) measured about its own defense."""

    key: str
    health: list[str] = field(default_factory=list)  # status per seed ("ok", "failed", ...)
    reasons: list[str] = field(default_factory=list)  # distinct reasons, first seen first
    plain: Interval | None = None  # robust accuracy under the plain diagnostic attack
    adaptive: Interval | None = None  # ... under the strongest adaptive variant, per point
    gap: Interval | None = None  # plain minus adaptive, paired, pooled over seeds
    plain_id: str = ""
    adaptive_ids: list[str] = field(default_factory=list)
    heads: list[dict[str, float]] = field(default_factory=list)  # per head, seed means
    suspected: int = 0  # seeds whose run raised gradient_masking_suspected

    def numbers(self) -> dict[str, Any]:
        """Plain-JSON view for ``findings.json`` (``numbers["mechanism"]``)."""
        out: dict[str, Any] = {"health": self.health, "masking_suspected_seeds": self.suspected}
        for name in ("plain", "adaptive", "gap"):
            iv = getattr(self, name)
            if iv is not None:
                out[name] = iv.to_dict()
        if self.heads:
            out["heads"] = self.heads
        return out


def _summary(run_dir: Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / "summary.json").read_text())


def _diag_points(run_dir: Path, summary: dict[str, Any]) -> dict[str, np.ndarray] | None:
    """Per diagnostic attack, 0/1 'robust under it alone' on the diagnostics' population."""
    block = summary.get("diagnostics")
    path = Path(run_dir) / "examples.parquet"
    if not block or not path.exists():
        return None
    import pandas as pd

    eps = block["per_eps"][0]["eps"]
    df = pd.read_parquet(path).sort_values("index").head(int(block["population"]))
    clean = df["clean_p"].to_numpy(dtype=float) >= 1.0
    out = {"index": df["index"].to_numpy()}
    for pid in [block["plain"], *block["adaptive"]]:
        col = f"{pid}@{eps}:p"
        if col not in df.columns:
            return None
        p = df[col].to_numpy(dtype=float)
        out[pid] = (clean & (np.nan_to_num(p, nan=0.0) >= 1.0)).astype(float)
    return out


def load_mechanism(ctx: StudyContext, key: str) -> Mechanism | None:
    """The mechanism numbers of model ``key`` over the study's seeds (None when not evaluated)."""
    dirs = [Path(d) for d in ctx.run_dirs(key)]
    if not dirs or not all((d / "summary.json").exists() for d in dirs):
        return None
    summaries = [_summary(d) for d in dirs]
    m = Mechanism(key)
    for s in summaries:
        health = (s.get("model") or {}).get("health") or {}
        m.health.append(str(health.get("status", "not measured")))
        for r in health.get("reasons") or []:
            if r not in m.reasons:
                m.reasons.append(r)
        m.suspected += any(f.get("id") == "gradient_masking_suspected" for f in s.get("flags", []))
    points = [_diag_points(d, s) for d, s in zip(dirs, summaries)]
    if all(p is not None for p in points) and all(
        np.array_equal(p["index"], points[0]["index"])  # type: ignore[index]
        for p in points
    ):
        block = summaries[0]["diagnostics"]
        m.plain_id, m.adaptive_ids = block["plain"], list(block["adaptive"])
        idx = points[0]["index"]  # type: ignore[index]
        plain = Points(np.stack([p[m.plain_id] for p in points]), idx)  # type: ignore[index]
        adaptive = Points(
            np.stack([np.min([p[a] for a in m.adaptive_ids], axis=0) for p in points]),  # type: ignore[index]
            idx,
        )
        m.plain, m.adaptive = plain.interval(), adaptive.interval()
        m.gap = compare(plain, adaptive, seed=ctx.seed)
        m.heads = _heads(summaries)
    return m


def _heads(summaries: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Per head, the seed means of its clean accuracy, the output's, their agreement and the
    plain and adaptive selection-flip rates (at the first eps)."""
    per_seed = [s["diagnostics"]["per_eps"][0]["heads"] for s in summaries]
    if not per_seed or not per_seed[0]:
        return []
    block = summaries[0]["diagnostics"]
    out = []
    for h in range(len(per_seed[0])):

        def mean(get: Any, h: int = h) -> float:
            vals = [get(seed[h]) for seed in per_seed if len(seed) > h]
            vals = [v for v in vals if v is not None]
            return float(np.mean(vals)) if vals else float("nan")

        out.append(
            {
                "head_clean": mean(lambda x: x["clean_accuracy"]["value"]),
                "output_clean": mean(lambda x: x["output_clean_accuracy"]["value"]),
                "agreement": mean(lambda x: x["agreement_with_output"]["value"]),
                "flip_plain": mean(lambda x: x["selection_flip"][block["plain"]]["value"]),
                "flip_adaptive": mean(
                    lambda x: max(
                        (x["selection_flip"][a]["value"] or 0.0) for a in block["adaptive"]
                    )
                ),
            }
        )
    return out


def checkpoint_health(ctx: StudyContext, key: str) -> list[dict[str, Any]]:
    """Training health and last validation numbers of model ``key``'s checkpoints, per seed
    (for models a study trains but does not evaluate, e.g. an ablation)."""
    from evalkit.checkpoint import read_checkpoint_file, read_meta

    out = []
    for seed in ctx.seeds:
        path = ctx.ckpt(key, seed)
        if not path.exists():
            continue
        meta = read_meta(read_checkpoint_file(path), path)
        last = meta.history[-1] if meta.history else {}
        heads = [last.get(f"head{i}_clean_acc") for i in range(8) if f"head{i}_clean_acc" in last]
        out.append(
            {
                "seed": seed,
                "status": (meta.health or {}).get("status", "not measured"),
                "reasons": list((meta.health or {}).get("reasons") or []),
                "val_clean_acc": last.get("val_clean_acc"),
                "head_clean_acc": max((h for h in heads if h is not None), default=None),
                "val_logit_std": last.get("val_logit_std"),
            }
        )
    return out


def _pct(iv: Interval | None) -> str:
    if iv is None or not iv.finite:
        return "n/a"
    return f"{100 * iv.estimate:.1f}% [{100 * iv.lo:.1f}, {100 * iv.hi:.1f}]"


def _points(iv: Interval) -> str:
    return f"{100 * iv.estimate:+.1f} points [{100 * iv.lo:+.1f}, {100 * iv.hi:+.1f}]"


def _health_text(m: Mechanism) -> str:
    counts = {s: m.health.count(s) for s in dict.fromkeys(m.health)}
    text = ", ".join(f"{s} in {k}/{len(m.health)} seeds" for s, k in counts.items())
    if any(s == "failed" for s in m.health) and m.reasons:
        text += f" ({m.reasons[0]})"
    return f"training health {text}"


def describe(m: Mechanism, *, label: str) -> str:
    """One paragraph: did the defense train, does it hide its gradient, do its heads decide."""
    parts = [f"{label}: {_health_text(m)}"]
    if m.gap is not None:
        adaptive = ", ".join(a.removeprefix("diag:") for a in m.adaptive_ids)
        if m.gap.lo > 0 and m.gap.estimate > MASKING_GAP:
            verdict = (
                " - the defense hides its gradient from plain attacks, so only the adaptive "
                "worst case (which includes these attacks) is a measure of it"
            )
        elif m.gap.lo > 0:
            verdict = (
                f" - plain attacks overstate it slightly (below the {100 * MASKING_GAP:g}-point "
                "masking threshold)"
            )
        else:
            verdict = " - no sign that it hides its gradient"
        parts.append(
            f"plain {m.plain_id.removeprefix('diag:')} leaves {_pct(m.plain)} robust, its adaptive "
            f"versions ({adaptive}) {_pct(m.adaptive)}: gap {_points(m.gap)}{verdict} "
            f"(gradient_masking_suspected in {m.suspected}/{len(m.health)} seeds)"
        )
    for i, h in enumerate(m.heads):
        parts.append(
            f"head {i}: clean {100 * h['head_clean']:.1f}% vs output {100 * h['output_clean']:.1f}%, "
            f"agrees with the output on {100 * h['agreement']:.1f}%; attacks change its mask "
            f"selection on {100 * h['flip_plain']:.1f}% (plain) vs {100 * h['flip_adaptive']:.1f}% "
            "(adaptive) of points"
        )
    return "; ".join(parts)


def describe_checkpoints(rows: list[dict[str, Any]], *, label: str) -> str:
    """One paragraph on models known only by their checkpoints (training health, validation)."""
    if not rows:
        return f"{label}: not trained"
    status = [r["status"] for r in rows]
    acc = [r["val_clean_acc"] for r in rows if r["val_clean_acc"] is not None]
    head = [r["head_clean_acc"] for r in rows if r["head_clean_acc"] is not None]
    text = f"{label}: training health " + ", ".join(
        f"{s} in {status.count(s)}/{len(status)} seeds" for s in dict.fromkeys(status)
    )
    if acc:
        text += f"; validation clean accuracy {100 * float(np.mean(acc)):.1f}% (mean of seeds)"
    if head:
        text += f" against {100 * float(np.mean(head)):.1f}% for its best head"
    failed = next((r["reasons"][0] for r in rows if r["status"] == "failed" and r["reasons"]), "")
    return text + (f" ({failed})" if failed else "")


# ----------------------------------------------------------------- per study: the hooks

PLUGIN_LABELS = {"at_cas": "AT+CAS", "at_cifs": "AT+CIFS", "at_he": "AT+HE"}


def _clean_gap(ctx: StudyContext, key: str, base: str = "at") -> str:
    """Clean accuracy of ``key`` minus ``base``, paired over points and pooled over seeds."""
    try:
        a = load_run_points(ctx.run_dirs(key))
        b = load_run_points(ctx.run_dirs(base))
    except (OSError, ValueError, KeyError):
        return ""
    gap = compare(a.clean, b.clean, seed=ctx.seed)
    return f"clean accuracy {PLUGIN_LABELS.get(key, key)} minus {base.upper()} {_points(gap)}"


def cas_cifs(findings: list[Any], ctx: StudyContext) -> list[Any]:
    """CAS: does its mask train and does the verdict survive the adaptive attacks; CIFS: the
    same, plus whether its natural warm start converged and what the paper's sum-1 masks do."""
    for f in findings:
        key = "at_cas" if f.claim.startswith("CAS") else "at_cifs"
        m = load_mechanism(ctx, key)
        if m is None:
            continue
        parts = [describe(m, label=PLUGIN_LABELS[key]), _clean_gap(ctx, key)]
        if key == "at_cifs":
            parts.append(
                describe_checkpoints(
                    checkpoint_health(ctx, "cifs_nat"), label="its natural CIFS warm start"
                )
            )
            paper = checkpoint_health(ctx, "cifs_nat_paper")
            if paper:
                parts.append(
                    describe_checkpoints(
                        paper, label="natural CIFS with the paper's sum-1 masks (ablation)"
                    )
                )
        f.mechanism = "; ".join(p for p in parts if p)
        f.numbers["mechanism"] = m.numbers()
    return findings


def he(findings: list[Any], ctx: StudyContext) -> list[Any]:
    """HE: the CE vs DLR diagnostics say how much CE-only PGD overstates it."""
    m = load_mechanism(ctx, "at_he")
    if m is not None:
        text = describe(m, label="AT+HE")
        for f in findings:
            f.mechanism = text
            f.numbers["mechanism"] = m.numbers()
    return findings


def channels(findings: list[Any], ctx: StudyContext) -> list[Any]:
    """The CAS claim of the channel study rests on a CAS model that trained as intended."""
    m = load_mechanism(ctx, "at_cas")
    for f in findings:
        if "CAS" in f.claim and m is not None:
            f.mechanism = describe(m, label="AT+CAS")
    return findings


def pooling(
    findings: list[Any],
    rows: dict[str, list[dict[str, Any]]],
    models: dict[str, Any] | None = None,
    seed: int = 0,
) -> list[Any]:
    """RCM: map size alone, or map size and receptive field together? ``rows``: per model label,
    the pooling analysis' scalars per seed (``map_hw``, ``receptive_field``, ``input_size``,
    ``clean_accuracy``); ``models``: the judge's per-model points, for the equal-receptive-field
    contrast (largest minus smallest map among the average-pooled models whose receptive field
    equals the smallest map's)."""
    parts = []
    for label, per_seed in sorted(rows.items(), key=lambda kv: (kv[0].split("-")[0], kv[0])):
        r = per_seed[0]
        if "receptive_field" not in r:
            return findings
        clean = float(np.mean([s["clean_accuracy"] for s in per_seed]))
        parts.append(
            f"{label}: {r['map_hw']} map, receptive field {r['receptive_field']} of "
            f"{r['input_size']} px, clean {100 * clean:.1f}%"
        )
    rfs = {rs[0]["receptive_field"] for rs in rows.values()}
    note = (
        "the models differ in receptive field as well as map size (in-model upsampling makes the "
        "map larger but each unit sees a smaller part of the image), so the largest-minus-"
        "smallest contrast mixes both"
        if len(rfs) > 1
        else "every model has the same receptive field, so only the map size differs"
    )
    text = "; ".join(parts) + f"; {note}"
    avg = {k: v for k, v in rows.items() if v[0].get("pool") == "avg"}
    if models and len(rfs) > 1 and avg:
        small = min(avg, key=lambda k: avg[k][0]["map_size"])
        same = [k for k in avg if avg[k][0]["receptive_field"] == avg[small][0]["receptive_field"]]
        large = max(same, key=lambda k: avg[k][0]["map_size"])
        if large != small and large in models and small in models:
            gap = compare(models[large].robust, models[small].robust, seed=seed)
            text += (
                f"; at equal receptive field ({avg[small][0]['receptive_field']} px) the larger "
                f"average-pooled map ({large}) minus the smaller ({small}): {_points(gap)}"
            )
    for f in findings:
        f.mechanism = text
    return findings


def sap(findings: list[Any]) -> list[Any]:
    """SAP: how much of its robustness is gradient noise, by EOT sample count."""
    for f in findings:
        eots = sorted(
            int(k.removeprefix("sap_robust_eot"))
            for k in f.numbers
            if k.startswith("sap_robust_eot") and k.removeprefix("sap_robust_eot").isdigit()
        )
        if not eots or "dense_robust" not in f.numbers:
            continue
        sweep = ", ".join(f"EOT-{k} {f.numbers[f'sap_robust_eot{k}']}" for k in eots)
        f.mechanism = (
            "stochastic gradients (Athalye et al. 2018): SAP's robust accuracy by the number of "
            f"samples averaged per gradient step: {sweep}; the dense model "
            f"{f.numbers['dense_robust']}. What EOT removes is robustness that came from the "
            "attack following one random draw's gradient; what remains above the dense model is "
            "the pruning's effect on the averaged model"
        )
    return findings
