"""SAP under EOT (Dhillon et al. 2018; Athalye et al. 2018).

Stochastic activation pruning looks robust to an attacker who takes one gradient sample per
step; averaging the attack loss over n stochastic forward passes (EOT) estimates the gradient of
the expected loss and removes most of that apparent robustness. This study measures robust
accuracy of the dense model and its SAP version under PGD with n = 1, 2, 5, 10, 20 EOT samples
per step, at several eps. A stochastic model is scored by averaging the softmax of
``eval_samples`` forward passes (the Monte-Carlo prediction of the original SAP evaluation).

The dense model is deterministic, so EOT does not change its attack: it is attacked once per
eps and that accuracy is repeated on every EOT row (``computed_once`` marks them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn as nn

from analysis.common import (
    accuracy,
    attack_loss_for,
    craft_adversarial,
    model_label,
    predict,
    progress,
    unique_labels,
)
from analysis.io import AnalysisWriter
from analysis.options import pgd_options, run_options
from evalkit.analyses import AnalysisInputs, eps_list, register_analysis
from evalkit.attacks.eot import eot_loss
from evalkit.defenses.context import is_stochastic
from evalkit.errors import EvalkitError
from evalkit.evaluation.budget import Budget
from evalkit.utils.seeding import derive_seed

DEFAULT_EOT = (1, 2, 5, 10, 20)


def _add_points(
    points: list[dict[str, Any]] | None,
    label: str,
    model: str,
    eps_label: str,
    eps: float,
    eot: int,
    hit: torch.Tensor,
) -> None:
    if points is None:
        return
    for i, ok in enumerate(hit.tolist()):
        points.append(
            {
                "checkpoint": label,
                "model": model,
                "eps_label": eps_label,
                "eps": eps,
                "eot": eot,
                "index": i,
                "correct": int(ok),
            }
        )


def sap_rows(
    label: str,
    dense: nn.Module,
    sap: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps_list: list[Budget],
    eot: list[int],
    steps: int,
    step_size: float | None,
    eval_samples: int,
    batch_size: int,
    seed: int,
    device: Any,
    show_progress: bool,
    points: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Accuracy rows for one checkpoint: (eps, EOT n, dense|sap). With ``points`` given, one
    record per (row, test point) is appended to it: ``index`` (position in ``x``) and
    ``correct`` (0/1), so judges can pair models over the same points."""
    if not is_stochastic(sap):
        raise EvalkitError(
            f"{label}: the SAP version is not stochastic (is the sap plugin available?)"
        )
    rows: list[dict[str, Any]] = []
    clean_dense = accuracy(dense, x, y, batch_size=batch_size, device=device)
    torch.manual_seed(derive_seed(seed, label, "sap-clean"))
    clean_sap = accuracy(sap, x, y, batch_size=batch_size, device=device, samples=eval_samples)
    jobs = [(b, n) for b in eps_list for n in eot]
    for budget in progress(eps_list, f"{label} dense", enabled=show_progress):
        eps_label, eps = budget.label, budget.value
        step = step_size if step_size is not None else eps / 4
        adv = craft_adversarial(
            dense,
            x,
            y,
            eps,
            steps=steps,
            step_size=step,
            batch_size=batch_size,
            seed=seed,
            tag=f"sap-dense-{label}-{eps_label}",
            device=device,
            show_progress=False,
        )
        hit = predict(dense, adv, batch_size=batch_size, device=device) == y
        acc = float(hit.float().mean()) if len(y) else float("nan")
        for n in eot:
            _add_points(points, label, "dense", eps_label, eps, n, hit)
            rows.append(
                {
                    "checkpoint": label,
                    "model": "dense",
                    "eps_label": eps_label,
                    "eps": eps,
                    "eot": n,
                    "clean_accuracy": clean_dense,
                    "robust_accuracy": acc,
                    "computed_once": True,
                }
            )
    for budget, n in progress(jobs, f"{label} SAP x EOT", enabled=show_progress):
        eps_label, eps = budget.label, budget.value
        step = step_size if step_size is not None else eps / 4
        torch.manual_seed(derive_seed(seed, label, eps_label, n))
        loss = eot_loss(attack_loss_for(sap), n)
        adv = craft_adversarial(
            sap,
            x,
            y,
            eps,
            steps=steps,
            step_size=step,
            loss=loss,
            batch_size=batch_size,
            seed=seed,
            tag=f"sap-{label}-{eps_label}-{n}",
            device=device,
            show_progress=False,
        )
        hit = predict(sap, adv, batch_size=batch_size, device=device, samples=eval_samples) == y
        acc = float(hit.float().mean()) if len(y) else float("nan")
        _add_points(points, label, "sap", eps_label, eps, n, hit)
        rows.append(
            {
                "checkpoint": label,
                "model": "sap",
                "eps_label": eps_label,
                "eps": eps,
                "eot": n,
                "clean_accuracy": clean_sap,
                "robust_accuracy": acc,
                "computed_once": False,
            }
        )
    return rows


