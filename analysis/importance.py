"""CIFS channel importance on natural vs adversarial inputs (Yan et al. 2021).

Each CIFS module computes a mask ``m = softmax_c(relevance)`` over channels (sums to the mask
scale, 1 by default) and stores it as ``last_mask`` (N, C) on every forward. This study records
those masks for natural test images and their PGD versions (adaptive joint loss) and compares
their distributions: how concentrated the importance is (normalised entropy, top-10% mass) and
how far the adversarial masks move from the natural ones (mean L1 distance per image).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from analysis.common import (
    PAPER_STEP_SIZE,
    PAPER_STEPS,
    ModelEntry,
    accuracy,
    batches,
    craft_adversarial,
    eval_mode,
    progress,
)
from analysis.io import AnalysisWriter
from analysis.naming import file_slug
from analysis.options import pgd_options, run_options
from evalkit.analyses import AnalysisInputs, register_analysis, single_eps
from evalkit.errors import EvalkitError


def mask_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Modules that publish a channel mask as ``last_mask`` (CIFS blocks), by dotted name."""
    return {name: m for name, m in model.named_modules() if hasattr(m, "last_mask")}


@torch.no_grad()
def collect_masks(
    model: nn.Module, x: torch.Tensor, *, batch_size: int = 128, device: Any = "cpu"
) -> dict[str, torch.Tensor]:
    """``{module name: (N, C) masks}`` for images ``x`` (eval mode: top-2 predicted classes)."""
    mods = mask_modules(model)
    if not mods:
        raise EvalkitError(
            "the importance study needs a CIFS checkpoint (train with --defense at+cifs)"
        )
    store: dict[str, list[torch.Tensor]] = {n: [] for n in mods}
    with eval_mode(model):
        for sl in batches(len(x), batch_size):
            model(x[sl].to(device))
            for n, m in mods.items():
                store[n].append(m.last_mask.detach().float().cpu())
    return {n: torch.cat(v) for n, v in store.items()}


def concentration(masks: torch.Tensor) -> dict[str, float]:
    """How peaked the masks are: normalised entropy per image (1 = uniform), top-10% mass, max."""
    p = masks / masks.sum(1, keepdim=True).clamp_min(1e-12)
    c = p.shape[1]
    ent = -(p.clamp_min(1e-12).log() * p).sum(1) / np.log(c)
    k = max(1, c // 10)
    top = p.topk(k, dim=1).values.sum(1)
    return {
        "entropy": float(ent.mean()),
        "top10_mass": float(top.mean()),
        "max": float(p.max(1).values.mean()),
    }


def run_importance_study(
    entries: list[ModelEntry],
    x: torch.Tensor,
    y: torch.Tensor,
    out: Any,
    *,
    eps: float,
    steps: int = 20,
    step_size: float = 0.003,
    batch_size: int = 128,
    seed: int = 0,
    device: Any = "cpu",
    show_progress: bool = True,
    extra_params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write mask tables, histograms and ``analysis.json``; return the per-model scalars."""
    from analysis import plots

    writer = AnalysisWriter(out, "importance")
    scalars: dict[str, Any] = {}
    rows = []
    for entry in progress(entries, "models", enabled=show_progress and len(entries) > 1):
        model = entry.model
        if not mask_modules(model):
            raise EvalkitError(
                f"{entry.label} has no CIFS masks; the importance study needs an at+cifs checkpoint"
            )
        x_adv = craft_adversarial(
            model,
            x,
            y,
            eps,
            steps=steps,
            step_size=step_size,
            batch_size=batch_size,
            seed=seed,
            tag=f"importance-{entry.label}",
            device=device,
            show_progress=show_progress,
        )
        nat = collect_masks(model, x, batch_size=batch_size, device=device)
        adv = collect_masks(model, x_adv, batch_size=batch_size, device=device)
        s: dict[str, Any] = {
            "clean_accuracy": accuracy(model, x, y, batch_size=batch_size, device=device),
            "adversarial_accuracy": accuracy(model, x_adv, y, batch_size=batch_size, device=device),
            "modules": {},
        }
        hist = {}
        for name in nat:
            mn, ma = nat[name], adv[name]
            cn, ca = concentration(mn), concentration(ma)
            s["modules"][name] = {
                "n_channels": int(mn.shape[1]),
                **{f"{k}_natural": v for k, v in cn.items()},
                **{f"{k}_adversarial": v for k, v in ca.items()},
                "l1_nat_adv_per_image": float((mn - ma).abs().sum(1).mean()),
                "l1_mean_masks": float((mn.mean(0) - ma.mean(0)).abs().sum()),
            }
            rows.append(
                pd.DataFrame(
                    {
                        "model": entry.label,
                        "module": f"{entry.label}:{name}",
                        "channel": np.arange(mn.shape[1]),
                        "mean_natural": mn.mean(0).numpy(),
                        "mean_adversarial": ma.mean(0).numpy(),
                        "std_natural": mn.std(0).numpy() if len(mn) > 1 else 0.0,
                        "std_adversarial": ma.std(0).numpy() if len(ma) > 1 else 0.0,
                    }
                )
            )
            hist[f"{entry.label}:{name}"] = (mn.numpy(), ma.numpy())
            writer.array(
                f"masks_{file_slug(entry.label)}_{file_slug(name)}",
                "per-example masks (N, C)",
                natural=mn.numpy(),
                adversarial=ma.numpy(),
                labels=y.numpy(),
            )
        scalars[entry.label] = s
        writer.figure(
            plots.importance_hist(hist, {k: v[0].shape[1] for k, v in hist.items()}),
            f"importance_hist_{file_slug(entry.label)}",
            f"{entry.label}: distribution of CIFS mask values, natural vs adversarial",
        )
    df = pd.concat(rows, ignore_index=True)
    writer.table(df, "importance", "per model, CIFS module and channel: mean and std of the mask")
    writer.figure(
        plots.importance_channels(df),
        "importance_channels",
        "mean importance per channel sorted by natural mean, natural vs adversarial",
    )
    finding = "; ".join(
        f"{lab}:{mod} entropy nat/adv {v['entropy_natural']:.3f}/{v['entropy_adversarial']:.3f}, "
        f"mean L1(nat, adv) {v['l1_nat_adv_per_image']:.3f}"
        for lab, s in scalars.items()
        for mod, v in s["modules"].items()
    )
    writer.finish(
        models=[e.describe() for e in entries],
        params={
            "eps": eps,
            "attack": f"PGD-{steps}",
            "step_size": step_size,
            "loss": "joint_ce",
            "n_examples": int(len(x)),
            "seed": seed,
            **(extra_params or {}),
        },
        scalars=scalars,
        finding=finding,
    )
    return scalars


@register_analysis(
    "importance", description="CIFS channel-importance masks, natural vs PGD (CIFS checkpoints)"
)
def importance(
    inputs: AnalysisInputs,
    *,
    steps: int = PAPER_STEPS,
    step_size: float | str | None = None,
) -> dict[str, Any]:
    """CIFS mask concentration and shift under PGD-``steps`` (step default 0.003, the CAS
    analysis recipe); returns the per-model scalars."""
    return run_importance_study(
        inputs.models,
        inputs.x,
        inputs.y,
        inputs.out,
        eps=single_eps(inputs.eps),
        **pgd_options(steps, step_size, PAPER_STEP_SIZE),
        **run_options(inputs),
    )