def run_sap_eot_study(
    pairs: list[tuple[str, nn.Module, nn.Module, Any]],
    x: torch.Tensor,
    y: torch.Tensor,
    out: Any,
    *,
    eps_list: list[Budget],
    eot: list[int] | tuple[int, ...] = DEFAULT_EOT,
    steps: int = 20,
    step_size: float | None = None,
    eval_samples: int = 10,
    batch_size: int = 128,
    seed: int = 0,
    device: Any = "cpu",
    show_progress: bool = True,
    labels: list[str] | None = None,
    extra_params: dict[str, Any] | None = None,
) -> Path:
    """``pairs`` = (checkpoint path, dense model, SAP model, CheckpointMeta or None) per
    checkpoint; ``labels`` name them (default: from the paths)."""
    from analysis import plots

    writer = AnalysisWriter(out, "sap-eot")
    if labels is not None and len(labels) != len(pairs):
        raise ValueError(f"{len(labels)} labels for {len(pairs)} checkpoints")
    labels = unique_labels(labels or [model_label(p[0]) for p in pairs])
    rows: list[dict[str, Any]] = []
    points: list[dict[str, Any]] = []
    for label, (_, dense, sap, _) in zip(labels, pairs):
        rows += sap_rows(
            label,
            dense,
            sap,
            x,
            y,
            eps_list=eps_list,
            eot=list(eot),
            steps=steps,
            step_size=step_size,
            eval_samples=eval_samples,
            batch_size=batch_size,
            seed=seed,
            device=device,
            show_progress=show_progress,
            points=points,
        )
    df = pd.DataFrame(rows)
    writer.table(df, "sap_eot", "robust accuracy per checkpoint, eps, EOT samples, dense vs SAP")
    writer.table(
        pd.DataFrame(points),
        "sap_eot_points",
        "per test point (index = position in the evaluated data): correct after the attack, "
        "per checkpoint, eps, EOT samples, dense vs SAP",
    )
    scalars: dict[str, Any] = {}
    findings = []
    for label in labels:
        sub = df[df.checkpoint == label]
        writer.figure(
            plots.sap_plot(sub),
            f"sap_eot_{label}",
            f"{label}: robust accuracy vs EOT samples and vs eps, dense vs SAP",
        )
        top_eps = sub["eps"].max()
        s = sub[(sub.model == "sap") & (sub.eps == top_eps)].sort_values("eot")
        d = sub[(sub.model == "dense") & (sub.eps == top_eps)]
        scalars[label] = {
            "clean_accuracy_dense": float(sub[sub.model == "dense"]["clean_accuracy"].iloc[0]),
            "clean_accuracy_sap": float(sub[sub.model == "sap"]["clean_accuracy"].iloc[0]),
            "eps": float(top_eps),
            "robust_accuracy_dense": float(d["robust_accuracy"].iloc[0]),
            "robust_accuracy_sap_by_eot": {
                int(r.eot): float(r.robust_accuracy) for r in s.itertuples()
            },
        }
        first, last = s.iloc[0], s.iloc[-1]
        findings.append(
            f"{label} at eps {first.eps_label}: SAP robust accuracy {first.robust_accuracy:.3f} with EOT "
            f"{int(first.eot)} -> {last.robust_accuracy:.3f} with EOT {int(last.eot)}; dense "
            f"{scalars[label]['robust_accuracy_dense']:.3f}"
        )
    models = []
    for label, (path, _, _, meta) in zip(labels, pairs):
        models.append(
            {
                "label": label,
                "path": str(path),
                **({"arch": meta.arch, "defense": meta.defense} if meta is not None else {}),
            }
        )
    writer.finish(
        models=models,
        params={
            "eps": [b.value for b in eps_list],
            "eot": list(eot),
            "attack": f"PGD-{steps}",
            "step_size": step_size if step_size is not None else "eps/4",
            "eval_samples": eval_samples,
            "n_examples": int(len(x)),
            "seed": seed,
            **(extra_params or {}),
        },
        scalars=scalars,
        finding="; ".join(findings),
        notes=[
            "stochastic models are scored by the argmax of the softmax averaged over "
            "eval_samples forward passes",
            "dense rows: one attack per eps (deterministic model)",
        ],
    )
    return writer.out / "analysis.json"


@register_analysis(
    "sap-eot",
    description="accuracy dense and with SAP under PGD with 1..20 EOT samples per step, per eps",
)
def sap_eot(
    inputs: AnalysisInputs,
    *,
    eot: list[int] | tuple[int, ...] | str = DEFAULT_EOT,
    steps: int = 20,
    step_size: float | str | None = None,
    eval_samples: int = 10,
) -> Path:
    """Each checkpoint dense and with SAP added at load, under PGD-``steps`` (step eps/4 by
    default) with each EOT count, at each eps (default ``2/255,4/255,8/255``). Needs checkpoint
    paths (the SAP version is loaded from them). Returns the ``analysis.json`` path."""
    if isinstance(eot, str):
        try:
            eot = [int(t) for t in eot.split(",") if t.strip()]
        except ValueError:
            raise EvalkitError(
                f"eot {eot!r} must be comma-separated integers, e.g. 1,2,5"
            ) from None
    eots = [int(e) for e in eot]
    if not eots or min(eots) < 1:
        raise EvalkitError("eot needs positive integers, e.g. 1,2,5,10,20")
    attack = pgd_options(steps, step_size, None)
    if eval_samples < 1:
        raise EvalkitError(f"eval_samples must be positive (got {eval_samples})")
    if inputs.model_source.defense:
        raise EvalkitError("sap-eot loads each checkpoint dense and with SAP itself; drop defense")
    pairs = []
    for i, entry in enumerate(inputs.models):
        sap = inputs.reload(i, defense="sap")
        pairs.append((inputs.sources[i], entry.model, sap, entry.meta))
    return run_sap_eot_study(
        pairs,
        inputs.x,
        inputs.y,
        inputs.out,
        eps_list=eps_list(inputs.eps, "2/255,4/255,8/255"),
        eot=eots,
        **attack,
        eval_samples=eval_samples,
        labels=[e.label for e in inputs.models],
        **run_options(inputs),
    )
